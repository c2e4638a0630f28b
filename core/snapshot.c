/*
 * snapshot.c - the snapshot catalog: STATE/snapshots/NAME/ with info.json,
 * and layer/ for a snapshot kept in the state directory.
 *
 * Taking one: mkdir NAME.tmp (flock'ed, so a cleanup running beside it
 * never removes a live build), the provider's snap_take copies the
 * sandbox (the local provider into NAME.tmp/layer, frozen; the ssh
 * provider into its own store on its host, returning "where"), then
 * info.json, syncfs, rename NAME.tmp -> NAME. A crash leaves NAME complete
 * or a NAME.tmp that snapshot_recover() deletes.
 *
 * Restoring: snapshot_start_ref hands the sandbox's provider the snapshot
 * its config names (only the provider that took it restores it): a layer
 * stack (its own layer, then its parent's stack), which the local provider
 * mounts as its overlay's lower dirs in O(1), or the provider's "where".
 * rmdir asks the provider to delete a copy it keeps first; listing,
 * info.json and the dependency checks are the same for every provider.
 */
#include "core/snapshot.h"
#include "core/lib/walk.h"
#include "core/provider.h"
#include "core/registry.h"
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

int snapshot_root(struct seer_ctx *ctx, const char *name, struct seer_root *out, char *err, size_t n)
{
	char pname[128], where[2048], e2[1024];
	if (snapshot_info(ctx, name, pname, sizeof(pname), where, sizeof(where)) < 0) {
		snprintf(err, n, "snapshot %s does not exist (or its info.json is unreadable)", name);
		return -ENOENT;
	}
	/* One in the state directory is its layer stack. */
	struct sbuf lower = {0};
	int r = where[0] ? 0 : snapshot_stack(ctx, name, &lower, err, n);
	if (r < 0) {
		sbuf_free(&lower);
		return r;
	}
	const struct seer_provider *prov = NULL;
	const void *settings = NULL;
	struct seer_snap_ref ref = {name, where, lower.data ? lower.data : ""};
	r = seer_provider_resolve(ctx, pname, &prov, &settings, e2, sizeof(e2));
	if (r == 0)
		r = prov->snap_root(ctx, settings, &ref, out, e2, sizeof(e2));
	sbuf_free(&lower);
	if (r < 0 && where[0])
		snprintf(err, n, "snapshot %s: root/ (kept by provider %s at %s): %s", name, pname, where, e2);
	else if (r < 0)
		snprintf(err, n, "%s", e2);
	return r;
}

int snapshot_start_ref(struct sandbox *sb, struct seer_snap_ref *ref, char *err, size_t n)
{
	memset(ref, 0, sizeof(*ref));
	if (!sb->cfg.snapshot)
		return 0;
	const char *snap = sb->cfg.snapshot, *mine = sb->cfg.provider ? sb->cfg.provider : "local";
	char prov[128], where[2048], e2[1024];
	if (snapshot_info(sb->ctx, snap, prov, sizeof(prov), where, sizeof(where)) < 0) {
		snprintf(err, n, "sandbox %s: config field \"snapshot\": snapshot %s does not exist (or its info.json is unreadable); ls MOUNT/snapshots lists the ones that do",
			 sb->name, snap);
		return -ENOENT;
	}
	/* Only the provider that took a snapshot restores it. */
	if (strcmp(prov, mine)) {
		snprintf(err, n, "sandbox %s: config field \"snapshot\": snapshot %s was taken on provider %s%s, and this sandbox is on provider %s; a snapshot can only be restored on the provider that took it: set \"provider\": \"%s\" or pick another snapshot",
			 sb->name, snap, prov, where[0] ? "" : " (its files are in this machine's state directory)", mine, prov);
		return -EXDEV;
	}
	struct sbuf lower = {0};
	if (!where[0]) {
		int r = snapshot_stack(sb->ctx, snap, &lower, e2, sizeof(e2));
		if (r < 0) {
			snprintf(err, n, "sandbox %s: config field \"snapshot\": %s", sb->name, e2);
			sbuf_free(&lower);
			return r;
		}
	}
	ref->name = xstrdup(snap);
	ref->where = xstrdup(where);
	ref->layers = lower.data ? lower.data : xstrdup("");
	return 0;
}

static void recover(struct seer_ctx *ctx, int min_age);

/* ---- taking one ------------------------------------------------------------------- */

/* where: the location in the provider's store of a snapshot the provider
 * keeps (a full copy: its stack is itself alone), or NULL for a layer in
 * the state directory, stacked on its parent's layers. */
static int write_info(struct sandbox *sb, const char *name, const char *tmp, const struct seer_snap_taken *t,
		      const char *where, uint64_t t0, char *err, size_t n)
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
	json_object_object_add(o, "size", json_object_new_int64((int64_t)t->bytes));
	json_object_object_add(o, "entries", json_object_new_int64((int64_t)t->entries));
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
		if (r < 0)
			snprintf(err, n, "sandbox %s: snapshot %s: cannot write %s: %s", sb->name, name, p, strerror(-r));
	}
	json_object_put(o);
	free(config);
	free(parent);
	free(prov);
	return r;
}

/* Undoes a provider's copy whose record here could not be made. */
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
	char tmp[4200], fin[4096], layer[4300];
	if (!prov) {
		snprintf(err, n, "sandbox %s: snapshot %s: the sandbox has no provider", sb->name, name);
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
	int sbl = open(sb->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sbl < 0 || flock(sbl, LOCK_EX) < 0) {
		int e = -errno;
		snprintf(err, n, "sandbox %s: snapshot %s: cannot open %s: %s", sb->name, name, sb->dir, strerror(-e));
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
	/* The provider copies: into layer (a snapshot in the state
	 * directory), or into its own store, saying where. */
	struct seer_snap_taken t;
	memset(&t, 0, sizeof(t));
	r = prov->snap_take(sb, name, layer, &t, err, n);
	const char *where = r == 0 ? t.where : "";
	if (r < 0)
		goto fail;
	if ((r = write_info(sb, name, tmp, &t, where[0] ? where : NULL, t0, err, n)) < 0)
		goto fail;
	if ((r = syncfs_dir(tmp)) < 0) {
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
	if (tl >= 0)
		close(tl);
	close(sbl);
	sandbox_log(sb, "snapshot %s taken: %llu bytes in %llu entries, sandbox frozen %.3f s%s%s", name,
		    (unsigned long long)t.bytes, (unsigned long long)t.entries, t.frozen_s, where[0] ? ", kept at " : "",
		    where);
	return 0;
fail:
	if (where[0])
		untake_store(sb, name, where);
	walk_rm(tmp);
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
