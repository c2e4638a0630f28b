/*
 * agent_remote.c - the commands of a remote sandbox, through its resident
 * agent (core/lib/agent_remote.pl), over one byte stream (bytestream.h).
 *
 * A command over an exec of its own costs a session there: on an SSH host
 * sshd's, the remote user's login shell and a new bubblewrap (about 20 ms);
 * on a remote Docker engine an Engine API exec (about 100 ms). Instead,
 * each sandbox runs one agent over one stream that stays open (an SSH exec
 * channel into the sandbox's bubblewrap, bytestream_ssh.c; an Engine API
 * exec in the container, bytestream_engine.c), and every command is a few
 * frames on that stream and a fork there. The frames are listed in
 * agent_remote.pl.
 *
 * Here: the stream's callbacks only queue what arrives (so a slow command
 * pipe never stalls the carrier's I/O thread: over SSH, every channel of
 * the connection), pausing the stream above RX_PAUSE bytes; one reader
 * thread per agent parses the queue in order, writes each command's output
 * to its pipes, and reports its end (agent_remote_exit_fn); one thread per
 * command moves its stdin pipe to the stream, never more than CREDIT bytes
 * ahead of what the agent says it took, so one command that does not read
 * its stdin holds no one else up. Writers take wmu so that frames never
 * interleave.
 *
 * The stream's end is every command's end: killed (SIGKILL) when the
 * sandbox stops, hung up (SIGHUP) when the link or the agent died. The
 * environment travels inside the stream, never on a command line.
 */
#include "core/lib/agent_remote.h"
#include "core/lib/bytes.h"
#include "core/lib/agent_remote_pl.h"
#include "core/lib/seccomp_filter.h"
#include "core/lib/sshconn.h"   /* ssh_now_ms, ssh_cond_*: monotonic waits */
#include "core/lib/util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define AGENT_READY "@@seer-agent-ready\n"
#define AGENT_WARN "@@seer-agent-warn "   /* a line before the ready one: what it could not do */
#define PID_LINE "@@seer-pid "
#define FRAME_HDR 9
#define CREDIT (1u << 20)        /* stdin bytes a command may have in flight */
#define CLOSE_WAIT_MS 6000       /* how long a stop waits for the stream's end */
#define RX_PAUSE (1u << 20)      /* queued stream output above which the stream pauses */

enum { JOB_STARTING, JOB_RUNNING, JOB_DONE };

struct agent_job {
	struct agent_job *next;
	struct agent_remote *a;
	uint32_t id;
	int pid;                     /* from the agent's P frame; 0 until then */
	int fd_in, fd_out, fd_err;
	int state;
	size_t unacked;              /* stdin bytes sent, not yet taken */
	int stdin_gone;              /* the command closed its stdin */
	struct sbuf early_err;       /* stderr before the pid: why it did not start */
	pthread_t th;                /* its stdin pump */
	int th_started, th_done;
};

/* A signal or file request waiting for its answer. */
struct agent_req {
	struct agent_req *next;
	uint32_t id;
	int done;
	long n;
	char *reply;                 /* a file request's answer (f frame), cut to cap */
	size_t cap, len;
};

struct agent_remote {
	struct bytestream *bs;
	const void *link;            /* what the caller opened it on (agent_remote_alive) */
	int timeout_ms;
	agent_remote_exit_fn on_exit;
	void *ud;
	pthread_mutex_t mu;          /* everything below */
	pthread_cond_t cv;
	pthread_mutex_t wmu;         /* whole frames onto the channel */
	struct agent_job *jobs;
	struct agent_req *reqs;
	uint32_t next_id;
	int ready;
	int eof;                     /* the stream ended (on_closed ran) */
	int paused;                  /* on_data asked the stream to pause */
	char eof_why[240];           /* how it ended */
	struct sbuf rx;              /* stdout not yet taken by the reader */
	int dead;                    /* the stream ended and the reader took all of it */
	int closing;                 /* agent_remote_close was called */
	int64_t close_deadline;
	pthread_t reader;
	int reader_started;
	struct sbuf in;              /* channel output not yet parsed */
	struct sbuf err;             /* the end of its stderr, for messages */
	int host_pid;
	int lost_sig;                /* a command's end when the stream died: killed by it, */
	char lost_why[160];          /* for this reason */
	char warn[256];              /* its warning line, or "" */
};

/* A number in a frame's text ("123"); 0 when there is none. */
static long frame_num(const char *d, size_t len)
{
	char b[32];
	size_t l = len < sizeof(b) - 1 ? len : sizeof(b) - 1;
	memcpy(b, d, l);
	b[l] = '\0';
	return strtol(b, NULL, 10);
}

/* One frame onto the channel. No deadline: a frame cut short would garble
 * every one after it, and the link's own keepalives end a dead link. */
static int agent_send(struct agent_remote *a, char type, uint32_t id, const void *data, size_t len)
{
	unsigned char h[FRAME_HDR];
	h[0] = (unsigned char)type;
	put32(h + 1, id);
	put32(h + 5, (uint32_t)len);
	struct iovec v[2] = {{h, sizeof(h)}, {(void *)data, len}};
	pthread_mutex_lock(&a->wmu);
	int r = a->bs->ops->writev(a->bs, v, len ? 2 : 1, -1);
	pthread_mutex_unlock(&a->wmu);
	return r;
}

static struct agent_job *find_job(struct agent_remote *a, uint32_t id)
{
	for (struct agent_job *j = a->jobs; j; j = j->next)
		if (j->id == id)
			return j;
	return NULL;
}

/* A command's end, on the reader thread: its output pipes close first, so
 * that readers see EOF no later than the exit. */
static void job_end(struct agent_remote *a, struct agent_job *j, int status, const char *why)
{
	pthread_mutex_lock(&a->mu);
	int was = j->state;
	int fo = j->fd_out, fe = j->fd_err, fi = j->th_started ? -1 : j->fd_in;
	j->fd_out = j->fd_err = -1;
	if (fi >= 0)
		j->fd_in = -1;
	j->state = JOB_DONE;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
	if (fo >= 0)
		close(fo);
	if (fe >= 0)
		close(fe);
	if (fi >= 0)
		close(fi);
	if (was == JOB_RUNNING && a->on_exit)
		a->on_exit(a->ud, j->pid, status, why);
}

static void dispatch(struct agent_remote *a, char type, uint32_t id, const char *d, size_t len)
{
	pthread_mutex_lock(&a->mu);
	if (type == 'R' || type == 'f') {
		for (struct agent_req *q = a->reqs; q; q = q->next) {
			if (q->id == id) {
				q->n = frame_num(d, len);
				if (type == 'f' && q->reply) {
					q->len = len < q->cap ? len : q->cap;
					memcpy(q->reply, d, q->len);
				}
				q->done = 1;
				pthread_cond_broadcast(&a->cv);
			}
		}
		pthread_mutex_unlock(&a->mu);
		return;
	}
	struct agent_job *j = find_job(a, id);
	if (!j || j->state == JOB_DONE) {
		pthread_mutex_unlock(&a->mu);
		return;
	}
	int fd = -1;
	switch (type) {
	case 'P':
		j->pid = (int)frame_num(d, len);
		j->state = JOB_RUNNING;
		pthread_cond_broadcast(&a->cv);
		break;
	case 'A':
		if (len >= 4) {
			uint32_t k = get32((const unsigned char *)d);
			j->unacked -= k < j->unacked ? k : j->unacked;
			pthread_cond_broadcast(&a->cv);
		}
		break;
	case 'c':
		j->stdin_gone = 1;
		pthread_cond_broadcast(&a->cv);
		break;
	case 'O':
		fd = j->fd_out;
		break;
	case 'E':
		if (j->state == JOB_STARTING) {
			if (j->early_err.len < 4096)
				sbuf_append(&j->early_err, d, len);
		} else {
			fd = j->fd_err;
		}
		break;
	case 'X':
		pthread_mutex_unlock(&a->mu);
		job_end(a, j, len >= 4 ? (int)get32((const unsigned char *)d) : (255 << 8), NULL);
		return;
	}
	pthread_mutex_unlock(&a->mu);
	/* Only this thread closes a running command's output pipes. */
	if (fd >= 0)
		write_all(fd, d, len);
}

/* Stream output, on the carrier's thread: queued for the reader. */
static int on_data(void *ud, int stream, const char *data, size_t len)
{
	struct agent_remote *a = ud;
	int pause = 0;
	pthread_mutex_lock(&a->mu);
	if (stream == 1) {
		sbuf_append(&a->err, data, len);
		if (a->err.len > 4096) {
			memmove(a->err.data, a->err.data + a->err.len - 2048, 2048);
			a->err.len = 2048;
		}
	} else {
		sbuf_append(&a->rx, data, len);
		pause = a->rx.len >= RX_PAUSE;
		a->paused |= pause;
		pthread_cond_broadcast(&a->cv);
	}
	pthread_mutex_unlock(&a->mu);
	return pause;
}

static void on_closed(void *ud, int err, const char *why)
{
	struct agent_remote *a = ud;
	pthread_mutex_lock(&a->mu);
	a->eof = 1;
	snprintf(a->eof_why, sizeof(a->eof_why), "%s%s", err < 0 ? "" : "the agent ended", why ? why : "");
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

/* Stream output, on the reader thread: text up to the ready line, then
 * frames. */
static void agent_output(struct agent_remote *a, const void *data, size_t len)
{
	sbuf_append(&a->in, data, len);
	size_t off = 0;
	if (!a->ready) {
		char *r = memmem(a->in.data, a->in.len, AGENT_READY, strlen(AGENT_READY));
		if (!r) {
			if (a->in.len > 65536)   /* login noise without end: keep the tail */
				off = a->in.len - 1024;
			goto consume;
		}
		char *p = memmem(a->in.data, (size_t)(r - a->in.data), PID_LINE, strlen(PID_LINE));
		if (p)
			a->host_pid = atoi(p + strlen(PID_LINE));
		char *w = memmem(a->in.data, (size_t)(r - a->in.data), AGENT_WARN, strlen(AGENT_WARN));
		if (w) {
			w += strlen(AGENT_WARN);
			size_t wl = strcspn(w, "\n");
			if (wl >= sizeof(a->warn))
				wl = sizeof(a->warn) - 1;
			for (size_t i = 0; i < wl; i++)   /* the host's text: printable only */
				a->warn[i] = (unsigned char)w[i] < 0x20 || w[i] == 0x7f ? '?' : w[i];
			a->warn[wl] = '\0';
		}
		off = (size_t)(r - a->in.data) + strlen(AGENT_READY);
		pthread_mutex_lock(&a->mu);
		a->ready = 1;
		pthread_cond_broadcast(&a->cv);
		pthread_mutex_unlock(&a->mu);
	}
	while (a->in.len - off >= FRAME_HDR) {
		const unsigned char *h = (const unsigned char *)a->in.data + off;
		uint32_t id = get32(h + 1), l = get32(h + 5);
		if (a->in.len - off - FRAME_HDR < l)
			break;
		dispatch(a, (char)h[0], id, (const char *)h + FRAME_HDR, l);
		off += FRAME_HDR + l;
	}
consume:
	memmove(a->in.data, a->in.data + off, a->in.len - off);
	a->in.len -= off;
}

static void *reader_main(void *arg)
{
	struct agent_remote *a = arg;
	struct sbuf take = {0};
	pthread_mutex_lock(&a->mu);
	for (;;) {
		if (a->rx.len) {
			struct sbuf t = a->rx;
			a->rx = take;
			take = t;
			int resume = a->paused;
			a->paused = 0;
			pthread_mutex_unlock(&a->mu);
			if (resume && a->bs->ops->resume)
				a->bs->ops->resume(a->bs);
			agent_output(a, take.data, take.len);
			take.len = 0;
			pthread_mutex_lock(&a->mu);
			continue;
		}
		if (a->eof || (a->closing && ssh_now_ms() > a->close_deadline))
			break;
		ssh_cond_wait_until(&a->cv, &a->mu, ssh_now_ms() + 500);
	}
	pthread_mutex_unlock(&a->mu);
	sbuf_free(&take);
	pthread_mutex_lock(&a->mu);
	a->dead = 1;
	int closing = a->closing;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
	for (;;) {
		pthread_mutex_lock(&a->mu);
		struct agent_job *j = a->jobs;
		while (j && j->state == JOB_DONE)
			j = j->next;
		pthread_mutex_unlock(&a->mu);
		if (!j)
			break;
		if (closing)
			job_end(a, j, SIGKILL, "the sandbox stopped");
		else
			job_end(a, j, a->lost_sig, a->lost_why);
	}
	return NULL;
}

static void *stdin_main(void *arg)
{
	struct agent_job *j = arg;
	struct agent_remote *a = j->a;
	static const int poll_ms = 200;   /* how soon a pump notices its command's end */
	char *buf = xcalloc(1, 65536);
	for (;;) {
		pthread_mutex_lock(&a->mu);
		while (!a->dead && j->state != JOB_DONE && !j->stdin_gone && j->unacked >= CREDIT)
			ssh_cond_wait_until(&a->cv, &a->mu, ssh_now_ms() + poll_ms);
		int stop = a->dead || j->state == JOB_DONE || j->stdin_gone;
		size_t room = CREDIT - j->unacked;
		pthread_mutex_unlock(&a->mu);
		if (stop)
			break;
		struct pollfd p = {j->fd_in, POLLIN, 0};
		int k = poll(&p, 1, poll_ms);
		if (k <= 0)
			continue;
		ssize_t rd = read(j->fd_in, buf, room < 65536 ? room : 65536);
		if (rd < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (rd <= 0) {
			agent_send(a, 'C', j->id, NULL, 0);
			break;
		}
		pthread_mutex_lock(&a->mu);
		j->unacked += (size_t)rd;
		pthread_mutex_unlock(&a->mu);
		if (agent_send(a, 'I', j->id, buf, (size_t)rd) < 0)
			break;
	}
	free(buf);
	pthread_mutex_lock(&a->mu);
	int fd = j->fd_in;
	j->fd_in = -1;
	j->th_done = 1;
	pthread_mutex_unlock(&a->mu);
	/* Closed, its writer sees EPIPE when the command closed its stdin. */
	if (fd >= 0)
		close(fd);
	return NULL;
}

static void job_free(struct agent_job *j)
{
	if (j->th_started)
		pthread_join(j->th, NULL);
	close_fd(&j->fd_in);
	close_fd(&j->fd_out);
	close_fd(&j->fd_err);
	sbuf_free(&j->early_err);
	free(j);
}

/* Frees the commands that ended and whose pumps finished (all: every one,
 * after the reader ended them). */
static void reap(struct agent_remote *a, int all)
{
	for (;;) {
		struct agent_job *j = NULL;
		pthread_mutex_lock(&a->mu);
		for (struct agent_job **pp = &a->jobs; *pp; pp = &(*pp)->next) {
			struct agent_job *c = *pp;
			if (c->state == JOB_DONE && (all || !c->th_started || c->th_done)) {
				j = c;
				*pp = c->next;
				break;
			}
		}
		pthread_mutex_unlock(&a->mu);
		if (!j)
			return;
		job_free(j);
	}
}

static void agent_free(struct agent_remote *a)
{
	if (a->bs)
		a->bs->ops->release(a->bs);
	sbuf_free(&a->in);
	sbuf_free(&a->rx);
	sbuf_free(&a->err);
	pthread_mutex_destroy(&a->mu);
	pthread_mutex_destroy(&a->wmu);
	pthread_cond_destroy(&a->cv);
	free(a);
}

/* The end of the agent's stderr (what it said before it died), into err
 * after what. */
static void agent_failed(struct agent_remote *a, int r, char *err, size_t n)
{
	pthread_mutex_lock(&a->mu);
	size_t l = a->err.len;
	const char *o = a->err.data ? a->err.data : "";
	while (l && (o[l - 1] == '\n' || o[l - 1] == ' '))
		l--;
	const char *from = l > 300 ? o + l - 300 : o;
	snprintf(err, n, "%s%s%.*s%s%.200s", strerror(-r), l ? ": " : "", (int)(o + l - from), from,
		 a->eof && !l && a->eof_why[0] ? ": " : "", a->eof && !l ? a->eof_why : "");
	pthread_mutex_unlock(&a->mu);
}

int agent_remote_open(bytestream_open_fn open, void *arg, const void *link, int lost_sig, const char *lost_why, int timeout_ms,
		      agent_remote_exit_fn on_exit, void *ud, struct agent_remote **out, char *err, size_t n)
{
	static const struct bytestream_cbs cbs = {on_data, on_closed};
	struct agent_remote *a = xcalloc(1, sizeof(*a));
	a->link = link;
	a->timeout_ms = timeout_ms;
	a->on_exit = on_exit;
	a->ud = ud;
	a->lost_sig = lost_sig;
	snprintf(a->lost_why, sizeof(a->lost_why), "%s", lost_why);
	pthread_mutex_init(&a->mu, NULL);
	pthread_mutex_init(&a->wmu, NULL);
	ssh_cond_init(&a->cv);
	char e2[512] = "";
	int r = open(arg, &cbs, a, &a->bs, e2, sizeof(e2));
	if (r < 0) {
		snprintf(err, n, "%s", e2[0] ? e2 : strerror(-r));
		a->bs = NULL;
		agent_free(a);
		return r;
	}
	if (pthread_create(&a->reader, NULL, reader_main, a) != 0) {
		snprintf(err, n, "cannot start a thread for it");
		agent_free(a);
		return -EAGAIN;
	}
	a->reader_started = 1;
	/* The perl text comes on stdin up to __END__, so that no ps shows it. */
	static const char end[] = "\n__END__\n";
	struct iovec v[2] = {{(void *)agent_remote_pl, strlen(agent_remote_pl)}, {(void *)end, strlen(end)}};
	r = a->bs->ops->writev(a->bs, v, 2, timeout_ms);
	int64_t deadline = ssh_now_ms() + timeout_ms;
	pthread_mutex_lock(&a->mu);
	while (r == 0 && !a->ready) {
		if (a->dead)
			r = -EIO;   /* it ended before it was ready */
		else if (ssh_cond_wait_until(&a->cv, &a->mu, deadline) == ETIMEDOUT && !a->ready)
			r = -ETIMEDOUT;
	}
	pthread_mutex_unlock(&a->mu);
	if (r < 0) {
		agent_failed(a, r, err, n);
		agent_remote_close(a);
		return r;
	}
	*out = a;
	return 0;
}

int agent_remote_host_pid(struct agent_remote *a)
{
	return a->host_pid;   /* set before the ready line, never after */
}

const char *agent_remote_warning(struct agent_remote *a)
{
	return a->warn;   /* set before the ready line, never after */
}

int agent_remote_alive(struct agent_remote *a, const void *link)
{
	pthread_mutex_lock(&a->mu);
	int alive = !a->dead && !a->eof && !a->closing && a->link == link;
	pthread_mutex_unlock(&a->mu);
	return alive;
}

/* The spec of agent_remote.pl: cwd, the number of entries, the environment
 * (KEY=VALUE entries only), argv, NUL-separated. */
static void job_spec(const struct seer_spawn *req, struct sbuf *d)
{
	size_t nenv = 0;
	for (size_t i = 0; req->envp && req->envp[i]; i++)
		nenv += strchr(req->envp[i], '=') != NULL;
	sbuf_printf(d, "%s", req->cwd ? req->cwd : "/workspace");
	sbuf_append(d, "", 1);
	sbuf_printf(d, "%zu", nenv);
	for (size_t i = 0; req->envp && req->envp[i]; i++) {
		if (!strchr(req->envp[i], '='))
			continue;
		sbuf_append(d, "", 1);
		sbuf_printf(d, "%s", req->envp[i]);
	}
	for (size_t i = 0; req->argv[i]; i++) {
		sbuf_append(d, "", 1);
		sbuf_printf(d, "%s", req->argv[i]);
	}
}

int agent_remote_spawn(struct agent_remote *a, const struct seer_spawn *req, int *pid, char *err, size_t n)
{
	reap(a, 0);
	struct agent_job *j = xcalloc(1, sizeof(*j));
	j->a = a;
	j->fd_in = fcntl(req->fd_in, F_DUPFD_CLOEXEC, 3);
	j->fd_out = fcntl(req->fd_out, F_DUPFD_CLOEXEC, 3);
	j->fd_err = fcntl(req->fd_err, F_DUPFD_CLOEXEC, 3);
	if (j->fd_in < 0 || j->fd_out < 0 || j->fd_err < 0) {
		int r = -errno;
		snprintf(err, n, "cannot duplicate the job's pipes: %s", strerror(-r));
		job_free(j);
		return r;
	}
	pthread_mutex_lock(&a->mu);
	if (a->dead || a->closing) {
		pthread_mutex_unlock(&a->mu);
		snprintf(err, n, "the sandbox's agent ended");
		job_free(j);
		return -ENOTCONN;
	}
	if (++a->next_id == 0)
		a->next_id = 1;
	j->id = a->next_id;
	j->next = a->jobs;
	a->jobs = j;
	pthread_mutex_unlock(&a->mu);

	struct sbuf spec = {0};
	job_spec(req, &spec);
	int r = agent_send(a, 'S', j->id, spec.data, spec.len);
	sbuf_free(&spec);
	int64_t deadline = ssh_now_ms() + a->timeout_ms;
	pthread_mutex_lock(&a->mu);
	while (r == 0 && j->state == JOB_STARTING && !a->dead) {
		if (ssh_cond_wait_until(&a->cv, &a->mu, deadline) == ETIMEDOUT && j->state == JOB_STARTING)
			r = -ETIMEDOUT;
	}
	/* Started, and maybe ended already: the reader may have taken the
	 * exit right after the pid, before this thread woke. */
	if (j->pid > 0) {
		*pid = j->pid;
		j->th_started = pthread_create(&j->th, NULL, stdin_main, j) == 0;
		pthread_mutex_unlock(&a->mu);
		/* Without a pump the command reads EOF. */
		if (!j->th_started)
			agent_send(a, 'C', j->id, NULL, 0);
		return 0;
	}
	if (j->state == JOB_DONE) {   /* refused: the agent said why */
		size_t l = j->early_err.len;
		while (l && j->early_err.data[l - 1] == '\n')
			l--;
		snprintf(err, n, "the sandbox's agent did not start the command: %.*s", l ? (int)l : 15,
			 l ? j->early_err.data : "no reason given");
		pthread_mutex_unlock(&a->mu);
		return -EIO;
	}
	/* Dead link, or no answer in time: the job is given up (the reader
	 * passes over its frames from now on). */
	if (r == 0)
		r = -ENOTCONN;
	j->state = JOB_DONE;
	int fds[3] = {j->fd_in, j->fd_out, j->fd_err};
	j->fd_in = j->fd_out = j->fd_err = -1;
	pthread_mutex_unlock(&a->mu);
	for (int i = 0; i < 3; i++)
		close(fds[i]);
	snprintf(err, n, "the sandbox's agent did not answer: %s", strerror(-r));
	return r;
}

/* Sends one request frame and waits for its answer in q (registered under
 * a fresh id first, so the answer cannot come before we wait for it). */
static int agent_request(struct agent_remote *a, struct agent_req *q, char type, const void *data, size_t len)
{
	pthread_mutex_lock(&a->mu);
	if (a->dead) {
		pthread_mutex_unlock(&a->mu);
		return -ENOTCONN;
	}
	if (++a->next_id == 0)
		a->next_id = 1;
	q->id = a->next_id;
	q->next = a->reqs;
	a->reqs = q;
	pthread_mutex_unlock(&a->mu);
	int r = agent_send(a, type, q->id, data, len);
	int64_t deadline = ssh_now_ms() + a->timeout_ms;
	pthread_mutex_lock(&a->mu);
	while (r == 0 && !q->done && !a->dead) {
		if (ssh_cond_wait_until(&a->cv, &a->mu, deadline) == ETIMEDOUT && !q->done)
			r = -ETIMEDOUT;
	}
	if (r == 0 && !q->done)
		r = -ENOTCONN;
	for (struct agent_req **pp = &a->reqs; *pp; pp = &(*pp)->next) {
		if (*pp == q) {
			*pp = q->next;
			break;
		}
	}
	pthread_mutex_unlock(&a->mu);
	return r;
}

int agent_remote_fileop(struct agent_remote *a, const void *req, size_t len, char *reply, size_t cap, size_t *rlen)
{
	struct agent_req q = {.reply = reply, .cap = cap};
	int r = agent_request(a, &q, 'F', req, len);
	*rlen = r == 0 ? q.len : 0;
	return r;
}

int agent_remote_signal(struct agent_remote *a, int pid, int sig, int tree, char *err, size_t n)
{
	struct agent_req q = {0};
	pthread_mutex_lock(&a->mu);
	if (a->dead) {
		pthread_mutex_unlock(&a->mu);
		snprintf(err, n, "the sandbox's agent ended");
		return -ENOTCONN;
	}
	if (++a->next_id == 0)
		a->next_id = 1;
	q.id = a->next_id;
	q.next = a->reqs;
	a->reqs = &q;
	pthread_mutex_unlock(&a->mu);
	char text[64];
	snprintf(text, sizeof(text), "%d %d %d", pid, sig, tree ? 1 : 0);
	int r = agent_send(a, 'K', q.id, text, strlen(text));
	int64_t deadline = ssh_now_ms() + a->timeout_ms;
	pthread_mutex_lock(&a->mu);
	while (r == 0 && !q.done && !a->dead) {
		if (ssh_cond_wait_until(&a->cv, &a->mu, deadline) == ETIMEDOUT && !q.done)
			r = -ETIMEDOUT;
	}
	if (r == 0 && !q.done)
		r = -ENOTCONN;
	for (struct agent_req **pp = &a->reqs; *pp; pp = &(*pp)->next) {
		if (*pp == &q) {
			*pp = q.next;
			break;
		}
	}
	pthread_mutex_unlock(&a->mu);
	if (r < 0) {
		snprintf(err, n, "the sandbox's agent did not answer a signal: %s", strerror(-r));
		return r;
	}
	return q.n > 0 ? 0 : -ESRCH;
}

int agent_remote_busy(struct agent_remote *a)
{
	int busy = 0;
	pthread_mutex_lock(&a->mu);
	for (struct agent_job *j = a->jobs; j; j = j->next)
		busy |= j->state != JOB_DONE;
	pthread_mutex_unlock(&a->mu);
	return busy;
}

void agent_remote_close(struct agent_remote *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&a->mu);
	a->closing = 1;
	a->close_deadline = ssh_now_ms() + CLOSE_WAIT_MS;
	pthread_mutex_unlock(&a->mu);
	/* EOF on its stdin: the agent kills the sandbox's processes, exits,
	 * and the stream ends; the reader then ends every command. */
	pthread_mutex_lock(&a->wmu);
	a->bs->ops->send_eof(a->bs);
	pthread_mutex_unlock(&a->wmu);
	if (a->reader_started)
		pthread_join(a->reader, NULL);
	reap(a, 1);
	agent_free(a);
}

void agent_remote_args(const char *machine, char *buf, size_t n)
{
	/* The file operations' system calls (agent_remote.pl: fileop). */
	static const char *const calls[] = {"openat", "statx", "fchownat", "mknodat", "utimensat",
					    "utimensat_time64", "ftruncate", "fchdir", "fchmodat",
					    /* the owners' agent's operations as root/'s caller */
					    "mkdirat", "unlinkat", "renameat2", "linkat", "symlinkat",
					    "setfsuid", "setfsgid", "setgroups",
					    /* open files (handles), links and listings */
					    "pread64", "pwrite64", "fsync", "readlinkat", NULL};
	int l = snprintf(buf, n, "%d ", machine ? seer_syscall_nr(machine, "prctl") : -1);
	size_t start = (size_t)l;
	for (int i = 0; machine && calls[i] && (size_t)l < n; i++) {
		int nr = seer_syscall_nr(machine, calls[i]);
		if (nr >= 0)
			l += snprintf(buf + l, n - (size_t)l, "%s%s=%d", (size_t)l > start ? "," : "", calls[i], nr);
	}
	if ((size_t)l == start && (size_t)l < n)
		snprintf(buf + l, n - (size_t)l, "-");
}
