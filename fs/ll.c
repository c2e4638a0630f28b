/*
 * ll.c - the FUSE low-level operations: the dispatcher and the virtual tree.
 *
 * The kernel's requests arrive here. Inodes of root/ go to fs/root/pass.c
 * unchanged; every other inode is virtual (see vfile.h) and is answered
 * here from core/: the README, one directory per sandbox with its control
 * files, and snapshots/. Reads that must wait (the `wait` file) are parked
 * and answered from whichever thread sees the sandbox change, so a blocked
 * reader never holds a worker thread and never stalls `ls`.
 */
#include "fs/vfile.h"
#include "fs/jobsfs.h"
#include "fs/sessionsfs.h"
#include "fs/functionsfs.h"
#include "fs/readme.h"
#include "fs/snapfs.h"
#include "fs/root/root.h"
#include "core/provider.h"
#include "core/lifecycle.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/statvfs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define VTIMEOUT 1.0
/* "root" of a running sandbox: hook_root_gone drops the entry when it stops;
 * the timeout bounds any other way out of running (a failed reconfigure). */
#define ROOT_ENTRY_TIMEOUT 10.0

/* Attribute timeout of a virtual inode. The mount's top and the sandbox
 * directories, whose attributes and listings only change through this
 * mount's own mkdir, rmdir and create (the kernel drops its copies then),
 * are cached: every path under root/ walks through them, which would
 * otherwise cost round trips on every open or stat. Files keep 0 (their
 * sizes follow state and logs), and so do jobs/ and snapshots/, whose
 * listings change through writes to exec and ctl. */
static double vattr_timeout(fuse_ino_t ino)
{
	enum vkind k = vino_kind(ino);
	return k == K_TOP || k == K_SBDIR ? VTIMEOUT : 0;
}

static struct seer_fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* ---- per-sandbox fs data ------------------------------------------------- */

struct fs_sb *fs_sb_get(struct seer_fs *fs, uint32_t serial, int create)
{
	for (struct fs_sb *s = fs->sbs; s; s = s->next)
		if (s->serial == serial)
			return s;
	if (!create)
		return NULL;
	struct fs_sb *s = xcalloc(1, sizeof(*s));
	s->serial = serial;
	s->next = fs->sbs;
	fs->sbs = s;
	return s;
}

static void fs_sb_drop(struct seer_fs *fs, uint32_t serial)
{
	root_drop(fs, serial);
	pthread_mutex_lock(&fs->lock);
	for (struct fs_sb **pp = &fs->sbs; *pp; pp = &(*pp)->next) {
		struct fs_sb *s = *pp;
		if (s->serial != serial)
			continue;
		*pp = s->next;
		while (s->scratch) {
			struct scratch *c = s->scratch;
			s->scratch = c->next;
			sbuf_free(&c->data);
			free(c);
		}
		free(s);
		break;
	}
	pthread_mutex_unlock(&fs->lock);
}

/* ---- hooks from core -------------------------------------------------------- */

static void hook_changed(void *arg, struct sandbox *sb)
{
	struct seer_fs *fs = arg;
	pend_kick(fs, sb->serial);
}

static void hook_job_started(void *arg, struct sandbox *sb)
{
	root_invalidate(arg, sb->serial);
}

static void hook_root_gone(void *arg, struct sandbox *sb)
{
	struct seer_fs *fs = arg;
	root_drop(fs, sb->serial);
	if (fs->se)
		fuse_lowlevel_notify_inval_entry(fs->se, vino(sb->serial, 0, K_SBDIR), "root", 4);
}

void ll_install_hooks(struct seer_fs *fs)
{
	fs->ctx->hooks.changed = hook_changed;
	fs->ctx->hooks.root_gone = hook_root_gone;
	fs->ctx->hooks.job_started = hook_job_started;
	fs->ctx->hooks.arg = fs;
}

/* ---- the sandbox directory's fixed files -------------------------------------- */

static const struct vdesc sb_files[] = {
	{"config.json", K_CONFIG, S_IFREG | 0644},
	{"status", K_STATUS, S_IFREG | 0444},
	{"wait", K_WAIT, S_IFREG | 0444},
	{"log", K_LOG, S_IFREG | 0444},
	{"error", K_ERROR, S_IFREG | 0444},
	{"info.json", K_INFO, S_IFREG | 0444},
	{"ctl", K_CTL, S_IFREG | 0200},
	{"root", K_ROOT_EMPTY, S_IFDIR | 0755},
	{"exec", K_EXEC, S_IFREG | 0666},
	{"exec_python", K_EXEC_PY, S_IFREG | 0666},
	{"jobs", K_JOBSDIR, S_IFDIR | 0755},
	{"sessions", K_SESSDIR, S_IFDIR | 0755},
	{"functions", K_FNDIR, S_IFDIR | 0755},
};

static const struct vdesc *sb_file_by_name(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(sb_files); i++)
		if (!strcmp(sb_files[i].name, name))
			return &sb_files[i];
	return NULL;
}

static const struct vdesc *sb_file_by_kind(enum vkind k)
{
	for (size_t i = 0; i < ARRAY_SIZE(sb_files); i++)
		if (sb_files[i].kind == k)
			return &sb_files[i];
	return NULL;
}

/* The text a read-only control file shows now. */
static char *content_of(struct sandbox *sb, enum vkind k)
{
	switch (k) {
	case K_STATUS:
	case K_WAIT:
		return sandbox_status_text(sb);
	case K_ERROR:
		return sandbox_error_text(sb);
	case K_INFO:
		return sandbox_info_json(sb);
	case K_CONFIG:
		return sandbox_config_text(sb);
	default:
		return xstrdup("");
	}
}

/* The fixed texts at the mount's root. */
static const char *top_text(enum vkind k)
{
	return k == K_CONFIG_REF ? seerfs_config_ref : seerfs_readme;
}

/* Names at the mount's root that are not sandboxes. */
static int top_name(const char *name)
{
	return !strcmp(name, "README") || !strcmp(name, "CONFIG") || !strcmp(name, "snapshots");
}

static int scoped_sb(struct sandbox *sb);

/* Attributes of a virtual inode; -ENOENT when it no longer exists. */
static int vstat(struct seer_fs *fs, fuse_ino_t ino, struct stat *st)
{
	enum vkind k = vino_kind(ino);
	if (k == K_TOP) {
		fill_stat(fs, st, FUSE_ROOT_ID, S_IFDIR | 0755, 0, now_ns());
		return 0;
	}
	if (k == K_README || k == K_CONFIG_REF) {
		fill_stat(fs, st, ino, S_IFREG | 0444, (off_t)strlen(top_text(k)), 0);
		return 0;
	}
	if (k == K_SNAPDIR) {
		fill_stat(fs, st, ino, S_IFDIR | 0755, 0, now_ns());
		return 0;
	}
	if (snapfs_owns(ino))
		return snapfs_stat(fs, ino, st);
	struct sandbox *sb = sandbox_get_serial(fs->ctx, vino_serial(ino));
	if (!sb)
		return -ENOENT;
	int r = 0;
	pthread_mutex_lock(&sb->lock);
	uint64_t since = sb->since_ns;
	pthread_mutex_unlock(&sb->lock);
	if (k == K_SBDIR) {
		fill_stat(fs, st, ino, S_IFDIR | 0755, 0, scoped_sb(sb) ? now_ns() : since);
	} else if (k == K_LOG) {
		char path[4096];
		struct stat real;
		sandbox_log_path(sb, path, sizeof(path));
		/* The real size, fresh each time: tail -f polls it. */
		if (stat(path, &real) == 0)
			fill_stat(fs, st, ino, S_IFREG | 0444, real.st_size,
				  (uint64_t)real.st_mtim.tv_sec * 1000000000ull + (uint64_t)real.st_mtim.tv_nsec);
		else
			fill_stat(fs, st, ino, S_IFREG | 0444, 0, since);
	} else if (k == K_SCRATCH) {
		pthread_mutex_lock(&fs->lock);
		struct fs_sb *s = fs_sb_get(fs, sb->serial, 0);
		struct scratch *c = s ? s->scratch : NULL;
		while (c && c->id != vino_sub(ino))
			c = c->next;
		if (c) {
			fill_stat(fs, st, ino, S_IFREG | (c->mode & 07777), (off_t)c->data.len,
				  (uint64_t)c->mtime.tv_sec * 1000000000ull + (uint64_t)c->mtime.tv_nsec);
		} else {
			r = -ENOENT;
		}
		pthread_mutex_unlock(&fs->lock);
	} else if ((k >= K_JOBSDIR && k <= K_JOBS_LATEST) || k == K_JOB_FIG) {
		/* jobs/ and what is in it */
		r = jobsfs_stat(fs, sb, ino, st);
	} else if (sessionsfs_owns(k)) {
		r = sessionsfs_stat(fs, sb, ino, st);
	} else if (functionsfs_owns(k)) {
		r = functionsfs_stat(fs, sb, ino, st);
	} else {
		const struct vdesc *d = sb_file_by_kind(k);
		if (!d) {
			r = -ENOENT;
		} else {
			off_t size = 0;
			if (k == K_STATUS || k == K_ERROR || k == K_INFO || k == K_CONFIG) {
				char *c = content_of(sb, k);
				size = (off_t)strlen(c);
				free(c);
			}
			fill_stat(fs, st, ino, d->mode, size, since);
		}
	}
	sandbox_put(sb);
	return r;
}

static void reply_ventry(fuse_req_t req, fuse_ino_t ino, double timeout)
{
	struct fuse_entry_param e;
	memset(&e, 0, sizeof(e));
	int r = vstat(fs_of(req), ino, &e.attr);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	e.ino = ino;
	e.attr_timeout = vattr_timeout(ino);
	e.entry_timeout = timeout;
	fuse_reply_entry(req, &e);
}

static int open_sb_root(void *arg, struct seer_root *out)
{
	struct sandbox *sb = arg;
	return sb->prov->root(sb, out);
}

/* Whether root/ can be served now; on success fills the entry. */
static int sb_root_entry(struct seer_fs *fs, struct sandbox *sb, struct fuse_entry_param *e)
{
	pthread_mutex_lock(&sb->lock);
	int running = sb->state == SB_RUNNING && !sb->busy_op;
	const struct seer_provider *prov = sb->prov;
	pthread_mutex_unlock(&sb->lock);
	if (!running || !prov)
		return -ENOTCONN;
	return root_entry(fs, sb->serial, sb, open_sb_root, sb, e);
}

/* ---- lookup, getattr, readdir ------------------------------------------------- */

/* "scoped": true in a sandbox's config: users other than the mount's owner
 * (with -o allow_other) reach its functions/ and nothing else of it. ino is
 * the object, or the directory holding `name`. Entries under a scoped
 * sandbox's directory are given no cache time (scoped_sb), so every path
 * walk through them comes back here. */
static int scoped_sb(struct sandbox *sb)
{
	pthread_mutex_lock(&sb->lock);
	int sc = sb->cfg.scoped;
	pthread_mutex_unlock(&sb->lock);
	return sc;
}

static int scoped_gate(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct seer_fs *fs = fs_of(req);
	if (!ino_is_virtual(ino) || fuse_req_ctx(req)->uid == fs->ctx->uid)
		return 0;
	enum vkind k = vino_kind(ino);
	if (k == K_TOP || k == K_README || k == K_SNAPDIR || functionsfs_owns(k))
		return 0;
	if (snapfs_owns(ino)) {
		/* a scoped sandbox's snapshot: its name and directory, no more */
		if (k == K_SNAPSHOT && (!name || !strcmp(name, ".") || !strcmp(name, "..")))
			return 0;
		return snapfs_scoped(fs, ino) ? -EACCES : 0;
	}
	if (k == K_SBDIR && (!name || !strcmp(name, "functions") || !strcmp(name, ".") || !strcmp(name, "..")))
		return 0;
	struct sandbox *sb = sandbox_get_serial(fs->ctx, vino_serial(ino));
	if (!sb)
		return 0;
	int sc = scoped_sb(sb);
	sandbox_put(sb);
	return sc ? -EACCES : 0;
}

/* Replies EACCES and says so when ino (name in it) is closed to this
 * caller by a scoped sandbox (scoped_gate). */
static int scoped_refused(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	int r = scoped_gate(req, ino, name);
	if (r < 0)
		fuse_reply_err(req, -r);
	return r < 0;
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct seer_fs *fs = fs_of(req);
	if (!ino_is_virtual(parent)) {
		backend_of(parent)->lookup(req, parent, name);
		return;
	}
	enum vkind pk = vino_kind(parent);
	if (scoped_refused(req, parent, name))
		return;
	if (pk == K_TOP) {
		if (!strcmp(name, "README")) {
			reply_ventry(req, vino(0, 0, K_README), VTIMEOUT);
			return;
		}
		if (!strcmp(name, "CONFIG")) {
			reply_ventry(req, vino(0, 0, K_CONFIG_REF), VTIMEOUT);
			return;
		}
		if (!strcmp(name, "snapshots")) {
			reply_ventry(req, vino(0, 0, K_SNAPDIR), VTIMEOUT);
			return;
		}
		struct sandbox *sb = name_valid(name) ? sandbox_get(fs->ctx, name) : NULL;
		if (!sb) {
			fuse_reply_err(req, ENOENT);
			return;
		}
		uint32_t serial = sb->serial;
		int sc = scoped_sb(sb);
		sandbox_put(sb);
		if (sc) {
			/* Not cached, and a new mtime each time: the kernel then
			 * drops the listing it cached for another user. */
			struct fuse_entry_param e;
			memset(&e, 0, sizeof(e));
			e.ino = vino(serial, 0, K_SBDIR);
			fill_stat(fs, &e.attr, e.ino, S_IFDIR | 0755, 0, now_ns());
			fuse_reply_entry(req, &e);
			return;
		}
		reply_ventry(req, vino(serial, 0, K_SBDIR), VTIMEOUT);
		return;
	}
	if (pk == K_SNAPDIR || snapfs_owns(parent)) {
		struct fuse_entry_param e;
		int r = snapfs_lookup(fs, parent, name, &e);
		if (r < 0)
			fuse_reply_err(req, -r);
		else
			fuse_reply_entry(req, &e);
		return;
	}
	if (pk == K_SNAPDIR || pk == K_ROOT_EMPTY) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	struct sandbox *sb = sandbox_get_serial(fs->ctx, vino_serial(parent));
	if (!sb) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (pk == K_SBDIR) {
		const struct vdesc *d = sb_file_by_name(name);
		double vt = scoped_sb(sb) ? 0 : VTIMEOUT;
		if (d && d->kind == K_ROOT_EMPTY) {
			struct fuse_entry_param e;
			memset(&e, 0, sizeof(e));
			if (sb_root_entry(fs, sb, &e) == 0) {
				sandbox_put(sb);
				e.entry_timeout = vt ? ROOT_ENTRY_TIMEOUT : 0;
				fuse_reply_entry(req, &e);
				return;
			}
			/* Not running: an empty directory; looked up again every
			 * time so the real one appears as soon as the sandbox runs. */
			uint32_t serial = sb->serial;
			sandbox_put(sb);
			reply_ventry(req, vino(serial, 0, K_ROOT_EMPTY), 0);
			return;
		}
		if (d) {
			uint32_t serial = sb->serial;
			sandbox_put(sb);
			reply_ventry(req, vino(serial, 0, d->kind), vt);
			return;
		}
		pthread_mutex_lock(&fs->lock);
		struct fs_sb *s = fs_sb_get(fs, sb->serial, 0);
		struct scratch *c = s ? s->scratch : NULL;
		while (c && strcmp(c->name, name))
			c = c->next;
		uint32_t id = c ? c->id : 0;
		pthread_mutex_unlock(&fs->lock);
		uint32_t serial = sb->serial;
		sandbox_put(sb);
		if (!id) {
			fuse_reply_err(req, ENOENT);
			return;
		}
		reply_ventry(req, vino(serial, id, K_SCRATCH), 0);
		return;
	}
	/* The directories whose entries a module of their own names. */
	int (*sub)(struct seer_fs *, struct sandbox *, fuse_ino_t, const char *, fuse_ino_t *) =
		pk == K_FNDIR || pk == K_FNSET       ? functionsfs_lookup
		: pk == K_SESSDIR || pk == K_SESS    ? sessionsfs_lookup
		: pk == K_JOBSDIR || pk == K_JOBDIR ? jobsfs_lookup
						     : NULL;
	if (sub) {
		fuse_ino_t ino;
		int r = sub(fs, sb, parent, name, &ino);
		sandbox_put(sb);
		if (r < 0)
			fuse_reply_err(req, -r);
		else
			reply_ventry(req, ino, 0);
		return;
	}
	sandbox_put(sb);
	fuse_reply_err(req, ENOTDIR);
}

static void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	if (!ino_is_virtual(ino)) {
		backend_of(ino)->forget(req, ino, nlookup);
		return;
	}
	fuse_reply_none(req);
}

static void ll_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	/* Remote inodes are dropped here; the passthrough's go to its own batch
	 * call, which sends the one reply a FORGET batch takes. Virtual inodes
	 * keep no counts. */
	struct fuse_forget_data *local = malloc(sizeof(*local) * (count ? count : 1));
	size_t n = 0;
	for (size_t i = 0; i < count; i++) {
		fuse_ino_t ino = forgets[i].ino;
		if (ino_is_virtual(ino))
			continue;
		if (ino & REMOTE_INO_FLAG)
			sftpfs_forget_one(ino, forgets[i].nlookup);
		else if (local)
			local[n++] = forgets[i];
	}
	if (n)
		pass_ops.forget_multi(req, n, local);
	else
		fuse_reply_none(req);
	free(local);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (!ino_is_virtual(ino)) {
		backend_of(ino)->getattr(req, ino, fi);
		return;
	}
	struct stat st;
	int r = vstat(fs_of(req), ino, &st);
	double t = vattr_timeout(ino);
	if (r == 0 && vino_kind(ino) == K_SBDIR) {
		struct sandbox *sb = sandbox_get_serial(fs_of(req)->ctx, vino_serial(ino));
		if (sb && scoped_sb(sb))
			t = 0;
		sandbox_put(sb);
	}
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, t);
}

/* A directory listing, built at opendir and served by offset. */
struct vdir {
	struct vdir_ent {
		char *name;
		fuse_ino_t ino;
		mode_t mode;
	} *e;
	size_t n, cap;
};

static void vdir_add(struct vdir *d, const char *name, fuse_ino_t ino, mode_t mode)
{
	if (d->n == d->cap) {
		d->cap = d->cap ? d->cap * 2 : 32;
		d->e = realloc(d->e, d->cap * sizeof(*d->e));
		if (!d->e)
			abort();
	}
	d->e[d->n].name = xstrdup(name);
	d->e[d->n].ino = ino;
	d->e[d->n].mode = mode;
	d->n++;
}

void vdir_add_cb(void *d, const char *name, fuse_ino_t ino, mode_t mode)
{
	vdir_add(d, name, ino, mode);
}

static void vdir_free(struct vdir *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->e[i].name);
	free(d->e);
	free(d);
}

/* The listing of a virtual directory, as it is now; -errno on failure. */
static int vdir_build(struct seer_fs *fs, fuse_ino_t ino, struct vdir **out)
{
	enum vkind k = vino_kind(ino);
	struct vdir *d = xcalloc(1, sizeof(*d));
	vdir_add(d, ".", ino, S_IFDIR);
	vdir_add(d, "..", FUSE_ROOT_ID, S_IFDIR);
	if (k == K_TOP) {
		vdir_add(d, "README", vino(0, 0, K_README), S_IFREG);
		vdir_add(d, "CONFIG", vino(0, 0, K_CONFIG_REF), S_IFREG);
		vdir_add(d, "snapshots", vino(0, 0, K_SNAPDIR), S_IFDIR);
		pthread_mutex_lock(&fs->ctx->lock);
		for (struct sandbox *sb = fs->ctx->sandboxes; sb; sb = sb->next)
			vdir_add(d, sb->name, vino(sb->serial, 0, K_SBDIR), S_IFDIR);
		pthread_mutex_unlock(&fs->ctx->lock);
	} else if (k == K_SBDIR || k == K_JOBSDIR || k == K_JOBDIR || k == K_SESSDIR || k == K_SESS || k == K_FNDIR ||
		   k == K_FNSET) {
		struct sandbox *sb = sandbox_get_serial(fs->ctx, vino_serial(ino));
		if (!sb) {
			vdir_free(d);
			return -ENOENT;
		}
		if (k == K_SBDIR) {
			for (size_t i = 0; i < ARRAY_SIZE(sb_files); i++)
				vdir_add(d, sb_files[i].name, vino(sb->serial, 0, sb_files[i].kind), sb_files[i].mode);
			pthread_mutex_lock(&fs->lock);
			struct fs_sb *s = fs_sb_get(fs, sb->serial, 0);
			for (struct scratch *c = s ? s->scratch : NULL; c; c = c->next)
				vdir_add(d, c->name, vino(sb->serial, c->id, K_SCRATCH), S_IFREG);
			pthread_mutex_unlock(&fs->lock);
		} else if (k == K_SESSDIR || k == K_SESS) {
			sessionsfs_list(fs, sb, ino, vdir_add_cb, d);
		} else if (k == K_FNDIR || k == K_FNSET) {
			functionsfs_list(fs, sb, ino, vdir_add_cb, d);
		} else {
			jobsfs_list(fs, sb, ino, vdir_add_cb, d);
		}
		sandbox_put(sb);
	} else if (k == K_SNAPDIR || k == K_SNAPSHOT) {
		int r = snapfs_list(fs, ino, vdir_add_cb, d);
		if (r < 0) {
			vdir_free(d);
			return r;
		}
	} else if (k != K_ROOT_EMPTY) {
		vdir_free(d);
		return -ENOTDIR;
	}
	*out = d;
	return 0;
}

/* No OPENDIR, for any directory: the first one answered ENOSYS makes the
 * kernel stop sending OPENDIR and RELEASEDIR for good (two round trips
 * saved on every listing: git status, find and du open every directory)
 * and cache every listing, dropping it when the directory's mtime or
 * change count moves (see docs/rootfs.md). READDIR then comes without a
 * handle: virtual listings are built per request, root/ keeps a stream
 * per listing in progress (fs/root/pass.c), root/ over SFTP its listing cache. */
static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, ENOSYS);
}

/* READDIR of a virtual directory: there is no handle (no OPENDIR), so the
 * listing is built for each request and served from off. */
static void vreaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, int plus)
{
	struct vdir *d = NULL;
	int r = scoped_gate(req, ino, NULL);
	if (r == 0)
		r = vdir_build(fs_of(req), ino, &d);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	if (vino_kind(ino) == K_SBDIR && scoped_gate(req, ino, "config.json") < 0) {
		/* what a user other than the owner sees of a scoped sandbox */
		size_t keep = 0;
		for (size_t i = 0; i < d->n; i++) {
			if (i < 2 || !strcmp(d->e[i].name, "functions"))
				d->e[keep++] = d->e[i];
			else
				free(d->e[i].name);
		}
		d->n = keep;
	}
	char *buf = calloc(1, size ? size : 1);
	if (!buf) {
		vdir_free(d);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	size_t used = 0;
	for (size_t i = (size_t)off; i < d->n; i++) {
		size_t need;
		if (plus) {
			struct fuse_entry_param e;
			memset(&e, 0, sizeof(e));
			e.attr.st_mode = d->e[i].mode;
			e.attr.st_ino = d->e[i].ino;
			/* Only real entries are counted as looked up; "." and ".."
			 * and root/ (a passthrough inode once running) are left for
			 * a lookup to resolve. */
			if (i >= 2 && vino_kind(d->e[i].ino) != K_ROOT_EMPTY &&
			    vstat(fs_of(req), d->e[i].ino, &e.attr) == 0) {
				e.ino = d->e[i].ino;
				e.entry_timeout = vino_kind(d->e[i].ino) == K_SCRATCH ? 0 : VTIMEOUT;
			}
			need = fuse_add_direntry_plus(req, buf + used, size - used, d->e[i].name, &e, (off_t)i + 1);
		} else {
			struct stat st = {.st_ino = d->e[i].ino, .st_mode = d->e[i].mode};
			need = fuse_add_direntry(req, buf + used, size - used, d->e[i].name, &st, (off_t)i + 1);
		}
		if (need > size - used)
			break;
		used += need;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
	vdir_free(d);
}

static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	if (!ino_is_virtual(ino)) {
		backend_of(ino)->readdir(req, ino, size, off, fi);
		return;
	}
	vreaddir(req, ino, size, off, 0);
}

static void ll_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	if (!ino_is_virtual(ino)) {
		backend_of(ino)->readdirplus(req, ino, size, off, fi);
		return;
	}
	vreaddir(req, ino, size, off, 1);
}

/* ---- mkdir, rmdir: sandboxes --------------------------------------------------- */

static void ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct seer_fs *fs = fs_of(req);
	if (!ino_is_virtual(parent)) {
		backend_of(parent)->mkdir(req, parent, name, mode);
		return;
	}
	if (scoped_refused(req, parent, name))
		return;
	if (vino_kind(parent) == K_SESSDIR) {
		struct sandbox *sb = sandbox_get_serial(fs->ctx, vino_serial(parent));
		fuse_ino_t ino = 0;
		int r = sb ? sessionsfs_mkdir(fs, sb, name, &ino) : -ENOENT;
		sandbox_put(sb);
		if (r < 0)
			fuse_reply_err(req, -r);
		else
			reply_ventry(req, ino, 0);
		return;
	}
	if (vino_kind(parent) != K_TOP) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (top_name(name)) {
		fuse_reply_err(req, EEXIST);
		return;
	}
	struct sandbox *sb;
	int r = sandbox_create(fs->ctx, name, &sb);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	uint32_t serial = sb->serial;
	sandbox_put(sb);
	reply_ventry(req, vino(serial, 0, K_SBDIR), VTIMEOUT);
}

static void ll_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct seer_fs *fs = fs_of(req);
	if (!ino_is_virtual(parent)) {
		backend_of(parent)->rmdir(req, parent, name);
		return;
	}
	if (scoped_refused(req, parent, name))
		return;
	enum vkind pk = vino_kind(parent);
	if (pk == K_JOBSDIR) {
		struct sandbox *sb = sandbox_get_serial(fs->ctx, vino_serial(parent));
		int r = sb ? jobsfs_rmdir(fs, sb, name) : -ENOENT;
		sandbox_put(sb);
		fuse_reply_err(req, -r);
		return;
	}
	if (pk == K_SNAPDIR) {
		fuse_reply_err(req, -snapfs_rmdir(fs, name));
		return;
	}
	if (pk == K_SESSDIR) {
		struct sandbox *sb = sandbox_get_serial(fs->ctx, vino_serial(parent));
		int r = sb ? sessionsfs_rmdir(fs, sb, name) : -ENOENT;
		sandbox_put(sb);
		fuse_reply_err(req, -r);
		return;
	}
	if (pk != K_TOP) {
		fuse_reply_err(req, EPERM);
		return;
	}
	struct sandbox *sb = name_valid(name) ? sandbox_get(fs->ctx, name) : NULL;
	if (!sb) {
		fuse_reply_err(req, top_name(name) ? EPERM : ENOENT);
		return;
	}
	if (scoped_gate(req, vino(sb->serial, 0, K_SBDIR), "config.json") < 0) {
		sandbox_put(sb);
		fuse_reply_err(req, EACCES);
		return;
	}
	uint32_t serial = sb->serial;
	int r = sandbox_remove(sb);
	sandbox_put(sb);
	if (r == 0) {
		fs_sb_drop(fs, serial);
		pend_kick(fs, serial);
	}
	fuse_reply_err(req, -r);
}

/* ---- open, read, write of virtual files ------------------------------------------ */

static struct vfh *vfh_new(enum vkind k, struct sandbox *sb, uint32_t sub)
{
	struct vfh *h = xcalloc(1, sizeof(*h));
	h->kind = k;
	h->sb = sb;
	h->sub = sub;
	h->fd = -1;
	return h;
}

static void vfh_free(struct vfh *h)
{
	if (h->fd >= 0)
		close(h->fd);
	sbuf_free(&h->buf);
	functionsfs_fh_free(h);
	jobsfs_fh_free(h);
	sandbox_put(h->sb);
	free(h);
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct seer_fs *fs = fs_of(req);
	if (!ino_is_virtual(ino)) {
		backend_of(ino)->open(req, ino, fi);
		return;
	}
	enum vkind k = vino_kind(ino);
	int acc = fi->flags & O_ACCMODE;
	if (k == K_README || k == K_CONFIG_REF) {
		if (acc != O_RDONLY) {
			fuse_reply_err(req, EACCES);
			return;
		}
		struct vfh *h = vfh_new(k, NULL, 0);
		sbuf_append(&h->buf, top_text(k), strlen(top_text(k)));
		h->have_content = 1;
		fi->fh = (uintptr_t)h;
		fi->keep_cache = 1;
		fuse_reply_open(req, fi);
		return;
	}
	if (k == K_TOP || k == K_SNAPDIR || k == K_SBDIR || k == K_ROOT_EMPTY || k == K_SNAPSHOT) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if (snapfs_owns(ino)) {
		/* info.json / error of a snapshot: read-only, read once at open. */
		if (scoped_refused(req, ino, NULL))
			return;
		struct vfh *h = vfh_new(k, NULL, vino_sub(ino));
		int r = acc != O_RDONLY ? -EROFS : snapfs_read(fs, ino, &h->buf);
		if (r < 0) {
			vfh_free(h);
			fuse_reply_err(req, -r);
			return;
		}
		h->have_content = 1;
		fi->fh = (uintptr_t)h;
		fuse_reply_open(req, fi);
		return;
	}
	if (scoped_refused(req, ino, NULL))
		return;
	struct sandbox *sb = sandbox_get_serial(fs->ctx, vino_serial(ino));
	if (!sb) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	struct vfh *h = vfh_new(k, sb, vino_sub(ino));
	int r = 0;
	switch (k) {
	case K_STATUS:
	case K_ERROR:
	case K_INFO:
	case K_WAIT:
	case K_LOG:
		if (acc != O_RDONLY)
			r = -EACCES;
		if (k == K_LOG && r == 0) {
			char path[4096];
			sandbox_log_path(sb, path, sizeof(path));
			h->fd = open(path, O_RDONLY | O_CLOEXEC | O_CREAT, 0600);
			if (h->fd < 0)
				r = -errno;
		}
		fi->direct_io = 1;
		break;
	case K_CTL:
		if (acc != O_WRONLY && acc != O_RDWR)
			r = -EACCES;
		fi->direct_io = 1;
		break;
	case K_CONFIG:
		if (acc != O_RDONLY && (fi->flags & O_TRUNC))
			h->dirty = 1;          /* `echo > config.json`: the new text starts empty */
		else {
			char *c = sandbox_config_text(sb);
			sbuf_append(&h->buf, c, strlen(c));
			free(c);
		}
		h->have_content = 1;
		fi->direct_io = 1;
		break;
	case K_SCRATCH: {
		pthread_mutex_lock(&fs->lock);
		struct fs_sb *s = fs_sb_get(fs, sb->serial, 0);
		struct scratch *c = s ? s->scratch : NULL;
		while (c && c->id != h->sub)
			c = c->next;
		if (!c)
			r = -ENOENT;
		else if (fi->flags & O_TRUNC && acc != O_RDONLY)
			c->data.len = 0;
		pthread_mutex_unlock(&fs->lock);
		fi->direct_io = 1;
		break;
	}
	default:
		r = sessionsfs_owns(k)	  ? sessionsfs_open(fs, sb, ino, fi, h)
		    : functionsfs_owns(k) ? functionsfs_open(fs, sb, ino, fi, h)
					  : jobsfs_open(fs, sb, ino, fi, h);
		break;
	}
	if (r < 0) {
		vfh_free(h);
		fuse_reply_err(req, -r);
		return;
	}
	fi->fh = (uintptr_t)h;
	fuse_reply_open(req, fi);
}

static int wait_try_answer(struct seer_fs *fs, struct pend *p)
{
	struct vfh *h = p->fh;
	if (sandbox_settling(h->sb) && !h->sb->removed)
		return 0;
	if (!h->have_content) {
		char *c = sandbox_status_text(h->sb);
		sbuf_append(&h->buf, c, strlen(c));
		free(c);
		h->have_content = 1;
	}
	reply_slice(p->req, &h->buf, p->size, p->off);
	return 1;
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct seer_fs *fs = fs_of(req);
	if (!ino_is_virtual(ino)) {
		backend_of(ino)->read(req, ino, size, off, fi);
		return;
	}
	struct vfh *h = (struct vfh *)(uintptr_t)fi->fh;
	if (h->kind == K_SNAP_INFO) {
		reply_slice(req, &h->buf, size, off);
		return;
	}
	switch (h->kind) {
	case K_WAIT:
		if (!h->have_content && sandbox_settling(h->sb)) {
			struct pend *p = pend_new(req, h, size, off, wait_try_answer);
			pend_park(fs, p);
			return;
		}
		/* fall through */
	case K_STATUS:
	case K_ERROR:
	case K_INFO:
	case K_README:
	case K_CONFIG_REF:
	case K_CONFIG:
		/* The first read takes a snapshot; later reads at other offsets
		 * continue the same text, so `cat` never sees a torn status. */
		if (!h->have_content || (off == 0 && h->kind != K_CONFIG && h->kind != K_README && h->kind != K_CONFIG_REF)) {
			char *c = content_of(h->sb, h->kind == K_WAIT ? K_STATUS : h->kind);
			h->buf.len = 0;
			sbuf_append(&h->buf, c, strlen(c));
			free(c);
			h->have_content = 1;
		}
		reply_slice(req, &h->buf, size, off);
		return;
	case K_LOG:
		reply_pread(req, h->fd, size, off);
		return;
	case K_SCRATCH: {
		pthread_mutex_lock(&fs->lock);
		struct fs_sb *s = fs_sb_get(fs, h->sb->serial, 0);
		struct scratch *c = s ? s->scratch : NULL;
		while (c && c->id != h->sub)
			c = c->next;
		if (c)
			reply_slice(req, &c->data, size, off);
		else
			fuse_reply_err(req, ENOENT);
		pthread_mutex_unlock(&fs->lock);
		return;
	}
	case K_CTL:
		fuse_reply_err(req, EBADF);
		return;
	default:
		if (sessionsfs_owns(h->kind))
			sessionsfs_read(fs, req, h, size, off);
		else if (functionsfs_owns(h->kind))
			functionsfs_read(fs, req, h, size, off);
		else
			jobsfs_read(fs, req, h, size, off);
		return;
	}
}

/* Writes into a buffer at an offset, as a regular file would. */
static int buf_write(struct sbuf *b, const char *data, size_t size, off_t off, size_t max)
{
	if ((size_t)off + size > max)
		return -EFBIG;
	if ((size_t)off > b->len) {
		size_t gap = (size_t)off - b->len;
		char *z = calloc(1, gap);
		if (!z)
			return -ENOMEM;
		sbuf_append(b, z, gap);
		free(z);
	}
	if ((size_t)off + size > b->len) {
		size_t keep = (size_t)off;
		b->len = keep;
		return sbuf_append(b, data, size);
	}
	memcpy(b->data + off, data, size);
	return 0;
}

static void ll_write(fuse_req_t req, fuse_ino_t ino, const char *data, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct seer_fs *fs = fs_of(req);
	if (!ino_is_virtual(ino)) {
		backend_of(ino)->write(req, ino, data, size, off, fi);
		return;
	}
	struct vfh *h = (struct vfh *)(uintptr_t)fi->fh;
	int r;
	switch (h->kind) {
	case K_CONFIG: {
		if (fi->flags & O_APPEND)
			off = (off_t)h->buf.len;
		size_t before = h->buf.len;
		r = buf_write(&h->buf, data, size, off, SEER_CONFIG_MAX);
		if (r == -EFBIG) {
			sandbox_set_error(h->sb, "sandbox %s: config.json is limited to %d bytes; nothing was applied",
					  h->sb->name, SEER_CONFIG_MAX);
			h->too_big = 1;   /* the close fails the same way and applies nothing */
			break;
		}
		/* A text that is already complete and wrong fails this write, so
		 * that `echo ... > config.json` in a shell, which never sees the
		 * close's error, still reports it. An incomplete text waits for
		 * the close. */
		if (r == 0 && off == 0 && h->buf.len == size) {
			char err[1024];
			r = seer_config_precheck(h->buf.data, h->buf.len, err, sizeof(err));
			if (r < 0) {
				sandbox_set_error(h->sb, "sandbox %s: config.json was not applied: %s; the previous config stays",
						  h->sb->name, err);
				h->buf.len = before;
				h->dirty = 0;   /* refused whole: the close must not apply an empty text */
				break;
			}
		}
		h->dirty = 1;
		h->written = 1;
		break;
	}
	case K_CTL:
		r = sandbox_ctl(h->sb, data, size);
		break;
	case K_SCRATCH: {
		pthread_mutex_lock(&fs->lock);
		struct fs_sb *s = fs_sb_get(fs, h->sb->serial, 0);
		struct scratch *c = s ? s->scratch : NULL;
		while (c && c->id != h->sub)
			c = c->next;
		if (!c) {
			r = -ENOENT;
		} else {
			if (fi->flags & O_APPEND)
				off = (off_t)c->data.len;
			r = buf_write(&c->data, data, size, off, SEER_CONFIG_MAX);
			clock_gettime(CLOCK_REALTIME, &c->mtime);
		}
		pthread_mutex_unlock(&fs->lock);
		break;
	}
	default:
		r = sessionsfs_owns(h->kind)	? sessionsfs_write(fs, h, data, size, off, fi, fuse_req_ctx(req)->pid)
		    : functionsfs_owns(h->kind) ? functionsfs_write(fs, h, data, size, off)
						: jobsfs_write(fs, h, data, size, off, fi, fuse_req_ctx(req)->pid);
		break;
	}
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_write(req, size);
}

static void ll_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (!ino_is_virtual(ino)) {
		backend_of(ino)->flush(req, ino, fi);
		return;
	}
	struct vfh *h = (struct vfh *)(uintptr_t)fi->fh;
	int r = 0;
	if (h->kind == K_CONFIG && h->too_big) {
		r = -EFBIG;
	} else if (h->kind == K_CONFIG && h->dirty && h->written) {
		/* close() is where a written config lands: its error is the
		 * close's error, and the state is `provisioning` before it returns.
		 * A flush before any write (a shell's dup2 of the fresh fd) is not
		 * the end of the text and is skipped. */
		h->dirty = 0;
		r = sandbox_apply_config(h->sb, h->buf.data ? h->buf.data : "", h->buf.len);
	} else if (h->kind != K_CONFIG) {
		r = jobsfs_flush(fs_of(req), h);
	}
	fuse_reply_err(req, -r);
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (!ino_is_virtual(ino)) {
		backend_of(ino)->release(req, ino, fi);
		return;
	}
	struct vfh *h = (struct vfh *)(uintptr_t)fi->fh;
	if (h->kind == K_CONFIG && h->dirty && !h->too_big) {
		/* Truncated and closed without a write (`: > config.json`): that
		 * empty text is the new config, and it is refused; say so. */
		sandbox_apply_config(h->sb, h->buf.data ? h->buf.data : "", h->buf.len);
	}
	jobsfs_release(fs_of(req), h);
	pend_purge(fs_of(req), h);
	vfh_free(h);
	fuse_reply_err(req, 0);
}

static void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	if (!ino_is_virtual(ino)) {
		backend_of(ino)->fsync(req, ino, datasync, fi);
		return;
	}
	fuse_reply_err(req, 0);
}

static void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
	struct seer_fs *fs = fs_of(req);
	if (!ino_is_virtual(ino)) {
		backend_of(ino)->setattr(req, ino, attr, to_set, fi);
		return;
	}
	if (scoped_refused(req, ino, NULL))
		return;
	enum vkind k = vino_kind(ino);
	if (to_set & FUSE_SET_ATTR_SIZE) {
		struct vfh *h = fi ? (struct vfh *)(uintptr_t)fi->fh : NULL;
		if (k == K_CONFIG && h) {
			if ((size_t)attr->st_size < h->buf.len)
				h->buf.len = (size_t)attr->st_size;
			else
				buf_write(&h->buf, "", 0, attr->st_size, SEER_CONFIG_MAX);
			h->dirty = 1;
			h->written = 1;
		} else if (k == K_SCRATCH) {
			pthread_mutex_lock(&fs->lock);
			struct fs_sb *s = fs_sb_get(fs, vino_serial(ino), 0);
			struct scratch *c = s ? s->scratch : NULL;
			while (c && c->id != vino_sub(ino))
				c = c->next;
			if (c && (size_t)attr->st_size <= c->data.len)
				c->data.len = (size_t)attr->st_size;
			pthread_mutex_unlock(&fs->lock);
		} else if (k == K_CONFIG) {
			/* truncate(1) without an open file: the text becomes that. */
			struct sandbox *sb = sandbox_get_serial(fs->ctx, vino_serial(ino));
			int r = -ENOENT;
			if (sb) {
				char *c = sandbox_config_text(sb);
				size_t len = strlen(c);
				r = (size_t)attr->st_size <= len ? sandbox_apply_config(sb, c, (size_t)attr->st_size) : -EINVAL;
				free(c);
				sandbox_put(sb);
			}
			if (r < 0) {
				fuse_reply_err(req, -r);
				return;
			}
		} else if (k != K_CTL && k != K_EXEC && k != K_EXEC_PY && k != K_JOB_STDIN && k != K_SESS_EXEC &&
			   k != K_SESS_CTL && k != K_FN_CALL) {
			fuse_reply_err(req, EACCES);
			return;
		}
	}
	if (k == K_SCRATCH && (to_set & FUSE_SET_ATTR_MODE)) {
		pthread_mutex_lock(&fs->lock);
		struct fs_sb *s = fs_sb_get(fs, vino_serial(ino), 0);
		for (struct scratch *c = s ? s->scratch : NULL; c; c = c->next)
			if (c->id == vino_sub(ino))
				c->mode = attr->st_mode & 07777;
		pthread_mutex_unlock(&fs->lock);
	}
	/* Times and modes of control files are fixed; accept touch quietly. */
	struct stat st;
	int r = vstat(fs, ino, &st);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, 0);
}

/* ---- scratch files: editors' temporaries in a sandbox's directory --------------- */

static void ll_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
	struct seer_fs *fs = fs_of(req);
	if (!ino_is_virtual(parent)) {
		backend_of(parent)->create(req, parent, name, mode, fi);
		return;
	}
	if (scoped_refused(req, parent, name))
		return;
	if (vino_kind(parent) != K_SBDIR) {
		fuse_reply_err(req, vino_kind(parent) == K_ROOT_EMPTY ? ENOTCONN : EPERM);
		return;
	}
	if (strlen(name) >= sizeof(((struct scratch *)0)->name)) {
		fuse_reply_err(req, ENAMETOOLONG);
		return;
	}
	struct sandbox *sb = sandbox_get_serial(fs->ctx, vino_serial(parent));
	if (!sb) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (sb_file_by_name(name)) {
		sandbox_put(sb);
		fuse_reply_err(req, EEXIST);
		return;
	}
	pthread_mutex_lock(&fs->lock);
	struct fs_sb *s = fs_sb_get(fs, sb->serial, 1);
	struct scratch *c = s->scratch;
	int n = 0;
	for (; c && strcmp(c->name, name); c = c->next)
		n++;
	if (!c && n >= 64) {
		pthread_mutex_unlock(&fs->lock);
		sandbox_put(sb);
		fuse_reply_err(req, ENOSPC);
		return;
	}
	if (!c) {
		c = xcalloc(1, sizeof(*c));
		c->id = ++s->next_scratch;
		snprintf(c->name, sizeof(c->name), "%s", name);
		c->mode = mode & 07777;
		clock_gettime(CLOCK_REALTIME, &c->mtime);
		c->next = s->scratch;
		s->scratch = c;
	} else if (fi->flags & O_EXCL) {
		pthread_mutex_unlock(&fs->lock);
		sandbox_put(sb);
		fuse_reply_err(req, EEXIST);
		return;
	} else if (fi->flags & O_TRUNC) {
		c->data.len = 0;
	}
	uint32_t id = c->id, serial = sb->serial;
	pthread_mutex_unlock(&fs->lock);
	struct vfh *h = vfh_new(K_SCRATCH, sb, id);
	struct fuse_entry_param e;
	memset(&e, 0, sizeof(e));
	e.ino = vino(serial, id, K_SCRATCH);
	vstat(fs, e.ino, &e.attr);
	fi->fh = (uintptr_t)h;
	fi->direct_io = 1;
	fuse_reply_create(req, &e, fi);
}

static void ll_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	if (!ino_is_virtual(parent)) {
		backend_of(parent)->mknod(req, parent, name, mode, rdev);
		return;
	}
	fuse_reply_err(req, EPERM);
}

static int scratch_remove(struct seer_fs *fs, uint32_t serial, const char *name)
{
	pthread_mutex_lock(&fs->lock);
	struct fs_sb *s = fs_sb_get(fs, serial, 0);
	int r = -ENOENT;
	for (struct scratch **pp = s ? &s->scratch : NULL; pp && *pp; pp = &(*pp)->next) {
		if (!strcmp((*pp)->name, name)) {
			struct scratch *c = *pp;
			*pp = c->next;
			sbuf_free(&c->data);
			free(c);
			r = 0;
			break;
		}
	}
	pthread_mutex_unlock(&fs->lock);
	return r;
}

static void ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct seer_fs *fs = fs_of(req);
	if (!ino_is_virtual(parent)) {
		backend_of(parent)->unlink(req, parent, name);
		return;
	}
	if (scoped_refused(req, parent, name))
		return;
	if (vino_kind(parent) == K_JOBDIR) {
		struct sandbox *sb = sandbox_get_serial(fs->ctx, vino_serial(parent));
		int r = sb ? jobsfs_unlink(fs, sb, parent, name) : -ENOENT;
		sandbox_put(sb);
		fuse_reply_err(req, -r);
		return;
	}
	if (vino_kind(parent) != K_SBDIR || sb_file_by_name(name)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	fuse_reply_err(req, -scratch_remove(fs, vino_serial(parent), name));
}

static void ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	struct seer_fs *fs = fs_of(req);
	int pv = ino_is_virtual(parent), nv = ino_is_virtual(newparent);
	if (!pv && !nv && backend_of(parent) != backend_of(newparent)) {
		fuse_reply_err(req, EXDEV);
		return;
	}
	if (!pv && !nv) {
		backend_of(parent)->rename(req, parent, name, newparent, newname, flags);
		return;
	}
	if (scoped_refused(req, parent, name))
		return;
	if (pv != nv || parent != newparent || vino_kind(parent) != K_SBDIR) {
		fuse_reply_err(req, EXDEV);
		return;
	}
	if (sb_file_by_name(name) || flags & RENAME_EXCHANGE) {
		fuse_reply_err(req, EPERM);
		return;
	}
	uint32_t serial = vino_serial(parent);
	const struct vdesc *target = sb_file_by_name(newname);
	if (target && target->kind != K_CONFIG) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (target && (flags & RENAME_NOREPLACE)) {
		fuse_reply_err(req, EEXIST);
		return;
	}
	/* Take the scratch file's text out under the lock, apply it without. */
	pthread_mutex_lock(&fs->lock);
	struct fs_sb *s = fs_sb_get(fs, serial, 0);
	struct scratch *c = s ? s->scratch : NULL;
	while (c && strcmp(c->name, name))
		c = c->next;
	if (!c) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (!target) {
		for (struct scratch *o = s->scratch; o; o = o->next) {
			if (o != c && !strcmp(o->name, newname)) {
				if (flags & RENAME_NOREPLACE) {
					pthread_mutex_unlock(&fs->lock);
					fuse_reply_err(req, EEXIST);
					return;
				}
				o->name[0] = '\0';   /* replaced: dropped below */
			}
		}
		snprintf(c->name, sizeof(c->name), "%s", newname);
		pthread_mutex_unlock(&fs->lock);
		scratch_remove(fs, serial, "");
		fuse_reply_err(req, 0);
		return;
	}
	struct sbuf text = {0};
	sbuf_append(&text, c->data.data ? c->data.data : "", c->data.len);
	pthread_mutex_unlock(&fs->lock);
	struct sandbox *sb = sandbox_get_serial(fs->ctx, serial);
	int r = sb ? sandbox_apply_config(sb, text.data, text.len) : -ENOENT;
	sandbox_put(sb);
	sbuf_free(&text);
	if (r == 0)
		scratch_remove(fs, serial, name);
	fuse_reply_err(req, -r);
}

static void ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	if (!ino_is_virtual(ino) && !ino_is_virtual(newparent) && backend_of(ino) == backend_of(newparent)) {
		backend_of(ino)->link(req, ino, newparent, newname);
		return;
	}
	fuse_reply_err(req, ino_is_virtual(ino) && ino_is_virtual(newparent) ? EPERM : EXDEV);
}

static void ll_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	if (!ino_is_virtual(parent)) {
		backend_of(parent)->symlink(req, link, parent, name);
		return;
	}
	fuse_reply_err(req, EPERM);
}

static void ll_readlink(fuse_req_t req, fuse_ino_t ino)
{
	if (!ino_is_virtual(ino)) {
		backend_of(ino)->readlink(req, ino);
		return;
	}
	if (vino_kind(ino) == K_JOBS_LATEST || vino_kind(ino) == K_JOBS_MINE) {
		struct sandbox *sb = sandbox_get_serial(fs_of(req)->ctx, vino_serial(ino));
		char buf[32];
		int r = sb ? jobsfs_readlink(sb, ino, fuse_req_ctx(req)->pid, buf, sizeof(buf)) : -ENOENT;
		sandbox_put(sb);
		if (r < 0)
			fuse_reply_err(req, -r);
		else
			fuse_reply_readlink(req, buf);
		return;
	}
	fuse_reply_err(req, EINVAL);
}

static void ll_statfs(fuse_req_t req, fuse_ino_t ino)
{
	if (!ino_is_virtual(ino)) {
		backend_of(ino)->statfs(req, ino);
		return;
	}
	struct statvfs sv;
	if (statvfs(fs_of(req)->ctx->state_dir, &sv) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	fuse_reply_statfs(req, &sv);
}

/* access(2) on a virtual inode: the modes shown, for the caller (the
 * mounting user, or root, which needs an x bit only to execute). */
static void ll_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	if (!ino_is_virtual(ino)) {
		if (backend_of(ino)->access)
			backend_of(ino)->access(req, ino, mask);
		else
			fuse_reply_err(req, 0);   /* the remote side checks each call */
		return;
	}
	struct stat st;
	int r = vstat(fs_of(req), ino, &st);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	const struct fuse_ctx *c = fuse_req_ctx(req);
	mode_t m = st.st_mode;
	int ok;
	if (c->uid == 0) {
		ok = !(mask & X_OK) || S_ISDIR(m) || (m & 0111);
	} else {
		mode_t bits = c->uid == st.st_uid ? (m >> 6) & 7 : c->gid == st.st_gid ? (m >> 3) & 7 : m & 7;
		ok = ((mask & R_OK) == 0 || (bits & 4)) && ((mask & W_OK) == 0 || (bits & 2)) &&
		     ((mask & X_OK) == 0 || (bits & 1));
	}
	fuse_reply_err(req, ok ? 0 : EACCES);
}

static void ll_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct fuse_pollhandle *ph)
{
	if (!ino_is_virtual(ino) && backend_of(ino)->poll) {
		backend_of(ino)->poll(req, ino, fi, ph);
		return;
	}
	if (ph)
		fuse_pollhandle_destroy(ph);
	fuse_reply_poll(req, POLLIN | POLLOUT);
}

/* ---- calls that only root/ answers ---------------------------------------------- */

#define PASS_ONLY(name, proto, args)                      \
	static void ll_##name proto                       \
	{                                                 \
		if (!ino_is_virtual(ino) && backend_of(ino)->name) { \
			backend_of(ino)->name args;       \
			return;                           \
		}                                         \
		fuse_reply_err(req, ENOTSUP);             \
	}

/* Extended attributes: root/'s, when -o xattr asked for them (fs.h). */
#define XATTR_OP(name, proto, args)                                    \
	static void ll_##name proto                                    \
	{                                                              \
		if (!fs_of(req)->xattr)                                \
			fuse_reply_err(req, ENOSYS);                   \
		else if (!ino_is_virtual(ino) && backend_of(ino)->name) \
			backend_of(ino)->name args;                    \
		else                                                   \
			fuse_reply_err(req, ENOTSUP);                  \
	}

XATTR_OP(setxattr, (fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags),
	 (req, ino, name, value, size, flags))
XATTR_OP(getxattr, (fuse_req_t req, fuse_ino_t ino, const char *name, size_t size), (req, ino, name, size))
XATTR_OP(listxattr, (fuse_req_t req, fuse_ino_t ino, size_t size), (req, ino, size))
XATTR_OP(removexattr, (fuse_req_t req, fuse_ino_t ino, const char *name), (req, ino, name))
PASS_ONLY(fallocate, (fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, struct fuse_file_info *fi),
	  (req, ino, mode, offset, length, fi))
/* root/'s inode flags (chattr/lsattr); anything else is no tty. */
static void ll_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg, struct fuse_file_info *fi,
		     unsigned flags, const void *in_buf, size_t in_bufsz, size_t out_bufsz)
{
	if (!ino_is_virtual(ino) && backend_of(ino)->ioctl)
		backend_of(ino)->ioctl(req, ino, cmd, arg, fi, flags, in_buf, in_bufsz, out_bufsz);
	else
		fuse_reply_err(req, ENOTTY);
}
PASS_ONLY(flock, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op), (req, ino, fi, op))
PASS_ONLY(getlk, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock), (req, ino, fi, lock))
PASS_ONLY(setlk, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock, int sleep),
	  (req, ino, fi, lock, sleep))
PASS_ONLY(fsyncdir, (fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi), (req, ino, datasync, fi))
PASS_ONLY(lseek, (fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi),
	  (req, ino, off, whence, fi))

static void ll_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *bufv, off_t off, struct fuse_file_info *fi)
{
	if (!ino_is_virtual(ino) && backend_of(ino)->write_buf) {
		backend_of(ino)->write_buf(req, ino, bufv, off, fi);
		return;
	}
	/* Virtual files take small writes: gather the buffer and use write. */
	size_t len = fuse_buf_size(bufv);
	char *mem = malloc(len ? len : 1);
	if (!mem) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	struct fuse_bufvec dst = FUSE_BUFVEC_INIT(len);
	dst.buf[0].mem = mem;
	ssize_t n = fuse_buf_copy(&dst, bufv, 0);
	if (n < 0) {
		free(mem);
		fuse_reply_err(req, (int)-n);
		return;
	}
	if (!ino_is_virtual(ino))
		backend_of(ino)->write(req, ino, mem, (size_t)n, off, fi);
	else
		ll_write(req, ino, mem, (size_t)n, off, fi);
	free(mem);
}

static void ll_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, struct fuse_file_info *fi_in,
			       fuse_ino_t ino_out, off_t off_out, struct fuse_file_info *fi_out, size_t len, int flags)
{
	if (!ino_is_virtual(ino_in) && !ino_is_virtual(ino_out) && backend_of(ino_in) == backend_of(ino_out) && backend_of(ino_in)->copy_file_range) {
		backend_of(ino_in)->copy_file_range(req, ino_in, off_in, fi_in, ino_out, off_out, fi_out, len, flags);
		return;
	}
	fuse_reply_err(req, EXDEV);
}

static void ll_init(void *userdata, struct fuse_conn_info *conn)
{
	struct seer_fs *fs = userdata;
	/* O_TRUNC arrives with open(), so `echo > config.json` is one request. */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	if (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT)
		conn->want |= FUSE_CAP_NO_OPENDIR_SUPPORT;
	pass_init_conn(conn, fs);
	/* libfuse derives max_pages from max_write, and max_pages bounds
	 * direct-I/O reads: keeping a request within what one splice pipe
	 * carries lets a 1 MiB read of job output go by splice (two requests,
	 * one copy) instead of through a buffer (two copies). */
	size_t lim = jobsfs_splice_limit(1) & ~(size_t)4095;
	if (conn->max_write > lim)
		conn->max_write = (unsigned)lim;
	fs->max_write = conn->max_write;
}

static void ll_destroy(void *userdata)
{
	(void)userdata;
}

const struct fuse_lowlevel_ops seer_ll_ops = {
	.init = ll_init,
	.destroy = ll_destroy,
	.lookup = ll_lookup,
	.forget = ll_forget,
	.forget_multi = ll_forget_multi,
	.getattr = ll_getattr,
	.setattr = ll_setattr,
	.readlink = ll_readlink,
	.mknod = ll_mknod,
	.mkdir = ll_mkdir,
	.unlink = ll_unlink,
	.rmdir = ll_rmdir,
	.symlink = ll_symlink,
	.rename = ll_rename,
	.link = ll_link,
	.open = ll_open,
	.read = ll_read,
	.write = ll_write,
	.write_buf = ll_write_buf,
	.flush = ll_flush,
	.release = ll_release,
	.fsync = ll_fsync,
	.opendir = ll_opendir,
	.readdir = ll_readdir,
	.readdirplus = ll_readdirplus,
	.fsyncdir = ll_fsyncdir,
	.statfs = ll_statfs,
	.setxattr = ll_setxattr,
	.getxattr = ll_getxattr,
	.listxattr = ll_listxattr,
	.removexattr = ll_removexattr,
	.access = ll_access,
	.create = ll_create,
	.getlk = ll_getlk,
	.setlk = ll_setlk,
	.flock = ll_flock,
	.fallocate = ll_fallocate,
	.ioctl = ll_ioctl,
	.copy_file_range = ll_copy_file_range,
	.lseek = ll_lseek,
	.poll = ll_poll,
};
