/*
 * snapview.h - a snapshot's viewer container (snapview.c): a container of
 * the snapshot's committed image with a read-only root, no network and no
 * capabilities, whose init only waits. MOUNT/snapshots/NAME/root/ shows its
 * "/": on a local engine through /proc/PID/root of its init (an fd, docker.c),
 * on a remote engine through an SFTP server started in it by an Engine API
 * exec (dk_view_sftp). It is named after the snapshot, so a remount finds
 * it again, and rmdir of the snapshot removes it (dk_view_remove).
 */
#ifndef SEER_DOCKER_SNAPVIEW_H
#define SEER_DOCKER_SNAPVIEW_H

#include <stddef.h>
#include <sys/types.h>

struct seer_ctx;
struct docker_entry;
struct sftp_client;

struct dk_view {
	const char *snap;               /* the snapshot's name */
	const char *image;              /* its image (seerfs-snap:HASH-NAME) */
	const char *name;               /* the viewer's container name */
	const char *const *entrypoint;  /* its init: one that only waits */
	const char *bind;               /* "HOST:CONTAINER:ro", or NULL (a remote engine: none) */
};

/* The viewer v on engine e running: adopted when a container of that name
 * made by this state directory runs the snapshot's image, made again when
 * it runs another, created when there is none; started when stopped.
 * *pid: its init's pid as the engine's machine numbers it. 0, or a
 * negative errno with err naming the snapshot and the engine. */
int dk_view_run(struct seer_ctx *ctx, struct docker_entry *e, const struct dk_view *v, pid_t *pid, char *err,
		size_t n);

/* A new SFTP client (one reference, the caller's) on `server` started in
 * the running viewer v by an exec stream: its paths resolve inside the
 * viewer, whose root is read-only. */
int dk_view_sftp(struct docker_entry *e, const struct dk_view *v, const char *server, struct sftp_client **out,
		 char *err, size_t n);

/* Removes viewer `name` (none there: 0), after an SFTP session on it has
 * been ended or not: its processes go with it. */
int dk_view_remove(struct docker_entry *e, const char *name, char *err, size_t n);

#endif
