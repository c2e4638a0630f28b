/*
 * jobs.c - commands run in a sandbox: starting them through the provider,
 * moving their output to disk, their records, stdin, signals and timeouts.
 *
 * Output path: the job writes into pipes; one I/O thread per seerfs (epoll)
 * splices what arrives into the job's stdout or stderr file, then tells fs/
 * so that parked readers move on. The interleaved `output` is not a second
 * copy of the bytes: it is an index (output.idx) of runs, each a stretch of
 * one stream file, in the order the I/O thread took them. Each byte is thus
 * written once, and moved from the pipe to the file without passing
 * through user space. Records from before the index keep a plain `output`
 * file, which is still read as it is.
 *
 * output.idx holds fixed 16-byte records {end, src}: the run covers output
 * offsets [previous record's end, end) and starts at offset src & ~(1<<63)
 * of stdout (bit 63 clear) or stderr (bit 63 set). Records before
 * `nrec` never change, so readers pread them without a lock; the record in
 * slot `nrec` is the open run, rewritten as it grows (readers take that one
 * from memory) and published when a run of the other stream starts.
 * A job is finished when its process has ended and its pipes are drained;
 * a background daemon that keeps the pipes open gets half a second of grace,
 * then the job counts as finished and its later output is still appended.
 *
 * A fed job (job_spawn_opts.fed) has no process and no pipes: whoever runs
 * it (a notebook session's kernel) hands its output to job_feed, which
 * stores it as the I/O thread stores a pipe's, and ends it with
 * job_feed_end.
 *
 * Locking: a sandbox's jobtab lock guards its jobs' fields; the I/O thread
 * takes it only to update lengths and states, never while writing files.
 * A fed job's feed_mu (taken before the jobtab lock) makes its feeder the
 * only writer of its files, as the I/O thread is a pipe job's.
 */
#include "core/jobs.h"
#include "core/lib/walk.h"
#include "core/sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define GRACE_NS 500000000ull
#define IO_CHUNK (1 << 20)
/* The job's stdout pipe: a bigger pipe means fewer wake-ups per byte and a
 * job that blocks less often while the I/O thread is busy. stderr keeps the
 * default: pipe pages count against the user's pipe-user-pages-soft, past
 * which every new pipe of the user gets a single page. */
#define PIPE_SIZE (1 << 20)
#define SRC_STDERR (1ull << 63)

/* One run of output.idx, as stored (host byte order: the file never leaves
 * this machine's state directory). */
struct idx_rec {
	uint64_t end;
	uint64_t src;
};

struct job {
	struct sandbox *sb;
	int refs;                  /* under the jobtab lock */
	uint32_t n;
	char *dir;
	char *cmd;
	int python;
	pid_t caller;
	enum job_state state;
	int pid;
	uint64_t start_ns, end_ns;
	int wstatus, exited;
	uint64_t utime_us, stime_us;
	int fd[3];                 /* stdout, stderr, output.idx (written by the I/O thread) */
	uint64_t len[3];           /* bytes stored; [JS_OUTPUT]: the output's length */
	int capped[3];
	int store_err[3];          /* why a stream stopped being stored short of the cap */
	int legacy_output;         /* a record from before output.idx: `output` is a copy */
	uint64_t nrec;             /* published records of output.idx */
	int run;                   /* stream of the open run, -1 when none */
	uint64_t run_start;        /* output offset where the open run starts */
	uint64_t run_src;          /* stream offset where it starts */
	uint64_t cap;
	int pipes_open;            /* stdout and stderr pipes not yet at EOF */
	int stdin_w;
	int stdin_writers;
	int owner_open;
	uint64_t deadline_ns;      /* 0: none */
	int kill_reason;           /* JOB_KILLED or JOB_TIMED_OUT once asked */
	int removed;
	/* Fixed at the start (job_spawn_opts), read without a lock. */
	void (*on_change)(struct job *j, void *arg);
	void *on_change_arg;
	int fed;
	int (*fed_signal)(struct job *j, int sig, void *arg);
	void *fed_arg;
	pthread_mutex_t feed_mu;   /* a fed job's writers, one at a time */
};

struct jobtab {
	pthread_mutex_t lock;
	/* Broadcast when output grows or a job ends (CLOCK_MONOTONIC): a
	 * reader that waits here briefly copies the bytes on its own thread,
	 * where a parked read would be answered on the I/O thread's. */
	pthread_cond_t grew;
	struct job **v;
	size_t n, cap;
	uint32_t next;
	/* Exits that arrived before their spawn's reply was handled: a fast
	 * command can end before jobs_start learns its pid. */
	struct seer_exit early[16];
	size_t n_early;
};

/* One pipe the I/O thread watches. */
struct jpipe {
	struct job *j;
	int which;                 /* JS_STDOUT or JS_STDERR */
	int fd;
};

struct jobio {
	int epfd;
	int wake;
	pthread_t thread;
	pthread_mutex_t lock;      /* the list of running jobs below */
	struct job **running;
	size_t n, cap;
	char *buf;
	int mid[2];                /* the I/O thread's own pipe (io_move) */
};

static struct jobtab *tab(struct sandbox *sb)
{
	if (!sb->jobs) {
		/* Created at load or first use; sandbox.c never frees it before
		 * the sandbox, so no lock is needed for the pointer itself. */
		struct jobtab *t = xcalloc(1, sizeof(*t));
		pthread_mutex_init(&t->lock, NULL);
		pthread_condattr_t ca;
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&t->grew, &ca);
		pthread_condattr_destroy(&ca);
		t->next = 1;
		sb->jobs = t;
	}
	return sb->jobs;
}

static const char *const stream_file[3] = {"stdout", "stderr", "output"};
#define IDX_FILE "output.idx"
static const char *const state_word[] = {
	[JOB_RUNNING] = "running", [JOB_EXITED] = "exited", [JOB_KILLED] = "killed",
	[JOB_TIMED_OUT] = "timed-out", [JOB_LOST] = "lost",
};

void job_ref(struct job *j)
{
	struct jobtab *t = j->sb->jobs;
	pthread_mutex_lock(&t->lock);
	j->refs++;
	pthread_mutex_unlock(&t->lock);
}

static void job_free(struct job *j)
{
	for (int i = 0; i < 3; i++)
		if (j->fd[i] >= 0)
			close(j->fd[i]);
	if (j->stdin_w >= 0)
		close(j->stdin_w);
	pthread_mutex_destroy(&j->feed_mu);
	free(j->dir);
	free(j->cmd);
	free(j);
}

void job_put(struct job *j)
{
	if (!j)
		return;
	struct jobtab *t = j->sb->jobs;
	pthread_mutex_lock(&t->lock);
	int last = --j->refs == 0;
	pthread_mutex_unlock(&t->lock);
	if (last) {
		struct sandbox *sb = j->sb;
		job_free(j);
		sandbox_put(sb);
	}
}

const char *job_dir(const struct job *j)
{
	return j->dir;
}

uint32_t job_number(const struct job *j)
{
	return j->n;
}

/* ---- the record on disk ------------------------------------------------------ */

static void persist_locked(struct job *j)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "state", json_object_new_string(state_word[j->state]));
	json_object_object_add(o, "pid", json_object_new_int(j->pid));
	json_object_object_add(o, "python", json_object_new_boolean(j->python));
	json_object_object_add(o, "start_ns", json_object_new_int64((int64_t)j->start_ns));
	json_object_object_add(o, "end_ns", json_object_new_int64((int64_t)j->end_ns));
	json_object_object_add(o, "exited", json_object_new_boolean(j->exited));
	json_object_object_add(o, "wstatus", json_object_new_int(j->wstatus));
	json_object_object_add(o, "utime_us", json_object_new_int64((int64_t)j->utime_us));
	json_object_object_add(o, "stime_us", json_object_new_int64((int64_t)j->stime_us));
	json_object_object_add(o, "cap", json_object_new_int64((int64_t)j->cap));
	json_object_object_add(o, "caller", json_object_new_int(j->caller));
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
	char path[4096];
	snprintf(path, sizeof(path), "%s/meta.json", j->dir);
	/* Replaced whole, without fsync: a job's output is not fsynced either,
	 * and the record must survive seerfs dying, which the page cache
	 * does. Two fsyncs per write cost more than the rest of a job's
	 * start. */
	write_file_replace(path, s, strlen(s), 0600);
	json_object_put(o);
}

static struct job *job_new(struct sandbox *sb, uint32_t n)
{
	struct job *j = xcalloc(1, sizeof(*j));
	j->sb = sb;
	sandbox_ref(sb);
	j->refs = 1;   /* the table's */
	j->n = n;
	struct sbuf b = {0};
	sbuf_printf(&b, "%s/jobs/%u", sb->dir, n);
	j->dir = b.data;
	j->fd[0] = j->fd[1] = j->fd[2] = -1;
	j->stdin_w = -1;
	j->run = -1;
	pthread_mutex_init(&j->feed_mu, NULL);
	return j;
}

static void tab_add_locked(struct jobtab *t, struct job *j)
{
	if (t->n == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 16;
		t->v = realloc(t->v, t->cap * sizeof(*t->v));
		if (!t->v)
			abort();
	}
	t->v[t->n++] = j;
	if (j->n >= t->next)
		t->next = j->n + 1;
}

/* Reads output.idx of a loaded record: every record is published, and the
 * output ends where the last valid one does. A record that points past its
 * stream file or goes backwards (a crash in the middle of an update) ends
 * the index there. Returns 0 or -errno. */
static int load_index(struct job *j)
{
	char p[4200];
	snprintf(p, sizeof(p), "%s/" IDX_FILE, j->dir);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct idx_rec v[256];
	uint64_t end = 0, n = 0;
	for (;;) {
		ssize_t r = pread(fd, v, sizeof(v), (off_t)(n * sizeof(v[0])));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		size_t k = (size_t)r / sizeof(v[0]), i;
		for (i = 0; i < k; i++) {
			int s = v[i].src & SRC_STDERR ? JS_STDERR : JS_STDOUT;
			uint64_t off = v[i].src & ~SRC_STDERR;
			if (v[i].end <= end || off + (v[i].end - end) > j->len[s])
				break;
			end = v[i].end;
		}
		n += i;
		if (i < k || k < ARRAY_SIZE(v))
			break;
	}
	close(fd);
	j->nrec = n;
	j->len[JS_OUTPUT] = end;
	return 0;
}

void jobs_load(struct sandbox *sb)
{
	struct jobtab *t = tab(sb);
	char path[4096];
	snprintf(path, sizeof(path), "%s/jobs", sb->dir);
	DIR *d = opendir(path);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		char *end;
		unsigned long n = strtoul(de->d_name, &end, 10);
		if (*end || n == 0 || n > 0xffffffffUL)
			continue;
		struct job *j = job_new(sb, (uint32_t)n);
		char p[4200], *text = NULL;
		snprintf(p, sizeof(p), "%s/cmd", j->dir);
		/* A notebook cell's code can be 16 MiB (core/sessions/sessions.c). */
		if (read_file(p, 17 << 20, &text, NULL) == 0)
			j->cmd = text;
		else
			j->cmd = xstrdup("");
		snprintf(p, sizeof(p), "%s/meta.json", j->dir);
		j->state = JOB_LOST;
		if (read_file(p, 1 << 20, &text, NULL) == 0) {
			struct json_object *o = json_tokener_parse(text), *v;
			free(text);
			if (o) {
				if (json_object_object_get_ex(o, "state", &v))
					for (int s = 0; s <= JOB_LOST; s++)
						if (!strcmp(json_object_get_string(v), state_word[s]))
							j->state = (enum job_state)s;
				if (json_object_object_get_ex(o, "pid", &v))
					j->pid = json_object_get_int(v);
				if (json_object_object_get_ex(o, "python", &v))
					j->python = json_object_get_boolean(v);
				if (json_object_object_get_ex(o, "start_ns", &v))
					j->start_ns = (uint64_t)json_object_get_int64(v);
				if (json_object_object_get_ex(o, "end_ns", &v))
					j->end_ns = (uint64_t)json_object_get_int64(v);
				if (json_object_object_get_ex(o, "exited", &v))
					j->exited = json_object_get_boolean(v);
				if (json_object_object_get_ex(o, "wstatus", &v))
					j->wstatus = json_object_get_int(v);
				if (json_object_object_get_ex(o, "utime_us", &v))
					j->utime_us = (uint64_t)json_object_get_int64(v);
				if (json_object_object_get_ex(o, "stime_us", &v))
					j->stime_us = (uint64_t)json_object_get_int64(v);
				if (json_object_object_get_ex(o, "cap", &v))
					j->cap = (uint64_t)json_object_get_int64(v);
				json_object_put(o);
			}
		}
		for (int i = 0; i < 3; i++) {
			struct stat st;
			snprintf(p, sizeof(p), "%s/%s", j->dir, stream_file[i]);
			if (stat(p, &st) == 0) {
				j->len[i] = (uint64_t)st.st_size;
				if (i == JS_OUTPUT)
					j->legacy_output = 1;
			}
		}
		if (!j->legacy_output)
			load_index(j);
		for (int i = 0; i < 3; i++)
			if (j->cap && j->len[i] >= j->cap)
				j->capped[i] = 1;
		if (j->state == JOB_RUNNING) {
			/* seerfs died while it ran: its process did not survive. */
			j->state = JOB_LOST;
			if (!j->end_ns)
				j->end_ns = now_ns();
			persist_locked(j);
		}
		j->exited = 1;
		pthread_mutex_lock(&t->lock);
		tab_add_locked(t, j);
		pthread_mutex_unlock(&t->lock);
	}
	closedir(d);
}

/* ---- the I/O thread ------------------------------------------------------------- */

/* Adds `n` bytes just stored at stream offset `at` of stream `which` to the
 * output's index, up to the output cap; `lost` says whether the chunk had
 * bytes that were not stored. The I/O thread is the only writer. */
static void index_chunk(struct job *j, int which, uint64_t at, uint64_t n, int lost)
{
	struct jobtab *t = j->sb->jobs;
	pthread_mutex_lock(&t->lock);
	uint64_t room = j->cap > j->len[JS_OUTPUT] ? j->cap - j->len[JS_OUTPUT] : 0;
	uint64_t w = n < room ? n : room;
	if (w < n || lost)
		j->capped[JS_OUTPUT] = 1;
	if (w == 0) {
		pthread_mutex_unlock(&t->lock);
		return;
	}
	uint64_t out = j->len[JS_OUTPUT];
	/* The open run grows when the bytes follow it in the same stream;
	 * otherwise it is published (its slot already holds its final value)
	 * and a new one starts. */
	if (j->run != which || j->run_src + (out - j->run_start) != at) {
		if (j->run >= 0)
			j->nrec++;
		j->run = which;
		j->run_start = out;
		j->run_src = at;
	}
	struct idx_rec rec = {.end = out + w, .src = j->run_src | (which == JS_STDERR ? SRC_STDERR : 0)};
	uint64_t slot = j->nrec;
	int fd = j->fd[JS_OUTPUT];
	/* Readers take the open run from memory, so the length can be
	 * published before its record reaches the file. */
	j->len[JS_OUTPUT] = out + w;
	pthread_cond_broadcast(&t->grew);
	pthread_mutex_unlock(&t->lock);
	if (fd >= 0 && pwrite(fd, &rec, sizeof(rec), (off_t)(slot * sizeof(rec))) != (ssize_t)sizeof(rec)) {
		/* The bytes are readable now; only a restart would miss them. */
	}
}

/* Writes len bytes of b at offset at; returns how many reached the file,
 * with the error that stopped it in *err. */
static size_t pwrite_all(int fd, const char *b, size_t len, uint64_t at, int *err)
{
	size_t done = 0;
	while (done < len && fd >= 0) {
		ssize_t r = pwrite(fd, b + done, len - done, (off_t)(at + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			*err = r < 0 ? errno : ENOSPC;
			break;
		}
		done += (size_t)r;
	}
	return done;
}

/* Books n bytes taken from a pipe of which `stored` reached the file at
 * `at`. Bytes beyond what was stored mark the stream capped: the cap, or
 * a write error `err` (a full disk), which stops storing output, not the
 * job. */
static ssize_t io_book(struct job *j, int s, uint64_t at, size_t n, size_t stored, int err)
{
	struct jobtab *t = j->sb->jobs;
	pthread_mutex_lock(&t->lock);
	j->len[s] = at + stored;
	int first = stored < n && !j->capped[s];
	if (stored < n) {
		j->capped[s] = 1;
		if (err && !j->store_err[s])
			j->store_err[s] = err;
		if (err && !j->store_err[JS_OUTPUT])
			j->store_err[JS_OUTPUT] = err;
	}
	pthread_mutex_unlock(&t->lock);
	if (first && err)
		sandbox_log(j->sb, "job %u: its %s is no longer stored after %llu bytes: %s in the state directory; "
			    "the job goes on, free space there for later jobs", j->n, stream_file[s],
			    (unsigned long long)(at + stored), strerror(err));
	index_chunk(j, s, at, stored, stored < n);
	return (ssize_t)n;
}

/* Moves what the pipe holds into the job's stream file. The bytes first
 * move, page by page and without a copy, into the I/O thread's own pipe,
 * and are copied into the file from there: a splice into a file copies
 * while it holds the source pipe's lock, and the job, blocked on that lock
 * meanwhile, would wait for every copy instead of writing on another core.
 * Where the file system has no splice, or the disk is full, the bytes are
 * read and written. Past the output cap they are read and dropped.
 * Returns the bytes taken from the pipe, 0 at EOF, or -errno (-EAGAIN when
 * it is empty). */
static ssize_t io_move(struct jobio *io, struct jpipe *p)
{
	struct job *j = p->j;
	struct jobtab *t = j->sb->jobs;
	int s = p->which;
	pthread_mutex_lock(&t->lock);
	uint64_t at = j->len[s];
	uint64_t room = j->capped[s] || j->cap <= at ? 0 : j->cap - at;
	int fd = j->fd[s];
	pthread_mutex_unlock(&t->lock);
	size_t want = room < IO_CHUNK ? (size_t)room : IO_CHUNK;
	if (fd >= 0 && want > 0 && io->mid[0] >= 0) {
		ssize_t n = splice(p->fd, NULL, io->mid[1], NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n == 0)
			return 0;
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return -errno;
		if (n > 0) {
			size_t done = 0;
			while (done < (size_t)n) {
				loff_t off = (loff_t)(at + done);
				ssize_t w = splice(io->mid[0], NULL, fd, &off, (size_t)n - done, SPLICE_F_MOVE);
				if (w < 0 && errno == EINTR)
					continue;
				if (w <= 0)
					break;
				done += (size_t)w;
			}
			/* What the file did not take (a file system without
			 * splice, or a full disk: the write below finds out
			 * which) must leave the I/O thread's pipe all the same,
			 * so that the pipe is empty for the next move. */
			size_t rest = (size_t)n - done, got = 0;
			while (got < rest) {
				ssize_t r = read(io->mid[0], io->buf + got, rest - got);
				if (r < 0 && errno == EINTR)
					continue;
				if (r <= 0)
					break;
				got += (size_t)r;
			}
			int err = 0;
			done += pwrite_all(fd, io->buf, got, at + done, &err);
			return io_book(j, s, at, (size_t)n, done, err);
		}
	}
	ssize_t n = read(p->fd, io->buf, IO_CHUNK);
	if (n <= 0)
		return n < 0 ? -errno : 0;
	size_t w = (size_t)n < want ? (size_t)n : want;
	int err = 0;
	size_t done = pwrite_all(fd, io->buf, w, at, &err);
	return io_book(j, s, at, (size_t)n, done, err);
}

static void io_drop_running(struct jobio *io, struct job *j)
{
	pthread_mutex_lock(&io->lock);
	for (size_t i = 0; i < io->n; i++) {
		if (io->running[i] == j) {
			io->running[i] = io->running[--io->n];
			pthread_mutex_unlock(&io->lock);
			job_put(j);
			return;
		}
	}
	pthread_mutex_unlock(&io->lock);
}

static void check_deadlines(struct jobio *io)
{
	uint64_t now = now_ns();
	pthread_mutex_lock(&io->lock);
	size_t n = io->n;
	struct job **list = xcalloc(n + 1, sizeof(*list));
	for (size_t i = 0; i < n; i++) {
		list[i] = io->running[i];
		job_ref(list[i]);
	}
	pthread_mutex_unlock(&io->lock);
	for (size_t i = 0; i < n; i++) {
		struct job *j = list[i];
		struct jobtab *t = j->sb->jobs;
		pthread_mutex_lock(&t->lock);
		int due = j->state == JOB_RUNNING && !j->exited && j->deadline_ns && j->deadline_ns <= now &&
			  !j->kill_reason;
		int grace_over = j->exited && j->pipes_open && j->end_ns + GRACE_NS <= now;
		int done = j->exited && (!j->pipes_open || grace_over);
		if (due)
			j->kill_reason = JOB_TIMED_OUT;
		int pid = j->pid;
		pthread_mutex_unlock(&t->lock);
		if (due) {
			sandbox_log(j->sb, "job %u reached its timeout: killing its process tree", j->n);
			if (j->fed)
				j->fed_signal(j, SIGKILL, j->fed_arg);
			else if (j->sb->prov)
				j->sb->prov->signal(j->sb, pid, SIGKILL, 1);
		}
		if (grace_over) {
			sandbox_changed(j->sb);
			if (j->on_change)
				j->on_change(j, j->on_change_arg);
		}
		if (done)
			io_drop_running(io, j);
		job_put(j);
	}
	free(list);
}

static void *io_main(void *arg)
{
	struct seer_ctx *ctx = arg;
	struct jobio *io = ctx->jobio;
	struct epoll_event ev[64];
	for (;;) {
		int n = epoll_wait(io->epfd, ev, 64, 100);
		if (n < 0 && errno != EINTR)
			break;
		for (int i = 0; i < n; i++) {
			struct jpipe *p = ev[i].data.ptr;
			if (!p) {
				uint64_t v;
				if (read(io->wake, &v, sizeof(v)) < 0) {
					/* only a wake-up */
				}
				continue;
			}
			ssize_t r = io_move(io, p);
			if (r == -EINTR || r == -EAGAIN)
				continue;
			struct job *j = p->j;
			if (r > 0) {
				sandbox_changed(j->sb);
				if (j->on_change && p->which == JS_STDOUT)
					j->on_change(j, j->on_change_arg);
				continue;
			}
			epoll_ctl(io->epfd, EPOLL_CTL_DEL, p->fd, NULL);
			close(p->fd);
			struct jobtab *t = j->sb->jobs;
			pthread_mutex_lock(&t->lock);
			j->pipes_open--;
			pthread_cond_broadcast(&t->grew);
			pthread_mutex_unlock(&t->lock);
			sandbox_changed(j->sb);
			if (j->on_change)
				j->on_change(j, j->on_change_arg);
			job_put(j);
			free(p);
		}
		pthread_mutex_lock(&ctx->lock);
		int stop = ctx->stopping;
		pthread_mutex_unlock(&ctx->lock);
		check_deadlines(io);
		if (stop && io->n == 0)
			break;
	}
	return NULL;
}

static struct jobio *jobio_get(struct seer_ctx *ctx)
{
	pthread_mutex_lock(&ctx->lock);
	if (!ctx->jobio) {
		struct jobio *io = xcalloc(1, sizeof(*io));
		io->epfd = epoll_create1(EPOLL_CLOEXEC);
		io->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		io->buf = malloc(IO_CHUNK);
		if (pipe2(io->mid, O_CLOEXEC) == 0)
			fcntl(io->mid[0], F_SETPIPE_SZ, PIPE_SIZE);
		else
			io->mid[0] = io->mid[1] = -1;
		pthread_mutex_init(&io->lock, NULL);
		struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
		epoll_ctl(io->epfd, EPOLL_CTL_ADD, io->wake, &e);
		ctx->jobio = io;
		if (pthread_create(&io->thread, NULL, io_main, ctx) != 0) {
			ctx->jobio = NULL;
			close(io->epfd);
			close(io->wake);
			if (io->mid[0] >= 0) {
				close(io->mid[0]);
				close(io->mid[1]);
			}
			free(io->buf);
			free(io);
		} else {
			pthread_detach(io->thread);
		}
	}
	struct jobio *io = ctx->jobio;
	pthread_mutex_unlock(&ctx->lock);
	return io;
}

static int io_watch(struct jobio *io, struct job *j, int which, int fd)
{
	struct jpipe *p = xcalloc(1, sizeof(*p));
	p->j = j;
	p->which = which;
	p->fd = fd;
	job_ref(j);
	fcntl(fd, F_SETFL, O_NONBLOCK);
	struct epoll_event e = {.events = EPOLLIN, .data.ptr = p};
	if (epoll_ctl(io->epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
		int r = -errno;
		job_put(j);
		free(p);
		return r;
	}
	return 0;
}

/* Puts j (a reference of its own) on the I/O thread's running list, which
 * watches its deadline and drops it once it has ended. */
static void io_add_running(struct jobio *io, struct job *j)
{
	job_ref(j);
	pthread_mutex_lock(&io->lock);
	if (io->n == io->cap) {
		io->cap = io->cap ? io->cap * 2 : 16;
		io->running = realloc(io->running, io->cap * sizeof(*io->running));
		if (!io->running)
			abort();
	}
	io->running[io->n++] = j;
	pthread_mutex_unlock(&io->lock);
}

static void apply_exit_locked(struct job *j, const struct seer_exit *e);
static int start_fed(struct jobio *io, struct job *j, const struct job_spawn_opts *o, int64_t exec_timeout,
		     struct job **out);

/* ---- starting a job ----------------------------------------------------------------- */

int jobs_start(struct sandbox *sb, const char *text, size_t len, int python, pid_t caller, struct job **out)
{
	struct job_spawn_opts o = {.python = python};
	return jobs_start_opts(sb, text, len, &o, caller, out);
}

/* envp plus extra entries; caller frees with strv_free. */
static char **env_with(char **envp, char *const *extra)
{
	size_t n = 0, m = 0;
	while (envp && envp[n])
		n++;
	while (extra && extra[m])
		m++;
	char **v = xcalloc(n + m + 1, sizeof(*v));
	for (size_t i = 0; i < n; i++)
		v[i] = envp[i];
	for (size_t i = 0; i < m; i++)
		v[n + i] = xstrdup(extra[i]);
	free(envp);
	return v;
}

int jobs_start_opts(struct sandbox *sb, const char *text, size_t len, const struct job_spawn_opts *o, pid_t caller,
		    struct job **out)
{
	int python = o->python;
	while (len && (text[len - 1] == '\n' || text[len - 1] == '\r'))
		len--;
	if (len == 0) {
		sandbox_set_error(sb, "sandbox %s: exec: empty command; write a command line", sb->name);
		return -EINVAL;
	}
	if (memchr(text, '\0', len)) {
		sandbox_set_error(sb, "sandbox %s: exec: the command contains a NUL byte", sb->name);
		return -EINVAL;
	}
	pthread_mutex_lock(&sb->lock);
	enum sb_state st = sb->state;
	int busy = sb->busy_op;
	uint64_t cap = (uint64_t)sb->cfg.output_cap;
	int64_t exec_timeout = sb->cfg.exec_timeout;
	pthread_mutex_unlock(&sb->lock);
	if (o->provisioning ? !sb->prov || (st != SB_PROVISIONING && st != SB_RUNNING)
			    : st != SB_RUNNING || busy || !sb->prov) {
		int e = st == SB_PROVISIONING || busy ? -EAGAIN : -ENOTCONN;
		sandbox_set_error(sb, "sandbox %s: exec: the sandbox is %s, not running; %s", sb->name,
				  busy && st == SB_RUNNING ? "restarting" : sb_state_name(st),
				  e == -EAGAIN ? "wait for it (cat wait) and try again"
					       : "write config.json to provision it first");
		return e;
	}
	struct jobio *io = jobio_get(sb->ctx);
	if (!io)
		return -EAGAIN;
	struct jobtab *t = tab(sb);
	pthread_mutex_lock(&t->lock);
	uint32_t n = t->next++;
	pthread_mutex_unlock(&t->lock);

	struct job *j = job_new(sb, n);
	j->cmd = malloc(len + 1);
	memcpy(j->cmd, text, len);
	j->cmd[len] = '\0';
	j->python = python;
	j->caller = caller;
	j->cap = o->no_cap ? UINT64_MAX : cap;
	j->owner_open = 1;
	j->on_change = o->on_change;
	j->on_change_arg = o->on_change_arg;
	j->fed = o->fed;
	j->fed_signal = o->fed_signal;
	j->fed_arg = o->fed_arg;
	j->state = JOB_RUNNING;
	int r = mkdir_p(j->dir, 0700);
	char p[4200];
	if (r == 0) {
		snprintf(p, sizeof(p), "%s/cmd", j->dir);
		r = write_file_replace(p, j->cmd, len, 0600);
	}
	/* Not O_APPEND: splice refuses such files; the I/O thread writes at
	 * explicit offsets, being the only writer. */
	for (int i = 0; r == 0 && i < 3; i++) {
		snprintf(p, sizeof(p), "%s/%s", j->dir, i == JS_OUTPUT ? IDX_FILE : stream_file[i]);
		j->fd[i] = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (j->fd[i] < 0)
			r = -errno;
	}
	int po[2] = {-1, -1}, pe[2] = {-1, -1}, pi[2] = {-1, -1};
	if (r == 0 && !o->fed && (pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0 || pipe2(pi, O_CLOEXEC) < 0))
		r = -errno;
	if (r < 0) {
		sandbox_set_error(sb, "sandbox %s: exec: cannot create job %u's files in %s: %s", sb->name, n, j->dir,
				  strerror(-r));
		goto fail;
	}
	if (o->fed)
		return start_fed(io, j, o, exec_timeout, out);
	/* Refused beyond pipe-max-size or the user's pipe budget unless
	 * privileged: the default size then stays, which only costs speed. */
	fcntl(po[0], F_SETPIPE_SZ, PIPE_SIZE);
	char *argv_sh[] = {"/bin/sh", "-c", j->cmd, NULL};
	char *argv_py[] = {"python3", "-c", j->cmd, NULL};
	char **envp = env_with(sandbox_environ(sb), o->env);
	struct seer_spawn req = {.argv = o->argv ? o->argv : python ? argv_py : argv_sh, .envp = envp, .cwd = "/workspace",
				 .fd_in = pi[0], .fd_out = po[1], .fd_err = pe[1]};
	char err[512];
	int pid = 0;
	j->start_ns = now_ns();
	if (exec_timeout > 0 && !o->no_timeout)
		j->deadline_ns = j->start_ns + (uint64_t)exec_timeout * 1000000000ull;
	/* Registered before the spawn so that an instant exit finds the job. */
	pthread_mutex_lock(&t->lock);
	j->pid = -1;
	j->pipes_open = 2;
	tab_add_locked(t, j);
	j->refs++;   /* the caller's */
	pthread_mutex_unlock(&t->lock);
	if (sb->ctx->hooks.job_started)
		sb->ctx->hooks.job_started(sb->ctx->hooks.arg, sb);
	r = sb->prov->spawn(sb, &req, &pid, err, sizeof(err));
	strv_free(envp);
	close(pi[0]);
	close(po[1]);
	close(pe[1]);
	if (r < 0) {
		close(po[0]);
		close(pe[0]);
		close(pi[1]);
		pthread_mutex_lock(&t->lock);
		j->state = JOB_LOST;
		j->exited = 1;
		j->pipes_open = 0;
		j->end_ns = now_ns();
		j->wstatus = 127 << 8;
		persist_locked(j);
		pthread_mutex_unlock(&t->lock);
		sandbox_set_error(sb, "sandbox %s: exec: %s", sb->name, err);
		job_put(j);
		return r;
	}
	pthread_mutex_lock(&t->lock);
	j->pid = pid;
	j->stdin_w = pi[1];
	persist_locked(j);
	int early = 0;
	for (size_t i = 0; i < t->n_early; i++) {
		if ((int)t->early[i].cookie == pid) {
			apply_exit_locked(j, &t->early[i]);
			t->early[i] = t->early[--t->n_early];
			early = 1;
			break;
		}
	}
	pthread_mutex_unlock(&t->lock);
	if (early)
		sandbox_changed(sb);
	io_watch(io, j, JS_STDOUT, po[0]);
	io_watch(io, j, JS_STDERR, pe[0]);
	io_add_running(io, j);
	sandbox_log(sb, "job %u started (pid %d): %.200s%s", n, pid, j->cmd, strlen(j->cmd) > 200 ? "..." : "");
	*out = j;
	return 0;
fail:
	for (int i = 0; i < 2; i++) {
		if (po[i] >= 0)
			close(po[i]);
		if (pe[i] >= 0)
			close(pe[i]);
		if (pi[i] >= 0)
			close(pi[i]);
	}
	walk_rm(j->dir);
	job_free(j);
	sandbox_put(sb);
	return r;
}

/* The rest of jobs_start_opts for a fed job: its files exist; it is
 * registered as running, with no process to start. */
static int start_fed(struct jobio *io, struct job *j, const struct job_spawn_opts *o, int64_t exec_timeout,
		     struct job **out)
{
	struct sandbox *sb = j->sb;
	struct jobtab *t = sb->jobs;
	j->start_ns = now_ns();
	if (exec_timeout > 0 && !o->no_timeout)
		j->deadline_ns = j->start_ns + (uint64_t)exec_timeout * 1000000000ull;
	pthread_mutex_lock(&t->lock);
	j->pid = o->fed_pid;
	tab_add_locked(t, j);
	j->refs++;   /* the caller's */
	persist_locked(j);
	pthread_mutex_unlock(&t->lock);
	/* Whoever runs it may change any file of the sandbox, as a process would. */
	if (sb->ctx->hooks.job_started)
		sb->ctx->hooks.job_started(sb->ctx->hooks.arg, sb);
	/* On the running list for its timeout, and dropped from it once ended. */
	io_add_running(io, j);
	sandbox_log(sb, "job %u started (fed by pid %d): %.200s%s", j->n, j->pid, j->cmd, strlen(j->cmd) > 200 ? "..." : "");
	*out = j;
	return 0;
}

/* Records an exit on its job; sb's jobtab lock held. */
static void apply_exit_locked(struct job *j, const struct seer_exit *e)
{
	j->exited = 1;
	j->wstatus = e->status;
	j->utime_us = e->utime_us;
	j->stime_us = e->stime_us;
	j->end_ns = now_ns();
	j->state = j->kill_reason ? (enum job_state)j->kill_reason : JOB_EXITED;
	persist_locked(j);
	pthread_cond_broadcast(&j->sb->jobs->grew);
}

void jobs_on_exit(struct sandbox *sb, const struct seer_exit *e)
{
	struct jobtab *t = tab(sb);
	pthread_mutex_lock(&t->lock);
	struct job *j = NULL;
	for (size_t i = 0; i < t->n; i++)
		if (t->v[i]->pid == (int)e->cookie && t->v[i]->state == JOB_RUNNING && !t->v[i]->fed)
			j = t->v[i];
	if (j)
		j->refs++;   /* for on_change below */
	if (!j) {
		if (t->n_early == ARRAY_SIZE(t->early))
			memmove(t->early, t->early + 1, sizeof(t->early) - sizeof(t->early[0]));
		else
			t->n_early++;
		t->early[t->n_early - 1] = *e;
	}
	else
		apply_exit_locked(j, e);
	pthread_mutex_unlock(&t->lock);
	if (j) {
		char *ex = job_exit_text(j);
		ex[strcspn(ex, "\n")] = '\0';
		sandbox_log(sb, "job %u ended: %s (%s)", j->n, state_word[j->state], ex);
		free(ex);
		sandbox_changed(sb);
		if (j->on_change)
			j->on_change(j, j->on_change_arg);
		job_put(j);
	}
}

int job_pid(struct job *j)
{
	pthread_mutex_lock(&j->sb->jobs->lock);
	int pid = j->pid;
	pthread_mutex_unlock(&j->sb->jobs->lock);
	return pid;
}

int job_feed(struct job *j, enum job_stream s, const char *data, size_t len)
{
	struct jobtab *t = j->sb->jobs;
	if (s != JS_STDOUT && s != JS_STDERR)
		return -EINVAL;
	pthread_mutex_lock(&j->feed_mu);
	pthread_mutex_lock(&t->lock);
	int running = j->state == JOB_RUNNING;
	uint64_t at = j->len[s];
	uint64_t room = j->capped[s] || j->cap <= at ? 0 : j->cap - at;
	int fd = j->fd[s];
	pthread_mutex_unlock(&t->lock);
	if (!running) {
		pthread_mutex_unlock(&j->feed_mu);
		return -ESRCH;
	}
	if (len == 0) {
		pthread_mutex_unlock(&j->feed_mu);
		return 0;
	}
	size_t w = len < room ? len : (size_t)room;
	int err = 0;
	size_t done = pwrite_all(fd, data, w, at, &err);
	io_book(j, s, at, len, done, err);
	pthread_mutex_unlock(&j->feed_mu);
	sandbox_changed(j->sb);
	return 0;
}

void job_feed_end(struct job *j, int wstatus)
{
	struct jobtab *t = j->sb->jobs;
	pthread_mutex_lock(&j->feed_mu);
	pthread_mutex_lock(&t->lock);
	int was = j->state == JOB_RUNNING;
	if (was)
		apply_exit_locked(j, &(struct seer_exit){.status = wstatus});
	pthread_mutex_unlock(&t->lock);
	pthread_mutex_unlock(&j->feed_mu);
	if (!was)
		return;
	char *ex = job_exit_text(j);
	ex[strcspn(ex, "\n")] = '\0';
	sandbox_log(j->sb, "job %u ended: %s (%s)", j->n, state_word[j->state], ex);
	free(ex);
	sandbox_changed(j->sb);
}

void job_owner_closed(struct job *j)
{
	struct jobtab *t = j->sb->jobs;
	pthread_mutex_lock(&t->lock);
	j->owner_open = 0;
	if (j->stdin_writers == 0 && j->stdin_w >= 0) {
		close(j->stdin_w);
		j->stdin_w = -1;
	}
	pthread_mutex_unlock(&t->lock);
}

/* ---- lookups ------------------------------------------------------------------------- */

struct job *jobs_find(struct sandbox *sb, uint32_t n)
{
	struct jobtab *t = tab(sb);
	struct job *j = NULL;
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n; i++) {
		if (t->v[i]->n == n) {
			j = t->v[i];
			j->refs++;
			break;
		}
	}
	pthread_mutex_unlock(&t->lock);
	return j;
}

uint32_t jobs_latest(struct sandbox *sb, pid_t caller)
{
	struct jobtab *t = tab(sb);
	uint32_t best = 0;
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n; i++)
		if (t->v[i]->n > best && (!caller || t->v[i]->caller == caller))
			best = t->v[i]->n;
	pthread_mutex_unlock(&t->lock);
	return best;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

size_t jobs_numbers(struct sandbox *sb, uint32_t **out)
{
	struct jobtab *t = tab(sb);
	pthread_mutex_lock(&t->lock);
	uint32_t *v = xcalloc(t->n + 1, sizeof(*v));
	size_t n = t->n;
	for (size_t i = 0; i < n; i++)
		v[i] = t->v[i]->n;
	pthread_mutex_unlock(&t->lock);
	qsort(v, n, sizeof(*v), cmp_u32);
	*out = v;
	return n;
}

int jobs_remove(struct sandbox *sb, uint32_t n)
{
	struct jobtab *t = tab(sb);
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n; i++) {
		struct job *j = t->v[i];
		if (j->n != n)
			continue;
		if (j->state == JOB_RUNNING) {
			pthread_mutex_unlock(&t->lock);
			sandbox_set_error(sb, "sandbox %s: job %u is still running: kill it first (echo kill > jobs/%u/ctl)",
					  sb->name, n, n);
			return -EBUSY;
		}
		t->v[i] = t->v[--t->n];
		j->removed = 1;
		pthread_mutex_unlock(&t->lock);
		walk_rm(j->dir);
		job_put(j);
		sandbox_changed(sb);
		return 0;
	}
	pthread_mutex_unlock(&t->lock);
	return -ENOENT;
}

/* ---- state for readers ------------------------------------------------------------------ */

enum job_state job_state(struct job *j)
{
	pthread_mutex_lock(&j->sb->jobs->lock);
	enum job_state s = j->state;
	pthread_mutex_unlock(&j->sb->jobs->lock);
	return s;
}

int job_finished(struct job *j)
{
	pthread_mutex_lock(&j->sb->jobs->lock);
	int r = j->state != JOB_RUNNING && (j->pipes_open <= 0 || j->end_ns + GRACE_NS <= now_ns());
	pthread_mutex_unlock(&j->sb->jobs->lock);
	return r;
}

uint64_t job_length(struct job *j, enum job_stream s)
{
	pthread_mutex_lock(&j->sb->jobs->lock);
	uint64_t n = j->len[s];
	pthread_mutex_unlock(&j->sb->jobs->lock);
	return n;
}

int job_wait_output(struct job *j, uint64_t have, unsigned timeout_us)
{
	struct jobtab *t = j->sb->jobs;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_nsec += (long)(timeout_us % 1000000) * 1000;
	ts.tv_sec += timeout_us / 1000000 + ts.tv_nsec / 1000000000;
	ts.tv_nsec %= 1000000000;
	pthread_mutex_lock(&t->lock);
	int r = 0;
	for (;;) {
		if (j->len[JS_OUTPUT] > have || j->state != JOB_RUNNING) {
			r = 1;
			break;
		}
		if (pthread_cond_timedwait(&t->grew, &t->lock, &ts) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

uint64_t job_mtime_ns(struct job *j)
{
	pthread_mutex_lock(&j->sb->jobs->lock);
	uint64_t t = j->end_ns ? j->end_ns : j->start_ns;
	pthread_mutex_unlock(&j->sb->jobs->lock);
	return t;
}

/* ---- readers of the stream files and the output ----------------------------------------- */

#define RCACHE 64

struct job_reader {
	struct job *j;
	enum job_stream s;
	int fd[3];                 /* stdout, stderr; output.idx or a legacy output copy */
	int legacy;                /* output read from its copy, not through the index */
	/* Records [first, first + n) of output.idx: published ones only, which
	 * never change, so they stay valid. */
	struct idx_rec cache[RCACHE];
	uint64_t cache_first;
	size_t cache_n;
};

void job_reader_close(struct job_reader *r)
{
	if (!r)
		return;
	for (int i = 0; i < 3; i++)
		if (r->fd[i] >= 0)
			close(r->fd[i]);
	job_put(r->j);
	free(r);
}

int job_reader_open(struct job *j, enum job_stream s, struct job_reader **out)
{
	struct job_reader *r = xcalloc(1, sizeof(*r));
	r->j = j;
	job_ref(j);
	r->s = s;
	r->fd[0] = r->fd[1] = r->fd[2] = -1;
	int legacy = s == JS_OUTPUT && j->legacy_output;   /* fixed since the job was loaded */
	r->legacy = legacy;
	for (int i = 0; i < 3; i++) {
		int need = s == JS_OUTPUT ? (i == JS_OUTPUT || !legacy) : i == (int)s;
		if (!need)
			continue;
		char p[4200];
		snprintf(p, sizeof(p), "%s/%s", j->dir, i == JS_OUTPUT && !legacy ? IDX_FILE : stream_file[i]);
		r->fd[i] = open(p, O_RDONLY | O_CLOEXEC);
		if (r->fd[i] < 0) {
			int e = -errno;
			job_reader_close(r);
			return e;
		}
	}
	*out = r;
	return 0;
}

/* Record i of output.idx (i below the published count nrec). */
static int rec_get(struct job_reader *r, uint64_t i, uint64_t nrec, struct idx_rec *out)
{
	if (i < r->cache_first || i >= r->cache_first + r->cache_n) {
		uint64_t first = i - i % RCACHE;
		ssize_t n;
		do
			n = pread(r->fd[JS_OUTPUT], r->cache, sizeof(r->cache), (off_t)(first * sizeof(r->cache[0])));
		while (n < 0 && errno == EINTR);
		if (n < 0)
			return -errno;
		size_t k = (size_t)n / sizeof(r->cache[0]);
		if (first + k > nrec)
			k = (size_t)(nrec - first);
		r->cache_first = first;
		r->cache_n = k;
		if (i >= first + k)
			return -EIO;
	}
	*out = r->cache[i - r->cache_first];
	return 0;
}

/* The first published record whose run ends after output offset off. */
static int rec_find(struct job_reader *r, uint64_t off, uint64_t nrec, uint64_t *out)
{
	uint64_t lo = 0, hi = nrec;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		struct idx_rec rec;
		int e = rec_get(r, mid, nrec, &rec);
		if (e < 0)
			return e;
		if (rec.end > off)
			hi = mid;
		else
			lo = mid + 1;
	}
	*out = lo;
	return lo < nrec ? 0 : -EIO;
}

int job_reader_map(struct job_reader *r, uint64_t off, size_t size, struct job_piece *v, int max)
{
	struct job *j = r->j;
	struct jobtab *t = j->sb->jobs;
	pthread_mutex_lock(&t->lock);
	uint64_t len = j->len[r->s], nrec = j->nrec, run_start = j->run_start, run_src = j->run_src;
	int run = j->run;
	pthread_mutex_unlock(&t->lock);
	if (off >= len || size == 0 || max <= 0)
		return 0;
	uint64_t end = size < len - off ? off + size : len;
	if (r->s != JS_OUTPUT || r->legacy) {
		int fd = r->fd[r->s];
		v[0] = (struct job_piece){.fd = fd, .pos = off, .len = (size_t)(end - off)};
		return 1;
	}
	int k = 0;
	uint64_t i = 0;
	int found = 0;
	while (off < end && k < max) {
		if (run >= 0 && off >= run_start) {
			/* The open run, as the I/O thread left it when len was read. */
			v[k++] = (struct job_piece){.fd = r->fd[run], .pos = run_src + (off - run_start),
						    .len = (size_t)(end - off)};
			break;
		}
		int e = found ? 0 : rec_find(r, off, nrec, &i);
		if (e < 0)
			return k ? k : e;
		struct idx_rec rec, prev = {0};
		if ((e = rec_get(r, i, nrec, &rec)) < 0 || (i && (e = rec_get(r, i - 1, nrec, &prev)) < 0))
			return k ? k : e;
		uint64_t stop = rec.end < end ? rec.end : end;
		int s = rec.src & SRC_STDERR ? JS_STDERR : JS_STDOUT;
		v[k++] = (struct job_piece){.fd = r->fd[s], .pos = (rec.src & ~SRC_STDERR) + (off - prev.end),
					    .len = (size_t)(stop - off)};
		off = stop;
		/* The next piece starts the next record, or the open run. */
		i++;
		found = i < nrec;
	}
	return k;
}

char *job_cmd(struct job *j)
{
	struct sbuf b = {0};
	sbuf_printf(&b, "%s\n", j->cmd);
	return b.data;
}

char *job_exit_text(struct job *j)
{
	struct sbuf b = {0};
	pthread_mutex_lock(&j->sb->jobs->lock);
	if (j->state == JOB_LOST)
		sbuf_printf(&b, "%s\n", j->pid <= 0 ? "127" : "lost");
	else if (WIFSIGNALED(j->wstatus))
		sbuf_printf(&b, "signal %d\n", WTERMSIG(j->wstatus));
	else
		sbuf_printf(&b, "%d\n", WEXITSTATUS(j->wstatus));
	pthread_mutex_unlock(&j->sb->jobs->lock);
	return b.data;
}

char *job_status_text(struct job *j)
{
	struct sbuf b = {0};
	char t[40];
	char *ex = job_exit_text(j);
	pthread_mutex_lock(&j->sb->jobs->lock);
	sbuf_printf(&b, "%s\n", state_word[j->state]);
	sbuf_printf(&b, "job: %u\n", j->n);
	sbuf_printf(&b, "pid: %d\n", j->pid);
	fmt_time_iso(j->start_ns, t, sizeof(t));
	sbuf_printf(&b, "started: %s\n", t);
	if (j->state != JOB_RUNNING) {
		if (j->end_ns) {
			fmt_time_iso(j->end_ns, t, sizeof(t));
			sbuf_printf(&b, "ended: %s\n", t);
		}
		sbuf_printf(&b, "exit: %s", ex);
	}
	if (j->end_ns || j->state == JOB_RUNNING) {
		uint64_t end = j->end_ns ? j->end_ns : now_ns();
		sbuf_printf(&b, "elapsed: %.3f s\n", (double)(end - j->start_ns) / 1e9);
	}
	sbuf_printf(&b, "cpu: user %.3f s, system %.3f s\n", (double)j->utime_us / 1e6, (double)j->stime_us / 1e6);
	if (j->deadline_ns && j->state == JOB_RUNNING) {
		fmt_time_iso(j->deadline_ns, t, sizeof(t));
		sbuf_printf(&b, "timeout: at %s\n", t);
	}
	for (int i = 0; i < 3; i++) {
		sbuf_printf(&b, "%s: %llu bytes", stream_file[i], (unsigned long long)j->len[i]);
		if (j->store_err[i])
			sbuf_printf(&b, " (capped: %s in the state directory, later output dropped)",
				    strerror(j->store_err[i]));
		else if (j->capped[i])
			sbuf_printf(&b, " (capped: output_cap reached, later output dropped)");
		sbuf_printf(&b, "\n");
	}
	if (j->capped[0] || j->capped[1] || j->capped[2])
		sbuf_printf(&b, "output_cap: %llu bytes per stream\n", (unsigned long long)j->cap);
	if (j->state == JOB_LOST)
		sbuf_printf(&b, "note: seerfs stopped while this job ran; its output up to then is kept\n");
	pthread_mutex_unlock(&j->sb->jobs->lock);
	free(ex);
	return b.data;
}

/* ---- stdin ------------------------------------------------------------------------------ */

int job_stdin_open(struct job *j)
{
	struct jobtab *t = j->sb->jobs;
	pthread_mutex_lock(&t->lock);
	int r = j->stdin_w >= 0 ? 0 : -EPIPE;
	if (r == 0) {
		/* An explicit writer takes over from the exec file's holder: EOF
		 * comes when the last of the writers closes. */
		j->stdin_writers++;
		j->owner_open = 0;
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

int job_stdin_write(struct job *j, const char *data, size_t len)
{
	struct jobtab *t = j->sb->jobs;
	pthread_mutex_lock(&t->lock);
	int fd = j->stdin_w >= 0 ? dup(j->stdin_w) : -1;
	pthread_mutex_unlock(&t->lock);
	if (fd < 0)
		return -EPIPE;
	size_t done = 0;
	int r = 0;
	while (done < len) {
		ssize_t n = write(fd, data + done, len - done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			break;
		}
		done += (size_t)n;
	}
	close(fd);
	return r < 0 ? r : (int)done;
}

void job_stdin_close(struct job *j)
{
	struct jobtab *t = j->sb->jobs;
	pthread_mutex_lock(&t->lock);
	if (j->stdin_writers > 0)
		j->stdin_writers--;
	if (j->stdin_writers == 0 && !j->owner_open && j->stdin_w >= 0) {
		close(j->stdin_w);
		j->stdin_w = -1;
	}
	pthread_mutex_unlock(&t->lock);
}

/* ---- ctl ----------------------------------------------------------------------------------- */

int job_ctl(struct job *j, const char *text, size_t len)
{
	struct sandbox *sb = j->sb;
	char buf[128];
	while (len && (text[len - 1] == '\n' || text[len - 1] == ' '))
		len--;
	if (len == 0 || len >= sizeof(buf) || memchr(text, '\0', len)) {
		sandbox_set_error(sb, "sandbox %s: jobs/%u/ctl: commands are kill, signal N, timeout SECONDS, eof", sb->name, j->n);
		return -EINVAL;
	}
	memcpy(buf, text, len);
	buf[len] = '\0';
	struct jobtab *t = sb->jobs;
	long v = 0;
	char extra;
	if (!strcmp(buf, "eof")) {
		/* (a fed job has no stdin: nothing to close) */
		pthread_mutex_lock(&t->lock);
		if (j->stdin_w >= 0) {
			close(j->stdin_w);
			j->stdin_w = -1;
		}
		pthread_mutex_unlock(&t->lock);
		return 0;
	}
	pthread_mutex_lock(&t->lock);
	int running = j->state == JOB_RUNNING && (j->pid > 0 || j->fed);
	int pid = j->pid;
	pthread_mutex_unlock(&t->lock);
	if (!strcmp(buf, "kill")) {
		if (!running) {
			sandbox_set_error(sb, "sandbox %s: jobs/%u/ctl: kill: the job is not running", sb->name, j->n);
			return -ESRCH;
		}
		pthread_mutex_lock(&t->lock);
		if (!j->kill_reason)
			j->kill_reason = JOB_KILLED;
		pthread_mutex_unlock(&t->lock);
		sandbox_log(sb, "job %u: killing its process tree", j->n);
		int r = j->fed ? j->fed_signal(j, SIGKILL, j->fed_arg) : sb->prov->signal(sb, pid, SIGKILL, 1);
		return r < 0 ? r : 0;
	}
	if (sscanf(buf, "signal %ld%c", &v, &extra) == 1) {
		if (v < 1 || v > 64) {
			sandbox_set_error(sb, "sandbox %s: jobs/%u/ctl: signal %ld is not a signal number (1-64)", sb->name, j->n, v);
			return -EINVAL;
		}
		if (!running) {
			sandbox_set_error(sb, "sandbox %s: jobs/%u/ctl: signal: the job is not running", sb->name, j->n);
			return -ESRCH;
		}
		if (v == SIGKILL) {
			pthread_mutex_lock(&t->lock);
			if (!j->kill_reason)
				j->kill_reason = JOB_KILLED;
			pthread_mutex_unlock(&t->lock);
		}
		int r = j->fed ? j->fed_signal(j, (int)v, j->fed_arg) : sb->prov->signal(sb, pid, (int)v, 0);
		return r < 0 ? r : 0;
	}
	if (sscanf(buf, "timeout %ld%c", &v, &extra) == 1) {
		if (v < 0) {
			sandbox_set_error(sb, "sandbox %s: jobs/%u/ctl: timeout must be 0 (none) or a number of seconds", sb->name, j->n);
			return -EINVAL;
		}
		if (!running) {
			sandbox_set_error(sb, "sandbox %s: jobs/%u/ctl: timeout: the job is not running", sb->name, j->n);
			return -ESRCH;
		}
		pthread_mutex_lock(&t->lock);
		j->deadline_ns = v ? now_ns() + (uint64_t)v * 1000000000ull : 0;
		pthread_mutex_unlock(&t->lock);
		sandbox_log(sb, "job %u: timeout set to %ld s from now", j->n, v);
		return 0;
	}
	sandbox_set_error(sb, "sandbox %s: jobs/%u/ctl: unknown command \"%.40s\"; commands are kill, signal N, timeout SECONDS, eof",
			  sb->name, j->n, buf);
	return -EINVAL;
}

/* ---- sandbox-wide ---------------------------------------------------------------------------- */

void jobs_status_lines(struct sandbox *sb, struct sbuf *b)
{
	if (!sb->jobs)
		return;
	struct jobtab *t = sb->jobs;
	pthread_mutex_lock(&t->lock);
	size_t running = 0;
	for (size_t i = 0; i < t->n; i++)
		if (t->v[i]->state == JOB_RUNNING)
			running++;
	if (t->n)
		sbuf_printf(b, "jobs: %zu running, %zu in all\n", running, t->n);
	pthread_mutex_unlock(&t->lock);
}

static void end_running(struct sandbox *sb, enum job_state as)
{
	if (!sb->jobs)
		return;
	struct jobtab *t = sb->jobs;
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n; i++) {
		struct job *j = t->v[i];
		if (j->state != JOB_RUNNING)
			continue;
		j->state = as;
		j->exited = 1;
		if (as == JOB_KILLED)
			j->wstatus = SIGKILL;
		j->end_ns = now_ns();
		persist_locked(j);
	}
	pthread_mutex_unlock(&t->lock);
	sandbox_changed(sb);
}

void jobs_sandbox_stopping(struct sandbox *sb)
{
	end_running(sb, JOB_KILLED);
}

void jobs_shutdown(struct sandbox *sb)
{
	end_running(sb, JOB_LOST);
}

void jobs_close_all(struct sandbox *sb)
{
	if (!sb->jobs)
		return;
	struct jobtab *t = sb->jobs;
	pthread_mutex_lock(&t->lock);
	size_t n = t->n;
	struct job **v = t->v;
	t->v = NULL;
	t->n = t->cap = 0;
	pthread_mutex_unlock(&t->lock);
	for (size_t i = 0; i < n; i++) {
		v[i]->removed = 1;
		job_put(v[i]);
	}
	free(v);
}

void jobs_free(struct sandbox *sb)
{
	if (!sb->jobs)
		return;
	/* Jobs hold a reference on their sandbox, so none is left here. */
	pthread_mutex_destroy(&sb->jobs->lock);
	pthread_cond_destroy(&sb->jobs->grew);
	free(sb->jobs->v);
	free(sb->jobs);
	sb->jobs = NULL;
}
