/*
 * forker.c - the local provider's forker thread (see forker.h).
 *
 * The thread is started on first use rather than when the context opens:
 * seerfs forks into the background after opening its context, and a fork
 * keeps only the calling thread.
 */
#include "core/providers/local/forker.h"
#include "core/providers/local/freezer.h"
#include "core/lib/util.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

struct forker_req {
	struct forker_req *next;
	int (*fn)(void *);
	void *arg;
	int result, done;
};

struct local_state {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct forker_req *q;
	pthread_t th;
	int started, stopping;
};

static void *forker_main(void *arg)
{
	struct local_state *st = arg;
	pthread_mutex_lock(&st->lock);
	for (;;) {
		while (!st->q && !st->stopping)
			pthread_cond_wait(&st->cond, &st->lock);
		struct forker_req *r = st->q;
		if (!r)
			break;
		st->q = r->next;
		pthread_mutex_unlock(&st->lock);
		int res = r->fn(r->arg);
		pthread_mutex_lock(&st->lock);
		r->result = res;
		r->done = 1;
		pthread_cond_broadcast(&st->cond);
	}
	pthread_mutex_unlock(&st->lock);
	return NULL;
}

int local_state_init(struct seer_ctx *ctx, void **state)
{
	(void)ctx;
	/* A daemon killed while a snapshot had a sandbox frozen left that
	 * sandbox's processes frozen for good: end them before making ours. */
	if (geteuid() == 0)
		freezer_reap_stale();
	struct local_state *st = xcalloc(1, sizeof(*st));
	pthread_mutex_init(&st->lock, NULL);
	pthread_cond_init(&st->cond, NULL);
	*state = st;
	return 0;
}

void local_state_cleanup(struct seer_ctx *ctx, void *state)
{
	(void)ctx;
	struct local_state *st = state;
	pthread_mutex_lock(&st->lock);
	st->stopping = 1;
	int started = st->started;
	pthread_cond_broadcast(&st->cond);
	pthread_mutex_unlock(&st->lock);
	if (started)
		pthread_join(st->th, NULL);
	pthread_cond_destroy(&st->cond);
	pthread_mutex_destroy(&st->lock);
	free(st);
}

/* Under st->lock. The first caller may be any thread, a FUSE worker's
 * child among them, whose blocked signals a new thread would inherit and
 * pass on through fork and exec to every sandbox: the thread starts with
 * none blocked. */
static void start_locked(struct local_state *st)
{
	sigset_t none, old;
	sigemptyset(&none);
	pthread_sigmask(SIG_SETMASK, &none, &old);
	st->started = pthread_create(&st->th, NULL, forker_main, st) == 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

int local_in_forker(void *state, int (*fn)(void *), void *arg)
{
	struct local_state *st = state;
	struct forker_req r = {.fn = fn, .arg = arg};
	if (!st)
		return fn(arg);
	pthread_mutex_lock(&st->lock);
	if (!st->started && !st->stopping)
		start_locked(st);
	if (!st->started) {
		pthread_mutex_unlock(&st->lock);
		return fn(arg);   /* no thread: run here */
	}
	struct forker_req **pp = &st->q;
	while (*pp)
		pp = &(*pp)->next;
	*pp = &r;
	pthread_cond_broadcast(&st->cond);
	while (!r.done)
		pthread_cond_wait(&st->cond, &st->lock);
	pthread_mutex_unlock(&st->lock);
	return r.result;
}
