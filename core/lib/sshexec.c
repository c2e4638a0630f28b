/*
 * sshexec.c - remote command execution over an exec channel.
 *
 * The I/O thread's callbacks only append to per-stream buffers and bump an
 * event counter; user callbacks run on the caller's thread.  The counter
 * (rather than a bare condition signal) makes waiting race-free: a waiter
 * notes it before looking at the state and sleeps only while it is
 * unchanged.
 */
#ifndef _GNU_SOURCE /* the meson build defines it project-wide */
#define _GNU_SOURCE
#endif
#include "core/lib/sshexec.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* Buffered output above which the channel stops being read. */
#define EXEC_BUF_PAUSE (1024u * 1024u)

struct obuf {
	char *p;
	size_t len, cap;
};

struct ssh_exec {
	struct ssh_conn *conn;
	struct ssh_chan *ch;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t events;        /* bumped by every callback */
	int event_fd;           /* eventfd poked with every event, or -1 */
	struct obuf out[2];
	int paused;
	int oom;
	int closed, close_err;
	int reader_only;        /* writes do not deliver (ssh_exec_reader_only) */
	struct ssh_chan_exit exit;
	ssh_exec_output_fn fn;
	void *ud;
};

/* Under e->mu: something happened; wake whoever waits, by either means. */
static void bump(struct ssh_exec *e)
{
	e->events++;
	pthread_cond_broadcast(&e->cv);
	if (e->event_fd >= 0) {
		uint64_t one = 1;
		ssize_t w = write(e->event_fd, &one, sizeof one);
		(void)w; /* EAGAIN: the counter is already non-zero */
	}
}

static int on_data(void *ud, int stream, const char *buf, size_t len)
{
	struct ssh_exec *e = ud;
	struct obuf *o = &e->out[stream ? 1 : 0];
	int pause;

	pthread_mutex_lock(&e->mu);
	if (o->len + len > o->cap) {
		size_t ncap = o->cap ? o->cap : 64 * 1024;
		char *np;
		while (ncap < o->len + len)
			ncap *= 2;
		np = realloc(o->p, ncap);
		if (!np) {
			e->oom = 1; /* reported by the next pump */
			len = 0;
		} else {
			o->p = np;
			o->cap = ncap;
		}
	}
	if (len) {
		memcpy(o->p + o->len, buf, len);
		o->len += len;
	}
	pause = e->out[0].len + e->out[1].len >= EXEC_BUF_PAUSE;
	if (pause)
		e->paused = 1;
	bump(e);
	pthread_mutex_unlock(&e->mu);
	return pause;
}

static void on_drain(void *ud)
{
	struct ssh_exec *e = ud;
	pthread_mutex_lock(&e->mu);
	bump(e);
	pthread_mutex_unlock(&e->mu);
}

static void on_closed(void *ud, int err, const struct ssh_chan_exit *ex)
{
	struct ssh_exec *e = ud;
	pthread_mutex_lock(&e->mu);
	e->closed = 1;
	e->close_err = err;
	e->exit = *ex;
	bump(e);
	pthread_mutex_unlock(&e->mu);
}

int ssh_exec_start(struct ssh_conn *c, const char *command, ssh_exec_output_fn out,
				   void *ud, struct ssh_exec **ep, char *err, size_t errlen)
{
	static const struct ssh_chan_cbs cbs = { on_data, on_drain, on_closed };
	struct ssh_exec *e;
	int rc;

	*ep = NULL;
	e = calloc(1, sizeof *e);
	if (!e)
		return -ENOMEM;
	e->conn = c;
	e->fn = out;
	e->ud = ud;
	e->event_fd = -1;
	pthread_mutex_init(&e->mu, NULL);
	ssh_cond_init(&e->cv);
	rc = ssh_chan_open(c, "exec", command, &cbs, e, &e->ch, err, errlen);
	if (rc) {
		pthread_mutex_destroy(&e->mu);
		pthread_cond_destroy(&e->cv);
		free(e);
		return rc;
	}
	*ep = e;
	return 0;
}

/* Hands buffered output to the user callback (caller's thread). */
static int deliver(struct ssh_exec *e)
{
	struct obuf taken[2];
	int i, resume, oom;

	pthread_mutex_lock(&e->mu);
	taken[0] = e->out[0];
	taken[1] = e->out[1];
	memset(e->out, 0, sizeof e->out);
	resume = e->paused;
	e->paused = 0;
	oom = e->oom;
	e->oom = 0;
	pthread_mutex_unlock(&e->mu);
	if (resume)
		ssh_chan_resume(e->ch);
	for (i = 0; i < 2; i++) {
		if (taken[i].len && e->fn)
			e->fn(e->ud, i ? SSH_EXEC_STDERR : SSH_EXEC_STDOUT, taken[i].p,
				  taken[i].len);
		free(taken[i].p);
	}
	return oom ? -ENOMEM : 0;
}

static int64_t deadline_for(struct ssh_exec *e, int timeout_ms)
{
	if (timeout_ms < 0)
		return -1;
	return ssh_now_ms() + (timeout_ms ? timeout_ms
									  : ssh_conn_timeout_ms(e->conn));
}

/* Sleeps until a callback fired after `seen` or the deadline passed. */
static int wait_event(struct ssh_exec *e, uint64_t seen, int64_t deadline)
{
	int rc = 0;
	pthread_mutex_lock(&e->mu);
	while (e->events == seen && !rc) {
		if (ssh_cond_wait_until(&e->cv, &e->mu, deadline) == ETIMEDOUT &&
			e->events == seen)
			rc = -ETIMEDOUT;
	}
	pthread_mutex_unlock(&e->mu);
	return rc;
}

static uint64_t events_now(struct ssh_exec *e)
{
	uint64_t v;
	pthread_mutex_lock(&e->mu);
	v = e->events;
	pthread_mutex_unlock(&e->mu);
	return v;
}

int ssh_exec_write(struct ssh_exec *e, const void *buf, size_t len, int timeout_ms)
{
	const char *p = buf;
	int rc;

	while (len) {
		/* The timeout bounds a stall, not the whole transfer. */
		int64_t deadline = deadline_for(e, timeout_ms);
		uint64_t seen = events_now(e);
		ssize_t n = ssh_chan_try_write(e->ch, p, len);
		if (n < 0)
			return (int)n;
		p += n;
		len -= (size_t)n;
		rc = e->reader_only ? 0 : deliver(e);
		if (rc)
			return rc;
		if (len) {
			/* Queue full: wait for it to drain (or output to arrive,
			 * which we must consume or the remote may stop reading). */
			rc = wait_event(e, seen, deadline);
			if (rc)
				return rc;
		}
	}
	return 0;
}

void ssh_exec_reader_only(struct ssh_exec *e)
{
	e->reader_only = 1;
}

int ssh_exec_close_stdin(struct ssh_exec *e)
{
	return ssh_chan_send_eof(e->ch);
}

int ssh_exec_pump(struct ssh_exec *e)
{
	int closed, rc = deliver(e);
	if (rc)
		return rc;
	pthread_mutex_lock(&e->mu);
	closed = e->closed && !e->out[0].len && !e->out[1].len;
	pthread_mutex_unlock(&e->mu);
	return closed;
}

int ssh_exec_event_fd(struct ssh_exec *e)
{
	int fd;
	pthread_mutex_lock(&e->mu);
	if (e->event_fd < 0)
		e->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	fd = e->event_fd < 0 ? -errno : e->event_fd;
	pthread_mutex_unlock(&e->mu);
	return fd;
}

int ssh_exec_wait_event(struct ssh_exec *e, int timeout_ms)
{
	int64_t deadline = deadline_for(e, timeout_ms);
	uint64_t seen = events_now(e);
	int rc = ssh_exec_pump(e);
	if (rc)
		return rc;
	rc = wait_event(e, seen, deadline);
	return rc ? rc : ssh_exec_pump(e);
}

int ssh_exec_wait(struct ssh_exec *e, int timeout_ms, struct ssh_exec_status *st)
{
	int64_t deadline = deadline_for(e, timeout_ms);
	int rc;

	memset(st, 0, sizeof *st);
	for (;;) {
		uint64_t seen = events_now(e);
		rc = ssh_exec_pump(e);
		if (rc < 0)
			return rc;
		if (rc == 1)
			break;
		rc = wait_event(e, seen, deadline);
		if (rc)
			return rc;
	}
	pthread_mutex_lock(&e->mu);
	rc = e->close_err;
	if (rc == 0) {
		if (e->exit.signal[0]) {
			snprintf(st->signal, sizeof st->signal, "%s", e->exit.signal);
		} else if (e->exit.has_status) {
			st->exited = 1;
			st->exit_code = e->exit.status;
		}
	}
	pthread_mutex_unlock(&e->mu);
	return rc;
}

void ssh_exec_free(struct ssh_exec *e)
{
	if (!e)
		return;
	ssh_chan_release(e->ch);
	free(e->out[0].p);
	free(e->out[1].p);
	if (e->event_fd >= 0)
		close(e->event_fd);
	pthread_mutex_destroy(&e->mu);
	pthread_cond_destroy(&e->cv);
	free(e);
}

int ssh_exec_run(struct ssh_conn *c, const char *command, const void *in,
				 size_t inlen, ssh_exec_output_fn out, void *ud,
				 int timeout_ms, struct ssh_exec_status *st, char *err,
				 size_t errlen)
{
	struct ssh_exec *e;
	int rc = ssh_exec_start(c, command, out, ud, &e, err, errlen);
	if (rc)
		return rc;
	if (in && inlen)
		rc = ssh_exec_write(e, in, inlen, timeout_ms);
	if (rc == 0)
		rc = ssh_exec_close_stdin(e);
	if (rc == 0)
		rc = ssh_exec_wait(e, timeout_ms, st);
	if (rc && err && errlen)
		snprintf(err, errlen, "running '%s' failed: %s", command,
				 strerror(-rc));
	ssh_exec_free(e);
	return rc;
}
