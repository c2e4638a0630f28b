/*
 * walk.c - the walk of a tree by file descriptor (see walk.h), and what is
 * built on it here alone: removing a tree and shifting its owners. Copies
 * are sinks of their own (snapshot.c, provision.c, upload.c, ssh_models.c).
 */
#include "core/lib/walk.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct walk {
	const struct walk_ops *ops;
	char *path;   /* the current entry's path from the root */
	size_t len, cap;
};

static int same_inode(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* An open that found something else than the directory lstat'ed (a link
 * planted in its place) reads as a swap. */
static int swapped(int e)
{
	return e == ELOOP || e == ENOTDIR ? -ESTALE : -e;
}

static int open_dir_once(int dirfd, const char *name, int flags)
{
	if (flags & WALK_FOLLOW) {
		/* The hub cache's links point out of the snapshot directory
		 * into its blobs: no RESOLVE_BENEATH there. */
		int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		return fd < 0 ? -errno : fd;
	}
	struct open_how how = {.flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
			       .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
	if (flags & WALK_ONE_FS)
		how.resolve |= RESOLVE_NO_XDEV;
	long fd = syscall(SYS_openat2, dirfd, name, &how, sizeof(how));
	if (fd < 0 && errno == ENOSYS) {
		/* Before Linux 5.6: a single component with O_NOFOLLOW is
		 * beneath dirfd and never a link. */
		fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	}
	return fd < 0 ? swapped(errno) : (int)fd;
}

int walk_open_dir(int dirfd, const char *name, int flags, const struct stat *want)
{
	int fd = open_dir_once(dirfd, name, flags);
	/* A directory the sandbox made 000: open it up (lchmod semantics:
	 * glibc refuses a link there). */
	if (fd == -EACCES && (flags & WALK_FORCE) && fchmodat(dirfd, name, 0700, AT_SYMLINK_NOFOLLOW) == 0)
		fd = open_dir_once(dirfd, name, flags);
	if (fd < 0 || !want)
		return fd;
	struct stat st;
	if (fstat(fd, &st) < 0 || !same_inode(&st, want)) {
		close(fd);
		return -ESTALE;
	}
	return fd;
}

/* A regular file, read-only and checked to be the one lstat'ed. O_NONBLOCK
 * so that a FIFO swapped in cannot hang the walk. */
static int open_file(int dirfd, const char *name, int flags, const struct stat *want)
{
	int of = O_RDONLY | O_NONBLOCK | O_CLOEXEC | (flags & WALK_FOLLOW ? 0 : O_NOFOLLOW);
	int fd = openat(dirfd, name, of | O_NOATIME);
	if (fd < 0 && errno == EPERM)
		fd = openat(dirfd, name, of);   /* O_NOATIME needs to own the file */
	if (fd < 0)
		return errno == ELOOP ? -ESTALE : -errno;
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || !same_inode(&st, want) ||
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
		close(fd);
		return -ESTALE;
	}
	return fd;
}

static int path_push(struct walk *w, const char *name)
{
	size_t n = strlen(name), need = w->len + 1 + n + 1;
	if (need > w->cap) {
		size_t cap = w->cap ? w->cap : 256;
		while (cap < need)
			cap *= 2;
		char *p = realloc(w->path, cap);
		if (!p)
			return -ENOMEM;
		w->path = p;
		w->cap = cap;
	}
	if (w->len)
		w->path[w->len++] = '/';
	memcpy(w->path + w->len, name, n + 1);
	w->len += n;
	return 0;
}

static int walk_dir(struct walk *w, int dfd, void *at, int depth);

static int walk_subdir(struct walk *w, struct walk_ent *e, void *at)
{
	const struct walk_ops *o = w->ops;
	int fd = walk_open_dir(e->dirfd, e->name, o->flags, &e->st);
	if (fd == -ENOENT && !(o->flags & WALK_FOLLOW))
		return 0;   /* gone since its lstat: as if readdir had not seen it */
	if (fd < 0)
		return fd;
	e->fd = fd;
	void *child = at;
	int r = o->dir ? o->dir(o->ud, at, e, &child) : 0;
	if (r == 0) {
		r = walk_dir(w, fd, child, e->depth + 1);
		e->path = w->path;   /* its entries' paths may have moved the buffer */
		if (o->dir_done)
			r = o->dir_done(o->ud, at, e, child, r);
	}
	close(fd);
	return r;
}

static int walk_one(struct walk *w, int dfd, const char *name, void *at, int depth)
{
	const struct walk_ops *o = w->ops;
	struct walk_ent e = {.name = name, .path = w->path, .dirfd = dfd, .fd = -1, .depth = depth};
	int follow = o->flags & WALK_FOLLOW;
	if (fstatat(dfd, name, &e.st, follow ? 0 : AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT && !follow ? 0 : -errno;   /* gone since readdir */
	if (S_ISDIR(e.st.st_mode))
		return walk_subdir(w, &e, at);
	if (S_ISREG(e.st.st_mode)) {
		if (!o->file)
			return 0;
		if (!(o->flags & WALK_NO_FILES) && (e.fd = open_file(dfd, name, o->flags, &e.st)) < 0)
			return e.fd == -ENOENT && !follow ? 0 : e.fd;
		int r = o->file(o->ud, at, &e);
		if (e.fd >= 0)
			close(e.fd);
		return r;
	}
	if (S_ISLNK(e.st.st_mode)) {
		if (!o->link)
			return 0;
		char target[PATH_MAX + 1];
		ssize_t n = readlinkat(dfd, name, target, PATH_MAX);
		if (n < 0 && errno == ENOENT)
			return 0;   /* gone since its lstat */
		if (n < 0)
			return errno == EINVAL ? -ESTALE : -errno;   /* no longer a link */
		target[n] = '\0';
		e.target = target;
		return o->link(o->ud, at, &e);
	}
	return o->other ? o->other(o->ud, at, &e) : 0;
}

static int walk_dir(struct walk *w, int dfd, void *at, int depth)
{
	if (depth > WALK_MAX_DEPTH)
		return -ELOOP;
	int d2 = fcntl(dfd, F_DUPFD_CLOEXEC, 3);
	DIR *d = d2 >= 0 ? fdopendir(d2) : NULL;
	if (!d) {
		int e = -errno;
		if (d2 >= 0)
			close(d2);
		return e;
	}
	rewinddir(d);   /* the dup shares dfd's offset: a walk before may have moved it */
	int r = 0;
	size_t base = w->len;
	struct dirent *de;
	while (r == 0 && (errno = 0, de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		r = path_push(w, de->d_name);
		if (r == 0)
			r = walk_one(w, dfd, de->d_name, at, depth);
		/* The deepest failure names itself first. */
		if (r < 0 && w->ops->bad && !w->ops->bad[0])
			snprintf(w->ops->bad, w->ops->badn, "%s", w->path ? w->path : de->d_name);
		w->len = base;
		if (w->path)
			w->path[base] = '\0';
	}
	if (r == 0 && errno)
		r = -errno;
	closedir(d);
	return r;
}

int walk_tree(int rootfd, const struct walk_ops *ops, void *at)
{
	struct walk w = {.ops = ops};
	if (ops->bad && ops->badn)
		ops->bad[0] = '\0';
	if (path_push(&w, "") < 0)
		return -ENOMEM;
	int r = walk_dir(&w, rootfd, at, 1);
	free(w.path);
	return r;
}

/* ---- removing ------------------------------------------------------------------- */

/* unlinkat that reads "something else is there now" as a swap. */
static int unlink_ent(int dirfd, const char *name, int rmdir)
{
	if (unlinkat(dirfd, name, rmdir ? AT_REMOVEDIR : 0) == 0 || errno == ENOENT)
		return 0;
	return errno == EISDIR || errno == ENOTDIR ? -ESTALE : -errno;
}

static int rm_dir(void *ud, void *at, const struct walk_ent *e, void **child)
{
	(void)ud, (void)at, (void)child;
	/* Entries of a directory without write permission (chmod 500 in a
	 * sandbox) cannot be removed. */
	if ((e->st.st_mode & 0700) != 0700 && fchmod(e->fd, 0700) < 0)
		return -errno;
	return 0;
}

static int rm_dir_done(void *ud, void *at, const struct walk_ent *e, void *child, int r)
{
	(void)ud, (void)at, (void)child;
	return r < 0 ? r : unlink_ent(e->dirfd, e->name, 1);
}

static int rm_ent(void *ud, void *at, const struct walk_ent *e)
{
	(void)ud, (void)at;
	return unlink_ent(e->dirfd, e->name, 0);
}

static int rm_once(int dirfd, const char *name)
{
	struct stat st;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode))
		return unlink_ent(dirfd, name, 0);
	const int flags = WALK_ONE_FS | WALK_NO_FILES | WALK_FORCE;
	int fd = walk_open_dir(dirfd, name, flags, &st);
	if (fd < 0)
		return fd;
	if ((st.st_mode & 0700) != 0700)
		fchmod(fd, 0700);
	const struct walk_ops ops = {.dir = rm_dir, .dir_done = rm_dir_done, .file = rm_ent, .link = rm_ent,
				     .other = rm_ent, .flags = flags};
	int r = walk_tree(fd, &ops, NULL);
	close(fd);
	return r < 0 ? r : unlink_ent(dirfd, name, 1);
}

int walk_rm_at(int dirfd, const char *name)
{
	/* A swap under the walk (-ESTALE) or an entry made meanwhile
	 * (-ENOTEMPTY) is met by walking again; a sandbox that keeps
	 * swapping wins nothing but an error. */
	int r = 0;
	for (int i = 0; i < 8; i++) {
		r = rm_once(dirfd, name);
		if (r != -ESTALE && r != -ENOTEMPTY)
			break;
	}
	return r;
}

int walk_rm(const char *path)
{
	/* The path up to the last component is seerfs's own (the state
	 * directory); from there on the walk goes by fd. */
	char buf[PATH_MAX];
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	size_t l = strlen(buf);
	while (l > 1 && buf[l - 1] == '/')
		buf[--l] = '\0';
	char *slash = strrchr(buf, '/');
	const char *dir = ".", *name = buf;
	if (slash == buf) {
		dir = "/";
		name = buf + 1;
	} else if (slash) {
		*slash = '\0';
		dir = buf;
		name = slash + 1;
	}
	if (!*name || !strcmp(name, ".") || !strcmp(name, ".."))
		return -EINVAL;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return errno == ENOENT ? 0 : -errno;
	int r = walk_rm_at(dfd, name);
	close(dfd);
	return r;
}

/* ---- shifting owners ---------------------------------------------------------------- */

static int shift_ids(const struct seer_idmap *ids, const struct stat *st, uid_t *u, gid_t *g)
{
	*u = st->st_uid < SEER_IDMAP_COUNT ? ids->uid + st->st_uid : (uid_t)-1;
	*g = st->st_gid < SEER_IDMAP_COUNT ? ids->gid + st->st_gid : (gid_t)-1;
	return *u != (uid_t)-1 || *g != (gid_t)-1;
}

/* chown clears setuid and setgid of a non-directory: put them back. */
static int shift_fd(const struct seer_idmap *ids, int fd, const struct stat *st)
{
	uid_t u;
	gid_t g;
	if (!shift_ids(ids, st, &u, &g))
		return 0;
	if (fchown(fd, u, g) < 0)
		return -errno;
	if (!S_ISDIR(st->st_mode) && (st->st_mode & 06000) && fchmod(fd, st->st_mode & 07777) < 0)
		return -errno;
	return 0;
}

static int shift_dir(void *ud, void *at, const struct walk_ent *e, void **child)
{
	(void)at, (void)child;
	return shift_fd(ud, e->fd, &e->st);
}

static int shift_file(void *ud, void *at, const struct walk_ent *e)
{
	(void)at;
	return shift_fd(ud, e->fd, &e->st);
}

/* Links and special files, by name: lchown, and for a device with
 * setuid bits (made by hand) lchmod, which glibc refuses on a link. */
static int shift_other(void *ud, void *at, const struct walk_ent *e)
{
	(void)at;
	uid_t u;
	gid_t g;
	if (!shift_ids(ud, &e->st, &u, &g))
		return 0;
	if (fchownat(e->dirfd, e->name, u, g, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISLNK(e->st.st_mode) && (e->st.st_mode & 06000) &&
	    fchmodat(e->dirfd, e->name, e->st.st_mode & 07777, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return 0;
}

int walk_shift_owner(int rootfd, const struct seer_idmap *ids)
{
	if (ids->count < SEER_IDMAP_COUNT || ids->uid < SEER_IDMAP_COUNT || ids->gid < SEER_IDMAP_COUNT)
		return -EINVAL;
	struct stat st;
	if (fstat(rootfd, &st) < 0)
		return -errno;
	int r = shift_fd(ids, rootfd, &st);
	const struct walk_ops ops = {.dir = shift_dir, .file = shift_file, .link = shift_other, .other = shift_other,
				     .ud = (void *)ids, .flags = WALK_ONE_FS};
	return r < 0 ? r : walk_tree(rootfd, &ops, NULL);
}
