/*
 * pass_worker.c - root/'s fd backend (pass.c): whether replies may be
 * cached now (fs/root/cache.c's gate), expiring what was cached (sweep),
 * and the per-pass_fs worker thread that runs sweeps asked for from
 * request threads and retries blocking lock requests until they are taken,
 * interrupted or the sandbox stops. See pass.c's top.
 */
#include "fs/root/pass_int.h"

/* ---- idle / busy, the remembered entries, sweeping ------------------------ */

/* The provider's answer (fs/root/cache.c asks at most every 50 ms). */
int ask_busy(void *arg)
{
	struct pass_fs *p = arg;
	if (p->busy_fn)
		return p->busy_fn(p->busy_arg);
	if (p->sb && p->prov && p->prov->busy)
		return p->prov->busy(p->sb);
	return 1;       /* nobody can tell us: never trust the cache */
}

/* Whether replies may carry long timeouts now. */
void state_get(struct pass_fs *p, struct idle_state *c)
{
	/* A job we were not told about: what idle replies cached must go. */
	if (idle_gate_get(&p->gate, c))
		request_sweep(p);
}

/* Remembers (dir, name) for expiry; 0 when the set is full. */
int record_entry(struct pass_fs *p, struct pnode *dir, const char *name)
{
	int ok = neg_set_add(&p->negs, ino_of(p, dir), dir->serial, name);
	if (!ok)
		request_sweep(p);
	return ok;
}

/* A node id and the node it names right now, for sweep()'s lookups. */
struct live {
	fuse_ino_t ino;
	struct pnode *n;
};

static int live_cmp(const void *a, const void *b)
{
	fuse_ino_t x = ((const struct live *)a)->ino, y = ((const struct live *)b)->ino;
	return x < y ? -1 : x > y;
}

/* Under p->lock: the directory node that id `ino` names now if it is still
 * the one a record saw (the same serial), else NULL. A node id is the
 * node's address: once the kernel forgets a directory its node is freed
 * and the address may come back as any new node, a regular file included
 * (the kernel then answers a notice with ENOTDIR, and libfuse prints
 * "writing device: Not a directory"). The kernel holds no entry under a
 * directory it forgot, so such a record needs no notice at all. */
static struct pnode *live_dir(const struct live *v, size_t nv, fuse_ino_t ino, uint64_t serial)
{
	struct live key = {ino, NULL};
	const struct live *l = v ? bsearch(&key, v, nv, sizeof(*v), live_cmp) : NULL;
	if (!l || l->n->serial != serial || l->n->type != S_IFDIR)
		return NULL;
	return l->n;
}

/* Under p->lock: holds n until sweep() has sent its notices (one hold per
 * sweep, remembered in pins). */
static void pin_for_sweep(struct pnode *n, uint64_t sweep_no, struct pnode **pins, size_t *npins)
{
	if (n->swept == sweep_no)
		return;
	n->swept = sweep_no;
	n->refs++;
	pins[(*npins)++] = n;
}

/* Expires every entry and attribute the kernel got with a long timeout.
 * No lock is held while notifying: the kernel may need one of our worker
 * threads to answer a request before a notification completes. So every
 * node a notice names is checked to be the node the record saw and is
 * held (refs) until its notices are sent: forgotten meanwhile, it is not
 * freed, and its id cannot be given to another node. */
void sweep(struct pass_fs *p)
{
	struct neg_entry *negs = neg_set_take(&p->negs);

	struct pnode **inos = NULL, **pins = NULL;
	struct live *live = NULL;
	size_t ni = 0, npins = 0, nlive = 0;
	struct pname *names = NULL;
	pthread_mutex_lock(&p->lock);
	uint64_t sweep_no = ++p->sweeps;
	size_t all = p->nnodes;
	for (struct pnode *n = p->stale; n; n = n->hnext)
		all++;
	if (all) {
		inos = malloc(all * sizeof(*inos));
		pins = malloc(all * sizeof(*pins));
		live = malloc(all * sizeof(*live));
	}
	if (!pins) {
		free(inos);
		inos = NULL;    /* nothing can be held: only entries of live parents below */
	}
	for (size_t i = 0; i <= p->tabsize; i++) {
		for (struct pnode *n = i < p->tabsize ? p->tab[i] : p->stale; n; n = n->hnext) {
			if (live && nlive < all)
				live[nlive++] = (struct live){ino_of(p, n), n};
			if (atomic_exchange(&n->attr_long, 0) && inos && i < p->tabsize) {
				inos[ni++] = n;
				pin_for_sweep(n, sweep_no, pins, &npins);
			}
			if (n->ent_long && n->hint_parent && n->hint_name) {
				struct pname *e = malloc(sizeof(*e));
				char *nm = strdup(n->hint_name);
				if (e && nm) {
					*e = (struct pname){names, ino_of(p, n->hint_parent), nm, n->hint_parent->serial};
					names = e;
				} else {
					free(e);
					free(nm);
				}
			}
			n->ent_long = 0;
			if (n->ents) {
				struct pname *last = n->ents;
				while (last->next)
					last = last->next;
				last->next = names;
				names = n->ents;
				n->ents = NULL;
				n->nents = 0;
			}
		}
	}
	if (live)
		qsort(live, nlive, sizeof(*live), live_cmp);
	/* Without the table of live ids or room for holds nothing can be
	 * checked: those records are dropped (parent 0), and what the kernel
	 * cached expires with its timeout. */
	for (struct pname *e = names; e; e = e->next) {
		struct pnode *d = pins ? live_dir(live, nlive, e->parent, e->serial) : NULL;
		if (d)
			pin_for_sweep(d, sweep_no, pins, &npins);
		else
			e->parent = 0;
	}
	for (struct neg_entry *e = negs; e; e = e->next) {
		struct pnode *d = pins ? live_dir(live, nlive, e->parent, e->tag) : NULL;
		if (d)
			pin_for_sweep(d, sweep_no, pins, &npins);
		else
			e->parent = 0;
	}
	pthread_mutex_unlock(&p->lock);
	free(live);

	struct fuse_session *se = p->fs ? p->fs->se : NULL;
	size_t ne = 0;
	for (struct pname *e = names; e; e = e->next, ne++)
		if (se && e->parent)
			fuse_lowlevel_notify_expire_entry(se, e->parent, e->name, strlen(e->name), FUSE_LL_EXPIRE_ONLY);
	names_free(names);
	ne += neg_list_expire(se, negs, 0, 0);
	/* Attributes only: with AUTO_INVAL_DATA the kernel drops a file's
	 * pages when it next sees its mtime or size change, and keeps those
	 * of the files the job did not touch. */
	for (size_t i = 0; se && i < ni; i++)
		fuse_lowlevel_notify_inval_inode(se, ino_of(p, inos[i]), -1, 0);
	free(inos);

	/* Each hold dropped in turn: a node freed here frees the hint parents
	 * it kept, and those still held by this sweep stay until their turn. */
	int freed = 0;
	pthread_mutex_lock(&p->lock);
	for (size_t i = 0; i < npins; i++) {
		pins[i]->refs--;
		freed += node_maybe_free(p, pins[i]);
	}
	pthread_mutex_unlock(&p->lock);
	free(pins);
	pass_put(p, freed);
	if (dbg(p))
		fuse_log(FUSE_LOG_DEBUG, "pass: swept %zu entries, %zu inodes\n", ne, ni);
}

/* ---- the worker: async sweeps and lock waits --------------------------------- */

static int try_lock(struct lockwait *w)
{
	if (w->is_flock)
		return flock(w->fd, w->op | LOCK_NB) < 0 ? -errno : 0;
	struct flock fl = w->fl;
	return fcntl(w->fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

int lock_again(int r)
{
	return r == -EAGAIN || r == -EACCES || r == -EWOULDBLOCK;
}

static void *worker_main(void *arg)
{
	struct pass_fs *p = arg;
	int interval = PASS_LOCK_POLL_MIN_MS;
	pthread_mutex_lock(&p->wlock);
	for (;;) {
		while (!p->worker_stop && !p->sweep_req && !p->waits)
			pthread_cond_wait(&p->wcond, &p->wlock);
		if (p->worker_stop)
			break;
		if (p->sweep_req) {
			p->sweep_req = 0;
			pthread_mutex_unlock(&p->wlock);
			sweep(p);
			pthread_mutex_lock(&p->wlock);
			continue;
		}
		struct lockwait *list = p->waits, *keep = NULL;
		p->waits = NULL;
		pthread_mutex_unlock(&p->wlock);
		int progress = 0;
		for (struct lockwait *w = list, *nx; w; w = nx) {
			nx = w->next;
			int r = fuse_req_interrupted(w->req) ? -EINTR : try_lock(w);
			if (lock_again(r)) {
				w->next = keep;
				keep = w;
				continue;
			}
			fuse_reply_err(w->req, -r);
			close(w->fd);
			free(w);
			progress = 1;
		}
		pthread_mutex_lock(&p->wlock);
		if (keep) {
			struct lockwait *t = keep;
			while (t->next)
				t = t->next;
			t->next = p->waits;
			p->waits = keep;
		}
		if (p->waits && !p->worker_stop && !p->sweep_req) {
			interval = progress ? PASS_LOCK_POLL_MIN_MS
					    : (interval * 2 > PASS_LOCK_POLL_MAX_MS ? PASS_LOCK_POLL_MAX_MS : interval * 2);
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += interval * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&p->wcond, &p->wlock, &ts);
		}
	}
	struct lockwait *list = p->waits;
	p->waits = NULL;
	p->worker_on = 0;
	pthread_mutex_unlock(&p->wlock);
	for (struct lockwait *w = list, *nx; w; w = nx) {
		nx = w->next;
		fuse_reply_err(w->req, ENOTCONN);
		close(w->fd);
		free(w);
	}
	pass_put(p, 1);
	return NULL;
}

/* Under p->wlock. */
static int worker_start(struct pass_fs *p)
{
	if (p->worker_on)
		return 0;
	if (p->worker_stop)
		return -ENOTCONN;
	pthread_t t;
	pthread_attr_t a;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	atomic_fetch_add(&p->refs, 1);
	int e = pthread_create(&t, &a, worker_main, p);
	pthread_attr_destroy(&a);
	if (e) {
		atomic_fetch_sub(&p->refs, 1);
		return -e;
	}
	p->worker_on = 1;
	return 0;
}

void request_sweep(struct pass_fs *p)
{
	pthread_mutex_lock(&p->wlock);
	if (!p->worker_stop && worker_start(p) == 0) {
		p->sweep_req = 1;
		pthread_cond_signal(&p->wcond);
	}
	pthread_mutex_unlock(&p->wlock);
}

int queue_wait(struct pass_fs *p, struct lockwait *w)
{
	pthread_mutex_lock(&p->wlock);
	int r = worker_start(p);
	if (r == 0) {
		w->next = p->waits;
		p->waits = w;
		pthread_cond_signal(&p->wcond);
	}
	pthread_mutex_unlock(&p->wlock);
	return r;
}
