/*
 * sshconn.c - one SSH connection per host, owned by a single I/O thread.
 *
 * What it does: TCP connect, SSH handshake, strict host-key verification
 * against a known_hosts file, public-key authentication (identity file or
 * ssh-agent), keepalives, and a private I/O thread that multiplexes the
 * channels used by sftp.c and sshexec.c.
 *
 * Why it is built this way (libssh2 1.10 facts the design depends on):
 *  - A LIBSSH2_SESSION is not thread-safe, so only one thread may call into
 *    it.  Here that is the I/O thread (after setup, which runs on the caller
 *    thread before the I/O thread exists).
 *  - In non-blocking mode a send that returned EAGAIN has a half-written
 *    packet parked in the transport layer.  The next sending call must be
 *    the very same libssh2 function with the same stable buffers; any other
 *    send fails with LIBSSH2_ERROR_BAD_USE (see send_existing() in
 *    transport.c).  We detect the parked packet with the OUTBOUND bit of
 *    libssh2_session_block_directions() and then retry only that task.
 *  - Some libssh2 functions build their packet on the stack
 *    (channel_send_eof), so the retry must come from the same call chain at
 *    the same stack depth: every libssh2 I/O call is made from io_exec(),
 *    which has exactly one call site in io_main().
 *  - Reading one channel drains the socket and parks packets for the other
 *    channels inside libssh2, where poll() cannot see them.  The loop
 *    therefore works in rounds over all channels and only blocks in poll()
 *    after a round in which nothing moved and no byte arrived (counted by
 *    our own recv callback).
 *  - Global-request replies are never consumed by libssh2 and would pile up
 *    in its packet list, so keepalives are sent with want_reply=0; a dead
 *    peer is then detected by TCP (SO_KEEPALIVE and TCP_USER_TIMEOUT), and
 *    callers are protected by their own per-operation deadlines.
 */
#ifndef _GNU_SOURCE /* the meson build defines it project-wide */
#define _GNU_SOURCE
#endif
#include "core/lib/sshconn.h"

#include <errno.h>
#include <fcntl.h>
#include <libssh2.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Receive window and packet size we offer per channel.  8 MiB keeps
 * 32 x 64 KiB SFTP reads (plus headers) in flight without ever waiting on a
 * window adjustment; 32 KiB is the packet size every server accepts. */
#define CHAN_WINDOW (8u * 1024u * 1024u)
#define CHAN_PACKET 32768u
#define RXBUF_LEN (256u * 1024u)
/* Outgoing queue per channel: writers block above HIGH; on_drain fires
 * below LOW. */
#define OQ_HIGH (8u * 1024u * 1024u)
#define OQ_LOW (2u * 1024u * 1024u)
/* Fairness: how many times one task may run back to back in a round. */
#define TASK_BUDGET 16
/* How long the I/O thread sleeps in poll() when idle (keepalive clock). */
#define IDLE_POLL_MS 1000
/* How long ssh_conn_close lets released channels finish closing. */
#define SHUTDOWN_GRACE_MS 300

/* The only process-wide mutable state of this module. */
static struct sshconn_global_ctx {
	pthread_once_t init_once; /* libssh2_init() must run once, unthreaded */
	int init_rc;
} sshconn_global = { PTHREAD_ONCE_INIT, 0 };

enum chan_state {
	CH_NEW,      /* queued, not yet asked for */
	CH_OPENING,  /* libssh2_channel_open_ex in progress */
	CH_STARTING, /* process_startup (exec/subsystem) in progress */
	CH_OPEN,
	CH_CLOSING,  /* libssh2_channel_free (close + free) in progress */
	CH_DONE      /* libssh2 side gone; struct waits for release/sweep */
};

struct out_chunk {
	struct out_chunk *next;
	size_t len, off;
	unsigned char data[];
};

struct ssh_chan {
	struct ssh_conn *conn;
	struct ssh_chan *next;   /* conn->chans; only the I/O thread unlinks */
	LIBSSH2_CHANNEL *lch;    /* I/O thread only */
	enum chan_state state;
	char *req, *arg;
	struct ssh_chan_cbs cbs;
	void *ud;
	int attached;            /* the user has not released it; sweep()
								frees only detached channels */
	int detaching;           /* release in progress: no new callbacks */
	int notified;            /* on_closed delivered */
	int cb_busy;             /* a callback runs right now */
	int open_done, open_err;
	char open_msg[256];
	struct out_chunk *oq_head, *oq_tail;
	size_t oq_bytes;
	int eof_req, eof_sent;
	int rx_eof[2];
	int rx_paused;
	unsigned resume_seq;     /* bumped by ssh_chan_resume */
	int closed;              /* remote closed or link died: writes refused */
	struct ssh_chan_exit exit;
};

enum task_kind {
	T_NONE, T_OPEN, T_STARTUP, T_WRITE, T_EOF, T_READ0, T_READ1,
	T_WAITCLOSE, T_FREE, T_CHAN_KINDS, T_KEEPALIVE = T_CHAN_KINDS
};

/* One libssh2 call to make; filled under the lock, run without it. */
struct io_task {
	enum task_kind kind;
	struct ssh_chan *ch;
	LIBSSH2_CHANNEL *lch;
	const unsigned char *wbuf;
	size_t wlen;
	int runs;
	/* results */
	ssize_t rc;
	LIBSSH2_CHANNEL *opened;
	int outbound_pending;
	char msg[200];
};

struct ssh_conn {
	pthread_mutex_t mu;
	pthread_cond_t cv;        /* open results, queue space, callbacks done */
	int refs;                 /* user + one per channel struct */
	int sock;
	int wake_rd, wake_wr, wake_pending;
	LIBSSH2_SESSION *sess;
	pthread_t io;
	int io_started, io_exited;
	int shutdown, dead, dead_err;
	char dead_msg[256];
	struct ssh_chan *chans, *chans_tail;
	struct ssh_chan *opening;        /* the one channel in CH_OPENING, if any */
	int writers_waiting;
	int timeout_ms, keepalive_s, keepalive_count;
	char hostdesc[300];       /* "host" or "[host]:port", as in known_hosts */
	char fingerprint[80];
	/* Touched by the send/recv callbacks, i.e. only by the thread that is
	 * currently allowed to use the session; read elsewhere atomically. */
	uint64_t tx_bytes, rx_bytes;
	int64_t last_tx_ms;
	int sock_forced_dead;     /* teardown: make callbacks fail fast */
	unsigned char *rxbuf;     /* I/O thread scratch for channel reads */
};

/* ------------------------------------------------------------------ */
/* small helpers                                                        */

int64_t ssh_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ssh_cond_init(pthread_cond_t *cv)
{
	pthread_condattr_t a;
	int rc = pthread_condattr_init(&a);
	if (rc)
		return -rc;
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	rc = pthread_cond_init(cv, &a);
	pthread_condattr_destroy(&a);
	return -rc;
}

int ssh_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu,
						int64_t deadline_ms)
{
	struct timespec ts;
	if (deadline_ms < 0)
		return pthread_cond_wait(cv, mu);
	ts.tv_sec = deadline_ms / 1000;
	ts.tv_nsec = (deadline_ms % 1000) * 1000000;
	return pthread_cond_timedwait(cv, mu, &ts);
}

const char *ssh_errno_name(int e)
{
	if (e < 0)
		e = -e;
	switch (e) {
	case 0: return "OK";
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case EIO: return "EIO";
	case EBADF: return "EBADF";
	case ENOMEM: return "ENOMEM";
	case EACCES: return "EACCES";
	case EEXIST: return "EEXIST";
	case ENOTDIR: return "ENOTDIR";
	case EISDIR: return "EISDIR";
	case EINVAL: return "EINVAL";
	case ENOSPC: return "ENOSPC";
	case EROFS: return "EROFS";
	case EPIPE: return "EPIPE";
	case ENOTEMPTY: return "ENOTEMPTY";
	case ELOOP: return "ELOOP";
	case EPROTO: return "EPROTO";
	case EBADMSG: return "EBADMSG";
	case ENOTSUP: return "ENOTSUP";
	case ECONNREFUSED: return "ECONNREFUSED";
	case ECONNRESET: return "ECONNRESET";
	case ECONNABORTED: return "ECONNABORTED";
	case ENOTCONN: return "ENOTCONN";
	case ETIMEDOUT: return "ETIMEDOUT";
	case EHOSTUNREACH: return "EHOSTUNREACH";
	case ENETUNREACH: return "ENETUNREACH";
	case EKEYREJECTED: return "EKEYREJECTED";
	case EDQUOT: return "EDQUOT";
	case EBUSY: return "EBUSY";
	case ENODEV: return "ENODEV";
	case EXDEV: return "EXDEV";
	case EMSGSIZE: return "EMSGSIZE";
	case ENAMETOOLONG: return "ENAMETOOLONG";
	default: return "E?";
	}
}

static void seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* libssh2's text for its last error; it never contains key material. */
static const char *l2_msg(LIBSSH2_SESSION *s)
{
	char *m = NULL;
	if (!s)
		return "no session";
	libssh2_session_last_error(s, &m, NULL, 0);
	return m && *m ? m : "unknown libssh2 error";
}

/* Maps a libssh2 error code to a negative errno. */
static int l2_errno(int rc)
{
	switch (rc) {
	case LIBSSH2_ERROR_ALLOC:
		return -ENOMEM;
	case LIBSSH2_ERROR_TIMEOUT:
	case LIBSSH2_ERROR_SOCKET_TIMEOUT:
		return -ETIMEDOUT;
	case LIBSSH2_ERROR_SOCKET_NONE:
	case LIBSSH2_ERROR_SOCKET_SEND:
	case LIBSSH2_ERROR_SOCKET_RECV:
	case LIBSSH2_ERROR_SOCKET_DISCONNECT:
		return -ENOTCONN;
	case LIBSSH2_ERROR_CHANNEL_FAILURE:
	case LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED:
		return -ECONNREFUSED;
	case LIBSSH2_ERROR_CHANNEL_CLOSED:
	case LIBSSH2_ERROR_CHANNEL_EOF_SENT:
		return -EPIPE;
	default:
		return -EIO;
	}
}

/* Errors that concern one channel only; everything else kills the link. */
static int l2_channel_level(int rc)
{
	return rc == LIBSSH2_ERROR_CHANNEL_FAILURE ||
		   rc == LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED ||
		   rc == LIBSSH2_ERROR_CHANNEL_CLOSED ||
		   rc == LIBSSH2_ERROR_CHANNEL_EOF_SENT ||
		   rc == LIBSSH2_ERROR_CHANNEL_UNKNOWN ||
		   rc == LIBSSH2_ERROR_CHANNEL_WINDOW_EXCEEDED ||
		   rc == LIBSSH2_ERROR_CHANNEL_PACKET_EXCEEDED;
}

static void b64_encode(const unsigned char *in, size_t n, int pad,
					   char *out, size_t outlen)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0, i;
	for (i = 0; i + 2 < n && o + 4 < outlen; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 |
					 in[i + 2];
		out[o++] = tab[v >> 18 & 63];
		out[o++] = tab[v >> 12 & 63];
		out[o++] = tab[v >> 6 & 63];
		out[o++] = tab[v & 63];
	}
	if (i < n && o + 4 < outlen) {
		uint32_t v = (uint32_t)in[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)in[i + 1] << 8;
		out[o++] = tab[v >> 18 & 63];
		out[o++] = tab[v >> 12 & 63];
		if (i + 1 < n)
			out[o++] = tab[v >> 6 & 63];
		else if (pad)
			out[o++] = '=';
		if (pad)
			out[o++] = '=';
	}
	out[o < outlen ? o : outlen - 1] = '\0';
}

static void wake_io(struct ssh_conn *c)
{
	/* Coalesced: one byte in the pipe is enough to end the poll. */
	if (!c->wake_pending && c->wake_wr >= 0) {
		char b = 1;
		c->wake_pending = 1;
		if (write(c->wake_wr, &b, 1) < 0) {
			/* pipe full means a wake is pending anyway */
		}
	}
	pthread_cond_broadcast(&c->cv);
}

/* ------------------------------------------------------------------ */
/* socket callbacks: count traffic, never raise SIGPIPE                 */

static ssize_t cb_send(libssh2_socket_t fd, const void *buf, size_t len,
					   int flags, void **abstract)
{
	struct ssh_conn *c = *abstract;
	ssize_t n;
	if (c->sock_forced_dead)
		return -ENOTCONN;
	n = send(fd, buf, len, flags | MSG_NOSIGNAL);
	if (n < 0)
		return -errno;
	__atomic_add_fetch(&c->tx_bytes, (uint64_t)n, __ATOMIC_RELAXED);
	__atomic_store_n(&c->last_tx_ms, ssh_now_ms(), __ATOMIC_RELAXED);
	return n;
}

static ssize_t cb_recv(libssh2_socket_t fd, void *buf, size_t len, int flags,
					   void **abstract)
{
	struct ssh_conn *c = *abstract;
	ssize_t n;
	if (c->sock_forced_dead)
		return -ENOTCONN;
	n = recv(fd, buf, len, flags);
	if (n < 0)
		return -errno;
	__atomic_add_fetch(&c->rx_bytes, (uint64_t)n, __ATOMIC_RELAXED);
	return n;
}

/* ------------------------------------------------------------------ */
/* setup: TCP, handshake, host key, authentication                      */

static void global_init(void)
{
	sshconn_global.init_rc = libssh2_init(0);
}

static int tcp_connect(const char *host, int port, int64_t deadline,
					   char *err, size_t errlen)
{
	struct addrinfo hints, *res = NULL, *ai;
	char portstr[16];
	int rc, fd = -1, last = ECONNREFUSED;

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(portstr, sizeof portstr, "%d", port);
	rc = getaddrinfo(host, portstr, &hints, &res);
	if (rc) {
		seterr(err, errlen, "cannot resolve host '%s': %s", host,
			   gai_strerror(rc));
		return -EHOSTUNREACH;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		struct pollfd p;
		int soerr = 0;
		socklen_t sl = sizeof soerr;
		int64_t left;

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
					SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			last = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno != EINPROGRESS) {
			last = errno;
			close(fd);
			fd = -1;
			continue;
		}
		left = deadline - ssh_now_ms();
		p.fd = fd;
		p.events = POLLOUT;
		rc = poll(&p, 1, left > 0 ? (int)left : 0);
		if (rc == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0
			&& soerr == 0)
			break;
		last = rc == 0 ? ETIMEDOUT : (soerr ? soerr : errno);
		close(fd);
		fd = -1;
		if (rc == 0)
			break; /* out of time: do not try further addresses */
	}
	freeaddrinfo(res);
	if (fd < 0) {
		seterr(err, errlen, "cannot connect to %s port %d: %s%s", host, port,
			   strerror(last),
			   last == ECONNREFUSED ? " (is sshd running and listening on "
									  "that port?)" :
			   last == ETIMEDOUT ? " (host down or filtered by a firewall?)"
								 : "");
		return -last;
	}
	return fd;
}

static void tune_socket(int fd, int keepalive_s, int keepalive_count)
{
	int one = 1;
	/* SFTP requests are small and latency bound. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (keepalive_s > 0) {
		int idle = keepalive_s, cnt = keepalive_count;
		unsigned int ut = (unsigned int)keepalive_s *
						  (unsigned int)keepalive_count * 1000u;
		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &idle, sizeof idle);
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
		/* Unacknowledged data (our keepalives included) for this long means
		 * the peer is gone: the kernel then fails the socket, which turns
		 * into -ENOTCONN for every waiter. */
		setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof ut);
	}
}

struct hk_type {
	const char *method;   /* SSH host key algorithm name */
	int kh_key;           /* LIBSSH2_KNOWNHOST_KEY_* */
	const char *human;    /* as OpenSSH prints it */
	const char *keyscan;  /* ssh-keyscan -t argument */
};

static const struct hk_type hk_types[] = {
	{ "ssh-ed25519", LIBSSH2_KNOWNHOST_KEY_ED25519, "ED25519", "ed25519" },
	{ "ecdsa-sha2-nistp256", LIBSSH2_KNOWNHOST_KEY_ECDSA_256, "ECDSA",
	  "ecdsa" },
	{ "ecdsa-sha2-nistp384", LIBSSH2_KNOWNHOST_KEY_ECDSA_384, "ECDSA",
	  "ecdsa" },
	{ "ecdsa-sha2-nistp521", LIBSSH2_KNOWNHOST_KEY_ECDSA_521, "ECDSA",
	  "ecdsa" },
	{ "ssh-rsa", LIBSSH2_KNOWNHOST_KEY_SSHRSA, "RSA", "rsa" },
	{ "ssh-dss", LIBSSH2_KNOWNHOST_KEY_SSHDSS, "DSA", "dsa" },
};
#define N_HK_TYPES (sizeof hk_types / sizeof hk_types[0])

static const struct hk_type *hk_from_session_type(int t)
{
	switch (t) {
	case LIBSSH2_HOSTKEY_TYPE_ED25519: return &hk_types[0];
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_256: return &hk_types[1];
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_384: return &hk_types[2];
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_521: return &hk_types[3];
	case LIBSSH2_HOSTKEY_TYPE_RSA: return &hk_types[4];
	case LIBSSH2_HOSTKEY_TYPE_DSS: return &hk_types[5];
	default: return NULL;
	}
}

struct kh_file {
	LIBSSH2_KNOWNHOSTS *kh;
	char **revoked;          /* base64 keys marked @revoked */
	size_t nrevoked;
};

static void kh_file_free(struct kh_file *k)
{
	size_t i;
	if (k->kh)
		libssh2_knownhost_free(k->kh);
	for (i = 0; i < k->nrevoked; i++)
		free(k->revoked[i]);
	free(k->revoked);
	memset(k, 0, sizeof *k);
}

/* Reads known_hosts line by line (rather than libssh2_knownhost_readfile,
 * which gives up on the first line it cannot parse, e.g. an unsupported key
 * type or an @cert-authority marker). */
static int kh_load(LIBSSH2_SESSION *sess, const char *path, struct kh_file *k,
				   char *err, size_t errlen)
{
	FILE *f;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	memset(k, 0, sizeof *k);
	k->kh = libssh2_knownhost_init(sess);
	if (!k->kh) {
		seterr(err, errlen, "out of memory reading known_hosts");
		return -ENOMEM;
	}
	f = fopen(path, "re");
	if (!f) {
		int e = errno;
		seterr(err, errlen, "cannot read known_hosts file '%s': %s. Create "
			   "it with the server's verified host key (for example with "
			   "ssh-keyscan, then compare the fingerprint out of band).",
			   path, strerror(e));
		kh_file_free(k);
		return -e;
	}
	while ((n = getline(&line, &cap, f)) >= 0) {
		char *p = line;
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p || *p == '#')
			continue;
		if (*p == '@') {
			/* "@revoked hosts keytype base64": remember the key; other
			 * markers (@cert-authority) are not supported and skipped. */
			char marker[32], hosts[1024], type[64], key[8192];
			if (sscanf(p, "%31s %1023s %63s %8191s", marker, hosts, type,
					   key) == 4 && strcmp(marker, "@revoked") == 0) {
				char **nr = realloc(k->revoked,
									(k->nrevoked + 1) * sizeof *nr);
				if (nr) {
					k->revoked = nr;
					nr[k->nrevoked] = strdup(key);
					if (nr[k->nrevoked])
						k->nrevoked++;
				}
			}
			continue;
		}
		/* Lines libssh2 cannot parse are ignored, as OpenSSH ignores
		 * lines it does not understand. */
		(void)libssh2_knownhost_readline(k->kh, p, strlen(p),
										 LIBSSH2_KNOWNHOST_FILE_OPENSSH);
	}
	free(line);
	fclose(f);
	return 0;
}

/* Prefer the host key algorithms known_hosts already has for this host, as
 * OpenSSH does; libssh2's default order (ECDSA first) would otherwise make
 * a host known by its ED25519 key look unknown. */
static void set_hostkey_prefs(LIBSSH2_SESSION *sess, struct kh_file *k,
							  const char *hostdesc)
{
	char pref[512] = "";
	int known[N_HK_TYPES];
	size_t i;
	int pass;

	for (i = 0; i < N_HK_TYPES; i++) {
		/* A key that can never match: MISMATCH then means "this host has a
		 * key of this type", NOTFOUND means it has none. */
		known[i] = libssh2_knownhost_checkp(k->kh, hostdesc, -1, "AAAA", 4,
											LIBSSH2_KNOWNHOST_TYPE_PLAIN |
											LIBSSH2_KNOWNHOST_KEYENC_BASE64 |
											hk_types[i].kh_key, NULL)
				   == LIBSSH2_KNOWNHOST_CHECK_MISMATCH;
	}
	for (pass = 1; pass >= 0; pass--) {
		for (i = 0; i < N_HK_TYPES; i++) {
			if (known[i] != pass)
				continue;
			if (*pref)
				strcat(pref, ",");
			strcat(pref, hk_types[i].method);
		}
	}
	/* Unsupported names are dropped by libssh2; failure keeps defaults. */
	(void)libssh2_session_method_pref(sess, LIBSSH2_METHOD_HOSTKEY, pref);
}

static int verify_hostkey(struct ssh_conn *c, struct kh_file *k, const char *host,
						  int port, const char *khpath, char *err,
						  size_t errlen)
{
	size_t klen = 0;
	int ktype = 0, r;
	size_t i;
	const char *key = libssh2_session_hostkey(c->sess, &klen, &ktype);
	const char *hash = libssh2_hostkey_hash(c->sess,
											LIBSSH2_HOSTKEY_HASH_SHA256);
	const struct hk_type *t = hk_from_session_type(ktype);
	char fp64[64], keyb64[4096];
	const char *human = t ? t->human : "unknown-type";

	if (!key || !hash) {
		seterr(err, errlen, "server at %s sent no usable host key",
			   c->hostdesc);
		return -EPROTO;
	}
	b64_encode((const unsigned char *)hash, 32, 0, fp64, sizeof fp64);
	snprintf(c->fingerprint, sizeof c->fingerprint, "SHA256:%s", fp64);
	b64_encode((const unsigned char *)key, klen, 1, keyb64, sizeof keyb64);

	for (i = 0; i < k->nrevoked; i++) {
		if (strcmp(k->revoked[i], keyb64) == 0) {
			seterr(err, errlen, "host key verification failed: the %s host "
				   "key of %s (%s) is marked @revoked in %s. Refusing to "
				   "connect; ask the server's administrator for its current "
				   "key.", human, c->hostdesc, c->fingerprint, khpath);
			return -EKEYREJECTED;
		}
	}
	if (!t) {
		seterr(err, errlen, "host key verification failed: %s offered a "
			   "host key of a type this client cannot check (%s)",
			   c->hostdesc, c->fingerprint);
		return -EKEYREJECTED;
	}
	r = libssh2_knownhost_checkp(k->kh, c->hostdesc, -1, key, klen,
								 LIBSSH2_KNOWNHOST_TYPE_PLAIN |
								 LIBSSH2_KNOWNHOST_KEYENC_RAW | t->kh_key,
								 NULL);
	switch (r) {
	case LIBSSH2_KNOWNHOST_CHECK_MATCH:
		return 0;
	case LIBSSH2_KNOWNHOST_CHECK_MISMATCH:
		seterr(err, errlen, "host key verification failed: REMOTE HOST "
			   "IDENTIFICATION HAS CHANGED for %s. The server now presents "
			   "%s key fingerprint %s, which differs from the key recorded "
			   "in %s. Someone could be intercepting the connection, or the "
			   "host key was replaced. If the change is expected and the "
			   "fingerprint verified, remove the old entry with: "
			   "ssh-keygen -f '%s' -R '%s' and add the new key.",
			   c->hostdesc, human, c->fingerprint, khpath, khpath,
			   c->hostdesc);
		return -EKEYREJECTED;
	case LIBSSH2_KNOWNHOST_CHECK_NOTFOUND: {
		char portopt[32] = "";
		if (port != 22)
			snprintf(portopt, sizeof portopt, " -p %d", port);
		seterr(err, errlen, "host key verification failed: no %s host key "
			   "for %s in %s. The server's %s key fingerprint is %s. If you "
			   "trust this host, verify the fingerprint with its "
			   "administrator, then add the key, e.g.: ssh-keyscan%s -t %s "
			   "%s >> '%s'", human, c->hostdesc, khpath, human,
			   c->fingerprint, portopt, t->keyscan, host, khpath);
		return -EKEYREJECTED;
	}
	default:
		seterr(err, errlen, "host key verification failed for %s: cannot "
			   "check %s (%s)", c->hostdesc, khpath, l2_msg(c->sess));
		return -EKEYREJECTED;
	}
}

/* First line of "<key>.pub", to give key-type specific advice. */
static int pubkey_is_rsa(const char *identity)
{
	char path[4096], buf[16] = "";
	FILE *f;
	snprintf(path, sizeof path, "%s.pub", identity);
	f = fopen(path, "re");
	if (!f)
		return 0;
	if (!fgets(buf, sizeof buf, f))
		buf[0] = '\0';
	fclose(f);
	return strncmp(buf, "ssh-rsa ", 8) == 0;
}

static int auth_agent(struct ssh_conn *c, const char *user, char *why, size_t wlen)
{
	LIBSSH2_AGENT *agent = libssh2_agent_init(c->sess);
	struct libssh2_agent_publickey *id = NULL, *prev = NULL;
	int rc, tried = 0, ok = 0;

	if (!agent) {
		snprintf(why, wlen, "cannot initialise ssh-agent support");
		return -ENOMEM;
	}
	if (libssh2_agent_connect(agent)) {
		snprintf(why, wlen, "no ssh-agent reachable (is SSH_AUTH_SOCK set?)");
		libssh2_agent_free(agent);
		return -EACCES;
	}
	if (libssh2_agent_list_identities(agent)) {
		snprintf(why, wlen, "ssh-agent did not list its keys");
		goto out;
	}
	while ((rc = libssh2_agent_get_identity(agent, &id, prev)) == 0) {
		prev = id;
		tried++;
		if (libssh2_agent_userauth(agent, user, id) == 0) {
			ok = 1;
			break;
		}
		if (libssh2_session_last_errno(c->sess) == LIBSSH2_ERROR_TIMEOUT ||
			libssh2_session_last_errno(c->sess) ==
			LIBSSH2_ERROR_SOCKET_RECV ||
			libssh2_session_last_errno(c->sess) ==
			LIBSSH2_ERROR_SOCKET_DISCONNECT)
			break;
	}
	if (!ok && tried)
		snprintf(why, wlen, "the server accepted none of the %d key(s) "
				 "offered by ssh-agent", tried);
	else if (!ok)
		snprintf(why, wlen, "ssh-agent holds no keys");
out:
	libssh2_agent_disconnect(agent);
	libssh2_agent_free(agent);
	return ok ? 0 : -EACCES;
}

static int authenticate(struct ssh_conn *c, const struct ssh_conn_opts *o, char *err,
						size_t errlen)
{
	const char *user = o->user;
	unsigned ulen = (unsigned)strlen(user);
	char *methods;
	char why_file[512] = "", why_agent[256] = "";
	int rc;

	methods = libssh2_userauth_list(c->sess, user, ulen);
	if (!methods) {
		if (libssh2_userauth_authenticated(c->sess))
			return 0; /* "none" authentication was accepted */
		rc = libssh2_session_last_errno(c->sess);
		seterr(err, errlen, "authentication with %s failed before it "
			   "started: %s", c->hostdesc, l2_msg(c->sess));
		return rc == LIBSSH2_ERROR_TIMEOUT ? -ETIMEDOUT : -EACCES;
	}
	if (!strstr(methods, "publickey")) {
		seterr(err, errlen, "%s does not allow public key authentication "
			   "for user '%s' (it offers: %s); enable PubkeyAuthentication "
			   "in its sshd_config", c->hostdesc, user, methods);
		return -EACCES;
	}
	if (o->identity_file) {
		if (access(o->identity_file, R_OK) != 0) {
			snprintf(why_file, sizeof why_file, "cannot read identity file "
					 "'%s': %s", o->identity_file, strerror(errno));
		} else {
			rc = libssh2_userauth_publickey_fromfile_ex(
				c->sess, user, ulen, NULL, o->identity_file,
				o->passphrase ? o->passphrase : "");
			if (rc == 0)
				return 0;
			if (rc == LIBSSH2_ERROR_TIMEOUT || rc ==
				LIBSSH2_ERROR_SOCKET_RECV || rc == LIBSSH2_ERROR_SOCKET_SEND
				|| rc == LIBSSH2_ERROR_SOCKET_DISCONNECT) {
				seterr(err, errlen, "connection to %s lost during "
					   "authentication: %s", c->hostdesc, l2_msg(c->sess));
				return l2_errno(rc);
			}
			if (rc == LIBSSH2_ERROR_FILE)
				snprintf(why_file, sizeof why_file, "could not load the "
						 "private key '%s' (unsupported format, or a wrong "
						 "or missing passphrase)", o->identity_file);
			else
				snprintf(why_file, sizeof why_file, "the server rejected "
						 "the key '%s'. Add its public key (%s.pub) to "
						 "~%s/.ssh/authorized_keys on the server%s",
						 o->identity_file, o->identity_file, user,
						 pubkey_is_rsa(o->identity_file) ?
						 "; note that libssh2 1.10 signs RSA keys with "
						 "SHA-1, which OpenSSH 8.8 and later refuse: use an "
						 "ed25519 or ecdsa key" : "");
		}
	}
	if (o->use_agent || !o->identity_file) {
		rc = auth_agent(c, user, why_agent, sizeof why_agent);
		if (rc == 0)
			return 0;
	}
	seterr(err, errlen, "authentication as '%s' to %s failed: %s%s%s",
		   user, c->hostdesc, why_file, *why_file && *why_agent ? "; " : "",
		   why_agent);
	return -EACCES;
}

/* ------------------------------------------------------------------ */
/* channel bookkeeping (conn->mu held)                                  */

static void oq_free(struct ssh_chan *ch)
{
	struct out_chunk *q = ch->oq_head, *n;
	for (; q; q = n) {
		n = q->next;
		free(q);
	}
	ch->oq_head = ch->oq_tail = NULL;
	ch->oq_bytes = 0;
}

static void chan_free_struct(struct ssh_chan *ch)
{
	oq_free(ch);
	free(ch->req);
	free(ch->arg);
	free(ch);
}

static void conn_free(struct ssh_conn *c)
{
	if (c->wake_rd >= 0)
		close(c->wake_rd);
	if (c->wake_wr >= 0)
		close(c->wake_wr);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
	free(c->rxbuf);
	free(c);
}

/* May the I/O thread start a user callback on ch?  (lock held) */
static int cb_allowed(const struct ssh_chan *ch)
{
	return ch->attached && !ch->detaching;
}

/* Detaches the user from ch (lock held).  Order matters: first stop new
 * callbacks, then wait for a running one, and only then clear `attached`,
 * because from that moment sweep() may free ch as soon as the lock drops. */
static void detach_locked(struct ssh_conn *c, struct ssh_chan *ch)
{
	ch->detaching = 1;
	if (!(c->io_started && pthread_equal(pthread_self(), c->io)))
		while (ch->cb_busy)
			pthread_cond_wait(&c->cv, &c->mu);
	ch->attached = 0;
}

/* Runs a user callback without the lock; release() waits on cb_busy. */
static void notify_closed(struct ssh_conn *c, struct ssh_chan *ch, int err)
{
	struct ssh_chan_exit ex;
	ch->closed = 1;
	if (!cb_allowed(ch) || ch->notified || !ch->open_done || ch->open_err)
		return;
	ch->notified = 1;
	if (!ch->cbs.on_closed)
		return;
	ex = ch->exit;
	ch->cb_busy = 1;
	pthread_mutex_unlock(&c->mu);
	ch->cbs.on_closed(ch->ud, err, &ex);
	pthread_mutex_lock(&c->mu);
	ch->cb_busy = 0;
	pthread_cond_broadcast(&c->cv);
}

static void open_finished(struct ssh_conn *c, struct ssh_chan *ch, int err,
						  const char *msg)
{
	if (ch->open_done)
		return;
	ch->open_done = 1;
	ch->open_err = err;
	if (err && msg)
		snprintf(ch->open_msg, sizeof ch->open_msg, "%s", msg);
	pthread_cond_broadcast(&c->cv);
}

/* Frees the libssh2 session and the socket.  Called by the I/O thread with
 * the lock held; every channel ends up in CH_DONE and attached ones are
 * told the link is gone. */
static void io_teardown(struct ssh_conn *c, int graceful)
{
	struct ssh_chan *ch;
	LIBSSH2_SESSION *sess = c->sess;
	int i;

	for (ch = c->chans; ch; ch = ch->next) {
		open_finished(c, ch, -ENOTCONN, c->dead ? c->dead_msg :
					  "connection closed");
		notify_closed(c, ch, c->dead ? c->dead_err : -ENOTCONN);
		ch->state = CH_DONE;
		ch->lch = NULL; /* libssh2_session_free releases it */
		oq_free(ch);
	}
	c->opening = NULL;
	c->sess = NULL;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);

	if (sess) {
		if (graceful) {
			/* Polite goodbye, bounded: a stuck peer must not delay close. */
			int64_t deadline = ssh_now_ms() + 500;
			while (libssh2_session_disconnect(sess, "seerfs: closing") ==
				   LIBSSH2_ERROR_EAGAIN && ssh_now_ms() < deadline) {
				struct pollfd p = { .fd = c->sock, .events = POLLOUT };
				poll(&p, 1, 50);
			}
		}
		/* From here every send/recv fails at once, so libssh2 cannot
		 * return EAGAIN while it closes channels during session_free. */
		c->sock_forced_dead = 1;
		for (i = 0; i < 100 && libssh2_session_free(sess) ==
			 LIBSSH2_ERROR_EAGAIN; i++)
			;
	}
	if (c->sock >= 0) {
		close(c->sock);
		c->sock = -1;
	}
	pthread_mutex_lock(&c->mu);
}

static void conn_die(struct ssh_conn *c, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void conn_die(struct ssh_conn *c, int err, const char *fmt, ...)
{
	va_list ap;
	if (c->dead)
		return;
	c->dead = 1;
	c->dead_err = err ? err : -ENOTCONN;
	va_start(ap, fmt);
	vsnprintf(c->dead_msg, sizeof c->dead_msg, fmt, ap);
	va_end(ap);
	pthread_cond_broadcast(&c->cv);
}

/* Unlinks and frees channels nobody needs any more.  Only the I/O thread
 * (or ssh_conn_close after it exited) calls this, so no cursor dangles. */
static void sweep(struct ssh_conn *c)
{
	struct ssh_chan **pp = &c->chans, *ch;
	c->chans_tail = NULL;
	while ((ch = *pp)) {
		if (ch->state == CH_DONE && !ch->attached && !ch->cb_busy) {
			*pp = ch->next;
			chan_free_struct(ch);
			c->refs--;
		} else {
			c->chans_tail = ch;
			pp = &ch->next;
		}
	}
}

/* ------------------------------------------------------------------ */
/* the I/O thread                                                       */

/* Decides whether (ch, kind) has work and fills t.  Lock held. */
static int task_prepare(struct ssh_conn *c, struct ssh_chan *ch, enum task_kind kind,
						struct io_task *t)
{
	memset(t, 0, sizeof *t);
	t->kind = kind;
	t->ch = ch;
	if (kind == T_KEEPALIVE) {
		struct ssh_chan *x;
		int64_t idle = ssh_now_ms() -
					   __atomic_load_n(&c->last_tx_ms, __ATOMIC_RELAXED);
		if (c->keepalive_s <= 0 || idle < (int64_t)c->keepalive_s * 1000)
			return 0;
		if (c->shutdown)
			return 0;
		/* Only when nothing else is being sent: libssh2_keepalive_send
		 * cannot be resumed if its packet is only partly written. */
		for (x = c->chans; x; x = x->next)
			if (x->oq_head || x->state == CH_OPENING ||
				x->state == CH_STARTING || x->state == CH_CLOSING)
				return 0;
		return 1;
	}
	/* A released channel stops whatever it did and gets closed. */
	if (!ch->attached) {
		if (ch->state == CH_NEW) {
			ch->state = CH_DONE;
			return 0;
		}
		if (ch->state == CH_STARTING || ch->state == CH_OPEN)
			ch->state = CH_CLOSING;
	}
	t->lch = ch->lch;
	switch (kind) {
	case T_OPEN:
		return (ch->state == CH_NEW && !c->opening) ||
			   ch->state == CH_OPENING;
	case T_STARTUP:
		return ch->state == CH_STARTING;
	case T_WRITE:
		if (ch->state != CH_OPEN || !ch->oq_head || ch->eof_sent)
			return 0;
		t->wbuf = ch->oq_head->data + ch->oq_head->off;
		t->wlen = ch->oq_head->len - ch->oq_head->off;
		return 1;
	case T_EOF:
		return ch->state == CH_OPEN && ch->eof_req && !ch->oq_head &&
			   !ch->eof_sent;
	case T_READ0:
	case T_READ1:
		return ch->state == CH_OPEN && !ch->rx_paused &&
			   !ch->rx_eof[kind - T_READ0];
	case T_WAITCLOSE:
		return ch->state == CH_OPEN && ch->rx_eof[0] && ch->rx_eof[1];
	case T_FREE:
		return ch->state == CH_CLOSING;
	default:
		return 0;
	}
}

/*
 * Makes exactly one libssh2 call for t.  This function has a single call
 * site (in io_main) so that a retried call runs at the same stack depth as
 * the first attempt; see the header comment for why that matters.
 */
static __attribute__((noinline)) void io_exec(struct ssh_conn *c, struct io_task *t)
{
	LIBSSH2_SESSION *s = c->sess;
	t->rc = 0;
	switch (t->kind) {
	case T_OPEN:
		t->opened = libssh2_channel_open_ex(s, "session", 7, CHAN_WINDOW,
											CHAN_PACKET, NULL, 0);
		t->rc = t->opened ? 0 : libssh2_session_last_errno(s);
		break;
	case T_STARTUP:
		t->rc = libssh2_channel_process_startup(
			t->lch, t->ch->req, (unsigned)strlen(t->ch->req), t->ch->arg,
			t->ch->arg ? (unsigned)strlen(t->ch->arg) : 0);
		break;
	case T_WRITE:
		t->rc = libssh2_channel_write_ex(t->lch, 0, (const char *)t->wbuf,
										 t->wlen);
		break;
	case T_EOF:
		t->rc = libssh2_channel_send_eof(t->lch);
		break;
	case T_READ0:
	case T_READ1:
		t->rc = libssh2_channel_read_ex(t->lch, t->kind - T_READ0,
										(char *)c->rxbuf, RXBUF_LEN);
		break;
	case T_WAITCLOSE:
		t->rc = libssh2_channel_wait_closed(t->lch);
		break;
	case T_FREE:
		t->rc = libssh2_channel_free(t->lch);
		break;
	case T_KEEPALIVE: {
		struct pollfd p = { .fd = c->sock, .events = POLLOUT };
		int next = 0;
		/* With room in the socket buffer the ~60 byte packet goes out in
		 * one piece, which keeps the non-resumable call safe. */
		if (poll(&p, 1, 0) == 1 && (p.revents & POLLOUT))
			t->rc = libssh2_keepalive_send(s, &next);
		else
			t->rc = LIBSSH2_ERROR_EAGAIN;
		break;
	}
	default:
		break;
	}
	t->outbound_pending = 0;
	if (t->rc < 0 && t->rc != LIBSSH2_ERROR_EAGAIN)
		snprintf(t->msg, sizeof t->msg, "%s", l2_msg(s));
	if (libssh2_session_block_directions(s) & LIBSSH2_SESSION_BLOCK_OUTBOUND)
		t->outbound_pending = 1;
}

enum io_result {
	R_IDLE,         /* nothing to do right now */
	R_PROGRESS,     /* did something */
	R_AGAIN,        /* did something and may do more at once */
	R_OUT_PENDING,  /* half-sent packet: resume this task when writable */
	R_FATAL         /* connection is dead (conn_die called) */
};

static enum io_result io_fail(struct ssh_conn *c, struct io_task *t,
							  const char *what)
{
	int e = l2_errno((int)t->rc);
	conn_die(c, e == -ETIMEDOUT ? -ETIMEDOUT : -ENOTCONN,
			 "connection to %s lost (%s: %s)", c->hostdesc, what, t->msg);
	return R_FATAL;
}

/* Interprets the result of io_exec.  Lock held; may run callbacks. */
static enum io_result io_finish(struct ssh_conn *c, struct io_task *t)
{
	struct ssh_chan *ch = t->ch;
	ssize_t rc = t->rc;

	if (rc == LIBSSH2_ERROR_EAGAIN || (t->kind == T_KEEPALIVE &&
									   t->outbound_pending)) {
		if (t->kind == T_KEEPALIVE && t->outbound_pending) {
			/* Cannot happen with a writable socket; if it ever does, the
			 * session can no longer send anything coherent. */
			conn_die(c, -ENOTCONN, "connection to %s abandoned: keepalive "
					 "could not be sent in one piece", c->hostdesc);
			return R_FATAL;
		}
		if (t->kind == T_OPEN && ch->state == CH_NEW) {
			ch->state = CH_OPENING;
			c->opening = ch;
		}
		return t->outbound_pending ? R_OUT_PENDING : R_IDLE;
	}

	switch (t->kind) {
	case T_OPEN:
		c->opening = NULL;
		if (rc == 0) {
			ch->lch = t->opened;
			ch->state = ch->attached ? CH_STARTING : CH_CLOSING;
			return R_PROGRESS;
		}
		if (!l2_channel_level((int)rc))
			return io_fail(c, t, "opening a channel");
		ch->state = CH_DONE;
		open_finished(c, ch, -ECONNREFUSED, t->msg);
		return R_PROGRESS;
	case T_STARTUP:
		if (rc == 0) {
			ch->state = CH_OPEN;
			open_finished(c, ch, 0, NULL);
			return R_PROGRESS;
		}
		if (!l2_channel_level((int)rc))
			return io_fail(c, t, "starting a channel request");
		ch->state = CH_CLOSING;
		open_finished(c, ch, l2_errno((int)rc), t->msg);
		return R_PROGRESS;
	case T_WRITE: {
		struct out_chunk *q = ch->oq_head;
		if (rc < 0) {
			if (!l2_channel_level((int)rc))
				return io_fail(c, t, "sending data");
			oq_free(ch);
			ch->closed = 1;
			pthread_cond_broadcast(&c->cv);
			return R_PROGRESS;
		}
		if (rc == 0)
			return R_IDLE; /* window full; an adjust will arrive */
		q->off += (size_t)rc;
		ch->oq_bytes -= (size_t)rc;
		if (q->off == q->len) {
			ch->oq_head = q->next;
			if (!ch->oq_head)
				ch->oq_tail = NULL;
			free(q);
			if (c->writers_waiting)
				pthread_cond_broadcast(&c->cv);
			if (ch->oq_bytes < OQ_LOW && ch->cbs.on_drain && cb_allowed(ch)) {
				ch->cb_busy = 1;
				pthread_mutex_unlock(&c->mu);
				ch->cbs.on_drain(ch->ud);
				pthread_mutex_lock(&c->mu);
				ch->cb_busy = 0;
				pthread_cond_broadcast(&c->cv);
			}
		}
		return R_AGAIN;
	}
	case T_EOF:
		if (rc < 0 && !l2_channel_level((int)rc))
			return io_fail(c, t, "sending EOF");
		ch->eof_sent = 1;
		return R_PROGRESS;
	case T_READ0:
	case T_READ1: {
		int stream = t->kind - T_READ0;
		if (rc < 0) {
			if (!l2_channel_level((int)rc))
				return io_fail(c, t, "receiving data");
			ch->rx_eof[stream] = 1;
			return R_PROGRESS;
		}
		if (rc == 0) {
			if (libssh2_channel_eof(t->lch)) {
				ch->rx_eof[stream] = 1;
				return R_PROGRESS;
			}
			return R_IDLE;
		}
		if (cb_allowed(ch) && ch->cbs.on_data) {
			int pause;
			unsigned resumes = ch->resume_seq;
			ch->cb_busy = 1;
			pthread_mutex_unlock(&c->mu);
			pause = ch->cbs.on_data(ch->ud, stream, (const char *)c->rxbuf,
									(size_t)rc);
			pthread_mutex_lock(&c->mu);
			ch->cb_busy = 0;
			pthread_cond_broadcast(&c->cv);
			/* A resume that arrived while the callback ran (its consumer
			 * already drained what made it ask for the pause) wins;
			 * otherwise that resume would be lost and reading would stop
			 * for good. */
			if (pause && ch->resume_seq == resumes)
				ch->rx_paused = 1;
		}
		return R_AGAIN;
	}
	case T_WAITCLOSE: {
		char *sig = NULL;
		size_t siglen = 0;
		if (rc < 0)
			return io_fail(c, t, "waiting for channel close");
		/* exit-status / exit-signal precede CHANNEL_CLOSE, so they are in.
		 * libssh2 1.10 cannot tell "no exit-status" from status 0. */
		ch->exit.has_status = 1;
		ch->exit.status = libssh2_channel_get_exit_status(t->lch);
		if (libssh2_channel_get_exit_signal(t->lch, &sig, &siglen, NULL,
											NULL, NULL, NULL) == 0 && sig) {
			snprintf(ch->exit.signal, sizeof ch->exit.signal, "%s", sig);
			ch->exit.has_status = 0;
			libssh2_free(c->sess, sig);
		}
		ch->state = CH_CLOSING;
		oq_free(ch);
		notify_closed(c, ch, 0);
		return R_PROGRESS;
	}
	case T_FREE:
		if (rc < 0 && !l2_channel_level((int)rc))
			return io_fail(c, t, "closing a channel");
		ch->lch = NULL;
		ch->state = CH_DONE;
		/* A startup failure was already reported; other attached channels
		 * learn here that the remote is gone. */
		notify_closed(c, ch, -EPIPE);
		return R_PROGRESS;
	case T_KEEPALIVE:
		if (rc < 0)
			return io_fail(c, t, "sending keepalive");
		return R_PROGRESS;
	default:
		return R_IDLE;
	}
}

/* Blocks in poll() until the socket is ready or someone wakes us.  want_in:
 * some task reads the socket, so incoming data will be consumed (otherwise
 * polling POLLIN would spin); want_out: a half-sent packet waits. */
static void io_wait(struct ssh_conn *c, int timeout_ms, int want_in, int want_out)
{
	struct pollfd p[2];
	char buf[64];
	int n;

	p[0].fd = c->sock;
	p[0].events = POLLRDHUP | (want_out ? POLLOUT : (want_in ? POLLIN : 0));
	p[0].revents = 0;
	p[1].fd = c->wake_rd;
	p[1].events = POLLIN;
	p[1].revents = 0;
	pthread_mutex_unlock(&c->mu);
	n = poll(p, 2, timeout_ms);
	pthread_mutex_lock(&c->mu);
	if (n > 0 && (p[1].revents & POLLIN)) {
		while (read(c->wake_rd, buf, sizeof buf) > 0)
			;
		c->wake_pending = 0;
	}
	if (n > 0 && !want_out && !want_in &&
		(p[0].revents & (POLLRDHUP | POLLHUP | POLLERR))) {
		/* Nobody reads right now, so libssh2 would not notice. */
		conn_die(c, -ENOTCONN, "connection to %s closed by the server",
				 c->hostdesc);
	}
}

/* Released channels that still need libssh2 work to close cleanly. */
static int closing_work(struct ssh_conn *c)
{
	struct ssh_chan *ch;
	for (ch = c->chans; ch; ch = ch->next)
		if (!ch->attached && ch->state != CH_NEW && ch->state != CH_DONE)
			return 1;
	return 0;
}

static void *io_main(void *arg)
{
	struct ssh_conn *c = arg;
	struct io_task t, pending;
	struct ssh_chan *cur_ch;
	int cur_kind, keepalive_done;
	int progress = 0, want_in = 0;
	uint64_t rx_mark;
	int64_t grace_end = 0;

	memset(&pending, 0, sizeof pending);
	pthread_mutex_lock(&c->mu);
	cur_ch = c->chans;
	cur_kind = T_OPEN;
	keepalive_done = 0;
	rx_mark = __atomic_load_n(&c->rx_bytes, __ATOMIC_RELAXED);

	for (;;) {
		enum io_result r;
		if (c->dead)
			break;
		if (c->shutdown) {
			/* Give channels released just before close a moment to be
			 * closed properly, so the server sees a clean end. */
			if (!grace_end)
				grace_end = ssh_now_ms() + SHUTDOWN_GRACE_MS;
			if (!closing_work(c) || ssh_now_ms() >= grace_end)
				break;
		}
		if (pending.kind != T_NONE) {
			t = pending;
		} else {
			/* Next applicable task of this round. */
			int found = 0;
			while (!found && cur_ch) {
				if (cur_kind >= T_CHAN_KINDS) {
					cur_ch = cur_ch->next;
					cur_kind = T_OPEN;
					continue;
				}
				found = task_prepare(c, cur_ch, (enum task_kind)cur_kind++,
									 &t);
			}
			if (!found && !keepalive_done) {
				keepalive_done = 1;
				found = task_prepare(c, NULL, T_KEEPALIVE, &t);
			}
			if (!found) {
				/* End of round: sleep only if nothing moved at all. */
				uint64_t rx = __atomic_load_n(&c->rx_bytes,
											  __ATOMIC_RELAXED);
				sweep(c);
				if (!progress && rx == rx_mark)
					io_wait(c, c->shutdown ? 20 : IDLE_POLL_MS, want_in, 0);
				progress = 0;
				want_in = 0;
				rx_mark = __atomic_load_n(&c->rx_bytes, __ATOMIC_RELAXED);
				cur_ch = c->chans;
				cur_kind = T_OPEN;
				keepalive_done = 0;
				continue;
			}
		}
again:
		if (t.kind != T_KEEPALIVE && t.kind != T_FREE && t.kind != T_EOF)
			want_in = 1; /* this call also drains the socket */
		pthread_mutex_unlock(&c->mu);
		io_exec(c, &t); /* the single call site, see io_exec */
		pthread_mutex_lock(&c->mu);
		r = io_finish(c, &t);
		pending.kind = T_NONE;
		if (r != R_FATAL && r != R_OUT_PENDING && t.outbound_pending) {
			/* The call itself finished, but a reply libssh2 sends on its
			 * own (to a server request that wants one) is half written.
			 * It resumes inside the transport read of the same call chain,
			 * so only the same kind of task may run next. */
			struct io_task t2;
			if (t.ch && t.kind != T_OPEN &&
				task_prepare(c, t.ch, t.kind, &t2)) {
				t = t2;
				r = R_OUT_PENDING;
			} else {
				conn_die(c, -ENOTCONN, "connection to %s abandoned: libssh2 "
						 "left a partly sent packet that cannot be resumed",
						 c->hostdesc);
				r = R_FATAL;
			}
		}
		switch (r) {
		case R_OUT_PENDING:
			pending = t;
			io_wait(c, c->shutdown ? 20 : IDLE_POLL_MS, 0, 1);
			break;
		case R_AGAIN:
			progress = 1;
			if (t.runs + 1 < TASK_BUDGET && !c->shutdown && !c->dead) {
				int runs = t.runs + 1;
				if (task_prepare(c, t.ch, t.kind, &t)) {
					t.runs = runs;
					goto again;
				}
			}
			break;
		case R_PROGRESS:
			progress = 1;
			break;
		case R_IDLE:
		case R_FATAL:
			break;
		}
	}

	io_teardown(c, !c->dead);
	/* Stay until ssh_conn_close so release() has someone to sweep. */
	while (!c->shutdown) {
		sweep(c);
		pthread_cond_wait(&c->cv, &c->mu);
	}
	sweep(c);
	c->io_exited = 1;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* public API                                                           */

int ssh_conn_open(const struct ssh_conn_opts *o, struct ssh_conn **out, char *err,
				  size_t errlen)
{
	struct ssh_conn *c;
	struct kh_file kh;
	int port, rc, pfd[2];
	int64_t deadline;

	*out = NULL;
	if (!o || !o->host || !*o->host || !o->user || !*o->user) {
		seterr(err, errlen, "host and user are required");
		return -EINVAL;
	}
	if (!o->known_hosts || !*o->known_hosts) {
		seterr(err, errlen, "a known_hosts file is required: host keys are "
			   "always verified");
		return -EINVAL;
	}
	if (!o->identity_file && !o->use_agent && !getenv("SSH_AUTH_SOCK")) {
		seterr(err, errlen, "no identity file given and no ssh-agent "
			   "(SSH_AUTH_SOCK unset)");
		return -EINVAL;
	}
	pthread_once(&sshconn_global.init_once, global_init);
	if (sshconn_global.init_rc) {
		seterr(err, errlen, "libssh2_init failed (%d)",
			   sshconn_global.init_rc);
		return -EIO;
	}

	c = calloc(1, sizeof *c);
	if (!c || !(c->rxbuf = malloc(RXBUF_LEN))) {
		free(c);
		seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	c->sock = c->wake_rd = c->wake_wr = -1;
	c->refs = 1;
	pthread_mutex_init(&c->mu, NULL);
	ssh_cond_init(&c->cv);
	c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms
									  : SSH_CONN_DEFAULT_TIMEOUT_MS;
	c->keepalive_s = o->keepalive_s == 0 ? SSH_CONN_DEFAULT_KEEPALIVE_S
										 : o->keepalive_s;
	c->keepalive_count = o->keepalive_count > 0
							 ? o->keepalive_count
							 : SSH_CONN_DEFAULT_KEEPALIVE_COUNT;
	port = o->port > 0 ? o->port : 22;
	/* The name known_hosts uses for us, exactly as OpenSSH writes it. */
	if (port == 22)
		snprintf(c->hostdesc, sizeof c->hostdesc, "%s", o->host);
	else
		snprintf(c->hostdesc, sizeof c->hostdesc, "[%s]:%d", o->host, port);

	if (pipe2(pfd, O_NONBLOCK | O_CLOEXEC) < 0) {
		rc = -errno;
		seterr(err, errlen, "pipe: %s", strerror(errno));
		conn_free(c);
		return rc;
	}
	c->wake_rd = pfd[0];
	c->wake_wr = pfd[1];

	deadline = ssh_now_ms() + (o->connect_timeout_ms > 0
								   ? o->connect_timeout_ms : c->timeout_ms);
	rc = tcp_connect(o->host, port, deadline, err, errlen);
	if (rc < 0) {
		conn_free(c);
		return rc;
	}
	c->sock = rc;
	tune_socket(c->sock, c->keepalive_s, c->keepalive_count);

	c->sess = libssh2_session_init_ex(NULL, NULL, NULL, c);
	if (!c->sess) {
		seterr(err, errlen, "out of memory (libssh2 session)");
		rc = -ENOMEM;
		goto fail;
	}
	libssh2_session_callback_set(c->sess, LIBSSH2_CALLBACK_SEND,
								 (void *)cb_send);
	libssh2_session_callback_set(c->sess, LIBSSH2_CALLBACK_RECV,
								 (void *)cb_recv);
	/* Setup runs in libssh2's blocking mode, bounded by its API timeout. */
	libssh2_session_set_blocking(c->sess, 1);
	{
		int64_t left = deadline - ssh_now_ms();
		libssh2_session_set_timeout(c->sess, left > 1 ? (long)left : 1);
	}

	rc = kh_load(c->sess, o->known_hosts, &kh, err, errlen);
	if (rc < 0)
		goto fail;
	set_hostkey_prefs(c->sess, &kh, c->hostdesc);

	rc = libssh2_session_handshake(c->sess, c->sock);
	if (rc) {
		seterr(err, errlen, "SSH handshake with %s failed: %s%s",
			   c->hostdesc, l2_msg(c->sess),
			   rc == LIBSSH2_ERROR_TIMEOUT ? " (timed out)" : "");
		rc = rc == LIBSSH2_ERROR_TIMEOUT ? -ETIMEDOUT : -EPROTO;
		kh_file_free(&kh);
		goto fail;
	}
	rc = verify_hostkey(c, &kh, o->host, port, o->known_hosts, err, errlen);
	kh_file_free(&kh);
	if (rc < 0)
		goto fail;

	{
		int64_t left = deadline - ssh_now_ms();
		libssh2_session_set_timeout(c->sess, left > 1 ? (long)left : 1);
	}
	rc = authenticate(c, o, err, errlen);
	if (rc < 0)
		goto fail;

	libssh2_session_set_timeout(c->sess, 0);
	libssh2_session_set_blocking(c->sess, 0);
	if (c->keepalive_s > 0)
		libssh2_keepalive_config(c->sess, 0, (unsigned)c->keepalive_s);
	c->last_tx_ms = ssh_now_ms();

	rc = pthread_create(&c->io, NULL, io_main, c);
	if (rc) {
		seterr(err, errlen, "cannot start the I/O thread: %s", strerror(rc));
		rc = -rc;
		goto fail;
	}
	c->io_started = 1;
	*out = c;
	return 0;

fail:
	if (c->sess) {
		c->sock_forced_dead = 1;
		libssh2_session_free(c->sess);
	}
	if (c->sock >= 0)
		close(c->sock);
	conn_free(c);
	return rc;
}

void ssh_conn_close(struct ssh_conn *c)
{
	int refs;
	struct ssh_chan *ch;
	if (!c)
		return;
	pthread_mutex_lock(&c->mu);
	c->shutdown = 1;
	wake_io(c);
	pthread_mutex_unlock(&c->mu);
	if (c->io_started)
		pthread_join(c->io, NULL);
	pthread_mutex_lock(&c->mu);
	c->io_exited = 1;
	for (ch = c->chans; ch; ch = ch->next)
		ch->state = CH_DONE;
	sweep(c);
	refs = --c->refs;
	pthread_mutex_unlock(&c->mu);
	if (refs == 0)
		conn_free(c);
}

void ssh_conn_abort(struct ssh_conn *c, const char *why)
{
	pthread_mutex_lock(&c->mu);
	if (!c->shutdown)
		conn_die(c, -ENOTCONN, "connection to %s aborted: %s", c->hostdesc,
				 why && *why ? why : "by the caller");
	/* The I/O thread sees `dead` at its next step and tears down. */
	wake_io(c);
	pthread_mutex_unlock(&c->mu);
}

int ssh_conn_alive(struct ssh_conn *c)
{
	int alive;
	pthread_mutex_lock(&c->mu);
	alive = !c->dead && !c->shutdown;
	pthread_mutex_unlock(&c->mu);
	return alive;
}

int ssh_conn_error(struct ssh_conn *c, char *buf, size_t len)
{
	int e;
	pthread_mutex_lock(&c->mu);
	e = c->dead ? c->dead_err : c->shutdown ? -ENOTCONN : 0;
	if (buf && len)
		snprintf(buf, len, "%s", c->dead ? c->dead_msg : c->shutdown ?
				 "connection closed" : "");
	pthread_mutex_unlock(&c->mu);
	return e;
}

int ssh_conn_timeout_ms(const struct ssh_conn *c)
{
	return c->timeout_ms;
}

const char *ssh_conn_fingerprint(const struct ssh_conn *c)
{
	return c->fingerprint;
}

void ssh_conn_stats(struct ssh_conn *c, uint64_t *tx, uint64_t *rx)
{
	if (tx)
		*tx = __atomic_load_n(&c->tx_bytes, __ATOMIC_RELAXED);
	if (rx)
		*rx = __atomic_load_n(&c->rx_bytes, __ATOMIC_RELAXED);
}

int ssh_chan_open(struct ssh_conn *c, const char *request, const char *arg,
				  const struct ssh_chan_cbs *cbs, void *ud, struct ssh_chan **out,
				  char *err, size_t errlen)
{
	struct ssh_chan *ch;
	int64_t deadline;
	int rc = 0;

	*out = NULL;
	ch = calloc(1, sizeof *ch);
	if (!ch || !(ch->req = strdup(request)) ||
		(arg && !(ch->arg = strdup(arg)))) {
		if (ch)
			chan_free_struct(ch);
		seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ch->conn = c;
	if (cbs)
		ch->cbs = *cbs;
	ch->ud = ud;
	ch->attached = 1;
	ch->state = CH_NEW;

	pthread_mutex_lock(&c->mu);
	if (c->dead || c->shutdown) {
		seterr(err, errlen, "%s", c->dead ? c->dead_msg :
			   "connection closed");
		rc = c->dead ? c->dead_err : -ENOTCONN;
		pthread_mutex_unlock(&c->mu);
		chan_free_struct(ch);
		return rc;
	}
	if (c->chans_tail)
		c->chans_tail->next = ch;
	else
		c->chans = ch;
	c->chans_tail = ch;
	c->refs++;
	wake_io(c);
	deadline = ssh_now_ms() + c->timeout_ms;
	while (!ch->open_done) {
		if (ssh_cond_wait_until(&c->cv, &c->mu, deadline) == ETIMEDOUT &&
			!ch->open_done)
			break;
	}
	if (!ch->open_done) {
		rc = -ETIMEDOUT;
		seterr(err, errlen, "opening a '%s' channel on %s timed out after "
			   "%d ms", request, c->hostdesc, c->timeout_ms);
	} else if (ch->open_err) {
		rc = ch->open_err;
		if (c->dead)
			seterr(err, errlen, "%s", c->dead_msg);
		else
			seterr(err, errlen, "the server refused the '%s%s%s' channel "
				   "request: %s", request, arg ? " " : "", arg ? arg : "",
				   ch->open_msg);
	}
	if (rc) {
		/* The I/O thread closes and frees it; a callback that raced with
		 * the failure must be over before the caller frees `ud`. */
		detach_locked(c, ch);
		wake_io(c);
		pthread_mutex_unlock(&c->mu);
		return rc;
	}
	pthread_mutex_unlock(&c->mu);
	*out = ch;
	return 0;
}

static int chan_write_check(struct ssh_conn *c, struct ssh_chan *ch)
{
	if (c->dead || c->shutdown)
		return c->dead ? c->dead_err : -ENOTCONN;
	if (ch->closed || ch->eof_req || ch->state != CH_OPEN)
		return -EPIPE;
	return 0;
}

int ssh_chan_writev(struct ssh_chan *ch, const struct iovec *iov, int iovcnt,
					int timeout_ms)
{
	struct ssh_conn *c = ch->conn;
	struct out_chunk *q;
	size_t total = 0, off = 0;
	int64_t deadline;
	int i, rc;

	for (i = 0; i < iovcnt; i++)
		total += iov[i].iov_len;
	if (!total)
		return 0;
	/* Copy before taking the lock so writers do not serialise on memcpy. */
	q = malloc(sizeof *q + total);
	if (!q)
		return -ENOMEM;
	q->next = NULL;
	q->len = total;
	q->off = 0;
	for (i = 0; i < iovcnt; i++) {
		memcpy(q->data + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	deadline = ssh_now_ms() + (timeout_ms > 0 ? timeout_ms : c->timeout_ms);
	pthread_mutex_lock(&c->mu);
	for (;;) {
		rc = chan_write_check(c, ch);
		if (rc)
			break;
		if (ch->oq_bytes == 0 || ch->oq_bytes + total <= OQ_HIGH) {
			if (ch->oq_tail)
				ch->oq_tail->next = q;
			else
				ch->oq_head = q;
			ch->oq_tail = q;
			ch->oq_bytes += total;
			q = NULL;
			wake_io(c);
			break;
		}
		c->writers_waiting++;
		i = ssh_cond_wait_until(&c->cv, &c->mu, deadline);
		c->writers_waiting--;
		if (i == ETIMEDOUT) {
			rc = -ETIMEDOUT;
			break;
		}
	}
	pthread_mutex_unlock(&c->mu);
	free(q);
	return rc;
}

ssize_t ssh_chan_try_write(struct ssh_chan *ch, const void *buf, size_t len)
{
	struct ssh_conn *c = ch->conn;
	struct out_chunk *q;
	size_t n;
	int rc;

	pthread_mutex_lock(&c->mu);
	rc = chan_write_check(c, ch);
	if (rc) {
		pthread_mutex_unlock(&c->mu);
		return rc;
	}
	n = ch->oq_bytes >= OQ_HIGH ? 0 : OQ_HIGH - ch->oq_bytes;
	if (n > len)
		n = len;
	if (n) {
		q = malloc(sizeof *q + n);
		if (!q) {
			pthread_mutex_unlock(&c->mu);
			return -ENOMEM;
		}
		q->next = NULL;
		q->len = n;
		q->off = 0;
		memcpy(q->data, buf, n);
		if (ch->oq_tail)
			ch->oq_tail->next = q;
		else
			ch->oq_head = q;
		ch->oq_tail = q;
		ch->oq_bytes += n;
		wake_io(c);
	}
	pthread_mutex_unlock(&c->mu);
	return (ssize_t)n;
}

int ssh_chan_send_eof(struct ssh_chan *ch)
{
	struct ssh_conn *c = ch->conn;
	int rc = 0;
	pthread_mutex_lock(&c->mu);
	if (c->dead || c->shutdown)
		rc = c->dead ? c->dead_err : -ENOTCONN;
	else if (ch->closed)
		rc = -EPIPE;
	else {
		ch->eof_req = 1;
		wake_io(c);
	}
	pthread_mutex_unlock(&c->mu);
	return rc;
}

void ssh_chan_resume(struct ssh_chan *ch)
{
	struct ssh_conn *c = ch->conn;
	pthread_mutex_lock(&c->mu);
	ch->resume_seq++;
	if (ch->rx_paused) {
		ch->rx_paused = 0;
		wake_io(c);
	}
	pthread_mutex_unlock(&c->mu);
}

void ssh_chan_release(struct ssh_chan *ch)
{
	struct ssh_conn *c;
	int refs = 1;
	if (!ch)
		return;
	c = ch->conn;
	pthread_mutex_lock(&c->mu);
	detach_locked(c, ch);
	if (c->io_exited) {
		/* No I/O thread any more: free it here. */
		ch->state = CH_DONE;
		sweep(c);
		refs = c->refs;
	} else {
		wake_io(c);
	}
	pthread_mutex_unlock(&c->mu);
	if (refs == 0)
		conn_free(c);
}

struct ssh_conn *ssh_chan_conn(struct ssh_chan *ch)
{
	return ch->conn;
}
