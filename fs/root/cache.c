/*
 * cache.c - the cache policy of root/ (see cache.h): one idle/busy gate
 * and one set of negative entries, used alike by the fd backend (pass.c)
 * and the SFTP backend (sftpfs.c).
 */
#include "fs/root/cache.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* ---- idle / busy ----------------------------------------------------------- */

void idle_gate_init(struct idle_gate *g, double timeout, int (*ask)(void *arg), void *arg)
{
	g->ask = ask;
	g->arg = arg;
	g->timeout = timeout >= 0 ? timeout : CACHE_IDLE_TIMEOUT;
	atomic_init(&g->busy, 1);
	atomic_init(&g->busy_at, 0);
	atomic_init(&g->refreshing, 0);
	atomic_init(&g->epoch, 1);
}

void idle_gate_peek(struct idle_gate *g, struct idle_state *c)
{
	c->t = g->timeout;
	c->epoch = atomic_load(&g->epoch);
	if (g->timeout <= 0) {
		c->idle = 0;    /* caching off: as while busy, always */
		return;
	}
	c->idle = mono_ns() - atomic_load(&g->busy_at) < CACHE_BUSY_TTL_NS && !atomic_load(&g->busy);
}

int idle_gate_get(struct idle_gate *g, struct idle_state *c)
{
	c->t = g->timeout;
	c->epoch = atomic_load(&g->epoch);
	if (g->timeout <= 0) {
		/* Caching off: nothing is ever given a long timeout, so
		 * there is nothing to expire and no need to ask. */
		c->idle = 0;
		return 0;
	}
	uint64_t now = mono_ns();
	if (now - atomic_load(&g->busy_at) < CACHE_BUSY_TTL_NS) {
		c->idle = !atomic_load(&g->busy);
		return 0;
	}
	if (atomic_exchange(&g->refreshing, 1)) {
		/* Someone is asking. The last answer stands meanwhile while it
		 * is not much older than the TTL: a job seerfs starts marks the
		 * sandbox busy itself (idle_gate_mark_busy), so only a process
		 * entering from outside could be missed, for the length of
		 * one question. Answering "busy" here made every request of a
		 * burst that met a question uncacheable, and the kernel asked
		 * again for each. */
		c->idle = now - atomic_load(&g->busy_at) < 4 * CACHE_BUSY_TTL_NS && !atomic_load(&g->busy);
		return 0;
	}
	uint64_t asked = atomic_load(&g->epoch);
	int b = g->ask ? g->ask(g->arg) : 1;
	b = b != 0;     /* an error (agent gone) counts as busy */
	int old = atomic_exchange(&g->busy, b);
	int surprise = 0;
	if (atomic_load(&g->epoch) != asked) {
		/* A job started (idle_gate_mark_busy) while we asked: the
		 * answer may predate it. Its "busy" stands. Whichever order
		 * the two stores came in, busy ends up 1. */
		atomic_store(&g->busy, 1);
		b = 1;
	} else if (old != b) {
		atomic_fetch_add(&g->epoch, 1);
		surprise = b;   /* a job we were not told about */
	}
	atomic_store(&g->busy_at, mono_ns());
	atomic_store(&g->refreshing, 0);
	c->epoch = atomic_load(&g->epoch);
	c->idle = !b;
	return surprise;
}

void idle_gate_mark_busy(struct idle_gate *g)
{
	atomic_fetch_add(&g->epoch, 1);
	atomic_store(&g->busy, 1);
	atomic_store(&g->busy_at, mono_ns());
}

void idle_gate_recheck(struct idle_gate *g)
{
	atomic_store(&g->busy_at, 0);
}

int idle_gate_busy(struct idle_gate *g)
{
	return atomic_load(&g->busy);
}

int idle_gate_moved(struct idle_gate *g, const struct idle_state *c)
{
	return atomic_load(&g->epoch) != c->epoch;
}

/* ---- negative entries ------------------------------------------------------ */

void neg_set_init(struct neg_set *s, size_t max)
{
	/* Taken for every negative lookup while idle and held for a few
	 * hundred nanoseconds: spinning briefly before sleeping saves a
	 * futex call and a context switch each time two meet. */
	pthread_mutexattr_t ma;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
	pthread_mutex_init(&s->mu, &ma);
	pthread_mutexattr_destroy(&ma);
	s->tab = NULL;
	s->size = s->n = 0;
	s->max = max;
}

static void tab_free(struct neg_entry **tab, size_t size)
{
	for (size_t i = 0; i < size; i++) {
		for (struct neg_entry *e = tab[i], *nx; e; e = nx) {
			nx = e->next;
			free(e);
		}
	}
	free(tab);
}

void neg_set_destroy(struct neg_set *s)
{
	tab_free(s->tab, s->size);
	s->tab = NULL;
	s->size = s->n = 0;
	pthread_mutex_destroy(&s->mu);
}

int neg_set_add(struct neg_set *s, fuse_ino_t parent, uint64_t tag, const char *name)
{
	size_t len = strlen(name);
	size_t h = (size_t)parent * 0x9e3779b97f4a7c15ULL;
	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)name[i]) * 0x100000001b3ULL;
	int ok = 1;
	pthread_mutex_lock(&s->mu);
	if (s->n >= s->max) {
		ok = 0;
		goto out;
	}
	if (s->n + 1 > s->size) {
		size_t ns = s->size ? s->size * 2 : 1024;
		struct neg_entry **nt = calloc(ns, sizeof(*nt));
		if (!nt) {
			ok = 0;
			goto out;
		}
		for (size_t i = 0; i < s->size; i++) {
			for (struct neg_entry *e = s->tab[i], *nx; e; e = nx) {
				nx = e->next;
				e->next = nt[e->hash & (ns - 1)];
				nt[e->hash & (ns - 1)] = e;
			}
		}
		free(s->tab);
		s->tab = nt;
		s->size = ns;
	}
	for (struct neg_entry *e = s->tab[h & (s->size - 1)]; e; e = e->next)
		if (e->hash == h && e->parent == parent && !strcmp(e->name, name)) {
			e->tag = tag;
			goto out;
		}
	struct neg_entry *e = malloc(sizeof(*e) + len + 1);
	if (!e) {
		ok = 0;
		goto out;
	}
	e->parent = parent;
	e->tag = tag;
	e->hash = h;
	memcpy(e->name, name, len + 1);
	e->next = s->tab[h & (s->size - 1)];
	s->tab[h & (s->size - 1)] = e;
	s->n++;
out:
	pthread_mutex_unlock(&s->mu);
	return ok;
}

struct neg_entry *neg_set_take(struct neg_set *s)
{
	pthread_mutex_lock(&s->mu);
	struct neg_entry **tab = s->tab;
	size_t size = s->size;
	s->tab = NULL;
	s->size = s->n = 0;
	pthread_mutex_unlock(&s->mu);
	struct neg_entry *list = NULL;
	for (size_t i = 0; i < size; i++) {
		for (struct neg_entry *e = tab[i], *nx; e; e = nx) {
			nx = e->next;
			e->next = list;
			list = e;
		}
	}
	free(tab);
	return list;
}

size_t neg_list_expire(struct fuse_session *se, struct neg_entry *l, fuse_ino_t from, fuse_ino_t to)
{
	size_t n = 0;
	for (struct neg_entry *e = l, *nx; e; e = nx, n++) {
		nx = e->next;
		fuse_ino_t parent = from && e->parent == from ? to : e->parent;
		if (se && parent)
			fuse_lowlevel_notify_expire_entry(se, parent, e->name, strlen(e->name), FUSE_LL_EXPIRE_ONLY);
		free(e);
	}
	return n;
}
