/*
 * sessions.c - notebook sessions of a sandbox (see sessions.h): the table,
 * its records on disk, kernels and cells as jobs, and notebook.ipynb.
 *
 * A kernel is a job; a cell is a fed job (core/jobs.h): no process of its
 * own. Its code goes to the kernel as a line on the kernel job's stdin, and
 * the kernel's frames come back on that job's stdout, a file seerfs
 * writes; each time it grows, the jobs I/O thread calls the kernel's pump
 * (struct kpump), which moves the frames into the cells' jobs as their
 * output and ends each cell with its record. Locks: s->mu, then a pump's
 * mu, then the jobs' own; a pump's wmu is taken alone.
 */
#include "core/sessions/sessions.h"
#include "core/jobs.h"
#include "core/provider.h"
#include "core/sandbox.h"
#include "core/lib/util.h"

#include "core/sessions/seer_kernel_py.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* One cell: its job, and which kernel ran it under which number. */
struct cell {
	uint32_t job;
	uint32_t kjob;      /* the kernel's job (its stdout holds the records) */
	uint32_t seq;       /* the cell's number in that kernel: In [seq] */
	char *note;         /* shown before it (the state was lost...), or NULL */
	int fed;            /* run as a fed job: its record is cell.json only */
};

/* A cell its kernel has been given and not yet finished with. */
struct pcell {
	uint32_t seq;
	struct job *j;      /* referenced */
	int ended;          /* its job ended first (killed): only its record is awaited */
};

/* One kernel's channel back: its frames into its cells' jobs. Lives as
 * long as its session (the kernel's job may call it until it ends). */
struct kpump {
	struct kpump *next;
	struct sandbox *sb;
	char sname[72];     /* the session's name, for messages */
	pthread_mutex_t mu; /* everything below */
	uint32_t kjob;
	int fd;             /* the kernel's stdout file; -1 until opened and once done */
	uint64_t parsed;    /* bytes of it taken */
	uint64_t punched;   /* bytes before this are freed on disk */
	struct sbuf partial;
	struct pcell *v;
	size_t n, cap;
	int done;           /* the kernel ended: every cell of it has ended */
	pthread_mutex_t wmu; /* writes to the kernel's stdin: one line at a time */
};

struct session {
	struct session *next;
	uint32_t id;
	char name[72];
	int removed;
	pthread_mutex_t mu;   /* everything below; held across a cell's start */
	uint32_t kjob;        /* the current kernel's job, 0: none yet */
	char kname[96];       /* its name (SEERFS_KNAME, in its greeting and S.json) */
	uint32_t seq;         /* cells given to it */
	char *pending;        /* a note for the next cell (restart, seerfs restarted) */
	struct cell *cells;
	size_t n, cap;
	struct kpump *pumps;  /* every kernel's, newest first */
};

struct sesstab {
	pthread_mutex_t lock; /* the list */
	struct session *list;
	uint32_t next_id;
};

/* A cell's code travels as one line on the kernel's stdin; the limit is
 * that of the mount's other files. */
#define CELL_MAX SESSIONS_CELL_MAX
/* Text of one stream put into the notebook. */
#define NB_STREAM_MAX (1 << 20)

static struct sesstab *stab(struct sandbox *sb)
{
	/* Created at load (sandbox.c, before any other thread sees sb). */
	return sb->sessions;
}

static struct session *find_locked(struct sesstab *t, uint32_t id, const char *name)
{
	for (struct session *s = t->list; s; s = s->next)
		if (!s->removed && (id ? s->id == id : name && !strcmp(s->name, name)))
			return s;
	return NULL;
}

/* Sessions are freed only with their sandbox, so a pointer found under the
 * table's lock stays valid after it (a removed one is marked). */
static struct session *find(struct sandbox *sb, uint32_t id, const char *name)
{
	struct sesstab *t = stab(sb);
	if (!t)
		return NULL;
	pthread_mutex_lock(&t->lock);
	struct session *s = find_locked(t, id, name);
	pthread_mutex_unlock(&t->lock);
	return s;
}

static void path_of(struct sandbox *sb, const struct session *s, const char *ext, char *buf, size_t len)
{
	snprintf(buf, len, "%s/sessions/%s.%s", sb->dir, s->name, ext);
}

static void slog(struct sandbox *sb, struct session *s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void slog(struct sandbox *sb, struct session *s, const char *fmt, ...)
{
	struct sbuf b = {0};
	char ts[40];
	fmt_time_iso(now_ns(), ts, sizeof(ts));
	sbuf_printf(&b, "%s ", ts);
	va_list ap;
	va_start(ap, fmt);
	sbuf_vprintf(&b, fmt, ap);
	va_end(ap);
	sbuf_append(&b, "\n", 1);
	char p[4200];
	path_of(sb, s, "log", p, sizeof(p));
	int fd = open(p, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0) {
		write_all(fd, b.data, b.len);
		close(fd);
	}
	sbuf_free(&b);
}

/* Writes S.json; s->mu held. */
static int persist(struct sandbox *sb, struct session *s)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "name", json_object_new_string(s->name));
	json_object_object_add(o, "kernel_job", json_object_new_int64(s->kjob));
	json_object_object_add(o, "kernel_name", json_object_new_string(s->kname));
	json_object_object_add(o, "seq", json_object_new_int64(s->seq));
	if (s->pending)
		json_object_object_add(o, "pending_note", json_object_new_string(s->pending));
	struct json_object *a = json_object_new_array();
	for (size_t i = 0; i < s->n; i++) {
		struct json_object *c = json_object_new_object();
		json_object_object_add(c, "job", json_object_new_int64(s->cells[i].job));
		json_object_object_add(c, "kernel_job", json_object_new_int64(s->cells[i].kjob));
		json_object_object_add(c, "seq", json_object_new_int64(s->cells[i].seq));
		if (s->cells[i].note)
			json_object_object_add(c, "note", json_object_new_string(s->cells[i].note));
		if (s->cells[i].fed)
			json_object_object_add(c, "fed", json_object_new_boolean(1));
		json_object_array_add(a, c);
	}
	json_object_object_add(o, "cells", a);
	const char *txt = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
	char p[4200];
	snprintf(p, sizeof(p), "%s/sessions", sb->dir);
	int r = mkdir_p(p, 0700);
	path_of(sb, s, "json", p, sizeof(p));
	if (r == 0)
		r = write_file_replace(p, txt, strlen(txt), 0600);
	json_object_put(o);
	return r;
}

static struct session *session_new(struct sesstab *t, const char *name)
{
	struct session *s = xcalloc(1, sizeof(*s));
	s->id = t->next_id++;
	snprintf(s->name, sizeof(s->name), "%s", name);
	pthread_mutex_init(&s->mu, NULL);
	s->next = t->list;
	t->list = s;
	return s;
}

static uint32_t jint(struct json_object *o, const char *k)
{
	struct json_object *v;
	return json_object_object_get_ex(o, k, &v) ? (uint32_t)json_object_get_int64(v) : 0;
}

static char *jstr(struct json_object *o, const char *k)
{
	struct json_object *v;
	return json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string)
		       ? xstrdup(json_object_get_string(v))
		       : NULL;
}

static void load_one(struct sandbox *sb, struct sesstab *t, const char *file)
{
	char p[4200], *txt = NULL;
	snprintf(p, sizeof(p), "%s/sessions/%s", sb->dir, file);
	if (read_file(p, 64 << 20, &txt, NULL) < 0)
		return;
	struct json_object *o = json_tokener_parse(txt);
	free(txt);
	char *name = o ? jstr(o, "name") : NULL;
	if (!name || !name_valid(name) || find_locked(t, 0, name)) {
		free(name);
		json_object_put(o);
		return;
	}
	struct session *s = session_new(t, name);
	free(name);
	s->kjob = jint(o, "kernel_job");
	s->seq = jint(o, "seq");
	char *kn = jstr(o, "kernel_name");
	snprintf(s->kname, sizeof(s->kname), "%s", kn ? kn : "");
	free(kn);
	s->pending = jstr(o, "pending_note");
	struct json_object *a;
	if (json_object_object_get_ex(o, "cells", &a) && json_object_is_type(a, json_type_array)) {
		size_t n = json_object_array_length(a);
		s->cells = xcalloc(n ? n : 1, sizeof(*s->cells));
		s->cap = n ? n : 1;
		for (size_t i = 0; i < n; i++) {
			struct json_object *c = json_object_array_get_idx(a, i);
			s->cells[s->n].job = jint(c, "job");
			s->cells[s->n].kjob = jint(c, "kernel_job");
			s->cells[s->n].seq = jint(c, "seq");
			s->cells[s->n].note = jstr(c, "note");
			s->cells[s->n].fed = jint(c, "fed") != 0;
			s->n++;
		}
	}
	json_object_put(o);
	/* The kernel was a job of the seerfs that stopped: it is gone, and
	 * with it everything the cells had built up. */
	if (s->kjob) {
		s->kjob = 0;
		free(s->pending);
		s->pending = xstrdup("seerfs restarted: the kernel's state (variables, loaded models) was lost; "
				     "this cell runs in a fresh one");
		persist(sb, s);
		slog(sb, s, "seerfs restarted: the kernel's state was lost");
	}
}

void sessions_load(struct sandbox *sb)
{
	struct sesstab *t = xcalloc(1, sizeof(*t));
	pthread_mutex_init(&t->lock, NULL);
	t->next_id = 1;
	sb->sessions = t;
	char p[4200];
	snprintf(p, sizeof(p), "%s/sessions", sb->dir);
	DIR *d = opendir(p);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.' && str_endswith(e->d_name, ".json"))
			load_one(sb, t, e->d_name);
	closedir(d);
}

static void session_free(struct session *s)
{
	/* With the sandbox: no job is left, so no pump holds a cell. */
	while (s->pumps) {
		struct kpump *kp = s->pumps;
		s->pumps = kp->next;
		if (kp->fd >= 0)
			close(kp->fd);
		for (size_t i = 0; i < kp->n; i++)
			job_put(kp->v[i].j);
		free(kp->v);
		sbuf_free(&kp->partial);
		pthread_mutex_destroy(&kp->mu);
		pthread_mutex_destroy(&kp->wmu);
		free(kp);
	}
	for (size_t i = 0; i < s->n; i++)
		free(s->cells[i].note);
	free(s->cells);
	free(s->pending);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

void sessions_free(struct sandbox *sb)
{
	struct sesstab *t = sb->sessions;
	if (!t)
		return;
	while (t->list) {
		struct session *s = t->list;
		t->list = s->next;
		session_free(s);
	}
	pthread_mutex_destroy(&t->lock);
	free(t);
	sb->sessions = NULL;
}

uint32_t sessions_find(struct sandbox *sb, const char *name)
{
	struct session *s = find(sb, 0, name);
	return s ? s->id : 0;
}

int sessions_name(struct sandbox *sb, uint32_t id, char *buf, size_t len)
{
	struct session *s = find(sb, id, NULL);
	if (!s)
		return -ENOENT;
	snprintf(buf, len, "%s", s->name);
	return 0;
}

size_t sessions_list(struct sandbox *sb, uint32_t **ids, char ***names)
{
	struct sesstab *t = stab(sb);
	size_t n = 0;
	*ids = NULL;
	*names = NULL;
	if (!t)
		return 0;
	pthread_mutex_lock(&t->lock);
	for (struct session *s = t->list; s; s = s->next)
		n += !s->removed;
	*ids = xcalloc(n + 1, sizeof(**ids));
	*names = xcalloc(n + 1, sizeof(**names));
	size_t i = 0;
	for (struct session *s = t->list; s; s = s->next) {
		if (s->removed)
			continue;
		(*ids)[i] = s->id;
		(*names)[i++] = xstrdup(s->name);
	}
	pthread_mutex_unlock(&t->lock);
	return n;
}

/* ---- kernels ------------------------------------------------------------------------------ */

/* The kernel runs behind a shell whose exit status says how it ended
 * (128 + N: signal N), so that the cell it dies under can end with the same
 * signal; the shell ignores SIGINT (an interrupt is the kernel's to handle). */
static const char kernel_sh[] = "trap '' INT; python3 -c \"$SEERFS_KERNEL\"; exit $?";

static void pump_hook(struct job *k, void *arg);

static int kernel_running(struct sandbox *sb, struct session *s)
{
	if (!s->kjob)
		return 0;
	struct job *k = jobs_find(sb, s->kjob);
	int run = k && job_state(k) == JOB_RUNNING;
	job_put(k);
	return run;
}

/* Ends the current kernel (restart, rmdir) and the cell it runs; s->mu held. */
static void kernel_kill(struct sandbox *sb, struct session *s)
{
	if (s->n) {
		struct job *c = jobs_find(sb, s->cells[s->n - 1].job);
		if (c && job_state(c) == JOB_RUNNING)
			job_ctl(c, "kill", 4);
		job_put(c);
	}
	struct job *k = s->kjob ? jobs_find(sb, s->kjob) : NULL;
	if (k && job_state(k) == JOB_RUNNING)
		job_ctl(k, "kill", 4);
	job_put(k);
}

/* The pump of the current kernel; s->mu held. */
static struct kpump *pump_of(struct session *s)
{
	for (struct kpump *kp = s->pumps; kp; kp = kp->next)
		if (kp->kjob == s->kjob)
			return kp;
	return NULL;
}

/* Starts a fresh kernel; s->mu held. */
static int kernel_start(struct sandbox *sb, struct session *s)
{
	snprintf(s->kname, sizeof(s->kname), "%s.%llx", s->name, (unsigned long long)now_ns());
	struct sbuf e1 = {0}, e2 = {0}, e3 = {0}, txt = {0};
	sbuf_printf(&e1, "SEERFS_KNAME=%s", s->kname);
	sbuf_printf(&e2, "SEERFS_KERNEL=%s", seer_kernel_py);
	sbuf_printf(&e3, "SEERFS_SESSION=%s", s->name);
	sbuf_printf(&txt, "seerfs kernel of session %s (python3)", s->name);
	char *env[] = {e1.data, e2.data, e3.data, NULL};
	char *argv[] = {"/bin/sh", "-c", (char *)kernel_sh, "seerfs-kernel", NULL};
	/* The pump exists before the kernel's first output can call it. */
	struct kpump *kp = xcalloc(1, sizeof(*kp));
	kp->sb = sb;
	snprintf(kp->sname, sizeof(kp->sname), "%s", s->name);
	kp->fd = -1;
	pthread_mutex_init(&kp->mu, NULL);
	pthread_mutex_init(&kp->wmu, NULL);
	/* Its stdout carries every cell's output: the cap applies to each
	 * cell's job instead. Its stdin stays open: cells come that way. */
	struct job_spawn_opts o = {.argv = argv, .env = env, .no_timeout = 1, .no_cap = 1,
				   .on_change = pump_hook, .on_change_arg = kp};
	struct job *k;
	int r = jobs_start_opts(sb, txt.data, txt.len, &o, 0, &k);
	sbuf_free(&e1);
	sbuf_free(&e2);
	sbuf_free(&e3);
	sbuf_free(&txt);
	if (r < 0) {
		pthread_mutex_destroy(&kp->mu);
		pthread_mutex_destroy(&kp->wmu);
		free(kp);
		return r;
	}
	s->kjob = job_number(k);
	s->seq = 0;
	pthread_mutex_lock(&kp->mu);
	kp->kjob = s->kjob;
	pthread_mutex_unlock(&kp->mu);
	kp->next = s->pumps;
	s->pumps = kp;
	job_put(k);
	slog(sb, s, "kernel started: job %u", s->kjob);
	return 0;
}

/* Why the last kernel is gone, for the note of the cell that starts the next. */
static char *kernel_end_text(struct sandbox *sb, struct session *s)
{
	struct job *k = s->kjob ? jobs_find(sb, s->kjob) : NULL;
	struct sbuf b = {0};
	if (!k) {
		sbuf_printf(&b, "the kernel of session %s is gone", s->name);
	} else {
		char *ex = job_exit_text(k);
		ex[strcspn(ex, "\n")] = '\0';
		/* The shell in front of it reports a signal as 128 + N. */
		int code = atoi(ex);
		if (code > 128 && code < 128 + 65)
			sbuf_printf(&b, "the kernel of session %s (job %u) was killed by signal %d", s->name, s->kjob,
				    code - 128);
		else
			sbuf_printf(&b, "the kernel of session %s (job %u) ended (%s)", s->name, s->kjob, ex);
		free(ex);
		job_put(k);
	}
	sbuf_printf(&b, "; this cell runs in a fresh one: the state of the cells before it was lost");
	return b.data;
}

/* After a cell that died with its kernel, the kernel's own end may not be
 * recorded yet: wait for it a moment rather than hand the next cell to a
 * kernel that is gone. */
static void settle_after_death(struct sandbox *sb, struct session *s)
{
	if (!s->n || !s->kjob)
		return;
	struct job *c = jobs_find(sb, s->cells[s->n - 1].job);
	int died = 0;
	if (c && job_state(c) == JOB_EXITED) {
		char *ex = job_exit_text(c);
		died = !strncmp(ex, "signal", 6);
		free(ex);
	}
	job_put(c);
	if (!died)
		return;
	struct job *k = jobs_find(sb, s->kjob);
	for (int i = 0; k && i < 40 && job_state(k) == JOB_RUNNING; i++)
		job_wait_output(k, UINT64_MAX, 50000);
	job_put(k);
}

int sessions_create(struct sandbox *sb, const char *name)
{
	struct sesstab *t = stab(sb);
	if (!t)
		return -ENOENT;
	if (!name_valid(name) || name[0] == '.') {
		sandbox_set_error(sb, "sandbox %s: sessions/%s: a session's name is letters, digits, '-', '_' and '.', "
				  "at most 64, not starting with '.'", sb->name, name);
		return -EINVAL;
	}
	pthread_mutex_lock(&sb->lock);
	int running = sb->state == SB_RUNNING && !sb->busy_op;
	enum sb_state st = sb->state;
	pthread_mutex_unlock(&sb->lock);
	if (!running) {
		sandbox_set_error(sb, "sandbox %s: sessions/%s: the sandbox is %s, not running; a session's kernel "
				  "runs in it: provision it first (config.json) and wait for it (cat wait)",
				  sb->name, name, sb_state_name(st));
		return st == SB_PROVISIONING ? -EAGAIN : -ENOTCONN;
	}
	pthread_mutex_lock(&t->lock);
	if (find_locked(t, 0, name)) {
		pthread_mutex_unlock(&t->lock);
		return -EEXIST;
	}
	struct session *s = session_new(t, name);
	pthread_mutex_lock(&s->mu);
	pthread_mutex_unlock(&t->lock);
	char p[4200];
	path_of(sb, s, "log", p, sizeof(p));
	unlink(p);
	int r = persist(sb, s);
	if (r == 0) {
		slog(sb, s, "session %s created", name);
		r = kernel_start(sb, s);
	}
	if (r == 0)
		r = persist(sb, s);
	pthread_mutex_unlock(&s->mu);
	if (r < 0) {
		pthread_mutex_lock(&t->lock);
		s->removed = 1;
		pthread_mutex_unlock(&t->lock);
		path_of(sb, s, "json", p, sizeof(p));
		unlink(p);
		return r;
	}
	sandbox_log(sb, "session %s started (kernel: job %u)", name, s->kjob);
	sandbox_changed(sb);
	return 0;
}

int sessions_remove(struct sandbox *sb, const char *name)
{
	struct sesstab *t = stab(sb);
	struct session *s = find(sb, 0, name);
	if (!s)
		return -ENOENT;
	pthread_mutex_lock(&s->mu);
	kernel_kill(sb, s);
	pthread_mutex_lock(&t->lock);
	s->removed = 1;
	pthread_mutex_unlock(&t->lock);
	char p[4200];
	path_of(sb, s, "json", p, sizeof(p));
	unlink(p);
	path_of(sb, s, "log", p, sizeof(p));
	unlink(p);
	pthread_mutex_unlock(&s->mu);
	sandbox_log(sb, "session %s ended (its cells' jobs stay under jobs/)", name);
	sandbox_changed(sb);
	return 0;
}

/* ---- a kernel's pump: its frames into its cells' jobs ------------------------------------ */

static void save_record(struct sandbox *sb, uint32_t job, struct json_object *rec);

/* How the kernel ended, as a wait status for the cells it leaves (exit
 * codes over 128 are the shell's report of a signal). */
static int kernel_wstatus(struct job *k)
{
	char *ex = job_exit_text(k);
	int st;
	unsigned v;
	if (sscanf(ex, "signal %u", &v) == 1)
		st = (int)v;
	else if (sscanf(ex, "%u", &v) == 1 && v > 128 && v < 128 + 65)
		st = (int)(v - 128);
	else if (sscanf(ex, "%u", &v) == 1)
		st = (int)(v & 0xff) << 8;
	else
		st = SIGKILL;   /* lost with seerfs */
	free(ex);
	return st;
}

static void pcell_drop(struct kpump *kp, size_t i)
{
	job_put(kp->v[i].j);
	memmove(kp->v + i, kp->v + i + 1, (kp->n - i - 1) * sizeof(*kp->v));
	kp->n--;
}

static ssize_t pcell_find(struct kpump *kp, uint32_t seq)
{
	for (size_t i = 0; i < kp->n; i++)
		if (kp->v[i].seq == seq)
			return (ssize_t)i;
	return -1;
}

/* The kernel has ended and all it wrote is taken: its cells end with it;
 * kp->mu held. */
static void pump_finish(struct kpump *kp, struct job *k)
{
	int st = kernel_wstatus(k);
	int first = 1;
	for (size_t i = 0; i < kp->n; i++) {
		struct job *j = kp->v[i].j;
		if (!kp->v[i].ended) {
			const char *when = first ? "while it ran this cell" : "before it could run this cell";
			struct sbuf b = {0};
			if (WIFSIGNALED(st) || (st & 0x7f))
				sbuf_printf(&b, "seerfs: the kernel of session %s was killed by signal %d %s; "
					    "the next cell starts a fresh one (state lost)\n", kp->sname, st & 0x7f, when);
			else
				sbuf_printf(&b, "seerfs: the kernel of session %s exited with status %d %s; "
					    "the next cell starts a fresh one\n", kp->sname, WEXITSTATUS(st), when);
			job_feed(j, JS_STDERR, b.data, b.len);
			sbuf_free(&b);
			/* A cell dies with the kernel's signal; a kernel that just
			 * exited fails its cells. */
			job_feed_end(j, st & 0x7f ? st & 0x7f : 1 << 8);
			first = 0;
		}
		save_record(kp->sb, job_number(j), NULL);
		job_put(j);
	}
	kp->n = 0;
	kp->done = 1;
	if (kp->fd >= 0)
		close(kp->fd);
	kp->fd = -1;
	sbuf_free(&kp->partial);
}

/* One line of the kernel's record channel; kp->mu held. */
static void pump_line(struct kpump *kp, char *line, size_t len)
{
	int frame = !strncmp(line, "{\"s\": ", 6), end = !strncmp(line, "{\"seq\": ", 8);
	if (!frame && !end)
		return;   /* the kernel's greeting */
	struct json_tokener *tok = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH);
	struct json_object *o = json_tokener_parse_ex(tok, line, (int)len), *v;
	json_tokener_free(tok);
	if (!o)
		return;
	ssize_t i = json_object_object_get_ex(o, frame ? "s" : "seq", &v) ? pcell_find(kp, (uint32_t)json_object_get_int64(v))
									  : -1;
	if (i >= 0 && frame) {
		int err = json_object_object_get_ex(o, "e", &v);
		if ((err || json_object_object_get_ex(o, "o", &v)) && json_object_is_type(v, json_type_string) &&
		    !kp->v[i].ended)
			job_feed(kp->v[i].j, err ? JS_STDERR : JS_STDOUT, json_object_get_string(v),
				 (size_t)json_object_get_string_len(v));
	} else if (i >= 0) {
		struct job *j = kp->v[i].j;
		/* The record first: the cell's figures are there when its
		 * reader sees it end. */
		save_record(kp->sb, job_number(j), o);
		int code = json_object_object_get_ex(o, "exit", &v) ? json_object_get_int(v) : 1;
		if (!kp->v[i].ended)
			job_feed_end(j, (code & 0xff) << 8);
		pcell_drop(kp, (size_t)i);
	}
	json_object_put(o);
}

/* Takes what the kernel wrote since the last look; ends its cells once it
 * has ended. Called from the jobs I/O thread (and the provider's, at the
 * kernel's exit) with no lock held. */
static void pump_run(struct kpump *kp, struct job *k)
{
	pthread_mutex_lock(&kp->mu);
	if (kp->done) {
		pthread_mutex_unlock(&kp->mu);
		return;
	}
	int finished = job_finished(k);   /* before reading: nothing written before the end is missed */
	if (kp->fd < 0) {
		char p[4200];
		snprintf(p, sizeof(p), "%s/stdout", job_dir(k));
		kp->fd = open(p, O_RDWR | O_CLOEXEC);
	}
	char buf[65536];
	for (;;) {
		ssize_t n = kp->fd >= 0 ? pread(kp->fd, buf, sizeof(buf), (off_t)kp->parsed) : -1;
		if (n <= 0)
			break;
		kp->parsed += (uint64_t)n;
		char *start = buf, *stop = buf + n, *nl;
		while (start < stop && (nl = memchr(start, '\n', (size_t)(stop - start)))) {
			if (kp->partial.len) {
				sbuf_append(&kp->partial, start, (size_t)(nl - start));
				pump_line(kp, kp->partial.data, kp->partial.len);
				kp->partial.len = 0;
			} else {
				pump_line(kp, start, (size_t)(nl - start));
			}
			start = nl + 1;
		}
		if (start < stop)
			sbuf_append(&kp->partial, start, (size_t)(stop - start));
	}
	/* What is taken is in the cells' own files now: the kernel's copy
	 * gives its disk space back (the file keeps its length). */
	uint64_t upto = (kp->parsed - kp->partial.len) & ~(uint64_t)((1 << 20) - 1);
	if (kp->fd >= 0 && upto > kp->punched) {
		fallocate(kp->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)kp->punched,
			  (off_t)(upto - kp->punched));
		kp->punched = upto;
	}
	if (finished)
		pump_finish(kp, k);
	pthread_mutex_unlock(&kp->mu);
}

static void pump_hook(struct job *k, void *arg)
{
	pump_run(arg, k);
}

/* Hands cell seq (job j) to the pump; 0 when the kernel is to be given its
 * code, -ESRCH when the cell has ended already (killed, or the kernel is
 * gone). */
static int pump_add(struct kpump *kp, uint32_t seq, struct job *j)
{
	pthread_mutex_lock(&kp->mu);
	int r = 0;
	if (kp->done) {
		struct sbuf b = {0};
		sbuf_printf(&b, "seerfs: the kernel of session %s ended before it could run this cell; "
			    "the next cell starts a fresh one\n", kp->sname);
		job_feed(j, JS_STDERR, b.data, b.len);
		sbuf_free(&b);
		job_feed_end(j, 1 << 8);
		r = -ESRCH;
	} else if (job_state(j) != JOB_RUNNING) {
		r = -ESRCH;
	} else {
		if (kp->n == kp->cap) {
			kp->cap = kp->cap ? kp->cap * 2 : 8;
			kp->v = realloc(kp->v, kp->cap * sizeof(*kp->v));
			if (!kp->v)
				abort();
		}
		job_ref(j);
		kp->v[kp->n++] = (struct pcell){.seq = seq, .j = j};
	}
	pthread_mutex_unlock(&kp->mu);
	return r;
}

/* kill, signal N or the timeout on a cell's job (its fed_signal): SIGINT
 * interrupts the cell in the kernel (KeyboardInterrupt; the cell ends as
 * it ends); a signal whose default is to end a process ends the cell's job
 * now with that signal, and the kernel interrupts the cell, or drops it
 * when it has not started, keeping its namespace. */
static int cell_signal(struct job *j, int sig, void *arg)
{
	struct kpump *kp = arg;
	if (sig == SIGCHLD || sig == SIGCONT || sig == SIGURG || sig == SIGWINCH || sig == SIGSTOP ||
	    sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU)
		return 0;   /* nothing a process would notice either */
	pthread_mutex_lock(&kp->mu);
	uint32_t seq = 0;
	for (size_t i = 0; i < kp->n; i++) {
		if (kp->v[i].j == j && !kp->v[i].ended) {
			seq = kp->v[i].seq;
			if (sig != SIGINT)
				kp->v[i].ended = 1;   /* its record may still come: the notebook shows it */
		}
	}
	if (sig != SIGINT)
		job_feed_end(j, sig);
	uint32_t kjob = kp->kjob;
	pthread_mutex_unlock(&kp->mu);
	if (!seq)
		return 0;
	struct job *k = jobs_find(kp->sb, kjob);
	if (k) {
		char line[64];
		int n = snprintf(line, sizeof(line), "{\"%s\": %u}\n", sig == SIGINT ? "interrupt" : "cancel", seq);
		pthread_mutex_lock(&kp->wmu);
		job_stdin_write(k, line, (size_t)n);
		pthread_mutex_unlock(&kp->wmu);
		job_put(k);
	}
	return 0;
}

/* ---- cells ------------------------------------------------------------------------------- */

int sessions_cell_too_big(struct sandbox *sb, uint32_t id)
{
	char name[80] = "?";
	sessions_name(sb, id, name, sizeof(name));
	sandbox_set_error(sb, "sandbox %s: sessions/%s/exec: a cell is limited to %d bytes; put longer code "
			  "in a file under root/workspace and run exec(open(PATH).read())", sb->name, name, CELL_MAX);
	return -EFBIG;
}

int sessions_cell_start(struct sandbox *sb, uint32_t id, const char *code, size_t len, pid_t caller,
			struct job **out)
{
	struct session *s = find(sb, id, NULL);
	if (!s)
		return -ENOENT;
	while (len && (code[len - 1] == '\n' || code[len - 1] == '\r'))
		len--;
	if (len > CELL_MAX)
		return sessions_cell_too_big(sb, id);
	if (memchr(code, '\0', len)) {
		sandbox_set_error(sb, "sandbox %s: sessions/%s/exec: the cell contains a NUL byte", sb->name, s->name);
		return -EINVAL;
	}
	pthread_mutex_lock(&s->mu);
	if (s->removed) {
		pthread_mutex_unlock(&s->mu);
		return -ENOENT;
	}
	int r = 0;
	settle_after_death(sb, s);
	if (!kernel_running(sb, s)) {
		if (s->kjob && s->n && !s->pending)
			s->pending = kernel_end_text(sb, s);
		r = kernel_start(sb, s);
		if (s->pending)
			slog(sb, s, "%s", s->pending);
	}
	struct job *j = NULL;
	struct kpump *kp = r == 0 ? pump_of(s) : NULL;
	struct job *k = kp ? jobs_find(sb, s->kjob) : NULL;
	if (r == 0 && !k)
		r = -EIO;   /* cannot be: the kernel's job was started under s->mu */
	uint32_t seq = s->seq + 1;
	if (r == 0) {
		struct job_spawn_opts o = {.python = 1, .fed = 1, .fed_pid = job_pid(k), .fed_signal = cell_signal,
					   .fed_arg = kp};
		/* An empty cell is a cell (Jupyter runs it): its job shows it as a
		 * blank line, since a job's command cannot be empty. */
		r = len ? jobs_start_opts(sb, code, len, &o, caller, &j) : jobs_start_opts(sb, " ", 1, &o, caller, &j);
	}
	if (r == 0) {
		s->seq = seq;
		if (s->n == s->cap) {
			s->cap = s->cap ? s->cap * 2 : 16;
			s->cells = realloc(s->cells, s->cap * sizeof(*s->cells));
			if (!s->cells)
				abort();
		}
		s->cells[s->n++] = (struct cell){.job = job_number(j), .kjob = s->kjob, .seq = seq,
						 .note = s->pending, .fed = 1};
		if (s->pending) {
			struct sbuf nb = {0};
			sbuf_printf(&nb, "seerfs: %s\n", s->pending);
			job_feed(j, JS_STDERR, nb.data, nb.len);
			sbuf_free(&nb);
		}
		s->pending = NULL;
		if (pump_add(kp, seq, j) == 0) {
			/* In the order of seq: s->mu is held until it is written. */
			struct json_object *req = json_object_new_object();
			json_object_object_add(req, "seq", json_object_new_int64(seq));
			json_object_object_add(req, "code", json_object_new_string_len(code, (int)len));
			struct sbuf line = {0};
			sbuf_printf(&line, "%s\n", json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN));
			json_object_put(req);
			pthread_mutex_lock(&kp->wmu);
			/* A kernel that is gone refuses it: its pump ends the cell
			 * when the kernel's end is recorded. */
			job_stdin_write(k, line.data, line.len);
			pthread_mutex_unlock(&kp->wmu);
			sbuf_free(&line);
		}
		/* The records after the hand-over: the kernel runs meanwhile. */
		slog(sb, s, "cell %u: job %u", seq, job_number(j));
	}
	job_put(k);
	persist(sb, s);
	pthread_mutex_unlock(&s->mu);
	if (r == 0)
		*out = j;
	return r;
}

int sessions_ctl(struct sandbox *sb, uint32_t id, const char *text, size_t len)
{
	struct session *s = find(sb, id, NULL);
	if (!s)
		return -ENOENT;
	while (len && (text[len - 1] == '\n' || text[len - 1] == ' '))
		len--;
	int r = 0;
	pthread_mutex_lock(&s->mu);
	if (len == 7 && !memcmp(text, "restart", 7)) {
		kernel_kill(sb, s);
		free(s->pending);
		s->pending = xstrdup("the kernel was restarted (ctl): the state of the cells before this one was lost");
		r = kernel_start(sb, s);
		slog(sb, s, "restart: a fresh interpreter (kernel: job %u); the state of earlier cells is gone", s->kjob);
		persist(sb, s);
	} else if (len == 9 && !memcmp(text, "interrupt", 9)) {
		/* SIGINT to the running cell's client, which hands it to the
		 * kernel over its socket: the same path on every provider, and
		 * nothing else in the kernel's process group is hit. */
		struct job *c = NULL;
		for (size_t i = s->n; i-- > 0;) {
			struct job *x = jobs_find(sb, s->cells[i].job);
			if (!x || job_state(x) != JOB_RUNNING) {
				job_put(x);
				break;
			}
			job_put(c);
			c = x;   /* the oldest cell still running is the kernel's */
		}
		r = c ? job_ctl(c, "signal 2", 8) : 0;
		job_put(c);
		if (r == 0)
			slog(sb, s, "interrupt");
	} else {
		sandbox_set_error(sb, "sandbox %s: sessions/%s/ctl: unknown command '%.*s'; write restart or interrupt",
				  sb->name, s->name, (int)(len > 80 ? 80 : len), text);
		r = -EINVAL;
	}
	pthread_mutex_unlock(&s->mu);
	if (r == 0)
		sandbox_changed(sb);
	return r;
}

int sessions_log_path(struct sandbox *sb, uint32_t id, char *buf, size_t len)
{
	struct session *s = find(sb, id, NULL);
	if (!s)
		return -ENOENT;
	path_of(sb, s, "log", buf, len);
	return 0;
}

/* ---- records and figures ---------------------------------------------------------------- */

/* The kernel's record of cell seq, from its job's stdout; NULL when there
 * is none (yet). */
static struct json_object *record_of(struct sandbox *sb, uint32_t kjob, uint32_t seq)
{
	char p[4200], *txt = NULL;
	size_t n = 0;
	snprintf(p, sizeof(p), "%s/jobs/%u/stdout", sb->dir, kjob);
	if (read_file(p, 256 << 20, &txt, &n) < 0)
		return NULL;
	struct json_object *found = NULL;
	char *line = txt;
	while (line < txt + n) {
		char *nl = memchr(line, '\n', (size_t)(txt + n - line));
		if (!nl)
			break;   /* not complete yet */
		*nl = '\0';
		if (!strncmp(line, "{\"seq\": ", 8) && (uint32_t)strtoul(line + 8, NULL, 10) == seq) {
			json_object_put(found);
			found = json_tokener_parse(line);
		}
		line = nl + 1;
	}
	free(txt);
	return found;
}

/* Where a cell's saved record lives: jobs/N/cell.json beside its output. */
static void cell_file(struct sandbox *sb, uint32_t job, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/jobs/%u/%s", sb->dir, job, name);
}

static int b64val(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '+' ? 62 : c == '/' ? 63 : -1;
}

static int b64decode(const char *in, struct sbuf *out)
{
	unsigned acc = 0;
	int bits = 0;
	for (; *in; in++) {
		if (*in == '=' || *in == '\n')
			continue;
		int v = b64val((unsigned char)*in);
		if (v < 0)
			return -EINVAL;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			char c = (char)((acc >> bits) & 0xff);
			sbuf_append(out, &c, 1);
		}
	}
	return 0;
}

/* Saves a finished cell's record (cell.json; "null" when it has none) and
 * figures (fig-K.png) in its job's directory. */
static void save_record(struct sandbox *sb, uint32_t job, struct json_object *rec)
{
	char p[4200];
	struct json_object *d;
	if (json_object_object_get_ex(rec, "displays", &d) && json_object_is_type(d, json_type_array)) {
		size_t n = json_object_array_length(d);
		/* The record comes from the sandbox: at most as many files as
		 * jobs/N/ can show (fs/jobsfs.c). */
		for (size_t i = 0; i < n && i < 255; i++) {
			struct json_object *png;
			if (!json_object_object_get_ex(json_object_array_get_idx(d, i), "image/png", &png))
				continue;
			struct sbuf b = {0};
			char name[32];
			snprintf(name, sizeof(name), "fig-%zu.png", i + 1);
			cell_file(sb, job, name, p, sizeof(p));
			if (b64decode(json_object_get_string(png), &b) == 0)
				write_file_replace(p, b.data ? b.data : "", b.len, 0600);
			sbuf_free(&b);
		}
	}
	const char *s = rec ? json_object_to_json_string_ext(rec, JSON_C_TO_STRING_PLAIN) : "null";
	cell_file(sb, job, "cell.json", p, sizeof(p));
	write_file_replace(p, s, strlen(s), 0600);
}

/* A cell's record, saved with its figures in its job's directory once it
 * is known; NULL: none (yet). A fed cell's pump saves it as the cell ends;
 * cells of older kernels find it in their kernel's stdout. */
static struct json_object *cell_collect(struct sandbox *sb, const struct cell *c)
{
	char p[4200], *txt = NULL;
	cell_file(sb, c->job, "cell.json", p, sizeof(p));
	if (read_file(p, 256 << 20, &txt, NULL) == 0) {
		struct json_object *o = json_tokener_parse(txt);
		free(txt);
		return o;
	}
	if (c->fed)
		return NULL;
	struct json_object *rec = record_of(sb, c->kjob, c->seq);
	struct job *j = jobs_find(sb, c->job);
	int done = j && job_finished(j);
	job_put(j);
	if (!rec || !done)
		return rec;
	save_record(sb, c->job, rec);
	return rec;
}

unsigned sessions_job_figures(struct sandbox *sb, uint32_t n)
{
	struct sesstab *t = stab(sb);
	if (!t)
		return 0;
	struct cell c = {0};
	/* Each session's cells under its own lock (they grow under it); the
	 * list under the table's, never both at once (sessions_remove takes
	 * them the other way round). Sessions live as long as the sandbox. */
	pthread_mutex_lock(&t->lock);
	size_t ns = 0;
	for (struct session *s = t->list; s; s = s->next)
		ns++;
	struct session **v = xcalloc(ns + 1, sizeof(*v));
	ns = 0;
	for (struct session *s = t->list; s; s = s->next)
		v[ns++] = s;
	pthread_mutex_unlock(&t->lock);
	for (size_t k = 0; k < ns && !c.job; k++) {
		pthread_mutex_lock(&v[k]->mu);
		for (size_t i = 0; i < v[k]->n; i++)
			if (v[k]->cells[i].job == n)
				c = (struct cell){.job = n, .kjob = v[k]->cells[i].kjob, .seq = v[k]->cells[i].seq,
						  .fed = v[k]->cells[i].fed};
		pthread_mutex_unlock(&v[k]->mu);
	}
	free(v);
	if (c.job)
		json_object_put(cell_collect(sb, &c));
	unsigned k = 0;
	char p[4200];
	for (;;) {
		char name[32];
		struct stat st;
		snprintf(name, sizeof(name), "fig-%u.png", k + 1);
		cell_file(sb, n, name, p, sizeof(p));
		if (stat(p, &st) < 0)
			return k;
		k++;
	}
}

/* ---- notebook.ipynb ------------------------------------------------------------------------- */

/* A JSON string from bytes that may not be UTF-8 (a cell prints what it
 * likes): invalid sequences become U+FFFD. */
static struct json_object *jtext(const char *s, size_t n)
{
	struct sbuf b = {0};
	size_t i = 0;
	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
		int ok = k && i + k <= n;
		for (size_t m = 1; ok && m < k; m++)
			ok = ((unsigned char)s[i + m] >> 6) == 2;
		if (ok && k == 1 && c == 0)
			ok = 0;
		if (ok) {
			sbuf_append(&b, s + i, k);
			i += k;
		} else {
			sbuf_append(&b, "\xef\xbf\xbd", 3);
			i++;
		}
	}
	struct json_object *o = json_object_new_string_len(b.data ? b.data : "", (int)b.len);
	sbuf_free(&b);
	return o;
}

static void add_stream(struct json_object *outs, const char *name, const char *data, size_t n)
{
	if (!n)
		return;
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "output_type", json_object_new_string("stream"));
	json_object_object_add(o, "name", json_object_new_string(name));
	json_object_object_add(o, "text", jtext(data, n));
	json_object_array_add(outs, o);
}

static struct json_object *markdown(const char *id, const char *text)
{
	struct json_object *m = json_object_new_object();
	json_object_object_add(m, "cell_type", json_object_new_string("markdown"));
	json_object_object_add(m, "id", json_object_new_string(id));
	json_object_object_add(m, "metadata", json_object_new_object());
	struct sbuf b = {0};
	sbuf_printf(&b, "*seerfs: %s*", text);
	json_object_object_add(m, "source", jtext(b.data, b.len));
	sbuf_free(&b);
	return m;
}

static char *read_part(struct sandbox *sb, uint32_t job, const char *name, size_t max, size_t *n)
{
	char p[4200], *txt = NULL;
	cell_file(sb, job, name, p, sizeof(p));
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	*n = 0;
	if (fd < 0)
		return xstrdup("");
	txt = malloc(max + 1);
	ssize_t r = txt ? pread(fd, txt, max, 0) : -1;
	close(fd);
	if (r < 0) {
		free(txt);
		return xstrdup("");
	}
	txt[r] = '\0';
	*n = (size_t)r;
	return txt;
}

static struct json_object *code_cell(struct sandbox *sb, const struct cell *c)
{
	struct json_object *cell = json_object_new_object();
	char id[40];
	snprintf(id, sizeof(id), "job-%u", c->job);
	json_object_object_add(cell, "cell_type", json_object_new_string("code"));
	json_object_object_add(cell, "id", json_object_new_string(id));
	json_object_object_add(cell, "metadata", json_object_new_object());
	size_t n;
	char *src = read_part(sb, c->job, "cmd", CELL_MAX, &n);
	if (n == 1 && src[0] == ' ')
		n = 0;
	json_object_object_add(cell, "source", jtext(src, n));
	free(src);
	struct json_object *rec = cell_collect(sb, c);
	struct job *j = jobs_find(sb, c->job);
	int done = j && job_finished(j);
	job_put(j);
	json_object_object_add(cell, "execution_count", done ? json_object_new_int64(c->seq) : NULL);
	struct json_object *outs = json_object_new_array();
	struct json_object *v;
	size_t no, ne;
	char *so = read_part(sb, c->job, "stdout", NB_STREAM_MAX, &no),
	     *se = read_part(sb, c->job, "stderr", NB_STREAM_MAX, &ne);
	size_t skip = c->note ? strlen("seerfs: ") + strlen(c->note) + 1 : 0;
	const char *eb = se + (skip <= ne ? skip : ne);
	size_t el = ne - (size_t)(eb - se);
	if (rec && json_object_object_get_ex(rec, "stdout_len", &v) && (size_t)json_object_get_int64(v) < no)
		no = (size_t)json_object_get_int64(v);
	if (rec && json_object_object_get_ex(rec, "stderr_len", &v) && (size_t)json_object_get_int64(v) < el)
		el = (size_t)json_object_get_int64(v);
	add_stream(outs, "stdout", so, no);
	add_stream(outs, "stderr", eb, el);
	free(so);
	free(se);
	if (rec && json_object_object_get_ex(rec, "displays", &v) && json_object_is_type(v, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(v); i++) {
			struct json_object *o = json_object_new_object();
			json_object_object_add(o, "output_type", json_object_new_string("display_data"));
			json_object_object_add(o, "data", json_object_get(json_object_array_get_idx(v, i)));
			json_object_object_add(o, "metadata", json_object_new_object());
			json_object_array_add(outs, o);
		}
	}
	if (rec && json_object_object_get_ex(rec, "result", &v) && json_object_is_type(v, json_type_object)) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "output_type", json_object_new_string("execute_result"));
		json_object_object_add(o, "execution_count", json_object_new_int64(c->seq));
		json_object_object_add(o, "data", json_object_get(v));
		json_object_object_add(o, "metadata", json_object_new_object());
		json_object_array_add(outs, o);
	}
	if (rec && json_object_object_get_ex(rec, "error", &v) && json_object_is_type(v, json_type_object)) {
		struct json_object *o = json_object_new_object(), *f;
		json_object_object_add(o, "output_type", json_object_new_string("error"));
		const char *keys[] = {"ename", "evalue"};
		for (int k = 0; k < 2; k++)
			json_object_object_add(o, keys[k], json_object_object_get_ex(v, keys[k], &f) &&
								   json_object_is_type(f, json_type_string)
							   ? json_object_get(f)
							   : json_object_new_string(""));
		json_object_object_add(o, "traceback",
				       json_object_object_get_ex(v, "traceback", &f) && json_object_is_type(f, json_type_array)
					       ? json_object_get(f)
					       : json_object_new_array());
		json_object_array_add(outs, o);
	} else if (!rec && done) {
		/* No record: the kernel died under the cell, or it was killed. */
		j = jobs_find(sb, c->job);
		char *ex = j ? job_exit_text(j) : xstrdup("lost\n");
		job_put(j);
		if (strcmp(ex, "0\n") && strcmp(ex, "1\n")) {
			struct sbuf b = {0};
			sbuf_printf(&b, "seerfs: the cell ended without a result: %s", ex);
			add_stream(outs, "stderr", b.data, b.len);
			sbuf_free(&b);
		}
		free(ex);
	}
	json_object_put(rec);
	json_object_object_add(cell, "outputs", outs);
	return cell;
}

char *sessions_notebook(struct sandbox *sb, uint32_t id)
{
	struct session *s = find(sb, id, NULL);
	if (!s)
		return NULL;
	pthread_mutex_lock(&s->mu);
	size_t n = s->n;
	struct cell *cells = xcalloc(n + 1, sizeof(*cells));
	for (size_t i = 0; i < n; i++) {
		cells[i] = s->cells[i];
		cells[i].note = s->cells[i].note ? xstrdup(s->cells[i].note) : NULL;
	}
	char *pending = s->pending ? xstrdup(s->pending) : NULL;
	pthread_mutex_unlock(&s->mu);

	struct json_object *nb = json_object_new_object(), *arr = json_object_new_array();
	for (size_t i = 0; i < n; i++) {
		char mid[40];
		snprintf(mid, sizeof(mid), "note-%u", cells[i].job);
		if (cells[i].note)
			json_object_array_add(arr, markdown(mid, cells[i].note));
		json_object_array_add(arr, code_cell(sb, &cells[i]));
		free(cells[i].note);
	}
	if (pending)
		json_object_array_add(arr, markdown("note-pending", pending));
	free(pending);
	free(cells);
	struct json_object *md = json_object_new_object(), *ks = json_object_new_object(),
			   *li = json_object_new_object();
	json_object_object_add(ks, "name", json_object_new_string("python3"));
	json_object_object_add(ks, "display_name", json_object_new_string("Python 3"));
	json_object_object_add(ks, "language", json_object_new_string("python"));
	json_object_object_add(li, "name", json_object_new_string("python"));
	json_object_object_add(md, "kernelspec", ks);
	json_object_object_add(md, "language_info", li);
	json_object_object_add(nb, "cells", arr);
	json_object_object_add(nb, "metadata", md);
	json_object_object_add(nb, "nbformat", json_object_new_int(4));
	json_object_object_add(nb, "nbformat_minor", json_object_new_int(5));
	char *out = xstrdup(json_object_to_json_string_ext(nb, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(nb);
	size_t l = strlen(out);
	out = realloc(out, l + 2);
	out[l] = '\n';
	out[l + 1] = '\0';
	return out;
}
