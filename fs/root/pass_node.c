/*
 * pass_node.c - root/'s fd backend (pass.c): the node table, one struct
 * pnode per inode the kernel knows keyed by (st_dev, st_ino), the fd
 * budget that closes the least recently used O_PATH fds and reopens them
 * from (parent, name), and the depth of a symlink as the kernel may see
 * it, which fs/root/link.c's confinement rule needs. See pass.c's top.
 */
#include "fs/root/pass_int.h"

/* ---- the node table ------------------------------------------------------- */

static size_t key_hash(dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ULL ^ (uint64_t)dev * 0xc2b2ae3d27d4eb4fULL;
	return (size_t)(h ^ (h >> 29));
}

struct pnode *tab_find(struct pass_fs *p, dev_t dev, ino_t ino)
{
	if (!p->tabsize)
		return NULL;
	for (struct pnode *n = p->tab[key_hash(dev, ino) & (p->tabsize - 1)]; n; n = n->hnext)
		if (n->ino == ino && n->dev == dev)
			return n;
	return NULL;
}

int tab_insert(struct pass_fs *p, struct pnode *n)
{
	if (p->nnodes + 1 > p->tabsize) {
		size_t nsize = p->tabsize ? p->tabsize * 2 : 1024;
		struct pnode **nt = calloc(nsize, sizeof(*nt));
		if (!nt)
			return -ENOMEM;
		for (size_t i = 0; i < p->tabsize; i++) {
			for (struct pnode *x = p->tab[i], *nx; x; x = nx) {
				nx = x->hnext;
				size_t b = key_hash(x->dev, x->ino) & (nsize - 1);
				x->hnext = nt[b];
				nt[b] = x;
			}
		}
		free(p->tab);
		p->tab = nt;
		p->tabsize = nsize;
	}
	size_t b = key_hash(n->dev, n->ino) & (p->tabsize - 1);
	n->hnext = p->tab[b];
	p->tab[b] = n;
	p->nnodes++;
	return 0;
}

static void tab_remove(struct pass_fs *p, struct pnode *n)
{
	for (struct pnode **pp = &p->tab[key_hash(n->dev, n->ino) & (p->tabsize - 1)]; *pp; pp = &(*pp)->hnext) {
		if (*pp == n) {
			*pp = n->hnext;
			p->nnodes--;
			return;
		}
	}
}

static void ring_add(struct pass_fs *p, struct pnode *n)
{
	if (!p->hand) {
		n->cprev = n->cnext = n;
		p->hand = n;
	} else {
		n->cnext = p->hand;
		n->cprev = p->hand->cprev;
		n->cprev->cnext = n;
		p->hand->cprev = n;
	}
}

void ring_del(struct pass_fs *p, struct pnode *n)
{
	if (!n->cnext)
		return;
	if (n->cnext == n) {
		p->hand = NULL;
	} else {
		n->cprev->cnext = n->cnext;
		n->cnext->cprev = n->cprev;
		if (p->hand == n)
			p->hand = n->cnext;
	}
	n->cprev = n->cnext = NULL;
}

void owners_close(struct pnode *n)
{
	for (struct lockowner *o = n->owners, *nx; o; o = nx) {
		nx = o->next;
		if (o->fd >= 0)
			close(o->fd);
		free(o);
	}
	n->owners = NULL;
}

void names_free(struct pname *e)
{
	for (struct pname *nx; e; e = nx) {
		nx = e->next;
		free(e->name);
		free(e);
	}
}

/* The memory of a node nothing refers to any more. */
void node_free_mem(struct pnode *n)
{
	free(n->hint_name);
	free(n->link_text);
	names_free(n->ents);
	free(n);
}

/* Frees n and then every hint parent it kept alive, while nothing
 * references them. Under p->lock; returns how many pass_fs references the
 * caller must drop once it has unlocked. */
int node_maybe_free(struct pass_fs *p, struct pnode *n)
{
	int freed = 0;
	while (n && !n->nlookup && !n->refs && (n != p->root || atomic_load(&p->dead))) {
		struct pnode *parent = n->hint_parent;
		if (!atomic_load(&n->stale)) {
			tab_remove(p, n);
		} else {
			for (struct pnode **pp = &p->stale; *pp; pp = &(*pp)->hnext) {
				if (*pp == n) {
					*pp = n->hnext;
					break;
				}
			}
		}
		ring_del(p, n);
		int fd = atomic_exchange(&n->fd, -1);
		if (fd >= 0) {
			close(fd);
			if (n != p->root)
				p->nfds--;
		}
		owners_close(n);
		if (n == p->root)
			p->root = NULL;
		node_free_mem(n);
		freed++;
		if (parent)
			parent->refs--;
		n = parent;
	}
	return freed;
}

/* Closes the fds of unused nodes until at most target are open: a CLOCK
 * sweep that spares recently used nodes, and directories (the parents
 * every reopen needs) and open files on its first two laps. Under p->lock. */
static void evict(struct pass_fs *p, size_t target)
{
	size_t steps = 0, limit = 3 * (p->nfds + 1) + 16;
	while (p->nfds > target && p->hand && steps++ < limit) {
		struct pnode *n = p->hand;
		p->hand = n->cnext;
		if (atomic_exchange(&n->used, 0))
			continue;
		size_t lap = steps / (p->nfds + 1);
		if (lap < 2 && (S_ISDIR(n->type) || n->nopen))
			continue;
		if (atomic_load(&n->pins))
			continue;
		/* Dekker with node_fd(): it increments pins and then reads fd;
		 * we clear fd and then read pins. One of us sees the other. */
		int fd = atomic_exchange(&n->fd, -1);
		if (atomic_load(&n->pins)) {
			atomic_store(&n->fd, fd);
			continue;
		}
		ring_del(p, n);
		p->nfds--;
		close(fd);
	}
}

/* Gives n the O_PATH fd if it has none. Under p->lock; returns the fd the
 * caller must close once it has unlocked (fd when n had one), or -1: a
 * close is a system call, and every lookup waits on this lock. */
static int node_install_fd(struct pass_fs *p, struct pnode *n, int fd)
{
	if (fd < 0)
		return -1;
	if (atomic_load(&n->fd) >= 0 || atomic_load(&p->dead))
		return fd;
	atomic_store(&n->fd, fd);
	if (n != p->root) {
		ring_add(p, n);
		p->nfds++;
		if (p->nfds > p->fd_budget)
			evict(p, p->fd_budget - p->fd_budget / 8);
	}
	return -1;
}

static int openat2_raw(struct pass_fs *p, int dfd, const char *name, int flags, mode_t mode)
{
	if (!atomic_load(&p->no_openat2)) {
		struct open_how how = {
			.flags = (uint64_t)(flags | O_NOFOLLOW | O_CLOEXEC),
			.mode = (flags & O_CREAT) ? mode : 0,
			.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_BENEATH,
		};
		long r = syscall(SYS_openat2, dfd, name, &how, sizeof(how));
		if (r >= 0 || errno != ENOSYS)
			return r >= 0 ? (int)r : -errno;
		atomic_store(&p->no_openat2, 1);
	}
	int r = openat(dfd, name, flags | O_NOFOLLOW | O_CLOEXEC, mode);
	return r >= 0 ? r : -errno;
}

/* The only way the daemon opens a name: one component below dfd, never
 * following a symlink or magic link. Out of fds, it closes some of ours. */
int open_child(struct pass_fs *p, int dfd, const char *name, int flags, mode_t mode)
{
	int r = openat2_raw(p, dfd, name, flags, mode);
	if (r == -EMFILE || r == -ENFILE) {
		pthread_mutex_lock(&p->lock);
		if (!p->warned_fds && p->sb)
			sandbox_log(p->sb, "root/: out of file descriptors with %zu cached; closing unused ones", p->nfds);
		p->warned_fds = 1;
		evict(p, p->nfds / 2);
		pthread_mutex_unlock(&p->lock);
		r = openat2_raw(p, dfd, name, flags, mode);
	}
	return r;
}

static int node_fd_depth(struct pass_fs *p, struct pnode *n, int depth);

void node_unpin(struct pnode *n)
{
	atomic_fetch_sub(&n->pins, 1);
}

/* Reopens an evicted node from its hint (parent, name); the object found
 * there must still be the same (dev, ino), else ESTALE. */
static int node_reopen(struct pass_fs *p, struct pnode *n, int depth)
{
	if (depth > 256)
		return -ESTALE;
	pthread_mutex_lock(&p->lock);
	struct pnode *par = n->hint_parent;
	char *name = par && n->hint_name ? strdup(n->hint_name) : NULL;
	if (par)
		par->refs++;    /* keeps par while we use it */
	pthread_mutex_unlock(&p->lock);
	int r;
	if (!par || atomic_load(&n->stale)) {
		r = -ESTALE;
	} else if (!name) {
		r = -ENOMEM;
	} else {
		int pfd = node_fd_depth(p, par, depth + 1);
		if (pfd < 0) {
			r = pfd;
		} else {
			r = open_child(p, pfd, name, O_PATH, 0);
			node_unpin(par);
			if (r == -ENOENT || r == -ENOTDIR || r == -ELOOP)
				r = -ESTALE;
		}
		struct stat st;
		struct pident id;
		if (r >= 0 && (stat_id(r, &st, &id) < 0 || st.st_dev != n->dev || st.st_ino != n->ino ||
			       !same_id(&id, &n->id))) {
			close(r);
			r = -ESTALE;
		}
	}
	free(name);
	pthread_mutex_lock(&p->lock);
	int freed = 0;
	if (par) {
		par->refs--;
		freed = node_maybe_free(p, par);
	}
	int spare = -1;
	if (r >= 0) {
		spare = node_install_fd(p, n, r);
		r = 0;
	}
	pthread_mutex_unlock(&p->lock);
	close_fd(&spare);
	pass_put(p, freed);
	return r;
}

/* A usable O_PATH fd of n, pinned so that eviction leaves it alone until
 * node_unpin(). */
static int node_fd_depth(struct pass_fs *p, struct pnode *n, int depth)
{
	for (int tries = 0; tries < 4; tries++) {
		atomic_fetch_add(&n->pins, 1);
		int fd = atomic_load(&n->fd);
		if (fd >= 0) {
			atomic_store(&n->used, 1);
			return fd;
		}
		node_unpin(n);
		if (atomic_load(&p->dead))
			return -ENOTCONN;
		int r = node_reopen(p, n, depth);
		if (r < 0)
			return r;
	}
	return -ESTALE;
}

int node_fd(struct pass_fs *p, struct pnode *n)
{
	return node_fd_depth(p, n, 0);
}

/* Remembers that the kernel may have a dentry of n in dir. Under p->lock. */
void add_parent(struct pnode *n, struct pnode *dir)
{
	if (!dir)
		return;
	for (int i = 0; i < n->nparents; i++)
		if (n->parents[i].dev == dir->dev && n->parents[i].ino == dir->ino)
			return;
	if (n->nparents < PASS_PARENTS)
		n->parents[n->nparents++] = (struct pkey){dir->dev, dir->ino};
	else
		n->parents_overflow = 1;
}


int hint_is(const struct pnode *n, const struct pnode *dir, const char *name)
{
	return n->hint_parent == dir && n->hint_name && !strcmp(n->hint_name, name);
}

/* Points n's hint at (dir, *name), taking *name (strdup'd by the caller,
 * outside the lock). A hint the kernel may hold with a long timeout moves
 * to n->ents, so that the next sweep still expires it. Under p->lock. */
void set_hint(struct pass_fs *p, struct pnode *n, struct pnode *dir, char **name, int *freed)
{
	if (!dir || n == p->root || hint_is(n, dir, *name))
		return;
	struct pnode *old = n->hint_parent;
	char *oldname = n->hint_name;
	struct pname *keep = n->ent_long && old && oldname ? malloc(sizeof(*keep)) : NULL;
	if (keep) {
		*keep = (struct pname){n->ents, ino_of(p, old), oldname, old->serial};
		n->ents = keep;
		oldname = NULL;
		if (++n->nents > PASS_NODE_ENTS)
			request_sweep(p);
	} else if (n->ent_long && old) {
		request_sweep(p);       /* no memory to remember it: expire all */
	}
	n->ent_long = 0;
	dir->refs++;
	n->hint_parent = dir;
	free(oldname);
	n->hint_name = *name;
	*name = NULL;
	if (old) {
		old->refs--;
		*freed += node_maybe_free(p, old);
	}
}

/* Finds or creates the node of st (fd: an O_PATH fd on it, consumed) and
 * counts one lookup. dir/name: where the kernel will see it; long_entry:
 * the reply gives that entry a long timeout (recorded for sweep()). */
int node_get(struct pass_fs *p, struct pnode *dir, const char *name, int fd, const struct stat *st,
	     const struct pident *id, int long_entry, struct pnode **out)
{
	/* Every lookup of the mount takes this lock: what a new node or a new
	 * hint needs is allocated outside it, and only when needed (a node
	 * the kernel looks up again, at the name it had, needs nothing). */
	struct pnode *fresh = NULL, *n;
	char *nm = NULL;
	int freed = 0, spare = -1, r = 0;
	for (;;) {
		pthread_mutex_lock(&p->lock);
		if (atomic_load(&p->dead)) {
			spare = fd;
			r = -ENOTCONN;
			goto out;
		}
		n = tab_find(p, st->st_dev, st->st_ino);
		if (n && atomic_load(&n->fd) < 0 && !same_id(&n->id, id)) {
			/* An evicted node whose inode was deleted and its
			 * number reused: a different file. The old node stays
			 * for the kernel (ESTALE) until forgotten, off the
			 * table. */
			tab_remove(p, n);
			atomic_store(&n->stale, 1);
			n->hnext = p->stale;
			p->stale = n;
			n = NULL;
		}
		int need_name = dir && (!n || (n != p->root && !hint_is(n, dir, name)));
		if ((n || fresh) && (!need_name || nm))
			break;
		pthread_mutex_unlock(&p->lock);
		if ((!n && !fresh && !(fresh = calloc(1, sizeof(*fresh)))) || (need_name && !nm && !(nm = strdup(name)))) {
			free(fresh);
			free(nm);
			close_fd(&fd);
			return -ENOMEM;
		}
	}
	if (n) {
		n->nlookup++;
		spare = node_install_fd(p, n, fd);
	} else {
		n = fresh;
		n->p = p;
		n->dev = st->st_dev;
		n->ino = st->st_ino;
		n->type = st->st_mode & S_IFMT;
		n->id = *id;
		if (tab_insert(p, n) < 0) {
			spare = fd;
			r = -ENOMEM;
			goto out;
		}
		fresh = NULL;
		n->serial = ++p->serials;
		atomic_init(&n->synthetic, -1);
		n->nlookup = 1;
		atomic_init(&n->fd, -1);
		atomic_fetch_add(&p->refs, 1);
		spare = node_install_fd(p, n, fd);
	}
	if (nm)
		set_hint(p, n, dir, &nm, &freed);
	if (long_entry && dir && n != p->root)
		n->ent_long = 1;
	add_parent(n, dir);
	*out = n;
out:
	pthread_mutex_unlock(&p->lock);
	close_fd(&spare);
	free(fresh);
	free(nm);
	pass_put(p, freed);
	return r;
}

/* fuse_reply_* failed: the kernel never saw that lookup. */
void forget_node(struct pnode *n, uint64_t count)
{
	struct pass_fs *p = n->p;
	pthread_mutex_lock(&p->lock);
	n->nlookup = n->nlookup >= count ? n->nlookup - count : 0;
	int freed = node_maybe_free(p, n);
	pthread_mutex_unlock(&p->lock);
	pass_put(p, freed);
}

/* ---- the depth of a symlink, as the kernel may see it --------------------- */

/* A lower bound of the depth below root/ of the directory the kernel found
 * link n in. Every dentry the kernel has was created or moved by one of
 * our replies, and we recorded each such (node, parent) pair: the shortest
 * path up to the root through them cannot be longer than the kernel's real
 * chain, so "../" repeated this many times never climbs above root/.
 * *amb is set unless that path is the only one (a hard-linked symlink, a
 * directory moved behind the kernel's back, parents we lost track of):
 * then the bound may undershoot and rewrite_link() prefers an absolute
 * path, which does not depend on the kernel's chain at all. */
static int link_depth(struct pass_fs *p, struct pnode *n, int *amb)
{
	struct {
		struct pnode *n;
		int d;
	} q[PASS_DEPTH_BUDGET];
	int qh = 0, qt = 0, best = INT_MAX;
	*amb = 0;
	pthread_mutex_lock(&p->lock);
	q[qt++] = (typeof(q[0])){n, 0};
	while (qh < qt) {
		struct pnode *x = q[qh].n;
		int d = q[qh++].d;
		if (d >= best)
			break;
		if (x == p->root) {
			best = d;
			break;
		}
		int usable = 0;
		for (int i = 0; i < x->nparents; i++) {
			struct pnode *y = tab_find(p, x->parents[i].dev, x->parents[i].ino);
			if (!y)
				continue;
			usable++;
			int seen = 0;
			for (int k = 0; k < qt; k++)
				seen |= q[k].n == y;
			if (seen)
				continue;
			if (qt == PASS_DEPTH_BUDGET) {
				best = 1;       /* parent depth 0 */
				*amb = 1;
				goto out;
			}
			q[qt++] = (typeof(q[0])){y, d + 1};
		}
		if (usable != 1 || x->parents_overflow)
			*amb = 1;
		/* Parents we do not know: x's parent is at depth >= 0. */
		if (x->parents_overflow || !usable)
			best = best < d + 1 ? best : d + 1;
	}
out:
	pthread_mutex_unlock(&p->lock);
	if (best == INT_MAX || best < 1)
		return 0;
	return best - 1;
}

/* The path below root/ of the directory n was last looked up in, from the
 * fd hints ("" when the chain is lost). */
static char *hint_dir_path(struct pass_fs *p, struct pnode *n)
{
	struct sbuf_lite {
		const char **v;
		size_t n, cap;
	} names = {0};
	char *out = NULL;
	pthread_mutex_lock(&p->lock);
	struct pnode *x = n->hint_parent;
	for (int guard = 0; x && x != p->root && guard < 4096; x = x->hint_parent, guard++) {
		if (names.n == names.cap) {
			size_t nc = names.cap ? names.cap * 2 : 16;
			const char **t = realloc(names.v, nc * sizeof(*t));
			if (!t)
				break;
			names.v = t;
			names.cap = nc;
		}
		names.v[names.n++] = x->hint_name;
	}
	size_t len = 1;
	if (x == p->root)
		for (size_t i = 0; i < names.n; i++)
			len += strlen(names.v[i]) + 1;
	out = malloc(len);
	if (out) {
		size_t o = 0;
		for (size_t i = names.n; x == p->root && i-- > 0;) {
			size_t l = strlen(names.v[i]);
			memcpy(out + o, names.v[i], l);
			o += l;
			out[o++] = '/';
		}
		out[o] = '\0';
	}
	pthread_mutex_unlock(&p->lock);
	free(names.v);
	return out;
}

/* The text readlink shows for link n whose own text is t: the rule is
 * fs/root/link.c's; the depth (a lower bound, exact unless *amb) and, only
 * when the rule asks for it, the link's directory come from the node table. */
int rewrite_link(struct pass_fs *p, struct pnode *n, const char *t, char *out, size_t outsz)
{
	struct link_place pl = {.exact = 1, .root_path = p->root_path};
	if (link_needs_depth(t)) {
		int amb;
		pl.depth = link_depth(p, n, &amb);
		pl.exact = !amb;
	}
	int r = link_confine(t, &pl, out, outsz);
	if (r == LINK_NEED_DIR) {
		char *dir = hint_dir_path(p, n);
		if (!dir)
			return -ENOMEM;
		pl.dir = dir;
		r = link_confine(t, &pl, out, outsz);
		free(dir);
	}
	return r;
}
