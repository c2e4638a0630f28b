/*
 * snapfs.c - MOUNT/snapshots: every snapshot as a directory holding
 * info.json, error (why the last rmdir was refused) and root/, the
 * snapshot's files read-only.
 *
 * root/ is what the provider that keeps the snapshot hands back
 * (core/snapshot.c's snapshot_root, the provider's snap_root): for one in
 * the state directory a read-only overlay of its layers (the local
 * provider's view.c), for one kept on a remote host a read-only SFTP view
 * of the copy there. fs/root/root.c serves it like a sandbox's root/.
 *
 * Each viewed snapshot's root/ slot has the key 0x80000000 | id: sandbox
 * serials never reach that range (inode numbers keep 23 bits of them).
 */
#include "fs/snapfs.h"
#include "fs/root/root.h"
#include "core/snapshot.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SNAP_TIMEOUT 1.0
#define SNAP_KEY(id) (0x80000000u | (id))

static uint32_t snap_id(const char *name)
{
	uint32_t h = 2166136261u;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 16777619u;
	h &= 0x7fffffffu;
	return h ? h : 1;
}

struct find {
	uint32_t id;
	char name[80];
};

static void find_cb(void *arg, const char *name)
{
	struct find *f = arg;
	if (!f->name[0] && snap_id(name) == f->id)
		snprintf(f->name, sizeof(f->name), "%s", name);
}

/* The snapshot an inode names, by scanning STATE/snapshots (a 31-bit hash
 * collision would make the second name unreachable; the listing is small). */
static int name_of(struct seer_fs *fs, uint32_t id, char *out, size_t n)
{
	struct find f = {.id = id};
	snapshot_list(fs->ctx, find_cb, &f);
	if (!f.name[0])
		return -ENOENT;
	snprintf(out, n, "%s", f.name);
	return 0;
}

int snapfs_owns(fuse_ino_t ino)
{
	if (!ino_is_virtual(ino) || ino == FUSE_ROOT_ID)
		return 0;
	enum vkind k = vino_kind(ino);
	return k == K_SNAPSHOT || k == K_SNAP_INFO || k == K_SNAP_ROOT;
}

/* Virtual attributes with the times of the file on disk behind them. */
static void fill(struct seer_fs *fs, struct stat *st, fuse_ino_t ino, mode_t mode, off_t size, const struct stat *src)
{
	fill_stat(fs, st, ino, mode, size, 0);
	if (src) {
		st->st_atim = src->st_atim;
		st->st_mtim = src->st_mtim;
		st->st_ctim = src->st_ctim;
	}
}

static const char *file_of(fuse_ino_t ino)
{
	return vino_serial(ino) == 1 ? "error" : "info.json";
}

int snapfs_stat(struct seer_fs *fs, fuse_ino_t ino, struct stat *st)
{
	char name[80], p[4400];
	enum vkind k = vino_kind(ino);
	if (k == K_SNAP_ROOT)
		return -ENOENT;   /* resolved by lookup: root/ is a passthrough inode */
	int r = name_of(fs, vino_sub(ino), name, sizeof(name));
	if (r < 0)
		return r;
	struct stat s;
	if (k == K_SNAPSHOT) {
		snprintf(p, sizeof(p), "%s/snapshots/%s", fs->ctx->state_dir, name);
		if (stat(p, &s) < 0)
			return -errno;
		fill(fs, st, ino, S_IFDIR | 0555, 0, &s);
		st->st_nlink = 3;
		return 0;
	}
	snprintf(p, sizeof(p), "%s/snapshots/%s/%s", fs->ctx->state_dir, name, file_of(ino));
	if (stat(p, &s) < 0) {
		if (errno != ENOENT || vino_serial(ino) != 1)
			return -errno;
		fill(fs, st, ino, S_IFREG | 0444, 0, NULL);   /* no error yet: empty */
		return 0;
	}
	fill(fs, st, ino, S_IFREG | 0444, s.st_size, &s);
	return 0;
}

/* ---- root/: the snapshot's files, read-only --------------------------------------- */

struct snap_open {
	struct seer_fs *fs;
	const char *name;
};

static int open_snap_root(void *arg, struct seer_root *out)
{
	struct snap_open *o = arg;
	char err[4800];
	int r = snapshot_root(o->fs->ctx, o->name, out, err, sizeof(err));
	if (r < 0)
		fprintf(stderr, "seerfs: %s\n", err);
	return r;
}

static int snap_root_entry(struct seer_fs *fs, uint32_t id, const char *name, struct fuse_entry_param *e)
{
	struct snap_open o = {fs, name};
	return root_entry(fs, SNAP_KEY(id), NULL, open_snap_root, &o, e);
}

/* A snapshot of a sandbox with "scoped": true in its config is as closed to
 * users other than the mount's owner as the sandbox was: its root/ holds the
 * same files and info.json the same config (fs/ll.c's scoped_gate). */
static int scoped_name(struct seer_fs *fs, const char *sn)
{
	char *text = snapshot_config(fs->ctx, sn);
	struct json_object *o = text ? json_tokener_parse(text) : NULL, *v;
	int sc = o && json_object_object_get_ex(o, "scoped", &v) && json_object_get_boolean(v);
	json_object_put(o);
	free(text);
	return sc;
}

int snapfs_scoped(struct seer_fs *fs, fuse_ino_t ino)
{
	enum vkind k = vino_kind(ino);
	if (k != K_SNAPSHOT && k != K_SNAP_INFO && k != K_SNAP_ROOT)
		return 0;
	char sn[80];
	return name_of(fs, vino_sub(ino), sn, sizeof(sn)) == 0 && scoped_name(fs, sn);
}

int snapfs_lookup(struct seer_fs *fs, fuse_ino_t parent, const char *name, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	enum vkind pk = vino_kind(parent);
	fuse_ino_t ino;
	double timeout = SNAP_TIMEOUT;
	if (pk == K_SNAPDIR) {
		if (!snapshot_exists(fs->ctx, name))
			return -ENOENT;
		ino = vino(0, snap_id(name), K_SNAPSHOT);
	} else if (pk == K_SNAPSHOT) {
		uint32_t id = vino_sub(parent);
		char sn[80];
		int r = name_of(fs, id, sn, sizeof(sn));
		if (r < 0)
			return r;
		/* Entries of a scoped snapshot are not cached, so every walk
		 * through them comes back to the gate (as a scoped sandbox's). */
		if (scoped_name(fs, sn))
			timeout = 0;
		if (!strcmp(name, "root")) {
			r = snap_root_entry(fs, id, sn, e);
			if (r == 0)
				e->entry_timeout = timeout;
			return r;
		}
		if (!strcmp(name, "info.json"))
			ino = vino(0, id, K_SNAP_INFO);
		else if (!strcmp(name, "error"))
			ino = vino(1, id, K_SNAP_INFO);
		else
			return -ENOENT;
	} else {
		return -ENOTDIR;
	}
	int r = snapfs_stat(fs, ino, &e->attr);
	if (r < 0)
		return r;
	e->ino = ino;
	e->entry_timeout = timeout;
	return 0;
}

struct list_ctx {
	void (*add)(void *d, const char *name, fuse_ino_t ino, mode_t mode);
	void *d;
};

static void list_cb(void *arg, const char *name)
{
	struct list_ctx *l = arg;
	l->add(l->d, name, vino(0, snap_id(name), K_SNAPSHOT), S_IFDIR);
}

int snapfs_list(struct seer_fs *fs, fuse_ino_t ino, void (*add)(void *d, const char *name, fuse_ino_t ino, mode_t mode),
		void *d)
{
	enum vkind k = vino_kind(ino);
	if (k == K_SNAPDIR) {
		/* Builds that crashed leave NAME.tmp behind: clear them here too,
		 * so a state dir never keeps half snapshots for long. */
		snapshot_cleanup(fs->ctx);
		struct list_ctx l = {add, d};
		return snapshot_list(fs->ctx, list_cb, &l);
	}
	if (k != K_SNAPSHOT)
		return -ENOTDIR;
	uint32_t id = vino_sub(ino);
	char sn[80];
	int r = name_of(fs, id, sn, sizeof(sn));
	if (r < 0)
		return r;
	add(d, "info.json", vino(0, id, K_SNAP_INFO), S_IFREG);
	add(d, "error", vino(1, id, K_SNAP_INFO), S_IFREG);
	add(d, "root", vino(0, id, K_SNAP_ROOT), S_IFDIR);
	return 0;
}

int snapfs_read(struct seer_fs *fs, fuse_ino_t ino, struct sbuf *out)
{
	char name[80], p[4400], *text = NULL;
	size_t len = 0;
	int r = name_of(fs, vino_sub(ino), name, sizeof(name));
	if (r < 0)
		return r;
	if (vino_serial(ino) == 1) {
		text = snapshot_error_text(fs->ctx, name);
		len = strlen(text);
	} else {
		snprintf(p, sizeof(p), "%s/snapshots/%s/info.json", fs->ctx->state_dir, name);
		if ((r = read_file(p, 1 << 22, &text, &len)) < 0)
			return r;
	}
	sbuf_append(out, text, len);
	free(text);
	return 0;
}

int snapfs_rmdir(struct seer_fs *fs, const char *name)
{
	char err[1024];
	if (!name_valid(name))
		return -ENOENT;
	int r = snapshot_remove(fs->ctx, name, err, sizeof(err));
	if (r < 0) {
		if (r != -ENOENT)
			fprintf(stderr, "seerfs: %s\n", err);
		return r;
	}
	/* Drop the view: closing its fds releases a detached mount. No
	 * inval_entry here: the kernel holds the directory for this rmdir and
	 * drops the entry itself when we answer 0. */
	root_drop(fs, SNAP_KEY(snap_id(name)));
	return 0;
}
