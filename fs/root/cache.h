/*
 * cache.h - when root/ may let the kernel cache, for both root/ backends
 * (pass.c, sftpfs.c): the idle/busy gate and the set of negative entries
 * given a long timeout.
 *
 * The policy: while the sandbox is idle (its provider says no job runs;
 * the answer is trusted for CACHE_BUSY_TTL_NS) nothing but this mount
 * changes its tree, so replies carry a long timeout; while it is busy they
 * carry 0. Everything handed out with a long timeout is remembered so that
 * it can be expired when a job starts: positive entries by each backend on
 * its own nodes, negative ones (a name that does not exist has no node) in
 * a struct neg_set.
 */
#ifndef SEER_CACHE_H
#define SEER_CACHE_H

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Timeout while idle when the mount's pass_timeout is not set. Every
 * idle->busy change expires what was cached, so the timeout only bounds how
 * long a change nobody announced (a host-side edit of the sandbox's files,
 * a missed invalidation) can stay hidden: 30 s keeps repeated git status /
 * find runs cached between jobs without leaving such a change unseen for
 * long. */
#define CACHE_IDLE_TIMEOUT 30.0
/* How long an answer of the provider's busy() is trusted. */
#define CACHE_BUSY_TTL_NS (50ULL * 1000 * 1000)

/* Whether the sandbox is idle, asked at most every CACHE_BUSY_TTL_NS. */
struct idle_gate {
	int (*ask)(void *arg);         /* >0 busy, 0 idle, <0 unknown (busy) */
	void *arg;
	double timeout;                /* the long timeout */
	atomic_int busy;               /* last answer: 1 busy */
	atomic_ullong busy_at;         /* when it was taken (monotonic ns) */
	atomic_int refreshing;         /* a thread is asking */
	atomic_ullong epoch;           /* bumped on every idle<->busy change */
};

/* What one reply may do, taken once per request. */
struct idle_state {
	int idle;                      /* replies may carry t */
	uint64_t epoch;                /* the gate's epoch when taken */
	double t;
};

/* Starts busy, asking at the first request. timeout < 0: the default
 * (CACHE_IDLE_TIMEOUT); 0: caching off, every request is answered as
 * while busy (timeouts 0, nothing promoted to a long timeout) and the
 * provider is never asked. */
void idle_gate_init(struct idle_gate *g, double timeout, int (*ask)(void *arg), void *arg);

/* Fills c, asking the provider if the last answer is too old. Returns 1
 * when this call saw an idle->busy change nobody announced (a job started
 * from outside): what idle replies cached must be expired then. */
int idle_gate_get(struct idle_gate *g, struct idle_state *c);

/* Fills c from the last answer only: busy unless it is fresh. */
void idle_gate_peek(struct idle_gate *g, struct idle_state *c);

/* A job starts: busy from now until the provider says otherwise. */
void idle_gate_mark_busy(struct idle_gate *g);

/* Forget the last answer: the next request asks. */
void idle_gate_recheck(struct idle_gate *g);

/* The last answer, without asking (1 busy). */
int idle_gate_busy(struct idle_gate *g);

/* Whether a change happened since c was taken. */
int idle_gate_moved(struct idle_gate *g, const struct idle_state *c);

/* One negative entry (parent, name) the kernel was given a long timeout. */
struct neg_entry {
	struct neg_entry *next;
	fuse_ino_t parent;             /* 0: not to be sent (see neg_list_expire) */
	uint64_t tag;                  /* the backend's: which parent this id was */
	size_t hash;
	char name[];
};

/* The negative entries to expire, at most max of them (each once). */
struct neg_set {
	pthread_mutex_t mu;
	struct neg_entry **tab;
	size_t size, n, max;
};

void neg_set_init(struct neg_set *s, size_t max);
void neg_set_destroy(struct neg_set *s);

/* Remembers (parent, name) with tag (a backend whose node ids can be
 * reused tells the parents an id named apart by it; an entry already in
 * the set takes the newer tag: the older parent was forgotten, so the
 * kernel holds nothing of it). 1 when it is (now or already) in the set,
 * 0 when the set is full or memory ran out: then the entry must not be
 * given a long timeout. */
int neg_set_add(struct neg_set *s, fuse_ino_t parent, uint64_t tag, const char *name);

/* Empties the set, handing back what it held as a list. */
struct neg_entry *neg_set_take(struct neg_set *s);

/* Expires every entry of list l in the kernel (se may be NULL: only
 * frees), naming parent `from` as `to` (from 0: no renaming); frees l.
 * Entries whose parent the caller set to 0 are only freed. Returns how
 * many there were. Call it with no lock held: the kernel may
 * need a request of ours answered before a notification completes. */
size_t neg_list_expire(struct fuse_session *se, struct neg_entry *l, fuse_ino_t from, fuse_ino_t to);

#endif
