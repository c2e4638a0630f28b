/*
 * sessions.c - notebook sessions of a sandbox (see sessions.h): the table,
 * its records on disk, kernels and cells as jobs, and notebook.ipynb.
 */
#include "core/sessions/sessions.h"
#include "core/jobs.h"
#include "core/provider.h"
#include "core/sandbox.h"
#include "core/lib/util.h"

#include "core/sessions/seer_kernel_py.h"
#include "core/sessions/seer_cell_py.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* One cell: its job, and which kernel ran it under which number. */
struct cell {
	uint32_t job;
	uint32_t kjob;      /* the kernel's job (its stdout holds the records) */
	uint32_t seq;       /* the cell's number in that kernel: In [seq] */
	char *note;         /* shown before it (the state was lost...), or NULL */
};

struct session {
	struct session *next;
	uint32_t id;
	char name[72];
	int removed;
	pthread_mutex_t mu;   /* everything below; held across a cell's start */
	uint32_t kjob;        /* the current kernel's job, 0: none yet */
	char kname[96];       /* its directory under $TMPDIR/.seerfs-sessions */
	uint32_t seq;         /* cells given to it */
	char *pending;        /* a note for the next cell (restart, seerfs restarted) */
	struct cell *cells;
	size_t n, cap;
};

struct sesstab {
	pthread_mutex_t lock; /* the list */
	struct session *list;
	uint32_t next_id;
};

/* A cell's code travels in the client's environment: one string there is
 * limited to 32 pages (MAX_ARG_STRLEN). */
#define CELL_MAX (128 * 1024 - 64)
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

/* The kernel runs behind a shell that records how it ended, so that the
 * cell it dies under can end with the same signal; the shell ignores
 * SIGINT (an interrupt is the kernel's to handle). */
static const char kernel_sh[] =
	"d=\"${TMPDIR:-/tmp}/.seerfs-sessions\"; mkdir -p \"$d/$SEERFS_KNAME\" && chmod 700 \"$d\" || exit 126; "
	"trap '' INT; python3 -c \"$SEERFS_KERNEL\"; s=$?; echo $s > \"$d/$SEERFS_KNAME/died\"; exit $s";

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
	struct job_spawn_opts o = {.argv = argv, .env = env, .no_timeout = 1};
	struct job *k;
	int r = jobs_start_opts(sb, txt.data, txt.len, &o, 0, &k);
	sbuf_free(&e1);
	sbuf_free(&e2);
	sbuf_free(&e3);
	sbuf_free(&txt);
	if (r < 0)
		return r;
	s->kjob = job_number(k);
	s->seq = 0;
	job_owner_closed(k);   /* its stdin: nothing to say */
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

/* ---- cells ------------------------------------------------------------------------------- */

int sessions_cell_start(struct sandbox *sb, uint32_t id, const char *code, size_t len, pid_t caller,
			struct job **out)
{
	struct session *s = find(sb, id, NULL);
	if (!s)
		return -ENOENT;
	while (len && (code[len - 1] == '\n' || code[len - 1] == '\r'))
		len--;
	if (len > CELL_MAX) {
		sandbox_set_error(sb, "sandbox %s: sessions/%s/exec: a cell is limited to %d bytes; put longer code "
				  "in a file under root/workspace and run exec(open(PATH).read())",
				  sb->name, s->name, CELL_MAX);
		return -EFBIG;
	}
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
	struct sbuf e1 = {0}, e2 = {0}, e3 = {0}, e4 = {0}, e5 = {0};
	struct job *j = NULL;
	if (r == 0) {
		uint32_t seq = s->seq + 1;
		sbuf_printf(&e1, "SEERFS_KNAME=%s", s->kname);
		sbuf_printf(&e2, "SEERFS_SEQ=%u", seq);
		sbuf_printf(&e3, "SEERFS_CODE=%.*s", (int)len, code);
		sbuf_printf(&e4, "SEERFS_SESSION=%s", s->name);
		if (s->pending)
			sbuf_printf(&e5, "SEERFS_NOTE=seerfs: %s", s->pending);
		char *env[] = {e1.data, e2.data, e3.data, e4.data, e5.data, NULL};
		/* The local provider's sandboxes have the agent binary, whose
		 * --cell mode starts in a millisecond; elsewhere the same
		 * client in Python. */
		char *argv_c[] = {"/.seerfs/agent", "--cell", NULL};
		char *argv_py[] = {"python3", "-I", "-S", "-c", (char *)seer_cell_py, NULL};
		char **argv = sb->prov == &seer_provider_local ? argv_c : argv_py;
		struct job_spawn_opts o = {.argv = argv, .env = env, .python = 1};
		/* An empty cell is a cell (Jupyter runs it): its job shows it as a
		 * blank line, since a job's command cannot be empty. */
		r = len ? jobs_start_opts(sb, code, len, &o, caller, &j) : jobs_start_opts(sb, " ", 1, &o, caller, &j);
		if (r == 0) {
			s->seq = seq;
			if (s->n == s->cap) {
				s->cap = s->cap ? s->cap * 2 : 16;
				s->cells = realloc(s->cells, s->cap * sizeof(*s->cells));
				if (!s->cells)
					abort();
			}
			s->cells[s->n++] = (struct cell){.job = job_number(j), .kjob = s->kjob, .seq = seq,
							 .note = s->pending};
			s->pending = NULL;
			slog(sb, s, "cell %u: job %u", seq, job_number(j));
		}
	}
	persist(sb, s);
	pthread_mutex_unlock(&s->mu);
	sbuf_free(&e1);
	sbuf_free(&e2);
	sbuf_free(&e3);
	sbuf_free(&e4);
	sbuf_free(&e5);
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

/* Saves a finished cell's record (cell.json) and figures (fig-K.png) in
 * its job's directory, once; returns the record (or NULL: none). */
static struct json_object *cell_collect(struct sandbox *sb, const struct cell *c)
{
	char p[4200], *txt = NULL;
	cell_file(sb, c->job, "cell.json", p, sizeof(p));
	if (read_file(p, 256 << 20, &txt, NULL) == 0) {
		struct json_object *o = json_tokener_parse(txt);
		free(txt);
		return o;
	}
	struct json_object *rec = record_of(sb, c->kjob, c->seq);
	struct job *j = jobs_find(sb, c->job);
	int done = j && job_finished(j);
	job_put(j);
	if (!rec || !done)
		return rec;
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
			cell_file(sb, c->job, name, p, sizeof(p));
			if (b64decode(json_object_get_string(png), &b) == 0)
				write_file_replace(p, b.data ? b.data : "", b.len, 0600);
			sbuf_free(&b);
		}
	}
	const char *s = json_object_to_json_string_ext(rec, JSON_C_TO_STRING_PLAIN);
	cell_file(sb, c->job, "cell.json", p, sizeof(p));
	write_file_replace(p, s, strlen(s), 0600);
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
				c = (struct cell){.job = n, .kjob = v[k]->cells[i].kjob, .seq = v[k]->cells[i].seq};
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

static char *read_part(struct sandbox *sb, uint32_t job, const char *name, size_t *n)
{
	char p[4200], *txt = NULL;
	cell_file(sb, job, name, p, sizeof(p));
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	*n = 0;
	if (fd < 0)
		return xstrdup("");
	txt = malloc(NB_STREAM_MAX + 1);
	ssize_t r = txt ? pread(fd, txt, NB_STREAM_MAX, 0) : -1;
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
	char *src = read_part(sb, c->job, "cmd", &n);
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
	char *so = read_part(sb, c->job, "stdout", &no), *se = read_part(sb, c->job, "stderr", &ne);
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
