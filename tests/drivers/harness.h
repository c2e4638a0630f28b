/*
 * harness.h - what the standalone root/ harnesses (passmount.c for
 * fs/root/pass.c, sftpmount.c for fs/root/sftpfs.c) share: a dispatcher
 * that serves one backend's ops with the backend's root node as the
 * mount's FUSE_ROOT_ID (as fs/ll.c forwards root/'s inodes), a thread that
 * takes the harness's signals, and the mount / loop / unmount.
 */
#ifndef SEER_TEST_HARNESS_H
#define SEER_TEST_HARNESS_H

#include <fuse_lowlevel.h>
#include <signal.h>
#include <stdint.h>

/* The session's userdata: every forwarded op finds the backend here. */
struct harness {
	const char *name;                              /* for messages */
	const struct fuse_lowlevel_ops *be;            /* the backend's ops */
	void (*forget_one)(fuse_ino_t ino, uint64_t nlookup);
	void (*init)(struct harness *h, struct fuse_conn_info *conn);
	/* Called in the signal thread for each signal of `sigs`: never in a
	 * FUSE worker, so it may send notifications to the kernel. */
	void (*on_signal)(struct harness *h, int sig);
	sigset_t sigs;
	fuse_ino_t root;                               /* shown as FUSE_ROOT_ID */
	struct fuse_session *se;
	void *owner;                                   /* the harness's own state */
};

/* Blocks h->sigs in this thread and every thread started after: call it
 * before the first one (the SSH client's included). */
void harness_block_signals(struct harness *h);

/* A session over args whose ops are the dispatcher's, one for each op the
 * backend has; sets h->se. */
struct fuse_session *harness_session(struct harness *h, struct fuse_args *args);

/* Mounts h->se at mnt, starts the signal thread, serves until the session
 * ends (one thread with single, else up to max_threads, idle_threads kept
 * when > 0) and unmounts. Returns 0 or the loop's error; -1 when it could
 * not mount. */
int harness_run(struct harness *h, const char *mnt, int single, unsigned max_threads, int idle_threads);

#endif
