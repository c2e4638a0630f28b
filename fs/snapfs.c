/*
 * snapfs.c - MOUNT/snapshots: every snapshot as a directory holding
 * info.json, error (why the last rmdir was refused) and root/, the
 * snapshot's files read-only.
 *
 * root/ is the merged view of the snapshot's layer stack. Mounting an
 * overlay needs a mount namespace we own, so a short-lived child makes a
 * user+mount namespace (under root, whose sandboxes own their files as a
 * range of ids, a mount namespace only), mounts the layers read-only (no
 * upper dir, nosuid, nodev) and
 * waits; seerfs opens the mount's root through /proc/CHILD/root and lets
 * the child exit. The open fd keeps the (now detached) mount alive, like a
 * lazy umount, and fs/root/pass.c serves root/ from it; writes fail with EROFS
 * because the mount is read-only. When pass_kill closes the fds (snapshot
 * deleted) or seerfs exits, the mount goes away with them: no helper
 * process lingers and nothing needs killing.
 *
 * A snapshot its provider keeps on a remote host (info.json has "where")
 * is shown instead by a read-only fs/root/sftpfs.c over the provider's SFTP
 * client (snap_remote), kept in the same fs_sb's remote field.
 *
 * The pass_fs of each viewed snapshot is kept in fs->sbs under the key
 * 0x80000000 | id: sandbox serials never reach that range (inode numbers
 * keep 23 bits of them), and the list already has a lock and a lifetime.
 */
#include "fs/snapfs.h"
#include "core/provider.h"
#include "core/snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* ---- root/: the read-only overlay ------------------------------------------------- */

struct view_args {
	const char *opts, *target;
	char uidmap[64], gidmap[64];
	int no_userns;         /* root with a range: a mount namespace only */
	int ready_w, hold_r;
	int ready_r, hold_w;   /* the parent's ends: the child closes them */
};

static int put_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t k = write(fd, s, strlen(s));
	close(fd);
	return k == (ssize_t)strlen(s) ? 0 : -1;
}

/* The child: only async-signal-safe calls (the parent has threads). */
static void view_child(const struct view_args *a)
{
	int e = 0;
	/* fork copied the parent's end of the hold pipe: without closing it
	 * the read below would never see EOF. */
	close(a->ready_r);
	close(a->hold_w);
	if (unshare(a->no_userns ? CLONE_NEWNS : CLONE_NEWUSER | CLONE_NEWNS) < 0)
		e = errno;
	else if (!a->no_userns &&
		 (put_str("/proc/self/setgroups", "deny") < 0 || put_str("/proc/self/uid_map", a->uidmap) < 0 ||
		  put_str("/proc/self/gid_map", a->gidmap) < 0))
		e = errno ? errno : EPERM;
	else if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		e = errno;
	else if (mount("overlay", a->target, "overlay", MS_RDONLY | MS_NOSUID | MS_NODEV, a->opts) < 0)
		e = errno;
	if (write(a->ready_w, &e, sizeof(e)) != sizeof(e))
		_exit(1);
	char c;
	/* Hold the namespace until seerfs has opened the mount. */
	while (read(a->hold_r, &c, 1) < 0 && errno == EINTR)
		;
	_exit(e ? 1 : 0);
}

/* An O_PATH fd on the merged, read-only view of snapshot name. */
static int open_view(struct seer_fs *fs, const char *name, char *err, size_t n)
{
	struct seer_ctx *ctx = fs->ctx;
	struct sbuf lower = {0}, opts = {0};
	char e2[1024];
	int r = snapshot_stack(ctx, name, &lower, e2, sizeof(e2));
	if (r < 0) {
		snprintf(err, n, "%s", e2);
		sbuf_free(&lower);
		return r;
	}
	/* Overlay needs two lower dirs when there is no upper: the empty
	 * directory is the bottom layer, which changes nothing. */
	char target[4096];
	snprintf(target, sizeof(target), "%s/empty", ctx->state_dir);
	sbuf_printf(&opts, "lowerdir=%s:%s,userxattr", lower.data, target);
	sbuf_free(&lower);
	/* Under root the layers belong to the sandboxes' range, which a
	 * namespace mapping only root would not let the overlay read (its
	 * mounter's rights count, and they stop at ids the namespace does not
	 * map: a 0600 file of the sandbox's would be EACCES). Root mounts it
	 * in a mount namespace of its own, as core/providers/local/local.c mounts a
	 * restored sandbox's overlay; read-only, nosuid, nodev either way. */
	struct view_args a = {.opts = opts.data, .target = target, .no_userns = ctx->ids.count > 1};
	snprintf(a.uidmap, sizeof(a.uidmap), "0 %u 1\n", (unsigned)ctx->uid);
	snprintf(a.gidmap, sizeof(a.gidmap), "0 %u 1\n", (unsigned)ctx->gid);
	int ready[2] = {-1, -1}, hold[2] = {-1, -1};
	if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(hold, O_CLOEXEC) < 0) {
		r = -errno;
		snprintf(err, n, "snapshot %s: root/: pipe: %s", name, strerror(-r));
		goto out;
	}
	a.ready_w = ready[1];
	a.hold_r = hold[0];
	a.ready_r = ready[0];
	a.hold_w = hold[1];
	pid_t pid = fork();
	if (pid < 0) {
		r = -errno;
		snprintf(err, n, "snapshot %s: root/: fork: %s", name, strerror(-r));
		goto out;
	}
	if (pid == 0)
		view_child(&a);
	close(ready[1]);
	ready[1] = -1;
	close(hold[0]);
	hold[0] = -1;
	int ce = 0;
	ssize_t k;
	do
		k = read(ready[0], &ce, sizeof(ce));
	while (k < 0 && errno == EINTR);
	int fd = -1;
	if (k != sizeof(ce)) {
		r = -ECHILD;
		snprintf(err, n, "snapshot %s: root/: the mount helper died", name);
	} else if (ce) {
		r = -ce;
		snprintf(err, n, "snapshot %s: root/: cannot mount its %s layers read-only: %s (user namespaces or overlayfs unavailable?)",
			 name, "overlay", strerror(ce));
	} else {
		char p[4200];
		snprintf(p, sizeof(p), "/proc/%d/root%s", (int)pid, target);
		fd = open(p, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0) {
			r = -errno;
			snprintf(err, n, "snapshot %s: root/: cannot open the view at %s: %s", name, p, strerror(-r));
		}
	}
	close(hold[1]);   /* the child exits; the mount lives on through fd */
	hold[1] = -1;
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	if (fd >= 0)
		r = fd;
out:
	for (int i = 0; i < 2; i++) {
		if (ready[i] >= 0)
			close(ready[i]);
		if (hold[i] >= 0)
			close(hold[i]);
	}
	sbuf_free(&opts);
	return r;
}

/*
 * root/ of a snapshot its provider keeps on a remote host: the copy served
 * read-only over the provider's SFTP client (fs/root/sftpfs.c). The view is
 * replaced when the provider's link changed (a reconnect), as root/ of a
 * remote sandbox is.
 */
static int remote_root_entry(struct seer_fs *fs, uint32_t id, const char *name, const char *pname, const char *where,
			     struct fuse_entry_param *e)
{
	const struct seer_provider *prov = NULL;
	const void *settings = NULL;
	struct sftp_client *cli = NULL;
	char err[4096], root[4096];
	int r = seer_provider_resolve(fs->ctx, pname, &prov, &settings, err, sizeof(err));
	if (r == 0 && !prov->snap_remote) {
		snprintf(err, sizeof(err), "provider %s cannot show its snapshots", pname);
		r = -ENOTSUP;
	}
	if (r == 0)
		r = prov->snap_remote(fs->ctx, settings, where, &cli, root, sizeof(root), err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "seerfs: snapshot %s: root/ (kept by provider %s at %s): %s\n", name, pname, where, err);
		return r;
	}
	pthread_mutex_lock(&fs->lock);
	struct fs_sb *s = fs_sb_get(fs, SNAP_KEY(id), 0);
	r = s && s->remote && sftpfs_uses(s->remote, cli) ? sftpfs_root_entry(s->remote, e) : -ENOENT;
	pthread_mutex_unlock(&fs->lock);
	if (r == 0)
		return 0;
	struct sftpfs *nr = sftpfs_new(fs, NULL, cli, root);
	if (!nr) {
		fprintf(stderr, "seerfs: snapshot %s: root/: %s cannot be read over SFTP\n", name, root);
		return -EIO;
	}
	sftpfs_set_readonly(nr);
	return fs_sb_install_remote(fs, SNAP_KEY(id), nr, cli, e);
}

static int root_entry(struct seer_fs *fs, uint32_t id, const char *name, struct fuse_entry_param *e)
{
	char pname[128], where[2048];
	if (snapshot_info(fs->ctx, name, pname, sizeof(pname), where, sizeof(where)) == 0 && where[0])
		return remote_root_entry(fs, id, name, pname, where, e);

	pthread_mutex_lock(&fs->lock);
	struct fs_sb *s = fs_sb_get(fs, SNAP_KEY(id), 0);
	int r = s && s->pass ? pass_root_entry(s->pass, e) : -ENOENT;
	pthread_mutex_unlock(&fs->lock);
	if (r == 0)
		return 0;
	char err[4800];
	int fd = open_view(fs, name, err, sizeof(err));
	if (fd < 0) {
		fprintf(stderr, "seerfs: %s\n", err);
		return fd;
	}
	struct pass_fs *np = pass_new(fs, NULL, fd);
	if (!np)
		return -ENOMEM;
	struct pass_fs *old = NULL;
	pthread_mutex_lock(&fs->lock);
	s = fs_sb_get(fs, SNAP_KEY(id), 1);
	if (s->pass)
		old = np;   /* lost a race: use the other thread's */
	else
		s->pass = np;
	r = pass_root_entry(s->pass, e);
	pthread_mutex_unlock(&fs->lock);
	if (old)
		pass_kill(old);
	return r;
}

int snapfs_lookup(struct seer_fs *fs, fuse_ino_t parent, const char *name, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	enum vkind pk = vino_kind(parent);
	fuse_ino_t ino;
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
		if (!strcmp(name, "root")) {
			r = root_entry(fs, id, sn, e);
			if (r == 0)
				e->entry_timeout = SNAP_TIMEOUT;
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
	e->entry_timeout = SNAP_TIMEOUT;
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
	/* Drop the view: closing its fds releases the detached mount. */
	struct pass_fs *pass = NULL;
	struct sftpfs *remote = NULL;
	pthread_mutex_lock(&fs->lock);
	for (struct fs_sb **pp = &fs->sbs; *pp; pp = &(*pp)->next) {
		if ((*pp)->serial == SNAP_KEY(snap_id(name))) {
			struct fs_sb *s = *pp;
			*pp = s->next;
			pass = s->pass;
			remote = s->remote;
			free(s);
			break;
		}
	}
	pthread_mutex_unlock(&fs->lock);
	/* No inval_entry here: the kernel holds the directory for this
	 * rmdir and drops the entry itself when we answer 0. */
	if (pass)
		pass_kill(pass);
	if (remote)
		sftpfs_kill(remote);
	return 0;
}
