/*
 * jobsfs.c - the exec files and the jobs/ directory of a sandbox.
 *
 *   exec, exec_python   each write starts a job; a reader of the same open
 *                       file gets that job's output until it ends
 *   jobs/N/             cmd stdout stderr output stdin exit status ctl
 *   jobs/latest         symlink to the newest job
 *   jobs/mine           symlink to the newest job started by the reading
 *                       process (race-free for tools such as seer-exec)
 *
 * Output files are served from the job's files on disk with direct I/O and
 * their current length as size, so `cat` gives what is there and `tail -f`
 * follows; `output` is mapped through its index onto pieces of the stdout
 * and stderr files, which are spliced to the kernel. Reads that must wait
 * (exit, the exec read) are parked.
 */
#include "fs/jobsfs.h"
#include "core/jobs.h"
#include "core/sessions/sessions.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct jdesc {
	const char *name;
	enum vkind kind;
	mode_t mode;
	int stream;   /* enum job_stream, or -1 */
};

static const struct jdesc job_files[] = {
	{"cmd", K_JOB_CMD, S_IFREG | 0444, -1},
	{"stdout", K_JOB_STDOUT, S_IFREG | 0444, JS_STDOUT},
	{"stderr", K_JOB_STDERR, S_IFREG | 0444, JS_STDERR},
	{"output", K_JOB_OUTPUT, S_IFREG | 0444, JS_OUTPUT},
	{"stdin", K_JOB_STDIN, S_IFREG | 0222, -1},
	{"exit", K_JOB_EXIT, S_IFREG | 0444, -1},
	{"status", K_JOB_STATUS, S_IFREG | 0444, -1},
	{"ctl", K_JOB_CTL, S_IFREG | 0200, -1},
};

static const struct jdesc *jd_kind(enum vkind k)
{
	for (size_t i = 0; i < ARRAY_SIZE(job_files); i++)
		if (job_files[i].kind == k)
			return &job_files[i];
	return NULL;
}

/* What an open exec file remembers: the jobs it started and where its
 * reader is in the newest one's output. */
struct exec_fh {
	struct job **jobs;
	size_t n;
	uint64_t pos;
	struct job_reader *out;    /* the newest job's output, opened at its first read */
	/* A session's cell bigger than one FUSE write request: the kernel
	 * splits the write() into requests at consecutive offsets, all but
	 * the last of (nearly) max_write bytes; they are held and run as one
	 * cell with the last (or at the next read or close). */
	int holding;
	int held_over;             /* it passed the limit: refused whole */
	struct sbuf held;
	uint64_t held_end;         /* where its next piece starts */
	pid_t held_caller;
};

/* Pieces per answer: a read of output crossing more runs than this gets
 * fewer bytes, as a short read, and the reader asks again. */
#define MAX_PIECES 64
/* How long an exec read waits on its worker thread before parking. */
#define EXEC_SPIN_US 2000

static int is_stream(enum vkind k)
{
	return k == K_JOB_STDOUT || k == K_JOB_STDERR || k == K_JOB_OUTPUT;
}

int jobsfs_readlink(struct sandbox *sb, fuse_ino_t ino, pid_t caller, char *buf, size_t len)
{
	uint32_t n = jobs_latest(sb, vino_kind(ino) == K_JOBS_MINE ? caller : 0);
	if (!n)
		return -ENOENT;
	snprintf(buf, len, "%u", n);
	return 0;
}

/* jobs/N/fig-K.png: the figures a notebook cell made (core/sessions/sessions.c
 * saves them in the job's record). */
#define FIG_JOB_MAX 0xffffffu
#define FIG_MAX 255u

static void fig_path(struct sandbox *sb, fuse_ino_t ino, char *buf, size_t len)
{
	uint32_t sub = vino_sub(ino);
	snprintf(buf, len, "%s/jobs/%u/fig-%u.png", sb->dir, sub & FIG_JOB_MAX, sub >> 24);
}

static int fig_stat(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t ino, struct stat *st)
{
	char p[4200];
	struct stat real;
	fig_path(sb, ino, p, sizeof(p));
	if (stat(p, &real) < 0)
		return -ENOENT;
	fill_stat(fs, st, ino, S_IFREG | 0444, real.st_size,
		  (uint64_t)real.st_mtim.tv_sec * 1000000000ull + (uint64_t)real.st_mtim.tv_nsec);
	return 0;
}

static int fig_number(const char *name, uint32_t job, uint32_t *sub)
{
	unsigned k;
	char tail[8];
	if (job > FIG_JOB_MAX || sscanf(name, "fig-%u.pn%1s", &k, tail) != 2 || strcmp(tail, "g") || k == 0 ||
	    k > FIG_MAX)
		return -ENOENT;
	char again[32];
	snprintf(again, sizeof(again), "fig-%u.png", k);
	if (strcmp(again, name))
		return -ENOENT;
	*sub = k << 24 | job;
	return 0;
}

int jobsfs_stat(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t ino, struct stat *st)
{
	enum vkind k = vino_kind(ino);
	if (k == K_JOBSDIR) {
		fill_stat(fs, st, ino, S_IFDIR | 0755, 0, now_ns());
		return 0;
	}
	if (k == K_JOBS_LATEST || k == K_JOBS_MINE) {
		char buf[32];
		if (jobsfs_readlink(sb, ino, 0, buf, sizeof(buf)) < 0)
			strcpy(buf, "0");
		fill_stat(fs, st, ino, S_IFLNK | 0777, (off_t)strlen(buf), now_ns());
		return 0;
	}
	if (k == K_JOB_FIG)
		return fig_stat(fs, sb, ino, st);
	struct job *j = jobs_find(sb, vino_sub(ino));
	if (!j)
		return -ENOENT;
	uint64_t t = job_mtime_ns(j);
	int r = 0;
	if (k == K_JOBDIR) {
		fill_stat(fs, st, ino, S_IFDIR | 0755, 0, t);
	} else {
		const struct jdesc *d = jd_kind(k);
		off_t size = 0;
		if (!d) {
			r = -ENOENT;
		} else {
			if (d->stream >= 0) {
				size = (off_t)job_length(j, (enum job_stream)d->stream);
			} else if (k == K_JOB_CMD || k == K_JOB_STATUS || (k == K_JOB_EXIT && job_finished(j))) {
				char *c = k == K_JOB_CMD ? job_cmd(j) : k == K_JOB_STATUS ? job_status_text(j) : job_exit_text(j);
				size = (off_t)strlen(c);
				free(c);
			}
			fill_stat(fs, st, ino, d->mode, size, t);
		}
	}
	job_put(j);
	return r;
}

static int parse_num(const char *name, uint32_t *out)
{
	char *end;
	if (!*name || *name == '0' || *name == '+' || *name == '-')
		return -ENOENT;
	unsigned long v = strtoul(name, &end, 10);
	if (*end || v == 0 || v > 0xffffffffUL)
		return -ENOENT;
	*out = (uint32_t)v;
	return 0;
}

int jobsfs_lookup(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t parent, const char *name, fuse_ino_t *out)
{
	(void)fs;
	if (vino_kind(parent) == K_JOBSDIR) {
		if (!strcmp(name, "latest") || !strcmp(name, "mine")) {
			*out = vino(sb->serial, 0, !strcmp(name, "latest") ? K_JOBS_LATEST : K_JOBS_MINE);
			return 0;
		}
		uint32_t n;
		if (parse_num(name, &n) < 0)
			return -ENOENT;
		struct job *j = jobs_find(sb, n);
		if (!j)
			return -ENOENT;
		job_put(j);
		*out = vino(sb->serial, n, K_JOBDIR);
		return 0;
	}
	struct job *j = jobs_find(sb, vino_sub(parent));
	if (!j)
		return -ENOENT;
	job_put(j);
	for (size_t i = 0; i < ARRAY_SIZE(job_files); i++) {
		if (!strcmp(job_files[i].name, name)) {
			*out = vino(sb->serial, vino_sub(parent), job_files[i].kind);
			return 0;
		}
	}
	uint32_t sub;
	if (fig_number(name, vino_sub(parent), &sub) == 0 && (sub >> 24) <= sessions_job_figures(sb, vino_sub(parent))) {
		*out = vino(sb->serial, sub, K_JOB_FIG);
		return 0;
	}
	return -ENOENT;
}

void jobsfs_list(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t dir, vdir_add_fn add, void *d)
{
	(void)fs;
	if (vino_kind(dir) == K_JOBSDIR) {
		uint32_t *v;
		size_t n = jobs_numbers(sb, &v);
		if (n) {
			add(d, "latest", vino(sb->serial, 0, K_JOBS_LATEST), S_IFLNK);
			add(d, "mine", vino(sb->serial, 0, K_JOBS_MINE), S_IFLNK);
		}
		for (size_t i = 0; i < n; i++) {
			char name[16];
			snprintf(name, sizeof(name), "%u", v[i]);
			add(d, name, vino(sb->serial, v[i], K_JOBDIR), S_IFDIR);
		}
		free(v);
		return;
	}
	for (size_t i = 0; i < ARRAY_SIZE(job_files); i++)
		add(d, job_files[i].name, vino(sb->serial, vino_sub(dir), job_files[i].kind), job_files[i].mode);
	unsigned figs = vino_sub(dir) <= FIG_JOB_MAX ? sessions_job_figures(sb, vino_sub(dir)) : 0;
	for (unsigned k = 1; k <= figs && k <= FIG_MAX; k++) {
		char name[32];
		snprintf(name, sizeof(name), "fig-%u.png", k);
		add(d, name, vino(sb->serial, k << 24 | vino_sub(dir), K_JOB_FIG), S_IFREG | 0444);
	}
}

int jobsfs_rmdir(struct seer_fs *fs, struct sandbox *sb, const char *name)
{
	(void)fs;
	uint32_t n;
	if (parse_num(name, &n) < 0)
		return !strcmp(name, "latest") || !strcmp(name, "mine") ? -ENOTDIR : -ENOENT;
	return jobs_remove(sb, n);
}

int jobsfs_unlink(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t parent, const char *name)
{
	(void)fs;
	/* `rm -r jobs/N` unlinks each file before the rmdir that removes the
	 * record: the files go with the record, so each unlink only checks. */
	struct job *j = jobs_find(sb, vino_sub(parent));
	if (!j)
		return -ENOENT;
	int r = 0;
	int known = 0;
	uint32_t fig;
	for (size_t i = 0; i < ARRAY_SIZE(job_files); i++)
		if (!strcmp(job_files[i].name, name))
			known = 1;
	known |= fig_number(name, vino_sub(parent), &fig) == 0;
	if (!known)
		r = -ENOENT;
	else if (job_state(j) == JOB_RUNNING)
		r = -EBUSY;
	job_put(j);
	return r;
}

int jobsfs_open(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t ino, struct fuse_file_info *fi, struct vfh *h)
{
	(void)fs;
	enum vkind k = vino_kind(ino);
	int acc = fi->flags & O_ACCMODE;
	fi->direct_io = 1;
	if (k == K_EXEC || k == K_EXEC_PY || k == K_SESS_EXEC) {
		h->priv = xcalloc(1, sizeof(struct exec_fh));
		fi->nonseekable = 1;
		return 0;
	}
	if (k == K_JOB_FIG) {
		char p[4200];
		if (acc != O_RDONLY)
			return -EACCES;
		fig_path(sb, ino, p, sizeof(p));
		h->fd = open(p, O_RDONLY | O_CLOEXEC);
		return h->fd < 0 ? -errno : 0;
	}
	const struct jdesc *d = jd_kind(k);
	if (!d)
		return -EISDIR;
	struct job *j = jobs_find(sb, vino_sub(ino));
	if (!j)
		return -ENOENT;
	int r = 0;
	if (k == K_JOB_STDIN || k == K_JOB_CTL) {
		if (acc == O_RDONLY)
			r = -EACCES;
		else if (k == K_JOB_STDIN)
			r = job_stdin_open(j);
	} else if (acc != O_RDONLY) {
		r = -EACCES;
	} else if (d->stream >= 0) {
		struct job_reader *jr;
		r = job_reader_open(j, (enum job_stream)d->stream, &jr);
		job_put(j);
		if (r < 0)
			return r;
		h->priv = jr;
		return 0;
	}
	if (r < 0) {
		job_put(j);
		return r;
	}
	h->priv = j;
	return 0;
}

static void reply_text(fuse_req_t req, struct vfh *h, char *(*make)(struct job *), size_t size, off_t off)
{
	if (!h->have_content || off == 0) {
		char *c = make(h->priv);
		h->buf.len = 0;
		sbuf_append(&h->buf, c, strlen(c));
		free(c);
		h->have_content = 1;
	}
	reply_slice(req, &h->buf, size, off);
}

size_t jobsfs_splice_limit(int n)
{
	static size_t pipe_max;
	size_t pm = __atomic_load_n(&pipe_max, __ATOMIC_RELAXED);
	if (!pm) {
		char *t = NULL;
		pm = 1 << 20;
		if (read_file("/proc/sys/fs/pipe-max-size", 64, &t, NULL) == 0) {
			unsigned long v = strtoul(t, NULL, 10);
			if (v >= 65536)
				pm = v;
		}
		free(t);
		__atomic_store_n(&pipe_max, pm, __ATOMIC_RELAXED);
	}
	size_t page = 4096, over = page * (size_t)(n + 3);
	return pm > over + page ? pm - over : page;
}

/* Answers with up to size bytes of a job's file at pos; the count is added
 * to *advance before the answer goes out, so that a caller keeping its own
 * position moves it before the reader can ask again. */
static void reply_stream(fuse_req_t req, struct job_reader *jr, size_t size, uint64_t pos, uint64_t *advance)
{
	struct job_piece v[MAX_PIECES];
	size_t lim = jobsfs_splice_limit(1);
	int n = job_reader_map(jr, pos, size < lim ? size : lim, v, MAX_PIECES);
	if (n < 0) {
		fuse_reply_err(req, -n);
		return;
	}
	if (n == 0) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	/* The bytes go from the files to the kernel by splice where it can:
	 * job output is the one big stream this filesystem serves itself. */
	struct fuse_bufvec *bv = xcalloc(1, sizeof(*bv) + (size_t)n * sizeof(bv->buf[0]));
	size_t total = 0;
	lim = jobsfs_splice_limit(n);
	for (int i = 0; i < n && total < lim; i++) {
		size_t len = v[i].len < lim - total ? v[i].len : lim - total;
		bv->buf[i] = (struct fuse_buf){.size = len, .flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK,
					       .fd = v[i].fd, .pos = (off_t)v[i].pos};
		bv->count++;
		total += len;
	}
	if (advance)
		*advance += total;
	fuse_reply_data(req, bv, FUSE_BUF_SPLICE_MOVE);
	free(bv);
}

static int exit_try_answer(struct seer_fs *fs, struct pend *p)
{
	(void)fs;
	struct vfh *h = p->fh;
	if (!job_finished(h->priv))
		return 0;
	reply_text(p->req, h, job_exit_text, p->size, p->off);
	return 1;
}

/* The exec read: output of the handle's newest job from its own position;
 * waits while the job runs and nothing new is there. */
static int exec_try_answer(struct seer_fs *fs, struct pend *p)
{
	(void)fs;
	struct vfh *h = p->fh;
	struct exec_fh *e = h->priv;
	struct job *j = e->jobs[e->n - 1];
	int finished = job_finished(j);   /* before the length: no output lost */
	uint64_t len = job_length(j, JS_OUTPUT);
	if (e->pos >= len && !finished)
		return 0;
	if (e->pos >= len) {
		fuse_reply_buf(p->req, NULL, 0);
		return 1;
	}
	if (!e->out) {
		int r = job_reader_open(j, JS_OUTPUT, &e->out);
		if (r < 0) {
			fuse_reply_err(p->req, -r);
			return 1;
		}
	}
	reply_stream(p->req, e->out, p->size, e->pos, &e->pos);
	return 1;
}

static int held_run(struct vfh *h);

void jobsfs_read(struct seer_fs *fs, fuse_req_t req, struct vfh *h, size_t size, off_t off)
{
	struct pend *p;
	switch (h->kind) {
	case K_EXEC:
	case K_EXEC_PY:
	case K_SESS_EXEC: {
		struct exec_fh *e = h->priv;
		int r = held_run(h);   /* the write before this read is over */
		if (r < 0) {
			fuse_reply_err(req, -r);
			return;
		}
		if (!e->n) {
			fuse_reply_buf(req, NULL, 0);
			return;
		}
		p = pend_new(req, h, size, 0, exec_try_answer);
		if (exec_try_answer(fs, p)) {
			free(p);
			return;
		}
		/* A reader that keeps up with a fast job finds nothing new most
		 * times it asks: waiting here a moment lets this thread copy the
		 * next bytes, where parking would have the I/O thread do it
		 * between two chunks of the job's pipe. */
		if (job_wait_output(e->jobs[e->n - 1], e->pos, EXEC_SPIN_US) && exec_try_answer(fs, p)) {
			free(p);
			return;
		}
		pend_park(fs, p);
		return;
	}
	case K_JOB_EXIT:
		if (job_finished(h->priv)) {
			reply_text(req, h, job_exit_text, size, off);
			return;
		}
		p = pend_new(req, h, size, off, exit_try_answer);
		pend_park(fs, p);
		return;
	case K_JOB_CMD:
		reply_text(req, h, job_cmd, size, off);
		return;
	case K_JOB_FIG:
		reply_pread(req, h->fd, size, off);
		return;
	case K_JOB_STATUS:
		reply_text(req, h, job_status_text, size, off);
		return;
	case K_JOB_STDOUT:
	case K_JOB_STDERR:
	case K_JOB_OUTPUT:
		reply_stream(req, h->priv, size, (uint64_t)off, NULL);
		return;
	default:
		fuse_reply_err(req, EBADF);
		return;
	}
}

/* A write to an exec file: the job (or the session's cell) it starts
 * becomes the handle's newest. */
static int exec_start(struct vfh *h, const char *data, size_t size, pid_t caller)
{
	/* A session's exec is the same transaction; only what runs differs
	 * (a cell of its kernel, core/sessions/sessions.c). */
	struct exec_fh *e = h->priv;
	struct job *j;
	int r = h->kind == K_SESS_EXEC ? sessions_cell_start(h->sb, h->sub, data, size, caller, &j)
				       : jobs_start(h->sb, data, size, h->kind == K_EXEC_PY, caller, &j);
	if (r < 0)
		return r;
	struct job **nv = realloc(e->jobs, (e->n + 1) * sizeof(*nv));
	if (!nv) {
		job_owner_closed(j);
		job_put(j);
		return -ENOMEM;
	}
	e->jobs = nv;
	e->jobs[e->n++] = j;
	e->pos = 0;
	job_reader_close(e->out);
	e->out = NULL;
	return 0;
}

/* Runs the held cell, if any: its write is over. A cell refused for its
 * size was answered EFBIG already and is dropped. */
static int held_run(struct vfh *h)
{
	struct exec_fh *e = h->priv;
	if (!e || !e->holding)
		return 0;
	int over = e->held_over, r = 0;
	e->holding = e->held_over = 0;
	if (!over)
		r = exec_start(h, e->held.data ? e->held.data : "", e->held.len, e->held_caller);
	sbuf_free(&e->held);
	return r;
}

/* A write to a session's exec (see struct exec_fh for the pieces of one). */
static int sess_exec_write(struct seer_fs *fs, struct vfh *h, const char *data, size_t size, off_t off,
			   pid_t caller)
{
	struct exec_fh *e = h->priv;
	size_t piece = fs->max_write > 8192 ? fs->max_write - 4096 : SIZE_MAX;
	if (e->holding && (uint64_t)off != e->held_end) {
		int r = held_run(h);   /* another write: the held one was whole */
		if (r < 0)
			return r;
	}
	if (!e->holding && size < piece)
		return exec_start(h, data, size, caller);
	if (!e->holding) {
		e->holding = 1;
		e->held_caller = caller;
		e->held.len = 0;
	}
	if (e->held_over || e->held.len + size > SESSIONS_CELL_MAX + 2) {
		/* Refused whole: the rest of the write (retried at the same
		 * offset) is refused as well, until another write or a read. */
		e->held_over = 1;
		sbuf_free(&e->held);
		return sessions_cell_too_big(h->sb, h->sub);
	}
	sbuf_append(&e->held, data, size);
	e->held_end = (uint64_t)off + size;
	return size < piece ? held_run(h) : 0;
}

int jobsfs_write(struct seer_fs *fs, struct vfh *h, const char *data, size_t size, off_t off, struct fuse_file_info *fi,
		 pid_t caller)
{
	(void)fi;
	switch (h->kind) {
	case K_SESS_EXEC:
		return sess_exec_write(fs, h, data, size, off, caller);
	case K_EXEC:
	case K_EXEC_PY:
		return exec_start(h, data, size, caller);
	case K_JOB_STDIN: {
		int r = job_stdin_write(h->priv, data, size);
		return r < 0 ? r : 0;
	}
	case K_JOB_CTL:
		return job_ctl(h->priv, data, size);
	default:
		return -EBADF;
	}
}

int jobsfs_flush(struct seer_fs *fs, struct vfh *h)
{
	(void)fs;
	/* close() ends a write still held (echo > exec). */
	return h->kind == K_SESS_EXEC ? held_run(h) : 0;
}

void jobsfs_release(struct seer_fs *fs, struct vfh *h)
{
	(void)fs;
	if (h->kind == K_JOB_STDIN && h->priv)
		job_stdin_close(h->priv);
}

void jobsfs_fh_free(struct vfh *h)
{
	if (!h->priv)
		return;
	if (h->kind == K_EXEC || h->kind == K_EXEC_PY || h->kind == K_SESS_EXEC) {
		struct exec_fh *e = h->priv;
		for (size_t i = 0; i < e->n; i++) {
			job_owner_closed(e->jobs[i]);
			job_put(e->jobs[i]);
		}
		free(e->jobs);
		job_reader_close(e->out);
		sbuf_free(&e->held);
		free(e);
	} else if (is_stream(h->kind)) {
		job_reader_close(h->priv);
	} else {
		job_put(h->priv);
	}
	h->priv = NULL;
}
