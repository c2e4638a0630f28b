/*
 * walk.h - the one walk of a directory tree by file descriptor, for every
 * host-side pass over a tree seerfs does not trust: snapshot copies of a
 * sandbox's writable tree, local_dirs and host repository copies into a
 * sandbox (local and SFTP sinks), removing a sandbox, a job or a snapshot,
 * shifting owners, and (following links on purpose) the hub model cache.
 *
 * Code in a sandbox may swap any directory of its tree for a symlink at any
 * moment. So the walk never resolves a string path below its root: each
 * directory is opened relative to its parent's fd with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS),
 * each entry is lstat'ed (fstatat AT_SYMLINK_NOFOLLOW) and, once opened,
 * fstat'ed again: a different st_dev/st_ino means the entry was swapped
 * between the two, and the walk fails with -ESTALE rather than follow it.
 */
#ifndef SEER_WALK_H
#define SEER_WALK_H

#include <stddef.h>
#include <sys/stat.h>

#include "core/lib/idmap.h"

#define WALK_FOLLOW 0x1     /* follow symlinks (a host tree of links on purpose: the hub cache) */
#define WALK_ONE_FS 0x2     /* never cross into another mount (RESOLVE_NO_XDEV) */
#define WALK_NO_FILES 0x4   /* regular files are not opened (e->fd is -1) */
#define WALK_FORCE 0x8      /* a directory we may not open is made 0700 first (removal) */

#define WALK_MAX_DEPTH 256

/* One entry of the tree, as the walk hands it to a callback. */
struct walk_ent {
	const char *name;    /* its name in its directory */
	const char *path;    /* from the walk's root ("a/b"): for messages and a sink's bookkeeping, never opened */
	int dirfd;           /* its directory, opened by the walk */
	int fd;              /* a directory, and a regular file unless WALK_NO_FILES: opened
			      * O_RDONLY and checked to be the entry lstat'ed; else -1 */
	struct stat st;      /* of fd when open, else lstat */
	const char *target;  /* a symlink's target; NULL for everything else */
	int depth;           /* 1 for the root's entries */
};

/* `at` is the sink's handle for the destination directory of the entries
 * (an fd, a path, NULL), `child` the one it gives for a directory's own
 * entries. Every callback returns 0 or -errno; the first error ends the walk. */
struct walk_ops {
	/* Before a directory's entries; NULL: its entries get `at` too. */
	int (*dir)(void *ud, void *at, const struct walk_ent *e, void **child);
	/* After them (also after a failure, r): metadata, rmdir, freeing
	 * child. Returns what the walk goes on with. */
	int (*dir_done)(void *ud, void *at, const struct walk_ent *e, void *child, int r);
	int (*file)(void *ud, void *at, const struct walk_ent *e);
	int (*link)(void *ud, void *at, const struct walk_ent *e);    /* never with WALK_FOLLOW */
	int (*other)(void *ud, void *at, const struct walk_ent *e);   /* fifos, sockets, devices; NULL skips */
	void *ud;
	int flags;           /* WALK_* */
	char *bad;           /* when set, the path of the entry that failed */
	size_t badn;
};

/* Walks what directory rootfd holds (not rootfd itself). 0 or -errno;
 * -ESTALE: an entry changed under the walk (a swap), -ELOOP: deeper than
 * WALK_MAX_DEPTH. */
int walk_tree(int rootfd, const struct walk_ops *ops, void *at);

/* Opens directory name in dirfd as the walk does (O_RDONLY, checked
 * against want when given); -ESTALE when it is no longer that directory. */
int walk_open_dir(int dirfd, const char *name, int flags, const struct stat *want);

/* rm -rf of name in dirfd: never follows a link (one planted where a
 * directory was is removed as a link), never leaves the filesystem, makes
 * unreadable directories readable. A missing name is 0. */
int walk_rm_at(int dirfd, const char *name);
int walk_rm(const char *path);

/* The owners of the tree at rootfd (itself included), shifted into ids's
 * range: a host uid (gid) below SEER_IDMAP_COUNT becomes ids->uid + uid
 * (ids->gid + gid), as lchown would, setuid/setgid bits kept. For state
 * directories of older versions, whose sandboxes' files are host uid 0.
 * -EINVAL unless ids is a full range above SEER_IDMAP_COUNT (that makes it
 * idempotent: a shifted id is never shifted again). */
int walk_shift_owner(int rootfd, const struct seer_idmap *ids);

#endif /* SEER_WALK_H */
