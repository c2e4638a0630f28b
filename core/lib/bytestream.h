/*
 * bytestream.h - one duplex byte stream to a remote process, whatever
 * carries it: an SSH channel (an "sftp" subsystem, an exec) or a Docker
 * Engine API hijacked stream (an exec's stdin/stdout/stderr over a unix
 * socket or TLS). Protocol clients written on this interface (the SFTP
 * client, sftp.c) run over either without knowing which.
 *
 * A stream is opened with the callbacks of its user already in place, so
 * no byte can arrive before they are: the opener (bytestream_ssh_open,
 * bytestream_engine_open) takes them. The callbacks run on the stream's
 * I/O thread; they must be quick and must not wait on the stream. After
 * release returns none of them runs again (release must not be called
 * from a callback).
 *
 * Functions return 0 or a negative errno; writev's -EPIPE means the stream
 * is gone (on_closed has run or is about to).
 */
#ifndef SEER_BYTESTREAM_H
#define SEER_BYTESTREAM_H

#include <stddef.h>
#include <sys/uio.h>

struct bytestream;

struct bytestream_cbs {
	/* stream 0 is the process's stdout, 1 its stderr. Returns 0, or
	 * nonzero to stop reading the stream (the carrier's flow control
	 * then holds the process back) until ops->resume. */
	int (*on_data)(void *ud, int stream, const char *buf, size_t len);
	/* Called once: err 0 when the process ended its output (why says how
	 * it ended when the carrier knows: " (exit status 1)"), or a negative
	 * errno when the carrier died (why says what happened). */
	void (*on_closed)(void *ud, int err, const char *why);
};

struct bytestream_ops {
	/* Sends the concatenation of iov as one unit, never interleaved with
	 * another thread's; waits up to timeout_ms (<= 0: the carrier's). */
	int (*writev)(struct bytestream *s, const struct iovec *iov, int iovcnt, int timeout_ms);
	/* End of the process's stdin, after everything written before. */
	int (*send_eof)(struct bytestream *s);
	/* Detaches the user and frees s: after return no callback runs. */
	void (*release)(struct bytestream *s);
	/* Why the carrier failed, into buf; 0 while it is usable, else the
	 * errno it died with. */
	int (*error)(struct bytestream *s, char *buf, size_t len);
	/* Reads again after on_data asked for a pause (a resume while that
	 * on_data still runs cancels its pause). */
	void (*resume)(struct bytestream *s);
};

struct bytestream {
	const struct bytestream_ops *ops;
	int timeout_ms;   /* the carrier's request timeout */
};

/* Opens a stream with cbs/ud: the form a protocol client takes, so that
 * it can create its state before any byte arrives. */
typedef int (*bytestream_open_fn)(void *arg, const struct bytestream_cbs *cbs, void *ud, struct bytestream **out,
				  char *err, size_t errlen);

struct ssh_conn;
/* An SSH session channel started with (request, arg) (ssh_chan_open):
 * ("subsystem", "sftp") or ("exec", command). */
int bytestream_ssh_open(struct ssh_conn *c, const char *request, const char *arg, const struct bytestream_cbs *cbs,
			void *ud, struct bytestream **out, char *err, size_t errlen);

struct engine;
/* An exec in a container of an engine (core/lib/engine.h): POST
 * /containers/CONTAINER/exec with argv, the environment envp and the
 * working directory cwd (NULL: the container's) (stdin, stdout, stderr
 * attached, no tty), then its hijacked start; a reader thread of the
 * stream demultiplexes the engine's framing into on_data. When the stream
 * ends, the exec's exit code is asked for: on_closed then gets err 0 and
 * why exactly " (exit status N)". timeout_ms is the stream's request
 * timeout (writes wait up to the engine's own). envp goes to this exec
 * only, never to the container's configuration. */
int bytestream_engine_open(struct engine *e, const char *container, const char *const *argv,
			   const char *const *envp, const char *cwd, int timeout_ms, const struct bytestream_cbs *cbs,
			   void *ud, struct bytestream **out, char *err, size_t errlen);

#endif /* SEER_BYTESTREAM_H */
