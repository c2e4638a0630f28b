/*
 * remote_exec.c - commands of a docker sandbox on a remote engine (see
 * remote_exec.h): through the resident agent (core/lib/agent_remote.c) in
 * the container when its image has perl, else each an Engine API exec over
 * a hijacked stream.
 *
 * The agent: one exec, `sh -c 'exec perl - ARGS'`, whose stream stays open
 * (bytestream_engine.c); the agent's text goes on its stdin. Every command
 * is then a few frames on that stream and a fork in the container (as on
 * the ssh provider: its wait status, so a death by signal reads as one; a
 * kill of the tree by the agent's /proc walk). Its stream's end (unmount,
 * the engine gone) makes it kill its commands. A command that kills the
 * agent (it runs as the container's root, as they do) ends the commands'
 * records as hung up; the next command starts a new agent.
 *
 * Without perl, one exec per command:
 * One job: the exec runs `sh -c 'echo $$; exec "$@"' seerfs-job ARGV...`
 * with the job's environment and cwd; the stream's reader thread takes
 * the first stdout line as the pid, writes the rest of stdout and all of
 * stderr to the job's fds, and at the end reports the exit to core/jobs.c.
 * A pump thread copies the job's stdin to the stream, then ends its input.
 * A finished job's stream is released (its reader joined) by the next
 * spawn, busy or free: never from its own callbacks.
 */
#include "core/providers/docker/remote_exec.h"
#include "core/jobs.h"
#include "core/lib/agent_remote.h"
#include "core/lib/bytestream.h"
#include "core/lib/engine.h"
#include "core/lib/util.h"
#include "core/sandbox.h"

#include <errno.h>
#include <json-c/json.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define JOB_WRAPPER "echo $$; exec \"$@\""
/* Signals pid $2 (tree $3 = 1: and every descendant, found with ps) with
 * signal number $1; prints how many it signalled. */
#define KILL_SCRIPT                                                                                                    \
	"s=$1; all=$2; todo=$2; if [ \"$3\" = 1 ]; then while [ -n \"$todo\" ]; do n=; for q in $todo; do "            \
	"n=\"$n $(ps -o pid= --ppid \"$q\" 2>/dev/null)\"; done; todo=$(echo $n); all=\"$all $todo\"; done; fi; "      \
	"c=0; for q in $all; do kill -\"$s\" \"$q\" 2>/dev/null && c=$((c+1)); done; echo $c"

struct dkr_job {
	struct dkr_job *next;
	struct dkr_jobs *owner;
	struct bytestream *bs;
	int fd_in, fd_out, fd_err;
	int wake[2];          /* the end of the job -> the stdin pump */
	pthread_t pump;
	int pump_started;
	int pid;              /* in the container; 0 until its line came, -1: none came */
	char pidline[24];
	size_t pidlen;
	int signalled;        /* the last signal sent to it */
	int done;
};

struct dkr_jobs {
	struct sandbox *sb;
	struct engine *eng;
	char cid[80];
	int timeout_ms;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct dkr_job *jobs;
	/* The agent (under alock: one start at a time); users counts the
	 * calls on it outside alock (under mu), which closing it waits for. */
	pthread_mutex_t alock;
	struct agent_remote *agent;
	int users;
	char agent_args[AGENT_ARGS_MAX]; /* agent_remote_args for the image's machine */
	int agent_off;              /* no perl: one exec per command */
	int holds;                  /* dkr_hold: freeing waits for 0 (under mu) */
};

static void put_all(int fd, const char *p, size_t n)
{
	while (n && fd >= 0) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return;   /* the reader went away: drop the rest */
		p += k;
		n -= (size_t)k;
	}
}

static int job_data(void *ud, int stream, const char *buf, size_t len)
{
	struct dkr_job *j = ud;
	if (stream == 0 && j->pid == 0) {
		while (len && j->pid == 0) {
			char c = *buf++;
			len--;
			if (c == '\n' || j->pidlen + 1 >= sizeof(j->pidline)) {
				j->pidline[j->pidlen] = '\0';
				int pid = atoi(j->pidline);
				pthread_mutex_lock(&j->owner->mu);
				j->pid = pid > 0 ? pid : -1;
				pthread_cond_broadcast(&j->owner->cv);
				pthread_mutex_unlock(&j->owner->mu);
			} else {
				j->pidline[j->pidlen++] = c;
			}
		}
		if (!len)
			return 0;
	}
	put_all(stream == 0 ? j->fd_out : j->fd_err, buf, len);
	return 0;
}

static void job_closed(void *ud, int err, const char *why)
{
	struct dkr_job *j = ud;
	struct dkr_jobs *o = j->owner;
	int code = -1, status;
	if (err == 0)
		sscanf(why, " (exit status %d)", &code);
	pthread_mutex_lock(&o->mu);
	int sig = j->signalled;
	if (j->pid == 0)
		j->pid = -1;
	pthread_mutex_unlock(&o->mu);
	if (code < 0) {
		sandbox_log(o->sb, "docker: a command's stream ended without its status: %s", why);
		status = SIGKILL;   /* as a killed process: the link, or the container, went away */
	} else if (sig && code == 128 + sig) {
		status = sig;       /* the engine reports a death by signal N as 128 + N */
	} else {
		status = (code & 0xff) << 8;
	}
	if (j->fd_out >= 0)
		close(j->fd_out);
	if (j->fd_err >= 0)
		close(j->fd_err);
	j->fd_out = j->fd_err = -1;
	char one = 1;
	if (write(j->wake[1], &one, 1) < 0) {
		/* the pump then ends with its stdin */
	}
	/* core/jobs.c knows a job by the pid spawn gave */
	struct seer_exit e = {.cookie = (uint64_t)j->pid, .status = status};
	jobs_on_exit(o->sb, &e);
	pthread_mutex_lock(&o->mu);
	j->done = 1;
	pthread_cond_broadcast(&o->cv);
	pthread_mutex_unlock(&o->mu);
}

static void *pump_main(void *arg)
{
	struct dkr_job *j = arg;
	char buf[65536];
	for (;;) {
		struct pollfd p[2] = {{j->fd_in, POLLIN, 0}, {j->wake[0], POLLIN, 0}};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			return NULL;   /* the job ended */
		ssize_t k = read(j->fd_in, buf, sizeof(buf));
		if (k < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (k <= 0)
			break;
		struct iovec iov = {buf, (size_t)k};
		if (j->bs->ops->writev(j->bs, &iov, 1, 0) < 0)
			return NULL;
	}
	j->bs->ops->send_eof(j->bs);
	return NULL;
}

static void job_free(struct dkr_job *j)
{
	/* the pump first: it writes into the stream */
	if (j->pump_started) {
		char one = 1;
		if (write(j->wake[1], &one, 1) < 0) {
			/* already woken */
		}
		pthread_join(j->pump, NULL);
	}
	if (j->bs)
		j->bs->ops->release(j->bs);   /* joins its reader: no callback after this */
	if (j->fd_in >= 0)
		close(j->fd_in);
	if (j->fd_out >= 0)
		close(j->fd_out);
	if (j->fd_err >= 0)
		close(j->fd_err);
	if (j->wake[0] >= 0)
		close(j->wake[0]);
	if (j->wake[1] >= 0)
		close(j->wake[1]);
	free(j);
}

/* Frees the jobs that ended (outside the lock: release joins threads). */
static void reap(struct dkr_jobs *o)
{
	struct dkr_job *gone = NULL;
	pthread_mutex_lock(&o->mu);
	for (struct dkr_job **pp = &o->jobs; *pp;) {
		struct dkr_job *j = *pp;
		if (j->done) {
			*pp = j->next;
			j->next = gone;
			gone = j;
		} else {
			pp = &j->next;
		}
	}
	pthread_mutex_unlock(&o->mu);
	while (gone) {
		struct dkr_job *j = gone;
		gone = j->next;
		job_free(j);
	}
}

struct dkr_jobs *dkr_jobs_new(struct sandbox *sb, struct engine *eng, const char *cid, int timeout_ms)
{
	struct dkr_jobs *o = xcalloc(1, sizeof(*o));
	o->sb = sb;
	o->eng = eng;
	snprintf(o->cid, sizeof(o->cid), "%s", cid);
	o->timeout_ms = timeout_ms > 0 ? timeout_ms : 20000;
	pthread_mutex_init(&o->mu, NULL);
	pthread_cond_init(&o->cv, NULL);
	pthread_mutex_init(&o->alock, NULL);
	return o;
}

/* ---- through the agent ------------------------------------------------------------------- */

static void agent_exit(void *ud, int pid, int status, const char *why)
{
	struct dkr_jobs *o = ud;
	if (why)
		sandbox_log(o->sb, "docker: sandbox %s: job pid %d: %s; it ends as killed by signal %d", o->sb->name, pid, why, status);
	jobs_on_exit(o->sb, &(struct seer_exit){.cookie = (uint64_t)pid, .status = status});
}

static int agent_stream_open(void *arg, const struct bytestream_cbs *cbs, void *ud, struct bytestream **out, char *err,
			     size_t n)
{
	struct dkr_jobs *o = arg;
	char nr[16], calls[AGENT_ARGS_MAX];
	if (sscanf(o->agent_args, "%15s %639s", nr, calls) != 2)
		snprintf(calls, sizeof(calls), "-");
	const char *argv[] = {"/bin/sh", "-c",
			      "command -v perl >/dev/null 2>&1 || { echo 'no perl in the image' >&2; exit 125; }; "
			      "exec perl - \"$@\"",
			      "seerfs-agent", nr, calls, NULL};
	/* cwd "/": the agent's walk and its commands' cwd are absolute */
	return bytestream_engine_open(o->eng, o->cid, argv, NULL, "/", o->timeout_ms, cbs, ud, out, err, n);
}

/* The image's machine as `uname -m` names it (the engine gives Go's name):
 * the system call numbers its processes use, even when emulated. */
static const char *image_machine(struct dkr_jobs *o, const char *image, char *buf, size_t n)
{
	static const char *const names[][2] = {{"amd64", "x86_64"}, {"arm64", "aarch64"}, {"386", "i686"},
					       {"ppc64le", "ppc64le"}, {"s390x", "s390x"}, {"riscv64", "riscv64"}};
	char path[256], e2[256];
	struct json_object *rep = NULL, *v;
	snprintf(path, sizeof(path), "/images/%s/json", image);
	const char *m = NULL;
	if (engine_call(o->eng, "GET", path, NULL, &rep, e2, sizeof(e2)) == 200 &&
	    json_object_object_get_ex(rep, "Architecture", &v)) {
		const char *a = json_object_get_string(v);
		for (size_t i = 0; a && i < sizeof(names) / sizeof(names[0]); i++)
			if (!strcmp(a, names[i][0]))
				m = names[i][1];
	}
	json_object_put(rep);
	if (!m)
		return NULL;
	snprintf(buf, n, "%s", m);
	return buf;
}

/* The agent, started if need be (under alock): NULL when it cannot run. */
static struct agent_remote *agent_locked(struct dkr_jobs *o, char *err, size_t n)
{
	if (o->agent && !agent_remote_alive(o->agent, o)) {
		pthread_mutex_lock(&o->mu);
		while (o->users)
			pthread_cond_wait(&o->cv, &o->mu);
		pthread_mutex_unlock(&o->mu);
		sandbox_log(o->sb, "docker: sandbox %s: its agent in container %.12s ended: starting another", o->sb->name,
			    o->cid);
		agent_remote_close(o->agent);
		o->agent = NULL;
	}
	if (!o->agent && !o->agent_off) {
		char e2[600] = "";
		/* as before the agent: the engine or the container went away */
		int r = agent_remote_open(agent_stream_open, o, o, SIGKILL,
					  "disconnected (the engine's exec stream of the sandbox's agent ended)",
					  o->timeout_ms, agent_exit, o, &o->agent, e2, sizeof(e2));
		if (r < 0) {
			o->agent = NULL;
			snprintf(err, n, "%s", e2);
			return NULL;
		}
	}
	return o->agent;
}

/* A call on the agent: it stays open until agent_put. */
static struct agent_remote *agent_get(struct dkr_jobs *o)
{
	char e2[600];
	pthread_mutex_lock(&o->alock);
	struct agent_remote *a = agent_locked(o, e2, sizeof(e2));
	if (a) {
		pthread_mutex_lock(&o->mu);
		o->users++;
		pthread_mutex_unlock(&o->mu);
	}
	pthread_mutex_unlock(&o->alock);
	return a;
}

static void agent_put(struct dkr_jobs *o)
{
	pthread_mutex_lock(&o->mu);
	if (--o->users == 0)
		pthread_cond_broadcast(&o->cv);
	pthread_mutex_unlock(&o->mu);
}

int dkr_agent_start(struct dkr_jobs *o, const char *image, const char *named, char *err, size_t n)
{
	char m[32], e2[600] = "";
	agent_remote_args(image_machine(o, image, m, sizeof(m)), o->agent_args, sizeof(o->agent_args));
	pthread_mutex_lock(&o->alock);
	struct agent_remote *a = agent_locked(o, e2, sizeof(e2));
	if (!a)
		o->agent_off = 1;
	const char *warn = a ? agent_remote_warning(a) : "";
	pthread_mutex_unlock(&o->alock);
	if (!a) {
		snprintf(err, n, "sandbox %s: commands go one Engine API exec each (about 100 ms more per command; a death by signal N reads as 128+N; a kill of a tree needs ps in the image; an unmount leaves them running): its agent did not start in image %s (%s); an image with perl (Debian: perl-base, as seerfs-base:bookworm) lets it run",
			 o->sb->name, named ? named : image, e2);
		return -ENOTSUP;
	}
	if (warn[0])
		sandbox_log(o->sb, "docker: sandbox %s: its agent: %s", o->sb->name, warn);
	sandbox_log(o->sb, "docker: sandbox %s: commands start through its agent in container %.12s (one exec stream)",
		    o->sb->name, o->cid);
	return 0;
}

int dkr_fileop(struct dkr_jobs *o, const void *req, size_t len, char *reply, size_t cap, size_t *rlen)
{
	pthread_mutex_lock(&o->alock);
	int off = o->agent_off;
	pthread_mutex_unlock(&o->alock);
	if (off)
		return -ENOTSUP;
	struct agent_remote *a = agent_get(o);
	if (!a)
		return -ENOTCONN;
	int r = agent_remote_fileop(a, req, len, reply, cap, rlen);
	agent_put(o);
	return r;
}

/* -ENOTSUP where the commands go one exec each. */
static int agent_spawn(struct dkr_jobs *o, const struct seer_spawn *req, int *pid, char *err, size_t n)
{
	char e2[600] = "";
	pthread_mutex_lock(&o->alock);
	if (o->agent_off) {
		pthread_mutex_unlock(&o->alock);
		return -ENOTSUP;
	}
	struct agent_remote *a = agent_locked(o, e2, sizeof(e2));
	if (!a) {
		pthread_mutex_unlock(&o->alock);
		snprintf(err, n, "sandbox %s: cannot start its agent in container %.12s: %s", o->sb->name, o->cid, e2);
		return -ENOTCONN;
	}
	int r = agent_remote_spawn(a, req, pid, e2, sizeof(e2));
	pthread_mutex_unlock(&o->alock);
	if (r < 0)
		snprintf(err, n, "sandbox %s: %s", o->sb->name, e2);
	return r;
}

/* ---- one exec per command ---------------------------------------------------------------- */

static const struct bytestream_cbs job_cbs = {job_data, job_closed};

static int wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, const struct timespec *ts)
{
	return pthread_cond_timedwait(cv, mu, ts);
}

int dkr_spawn(struct dkr_jobs *o, const struct seer_spawn *req, int *pid, char *err, size_t n)
{
	int ar = agent_spawn(o, req, pid, err, n);
	if (ar != -ENOTSUP)
		return ar;
	reap(o);
	int argc = 0;
	while (req->argv[argc])
		argc++;
	const char **argv = xcalloc((size_t)argc + 5, sizeof(*argv));
	argv[0] = "/bin/sh";
	argv[1] = "-c";
	argv[2] = JOB_WRAPPER;
	argv[3] = "seerfs-job";
	for (int i = 0; i < argc; i++)
		argv[4 + i] = req->argv[i];
	struct dkr_job *j = xcalloc(1, sizeof(*j));
	j->owner = o;
	j->fd_in = fcntl(req->fd_in, F_DUPFD_CLOEXEC, 3);
	j->fd_out = fcntl(req->fd_out, F_DUPFD_CLOEXEC, 3);
	j->fd_err = fcntl(req->fd_err, F_DUPFD_CLOEXEC, 3);
	j->wake[0] = j->wake[1] = -1;
	int r = 0;
	if (j->fd_in < 0 || j->fd_out < 0 || j->fd_err < 0 || pipe2(j->wake, O_CLOEXEC) < 0) {
		r = -errno;
		snprintf(err, n, "sandbox %s: cannot take the command's files: %s", o->sb->name, strerror(-r));
	}
	char e2[512] = "";
	if (r == 0) {
		/* on the list first: its exit can come before this returns */
		pthread_mutex_lock(&o->mu);
		j->next = o->jobs;
		o->jobs = j;
		pthread_mutex_unlock(&o->mu);
		r = bytestream_engine_open(o->eng, o->cid, argv, (const char *const *)req->envp,
					   req->cwd ? req->cwd : "/workspace", o->timeout_ms, &job_cbs, j, &j->bs, e2,
					   sizeof(e2));
		if (r < 0) {
			pthread_mutex_lock(&o->mu);
			j->done = 1;   /* never started: reap frees it */
			pthread_mutex_unlock(&o->mu);
			snprintf(err, n, "sandbox %s: cannot start %s in its container: %s", o->sb->name, req->argv[0],
				 e2);
			free(argv);
			reap(o);
			return r;
		}
	}
	free(argv);
	if (r < 0) {
		job_free(j);
		return r;
	}
	if (pthread_create(&j->pump, NULL, pump_main, j) == 0)
		j->pump_started = 1;
	else
		j->bs->ops->send_eof(j->bs);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += o->timeout_ms / 1000;
	pthread_mutex_lock(&o->mu);
	while (j->pid == 0 && !j->done)
		if (wait_until(&o->cv, &o->mu, &ts) == ETIMEDOUT)
			break;
	int p = j->pid;
	pthread_mutex_unlock(&o->mu);
	if (p <= 0) {
		snprintf(err, n, "sandbox %s: %s did not start in its container (no pid came back within %d ms)",
			 o->sb->name, req->argv[0], o->timeout_ms);
		return p == 0 ? -ETIMEDOUT : -ECHILD;
	}
	*pid = p;
	return 0;
}

/* A short exec whose stdout is collected. */
struct oneshot {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	char out[64];
	size_t len;
	int done, code;
};

static int shot_data(void *ud, int stream, const char *buf, size_t len)
{
	struct oneshot *s = ud;
	pthread_mutex_lock(&s->mu);
	if (stream == 0) {
		size_t k = len < sizeof(s->out) - 1 - s->len ? len : sizeof(s->out) - 1 - s->len;
		memcpy(s->out + s->len, buf, k);
		s->len += k;
		s->out[s->len] = '\0';
	}
	pthread_mutex_unlock(&s->mu);
	return 0;
}

static void shot_closed(void *ud, int err, const char *why)
{
	struct oneshot *s = ud;
	pthread_mutex_lock(&s->mu);
	s->code = -1;
	if (err == 0)
		sscanf(why, " (exit status %d)", &s->code);
	s->done = 1;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

int dkr_signal(struct dkr_jobs *o, int pid, int sig, int tree)
{
	pthread_mutex_lock(&o->alock);
	int use = !o->agent_off;
	pthread_mutex_unlock(&o->alock);
	if (use) {
		/* the agent signals the command (or its session and
		 * descendants), by its pid in the container */
		struct agent_remote *a = agent_get(o);
		if (!a)
			return -ENOTCONN;
		char e2[300];
		int r = agent_remote_signal(a, pid, sig, tree, e2, sizeof(e2));
		agent_put(o);
		if (r < 0 && r != -ESRCH)
			sandbox_log(o->sb, "docker: sandbox %s: signal %d to pid %d: %s", o->sb->name, sig, pid, e2);
		return r < 0 ? r : 1;
	}
	static const struct bytestream_cbs cbs = {shot_data, shot_closed};
	char ssig[16], spid[16];
	snprintf(ssig, sizeof(ssig), "%d", sig);
	snprintf(spid, sizeof(spid), "%d", pid);
	const char *argv[] = {"/bin/sh", "-c", KILL_SCRIPT, "seerfs-kill", ssig, spid, tree ? "1" : "0", NULL};
	struct oneshot s = {.code = -1};
	pthread_mutex_init(&s.mu, NULL);
	pthread_cond_init(&s.cv, NULL);
	pthread_mutex_lock(&o->mu);
	for (struct dkr_job *j = o->jobs; j; j = j->next)
		if (j->pid == pid && !j->done)
			j->signalled = sig;
	pthread_mutex_unlock(&o->mu);
	struct bytestream *bs = NULL;
	char e2[512];
	int r = bytestream_engine_open(o->eng, o->cid, argv, NULL, "/", o->timeout_ms, &cbs, &s, &bs, e2, sizeof(e2));
	if (r < 0) {
		sandbox_log(o->sb, "docker: cannot signal %d: %s", pid, e2);
	} else {
		bs->ops->send_eof(bs);
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += o->timeout_ms / 1000;
		pthread_mutex_lock(&s.mu);
		while (!s.done)
			if (pthread_cond_timedwait(&s.cv, &s.mu, &ts) == ETIMEDOUT)
				break;
		int done = s.done;
		pthread_mutex_unlock(&s.mu);
		bs->ops->release(bs);
		r = !done ? -ETIMEDOUT : atoi(s.out) > 0 ? atoi(s.out) : -ESRCH;
	}
	pthread_mutex_destroy(&s.mu);
	pthread_cond_destroy(&s.cv);
	return r;
}

int dkr_busy(struct dkr_jobs *o)
{
	reap(o);
	pthread_mutex_lock(&o->alock);
	int busy = o->agent && agent_remote_busy(o->agent);
	pthread_mutex_unlock(&o->alock);
	pthread_mutex_lock(&o->mu);
	busy |= o->jobs != NULL;
	pthread_mutex_unlock(&o->mu);
	return busy;
}

void dkr_agent_stop(struct dkr_jobs *o)
{
	if (!o)
		return;
	pthread_mutex_lock(&o->alock);
	struct agent_remote *a = o->agent;
	o->agent = NULL;
	pthread_mutex_unlock(&o->alock);
	if (!a)
		return;
	pthread_mutex_lock(&o->mu);
	while (o->users)
		pthread_cond_wait(&o->cv, &o->mu);
	pthread_mutex_unlock(&o->mu);
	/* EOF on its stdin: it kills its commands (their exits come as
	 * killed by SIGKILL) and ends */
	agent_remote_close(a);
}

void dkr_hold(struct dkr_jobs *o)
{
	pthread_mutex_lock(&o->mu);
	o->holds++;
	pthread_mutex_unlock(&o->mu);
}

void dkr_unhold(struct dkr_jobs *o)
{
	pthread_mutex_lock(&o->mu);
	if (--o->holds == 0)
		pthread_cond_broadcast(&o->cv);
	pthread_mutex_unlock(&o->mu);
}

void dkr_jobs_free(struct dkr_jobs *o, int wait_ms)
{
	if (!o)
		return;
	dkr_agent_stop(o);
	pthread_mutex_lock(&o->mu);
	while (o->holds)
		pthread_cond_wait(&o->cv, &o->mu);
	pthread_mutex_unlock(&o->mu);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += wait_ms / 1000;
	ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&o->mu);
	for (;;) {
		int open = 0;
		for (struct dkr_job *j = o->jobs; j; j = j->next)
			open |= !j->done;
		if (!open || pthread_cond_timedwait(&o->cv, &o->mu, &ts) == ETIMEDOUT)
			break;
	}
	struct dkr_job *all = o->jobs;
	o->jobs = NULL;
	pthread_mutex_unlock(&o->mu);
	while (all) {
		struct dkr_job *j = all;
		all = j->next;
		int was_done = j->done;
		int jpid = j->pid;
		job_free(j);   /* releases the stream: no callback after it */
		if (!was_done && jpid > 0) {
			struct seer_exit e = {.cookie = (uint64_t)jpid, .status = SIGKILL};
			jobs_on_exit(o->sb, &e);
		}
	}
	pthread_mutex_destroy(&o->mu);
	pthread_mutex_destroy(&o->alock);
	pthread_cond_destroy(&o->cv);
	free(o);
}
