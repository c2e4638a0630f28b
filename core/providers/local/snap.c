/*
 * snap.c - the local provider's snap_take: a snapshot is a copy of the
 * sandbox's writable tree, fs/upper (the overlay's upper dir, or a fresh
 * sandbox's whole tree: either way only what the sandbox changed), made
 * while the sandbox is frozen into STATE/snapshots/NAME.tmp/layer, keeping
 * everything overlayfs reads (modes, owners, times, user.* xattrs such as
 * user.overlay.opaque/redirect, whiteouts as 0/0 character devices, hard
 * links). The catalog (core/snapshot.c) writes info.json around it and
 * renames NAME.tmp into place; a restored sandbox mounts the layer stack as
 * its overlay's lower dirs (local.c).
 */
#include "core/providers/local/snap.h"
#include "core/sandbox.h"
#include "core/lib/walk.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

struct hl {
	dev_t dev;
	ino_t ino;
	char *path;   /* of its first copy, from the layer's root */
};

struct copyctx {
	int can_clone;             /* FICLONE worked or was not tried yet */
	int can_chown;
	int dstroot;               /* the layer being made */
	uint64_t bytes, entries;
	struct hl *links;          /* files with more than one link, copied once */
	size_t nlinks, caplinks;
	char what[4200];           /* the entry that failed */
};

/* The extended attributes of src (a file or directory, open) onto dst. */
static int copy_xattrs(int src, int dst)
{
	ssize_t n = flistxattr(src, NULL, 0);
	if (n <= 0)
		return n < 0 && errno != ENOTSUP && errno != EPERM ? -errno : 0;
	char *list = malloc((size_t)n), *val = malloc(65536);
	int r = 0;
	if (!list || !val) {
		r = -ENOMEM;
		goto out;
	}
	n = flistxattr(src, list, (size_t)n);
	for (char *k = list; n > 0 && k < list + n; k += strlen(k) + 1) {
		ssize_t v = fgetxattr(src, k, val, 65536);
		if (v < 0) {
			if (errno == ENODATA)
				continue;
			r = -errno;
			break;
		}
		if (fsetxattr(dst, k, val, (size_t)v, 0) < 0) {
			/* Overlay's own xattrs carry meaning (opaque dirs,
			 * redirects): losing one changes the snapshot's files.
			 * Others (security.*, trusted.* when not root) are
			 * dropped as cp -a would. */
			if (!strncmp(k, "user.overlay.", 13) || errno == ENOSPC || errno == EDQUOT) {
				r = -errno;
				break;
			}
		}
	}
out:
	free(list);
	free(val);
	return r;
}

/* Owners (when root), mode and times of st onto a copy open as dst. */
static int copy_meta_fd(int src, int dst, const struct stat *st, struct copyctx *c)
{
	int r = copy_xattrs(src, dst);
	if (r < 0)
		return r;
	if (c->can_chown && fchown(dst, st->st_uid, st->st_gid) < 0) {
		if (errno != EPERM)
			return -errno;
		c->can_chown = 0;   /* not root: files stay ours, as the sandbox sees them */
	}
	if (fchmod(dst, st->st_mode & 07777) < 0)
		return -errno;
	struct timespec ts[2] = {st->st_atim, st->st_mtim};
	return futimens(dst, ts) < 0 ? -errno : 0;
}

/* The same for a link or special file made as name in dirfd (the layer:
 * seerfs's own tree). User xattrs exist only on files and directories. */
static int copy_meta_at(int dirfd, const char *name, const struct stat *st, struct copyctx *c)
{
	if (c->can_chown && fchownat(dirfd, name, st->st_uid, st->st_gid, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno != EPERM)
			return -errno;
		c->can_chown = 0;
	}
	if (!S_ISLNK(st->st_mode) && fchmodat(dirfd, name, st->st_mode & 07777, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	struct timespec ts[2] = {st->st_atim, st->st_mtim};
	return utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static int copy_data(int in, int out, off_t size, struct copyctx *c)
{
	if (c->can_clone) {
		if (ioctl(out, FICLONE, in) == 0)
			return 0;
		if (errno == ENOSPC || errno == EDQUOT)
			return -errno;
		c->can_clone = 0;   /* this filesystem cannot share extents */
	}
	off_t done = 0;
	while (done < size) {
		ssize_t k = copy_file_range(in, NULL, out, NULL, (size_t)(size - done), 0);
		if (k < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP))
			break;   /* fall back to read/write below */
		if (k < 0)
			return -errno;
		if (k == 0)
			return 0;   /* the file shrank: the sandbox is frozen, so it was truncated before */
		done += k;
	}
	char buf[65536];
	for (;;) {
		ssize_t k = pread(in, buf, sizeof(buf), done);
		if (k < 0)
			return -errno;
		if (k == 0)
			return 0;
		for (ssize_t w = 0; w < k;) {
			ssize_t m = pwrite(out, buf + w, (size_t)(k - w), done + w);
			if (m < 0)
				return -errno;
			w += m;
		}
		done += k;
	}
}

/* ---- the sink of walk_tree: `at` is the layer's directory fd ---------------------- */

static int snap_dir(void *ud, void *at, const struct walk_ent *e, void **child)
{
	struct copyctx *c = ud;
	int dfd = (int)(intptr_t)at;
	c->entries++;
	if (mkdirat(dfd, e->name, 0700) < 0)
		return -errno;
	int fd = openat(dfd, e->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	*child = (void *)(intptr_t)fd;
	return 0;
}

/* A directory's metadata after its entries: its times stay the source's. */
static int snap_dir_done(void *ud, void *at, const struct walk_ent *e, void *child, int r)
{
	(void)at;
	int fd = (int)(intptr_t)child;
	if (r == 0)
		r = copy_meta_fd(e->fd, fd, &e->st, ud);
	close(fd);
	return r;
}

static int remember_link(struct copyctx *c, const struct walk_ent *e)
{
	if (c->nlinks == c->caplinks) {
		size_t cap = c->caplinks ? c->caplinks * 2 : 64;
		struct hl *nl = realloc(c->links, cap * sizeof(*nl));
		if (!nl)
			return -ENOMEM;
		c->links = nl;
		c->caplinks = cap;
	}
	c->links[c->nlinks++] = (struct hl){e->st.st_dev, e->st.st_ino, xstrdup(e->path)};
	return 0;
}

static int snap_file(void *ud, void *at, const struct walk_ent *e)
{
	struct copyctx *c = ud;
	int dfd = (int)(intptr_t)at;
	c->entries++;
	if (e->st.st_nlink > 1) {
		for (size_t i = 0; i < c->nlinks; i++)
			if (c->links[i].dev == e->st.st_dev && c->links[i].ino == e->st.st_ino)
				return linkat(c->dstroot, c->links[i].path, dfd, e->name, 0) < 0 ? -errno : 0;
	}
	int out = openat(dfd, e->name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (out < 0)
		return -errno;
	int r = copy_data(e->fd, out, e->st.st_size, c);
	if (r == 0)
		r = copy_meta_fd(e->fd, out, &e->st, c);
	if (close(out) < 0 && r == 0)
		r = -errno;
	if (r < 0)
		return r;
	c->bytes += (uint64_t)e->st.st_size;
	return e->st.st_nlink > 1 ? remember_link(c, e) : 0;
}

static int snap_link(void *ud, void *at, const struct walk_ent *e)
{
	struct copyctx *c = ud;
	int dfd = (int)(intptr_t)at;
	c->entries++;
	if (symlinkat(e->target, dfd, e->name) < 0)
		return -errno;
	return copy_meta_at(dfd, e->name, &e->st, c);
}

/* Whiteouts (0/0 character devices), fifos, sockets. mknod of a whiteout
 * needs no capability since 5.8. */
static int snap_other(void *ud, void *at, const struct walk_ent *e)
{
	struct copyctx *c = ud;
	int dfd = (int)(intptr_t)at;
	c->entries++;
	if (mknodat(dfd, e->name, e->st.st_mode, e->st.st_rdev) < 0)
		return -errno;
	return copy_meta_at(dfd, e->name, &e->st, c);
}

/* Copies the sandbox's tree at src (seerfs's own path to it; everything
 * below is walked by fd) to dst, created here. */
static int copy_tree(const char *src, const char *dst, struct copyctx *c)
{
	int sfd = open(src, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sfd < 0) {
		snprintf(c->what, sizeof(c->what), "opening %s", src);
		return -errno;
	}
	int r = mkdir(dst, 0700) < 0 ? -errno : 0;
	c->dstroot = r < 0 ? -1 : open(dst, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (r == 0 && c->dstroot < 0)
		r = -errno;
	char bad[4096] = "";
	const struct walk_ops ops = {snap_dir, snap_dir_done, snap_file, snap_link, snap_other, c, WALK_ONE_FS,
				     bad, sizeof(bad)};
	if (r == 0)
		r = walk_tree(sfd, &ops, (void *)(intptr_t)c->dstroot);
	struct stat st;
	if (r == 0)
		r = fstat(sfd, &st) < 0 ? -errno : copy_meta_fd(sfd, c->dstroot, &st, c);
	if (r < 0 && !c->what[0])
		snprintf(c->what, sizeof(c->what), "copying %s%s%s%s", src, bad[0] ? "/" : "", bad,
			 r == -ESTALE ? " (the sandbox replaced it while it was copied; nothing was followed: take the snapshot again)"
				      : "");
	if (c->dstroot >= 0)
		close(c->dstroot);
	c->dstroot = -1;
	close(sfd);
	return r;
}

/* Freezes the sandbox, copies its overlay's upper dir to layer, thaws (on
 * every path). */
static int take(struct sandbox *sb, const char *name, const char *upper, const char *layer, struct copyctx *c,
		double *frozen, char *err, size_t n)
{
	const struct seer_provider *prov = sb->prov;
	double m0 = mono_s();
	sandbox_log(sb, "snapshot %s: freezing the sandbox to copy its changes", name);
	int r = prov->freeze(sb, 1);
	/* The agent sends SIGSTOP to all once: a child forked while that
	 * signal was being delivered escapes it. Asking again stops the
	 * escapees (the others stay stopped). */
	if (r == -ETIMEDOUT)
		r = prov->freeze(sb, 1);
	if (r < 0) {
		snprintf(err, n, "sandbox %s: snapshot %s: cannot freeze the sandbox: %s%s", sb->name, name, strerror(-r),
			 r == -ETIMEDOUT ? " (some of its processes did not stop: a snapshot is taken only of a "
					   "sandbox that is still; retry, or end the busy processes first)"
					 : "");
		prov->freeze(sb, 0);
		return r;
	}
	/* The copy reads the upper dir through the page cache, which already
	 * holds what the frozen processes wrote; syncfs makes the source
	 * durable too, so a crash cannot leave a snapshot newer than its
	 * sandbox's disk. */
	syncfs_dir(upper);
	r = copy_tree(upper, layer, c);
	int tr = prov->freeze(sb, 0);
	*frozen = mono_s() - m0;
	if (tr < 0)
		sandbox_log(sb, "snapshot %s: resuming the sandbox failed: %s; its processes may stay stopped (terminate and retry)",
			    name, strerror(-tr));
	if (r < 0)
		snprintf(err, n, "sandbox %s: snapshot %s failed while %s: %s%s", sb->name, name, c->what[0] ? c->what : "copying",
			 strerror(-r), r == -ENOSPC ? "; free space in the state directory and try again" : "");
	return r;
}


int local_snap_take(struct sandbox *sb, const char *snap, const char *layer, struct seer_snap_taken *out, char *err,
		    size_t n)
{
	char upper[4096], mark[4400];
	snprintf(upper, sizeof(upper), "%s/fs/upper", sb->dir);
	if (access(upper, F_OK) < 0) {
		snprintf(err, n, "sandbox %s: snapshot %s: its provider %s keeps no local overlay, so it cannot be snapshotted",
			 sb->name, snap, sb->prov->name);
		return -ENOTSUP;
	}
	struct copyctx c = {.can_clone = 1, .can_chown = 1, .dstroot = -1};
	double frozen = 0;
	int r = take(sb, snap, upper, layer, &c, &frozen, err, n);
	for (size_t i = 0; i < c.nlinks; i++)
		free(c.links[i].path);
	free(c.links);
	if (r < 0)
		return r;
	/* A layer copied from a tree already in the id range needs no shift
	 * when it is restored (local.c, shift_once): the mark goes beside it. */
	if (sb->ctx->ids.count > 1) {
		snprintf(mark, sizeof(mark), "%s", layer);
		char *slash = strrchr(mark, '/');
		if (slash) {
			snprintf(slash + 1, sizeof(mark) - (size_t)(slash + 1 - mark), "%s", SEER_IDMAP_MARK);
			if ((r = write_file_atomic(mark, "", 0, 0600)) < 0) {
				snprintf(err, n, "sandbox %s: snapshot %s: cannot write %s: %s", sb->name, snap, mark,
					 strerror(-r));
				return r;
			}
		}
	}
	out->where[0] = '\0';
	out->bytes = c.bytes;
	out->entries = c.entries;
	out->frozen_s = frozen;
	return 0;
}
