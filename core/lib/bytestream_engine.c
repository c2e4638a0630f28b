/*
 * bytestream_engine.c - the byte stream interface (bytestream.h) over an
 * exec in a container of a Docker Engine API (engine.h): the exec is made
 * with stdin, stdout and stderr attached and started over a hijacked
 * connection (a unix socket, or TCP with TLS, so it crosses a network);
 * a reader thread of the stream's own demultiplexes the engine's framing
 * into on_data, and at the stream's end asks the engine for the exec's
 * exit code for on_closed.
 *
 * The reader polls the connection and a pipe of its own; release writes
 * to that pipe and joins the reader, so after it returns no callback runs.
 * A pause that on_data asks for holds the reader (so TCP's flow control
 * holds the exec back) until resume or release.
 */
#ifndef _GNU_SOURCE /* the meson build defines it project-wide */
#define _GNU_SOURCE
#endif
#include "core/lib/bytestream.h"
#include "core/lib/engine.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct engine_bs {
	struct bytestream base;  /* first: a struct bytestream * is a struct engine_bs * */
	struct engine *eng;
	struct engine_stream *st;
	const struct bytestream_cbs *cbs;
	void *ud;
	char exec_id[80];
	int wake[2];             /* release -> reader */
	pthread_t reader;
	pthread_mutex_t wlock;   /* one writer at a time: writev is one unit */
	pthread_mutex_t mu;      /* dead, dead_err, dead_msg */
	int dead, dead_err;
	int pause;               /* on_data asked for a pause, no resume since */
	unsigned resumes;        /* resume calls so far */
	int released;
	pthread_cond_t cv;       /* pause ended */
	char dead_msg[240];
};

static void out_piece(void *ud, int stream, const void *p, size_t n)
{
	struct engine_bs *s = ud;
	/* the engine's 1 (stdout) and 2 (stderr) are the interface's 0 and 1 */
	if (stream != 1 && stream != 2)
		return;
	pthread_mutex_lock(&s->mu);
	unsigned gen = s->resumes;
	pthread_mutex_unlock(&s->mu);
	if (s->cbs->on_data(s->ud, stream - 1, p, n)) {
		pthread_mutex_lock(&s->mu);
		s->pause = s->resumes == gen;   /* a resume meanwhile cancels it */
		pthread_mutex_unlock(&s->mu);
	}
}

/* Holds the reader while a pause lasts; -ECANCELED once released. */
static int hold(struct engine_bs *s)
{
	pthread_mutex_lock(&s->mu);
	while (s->pause && !s->released)
		pthread_cond_wait(&s->cv, &s->mu);
	int r = s->released ? -ECANCELED : 0;
	pthread_mutex_unlock(&s->mu);
	return r;
}

/* The exec's exit code once it ended; -errno when the engine cannot say. */
static int exit_code(struct engine_bs *s, int *code, char *err, size_t n)
{
	char path[160];
	snprintf(path, sizeof(path), "/exec/%s/json", s->exec_id);
	for (int i = 0; i < 50; i++) {
		struct json_object *rep = NULL, *run = NULL, *ec = NULL;
		int st = engine_call(s->eng, "GET", path, NULL, &rep, err, n);
		if (st != 200) {
			json_object_put(rep);
			return st < 0 ? st : -EIO;
		}
		json_object_object_get_ex(rep, "Running", &run);
		json_object_object_get_ex(rep, "ExitCode", &ec);
		int done = !json_object_get_boolean(run) && ec && !json_object_is_type(ec, json_type_null);
		if (done)
			*code = json_object_get_int(ec);
		json_object_put(rep);
		if (done)
			return 0;
		usleep(10000);
	}
	snprintf(err, n, "the exec still runs after its stream ended");
	return -ETIMEDOUT;
}

static void set_dead(struct engine_bs *s, int e, const char *msg)
{
	pthread_mutex_lock(&s->mu);
	if (!s->dead) {
		s->dead = 1;
		s->dead_err = e;
		snprintf(s->dead_msg, sizeof(s->dead_msg), "%s", msg);
	}
	pthread_mutex_unlock(&s->mu);
}

static void *reader_main(void *arg)
{
	struct engine_bs *s = arg;
	struct engine_demux d;
	char buf[65536], why[300];
	int rc = 0;
	engine_demux_init(&d, 0);
	for (;;) {
		ssize_t k = engine_stream_read(s->st, buf, sizeof(buf));
		if (k == -EAGAIN) {
			struct pollfd p[2] = {{engine_stream_fd(s->st), POLLIN, 0}, {s->wake[0], POLLIN, 0}};
			if (poll(p, 2, -1) < 0 && errno != EINTR) {
				rc = -errno;
				break;
			}
			if (p[1].revents) {
				rc = -ECANCELED;
				break;
			}
			continue;
		}
		if (k <= 0) {
			rc = k == 0 ? 0 : (int)k;
			break;
		}
		if (engine_demux_feed(&d, buf, (size_t)k, out_piece, s) < 0) {
			rc = -EPROTO;
			break;
		}
		if ((rc = hold(s)) < 0)
			break;
	}
	if (rc == -ECANCELED)
		return NULL;   /* released: no more callbacks */
	int err = 0, code = 0;
	char e2[200] = "";
	if (rc == 0 && !engine_demux_at_boundary(&d))
		rc = -EPROTO;
	if (rc == 0 && exit_code(s, &code, e2, sizeof(e2)) == 0) {
		snprintf(why, sizeof(why), " (exit status %d)", code);
	} else {
		err = rc < 0 && rc != -EPROTO ? rc : -ENOTCONN;
		snprintf(why, sizeof(why), "engine %s: the exec stream ended%s%s%s%s",
			 engine_endpoint(s->eng), rc == -EPROTO ? " inside a frame" : "",
			 rc < 0 && rc != -EPROTO ? " with " : "", rc < 0 && rc != -EPROTO ? strerror(-rc) : "",
			 e2[0] ? "; the engine does not answer: " : "");
		size_t l = strlen(why);
		snprintf(why + l, sizeof(why) - l, "%.150s", e2);
	}
	set_dead(s, err ? err : -ENOTCONN, err ? why : "the process ended");
	s->cbs->on_closed(s->ud, err, why);
	return NULL;
}

static int es_writev(struct bytestream *b, const struct iovec *iov, int iovcnt, int timeout_ms)
{
	struct engine_bs *s = (struct engine_bs *)b;
	int r = 0;
	(void)timeout_ms;   /* the stream's own timeout bounds each wait */
	pthread_mutex_lock(&s->mu);
	int dead = s->dead;
	pthread_mutex_unlock(&s->mu);
	if (dead)
		return -EPIPE;
	pthread_mutex_lock(&s->wlock);
	for (int i = 0; i < iovcnt && r == 0; i++) {
		if (!iov[i].iov_len)
			continue;
		ssize_t w = engine_stream_write(s->st, iov[i].iov_base, iov[i].iov_len);
		if (w < 0)
			r = w == -ETIMEDOUT ? -ETIMEDOUT : -EPIPE;
	}
	pthread_mutex_unlock(&s->wlock);
	return r;
}

static int es_send_eof(struct bytestream *b)
{
	struct engine_bs *s = (struct engine_bs *)b;
	pthread_mutex_lock(&s->wlock);
	int r = engine_stream_close_write(s->st);
	pthread_mutex_unlock(&s->wlock);
	return r;
}

static void es_release(struct bytestream *b)
{
	struct engine_bs *s = (struct engine_bs *)b;
	char one = 1;
	ssize_t k;
	pthread_mutex_lock(&s->mu);
	s->released = 1;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	do
		k = write(s->wake[1], &one, 1);
	while (k < 0 && errno == EINTR);
	if (pthread_equal(pthread_self(), s->reader))
		pthread_detach(s->reader);   /* not expected: the interface forbids it */
	else
		pthread_join(s->reader, NULL);
	engine_stream_free(s->st);
	close(s->wake[0]);
	close(s->wake[1]);
	pthread_mutex_destroy(&s->wlock);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	free(s);
}

static int es_error(struct bytestream *b, char *buf, size_t len)
{
	struct engine_bs *s = (struct engine_bs *)b;
	pthread_mutex_lock(&s->mu);
	int e = s->dead ? s->dead_err : 0;
	if (buf && len)
		snprintf(buf, len, "%s", s->dead ? s->dead_msg : "");
	pthread_mutex_unlock(&s->mu);
	return e;
}

static void es_resume(struct bytestream *b)
{
	struct engine_bs *s = (struct engine_bs *)b;
	pthread_mutex_lock(&s->mu);
	s->pause = 0;
	s->resumes++;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

static const struct bytestream_ops engine_ops = {es_writev, es_send_eof, es_release, es_error, es_resume};

int bytestream_engine_open(struct engine *e, const char *container, const char *const *argv,
			   const char *const *envp, const char *cwd, int timeout_ms, const struct bytestream_cbs *cbs,
			   void *ud, struct bytestream **out, char *err, size_t errlen)
{
	struct json_object *body = json_object_new_object(), *cmd = json_object_new_array(), *rep = NULL, *v;
	char path[300];
	*out = NULL;
	for (int i = 0; argv[i]; i++)
		json_object_array_add(cmd, json_object_new_string(argv[i]));
	json_object_object_add(body, "Cmd", cmd);
	if (envp) {
		struct json_object *env = json_object_new_array();
		for (int i = 0; envp[i]; i++)
			json_object_array_add(env, json_object_new_string(envp[i]));
		json_object_object_add(body, "Env", env);
	}
	if (cwd)
		json_object_object_add(body, "WorkingDir", json_object_new_string(cwd));
	json_object_object_add(body, "AttachStdin", json_object_new_boolean(1));
	json_object_object_add(body, "AttachStdout", json_object_new_boolean(1));
	json_object_object_add(body, "AttachStderr", json_object_new_boolean(1));
	snprintf(path, sizeof(path), "/containers/%s/exec", container);
	int st = engine_call(e, "POST", path, body, &rep, err, errlen);
	json_object_put(body);
	if (st != 201 || !json_object_object_get_ex(rep, "Id", &v)) {
		json_object_put(rep);
		if (st >= 0 && st != 201) {
			size_t l = strlen(err);
			snprintf(err + l, errlen - l, "%sengine %s: cannot make an exec in container %.64s (HTTP %d)",
				 l ? "; " : "", engine_endpoint(e), container, st);
		}
		return st < 0 ? st : st == 404 ? -ENOENT : st == 409 ? -ESRCH : -EIO;
	}
	struct engine_bs *s = calloc(1, sizeof(*s));
	if (!s) {
		json_object_put(rep);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	snprintf(s->exec_id, sizeof(s->exec_id), "%s", json_object_get_string(v));
	json_object_put(rep);
	s->base.ops = &engine_ops;
	s->base.timeout_ms = timeout_ms > 0 ? timeout_ms : 30000;
	s->eng = e;
	s->cbs = cbs;
	s->ud = ud;
	s->wake[0] = s->wake[1] = -1;
	pthread_mutex_init(&s->wlock, NULL);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	body = json_object_new_object();
	json_object_object_add(body, "Detach", json_object_new_boolean(0));
	json_object_object_add(body, "Tty", json_object_new_boolean(0));
	snprintf(path, sizeof(path), "/exec/%s/start", s->exec_id);
	int r = engine_hijack(e, path, body, &s->st, err, errlen);
	json_object_put(body);
	if (r == 0 && pipe2(s->wake, O_CLOEXEC) < 0) {
		r = -errno;
		snprintf(err, errlen, "pipe: %s", strerror(-r));
		engine_stream_free(s->st);
	}
	if (r == 0 && pthread_create(&s->reader, NULL, reader_main, s) != 0) {
		r = -EAGAIN;
		snprintf(err, errlen, "cannot start the exec stream's reader thread");
		engine_stream_free(s->st);
		close(s->wake[0]);
		close(s->wake[1]);
	}
	if (r < 0) {
		pthread_mutex_destroy(&s->wlock);
		pthread_mutex_destroy(&s->mu);
		pthread_cond_destroy(&s->cv);
		free(s);
		return r;
	}
	*out = &s->base;
	return 0;
}
