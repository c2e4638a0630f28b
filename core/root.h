/*
 * root.h - the handle a provider gives for a tree of files that root/
 * shows: a sandbox's "/", or a snapshot's copy (core/provider.h's root and
 * snap_root). fs/root/root.c picks the backend from it: an fd is served
 * by fs/root/pass.c, an SFTP client by fs/root/sftpfs.c.
 *
 * Only providers and fs/root/ include this: the rest of fs/ and core/
 * pass struct seer_root along by pointer, so the SFTP client never reaches
 * them.
 */
#ifndef SEER_ROOT_H
#define SEER_ROOT_H

#include "core/lib/idmap.h"

struct sftp_client;

struct seer_root {
	/* One of the two: */
	int fd;                    /* an O_PATH fd on the tree's "/" (the receiver owns it), or -1 */
	struct sftp_client *sftp; /* an SFTP client: one reference for the receiver (sftp_client_unref) */
	char path[4096];           /* with sftp: the tree's path on the remote host */
	/* Every change fails with EROFS. An fd's tree must be read-only
	 * itself (a read-only mount); an SFTP backend refuses changes. */
	int readonly;
	/* 1: the tree's owners are host ids one to one (a container without
	 * a user namespace, whose root is host root): root/ and provisioning's
	 * copies leave new entries the daemon's own instead of giving them to
	 * the sandboxes' id range. Zero for the local provider's trees. */
	int host_ids;
	/* ids.count > 0 (with host_ids 0): the tree's owners are the
	 * container's ids 0..count-1 at host ids ids.uid and ids.gid on (a
	 * container in a user namespace of the engine's, dockerd's
	 * userns-remap): root/ shows and gives them as the sandbox's range,
	 * and provisioning's copies become its root's. Zero: the sandboxes'
	 * range of the mount (ctx->ids). */
	struct seer_idmap ids;
};

/* Gives back what a handle holds (closes the fd, drops the reference);
 * the handle is empty afterwards. */
void seer_root_release(struct seer_root *r);

#endif
