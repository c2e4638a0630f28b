/*
 * sftpfs_agent.h - root/ of a remote sandbox beyond SFTP v3: the file
 * operations the sandbox's resident agent makes inside the sandbox (owners,
 * FIFOs, sockets, link counts, ctime, nanoseconds, 64-bit times, the
 * kernel's own errno). See fs/root/sftpfs_agent.c.
 *
 * Every function returns 0 or a negative errno; -ENOTSUP means the provider
 * has no agent for it (root/ then stays on SFTP alone).
 */
#ifndef SEER_SFTPFS_AGENT_H
#define SEER_SFTPFS_AGENT_H

#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "core/lib/sftp.h"

struct sandbox;

/* struct sftp_attrs' x: which of its fields beyond SFTP are known. */
#define SFTPX_NLINK 1     /* nlink */
#define SFTPX_TIMES 2     /* xatime, xmtime, xctime, their ns, xsize, blocks */

/* The longest path the agents take (they walk it one name at a time; the
 * kernel there would refuse it whole from PATH_MAX on). */
#define SFTPX_PATH_MAX 16384

/* Whether sb's provider can make file operations at all. */
int sftpx_can(struct sandbox *sb);

/* lstat of path: every field of a, the x ones (struct sftp_attrs) set. */
int sftpx_lstat(struct sandbox *sb, const char *path, struct sftp_attrs *a);

/* link(2) of from as to, as the login (no symlink followed on either
 * path); the new name's lstat in a, as sftpx_lstat's. */
int sftpx_link(struct sandbox *sb, const char *from, const char *to, struct sftp_attrs *a);

/* Who asked root/ for an operation (the FUSE request's context). */
#define SFTPX_GROUPS_MAX 1024
struct sftpx_caller {
	uint32_t uid, gid;
	int ngroups;
	const gid_t *groups;   /* supplementary groups */
};

/* op on path made with c's credentials (fsuid, fsgid, groups) by the
 * provider's owners' agent, so that the host's kernel checks it as the
 * local provider's would (search and write permission, sticky
 * directories). op: "mkdir" MODE, "mknod" MODE RDEV, "symlink" (str: the
 * target), "link" (str: the new name's path), "unlink", "rmdir", "rename"
 * FLAGS (str: the new path). For those that make a name, a (if not NULL)
 * gets its attributes. -ENOTSUP where no owners' agent runs (root/ then
 * stays on SFTP), -EINVAL for ids beyond the sandbox's (0 to 65535). */
int sftpx_as(struct sandbox *sb, const struct sftpx_caller *c, const char *op, const char *path, const char *str,
	     const int64_t *args, int nargs, struct sftp_attrs *a);

/* fchownat(AT_SYMLINK_NOFOLLOW); (uint32_t)-1 leaves an id as it is. With
 * root (the caller is root), by the provider's owners' agent, which may give
 * a file to any of the sandbox's ids (0 to 65535, EINVAL beyond). */
int sftpx_chown(struct sandbox *sb, const char *path, uint32_t uid, uint32_t gid, int root);
/* chmod of path itself (EOPNOTSUPP on a symlink) by the owners' agent, with
 * CAP_FOWNER: for a change the kernel allowed on an entry the login does
 * not own. */
int sftpx_pchmod(struct sandbox *sb, const char *path, mode_t mode);

/* A FIFO (mknodat) or a socket (bound at path) with mode's type and bits;
 * device nodes fail EPERM (the sandbox's agent has no CAP_MKNOD; root's
 * are made by sftpx_as). */
int sftpx_mknod(struct sandbox *sb, const char *path, mode_t mode);

/* utimensat(AT_SYMLINK_NOFOLLOW) with ts as the call takes it (UTIME_NOW,
 * UTIME_OMIT); with mode_set also fchmodat's mode first (a file's held-back
 * changes in one round trip). */
int sftpx_setattr(struct sandbox *sb, const char *path, int mode_set, mode_t mode, const struct timespec ts[2]);

/* The most data sftpx_create carries (fs/root/sftpfs.c defers creates of
 * files up to this size). */
#define SFTPX_CREATE_MAX (64u << 10)

/* A regular file made whole in one request (a deferred create): opened
 * with O_CREAT|O_NOFOLLOW, O_EXCL first (mode exact, the umask 0), without
 * it when !excl and the name exists; O_TRUNC with trunc; data written from
 * offset 0; then the owner uid, gid ((uint32_t)-1: none; by the owners'
 * agent, as pchown; where it cannot, the file stays the login's and
 * *chown_err says why), chmod_mode (< 0: none) and the times ts (NULL: none) on the
 * descriptor; closed. Its attributes after, as sftpx_lstat's, in a. The
 * path is walked as every operation's (no symlink followed). */
int sftpx_create(struct sandbox *sb, const char *path, int excl, int trunc, mode_t mode, int chmod_mode,
		 const struct timespec *ts, uint32_t uid, uint32_t gid, const void *data, size_t len,
		 struct sftp_attrs *a, int *chown_err);

/* truncate without following a symlink: the kernel's errno (EFBIG). */
int sftpx_truncate(struct sandbox *sb, const char *path, uint64_t size);

/* A file the agent keeps open for root/ (sftpx_open): what SFTP's OPEN
 * cannot reach, a path of PATH_MAX or more, or a file the SSH login may not
 * open and root/'s caller may. */
struct sftpx_fh {
	char id[48];     /* the agent's handle */
	int as;          /* opened by the owners' agent as a caller: used as it */
	uint32_t uid, gid;
};

/* The most bytes one sftpx_hread or sftpx_hwrite moves, and the largest
 * listing sftpx_list takes (E2BIG beyond). */
#define SFTPX_XFER_MAX (1u << 20)
#define SFTPX_LIST_MAX (8u << 20)

/* Opens path (never through a symlink, a regular file only: EISDIR, ENXIO)
 * with open(2)'s flags (access mode, O_CREAT, O_EXCL, O_TRUNC, O_APPEND)
 * and mode (exact, no umask), with c's credentials by the owners' agent,
 * or (c NULL) as the SSH login by the sandbox's agent: *out its handle
 * (freed by sftpx_hclose), a its attributes. EMFILE when the agent keeps
 * too many. */
int sftpx_open(struct sandbox *sb, const struct sftpx_caller *c, const char *path, int flags, mode_t mode,
	       struct sftpx_fh **out, struct sftp_attrs *a);
/* pread (bytes read, up to SFTPX_XFER_MAX), pwrite (bytes written),
 * ftruncate, fstat, fsync of h; sftpx_hclose closes it and frees h. */
int sftpx_hread(struct sandbox *sb, const struct sftpx_fh *h, uint64_t off, void *buf, size_t len);
int sftpx_hwrite(struct sandbox *sb, const struct sftpx_fh *h, uint64_t off, const void *buf, size_t len);
int sftpx_htrunc(struct sandbox *sb, const struct sftpx_fh *h, uint64_t size);
int sftpx_hstat(struct sandbox *sb, const struct sftpx_fh *h, struct sftp_attrs *a);
int sftpx_hsync(struct sandbox *sb, const struct sftpx_fh *h);
int sftpx_hclose(struct sandbox *sb, struct sftpx_fh *h);

/* op on path as the SSH login by the sandbox's agent (what root/'s SFTP
 * server would make, for paths it cannot carry): "mkdir" MODE, "unlink",
 * "rmdir", "symlink" (str: the target), "link" and "rename" FLAGS (str:
 * the new path), "chmod" MODE, "mknod" MODE. */
int sftpx_op(struct sandbox *sb, const char *op, const char *path, const char *str, const int64_t *args, int nargs);

/* readlink of path itself: *out the target (malloc'd). */
int sftpx_readlink(struct sandbox *sb, const char *path, char **out);

/* Every entry of directory path (but . and ..) with its lstat, to fn
 * (which stops the listing with a negative errno). */
int sftpx_list(struct sandbox *sb, const char *path, int (*fn)(void *ud, const char *name, const struct sftp_attrs *a),
	       void *ud);

/* The link count in a READDIR entry's "ls -l" line (OpenSSH's
 * sftp-server: "drwxr-xr-x    3 user group ..."), into a's nlink, when
 * the line has that form and agrees with a's type. */
void sftpx_longname_nlink(struct sftp_attrs *a, const char *longname);

#endif
