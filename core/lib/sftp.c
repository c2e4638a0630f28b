/*
 * sftp.c - SFTP v3 client with OpenSSH extensions over a byte stream
 * (bytestream.h): an SSH channel, or an exec stream of a container engine.
 *
 * How requests flow: a caller builds a packet, registers a request record
 * (id -> waiter) in a hash table, then queues the bytes on the stream.  The
 * stream's I/O thread hands every received byte to on_data(), which
 * reassembles packets, looks the id up, stores the reply in the record (DATA
 * replies go straight into the caller's buffer) and signals the caller's
 * condition variable.  Registering before sending means a reply can never
 * overtake its record; removing a record under the lock before returning
 * (timeouts, aborted pipelines) means the I/O thread can never write into a
 * buffer its owner has given up.
 *
 * Protocol reference: draft-ietf-secsh-filexfer-02 (version 3) and
 * OpenSSH's PROTOCOL file for the @openssh.com extensions.
 */
#ifndef _GNU_SOURCE /* the meson build defines it project-wide */
#define _GNU_SOURCE
#endif
#include "core/lib/sftp.h"
#include "core/lib/bytes.h"
#include "core/lib/bytestream.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
	FXP_INIT = 1, FXP_VERSION = 2, FXP_OPEN = 3, FXP_CLOSE = 4,
	FXP_READ = 5, FXP_WRITE = 6, FXP_LSTAT = 7, FXP_FSTAT = 8,
	FXP_SETSTAT = 9, FXP_FSETSTAT = 10, FXP_OPENDIR = 11, FXP_READDIR = 12,
	FXP_REMOVE = 13, FXP_MKDIR = 14, FXP_RMDIR = 15, FXP_REALPATH = 16,
	FXP_STAT = 17, FXP_RENAME = 18, FXP_READLINK = 19, FXP_SYMLINK = 20,
	FXP_STATUS = 101, FXP_HANDLE = 102, FXP_DATA = 103, FXP_NAME = 104,
	FXP_ATTRS = 105, FXP_EXTENDED = 200, FXP_EXTENDED_REPLY = 201
};

enum {
	FX_OK = 0, FX_EOF = 1, FX_NO_SUCH_FILE = 2, FX_PERMISSION_DENIED = 3,
	FX_FAILURE = 4, FX_BAD_MESSAGE = 5, FX_NO_CONNECTION = 6,
	FX_CONNECTION_LOST = 7, FX_OP_UNSUPPORTED = 8
};

#define SFTP_ATTR_EXTENDED 0x80000000u
#define HASH_SIZE 256u
/* Largest packet accepted from the server.  OpenSSH sends at most 256 KiB;
 * the margin tolerates other servers without letting a corrupt length
 * make us allocate gigabytes. */
#define MAX_IN_PACKET (1024u * 1024u + 1024u)
/* Without limits@openssh.com: what every OpenSSH version accepts. */
#define DEFAULT_MAX_IO (64u * 1024u)
#define MAX_HANDLE 256u

struct sftp_handle {
	uint32_t len;
	unsigned char data[MAX_HANDLE];
};

struct sftp_waiter {
	pthread_cond_t cv;
};

struct sftp_req {
	uint32_t id;
	struct sftp_req *hnext;
	struct sftp_waiter *w;
	int done;
	int err;                /* link-level failure, negative errno */
	uint8_t type;           /* reply type */
	uint32_t status;        /* for FXP_STATUS */
	unsigned char *body;    /* reply after type and id, malloc'd */
	size_t body_len;
	unsigned char *dst;     /* FXP_DATA payload destination */
	size_t dst_cap, got;
};

struct sftp_client {
	struct bytestream *ch;  /* the transport: an SSH channel, an engine exec stream */
	pthread_mutex_t mu;
	uint32_t next_id;
	struct sftp_req *tab[HASH_SIZE];
	int dead, dead_err;
	char dead_msg[300];
	int timeout_ms;
	uint32_t exts;
	size_t max_read, max_write;
	/* version negotiation: VERSION carries no request id */
	pthread_cond_t init_cv;
	int version_done;
	unsigned char *version_body;
	size_t version_len;
	/* packet reassembly: I/O thread only */
	unsigned char hdr[4];
	size_t hdr_have;
	unsigned char *pkt;
	size_t pkt_len, pkt_have, pkt_cap;
	char stderr_tail[200];  /* last words of the server on stderr */
	int refs;               /* sftp_client_ref/unref; the opener holds the first */
};

/* ------------------------------------------------------------------ */
/* encoding                                                             */

/* Packet builder with an inline buffer: READ/WRITE headers never touch
 * the heap. */
struct sbuf {
	unsigned char *p;
	size_t len, cap;
	int oom;
	unsigned char inl[512];
};

static void sb_reserve(struct sbuf *b, size_t n)
{
	size_t ncap;
	unsigned char *np;
	if (b->oom || b->len + n <= b->cap)
		return;
	ncap = b->cap * 2;
	while (ncap < b->len + n)
		ncap *= 2;
	if (b->p == b->inl) {
		np = malloc(ncap);
		if (np)
			memcpy(np, b->p, b->len);
	} else {
		np = realloc(b->p, ncap);
	}
	if (!np) {
		b->oom = 1;
		return;
	}
	b->p = np;
	b->cap = ncap;
}

static void sb_bytes(struct sbuf *b, const void *d, size_t n)
{
	sb_reserve(b, n);
	if (b->oom)
		return;
	memcpy(b->p + b->len, d, n);
	b->len += n;
}

static void sb_u8(struct sbuf *b, uint8_t v)
{
	sb_bytes(b, &v, 1);
}

static void sb_u32(struct sbuf *b, uint32_t v)
{
	unsigned char x[4];
	put32(x, v);
	sb_bytes(b, x, 4);
}

static void sb_u64(struct sbuf *b, uint64_t v)
{
	sb_u32(b, (uint32_t)(v >> 32));
	sb_u32(b, (uint32_t)v);
}

static void sb_blob(struct sbuf *b, const void *d, size_t n)
{
	sb_u32(b, (uint32_t)n);
	sb_bytes(b, d, n);
}

static void sb_str(struct sbuf *b, const char *s)
{
	sb_blob(b, s, strlen(s));
}

static void sb_attrs(struct sbuf *b, const struct sftp_attrs *a)
{
	uint32_t f = a ? a->flags & (SFTP_ATTR_SIZE | SFTP_ATTR_UIDGID |
								 SFTP_ATTR_PERMISSIONS | SFTP_ATTR_ACMODTIME)
				   : 0;
	sb_u32(b, f);
	if (f & SFTP_ATTR_SIZE)
		sb_u64(b, a->size);
	if (f & SFTP_ATTR_UIDGID) {
		sb_u32(b, a->uid);
		sb_u32(b, a->gid);
	}
	if (f & SFTP_ATTR_PERMISSIONS)
		sb_u32(b, a->perm);
	if (f & SFTP_ATTR_ACMODTIME) {
		sb_u32(b, a->atime);
		sb_u32(b, a->mtime);
	}
}

/* length and id are patched in by send_req */
static void sb_start(struct sbuf *b, uint8_t type)
{
	b->p = b->inl;
	b->cap = sizeof b->inl;
	b->len = 0;
	b->oom = 0;
	sb_u32(b, 0);
	sb_u8(b, type);
	sb_u32(b, 0);
}

static void sb_free(struct sbuf *b)
{
	if (b->p && b->p != b->inl)
		free(b->p);
	b->p = NULL;
}

/* Reader for reply bodies; any overrun sets bad. */
struct rd {
	const unsigned char *p;
	size_t len;
	int bad;
};

static uint32_t rd_u32(struct rd *r)
{
	uint32_t v;
	if (r->bad || r->len < 4) {
		r->bad = 1;
		return 0;
	}
	v = get32(r->p);
	r->p += 4;
	r->len -= 4;
	return v;
}

static uint64_t rd_u64(struct rd *r)
{
	uint64_t hi = rd_u32(r);
	return hi << 32 | rd_u32(r);
}

static const unsigned char *rd_blob(struct rd *r, size_t *n)
{
	const unsigned char *p;
	uint32_t l = rd_u32(r);
	if (r->bad || r->len < l) {
		r->bad = 1;
		*n = 0;
		return NULL;
	}
	p = r->p;
	r->p += l;
	r->len -= l;
	*n = l;
	return p;
}

static char *rd_strdup(struct rd *r)
{
	size_t n;
	const unsigned char *p = rd_blob(r, &n);
	char *s;
	if (!p)
		return NULL;
	s = malloc(n + 1);
	if (!s) {
		r->bad = 1;
		return NULL;
	}
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

static void rd_attrs(struct rd *r, struct sftp_attrs *a)
{
	uint32_t f = rd_u32(r), i, n;
	size_t l;
	memset(a, 0, sizeof *a);
	a->flags = f & ~SFTP_ATTR_EXTENDED;
	if (f & SFTP_ATTR_SIZE)
		a->size = rd_u64(r);
	if (f & SFTP_ATTR_UIDGID) {
		a->uid = rd_u32(r);
		a->gid = rd_u32(r);
	}
	if (f & SFTP_ATTR_PERMISSIONS)
		a->perm = rd_u32(r);
	if (f & SFTP_ATTR_ACMODTIME) {
		a->atime = rd_u32(r);
		a->mtime = rd_u32(r);
	}
	if (f & SFTP_ATTR_EXTENDED) {
		n = rd_u32(r);
		for (i = 0; i < n && !r->bad; i++) {
			rd_blob(r, &l);
			rd_blob(r, &l);
		}
	}
}

/* ------------------------------------------------------------------ */
/* error mapping                                                        */

static int status_errno(uint32_t st, int failure_guess)
{
	switch (st) {
	case FX_OK: return 0;
	case FX_EOF: return -ENODATA; /* internal: callers turn it into EOF */
	case FX_NO_SUCH_FILE: return -ENOENT;
	case FX_PERMISSION_DENIED: return -EACCES;
	case FX_FAILURE: return failure_guess;
	/* OpenSSH's sftp-server reports EINVAL as BAD_MESSAGE. */
	case FX_BAD_MESSAGE: return -EINVAL;
	case FX_NO_CONNECTION:
	case FX_CONNECTION_LOST: return -ENOTCONN;
	case FX_OP_UNSUPPORTED: return -ENOTSUP;
	/* codes of later protocol versions, sent by some servers anyway */
	case 9: return -EBADF;        /* INVALID_HANDLE */
	case 10: return -ENOENT;      /* NO_SUCH_PATH */
	case 11: return -EEXIST;      /* FILE_ALREADY_EXISTS */
	case 12: return -EROFS;       /* WRITE_PROTECT */
	case 13: return -ENODEV;      /* NO_MEDIA */
	case 14: return -ENOSPC;      /* NO_SPACE_ON_FILESYSTEM */
	case 15: return -EDQUOT;      /* QUOTA_EXCEEDED */
	case 17: return -EBUSY;       /* LOCK_CONFLICT */
	case 18: return -ENOTEMPTY;   /* DIR_NOT_EMPTY */
	case 19: return -ENOTDIR;     /* NOT_A_DIRECTORY */
	case 20: return -EINVAL;      /* INVALID_FILENAME */
	case 21: return -ELOOP;       /* LINK_LOOP */
	case 22: return -EPERM;       /* CANNOT_DELETE */
	case 23: return -EINVAL;      /* INVALID_PARAMETER */
	case 24: return -EISDIR;      /* FILE_IS_A_DIRECTORY */
	default: return -EIO;
	}
}

/* ------------------------------------------------------------------ */
/* request table (s->mu held)                                           */

static void tab_insert(struct sftp_client *s, struct sftp_req *r)
{
	unsigned b = r->id % HASH_SIZE;
	r->hnext = s->tab[b];
	s->tab[b] = r;
}

static struct sftp_req *tab_take(struct sftp_client *s, uint32_t id)
{
	struct sftp_req **pp = &s->tab[id % HASH_SIZE], *r;
	for (; (r = *pp); pp = &r->hnext) {
		if (r->id == id) {
			*pp = r->hnext;
			r->hnext = NULL;
			return r;
		}
	}
	return NULL;
}

static void tab_forget(struct sftp_client *s, struct sftp_req *r)
{
	struct sftp_req **pp = &s->tab[r->id % HASH_SIZE], *x;
	for (; (x = *pp); pp = &x->hnext) {
		if (x == r) {
			*pp = r->hnext;
			r->hnext = NULL;
			return;
		}
	}
}

static void fail_all(struct sftp_client *s)
{
	unsigned i;
	for (i = 0; i < HASH_SIZE; i++) {
		struct sftp_req *r;
		while ((r = s->tab[i])) {
			s->tab[i] = r->hnext;
			r->hnext = NULL;
			r->done = 1;
			r->err = s->dead_err;
			pthread_cond_signal(&r->w->cv);
		}
	}
	pthread_cond_broadcast(&s->init_cv);
}

static void client_die(struct sftp_client *s, int err, const char *msg)
{
	if (s->dead)
		return;
	s->dead = 1;
	s->dead_err = err;
	snprintf(s->dead_msg, sizeof s->dead_msg, "%s", msg);
	fail_all(s);
}

/* ------------------------------------------------------------------ */
/* I/O thread side                                                      */

static void dispatch(struct sftp_client *s, const unsigned char *p, size_t len)
{
	struct sftp_req *r;
	uint8_t type = p[0];

	if (type == FXP_VERSION) {
		if (!s->version_done) {
			s->version_body = malloc(len);
			if (s->version_body) {
				memcpy(s->version_body, p, len);
				s->version_len = len;
			}
			s->version_done = 1;
			pthread_cond_broadcast(&s->init_cv);
		}
		return;
	}
	if (len < 5) {
		client_die(s, -EPROTO, "SFTP protocol error: short packet");
		return;
	}
	r = tab_take(s, get32(p + 1));
	if (!r)
		return; /* its caller gave up (timeout or aborted pipeline) */
	r->type = type;
	if (type == FXP_DATA && r->dst) {
		uint32_t n = len >= 9 ? get32(p + 5) : 0;
		if (len < 9 || n > len - 9 || n > r->dst_cap) {
			r->err = -EPROTO; /* more than asked for, or malformed */
		} else {
			memcpy(r->dst, p + 9, n);
			r->got = n;
		}
	} else {
		r->body_len = len - 5;
		r->body = malloc(r->body_len ? r->body_len : 1);
		if (!r->body)
			r->err = -ENOMEM;
		else
			memcpy(r->body, p + 5, r->body_len);
		if (type == FXP_STATUS && len >= 9)
			r->status = get32(p + 5);
	}
	r->done = 1;
	pthread_cond_signal(&r->w->cv);
}

static int on_data(void *ud, int stream, const char *buf, size_t len)
{
	struct sftp_client *s = ud;
	const unsigned char *b = (const unsigned char *)buf;

	if (stream == 1) {
		/* sftp-server's stderr: keep the tail for error messages. */
		size_t keep = sizeof s->stderr_tail - 1, cur;
		if (len >= keep) {
			memcpy(s->stderr_tail, buf + len - keep, keep);
			s->stderr_tail[keep] = '\0';
		} else {
			cur = strlen(s->stderr_tail);
			if (cur + len > keep) {
				memmove(s->stderr_tail, s->stderr_tail + (cur + len - keep),
						keep - len);
				cur = keep - len;
			}
			memcpy(s->stderr_tail + cur, buf, len);
			s->stderr_tail[cur + len] = '\0';
		}
		return 0;
	}
	pthread_mutex_lock(&s->mu);
	while (len && !s->dead) {
		if (s->hdr_have < 4) {
			size_t n = 4 - s->hdr_have < len ? 4 - s->hdr_have : len;
			memcpy(s->hdr + s->hdr_have, b, n);
			s->hdr_have += n;
			b += n;
			len -= n;
			if (s->hdr_have < 4)
				break;
			s->pkt_len = get32(s->hdr);
			s->pkt_have = 0;
			if (s->pkt_len == 0 || s->pkt_len > MAX_IN_PACKET) {
				char msg[300];
				if (!s->version_done)
					snprintf(msg, sizeof msg, "the server's SFTP stream is "
							 "corrupt (it starts with \"%.4s\" instead of a "
							 "VERSION packet): probably a login script such "
							 "as ~/.bashrc prints text for non-interactive "
							 "shells; make it silent",
							 (const char *)s->hdr);
				else
					snprintf(msg, sizeof msg, "SFTP protocol error: packet "
							 "length %zu out of range", s->pkt_len);
				client_die(s, -EPROTO, msg);
				break;
			}
			if (s->pkt_cap < s->pkt_len) {
				unsigned char *np = realloc(s->pkt, s->pkt_len);
				if (!np) {
					client_die(s, -ENOMEM, "out of memory receiving SFTP "
							   "packet");
					break;
				}
				s->pkt = np;
				s->pkt_cap = s->pkt_len;
			}
			continue;
		}
		{
			size_t n = s->pkt_len - s->pkt_have;
			if (n > len)
				n = len;
			memcpy(s->pkt + s->pkt_have, b, n);
			s->pkt_have += n;
			b += n;
			len -= n;
			if (s->pkt_have == s->pkt_len) {
				dispatch(s, s->pkt, s->pkt_len);
				s->hdr_have = 0;
			}
		}
	}
	pthread_mutex_unlock(&s->mu);
	return 0;
}

static void on_closed(void *ud, int err, const char *why)
{
	struct sftp_client *s = ud;
	char msg[300];
	if (err < 0) {
		snprintf(msg, sizeof msg, "%s", *why ? why : "connection lost");
	} else {
		snprintf(msg, sizeof msg, "the SFTP server closed the channel"
				 "%.60s%s%.180s", why, s->stderr_tail[0] ? ": " : "",
				 s->stderr_tail);
	}
	pthread_mutex_lock(&s->mu);
	client_die(s, err == -ETIMEDOUT ? -ETIMEDOUT : -ENOTCONN, msg);
	pthread_mutex_unlock(&s->mu);
}

/* ------------------------------------------------------------------ */
/* caller side                                                          */

static void waiter_init(struct sftp_waiter *w)
{
	ssh_cond_init(&w->cv);
}

static void req_init(struct sftp_req *r, struct sftp_waiter *w)
{
	memset(r, 0, sizeof *r);
	r->w = w;
}

static void req_reset(struct sftp_req *r)
{
	free(r->body);
	r->body = NULL;
	r->body_len = 0;
	r->done = 0;
	r->err = 0;
	r->type = 0;
	r->status = 0;
	r->got = 0;
}

/* Registers r and queues the packet in b (+ data).  Without r the packet
 * goes unregistered: dispatch() drops its answer (nobody waits for it). */
static int send_req(struct sftp_client *s, struct sftp_req *r, struct sbuf *b,
					const void *data, size_t dlen)
{
	struct iovec iov[2];
	int rc;
	uint32_t id;

	if (b->oom)
		return -ENOMEM;
	pthread_mutex_lock(&s->mu);
	if (s->dead) {
		rc = s->dead_err;
		pthread_mutex_unlock(&s->mu);
		return rc;
	}
	id = s->next_id++;
	if (r) {
		r->id = id;
		r->done = 0;
		tab_insert(s, r);
	}
	pthread_mutex_unlock(&s->mu);

	put32(b->p, (uint32_t)(b->len - 4 + dlen));
	put32(b->p + 5, id);
	iov[0].iov_base = b->p;
	iov[0].iov_len = b->len;
	iov[1].iov_base = (void *)data;
	iov[1].iov_len = dlen;
	rc = s->ch->ops->writev(s->ch, iov, dlen ? 2 : 1,
						 __atomic_load_n(&s->timeout_ms, __ATOMIC_RELAXED));
	if (rc && r) {
		pthread_mutex_lock(&s->mu);
		tab_forget(s, r);
		if (rc == -EPIPE)
			rc = s->dead ? s->dead_err : -ENOTCONN;
		pthread_mutex_unlock(&s->mu);
	}
	return rc;
}

/* Waits for r; on timeout r is withdrawn so a late reply is dropped. */
static int wait_req(struct sftp_client *s, struct sftp_req *r)
{
	int64_t deadline = ssh_now_ms() +
					   __atomic_load_n(&s->timeout_ms, __ATOMIC_RELAXED);
	pthread_mutex_lock(&s->mu);
	while (!r->done) {
		if (ssh_cond_wait_until(&r->w->cv, &s->mu, deadline) == ETIMEDOUT &&
			!r->done) {
			tab_forget(s, r);
			r->done = 1;
			r->err = -ETIMEDOUT;
		}
	}
	pthread_mutex_unlock(&s->mu);
	return r->err;
}

/* Withdraws r if still pending (used when abandoning a pipeline). */
static void cancel_req(struct sftp_client *s, struct sftp_req *r)
{
	pthread_mutex_lock(&s->mu);
	if (!r->done) {
		tab_forget(s, r);
		r->done = 1;
		r->err = -ECANCELED;
	}
	pthread_mutex_unlock(&s->mu);
}

/* One request, one reply.  Frees b. */
static int call(struct sftp_client *s, struct sbuf *b, const void *data,
				size_t dlen, struct sftp_req *r, struct sftp_waiter *w)
{
	int rc;
	waiter_init(w);
	req_init(r, w);
	rc = send_req(s, r, b, data, dlen);
	sb_free(b);
	if (rc == 0)
		rc = wait_req(s, r);
	return rc;
}

/* Two requests sent back to back and both waited for: the server handles
 * them in order, so the second sees what the first did, in one round trip.
 * *rc2 is the second's link-level result. Frees b1 and b2. */
static int pair_call(struct sftp_client *s, struct sbuf *b1, struct sbuf *b2,
					 struct sftp_req *r1, struct sftp_req *r2,
					 struct sftp_waiter *w, int *rc2)
{
	waiter_init(w);
	req_init(r1, w);
	req_init(r2, w);
	int rc = send_req(s, r1, b1, NULL, 0);
	*rc2 = rc ? rc : send_req(s, r2, b2, NULL, 0);
	sb_free(b1);
	sb_free(b2);
	if (rc == 0)
		rc = wait_req(s, r1);
	if (*rc2 == 0)
		*rc2 = wait_req(s, r2);
	return rc;
}

static void pair_done(struct sftp_req *r1, struct sftp_req *r2,
					  struct sftp_waiter *w)
{
	free(r2->body);
	r2->body = NULL;
	free(r1->body);
	r1->body = NULL;
	pthread_cond_destroy(&w->cv);
}

static void call_done(struct sftp_req *r, struct sftp_waiter *w)
{
	free(r->body);
	r->body = NULL;
	pthread_cond_destroy(&w->cv);
}

static int expect_status(const struct sftp_req *r, int failure_guess)
{
	if (r->type != FXP_STATUS || r->body_len < 4)
		return -EPROTO;
	return status_errno(r->status, failure_guess);
}

/* Generic "send b, expect STATUS" */
static int simple_call(struct sftp_client *s, struct sbuf *b, int failure_guess)
{
	struct sftp_req r;
	struct sftp_waiter w;
	int rc = call(s, b, NULL, 0, &r, &w);
	if (rc == 0)
		rc = expect_status(&r, failure_guess);
	call_done(&r, &w);
	return rc;
}

static int expect_handle(const struct sftp_req *r, struct sftp_handle **out,
						 int failure_guess)
{
	struct rd d = { r->body, r->body_len, 0 };
	const unsigned char *p;
	size_t n;
	struct sftp_handle *h;
	if (r->type == FXP_STATUS)
		return expect_status(r, failure_guess) ?: -EPROTO;
	if (r->type != FXP_HANDLE)
		return -EPROTO;
	p = rd_blob(&d, &n);
	if (!p || n > MAX_HANDLE)
		return -EPROTO;
	h = malloc(sizeof *h);
	if (!h)
		return -ENOMEM;
	h->len = (uint32_t)n;
	memcpy(h->data, p, n);
	*out = h;
	return 0;
}

static int expect_attrs(const struct sftp_req *r, struct sftp_attrs *a)
{
	struct rd d = { r->body, r->body_len, 0 };
	if (r->type == FXP_STATUS)
		return expect_status(r, -EIO) ?: -EPROTO;
	if (r->type != FXP_ATTRS)
		return -EPROTO;
	rd_attrs(&d, a);
	return d.bad ? -EPROTO : 0;
}

static int expect_one_name(const struct sftp_req *r, char **out)
{
	struct rd d = { r->body, r->body_len, 0 };
	char *name;
	if (r->type == FXP_STATUS)
		return expect_status(r, -EIO) ?: -EPROTO;
	if (r->type != FXP_NAME || rd_u32(&d) < 1)
		return -EPROTO;
	name = rd_strdup(&d);
	if (!name)
		return d.bad ? -EPROTO : -ENOMEM;
	*out = name;
	return 0;
}

/* ------------------------------------------------------------------ */
/* client lifecycle                                                     */

static void parse_version(struct sftp_client *s, const unsigned char *p, size_t len,
						  uint32_t *version)
{
	struct rd d = { p + 1, len - 1, 0 };
	*version = rd_u32(&d);
	while (!d.bad && d.len) {
		size_t nl, vl;
		const unsigned char *n = rd_blob(&d, &nl);
		const unsigned char *v = rd_blob(&d, &vl);
		if (d.bad)
			break;
#define EXT_IS(name, ver) (nl == sizeof(name) - 1 && \
		memcmp(n, name, nl) == 0 && vl == 1 && v[0] == (ver))
		if (EXT_IS("posix-rename@openssh.com", '1'))
			s->exts |= SFTP_EXT_POSIX_RENAME;
		else if (EXT_IS("statvfs@openssh.com", '2'))
			s->exts |= SFTP_EXT_STATVFS;
		else if (EXT_IS("fstatvfs@openssh.com", '2'))
			s->exts |= SFTP_EXT_FSTATVFS;
		else if (EXT_IS("hardlink@openssh.com", '1'))
			s->exts |= SFTP_EXT_HARDLINK;
		else if (EXT_IS("fsync@openssh.com", '1'))
			s->exts |= SFTP_EXT_FSYNC;
		else if (EXT_IS("lsetstat@openssh.com", '1'))
			s->exts |= SFTP_EXT_LSETSTAT;
		else if (EXT_IS("limits@openssh.com", '1'))
			s->exts |= SFTP_EXT_LIMITS;
#undef EXT_IS
	}
}

static void query_limits(struct sftp_client *s)
{
	struct sbuf b;
	struct sftp_req r;
	struct sftp_waiter w;
	sb_start(&b, FXP_EXTENDED);
	sb_str(&b, "limits@openssh.com");
	if (call(s, &b, NULL, 0, &r, &w) == 0 && r.type == FXP_EXTENDED_REPLY) {
		struct rd d = { r.body, r.body_len, 0 };
		uint64_t maxpkt = rd_u64(&d), maxrd = rd_u64(&d);
		uint64_t maxwr = rd_u64(&d);
		(void)maxpkt;
		/* 0 means "no limit"; keep our cap then, and never exceed what
		 * our own packet parser accepts. */
		if (!d.bad && maxrd)
			s->max_read = maxrd < MAX_IN_PACKET - 1024 ? (size_t)maxrd
													  : MAX_IN_PACKET - 1024;
		if (!d.bad && maxwr)
			s->max_write = maxwr < (1u << 20) ? (size_t)maxwr : (1u << 20);
	}
	call_done(&r, &w);
}

/* Opens the client on a stream that opener() starts with the client's
 * callbacks: the "sftp" subsystem of an SSH connection, or an exec of an
 * SFTP server binary (over SSH or in a container), which speaks the same
 * protocol on its stdin and stdout. */
int sftp_client_open_stream(bytestream_open_fn opener, void *arg,
							struct sftp_client **out, char *err, size_t errlen)
{
	static const struct bytestream_cbs cbs = { on_data, on_closed };
	struct sftp_client *s;
	unsigned char init[9];
	struct iovec iov = { init, sizeof init };
	int64_t deadline;
	uint32_t version = 0;
	int rc;

	*out = NULL;
	s = calloc(1, sizeof *s);
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	s->refs = 1;
	s->next_id = 1;
	s->max_read = s->max_write = DEFAULT_MAX_IO;
	pthread_mutex_init(&s->mu, NULL);
	ssh_cond_init(&s->init_cv);

	rc = opener(arg, &cbs, s, &s->ch, err, errlen);
	if (rc) {
		pthread_mutex_destroy(&s->mu);
		pthread_cond_destroy(&s->init_cv);
		free(s);
		return rc;
	}
	s->timeout_ms = s->ch->timeout_ms;
	put32(init, 5);
	init[4] = FXP_INIT;
	put32(init + 5, 3);
	rc = s->ch->ops->writev(s->ch, &iov, 1, s->timeout_ms);
	deadline = ssh_now_ms() + s->timeout_ms;
	pthread_mutex_lock(&s->mu);
	while (rc == 0 && !s->version_done && !s->dead) {
		if (ssh_cond_wait_until(&s->init_cv, &s->mu, deadline) == ETIMEDOUT
			&& !s->version_done && !s->dead)
			rc = -ETIMEDOUT;
	}
	if (rc)
		snprintf(err, errlen, "SFTP version negotiation failed: %s",
				 rc == -ETIMEDOUT ? "no answer from the server" :
				 strerror(-rc));
	else if (s->dead) {
		rc = s->dead_err;
		snprintf(err, errlen, "SFTP version negotiation failed: %s",
				 s->dead_msg);
	} else if (!s->version_body || s->version_len < 5) {
		rc = -EPROTO;
		snprintf(err, errlen, "SFTP version negotiation failed: malformed "
				 "VERSION packet");
	} else {
		parse_version(s, s->version_body, s->version_len, &version);
		if (version < 3) {
			rc = -EPROTONOSUPPORT;
			snprintf(err, errlen, "the SFTP server speaks protocol version "
					 "%u; version 3 is required", version);
		}
	}
	pthread_mutex_unlock(&s->mu);
	if (rc) {
		sftp_client_close(s);
		return rc;
	}
	if (s->exts & SFTP_EXT_LIMITS)
		query_limits(s);
	*out = s;
	return 0;
}

struct ssh_open_arg {
	struct ssh_conn *c;
	const char *request, *arg;
};

static int open_ssh(void *arg, const struct bytestream_cbs *cbs, void *ud,
					struct bytestream **out, char *err, size_t errlen)
{
	const struct ssh_open_arg *a = arg;
	return bytestream_ssh_open(a->c, a->request, a->arg, cbs, ud, out, err,
							   errlen);
}

int sftp_client_open(struct ssh_conn *c, struct sftp_client **out, char *err,
					 size_t errlen)
{
	struct ssh_open_arg a = { c, "subsystem", "sftp" };
	return sftp_client_open_stream(open_ssh, &a, out, err, errlen);
}

int sftp_client_open_exec(struct ssh_conn *c, const char *command,
						  struct sftp_client **out, char *err, size_t errlen)
{
	struct ssh_open_arg a = { c, "exec", command };
	return sftp_client_open_stream(open_ssh, &a, out, err, errlen);
}

void sftp_client_shutdown(struct sftp_client *s, const char *why)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	client_die(s, -ENOTCONN, why);
	pthread_mutex_unlock(&s->mu);
	/* The server exits at the end of its input; sshd then closes the
	 * channel. The channel itself stays ours until sftp_client_close. */
	s->ch->ops->send_eof(s->ch);
}

void sftp_client_close(struct sftp_client *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	client_die(s, -ENOTCONN, "SFTP client closed");
	pthread_mutex_unlock(&s->mu);
	/* After release no callback can touch s any more. */
	s->ch->ops->release(s->ch);
	free(s->pkt);
	free(s->version_body);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->init_cv);
	free(s);
}

void sftp_client_ref(struct sftp_client *s)
{
	__atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
}

void sftp_client_unref(struct sftp_client *s)
{
	if (s && __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0)
		sftp_client_close(s);
}

uint32_t sftp_extensions(const struct sftp_client *s)
{
	return s->exts;
}

size_t sftp_max_read(const struct sftp_client *s)
{
	return s->max_read;
}

size_t sftp_max_write(const struct sftp_client *s)
{
	return s->max_write;
}

void sftp_set_timeout(struct sftp_client *s, int timeout_ms)
{
	__atomic_store_n(&s->timeout_ms, timeout_ms > 0 ? timeout_ms
									 : s->ch->timeout_ms,
					 __ATOMIC_RELAXED);
}

int sftp_client_error(struct sftp_client *s, char *buf, size_t len)
{
	int e;
	pthread_mutex_lock(&s->mu);
	e = s->dead ? s->dead_err : 0;
	if (buf && len)
		snprintf(buf, len, "%s", s->dead ? s->dead_msg : "");
	pthread_mutex_unlock(&s->mu);
	return e;
}

uint32_t sftp_flags_from_posix(int oflags)
{
	uint32_t f = 0;
	switch (oflags & O_ACCMODE) {
	case O_RDONLY: f = SFTP_READ; break;
	case O_WRONLY: f = SFTP_WRITE; break;
	default: f = SFTP_READ | SFTP_WRITE; break;
	}
	if (oflags & O_APPEND)
		f |= SFTP_APPEND;
	if (oflags & O_CREAT)
		f |= SFTP_CREAT;
	if (oflags & O_TRUNC)
		f |= SFTP_TRUNC;
	if (oflags & O_EXCL)
		f |= SFTP_EXCL;
	return f;
}

/* ------------------------------------------------------------------ */
/* operations                                                           */

static int path_op(struct sftp_client *s, uint8_t type, const char *path,
				   int failure_guess)
{
	struct sbuf b;
	sb_start(&b, type);
	sb_str(&b, path);
	return simple_call(s, &b, failure_guess);
}

static void sb_two_path(struct sbuf *b, uint8_t type, const char *ext,
						const char *a, const char *bpath)
{
	sb_start(b, type);
	if (ext)
		sb_str(b, ext);
	sb_str(b, a);
	sb_str(b, bpath);
}

static int two_path_op(struct sftp_client *s, uint8_t type, const char *ext,
					   const char *a, const char *bpath, int failure_guess)
{
	struct sbuf b;
	sb_two_path(&b, type, ext, a, bpath);
	return simple_call(s, &b, failure_guess);
}

static int open_common(struct sftp_client *s, uint8_t type, const char *path,
					   uint32_t pflags, const struct sftp_attrs *attrs,
					   struct sftp_handle **out)
{
	struct sbuf b;
	struct sftp_req r;
	struct sftp_waiter w;
	int rc;
	*out = NULL;
	sb_start(&b, type);
	sb_str(&b, path);
	if (type == FXP_OPEN) {
		sb_u32(&b, pflags);
		sb_attrs(&b, attrs);
	}
	rc = call(s, &b, NULL, 0, &r, &w);
	if (rc == 0)
		rc = expect_handle(&r, out, (pflags & SFTP_EXCL) ? -EEXIST : -EIO);
	call_done(&r, &w);
	return rc;
}

int sftp_open(struct sftp_client *s, const char *path, uint32_t pflags,
			  const struct sftp_attrs *attrs, struct sftp_handle **out)
{
	return open_common(s, FXP_OPEN, path, pflags, attrs, out);
}

/* OPEN and LSTAT of the same path sent back to back: the server handles
 * them in order, so the LSTAT sees what the OPEN made, and a create costs
 * one round trip instead of two (sshfs sends the same pair). */
int sftp_open_lstat(struct sftp_client *s, const char *path, uint32_t pflags,
					const struct sftp_attrs *attrs, struct sftp_handle **out,
					struct sftp_attrs *a)
{
	struct sbuf bo, bs;
	struct sftp_req ro, rs;
	struct sftp_waiter w;
	int rc, rcs;
	*out = NULL;
	sb_start(&bo, FXP_OPEN);
	sb_str(&bo, path);
	sb_u32(&bo, pflags);
	sb_attrs(&bo, attrs);
	sb_start(&bs, FXP_LSTAT);
	sb_str(&bs, path);
	rc = pair_call(s, &bo, &bs, &ro, &rs, &w, &rcs);
	if (rc == 0)
		rc = expect_handle(&ro, out, (pflags & SFTP_EXCL) ? -EEXIST : -EIO);
	if (rcs == 0)
		rcs = expect_attrs(&rs, a);
	/* FAILURE was guessed EEXIST, but nothing is in the way */
	if (rc == -EEXIST && rcs == -ENOENT)
		rc = -EIO;
	if (rc == 0 && rcs != 0)
		rc = sftp_fstat(s, *out, a); /* the handle is good: ask again */
	if (rc != 0 && *out) {
		sftp_close(s, *out);
		*out = NULL;
	}
	pair_done(&ro, &rs, &w);
	return rc;
}

int sftp_opendir(struct sftp_client *s, const char *path, struct sftp_handle **out)
{
	return open_common(s, FXP_OPENDIR, path, 0, NULL, out);
}

static void sb_handle(struct sbuf *b, const struct sftp_handle *h)
{
	sb_blob(b, h->data, h->len);
}

int sftp_close(struct sftp_client *s, struct sftp_handle *h)
{
	struct sbuf b;
	int rc;
	if (!h)
		return -EBADF;
	sb_start(&b, FXP_CLOSE);
	sb_handle(&b, h);
	rc = simple_call(s, &b, -EIO);
	free(h);
	return rc;
}

/* CLOSE without waiting for the reply: the id is never registered, so
 * dispatch() drops the answer.  Requests sent later on this client are
 * handled after it, in order. */
void sftp_close_nowait(struct sftp_client *s, struct sftp_handle *h)
{
	struct sbuf b;
	if (!h)
		return;
	sb_start(&b, FXP_CLOSE);
	sb_handle(&b, h);
	free(h);
	(void)send_req(s, NULL, &b, NULL, 0);
	sb_free(&b);
}

int sftp_read(struct sftp_client *s, struct sftp_handle *h, uint64_t off, void *buf,
			  size_t len, size_t *got)
{
	struct sbuf b;
	struct sftp_req r;
	struct sftp_waiter w;
	int rc;

	*got = 0;
	if (len > s->max_read)
		len = s->max_read;
	sb_start(&b, FXP_READ);
	sb_handle(&b, h);
	sb_u64(&b, off);
	sb_u32(&b, (uint32_t)len);
	waiter_init(&w);
	req_init(&r, &w);
	r.dst = buf;
	r.dst_cap = len;
	rc = send_req(s, &r, &b, NULL, 0);
	sb_free(&b);
	if (rc == 0)
		rc = wait_req(s, &r);
	if (rc == 0) {
		if (r.type == FXP_DATA)
			*got = r.got;
		else {
			rc = expect_status(&r, -EIO);
			if (rc == -ENODATA || rc == 0)
				rc = 0; /* EOF */
		}
	}
	call_done(&r, &w);
	return rc;
}

int sftp_write(struct sftp_client *s, struct sftp_handle *h, uint64_t off,
			   const void *buf, size_t len)
{
	struct sbuf b;
	struct sftp_req r;
	struct sftp_waiter w;
	int rc;
	if (len > s->max_write)
		return -EMSGSIZE;
	sb_start(&b, FXP_WRITE);
	sb_handle(&b, h);
	sb_u64(&b, off);
	sb_u32(&b, (uint32_t)len);
	rc = call(s, &b, buf, len, &r, &w);
	if (rc == 0)
		rc = expect_status(&r, -EIO);
	call_done(&r, &w);
	return rc;
}

static int stat_common(struct sftp_client *s, uint8_t type, const char *path,
					   const struct sftp_handle *h, struct sftp_attrs *a)
{
	struct sbuf b;
	struct sftp_req r;
	struct sftp_waiter w;
	int rc;
	sb_start(&b, type);
	if (h)
		sb_handle(&b, h);
	else
		sb_str(&b, path);
	rc = call(s, &b, NULL, 0, &r, &w);
	if (rc == 0)
		rc = expect_attrs(&r, a);
	call_done(&r, &w);
	return rc;
}

int sftp_stat(struct sftp_client *s, const char *path, struct sftp_attrs *a)
{
	return stat_common(s, FXP_STAT, path, NULL, a);
}

int sftp_lstat(struct sftp_client *s, const char *path, struct sftp_attrs *a)
{
	return stat_common(s, FXP_LSTAT, path, NULL, a);
}

int sftp_fstat(struct sftp_client *s, struct sftp_handle *h, struct sftp_attrs *a)
{
	return stat_common(s, FXP_FSTAT, NULL, h, a);
}

int sftp_setstat(struct sftp_client *s, const char *path, const struct sftp_attrs *a)
{
	struct sbuf b;
	sb_start(&b, FXP_SETSTAT);
	sb_str(&b, path);
	sb_attrs(&b, a);
	return simple_call(s, &b, -EPERM);
}

int sftp_lsetstat(struct sftp_client *s, const char *path, const struct sftp_attrs *a)
{
	struct sbuf b;
	if (!(s->exts & SFTP_EXT_LSETSTAT))
		return -ENOTSUP;
	sb_start(&b, FXP_EXTENDED);
	sb_str(&b, "lsetstat@openssh.com");
	sb_str(&b, path);
	sb_attrs(&b, a);
	return simple_call(s, &b, -EPERM);
}

int sftp_fsetstat(struct sftp_client *s, struct sftp_handle *h, const struct sftp_attrs *a)
{
	struct sbuf b;
	sb_start(&b, FXP_FSETSTAT);
	sb_handle(&b, h);
	sb_attrs(&b, a);
	return simple_call(s, &b, -EPERM);
}

void sftp_dirents_free(struct sftp_dirent *ents, size_t n)
{
	size_t i;
	for (i = 0; ents && i < n; i++) {
		free(ents[i].name);
		free(ents[i].longname);
	}
	free(ents);
}

/* A READDIR's reply: its entries (*n may be 0), -ENODATA at the end of
 * the directory, or another negative errno. */
static int parse_names(const struct sftp_req *r, struct sftp_dirent **ents, size_t *n)
{
	*ents = NULL;
	*n = 0;
	if (r->type == FXP_STATUS) {
		int rc = expect_status(r, -EIO);
		return rc == 0 ? -EPROTO : rc;
	}
	if (r->type != FXP_NAME)
		return -EPROTO;
	struct rd d = { r->body, r->body_len, 0 };
	uint32_t count = rd_u32(&d), i;
	struct sftp_dirent *e;
	/* Each entry takes at least 12 bytes: bound the allocation by what
	 * the packet can actually hold. */
	if (d.bad || count > d.len / 12 + 1)
		return -EPROTO;
	if (!(e = calloc(count ? count : 1, sizeof *e)))
		return -ENOMEM;
	for (i = 0; i < count && !d.bad; i++) {
		e[i].name = rd_strdup(&d);
		e[i].longname = rd_strdup(&d);
		rd_attrs(&d, &e[i].attrs);
	}
	if (d.bad) {
		sftp_dirents_free(e, count);
		return -EPROTO;
	}
	*ents = e;
	*n = count;
	return 0;
}

int sftp_readdir(struct sftp_client *s, struct sftp_handle *h, struct sftp_dirent **ents,
				 size_t *n)
{
	struct sbuf b;
	struct sftp_req r;
	struct sftp_waiter w;
	int rc;

	*ents = NULL;
	*n = 0;
	sb_start(&b, FXP_READDIR);
	sb_handle(&b, h);
	rc = call(s, &b, NULL, 0, &r, &w);
	if (rc == 0) {
		rc = parse_names(&r, ents, n);
		if (rc == -ENODATA)
			rc = 0; /* end of directory */
	}
	call_done(&r, &w);
	return rc;
}

/* Waits for r in a batch: once one request of the batch timed out or the
 * link died (*broken), the rest are withdrawn, not waited for each in
 * turn (a batch of k must not take k timeouts). */
static int batch_wait(struct sftp_client *s, struct sftp_req *r, int *broken)
{
	int rc;
	if (*broken) {
		cancel_req(s, r);
		return *broken;
	}
	rc = wait_req(s, r);
	if (rc == -ETIMEDOUT || rc == -ENOTCONN)
		*broken = rc;
	return rc;
}

/* Appends the k entries of more to l's (more's array is freed). */
static int list_append(struct sftp_listing *l, struct sftp_dirent *more, size_t k)
{
	struct sftp_dirent *ne;
	if (!k) {
		free(more);
		return 0;
	}
	ne = realloc(l->ents, (l->n + k) * sizeof *ne);
	if (!ne) {
		sftp_dirents_free(more, k);
		return -ENOMEM;
	}
	memcpy(ne + l->n, more, k * sizeof *ne);
	free(more);
	l->ents = ne;
	l->n += k;
	return 0;
}

/* READDIRs in flight per directory: OpenSSH answers up to 100 names per
 * READDIR, so two tell a small directory's entries and its end at once;
 * a directory not at its end gets twice as many the next round, up to
 * LIST_MAX (a directory of 10,000 names: 7 round trips, not 50). */
#define LIST_AHEAD 2u
#define LIST_MAX 16u

/* What sftp_list_dirs and sftp_read_files share: k items of `per`
 * requests each, a handle and a "sent" mark per item, one waiter for all. */
struct batch {
	struct sftp_req *rq;
	struct sftp_handle **h;
	unsigned char *sent;
	struct sftp_waiter w;
};

static int batch_init(struct batch *b, size_t k, size_t per)
{
	b->rq = calloc(k * per + 1, sizeof(*b->rq));
	b->h = calloc(k + 1, sizeof(*b->h));
	b->sent = calloc(k + 1, 1);
	if (!b->rq || !b->h || !b->sent) {
		free(b->rq);
		free(b->h);
		free(b->sent);
		return -ENOMEM;
	}
	waiter_init(&b->w);
	for (size_t i = 0; i < k * per; i++)
		req_init(&b->rq[i], &b->w);
	return 0;
}

static void batch_free(struct batch *b)
{
	pthread_cond_destroy(&b->w.cv);
	free(b->rq);
	free(b->h);
	free(b->sent);
}

int sftp_list_dirs(struct sftp_client *s, struct sftp_listing *ls, size_t k)
{
	struct batch bt;
	size_t i, j, live;
	int rc, broken = 0;

	for (i = 0; i < k; i++) {
		ls[i].rc = 0;
		ls[i].ents = NULL;
		ls[i].n = 0;
	}
	unsigned ahead = LIST_AHEAD;
	if (batch_init(&bt, k, LIST_MAX) < 0) {
		for (i = 0; i < k; i++)
			ls[i].rc = -ENOMEM;
		return -ENOMEM;
	}
	struct sftp_req *rq = bt.rq;
	struct sftp_handle **h = bt.h;
	unsigned char *sent = bt.sent;

	/* Every OPENDIR at once, then their handles. */
	for (i = 0; i < k; i++) {
		struct sbuf b;
		sb_start(&b, FXP_OPENDIR);
		sb_str(&b, ls[i].path);
		rc = send_req(s, &rq[i * LIST_MAX], &b, NULL, 0);
		sb_free(&b);
		ls[i].rc = rc;
		sent[i] = rc == 0;
	}
	for (i = 0; i < k; i++) {
		struct sftp_req *r = &rq[i * LIST_MAX];
		if (!sent[i])
			continue;
		rc = batch_wait(s, r, &broken);
		if (rc == 0)
			rc = expect_handle(r, &h[i], -EIO);
		ls[i].rc = rc;
		req_reset(r);
	}

	/* Rounds of `ahead` READDIRs per open directory not yet at its end,
	 * all sent before any is waited for. */
	do {
		live = 0;
		for (i = 0; i < k; i++) {
			sent[i] = 0;
			if (!h[i] || ls[i].rc)
				continue;
			for (j = 0; j < ahead; j++) {
				struct sbuf b;
				sb_start(&b, FXP_READDIR);
				sb_handle(&b, h[i]);
				rc = send_req(s, &rq[i * LIST_MAX + j], &b, NULL, 0);
				sb_free(&b);
				if (rc) {
					ls[i].rc = rc;
					break;
				}
				sent[i]++;
			}
		}
		for (i = 0; i < k; i++) {
			int end = 0;
			for (j = 0; j < sent[i]; j++) {
				struct sftp_req *r = &rq[i * LIST_MAX + j];
				struct sftp_dirent *e = NULL;
				size_t n = 0;
				rc = batch_wait(s, r, &broken);
				if (rc == 0 && !end && !ls[i].rc) {
					rc = parse_names(r, &e, &n);
					if (rc == 0)
						rc = list_append(&ls[i], e, n);
					if (rc == -ENODATA) {
						end = 1;
						rc = 0;
					}
				}
				if (rc && !ls[i].rc)
					ls[i].rc = rc;
				req_reset(r);
			}
			if (sent[i] && !end && !ls[i].rc) {
				live++;
			} else if (sent[i]) {
				sftp_close_nowait(s, h[i]);
				h[i] = NULL;
			}
		}
		if (ahead < LIST_MAX)
			ahead *= 2;
	} while (live);

	/* Handles left (a failed send): closed without waiting too. */
	for (i = 0; i < k; i++) {
		if (h[i])
			sftp_close_nowait(s, h[i]);
		if (ls[i].rc) {
			sftp_dirents_free(ls[i].ents, ls[i].n);
			ls[i].ents = NULL;
			ls[i].n = 0;
		}
	}
	for (i = 0; i < k * LIST_MAX; i++)
		cancel_req(s, &rq[i]);
	batch_free(&bt);
	return 0;
}

int sftp_read_files(struct sftp_client *s, struct sftp_fileread *fr, size_t k)
{
	struct batch bt;
	size_t i;
	int rc, broken = 0;

	for (i = 0; i < k; i++) {
		fr[i].rc = 0;
		fr[i].data = NULL;
		fr[i].got = 0;
	}
	if (batch_init(&bt, k, 1) < 0) {
		for (i = 0; i < k; i++)
			fr[i].rc = -ENOMEM;
		return -ENOMEM;
	}
	struct sftp_req *rq = bt.rq;
	struct sftp_handle **h = bt.h;
	unsigned char *sent = bt.sent;

	/* Every OPEN at once, then their handles. */
	for (i = 0; i < k; i++) {
		struct sbuf b;
		if (fr[i].want > s->max_read || !(fr[i].data = malloc(fr[i].want ? fr[i].want : 1))) {
			fr[i].rc = fr[i].want > s->max_read ? -EFBIG : -ENOMEM;
			continue;
		}
		sb_start(&b, FXP_OPEN);
		sb_str(&b, fr[i].path);
		sb_u32(&b, SFTP_READ);
		sb_attrs(&b, NULL);
		rc = send_req(s, &rq[i], &b, NULL, 0);
		sb_free(&b);
		fr[i].rc = rc;
		sent[i] = rc == 0;
	}
	for (i = 0; i < k; i++) {
		if (!sent[i])
			continue;
		rc = batch_wait(s, &rq[i], &broken);
		if (rc == 0)
			rc = expect_handle(&rq[i], &h[i], -EIO);
		fr[i].rc = rc;
		req_reset(&rq[i]);
	}

	/* One READ per handle, all at once, each followed by its CLOSE (not
	 * waited for: a read-only handle has nothing to report). */
	for (i = 0; i < k; i++) {
		struct sbuf b;
		sent[i] = 0;
		if (!h[i])
			continue;
		rq[i].dst = fr[i].data;
		rq[i].dst_cap = fr[i].want;
		sb_start(&b, FXP_READ);
		sb_handle(&b, h[i]);
		sb_u64(&b, 0);
		sb_u32(&b, (uint32_t)fr[i].want);
		rc = send_req(s, &rq[i], &b, NULL, 0);
		sb_free(&b);
		fr[i].rc = rc;
		sent[i] = rc == 0;
		sftp_close_nowait(s, h[i]);
		h[i] = NULL;
	}
	for (i = 0; i < k; i++) {
		if (!sent[i])
			continue;
		rc = batch_wait(s, &rq[i], &broken);
		if (rc == 0) {
			if (rq[i].type == FXP_DATA) {
				fr[i].got = rq[i].got;
			} else {
				rc = expect_status(&rq[i], -EIO);
				if (rc == -ENODATA)
					rc = 0; /* empty */
				else if (rc == 0)
					rc = -EPROTO;
			}
		}
		fr[i].rc = rc;
		req_reset(&rq[i]);
	}
	for (i = 0; i < k; i++) {
		cancel_req(s, &rq[i]);
		free(rq[i].body);
		if (fr[i].rc) {
			free(fr[i].data);
			fr[i].data = NULL;
			fr[i].got = 0;
		}
	}
	batch_free(&bt);
	return 0;
}

/* Sends b (a request answered by STATUS) and an LSTAT of lpath back to
 * back, one round trip for both: the LSTAT shows what b made, or what was
 * in its way when it failed. *lrc gets the LSTAT's result. Frees b. */
static int status_then_lstat(struct sftp_client *s, struct sbuf *b, int failure_guess,
							 const char *lpath, struct sftp_attrs *a, int *lrc)
{
	struct sbuf bs;
	struct sftp_req r1, r2;
	struct sftp_waiter w;
	int rc2;
	sb_start(&bs, FXP_LSTAT);
	sb_str(&bs, lpath);
	int rc = pair_call(s, b, &bs, &r1, &r2, &w, &rc2);
	if (rc == 0)
		rc = expect_status(&r1, failure_guess);
	if (rc2 == 0)
		rc2 = expect_attrs(&r2, a);
	*lrc = rc2;
	pair_done(&r1, &r2, &w);
	return rc;
}

static void sb_mkdir(struct sbuf *b, const char *path, uint32_t mode)
{
	struct sftp_attrs a;
	memset(&a, 0, sizeof a);
	a.flags = SFTP_ATTR_PERMISSIONS;
	a.perm = mode & 07777;
	sb_start(b, FXP_MKDIR);
	sb_str(b, path);
	sb_attrs(b, &a);
}

int sftp_mkdir(struct sftp_client *s, const char *path, uint32_t mode)
{
	struct sbuf b;
	sb_mkdir(&b, path, mode);
	/* sftp-server reports EEXIST (the usual cause) as FAILURE */
	return simple_call(s, &b, -EEXIST);
}

int sftp_mkdir_lstat(struct sftp_client *s, const char *path, uint32_t mode,
					 struct sftp_attrs *a, int *lrc)
{
	struct sbuf b;
	sb_mkdir(&b, path, mode);
	return status_then_lstat(s, &b, -EEXIST, path, a, lrc);
}

int sftp_rmdir(struct sftp_client *s, const char *path)
{
	/* the usual FAILURE of rmdir is a directory that is not empty */
	return path_op(s, FXP_RMDIR, path, -ENOTEMPTY);
}

int sftp_remove(struct sftp_client *s, const char *path)
{
	return path_op(s, FXP_REMOVE, path, -EIO);
}

struct sftp_later {
	struct sftp_req r;
	struct sftp_waiter w;
	int failure_guess;
};

/* Sends b (freed) and registers its answer for sftp_later_wait. */
static int later_send(struct sftp_client *s, struct sbuf *b, int failure_guess, struct sftp_later **out)
{
	struct sftp_later *l = calloc(1, sizeof(*l));
	int rc = l ? 0 : -ENOMEM;
	if (l) {
		waiter_init(&l->w);
		req_init(&l->r, &l->w);
		l->failure_guess = failure_guess;
		rc = send_req(s, &l->r, b, NULL, 0);
		if (rc) {
			call_done(&l->r, &l->w);
			free(l);
		} else {
			*out = l;
		}
	}
	sb_free(b);
	return rc;
}

int sftp_remove_later(struct sftp_client *s, const char *path, struct sftp_later **out)
{
	struct sbuf b;
	sb_start(&b, FXP_REMOVE);
	sb_str(&b, path);
	return later_send(s, &b, -EIO, out);
}

int sftp_mkdir_later(struct sftp_client *s, const char *path, uint32_t mode, struct sftp_later **out)
{
	struct sbuf b;
	sb_mkdir(&b, path, mode);
	return later_send(s, &b, -EEXIST, out);
}

int sftp_setstat_later(struct sftp_client *s, const char *path, const struct sftp_attrs *a, struct sftp_later **out)
{
	struct sbuf b;
	sb_start(&b, FXP_SETSTAT);
	sb_str(&b, path);
	sb_attrs(&b, a);
	return later_send(s, &b, -EPERM, out);
}

int sftp_later_done(struct sftp_client *s, struct sftp_later *l)
{
	pthread_mutex_lock(&s->mu);
	int done = l->r.done;
	pthread_mutex_unlock(&s->mu);
	return done;
}

int sftp_later_wait(struct sftp_client *s, struct sftp_later *l)
{
	int rc = wait_req(s, &l->r);
	if (rc == 0)
		rc = expect_status(&l->r, l->failure_guess);
	call_done(&l->r, &l->w);
	free(l);
	return rc;
}

int sftp_rename(struct sftp_client *s, const char *oldpath, const char *newpath)
{
	/* OpenSSH's plain rename refuses an existing target with FAILURE */
	return two_path_op(s, FXP_RENAME, NULL, oldpath, newpath, -EEXIST);
}

int sftp_posix_rename(struct sftp_client *s, const char *oldpath,
					  const char *newpath)
{
	if (!(s->exts & SFTP_EXT_POSIX_RENAME))
		return -ENOTSUP;
	return two_path_op(s, FXP_EXTENDED, "posix-rename@openssh.com", oldpath,
					   newpath, -EIO);
}

int sftp_symlink(struct sftp_client *s, const char *target, const char *linkpath)
{
	/* OpenSSH swapped the arguments relative to the draft and every
	 * OpenSSH-compatible server followed: target first, then link path. */
	return two_path_op(s, FXP_SYMLINK, NULL, target, linkpath, -EEXIST);
}

int sftp_symlink_lstat(struct sftp_client *s, const char *target,
					   const char *linkpath, struct sftp_attrs *a, int *lrc)
{
	struct sbuf b;
	sb_two_path(&b, FXP_SYMLINK, NULL, target, linkpath);
	return status_then_lstat(s, &b, -EEXIST, linkpath, a, lrc);
}

int sftp_hardlink(struct sftp_client *s, const char *oldpath, const char *newpath)
{
	if (!(s->exts & SFTP_EXT_HARDLINK))
		return -ENOTSUP;
	return two_path_op(s, FXP_EXTENDED, "hardlink@openssh.com", oldpath,
					   newpath, -EEXIST);
}

int sftp_hardlink_lstat(struct sftp_client *s, const char *oldpath,
						const char *newpath, struct sftp_attrs *a, int *lrc)
{
	struct sbuf b;
	if (!(s->exts & SFTP_EXT_HARDLINK))
		return -ENOTSUP;
	sb_two_path(&b, FXP_EXTENDED, "hardlink@openssh.com", oldpath, newpath);
	return status_then_lstat(s, &b, -EEXIST, newpath, a, lrc);
}

static int name_op(struct sftp_client *s, uint8_t type, const char *path,
				   char **out)
{
	struct sbuf b;
	struct sftp_req r;
	struct sftp_waiter w;
	int rc;
	*out = NULL;
	sb_start(&b, type);
	sb_str(&b, path);
	rc = call(s, &b, NULL, 0, &r, &w);
	if (rc == 0)
		rc = expect_one_name(&r, out);
	call_done(&r, &w);
	return rc;
}

int sftp_readlink(struct sftp_client *s, const char *path, char **out)
{
	return name_op(s, FXP_READLINK, path, out);
}

int sftp_realpath(struct sftp_client *s, const char *path, char **out)
{
	return name_op(s, FXP_REALPATH, path, out);
}

int sftp_fsync(struct sftp_client *s, struct sftp_handle *h)
{
	struct sbuf b;
	if (!(s->exts & SFTP_EXT_FSYNC))
		return -ENOTSUP;
	sb_start(&b, FXP_EXTENDED);
	sb_str(&b, "fsync@openssh.com");
	sb_handle(&b, h);
	return simple_call(s, &b, -EIO);
}

static int statvfs_common(struct sftp_client *s, const char *path,
						  const struct sftp_handle *h, struct sftp_vfsinfo *st)
{
	struct sbuf b;
	struct sftp_req r;
	struct sftp_waiter w;
	int rc;
	sb_start(&b, FXP_EXTENDED);
	if (h) {
		sb_str(&b, "fstatvfs@openssh.com");
		sb_handle(&b, h);
	} else {
		sb_str(&b, "statvfs@openssh.com");
		sb_str(&b, path);
	}
	rc = call(s, &b, NULL, 0, &r, &w);
	if (rc == 0) {
		if (r.type == FXP_STATUS) {
			rc = expect_status(&r, -EIO) ?: -EPROTO;
		} else if (r.type != FXP_EXTENDED_REPLY) {
			rc = -EPROTO;
		} else {
			struct rd d = { r.body, r.body_len, 0 };
			st->bsize = rd_u64(&d);
			st->frsize = rd_u64(&d);
			st->blocks = rd_u64(&d);
			st->bfree = rd_u64(&d);
			st->bavail = rd_u64(&d);
			st->files = rd_u64(&d);
			st->ffree = rd_u64(&d);
			st->favail = rd_u64(&d);
			st->fsid = rd_u64(&d);
			st->flag = rd_u64(&d);
			st->namemax = rd_u64(&d);
			if (d.bad)
				rc = -EPROTO;
		}
	}
	call_done(&r, &w);
	return rc;
}

int sftp_statvfs(struct sftp_client *s, const char *path, struct sftp_vfsinfo *st)
{
	if (!(s->exts & SFTP_EXT_STATVFS))
		return -ENOTSUP;
	return statvfs_common(s, path, NULL, st);
}

int sftp_fstatvfs(struct sftp_client *s, struct sftp_handle *h, struct sftp_vfsinfo *st)
{
	if (!(s->exts & SFTP_EXT_FSTATVFS))
		return -ENOTSUP;
	return statvfs_common(s, NULL, h, st);
}

/* ------------------------------------------------------------------ */
/* pipelined transfers                                                  */

struct rslot {
	struct sftp_req r;
	uint64_t off;
	size_t want;
	unsigned char *dst;
	unsigned char *base; /* slot buffer in streaming mode */
};

static void pipe_params(const struct sftp_client *s, unsigned *depth, size_t *chunk,
						size_t max)
{
	if (!*depth)
		*depth = SFTP_DEFAULT_DEPTH;
	if (*depth > 1024)
		*depth = 1024;
	if (!*chunk)
		*chunk = SFTP_DEFAULT_CHUNK;
	if (*chunk > max)
		*chunk = max;
	(void)s;
}

static int send_read(struct sftp_client *s, struct sftp_handle *h, struct rslot *sl,
					 struct sftp_waiter *w)
{
	struct sbuf b;
	int rc;
	req_reset(&sl->r);
	sl->r.w = w;
	sl->r.dst = sl->dst;
	sl->r.dst_cap = sl->want;
	sb_start(&b, FXP_READ);
	sb_handle(&b, h);
	sb_u64(&b, sl->off);
	sb_u32(&b, (uint32_t)sl->want);
	rc = send_req(s, &sl->r, &b, NULL, 0);
	sb_free(&b);
	return rc;
}

/*
 * Read engine shared by sftp_pread_range (outbuf set: replies land in the
 * caller's buffer) and sftp_download (slot buffers, delivered in order to
 * sink).  Slots form a ring; the oldest is always the next to deliver, so
 * a short reply is simply re-requested for its remainder in place.
 */
static int read_engine(struct sftp_client *s, struct sftp_handle *h, uint64_t off,
					   uint64_t limit, unsigned char *outbuf,
					   sftp_sink_fn sink, void *ud, unsigned depth,
					   size_t chunk, uint64_t *total, uint64_t eof_at)
{
	struct rslot *slots;
	unsigned char *bufs = NULL;
	struct sftp_waiter w;
	uint64_t next = off, end, done_bytes = 0;
	unsigned head = 0, count = 0, i;
	int rc = 0, eof = 0;

	pipe_params(s, &depth, &chunk, s->max_read);
	end = limit > UINT64_MAX - off ? UINT64_MAX : off + limit;
	slots = calloc(depth, sizeof *slots);
	if (!slots)
		return -ENOMEM;
	if (!outbuf) {
		bufs = malloc((size_t)depth * chunk);
		if (!bufs) {
			free(slots);
			return -ENOMEM;
		}
	}
	waiter_init(&w);
	for (i = 0; i < depth; i++) {
		req_init(&slots[i].r, &w);
		slots[i].base = bufs ? bufs + (size_t)i * chunk : NULL;
	}

	for (;;) {
		struct rslot *sl;
		while (!rc && !eof && count < depth && next < end) {
			sl = &slots[(head + count) % depth];
			sl->off = next;
			sl->want = end - next < chunk ? (size_t)(end - next) : chunk;
			sl->dst = outbuf ? outbuf + (next - off) : sl->base;
			rc = send_read(s, h, sl, &w);
			if (rc)
				break;
			next += sl->want;
			count++;
		}
		if (!count || rc)
			break;
		sl = &slots[head];
		rc = wait_req(s, &sl->r);
		if (rc)
			break;
		if (sl->r.type == FXP_DATA && sl->r.got > 0) {
			size_t n = sl->r.got;
			if (sink) {
				rc = sink(ud, sl->dst, n);
				if (rc < 0)
					break;
				rc = 0;
			}
			done_bytes += n;
			if (n < sl->want && sl->off + n >= eof_at) {
				/* Short where the file was known to end: its end,
				 * no READ more to learn it. */
				eof = 1;
				break;
			}
			if (n < sl->want) {
				/* Short reply (not EOF): ask again for the rest. */
				sl->off += n;
				sl->want -= n;
				sl->dst = outbuf ? sl->dst + n : sl->base;
				rc = send_read(s, h, sl, &w);
				if (rc)
					break;
				continue;
			}
			head = (head + 1) % depth;
			count--;
		} else if (sl->r.type == FXP_DATA ||
				   (sl->r.type == FXP_STATUS &&
					expect_status(&sl->r, -EIO) == -ENODATA)) {
			/* End of file: later requests can only be beyond it. */
			eof = 1;
			break;
		} else if (sl->r.type == FXP_STATUS) {
			rc = expect_status(&sl->r, -EIO);
			if (rc == 0)
				rc = -EPROTO;
			break;
		} else {
			rc = -EPROTO;
			break;
		}
	}
	/* Withdraw whatever is still in flight before the buffers go away. */
	for (i = 0; i < depth; i++) {
		cancel_req(s, &slots[i].r);
		free(slots[i].r.body);
	}
	pthread_cond_destroy(&w.cv);
	free(bufs);
	free(slots);
	if (total)
		*total = done_bytes;
	return rc;
}

int sftp_pread_range(struct sftp_client *s, struct sftp_handle *h, uint64_t off, void *buf,
					 size_t len, size_t *got, unsigned depth, size_t chunk)
{
	uint64_t t = 0;
	int rc = read_engine(s, h, off, len, buf, NULL, NULL, depth, chunk, &t, UINT64_MAX);
	*got = (size_t)t;
	return rc;
}

int sftp_pread_range_eof(struct sftp_client *s, struct sftp_handle *h, uint64_t off, void *buf,
						 size_t len, size_t *got, unsigned depth, size_t chunk,
						 uint64_t eof_at)
{
	uint64_t t = 0;
	int rc = read_engine(s, h, off, len, buf, NULL, NULL, depth, chunk, &t, eof_at);
	*got = (size_t)t;
	return rc;
}

int sftp_download(struct sftp_client *s, struct sftp_handle *h, uint64_t off,
				  uint64_t limit, sftp_sink_fn sink, void *ud,
				  unsigned depth, size_t chunk, uint64_t *total)
{
	return read_engine(s, h, off, limit, NULL, sink, ud, depth, chunk,
					   total, UINT64_MAX);
}

/* Write engine: data is copied into the channel queue when a request is
 * sent, so only the request records need to live in the ring. */
static int write_engine(struct sftp_client *s, struct sftp_handle *h, uint64_t off,
						const unsigned char *in, size_t inlen,
						sftp_source_fn source, void *ud, unsigned depth,
						size_t chunk, uint64_t *total,
						void (*sent)(void *), void *sent_ud)
{
	struct sftp_req *reqs;
	size_t *lens;
	unsigned char *tmp = NULL;
	struct sftp_waiter w;
	uint64_t pos = 0, acked = 0;
	unsigned head = 0, count = 0, i;
	int rc = 0, src_end = 0;

	pipe_params(s, &depth, &chunk, s->max_write);
	reqs = calloc(depth, sizeof *reqs);
	lens = calloc(depth, sizeof *lens);
	if (source)
		tmp = malloc(chunk);
	if (!reqs || !lens || (source && !tmp)) {
		free(reqs);
		free(lens);
		free(tmp);
		return -ENOMEM;
	}
	waiter_init(&w);
	for (i = 0; i < depth; i++)
		req_init(&reqs[i], &w);

	for (;;) {
		while (!rc && !src_end && count < depth) {
			const unsigned char *p;
			size_t n;
			struct sbuf b;
			unsigned k = (head + count) % depth;
			if (source) {
				ssize_t got = source(ud, tmp, chunk);
				if (got < 0) {
					rc = (int)got;
					break;
				}
				n = (size_t)got;
				p = tmp;
			} else {
				n = inlen - pos < chunk ? inlen - pos : chunk;
				p = in + pos;
			}
			if (!n) {
				src_end = 1;
				break;
			}
			req_reset(&reqs[k]);
			sb_start(&b, FXP_WRITE);
			sb_handle(&b, h);
			sb_u64(&b, off + pos);
			sb_u32(&b, (uint32_t)n);
			rc = send_req(s, &reqs[k], &b, p, n);
			sb_free(&b);
			if (rc)
				break;
			lens[k] = n;
			pos += n;
			count++;
		}
		if (sent && !rc && (source ? src_end : pos == inlen)) {
			/* every WRITE is on the wire: what is sent next follows */
			sent(sent_ud);
			sent = NULL;
		}
		if (!count || rc)
			break;
		rc = wait_req(s, &reqs[head]);
		if (rc == 0)
			rc = expect_status(&reqs[head], -EIO);
		if (rc)
			break;
		acked += lens[head];
		head = (head + 1) % depth;
		count--;
	}
	for (i = 0; i < depth; i++) {
		cancel_req(s, &reqs[i]);
		free(reqs[i].body);
	}
	pthread_cond_destroy(&w.cv);
	free(reqs);
	free(lens);
	free(tmp);
	if (total)
		*total = acked;
	return rc;
}

int sftp_pwrite_range(struct sftp_client *s, struct sftp_handle *h, uint64_t off,
					  const void *buf, size_t len, unsigned depth,
					  size_t chunk)
{
	return write_engine(s, h, off, buf, len, NULL, NULL, depth, chunk, NULL,
						NULL, NULL);
}

int sftp_pwrite_range_notify(struct sftp_client *s, struct sftp_handle *h,
							 uint64_t off, const void *buf, size_t len,
							 unsigned depth, size_t chunk,
							 void (*sent)(void *), void *ud)
{
	return write_engine(s, h, off, buf, len, NULL, NULL, depth, chunk, NULL,
						sent, ud);
}

int sftp_upload(struct sftp_client *s, struct sftp_handle *h, uint64_t off,
				sftp_source_fn source, void *ud, unsigned depth,
				size_t chunk, uint64_t *total)
{
	return write_engine(s, h, off, NULL, 0, source, ud, depth, chunk, total,
						NULL, NULL);
}
