/*
 * snapshot.c - snapshots of a sandbox's writable tree.
 *
 * Taking one: freeze the sandbox (its agent stops every process), syncfs,
 * copy fs/upper (the overlay's upper dir, or a fresh sandbox's whole tree:
 * either way only what the sandbox changed) into
 * STATE/snapshots/NAME.tmp/layer keeping everything overlayfs reads (modes,
 * owners, times, user.* xattrs such as user.overlay.opaque/redirect,
 * whiteouts as 0/0 character devices, hard links), thaw, write info.json,
 * syncfs, rename NAME.tmp -> NAME. A crash leaves NAME complete or a NAME.tmp
 * that snapshot_recover() deletes. The builder holds flock on NAME.tmp so
 * a cleanup running beside it never removes a live build.
 *
 * Restoring is O(1): a sandbox whose config says "snapshot": "NAME" mounts
 * NAME's layer stack (its own layer, then its parent's stack) as the
 * overlay's lower dirs under a fresh upper dir.
 *
 * A provider with snap_take (the ssh provider) keeps the copy itself, on
 * its host: the same NAME.tmp/rename protocol then holds only info.json,
 * with "provider" and "where", so listing, info.json and the dependency
 * checks stay here; rmdir asks the provider to delete its copy first, and
 * only that provider can restore it (snapshot_source).
 */
#include "core/snapshot.h"
#include "core/lib/walk.h"
#include "core/provider.h"
#include "core/sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <limits.h>
#include <time.h>
#include <unistd.h>

/* The kernel parses mount options from one page; keep a margin for
 * upperdir/workdir that the provider adds. */
#define LOWER_MAX 3000
#define TMP_SUFFIX ".tmp"
/* A NAME.tmp younger than this may belong to a builder that has not taken
 * its lock yet; only start-up (no builder can exist) ignores the age. */
#define TMP_GRACE_S 5

static void snap_path(struct seer_ctx *ctx, const char *name, const char *sub, char *out, size_t n)
{
	snprintf(out, n, "%s/snapshots/%s%s%s", ctx->state_dir, name, sub ? "/" : "", sub ? sub : "");
}

int snapshot_exists(struct seer_ctx *ctx, const char *name)
{
	char p[4096];
	if (!name_valid(name) || str_endswith(name, TMP_SUFFIX))
		return 0;
	snap_path(ctx, name, "info.json", p, sizeof(p));
	return access(p, F_OK) == 0;
}

/* info.json of a snapshot, parsed; NULL when missing or unreadable. */
static struct json_object *load_info(struct seer_ctx *ctx, const char *name)
{
	char p[4096], *text = NULL;
	snap_path(ctx, name, "info.json", p, sizeof(p));
	if (read_file(p, 1 << 22, &text, NULL) < 0)
		return NULL;
	struct json_object *o = json_tokener_parse(text);
	free(text);
	return o;
}

/* The "layers" array of a snapshot's info.json (borrowed from o). */
static struct json_object *info_layers(struct json_object *o)
{
	struct json_object *v;
	if (o && json_object_object_get_ex(o, "layers", &v) && json_object_is_type(v, json_type_array))
		return v;
	return NULL;
}

/* A string field of info.json (borrowed from o); NULL when absent. */
static const char *info_str(struct json_object *o, const char *key)
{
	struct json_object *v;
	if (o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return NULL;
}

/* The provider a snapshot was taken on; snapshots from before the field
 * existed were all local. */
static const char *info_provider(struct json_object *o)
{
	const char *p = info_str(o, "provider");
	return p ? p : "local";
}

char *snapshot_config(struct seer_ctx *ctx, const char *name)
{
	struct json_object *o = snapshot_exists(ctx, name) ? load_info(ctx, name) : NULL;
	const char *c = info_str(o, "config");
	char *r = c ? xstrdup(c) : NULL;
	json_object_put(o);
	return r;
}

int snapshot_stack(struct seer_ctx *ctx, const char *name, struct sbuf *out, char *err, size_t n)
{
	struct json_object *o = snapshot_exists(ctx, name) ? load_info(ctx, name) : NULL;
	struct json_object *layers = info_layers(o);
	if (!layers) {
		snprintf(err, n, "snapshot %s does not exist (or its info.json is unreadable); ls MOUNT/snapshots lists the ones that do",
			 name);
		json_object_put(o);
		return -ENOENT;
	}
	if (info_str(o, "where")) {
		snprintf(err, n, "snapshot %s was taken on provider %s and is kept there (%s), not in the state directory; only a sandbox of provider %s can start from it",
			 name, info_provider(o), info_str(o, "where"), info_provider(o));
		json_object_put(o);
		return -EXDEV;
	}
	int r = 0;
	size_t k = json_object_array_length(layers);
	for (size_t i = 0; i < k && r == 0; i++) {
		const char *l = json_object_get_string(json_object_array_get_idx(layers, i));
		char p[4096];
		struct stat st;
		if (!l || !name_valid(l)) {
			snprintf(err, n, "snapshot %s: its info.json names an invalid layer; the snapshot is damaged, delete it", name);
			r = -EINVAL;
			break;
		}
		snap_path(ctx, l, "layer", p, sizeof(p));
		if (stat(p, &st) < 0 || !S_ISDIR(st.st_mode)) {
			snprintf(err, n, "snapshot %s: its layer from snapshot %s is missing (%s); the snapshot is damaged, delete it",
				 name, l, p);
			r = -ENOENT;
			break;
		}
		if (strpbrk(p, ":,\\")) {
			snprintf(err, n, "snapshot %s: the path %s holds ':' ',' or '\\', which overlayfs options cannot carry; use a state directory without them",
				 name, p);
			r = -EINVAL;
			break;
		}
		sbuf_printf(out, "%s%s", i ? ":" : "", p);
	}
	if (r == 0 && out->len > LOWER_MAX) {
		snprintf(err, n, "snapshot %s: its %zu layers make a lowerdir option of %zu bytes, over the kernel's limit of one page; use a shorter state directory path or restore from a less deep snapshot",
			 name, k, out->len);
		r = -E2BIG;
	}
	json_object_put(o);
	return r;
}

int snapshot_lowerdirs(struct sandbox *sb, struct sbuf *out, char *err, size_t n)
{
	if (!sb->cfg.snapshot)
		return 0;
	char e[1024];
	int r = snapshot_stack(sb->ctx, sb->cfg.snapshot, out, e, sizeof(e));
	if (r < 0)
		snprintf(err, n, "sandbox %s: config field \"snapshot\": %s", sb->name, e);
	return r;
}

int snapshot_info(struct seer_ctx *ctx, const char *name, char *prov, size_t plen, char *where, size_t wlen)
{
	struct json_object *o = snapshot_exists(ctx, name) ? load_info(ctx, name) : NULL;
	if (!o)
		return -ENOENT;
	const char *w = info_str(o, "where");
	snprintf(prov, plen, "%s", info_provider(o));
	snprintf(where, wlen, "%s", w ? w : "");
	json_object_put(o);
	return 0;
}

int snapshot_source(struct sandbox *sb, char *where, size_t len, char *err, size_t n)
{
	where[0] = '\0';
	if (!sb->cfg.snapshot)
		return 0;
	const char *snap = sb->cfg.snapshot, *mine = sb->cfg.provider ? sb->cfg.provider : "local";
	char prov[128];
	if (snapshot_info(sb->ctx, snap, prov, sizeof(prov), where, len) < 0) {
		snprintf(err, n, "sandbox %s: config field \"snapshot\": snapshot %s does not exist (or its info.json is unreadable); ls MOUNT/snapshots lists the ones that do",
			 sb->name, snap);
		return -ENOENT;
	}
	if (strcmp(prov, mine) || !where[0]) {
		snprintf(err, n, "sandbox %s: config field \"snapshot\": snapshot %s was taken on provider %s%s, and this sandbox is on provider %s; a snapshot can only be restored on the provider that took it: set \"provider\": \"%s\" or pick another snapshot",
			 sb->name, snap, prov, where[0] ? "" : " (its files are in this machine's state directory)", mine, prov);
		where[0] = '\0';
		return -EXDEV;
	}
	return 0;
}

/* ---- the copy --------------------------------------------------------------------- */

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

static void recover(struct seer_ctx *ctx, int min_age);

/* ---- taking one ------------------------------------------------------------------- */

static int sync_path(const char *p)
{
	int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = syncfs(fd) < 0 ? -errno : 0;
	close(fd);
	return r;
}

/* where: the location in the provider's store of a snapshot the provider
 * keeps (a full copy: its stack is itself alone), or NULL for a layer in
 * the state directory, stacked on its parent's layers. */
static int write_info(struct sandbox *sb, const char *name, const char *tmp, const struct copyctx *c, const char *where,
		      uint64_t t0, char *err, size_t n)
{
	pthread_mutex_lock(&sb->lock);
	/* A fork records the config it ran with (its source's merged with its
	 * own), so a fork of the fork starts from all of it. */
	char *config = xstrdup(sb->effective_text ? sb->effective_text : sb->config_text ? sb->config_text : "");
	char *parent = sb->cfg.snapshot ? xstrdup(sb->cfg.snapshot) : NULL;
	char *prov = xstrdup(sb->cfg.provider ? sb->cfg.provider : "local");
	pthread_mutex_unlock(&sb->lock);

	struct json_object *o = json_object_new_object(), *layers = json_object_new_array();
	json_object_array_add(layers, json_object_new_string(name));
	int r = 0;
	if (parent && !where) {
		struct json_object *pi = load_info(sb->ctx, parent);
		struct json_object *pl = info_layers(pi);
		if (!pl) {
			snprintf(err, n, "sandbox %s: snapshot %s: its parent snapshot %s is gone or damaged", sb->name, name, parent);
			r = -ENOENT;
		}
		for (size_t i = 0; pl && i < json_object_array_length(pl); i++)
			json_object_array_add(layers, json_object_get(json_object_array_get_idx(pl, i)));
		json_object_put(pi);
	}
	char when[40];
	fmt_time_iso(t0, when, sizeof(when));
	json_object_object_add(o, "name", json_object_new_string(name));
	json_object_object_add(o, "source", json_object_new_string(sb->name));
	json_object_object_add(o, "created", json_object_new_string(when));
	json_object_object_add(o, "size", json_object_new_int64((int64_t)c->bytes));
	json_object_object_add(o, "entries", json_object_new_int64((int64_t)c->entries));
	json_object_object_add(o, "config", json_object_new_string(config));
	json_object_object_add(o, "parent", parent ? json_object_new_string(parent) : NULL);
	json_object_object_add(o, "layers", layers);
	json_object_object_add(o, "provider", json_object_new_string(prov));
	if (where)
		json_object_object_add(o, "where", json_object_new_string(where));
	if (r == 0) {
		const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
		char p[4400];
		snprintf(p, sizeof(p), "%s/info.json", tmp);
		struct sbuf b = {0};
		sbuf_printf(&b, "%s\n", text);
		r = write_file_atomic(p, b.data, b.len, 0644);
		sbuf_free(&b);
		/* A layer copied from a tree already in the id range needs no
		 * shift when it is restored (core/providers/local/local.c). */
		if (r == 0 && !where && sb->ctx->ids.count > 1) {
			snprintf(p, sizeof(p), "%s/" SEER_IDMAP_MARK, tmp);
			r = write_file_atomic(p, "", 0, 0600);
		}
		if (r < 0)
			snprintf(err, n, "sandbox %s: snapshot %s: cannot write %s: %s", sb->name, name, p, strerror(-r));
	}
	json_object_put(o);
	free(config);
	free(parent);
	free(prov);
	return r;
}

/* Freezes the sandbox, copies its overlay's upper dir to layer, thaws (on
 * every path). The local overlay's way of taking a snapshot. */
static int take_local(struct sandbox *sb, const char *name, const char *layer, struct copyctx *c, double *frozen,
		      char *err, size_t n)
{
	const struct seer_provider *prov = sb->prov;
	char upper[4096];
	snprintf(upper, sizeof(upper), "%s/fs/upper", sb->dir);
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
	sync_path(upper);
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

/* The provider copies the sandbox into its own store; the state directory
 * keeps only info.json (with "where"), so listing, info.json and the
 * dependency checks work as for local snapshots. */
static int take_store(struct sandbox *sb, const char *name, struct copyctx *c, char *where, size_t wlen,
		      double *frozen, char *err, size_t n)
{
	struct seer_snap_taken t;
	memset(&t, 0, sizeof(t));
	sandbox_log(sb, "snapshot %s: asking provider %s to copy the sandbox", name, sb->prov->name);
	int r = sb->prov->snap_take(sb, name, &t, err, n);
	if (r < 0)
		return r;
	snprintf(where, wlen, "%s", t.where);
	c->bytes = t.bytes;
	c->entries = t.entries;
	*frozen = t.frozen_s;
	return 0;
}

/* Undoes a store snapshot whose local record could not be made. */
static void untake_store(struct sandbox *sb, const char *name, const char *where)
{
	char e2[1024];
	if (sb->prov->snap_remove(sb->ctx, sb->prov_settings, name, where, e2, sizeof(e2)) < 0)
		sandbox_log(sb, "snapshot %s: its copy at %s could not be removed after the failure: %s; remove it by hand",
			    name, where, e2);
}

int snapshot_take(struct sandbox *sb, const char *name, char *err, size_t n)
{
	struct seer_ctx *ctx = sb->ctx;
	if (!name_valid(name) || str_endswith(name, TMP_SUFFIX)) {
		snprintf(err, n, "sandbox %s: \"%s\" is not a valid snapshot name (letters, digits, '-', '_', '.', at most 64, not ending in .tmp)",
			 sb->name, name);
		return -EINVAL;
	}
	pthread_mutex_lock(&sb->lock);
	enum sb_state st = sb->state;
	const struct seer_provider *prov = sb->prov;
	pthread_mutex_unlock(&sb->lock);
	if (st != SB_RUNNING) {
		snprintf(err, n, "sandbox %s: snapshot %s needs a running sandbox; this one is %s%s", sb->name, name,
			 sb_state_name(st), st == SB_PROVISIONING ? ": wait for it (cat wait) and try again" : "");
		return st == SB_PROVISIONING || st == SB_TERMINATING ? -EBUSY : -EINVAL;
	}
	char upper[4096], tmp[4200], fin[4096], layer[4300], lockp[4096];
	snprintf(upper, sizeof(upper), "%s/fs/upper", sb->dir);
	int store = prov && prov->snap_take;
	if (!store && (!prov || !prov->freeze || access(upper, F_OK) < 0)) {
		snprintf(err, n, "sandbox %s: snapshot %s: its provider %s keeps no local overlay, so it cannot be snapshotted",
			 sb->name, name, prov ? prov->name : "(none)");
		return -ENOTSUP;
	}
	recover(ctx, TMP_GRACE_S);
	snap_path(ctx, name, NULL, fin, sizeof(fin));
	snprintf(tmp, sizeof(tmp), "%s%s", fin, TMP_SUFFIX);
	snprintf(layer, sizeof(layer), "%s/layer", tmp);
	if (access(fin, F_OK) == 0) {
		snprintf(err, n, "sandbox %s: snapshot %s already exists; pick another name or rmdir MOUNT/snapshots/%s first",
			 sb->name, name, name);
		return -EEXIST;
	}
	/* One snapshot of a sandbox at a time: freeze/thaw do not nest. */
	snprintf(lockp, sizeof(lockp), store ? "%s" : "%s/fs", sb->dir);
	int sbl = open(lockp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sbl < 0 || flock(sbl, LOCK_EX) < 0) {
		int e = -errno;
		snprintf(err, n, "sandbox %s: snapshot %s: cannot open %s: %s", sb->name, name, lockp, strerror(-e));
		if (sbl >= 0)
			close(sbl);
		return e;
	}
	int r;
	if (mkdir(tmp, 0700) < 0) {
		r = -errno;
		if (r == -EEXIST)
			snprintf(err, n, "sandbox %s: snapshot %s is being taken right now; pick another name", sb->name, name);
		else
			snprintf(err, n, "sandbox %s: snapshot %s: cannot create %s: %s", sb->name, name, tmp, strerror(-r));
		close(sbl);
		return r;
	}
	int tl = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (tl >= 0)
		flock(tl, LOCK_EX);   /* tells snapshot_recover this build is alive */
	uint64_t t0 = now_ns();
	struct copyctx c = {.can_clone = 1, .can_chown = 1, .dstroot = -1};
	double frozen = 0;
	char where[2048] = "";
	if (store)
		r = take_store(sb, name, &c, where, sizeof(where), &frozen, err, n);
	else
		r = take_local(sb, name, layer, &c, &frozen, err, n);
	if (r < 0)
		goto fail;
	if ((r = write_info(sb, name, tmp, &c, store ? where : NULL, t0, err, n)) < 0)
		goto fail;
	if ((r = sync_path(tmp)) < 0) {
		snprintf(err, n, "sandbox %s: snapshot %s: syncfs: %s", sb->name, name, strerror(-r));
		goto fail;
	}
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, fin, RENAME_NOREPLACE) < 0) {
		r = -errno;
		snprintf(err, n, "sandbox %s: snapshot %s: %s", sb->name, name,
			 r == -EEXIST ? "a snapshot of that name appeared meanwhile; pick another name" : strerror(-r));
		goto fail;
	}
	char parent[4096];
	snprintf(parent, sizeof(parent), "%s/snapshots", ctx->state_dir);
	fsync_dir(parent);
	for (size_t i = 0; i < c.nlinks; i++)
		free(c.links[i].path);
	free(c.links);
	if (tl >= 0)
		close(tl);
	close(sbl);
	sandbox_log(sb, "snapshot %s taken: %llu bytes in %llu entries, sandbox frozen %.3f s%s%s", name,
		    (unsigned long long)c.bytes, (unsigned long long)c.entries, frozen, where[0] ? ", kept at " : "",
		    where);
	return 0;
fail:
	if (store && where[0])
		untake_store(sb, name, where);
	walk_rm(tmp);
	for (size_t i = 0; i < c.nlinks; i++)
		free(c.links[i].path);
	free(c.links);
	if (tl >= 0)
		close(tl);
	close(sbl);
	sandbox_log(sb, "%s", err);
	return r;
}

/* ---- listing, removing, recovering ------------------------------------------------ */

int snapshot_list(struct seer_ctx *ctx, void (*fn)(void *arg, const char *name), void *arg)
{
	char p[4096];
	snprintf(p, sizeof(p), "%s/snapshots", ctx->state_dir);
	DIR *d = opendir(p);
	if (!d)
		return -errno;
	struct dirent *de;
	while ((de = readdir(d)))
		if (snapshot_exists(ctx, de->d_name))
			fn(arg, de->d_name);
	closedir(d);
	return 0;
}

static void recover(struct seer_ctx *ctx, int min_age)
{
	char p[4096];
	snprintf(p, sizeof(p), "%s/snapshots", ctx->state_dir);
	DIR *d = opendir(p);
	if (!d)
		return;
	struct dirent *de;
	time_t now = time(NULL);
	/* seer_ctx_open rewrites the state dir's lock file when this seerfs
	 * starts: a NAME.tmp changed before that belongs to an earlier one. */
	struct stat ls;
	struct timespec started = {0, 0};
	if (ctx->lock_fd >= 0 && fstat(ctx->lock_fd, &ls) == 0)
		started = ls.st_mtim;
	while ((de = readdir(d))) {
		if (!str_endswith(de->d_name, TMP_SUFFIX) || de->d_name[0] == '.')
			continue;
		int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		struct stat st;
		if (fd < 0)
			continue;
		/* A live builder holds the lock; a crashed one released it. */
		int stale = fstat(fd, &st) == 0 &&
			    (now - st.st_ctime >= min_age || st.st_ctim.tv_sec < started.tv_sec ||
			     (st.st_ctim.tv_sec == started.tv_sec && st.st_ctim.tv_nsec < started.tv_nsec));
		if (stale && flock(fd, LOCK_EX | LOCK_NB) == 0)
			walk_rm_at(dirfd(d), de->d_name);
		close(fd);
	}
	closedir(d);
}

void snapshot_recover(struct seer_ctx *ctx)
{
	recover(ctx, 0);
}

void snapshot_cleanup(struct seer_ctx *ctx)
{
	recover(ctx, TMP_GRACE_S);
}

/* Whether snapshot `name` is in the stack of snapshot `other`. */
static int in_stack(struct seer_ctx *ctx, const char *other, const char *name)
{
	struct json_object *o = load_info(ctx, other);
	struct json_object *l = info_layers(o);
	int found = 0;
	for (size_t i = 0; l && i < json_object_array_length(l) && !found; i++) {
		const char *s = json_object_get_string(json_object_array_get_idx(l, i));
		found = s && !strcmp(s, name);
	}
	json_object_put(o);
	return found;
}

struct deps {
	struct seer_ctx *ctx;
	const char *name;
	char *user;
};

static void dep_snap(void *arg, const char *other)
{
	struct deps *d = arg;
	if (!d->user && strcmp(other, d->name) && in_stack(d->ctx, other, d->name))
		d->user = xstrdup(other);
}

static void set_snap_error(struct seer_ctx *ctx, const char *name, const char *msg)
{
	char p[4096];
	snap_path(ctx, name, "error", p, sizeof(p));
	struct sbuf b = {0};
	sbuf_printf(&b, "%s\n", msg);
	write_file_atomic(p, b.data, b.len, 0644);
	sbuf_free(&b);
}

char *snapshot_error_text(struct seer_ctx *ctx, const char *name)
{
	char p[4096], *t = NULL;
	snap_path(ctx, name, "error", p, sizeof(p));
	if (read_file(p, 65536, &t, NULL) < 0)
		return xstrdup("");
	return t;
}

/* Deletes the provider's copy of a snapshot kept in a provider's store
 * (nothing for a snapshot in the state directory). First, so that a
 * failure (host unreachable) leaves the snapshot whole and rmdir can be
 * tried again. */
static int remove_stored(struct seer_ctx *ctx, const char *name, char *err, size_t n)
{
	char pname[128], where[2048], e2[1024];
	if (snapshot_info(ctx, name, pname, sizeof(pname), where, sizeof(where)) < 0 || !where[0])
		return 0;
	const struct seer_provider *prov = NULL;
	const void *settings = NULL;
	int r = seer_provider_resolve(ctx, pname, &prov, &settings, e2, sizeof(e2));
	if (r == 0 && !prov->snap_remove) {
		snprintf(e2, sizeof(e2), "provider %s keeps no snapshots", pname);
		r = -EINVAL;
	}
	if (r < 0) {
		snprintf(err, n, "snapshot %s cannot be deleted: its copy is kept by provider %s at %s, and %s; put the provider back in the providers file and try again",
			 name, pname, where, e2);
		/* Not ENOENT: rmdir would read as "no such snapshot". */
		return -ENXIO;
	}
	r = prov->snap_remove(ctx, settings, name, where, e2, sizeof(e2));
	if (r < 0)
		snprintf(err, n, "snapshot %s cannot be deleted: removing its copy at %s (provider %s) failed: %s; try again",
			 name, where, pname, e2);
	return r;
}

int snapshot_remove(struct seer_ctx *ctx, const char *name, char *err, size_t n)
{
	if (!snapshot_exists(ctx, name)) {
		snprintf(err, n, "snapshot %s does not exist", name);
		return -ENOENT;
	}
	/* Sandboxes based on it, in any state: a terminated one can be
	 * retried and would then need its layers. */
	char *dep_sb = NULL;
	pthread_mutex_lock(&ctx->lock);
	for (struct sandbox *sb = ctx->sandboxes; sb && !dep_sb; sb = sb->next) {
		pthread_mutex_lock(&sb->lock);
		char *s = sb->cfg.snapshot ? xstrdup(sb->cfg.snapshot) : NULL;
		pthread_mutex_unlock(&sb->lock);
		if (s && (!strcmp(s, name) || in_stack(ctx, s, name)))
			dep_sb = xstrdup(sb->name);
		free(s);
	}
	pthread_mutex_unlock(&ctx->lock);
	if (dep_sb) {
		snprintf(err, n, "snapshot %s cannot be deleted: sandbox %s is based on it; remove that sandbox (rmdir MOUNT/%s) first",
			 name, dep_sb, dep_sb);
		set_snap_error(ctx, name, err);
		struct sandbox *sb = sandbox_get(ctx, dep_sb);
		if (sb) {
			sandbox_log(sb, "snapshot %s was not deleted because this sandbox is based on it; remove this sandbox first",
				    name);
			sandbox_put(sb);
		}
		free(dep_sb);
		return -EBUSY;
	}
	struct deps d = {ctx, name, NULL};
	snapshot_list(ctx, dep_snap, &d);
	if (d.user) {
		snprintf(err, n, "snapshot %s cannot be deleted: snapshot %s is built on it; delete snapshot %s first", name,
			 d.user, d.user);
		set_snap_error(ctx, name, err);
		free(d.user);
		return -EBUSY;
	}
	int r = remove_stored(ctx, name, err, n);
	if (r < 0) {
		set_snap_error(ctx, name, err);
		return r;
	}
	/* Rename out of sight first, so a crash mid-delete leaves a NAME.tmp
	 * that recovery removes rather than half a snapshot. */
	char fin[4096], tmp[4200];
	snap_path(ctx, name, NULL, fin, sizeof(fin));
	snprintf(tmp, sizeof(tmp), "%s%s", fin, TMP_SUFFIX);
	if (renameat2(AT_FDCWD, fin, AT_FDCWD, tmp, RENAME_NOREPLACE) == 0)
		r = walk_rm(tmp);
	else
		r = walk_rm(fin);
	if (r < 0)
		snprintf(err, n, "snapshot %s: cannot remove %s: %s", name, fin, strerror(-r));
	return r;
}
