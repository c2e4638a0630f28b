/*
 * fs.h - what the FUSE side shares between its files: the filesystem
 * context, inode numbering, and the entry points of the root/ passthrough.
 *
 * Inode numbers: 1 is the mount's root. Numbers with the top bit set are
 * virtual files (README, a sandbox's control files, jobs/...): they encode
 * the sandbox's session serial, a sub-id and a kind, so they need no table
 * and a removed sandbox's numbers simply stop resolving. Every other number
 * is a pointer to a struct pnode of the root/ passthrough (fs/root/pass.c).
 */
#ifndef SEER_FS_H
#define SEER_FS_H

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdint.h>

#include "core/ctx.h"

struct sandbox;

struct fs_sb;
struct pend;
struct root_slot;

struct seer_fs {
	struct seer_ctx *ctx;
	struct fuse_session *se;
	int debug;
	double pass_timeout;     /* entry/attr timeout for root/ while the sandbox is idle
	                          * (0: root/ caches nothing; < 0: the default) */
	int writeback;           /* -o writeback: kernel writeback cache for root/ */
	int no_splice;
	int splice_read;         /* -o splice_read: requests received by splice (off: read) */
	/* -o xattr: user.* pass through. Off, every xattr call is refused
	 * with ENOSYS, which the kernel remembers and turns into ENOTSUP for
	 * good; it then stops asking for security.capability before each
	 * write() (FUSE never marks an inode "no security xattrs"), one
	 * round trip per write saved. */
	int xattr;
	unsigned max_write;      /* the largest write request (ll_init): bigger writes come in pieces */

	pthread_mutex_t pend_mu; /* held while parked reads are retried or purged */
	pthread_mutex_t lock;    /* the three lists below */
	struct fs_sb *sbs;       /* fs/'s per-sandbox data (scratch files) */
	struct root_slot *roots; /* root/ of sandboxes and snapshots (fs/root/root.c) */
	struct pend *pends;      /* reads parked until something changes */
};

#define VINO_FLAG (1ULL << 63)

static inline int ino_is_virtual(fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID || (ino & VINO_FLAG);
}

/* Inodes of root/ on a remote provider (fs/root/sftpfs.c) carry this bit; the
 * others are fs/root/pass.c's. Pointers stay below 2^47, so both bits are free. */
#define REMOTE_INO_FLAG (1ULL << 62)

/* ---- fs/root/pass.c: root/, a passthrough over the sandbox's own root ------- */

struct pass_fs;

/* Serves root/ over root_fd (an O_PATH fd on the sandbox's "/"; ownership
 * passes to the pass_fs). */
struct pass_fs *pass_new(struct seer_fs *fs, struct sandbox *sb, int root_fd);
/* The tree's owners are host ids one to one (core/root.h's host_ids): no
 * id range is shown or given; called right after pass_new. */
void pass_host_ids(struct pass_fs *p);
/* The tree's owners are the range m (a container's user namespace, core/
 * root.h's ids) instead of the mount's sandbox range. */
void pass_set_ids(struct pass_fs *p, const struct seer_idmap *m);
/* The sandbox stopped: later operations fail with ENOTCONN, fds are closed,
 * nodes are freed as the kernel forgets them. Drops the caller's reference. */
void pass_kill(struct pass_fs *p);
/* Fills the entry of root/ itself and counts the lookup. */
int pass_root_entry(struct pass_fs *p, struct fuse_entry_param *e);
/* The sandbox may have changed its files behind our back (a job ran):
 * drop what the kernel caches about this tree. */
void pass_invalidate(struct pass_fs *p);
/* The operations for passthrough inodes; fs/ll.c forwards to these. */
extern const struct fuse_lowlevel_ops pass_ops;
/* fs/ll.c's init calls this: the FUSE capabilities root/ needs. */
void pass_init_conn(struct fuse_conn_info *conn, struct seer_fs *fs);
/* Extra references, for using a pass_fs after dropping the lock that found it. */
void pass_ref(struct pass_fs *p);
void pass_unref(struct pass_fs *p);

/* ---- fs/root/sftpfs.c: root/ of a remote sandbox, over SFTP ------------------- */

struct sftpfs;
struct sftp_client;
/* Serves root/ from `root` (a path on the remote host) through cli. */
struct sftpfs *sftpfs_new(struct seer_fs *fs, struct sandbox *sb, struct sftp_client *cli, const char *root);
void sftpfs_kill(struct sftpfs *r);
/* Makes r refuse every change with EROFS (a snapshot's files); call it
 * before r is handed out. */
void sftpfs_set_readonly(struct sftpfs *r);
/* Whether r is alive and serves through cli (else it is stale: replace it). */
int sftpfs_uses(struct sftpfs *r, const struct sftp_client *cli);
int sftpfs_root_entry(struct sftpfs *r, struct fuse_entry_param *e);
/* A command ran in the sandbox: drop cached attributes, entries, data. */
void sftpfs_invalidate(struct sftpfs *r);
void sftpfs_forget_one(fuse_ino_t ino, uint64_t nlookup);
extern const struct fuse_lowlevel_ops sftpfs_ops;

static inline const struct fuse_lowlevel_ops *backend_of(fuse_ino_t ino)
{
	return (ino & REMOTE_INO_FLAG) ? &sftpfs_ops : &pass_ops;
}


#endif
