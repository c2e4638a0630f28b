/*
 * functionsfs.c - MOUNT/NAME/functions/, a sandbox's served functions as
 * the FUSE side shows them (the serving itself: core/sessions/functions.c).
 *
 *   functions/SET/FN      open read-write, write a JSON object of arguments,
 *                         read the answer to EOF; closing before the answer
 *                         interrupts the call
 *   functions/SET/README  every function: signature, JSON schema, docstring
 *   functions/SET/functions.json  the same as JSON, for programs (tools/seerfs-mcp)
 *   functions/SET.py      a generated client module calling through those files
 */
#include "fs/functionsfs.h"
#include "core/sessions/functions.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An open call file. */
struct call_fh {
	struct sbuf req;       /* the arguments written so far */
	uint64_t call;         /* 0: not started */
	char *answer;
	size_t pos;
	int taken;             /* the answer came: nothing to cancel */
};

#define FN_SET(sub) ((sub) >> 16)
#define FN_IDX(sub) ((sub) & 0xffffu)
/* Arguments of one call. */
#define CALL_MAX (64 << 20)

int functionsfs_owns(enum vkind k)
{
	return k >= K_FNDIR && k <= K_FN_JSON;
}

static uint32_t set_of(fuse_ino_t ino)
{
	enum vkind k = vino_kind(ino);
	return k == K_FN_CALL ? FN_SET(vino_sub(ino)) : vino_sub(ino);
}

static char *content(struct sandbox *sb, fuse_ino_t ino)
{
	enum vkind k = vino_kind(ino);
	return k == K_FN_README ? functions_readme(sb, set_of(ino))
	       : k == K_FN_JSON ? functions_json(sb, set_of(ino))
				: functions_client(sb, set_of(ino));
}

int functionsfs_stat(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t ino, struct stat *st)
{
	enum vkind k = vino_kind(ino);
	char name[80];
	if (k == K_FNDIR) {
		fill_stat(fs, st, ino, S_IFDIR | 0755, 0, now_ns());
		return 0;
	}
	if (functions_set_name(sb, set_of(ino), name, sizeof(name)) < 0)
		return -ENOENT;
	if (k == K_FNSET) {
		fill_stat(fs, st, ino, S_IFDIR | 0755, 0, now_ns());
	} else if (k == K_FN_CALL) {
		fill_stat(fs, st, ino, S_IFREG | 0666, 0, now_ns());
	} else {
		char *c = content(sb, ino);
		fill_stat(fs, st, ino, S_IFREG | 0444, c ? (off_t)strlen(c) : 0, now_ns());
		free(c);
	}
	return 0;
}

int functionsfs_lookup(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t parent, const char *name, fuse_ino_t *out)
{
	(void)fs;
	if (vino_kind(parent) == K_FNDIR) {
		size_t l = strlen(name);
		if (l > 3 && !strcmp(name + l - 3, ".py")) {
			char base[80];
			if (l - 3 >= sizeof(base))
				return -ENOENT;
			memcpy(base, name, l - 3);
			base[l - 3] = '\0';
			uint32_t id = functions_set_find(sb, base);
			if (!id)
				return -ENOENT;
			*out = vino(sb->serial, id, K_FN_CLIENT);
			return 0;
		}
		uint32_t id = functions_set_find(sb, name);
		if (!id)
			return -ENOENT;
		*out = vino(sb->serial, id, K_FNSET);
		return 0;
	}
	uint32_t set = vino_sub(parent);
	if (!strcmp(name, "README") || !strcmp(name, "functions.json")) {
		*out = vino(sb->serial, set, name[0] == 'R' ? K_FN_README : K_FN_JSON);
		return 0;
	}
	uint32_t fn = functions_fn_find(sb, set, name);
	if (!fn || set > 0xffffu || fn > 0xffffu)
		return -ENOENT;
	*out = vino(sb->serial, set << 16 | fn, K_FN_CALL);
	return 0;
}

void functionsfs_list(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t dir, vdir_add_fn add, void *d)
{
	(void)fs;
	if (vino_kind(dir) == K_FNDIR) {
		uint32_t *ids;
		char **names;
		size_t n = functions_sets(sb, &ids, &names);
		for (size_t i = 0; i < n; i++) {
			char py[96];
			add(d, names[i], vino(sb->serial, ids[i], K_FNSET), S_IFDIR);
			snprintf(py, sizeof(py), "%s.py", names[i]);
			add(d, py, vino(sb->serial, ids[i], K_FN_CLIENT), S_IFREG);
			free(names[i]);
		}
		free(ids);
		free(names);
		return;
	}
	uint32_t set = vino_sub(dir);
	add(d, "README", vino(sb->serial, set, K_FN_README), S_IFREG);
	add(d, "functions.json", vino(sb->serial, set, K_FN_JSON), S_IFREG);
	char **names;
	size_t n = functions_fn_names(sb, set, &names);
	for (size_t i = 0; i < n; i++) {
		if (set <= 0xffffu && i + 1 <= 0xffffu)
			add(d, names[i], vino(sb->serial, set << 16 | (uint32_t)(i + 1), K_FN_CALL), S_IFREG);
		free(names[i]);
	}
	free(names);
}

int functionsfs_open(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t ino, struct fuse_file_info *fi, struct vfh *h)
{
	(void)fs;
	enum vkind k = vino_kind(ino);
	int acc = fi->flags & O_ACCMODE;
	char name[80];
	if (k == K_FNDIR || k == K_FNSET)
		return -EISDIR;
	if (functions_set_name(sb, set_of(ino), name, sizeof(name)) < 0)
		return -ENOENT;
	fi->direct_io = 1;
	if (k == K_FN_CALL) {
		if (acc != O_RDWR) {
			sandbox_set_error(sb, "sandbox %s: functions/%s: open a function's file read-write (O_RDWR): write "
					  "the arguments, then read the answer", sb->name, name);
			return -EACCES;
		}
		fi->nonseekable = 1;
		h->priv = xcalloc(1, sizeof(struct call_fh));
		return 0;
	}
	if (acc != O_RDONLY)
		return -EACCES;
	char *c = content(sb, ino);
	if (!c)
		return -ENOENT;
	sbuf_append(&h->buf, c, strlen(c));
	free(c);
	h->have_content = 1;
	return 0;
}

static int call_try_answer(struct seer_fs *fs, struct pend *p)
{
	(void)fs;
	struct vfh *h = p->fh;
	struct call_fh *c = h->priv;
	if (!c->answer) {
		char *a = NULL;
		int r = functions_call_answer(h->sb, FN_SET(h->sub), c->call, &a);
		if (r < 0) {
			fuse_reply_err(p->req, -r);
			return 1;
		}
		if (r == 0)
			return 0;
		size_t l = strlen(a);
		c->answer = realloc(a, l + 2);
		if (!c->answer)
			abort();
		c->answer[l] = '\n';
		c->answer[l + 1] = '\0';
		c->taken = 1;
	}
	struct sbuf view = {.data = c->answer, .len = strlen(c->answer)};
	size_t at = c->pos;
	/* The position moves before the answer goes out: the reader's next
	 * read may be handled by another thread as soon as it has it, and its
	 * close may free the answer, hence reply_slice's copy. */
	if (at < view.len)
		c->pos += view.len - at < p->size ? view.len - at : p->size;
	reply_slice(p->req, &view, p->size, (off_t)at);
	return 1;
}

void functionsfs_read(struct seer_fs *fs, fuse_req_t req, struct vfh *h, size_t size, off_t off)
{
	if (h->kind != K_FN_CALL) {
		reply_slice(req, &h->buf, size, off);
		return;
	}
	struct call_fh *c = h->priv;
	if (!c->call && c->req.len) {
		/* The arguments are complete once the caller reads. */
		int r = functions_call_start(h->sb, FN_SET(h->sub), FN_IDX(h->sub), c->req.data, c->req.len, &c->call);
		if (r < 0) {
			fuse_reply_err(req, -r);
			return;
		}
	}
	if (!c->call) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	struct pend *p = pend_new(req, h, size, 0, call_try_answer);
	if (call_try_answer(fs, p)) {
		free(p);
		return;
	}
	pend_park(fs, p);
}

int functionsfs_write(struct seer_fs *fs, struct vfh *h, const char *data, size_t size, off_t off)
{
	(void)fs;
	(void)off;
	if (h->kind != K_FN_CALL)
		return -EBADF;
	struct call_fh *c = h->priv;
	if (c->call) {
		/* A new call on the same open file: the next read answers it. */
		if (!c->taken)
			functions_call_drop(h->sb, FN_SET(h->sub), c->call);
		free(c->answer);
		c->answer = NULL;
		c->call = 0;
		c->pos = 0;
		c->taken = 0;
		c->req.len = 0;
	}
	if (c->req.len + size > CALL_MAX)
		return -EFBIG;
	return sbuf_append(&c->req, data, size);
}

void functionsfs_fh_free(struct vfh *h)
{
	if (h->kind != K_FN_CALL || !h->priv)
		return;
	struct call_fh *c = h->priv;
	if (c->call && !c->taken)
		functions_call_drop(h->sb, FN_SET(h->sub), c->call);
	sbuf_free(&c->req);
	free(c->answer);
	free(c);
	h->priv = NULL;
}
