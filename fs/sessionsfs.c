/*
 * sessionsfs.c - MOUNT/NAME/sessions/, the notebook sessions of a sandbox
 * as the FUSE side shows them (the sessions themselves: core/sessions/sessions.c).
 *
 *   sessions/S/           mkdir starts a session (its kernel), rmdir ends it
 *   sessions/S/exec       each write runs a cell; the same open file reads
 *                         its output (fs/jobsfs.c's exec transaction)
 *   sessions/S/ctl        restart, interrupt
 *   sessions/S/log        what happened to the session
 *   sessions/S/notebook.ipynb   every cell and its outputs (nbformat 4)
 */
#include "fs/sessionsfs.h"
#include "fs/jobsfs.h"
#include "core/sessions/sessions.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct vdesc sess_files[] = {
	{"exec", K_SESS_EXEC, S_IFREG | 0666},
	{"ctl", K_SESS_CTL, S_IFREG | 0200},
	{"log", K_SESS_LOG, S_IFREG | 0444},
	{"notebook.ipynb", K_SESS_NB, S_IFREG | 0444},
};

int sessionsfs_owns(enum vkind k)
{
	return k >= K_SESSDIR && k <= K_SESS_NB;
}

static const struct vdesc *sd_kind(enum vkind k)
{
	for (size_t i = 0; i < ARRAY_SIZE(sess_files); i++)
		if (sess_files[i].kind == k)
			return &sess_files[i];
	return NULL;
}

int sessionsfs_stat(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t ino, struct stat *st)
{
	enum vkind k = vino_kind(ino);
	if (k == K_SESSDIR) {
		fill_stat(fs, st, ino, S_IFDIR | 0755, 0, now_ns());
		return 0;
	}
	char name[80];
	if (sessions_name(sb, vino_sub(ino), name, sizeof(name)) < 0)
		return -ENOENT;
	if (k == K_SESS) {
		fill_stat(fs, st, ino, S_IFDIR | 0755, 0, now_ns());
		return 0;
	}
	const struct vdesc *d = sd_kind(k);
	if (!d)
		return -ENOENT;
	off_t size = 0;
	uint64_t t = now_ns();
	if (k == K_SESS_LOG) {
		char p[4200];
		struct stat real;
		if (sessions_log_path(sb, vino_sub(ino), p, sizeof(p)) == 0 && stat(p, &real) == 0) {
			size = real.st_size;
			t = (uint64_t)real.st_mtim.tv_sec * 1000000000ull + (uint64_t)real.st_mtim.tv_nsec;
		}
	} else if (k == K_SESS_NB) {
		char *nb = sessions_notebook(sb, vino_sub(ino));
		size = nb ? (off_t)strlen(nb) : 0;
		free(nb);
	}
	fill_stat(fs, st, ino, d->mode, size, t);
	return 0;
}

int sessionsfs_lookup(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t parent, const char *name, fuse_ino_t *out)
{
	(void)fs;
	if (vino_kind(parent) == K_SESSDIR) {
		uint32_t id = sessions_find(sb, name);
		if (!id)
			return -ENOENT;
		*out = vino(sb->serial, id, K_SESS);
		return 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(sess_files); i++) {
		if (!strcmp(sess_files[i].name, name)) {
			*out = vino(sb->serial, vino_sub(parent), sess_files[i].kind);
			return 0;
		}
	}
	return -ENOENT;
}

void sessionsfs_list(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t dir, vdir_add_fn add, void *d)
{
	(void)fs;
	if (vino_kind(dir) == K_SESSDIR) {
		uint32_t *ids;
		char **names;
		size_t n = sessions_list(sb, &ids, &names);
		for (size_t i = 0; i < n; i++) {
			add(d, names[i], vino(sb->serial, ids[i], K_SESS), S_IFDIR);
			free(names[i]);
		}
		free(ids);
		free(names);
		return;
	}
	for (size_t i = 0; i < ARRAY_SIZE(sess_files); i++)
		add(d, sess_files[i].name, vino(sb->serial, vino_sub(dir), sess_files[i].kind), sess_files[i].mode);
}

int sessionsfs_mkdir(struct seer_fs *fs, struct sandbox *sb, const char *name, fuse_ino_t *out)
{
	(void)fs;
	int r = sessions_create(sb, name);
	if (r < 0)
		return r;
	*out = vino(sb->serial, sessions_find(sb, name), K_SESS);
	return 0;
}

int sessionsfs_rmdir(struct seer_fs *fs, struct sandbox *sb, const char *name)
{
	(void)fs;
	return sessions_remove(sb, name);
}

int sessionsfs_open(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t ino, struct fuse_file_info *fi, struct vfh *h)
{
	enum vkind k = vino_kind(ino);
	int acc = fi->flags & O_ACCMODE;
	char name[80];
	if (k == K_SESSDIR || k == K_SESS)
		return -EISDIR;
	if (sessions_name(sb, vino_sub(ino), name, sizeof(name)) < 0)
		return -ENOENT;
	fi->direct_io = 1;
	switch (k) {
	case K_SESS_EXEC:
		return jobsfs_open(fs, sb, ino, fi, h);
	case K_SESS_CTL:
		return acc == O_RDONLY ? -EACCES : 0;
	case K_SESS_LOG: {
		if (acc != O_RDONLY)
			return -EACCES;
		char p[4200];
		sessions_log_path(sb, vino_sub(ino), p, sizeof(p));
		h->fd = open(p, O_RDONLY | O_CLOEXEC);
		return h->fd < 0 && errno != ENOENT ? -errno : 0;
	}
	case K_SESS_NB: {
		if (acc != O_RDONLY)
			return -EACCES;
		/* One snapshot per open: a reader never sees a torn notebook. */
		char *nb = sessions_notebook(sb, vino_sub(ino));
		if (!nb)
			return -ENOENT;
		sbuf_append(&h->buf, nb, strlen(nb));
		free(nb);
		h->have_content = 1;
		return 0;
	}
	default:
		return -ENOENT;
	}
}

void sessionsfs_read(struct seer_fs *fs, fuse_req_t req, struct vfh *h, size_t size, off_t off)
{
	switch (h->kind) {
	case K_SESS_EXEC:
		jobsfs_read(fs, req, h, size, off);
		return;
	case K_SESS_NB:
		reply_slice(req, &h->buf, size, off);
		return;
	case K_SESS_LOG:
		reply_pread(req, h->fd, size, off);
		return;
	default:
		fuse_reply_err(req, EBADF);
	}
}

int sessionsfs_write(struct seer_fs *fs, struct vfh *h, const char *data, size_t size, off_t off,
		     struct fuse_file_info *fi, pid_t caller)
{
	switch (h->kind) {
	case K_SESS_EXEC:
		return jobsfs_write(fs, h, data, size, off, fi, caller);
	case K_SESS_CTL:
		return sessions_ctl(h->sb, h->sub, data, size);
	default:
		return -EBADF;
	}
}
