/*
 * bytestream_ssh.c - the byte stream interface (bytestream.h) over an SSH
 * session channel of sshconn.h: a thin layer that forwards each operation
 * to the channel and turns the channel's exit information into the text
 * on_closed gives.
 */
#ifndef _GNU_SOURCE /* the meson build defines it project-wide */
#define _GNU_SOURCE
#endif
#include "core/lib/bytestream.h"
#include "core/lib/sshconn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ssh_stream {
	struct bytestream base;  /* first: a struct bytestream * is a struct ssh_stream * */
	struct ssh_conn *conn;
	struct ssh_chan *ch;
	const struct bytestream_cbs *cbs;
	void *ud;
};

static int chan_data(void *ud, int stream, const char *buf, size_t len)
{
	struct ssh_stream *s = ud;
	return s->cbs->on_data(s->ud, stream, buf, len);
}

static void chan_closed(void *ud, int err, const struct ssh_chan_exit *ex)
{
	struct ssh_stream *s = ud;
	char why[200] = "";
	if (err < 0) {
		ssh_conn_error(s->conn, why, sizeof why);
		if (!why[0])
			snprintf(why, sizeof why, "connection lost");
	} else if (ex && ex->signal[0]) {
		snprintf(why, sizeof why, " (killed by signal %.32s)", ex->signal);
	} else if (ex && ex->has_status) {
		snprintf(why, sizeof why, " (exit status %d)", ex->status);
	}
	s->cbs->on_closed(s->ud, err, why);
}

static int ss_writev(struct bytestream *b, const struct iovec *iov, int iovcnt, int timeout_ms)
{
	return ssh_chan_writev(((struct ssh_stream *)b)->ch, iov, iovcnt, timeout_ms);
}

static int ss_send_eof(struct bytestream *b)
{
	return ssh_chan_send_eof(((struct ssh_stream *)b)->ch);
}

static void ss_release(struct bytestream *b)
{
	struct ssh_stream *s = (struct ssh_stream *)b;
	ssh_chan_release(s->ch);
	free(s);
}

static int ss_error(struct bytestream *b, char *buf, size_t len)
{
	return ssh_conn_error(((struct ssh_stream *)b)->conn, buf, len);
}

static void ss_resume(struct bytestream *b)
{
	ssh_chan_resume(((struct ssh_stream *)b)->ch);
}

static const struct bytestream_ops ssh_ops = {ss_writev, ss_send_eof, ss_release, ss_error, ss_resume};

int bytestream_ssh_open(struct ssh_conn *c, const char *request, const char *arg, const struct bytestream_cbs *cbs,
			void *ud, struct bytestream **out, char *err, size_t errlen)
{
	static const struct ssh_chan_cbs chan_cbs = {chan_data, NULL, chan_closed};
	struct ssh_stream *s = calloc(1, sizeof *s);
	int rc;
	*out = NULL;
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	s->base.ops = &ssh_ops;
	s->base.timeout_ms = ssh_conn_timeout_ms(c);
	s->conn = c;
	s->cbs = cbs;
	s->ud = ud;
	rc = ssh_chan_open(c, request, arg, &chan_cbs, s, &s->ch, err, errlen);
	if (rc) {
		free(s);
		return rc;
	}
	*out = &s->base;
	return 0;
}
