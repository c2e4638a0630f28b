/*
 * sshconn.h - one SSH connection per host, for the future seerfs `ssh`
 * provider.
 *
 * A connection is a TCP socket plus a libssh2 session that is owned by one
 * private I/O thread.  libssh2 sessions are not thread-safe and, in
 * non-blocking mode, a send that reported EAGAIN must be resumed by the very
 * same call before anything else is sent; funnelling every libssh2 call
 * through one thread is the simplest way to honour both rules while many
 * caller threads share the link.  The I/O thread multiplexes channels
 * (the SFTP subsystem of sftp.c, exec channels of sshexec.c); callers queue
 * outgoing bytes and receive incoming bytes through callbacks.
 *
 * Conventions: every function returning int returns 0 (or a count) on
 * success and a negative errno on failure.  Where a person may have to act
 * (unknown host key, rejected key, unreachable host) a message is written
 * into the caller's `err` buffer; SSH_ERRMSG_LEN bytes are always enough.
 *
 * Errors worth knowing:
 *   -EKEYREJECTED  host key unknown, changed or revoked (message has the
 *                  key's SHA256 fingerprint and what to do)
 *   -EACCES        user authentication failed
 *   -ETIMEDOUT     connect/handshake or an operation ran past its timeout
 *   -ENOTCONN      the connection is dead (closed, reset, timed out); every
 *                  request in flight fails with it promptly
 *
 * Reconnecting is the caller's business: close the dead object (after
 * releasing its channels) and open a new one.
 */
#ifndef SEER_SSHCONN_H
#define SEER_SSHCONN_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define SSH_CONN_DEFAULT_TIMEOUT_MS 30000
#define SSH_CONN_DEFAULT_KEEPALIVE_S 15
#define SSH_CONN_DEFAULT_KEEPALIVE_COUNT 3
/* Large enough for every message this module writes. */
#define SSH_ERRMSG_LEN 1024

struct ssh_conn;
struct ssh_chan;


struct ssh_conn_opts {
	const char *host;          /* DNS name or address */
	int port;                  /* 0 means 22 */
	const char *user;
	const char *identity_file; /* private key file; NULL: agent only */
	const char *passphrase;    /* for identity_file; may be NULL; never logged */
	int use_agent;             /* also try ssh-agent ($SSH_AUTH_SOCK) */
	const char *known_hosts;   /* required; checked strictly */
	int timeout_ms;            /* per operation; 0 means 30000 */
	int connect_timeout_ms;    /* TCP connect + handshake + auth; 0: timeout_ms */
	int keepalive_s;           /* idle keepalive interval; 0: 15, <0: off */
	int keepalive_count;       /* unanswered intervals before the link is
								  declared dead; 0: 3 */
};

/* Connects, verifies the host key against opts->known_hosts, authenticates
 * and starts the I/O thread.  On failure *out is NULL and err explains. */
int ssh_conn_open(const struct ssh_conn_opts *opts, struct ssh_conn **out,
				  char *err, size_t errlen);

/* Stops the I/O thread and frees the session.  Channels still attached get
 * their on_closed callback with -ENOTCONN; they must still be released with
 * ssh_chan_release (which is then cheap).  Safe on a dead connection. */
void ssh_conn_close(struct ssh_conn *c);

/* Declares the link dead (e.g. after an operation timed out against a
 * frozen server): everything in flight and every later call fails promptly
 * with -ENOTCONN, so the caller can close this object and reconnect. */
void ssh_conn_abort(struct ssh_conn *c, const char *why);

/* 1 while the link is usable, 0 once it died or was closed. */
int ssh_conn_alive(struct ssh_conn *c);

/* 0 if alive, else the negative errno it died with; copies the reason. */
int ssh_conn_error(struct ssh_conn *c, char *buf, size_t len);

int ssh_conn_timeout_ms(const struct ssh_conn *c);

/* "SHA256:..." of the verified host key (as OpenSSH prints it). */
const char *ssh_conn_fingerprint(const struct ssh_conn *c);

/* Counters for diagnostics and benchmarks (bytes on the TCP socket). */
void ssh_conn_stats(struct ssh_conn *c, uint64_t *tx_bytes, uint64_t *rx_bytes);

/* ---- channels: the layer sftp.c and sshexec.c are built on ---- */

struct ssh_chan_exit {
	int has_status;   /* the remote reported an exit status */
	int status;
	char signal[32];  /* non-empty if it died of a signal, e.g. "TERM" */
};

/*
 * Callbacks run on the I/O thread.  They must be quick and must not block
 * on this connection (no waiting ssh_* call inside them), or every channel
 * of the connection stalls.  After ssh_chan_release returns none of them
 * runs again.
 */
struct ssh_chan_cbs {
	/* stream 0 is stdout, 1 is stderr.  Return nonzero to stop reading this
	 * channel (SSH flow control then pushes back on the remote) until
	 * ssh_chan_resume. */
	int (*on_data)(void *ud, int stream, const char *buf, size_t len);
	/* The outgoing queue drained below its low-water mark (optional). */
	void (*on_drain)(void *ud);
	/* Called once: err 0 when the remote closed the channel normally (exit
	 * information filled in when the remote sent any), or a negative errno
	 * when the connection died. */
	void (*on_closed)(void *ud, int err, const struct ssh_chan_exit *ex);
};

/*
 * Opens a "session" channel and starts `request` on it: ("subsystem",
 * "sftp"), ("exec", command) or ("shell", NULL).  Waits up to the
 * connection's timeout.  Callbacks may fire before this returns.
 */
int ssh_chan_open(struct ssh_conn *c, const char *request, const char *arg,
				  const struct ssh_chan_cbs *cbs, void *ud, struct ssh_chan **out,
				  char *err, size_t errlen);

/* Queues the concatenation of iov as one unit (never interleaved with other
 * threads' writes).  Blocks while the channel's queue is over its high-water
 * mark, up to timeout_ms (<= 0: the connection's timeout). */
int ssh_chan_writev(struct ssh_chan *ch, const struct iovec *iov, int iovcnt,
					int timeout_ms);

/* Non-blocking: queues as much of buf as the high-water mark allows and
 * returns that count (possibly 0), or a negative errno. */
ssize_t ssh_chan_try_write(struct ssh_chan *ch, const void *buf, size_t len);

/* Sends EOF (end of stdin) once everything queued before it is sent. */
int ssh_chan_send_eof(struct ssh_chan *ch);

/* Undoes a pause requested by on_data's return value.  A resume issued
 * while on_data is still running cancels the pause that call asks for. */
void ssh_chan_resume(struct ssh_chan *ch);

/* Detaches the caller: after return no callback runs; the I/O thread closes
 * and frees the channel in the background.  Must not be called from a
 * callback. */
void ssh_chan_release(struct ssh_chan *ch);

struct ssh_conn *ssh_chan_conn(struct ssh_chan *ch);

/* Helpers shared by the modules on top. */
int64_t ssh_now_ms(void);
/* Condition variables on CLOCK_MONOTONIC, so timeouts survive clock jumps. */
int ssh_cond_init(pthread_cond_t *cv);
/* Waits until signalled or deadline_ms (ssh_now_ms clock) passed; returns
 * ETIMEDOUT (positive, like pthreads) in the latter case.  deadline_ms < 0
 * waits without limit. */
int ssh_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu,
						int64_t deadline_ms);
/* Human-readable name of an errno value, e.g. "ENOTCONN". */
const char *ssh_errno_name(int e);

#endif /* SEER_SSHCONN_H */
