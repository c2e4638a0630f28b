/*
 * pass.c - root/: a passthrough over a running sandbox's own "/".
 *
 * MOUNT/NAME/root/ shows the sandbox's files exactly as its processes see
 * them. The provider hands us an O_PATH fd on the sandbox's "/" (for the
 * local provider, /proc/AGENT/root); every path we walk from it goes
 * through the sandbox's mount namespace, so root/usr is the read-only bind
 * the sandbox sees, root/workspace its writable tree, root/proc its procfs.
 *
 * Model: libfuse's passthrough_ll.c / passthrough_hp.cc. One struct pnode
 * per inode the kernel knows, keyed by (st_dev, st_ino), with a lookup
 * count; its address is the FUSE inode number. Each node holds an O_PATH
 * fd, obtained by a single-component openat2(parent, name, O_PATH |
 * O_NOFOLLOW, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_BENEATH),
 * so the daemon itself never follows a symlink or a /proc magic link of
 * the sandbox. I/O reopens a node's fd through /proc/self/fd/N (a
 * directory's as "." from it), and only for regular files and directories.
 * READDIRPLUS entries whose inode is already a node are only statx'd,
 * without following (lookup_listed()).
 *
 * Confinement of symlinks: the kernel resolves a symlink's text relative to
 * the reader's root, so "/etc/passwd" planted in the sandbox would reach
 * the host's file. readlink therefore rewrites absolute targets (and
 * relative ones that climb above the sandbox's "/") into relative paths
 * that stay inside root/, or, where the link's depth as the kernel sees it
 * is not known for sure, into absolute paths under MOUNT/NAME/root; the
 * rule is fs/root/link.c's, the depth link_depth()'s; see docs/rootfs.md.
 *
 * Coherence: while the sandbox is idle (only its init runs, asked through
 * provider->busy() at most every 50 ms) nothing but this mount changes the
 * tree, so replies carry long timeouts and open files keep their page
 * cache; every entry and inode given a long timeout is remembered (a
 * positive entry on its node, a negative one in a set), and
 * pass_invalidate() (called by fs/ll.c when a job starts) and an observed
 * idle->busy change expire them all. While busy, timeouts are 0 and cached
 * pages are kept only when mtime/ctime/size are unchanged. The gate and
 * the set are fs/root/cache.c's, shared with sftpfs.c.
 *
 * File descriptors: a node's O_PATH fd is a cache. When this pass_fs holds
 * more than its budget (half of RLIMIT_NOFILE) the least recently used are
 * closed (CLOCK) and reopened on demand from (parent, name), checking that
 * (st_dev, st_ino) and the birth time still match (else ESTALE), so a
 * directory of 100,000 entries can be listed under a 20,000 fd limit. An
 * evicted node no longer pins its inode, so its number may be reused by a
 * new file: node_get() tells them apart by type and birth time.
 *
 * Owners: under root the sandbox's ids are a range of host ids; replies
 * number owners as the sandbox does, new entries are given to the caller's
 * id in the sandbox, chown maps into the range (see "owners" below and
 * docs/rootfs.md). Under an ordinary user the map is the identity.
 *
 * Locks: POSIX locks become OFD locks on one fd per (inode, lock owner)
 * (an owner is a process's files table, as in virtiofsd), so they conflict
 * with the sandbox's own POSIX and OFD locks on the same file, and the
 * owner's fd is closed on flush, which is POSIX's "any close drops the
 * process's locks". flock() goes to the per-open fd, which is flock's own
 * unit. A blocking request is not allowed to hold a FUSE worker thread: it
 * is queued and retried by a per-pass_fs worker thread, which replies when
 * the lock is taken, on interrupt (EINTR) or when the sandbox stops.
 *
 * FUSE capabilities pass_init_conn() asks for (fs/ll.c's init calls it):
 *   want  SPLICE_WRITE | SPLICE_MOVE (unless fs->no_splice), SPLICE_READ
 *         only with fs->splice_read (see below),
 *         AUTO_INVAL_DATA (busy-mode coherence of cached pages),
 *         READDIRPLUS | READDIRPLUS_AUTO, PARALLEL_DIROPS, ASYNC_READ,
 *         ASYNC_DIO, ATOMIC_O_TRUNC, POSIX_LOCKS, FLOCK_LOCKS (real locks
 *         on the underlying files: fs/ll.c must define getlk, setlk and
 *         flock so that libfuse keeps them), WRITEBACK_CACHE only with
 *         fs->writeback.
 *   clear HANDLE_KILLPRIV (the daemon may be root, whose writes would not
 *         clear setuid bits: let the kernel send the setattr), DONT_MASK
 *         (the kernel applies the caller's umask; fix_mode() undoes what
 *         the daemon's own umask takes away, without touching it),
 *         CACHE_SYMLINKS (a link's text depends on its depth), POSIX_ACL,
 *         EXPORT_SUPPORT.
 *   max_background 64, congestion_threshold 48, time_gran 1; max_write
 *   (just under 1 MiB, see ll_init) and max_readahead stay as fs/ll.c sets
 *   them.
 *
 * Every function returns 0 or a negative errno; every FUSE op replies
 * exactly once (the lock waits reply later, from the worker).
 *
 * Files: this one (owners, lifetime, the FUSE operations), pass_node.c
 * (the node table, the fd budget, a symlink's depth), pass_worker.c
 * (idle/busy, sweeps, the worker and its lock waits), pass_int.h (what
 * they share); fs/root/link.c and fs/root/cache.c are shared with
 * sftpfs.c.
 */
#include "fs/root/pass_int.h"

/* ---- small helpers ------------------------------------------------------ */

/* Not one of ours: fs/ll.c's virtual inodes, or another backend's. */
static int foreign_ino(fuse_ino_t ino)
{
#ifdef REMOTE_INO_FLAG
	if (ino & REMOTE_INO_FLAG)
		return 1;
#endif
	return ino_is_virtual(ino);
}

static struct pnode *node_of(fuse_ino_t ino)
{
	return (struct pnode *)(uintptr_t)ino;
}

fuse_ino_t ino_of(struct pass_fs *p, struct pnode *n)
{
	return p->toplevel && n == p->root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)n;
}

/* The kernel only sends single names, but this is the confinement line:
 * refuse anything that is not one plain component. */
static int name_check(const char *name)
{
	if (!name[0] || strchr(name, '/'))
		return -EINVAL;
	if (name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2])))
		return -EINVAL;
	if (strlen(name) > NAME_MAX)
		return -ENAMETOOLONG;
	return 0;
}

static void proc_path(char *buf, size_t len, int fd)
{
	snprintf(buf, len, "/proc/self/fd/%d", fd);
}

/* fstat with the birth time (statx), which tells inodes apart. */
/* The attributes and identity of name in dfd (name "" with AT_EMPTY_PATH:
 * of dfd itself), never following a link. */
static int stat_at(int dfd, const char *name, int flags, struct stat *st, struct pident *id)
{
	struct statx x;
	if (statx(dfd, name, flags | AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, STATX_BASIC_STATS | STATX_BTIME, &x) < 0)
		return -errno;
	memset(st, 0, sizeof(*st));
	st->st_dev = makedev(x.stx_dev_major, x.stx_dev_minor);
	st->st_ino = x.stx_ino;
	st->st_mode = x.stx_mode;
	st->st_nlink = x.stx_nlink;
	st->st_uid = x.stx_uid;
	st->st_gid = x.stx_gid;
	st->st_rdev = makedev(x.stx_rdev_major, x.stx_rdev_minor);
	st->st_size = (off_t)x.stx_size;
	st->st_blksize = x.stx_blksize;
	st->st_blocks = (blkcnt_t)x.stx_blocks;
	st->st_atim = (struct timespec){x.stx_atime.tv_sec, x.stx_atime.tv_nsec};
	st->st_mtim = (struct timespec){x.stx_mtime.tv_sec, x.stx_mtime.tv_nsec};
	st->st_ctim = (struct timespec){x.stx_ctime.tv_sec, x.stx_ctime.tv_nsec};
	if (id) {
		id->type = x.stx_mode & S_IFMT;
		id->has_btime = !!(x.stx_mask & STATX_BTIME);
		id->btime_sec = x.stx_btime.tv_sec;
		id->btime_nsec = x.stx_btime.tv_nsec;
	}
	return 0;
}

int stat_id(int fd, struct stat *st, struct pident *id)
{
	return stat_at(fd, "", AT_EMPTY_PATH, st, id);
}

int same_id(const struct pident *a, const struct pident *b)
{
	if (a->type != b->type)
		return 0;
	if (a->has_btime && b->has_btime)
		return a->btime_sec == b->btime_sec && a->btime_nsec == b->btime_nsec;
	return 1;
}

/* The process umask, without changing it (other threads create files). */
static mode_t read_umask(void)
{
	FILE *f = fopen("/proc/self/status", "re");
	unsigned m = 022;
	char line[128];
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Umask: %o", &m) == 1)
			break;
	if (f)
		fclose(f);
	return (mode_t)(m & 0777);
}

/* The kernel already applied the caller's umask to mode; our own umask
 * must not take more away. Add back what it removed (only that: a setgid
 * bit the file system added stays). st is updated. */
static void fix_mode(struct pass_fs *p, int fd, int is_open, mode_t mode, struct stat *st)
{
	mode_t lost = mode & p->umask & 0777 & ~st->st_mode;
	if (!lost || S_ISLNK(st->st_mode) || fd < 0)
		return;
	mode_t want = (st->st_mode | lost) & 07777;
	int r;
	if (is_open) {
		r = fchmod(fd, want);
	} else {
		char path[64];
		proc_path(path, sizeof(path), fd);
		r = chmod(path, want);  /* the magic link of our O_PATH fd: this inode */
	}
	if (r == 0)
		st->st_mode = (st->st_mode & S_IFMT) | want;
}

/* ---- owners ---------------------------------------------------------------------------
 *
 * root/ numbers owners as the host callers who act as them (docs/rootfs.md,
 * "Who owns what"): a host id the sandbox maps to its id N shows as N, its
 * root (N = 0) as the mounting user; a host id it does not map (it sees
 * nobody) shows as the host's number. Under an ordinary user the map is
 * the user's own id, so every number is the host's and nothing is done;
 * under root the sandbox's range shows as the sandbox sees it. Unmapped ids
 * are not folded into 65534: with -o allow_other the kernel checks callers
 * against the numbers shown (default_permissions), and host nobody must
 * not pass as the owner of, say, /etc/shadow. A caller N acts as the
 * sandbox's N, the mounting user as its root; new entries are theirs. */

static uid_t show_uid(const struct pass_fs *p, uid_t h)
{
	if (!p->ranged)
		return h;
	uid_t s = seer_idmap_sb_uid(&p->ids, h);
	if (seer_idmap_host_uid(&p->ids, s) != h)   /* unmapped: 65534 names another */
		return h;
	return s == 0 ? p->muid : s;
}

static gid_t show_gid(const struct pass_fs *p, gid_t h)
{
	if (!p->ranged)
		return h;
	gid_t s = seer_idmap_sb_gid(&p->ids, h);
	if (seer_idmap_host_gid(&p->ids, s) != h)   /* unmapped: 65534 names another */
		return h;
	return s == 0 ? p->mgid : s;
}

/* Attributes as a reply shows them. */
static void show_owner(const struct pass_fs *p, struct stat *st)
{
	if (!p->ranged)
		return;
	st->st_uid = show_uid(p, st->st_uid);
	st->st_gid = show_gid(p, st->st_gid);
}

/* The host id of an id as root/ numbers it (chown's argument); -1 stays
 * -1; -EINVAL for one the sandbox does not map, as a user namespace's
 * kernel answers. */
static int64_t host_uid(const struct pass_fs *p, uid_t shown)
{
	if (!p->ranged || shown == (uid_t)-1)
		return shown;
	uid_t h = seer_idmap_host_uid(&p->ids, shown == p->muid ? 0 : shown);
	return h == (uid_t)-1 ? -EINVAL : (int64_t)h;
}

static int64_t host_gid(const struct pass_fs *p, gid_t shown)
{
	if (!p->ranged || shown == (gid_t)-1)
		return shown;
	gid_t h = seer_idmap_host_gid(&p->ids, shown == p->mgid ? 0 : shown);
	return h == (gid_t)-1 ? -EINVAL : (int64_t)h;
}

/* Who a new entry belongs to: the caller, as the sandbox sees it. */
struct owner {
	uid_t uid;
	gid_t gid;
};

/* The host ids of the caller of req; -EPERM for a caller the sandbox has
 * no id for (only with -o allow_other: another user than the mounting one
 * whose id is past the range). */
static int caller_owner(const struct pass_fs *p, fuse_req_t req, struct owner *o)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);
	int64_t u = host_uid(p, c->uid), g = host_gid(p, c->gid);
	if (u < 0 || g < 0)
		return -EPERM;
	o->uid = (uid_t)u;
	o->gid = (gid_t)g;
	return 0;
}

/* File systems the sandbox mounted itself (its /dev and /dev/shm, tmpfs
 * of its user namespace) store no id that namespace does not map: a file
 * the daemon (host root) makes there fails with EOVERFLOW. Such a create
 * is made again as the caller (this thread's fs ids only), with the
 * caller's rights in that directory and without the daemon's
 * capabilities, as the caller would inside; as_daemon() goes back. */
static void as_owner(const struct owner *o)
{
	setfsgid(o->gid);
	setfsuid(o->uid);
}

static void as_daemon(const struct pass_fs *p)
{
	setfsuid(p->duid);
	setfsgid(p->dgid);
}

/* Gives the entry the daemon just made (fd: O_PATH unless is_open; st: its
 * attributes, updated) to o. Only what differs is changed, and only on an
 * inode the daemon owns (so not on something the sandbox swapped in under
 * the name). A group a setgid directory gave stays. chown clears setuid
 * and setgid bits: what the create gave is put back. */
static int dir_setgid(struct pass_fs *p, struct pnode *dir)
{
	int dfd = node_fd(p, dir);
	if (dfd < 0)
		return 0;
	struct stat ds;
	int r = fstat(dfd, &ds) == 0 && (ds.st_mode & S_ISGID);
	node_unpin(dir);
	return r;
}

static int give_new(struct pass_fs *p, struct pnode *dir, int fd, int is_open, const struct owner *o, struct stat *st)
{
	if (st->st_uid != p->duid)
		return 0;
	uid_t u = st->st_uid == o->uid ? (uid_t)-1 : o->uid;
	/* A new entry of a setgid directory keeps the group it got there
	 * (which may be the daemon's own: a tree with the host's ids). */
	gid_t g = st->st_gid != p->dgid || st->st_gid == o->gid || dir_setgid(p, dir) ? (gid_t)-1 : o->gid;
	if (u == (uid_t)-1 && g == (gid_t)-1)
		return 0;
	int r = is_open ? fchown(fd, u, g) : fchownat(fd, "", u, g, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
	if (r < 0)
		return -errno;
	if (S_ISREG(st->st_mode) && (st->st_mode & (S_ISUID | S_ISGID))) {
		char path[64];
		proc_path(path, sizeof(path), fd);
		if ((is_open ? fchmod(fd, st->st_mode & 07777) : chmod(path, st->st_mode & 07777)) < 0)
			return -errno;
	}
	/* Keep what the caller computed (a link's size is its text's). */
	struct stat now;
	if (stat_id(fd, &now, NULL) == 0) {
		st->st_uid = now.st_uid;
		st->st_gid = now.st_gid;
		st->st_mode = now.st_mode;
		st->st_ctim = now.st_ctim;
	}
	return 0;
}

static enum fuse_buf_copy_flags copy_flags(struct pass_fs *p)
{
	return p->fs && p->fs->no_splice ? FUSE_BUF_NO_SPLICE : FUSE_BUF_SPLICE_MOVE;
}

int dbg(struct pass_fs *p)
{
	return p->fs && p->fs->debug;
}

/* ---- lifetime ------------------------------------------------------------ */

static void pass_free(struct pass_fs *p)
{
	neg_set_destroy(&p->negs);
	free(p->tab);
	free(p->root_path);
	pthread_mutex_destroy(&p->lock);
	pthread_mutex_destroy(&p->wlock);
	pthread_cond_destroy(&p->drained);
	pthread_cond_destroy(&p->wcond);
	free(p);
}

void pass_put(struct pass_fs *p, int n)
{
	if (n > 0 && atomic_fetch_sub(&p->refs, n) == n)
		pass_free(p);
}

/* Every op runs between enter and leave, so that pass_kill can wait for
 * the ops in flight before it closes the fds they use. */
static int enter(struct pass_fs *p)
{
	atomic_fetch_add(&p->active, 1);
	if (atomic_load(&p->dead)) {
		if (atomic_fetch_sub(&p->active, 1) == 1) {
			pthread_mutex_lock(&p->lock);
			pthread_cond_broadcast(&p->drained);
			pthread_mutex_unlock(&p->lock);
		}
		return -ENOTCONN;
	}
	return 0;
}

static void leave(struct pass_fs *p)
{
	if (atomic_fetch_sub(&p->active, 1) == 1 && atomic_load(&p->dead)) {
		pthread_mutex_lock(&p->lock);
		pthread_cond_broadcast(&p->drained);
		pthread_mutex_unlock(&p->lock);
	}
}


/* ---- replies ---------------------------------------------------------------------- */

static void reply_entry(fuse_req_t req, struct pass_fs *p, struct pnode *dir, const char *name,
			struct fuse_entry_param *e, const struct idle_state *c)
{
	e->entry_timeout = e->attr_timeout = 0;
	if (c->idle) {
		e->attr_timeout = c->t;
		/* A positive entry was recorded on its node by node_get (with
		 * the same c->idle); a negative one has no node. */
		if (e->ino || record_entry(p, dir, name))
			e->entry_timeout = c->t;
		if (e->ino)
			atomic_store(&node_of(e->ino)->attr_long, 1);
	}
	struct pnode *n = e->ino ? node_of(e->ino) : NULL;
	if (n)
		e->ino = ino_of(p, n);
	show_owner(p, &e->attr);
	if (fuse_reply_entry(req, e) == -ENOENT && n)
		forget_node(n, 1);
	/* A job started while we answered: expire what we just gave. */
	if (c->idle && idle_gate_moved(&p->gate, c))
		request_sweep(p);
}

static void reply_attr(fuse_req_t req, struct pass_fs *p, struct pnode *n, const struct stat *st)
{
	struct idle_state c;
	state_get(p, &c);
	if (c.idle)
		atomic_store(&n->attr_long, 1);
	struct stat shown = *st;
	show_owner(p, &shown);
	fuse_reply_attr(req, &shown, c.idle ? c.t : 0);
	if (c.idle && idle_gate_moved(&p->gate, &c))
		request_sweep(p);
}

/* Keeps t as link n's own text, unless one is kept already. A symlink's
 * text never changes (a new text is a new inode, hence a new node). */
static void keep_link_text(struct pass_fs *p, struct pnode *n, const char *t)
{
	char *c = strdup(t);
	pthread_mutex_lock(&p->lock);
	if (c && !n->link_text) {
		n->link_text = c;
		c = NULL;
	}
	pthread_mutex_unlock(&p->lock);
	free(c);
}

/* A symlink's st_size is the length of the text readlink returns: some
 * programs (tar) read exactly that many bytes. That needs the link's own
 * text, and reading it updates the link's atime on a relatime backing
 * file system (stat must not: pjdfstest utimensat/05), so it is read once
 * per node and kept; made: the text root/ just created the link with
 * (NULL: unknown), taken when its length is the link's. */
static void link_size(struct pass_fs *p, struct pnode *n, int fd, struct stat *st, const char *made)
{
	char buf[PATH_MAX + 1], out[PATH_MAX + 1];
	if (!S_ISLNK(st->st_mode))
		return;
	int known = 0;
	pthread_mutex_lock(&p->lock);
	if (n->link_text && strlen(n->link_text) == (size_t)st->st_size && (size_t)st->st_size < sizeof(buf)) {
		memcpy(buf, n->link_text, (size_t)st->st_size + 1);
		known = 1;
	}
	pthread_mutex_unlock(&p->lock);
	if (!known && made && strlen(made) == (size_t)st->st_size && (size_t)st->st_size < sizeof(buf)) {
		memcpy(buf, made, (size_t)st->st_size + 1);
		keep_link_text(p, n, buf);
		known = 1;
	}
	if (!known) {
		ssize_t len = readlinkat(fd, "", buf, sizeof(buf));
		if (len < 0 || (size_t)len >= sizeof(buf))
			return;
		buf[len] = '\0';
		keep_link_text(p, n, buf);
	}
	if (rewrite_link(p, n, buf, out, sizeof(out)) == 0)
		st->st_size = (off_t)strlen(out);
}

/* Looks name up in dir and counts it. e->ino == 0 with -ENOENT. */
static int lookup_core(struct pass_fs *p, struct pnode *dir, const char *name, struct fuse_entry_param *e,
		       int long_entry, const char *made)
{
	memset(e, 0, sizeof(*e));
	int r = name_check(name);
	if (r < 0)
		return r == -EINVAL ? -ENOENT : r;
	int dfd = node_fd(p, dir);
	if (dfd < 0)
		return dfd;
	int fd = open_child(p, dfd, name, O_PATH, 0);
	node_unpin(dir);
	if (fd < 0)
		return fd;
	struct pident id;
	r = stat_id(fd, &e->attr, &id);
	if (r < 0) {
		close(fd);
		return r;
	}
	struct pnode *n;
	int lfd = S_ISLNK(e->attr.st_mode) ? dup(fd) : -1;
	r = node_get(p, dir, name, fd, &e->attr, &id, long_entry, &n);
	if (r == 0 && lfd >= 0)
		link_size(p, n, lfd, &e->attr, made);
	if (lfd >= 0)
		close(lfd);
	if (r < 0)
		return r;
	e->ino = (fuse_ino_t)(uintptr_t)n;
	return 0;
}

/* READDIRPLUS of an entry whose inode number is a node we hold an fd for
 * (git status, find and du list what they looked up a moment before):
 * statx on (dir, name), never following, gives its attributes, and the
 * node is found again by (dev, ino) - its open fd keeps that number from
 * being reused - so no O_PATH fd is opened and closed for it. Anything
 * else (a new inode, a symlink, whose size needs its text, a number that
 * no longer matches, a mount point) takes lookup_core. */
static int lookup_listed(struct pass_fs *p, struct pnode *dir, int dfd, const char *name, ino_t ino,
			 struct fuse_entry_param *e, int long_entry)
{
	pthread_mutex_lock(&p->lock);
	struct pnode *n = tab_find(p, dir->dev, ino);
	int known = n && atomic_load(&n->fd) >= 0 && !S_ISLNK(n->type);
	pthread_mutex_unlock(&p->lock);
	if (known) {
		memset(e, 0, sizeof(*e));
		struct pident id;
		if (stat_at(dfd, name, 0, &e->attr, &id) == 0 && e->attr.st_dev == dir->dev && e->attr.st_ino == ino &&
		    !S_ISLNK(e->attr.st_mode)) {
			int r = node_get(p, dir, name, -1, &e->attr, &id, long_entry, &n);
			if (r < 0)
				return r;
			e->ino = (fuse_ino_t)(uintptr_t)n;
			return 0;
		}
	}
	return lookup_core(p, dir, name, e, long_entry, NULL);
}

#define OP_ENTER(p, req)                                     \
	do {                                                 \
		if (enter(p) < 0) {                          \
			fuse_reply_err((req), ENOTCONN);     \
			return;                              \
		}                                            \
	} while (0)

/* Ops are only ever called with our inode numbers; a virtual one reaching
 * us is a dispatcher bug, answered without touching memory. */
#define NODE(req, ino, n, p)                                 \
	if (foreign_ino(ino)) {                              \
		fuse_reply_err((req), EIO);                  \
		return;                                      \
	}                                                    \
	struct pnode *n = node_of(ino);                      \
	struct pass_fs *p = n->p

/* ---- lookup, forget, attributes ---------------------------------------------------- */

static void pass_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	NODE(req, parent, dir, p);
	OP_ENTER(p, req);
	struct idle_state c;
	state_get(p, &c);
	struct fuse_entry_param e;
	int r = lookup_core(p, dir, name, &e, c.idle, NULL);
	if (r == -ENOENT && c.idle) {
		/* A negative entry, cached like the rest while idle. */
		memset(&e, 0, sizeof(e));
		reply_entry(req, p, dir, name, &e, &c);
	} else if (r < 0) {
		fuse_reply_err(req, -r);
	} else {
		reply_entry(req, p, dir, name, &e, &c);
	}
	leave(p);
}

void pass_forget_one(fuse_ino_t ino, uint64_t nlookup)
{
	if (foreign_ino(ino))
		return;
	forget_node(node_of(ino), nlookup);
}

static void pass_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	pass_forget_one(ino, nlookup);
	fuse_reply_none(req);
}

static void pass_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		pass_forget_one(forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void pass_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	NODE(req, ino, n, p);
	OP_ENTER(p, req);
	struct stat st;
	int r = 0;
	struct pfile *f = fi ? (struct pfile *)(uintptr_t)fi->fh : NULL;
	if (f && f->fd >= 0 && !f->is_dir) {
		if (fstat(f->fd, &st) < 0)
			r = -errno;
	} else {
		int fd = node_fd(p, n);
		if (fd < 0)
			r = fd;
		else if (fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
			r = -errno;
		else
			link_size(p, n, fd, &st, NULL);
		if (fd >= 0)
			node_unpin(n);
	}
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		reply_attr(req, p, n, &st);
	leave(p);
}

static void pass_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid, struct fuse_file_info *fi)
{
	NODE(req, ino, n, p);
	OP_ENTER(p, req);
	struct pfile *f = fi ? (struct pfile *)(uintptr_t)fi->fh : NULL;
	int ffd = f && !f->is_dir ? f->fd : -1;
	/* Owners as root/ numbers them (show_uid), checked before anything
	 * changes; the kernel already let only root, or the owner to its own
	 * groups, ask (default_permissions, or the daemon's own rights). */
	int64_t hu = host_uid(p, (valid & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1);
	int64_t hg = host_gid(p, (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1);
	if (hu < 0 || hg < 0) {
		fuse_reply_err(req, EINVAL);
		leave(p);
		return;
	}
	int nfd = node_fd(p, n);
	char path[64];
	int r = 0;
	if (nfd < 0 && ffd < 0) {
		r = nfd;
		nfd = -1;
		goto out;
	}
	if (nfd >= 0)
		proc_path(path, sizeof(path), nfd);
	if (valid & FUSE_SET_ATTR_MODE) {
		if (ffd >= 0)
			r = fchmod(ffd, attr->st_mode & 07777);
		else if (S_ISLNK(n->type))
			r = (errno = EOPNOTSUPP, -1);
		else
			r = chmod(path, attr->st_mode & 07777);  /* no open: safe for fifos */
		if (r < 0)
			goto err;
	}
	if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		uid_t uid = (uid_t)hu;
		gid_t gid = (gid_t)hg;
		if (ffd >= 0)
			r = fchown(ffd, uid, gid);
		else
			r = fchownat(nfd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
		if (r < 0)
			goto err;
	}
	if (valid & FUSE_SET_ATTR_SIZE) {
		r = -1;
		if (ffd >= 0 && (f->flags & O_ACCMODE) != O_RDONLY)
			r = ftruncate(ffd, attr->st_size);
		else if (S_ISDIR(n->type))
			errno = EISDIR;
		else if (!S_ISREG(n->type))
			errno = EINVAL;
		else if (nfd >= 0)
			r = truncate(path, attr->st_size);
		else
			errno = ESTALE;
		if (r < 0)
			goto err;
	}
	if (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
		struct timespec tv[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
		if (valid & FUSE_SET_ATTR_ATIME_NOW)
			tv[0].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_ATIME)
			tv[0] = attr->st_atim;
		if (valid & FUSE_SET_ATTR_MTIME_NOW)
			tv[1].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_MTIME)
			tv[1] = attr->st_mtim;
		if (ffd >= 0)
			r = futimens(ffd, tv);
		else
			r = utimensat(nfd, "", tv, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
		if (r < 0)
			goto err;
	}
	struct stat st;
	r = ffd >= 0 ? fstat(ffd, &st) : fstatat(nfd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
	if (r < 0)
		goto err;
	if (ffd < 0)
		link_size(p, n, nfd, &st, NULL);
	/* Unpinned before the reply: once the kernel has it, a FORGET may
	 * free n on another thread. */
	if (nfd >= 0)
		node_unpin(n);
	reply_attr(req, p, n, &st);
	leave(p);
	return;
err:
	r = -errno;
out:
	if (nfd >= 0)
		node_unpin(n);
	fuse_reply_err(req, -r);
	leave(p);
}

static void pass_readlink(fuse_req_t req, fuse_ino_t ino)
{
	NODE(req, ino, n, p);
	OP_ENTER(p, req);
	char buf[PATH_MAX + 1], out[PATH_MAX + 1];
	int r;
	int fd = node_fd(p, n);
	if (fd < 0) {
		r = fd;
		goto out;
	}
	ssize_t len = readlinkat(fd, "", buf, sizeof(buf));
	node_unpin(n);
	if (len < 0) {
		r = -errno;
		goto out;
	}
	if ((size_t)len >= sizeof(buf)) {
		r = -ENAMETOOLONG;
		goto out;
	}
	buf[len] = '\0';
	keep_link_text(p, n, buf);
	r = rewrite_link(p, n, buf, out, sizeof(out));
	if (r == 0) {
		fuse_reply_readlink(req, out);
		leave(p);
		return;
	}
out:
	fuse_reply_err(req, -r);
	leave(p);
}

/* ---- creating and removing names -------------------------------------------------- */

/* Takes back an entry that could not be given to its caller (give_new),
 * if name is still that inode and the daemon's. */
static void remove_new(struct pass_fs *p, struct pnode *dir, const char *name, const struct stat *made)
{
	struct stat st = {0};
	int dfd = node_fd(p, dir);
	if (dfd < 0)
		return;
	if (stat_at(dfd, name, 0, &st, NULL) == 0 && st.st_dev == made->st_dev && st.st_ino == made->st_ino &&
	    st.st_uid == p->duid && unlinkat(dfd, name, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) < 0 && p->sb)
		sandbox_log(p->sb, "root/: %s was made but could not be given to its caller, nor removed: %s; "
			    "remove it from inside the sandbox", name, strerror(errno));
	node_unpin(dir);
}

/* Finishes mkdir/mknod/symlink/link: the entry of what is now at name.
 * mode: what was asked for a new inode (0: none). */
static void reply_new(fuse_req_t req, struct pass_fs *p, struct pnode *dir, const char *name, mode_t mode,
		      const struct owner *o, const char *link)
{
	struct idle_state c;
	state_get(p, &c);
	struct fuse_entry_param e;
	int r = lookup_core(p, dir, name, &e, c.idle, link);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	struct pnode *n = node_of(e.ino);
	if (o || (mode && (mode & p->umask & 0777))) {
		int fd = node_fd(p, n);
		if (fd < 0) {
			r = fd;
		} else {
			r = o ? give_new(p, dir, fd, 0, o, &e.attr) : 0;
			if (r == 0 && mode)
				fix_mode(p, fd, 0, mode, &e.attr);
			node_unpin(n);
		}
	}
	if (r < 0) {
		/* Not left behind as the daemon's (host root's) entry. */
		remove_new(p, dir, name, &e.attr);
		forget_node(n, 1);
		fuse_reply_err(req, -r);
		return;
	}
	reply_entry(req, p, dir, name, &e, &c);
}

static int dir_op_begin(fuse_req_t req, struct pass_fs *p, struct pnode *dir, const char *name, int *dfd)
{
	int r = name_check(name);
	if (r == 0 && !S_ISDIR(dir->type))
		r = -ENOTDIR;
	if (r == 0) {
		*dfd = node_fd(p, dir);
		if (*dfd < 0)
			r = *dfd;
	}
	if (r < 0)
		fuse_reply_err(req, -r);
	return r;
}

/* mknod, mkdir and symlink: make name in parent, then answer with its entry. */
enum make_kind { MAKE_NODE, MAKE_DIR, MAKE_LINK };

static int make_one(int dfd, const char *name, enum make_kind kind, mode_t mode, dev_t rdev, const char *link)
{
	int r;
	if (kind == MAKE_DIR)
		r = mkdirat(dfd, name, mode);
	else if (kind == MAKE_LINK)   /* the text as given: inside, the sandbox resolves it */
		r = symlinkat(link, dfd, name);
	else
		r = mknodat(dfd, name, mode, rdev);
	return r < 0 ? -errno : 0;
}

static void make_entry(fuse_req_t req, fuse_ino_t parent, const char *name, enum make_kind kind, mode_t mode,
		       dev_t rdev, const char *link)
{
	NODE(req, parent, dir, p);
	OP_ENTER(p, req);
	int dfd = -1;
	struct owner own, *o = NULL;
	if (p->ranged) {
		int e = caller_owner(p, req, &own);
		if (e < 0) {
			fuse_reply_err(req, -e);
			goto done;
		}
		o = &own;
	}
	if (dir_op_begin(req, p, dir, name, &dfd) < 0)
		goto done;
	int r;
	if ((S_ISCHR(mode) || S_ISBLK(mode)) && kind == MAKE_NODE && !(p->duid == 0 && fuse_req_ctx(req)->uid == 0)) {
		r = -EPERM;   /* device nodes: only host root may make them, as on the host */
	} else {
		r = make_one(dfd, name, kind, mode, rdev, link);
		if (r == -EOVERFLOW && o) {
			as_owner(o);
			r = make_one(dfd, name, kind, mode, rdev, link);
			as_daemon(p);
		}
	}
	node_unpin(dir);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		reply_new(req, p, dir, name, kind == MAKE_LINK ? 0 : mode & 07777, o, link);
done:
	leave(p);
}

static void pass_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	make_entry(req, parent, name, MAKE_NODE, mode, rdev, NULL);
}

static void pass_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	make_entry(req, parent, name, MAKE_DIR, mode, 0, NULL);
}

static void pass_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	make_entry(req, parent, name, MAKE_LINK, 0, 0, link);
}

static void pass_unlink_common(fuse_req_t req, fuse_ino_t parent, const char *name, int flags)
{
	NODE(req, parent, dir, p);
	OP_ENTER(p, req);
	int dfd = -1;
	if (dir_op_begin(req, p, dir, name, &dfd) < 0)
		goto done;
	int r = unlinkat(dfd, name, flags) < 0 ? -errno : 0;
	node_unpin(dir);
	fuse_reply_err(req, -r);
done:
	leave(p);
}

static void pass_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	pass_unlink_common(req, parent, name, 0);
}

static void pass_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	pass_unlink_common(req, parent, name, AT_REMOVEDIR);
}

/* After a rename the kernel moves its dentry of the renamed node(s):
 * record the new place for the depth bound and the fd hint. */
static void moved(struct pass_fs *p, const struct stat *st, struct pnode *dir, const char *name,
		  const struct idle_state *c)
{
	int freed = 0, recorded = 0;
	char *nm = strdup(name);
	pthread_mutex_lock(&p->lock);
	struct pnode *n = tab_find(p, st->st_dev, st->st_ino);
	if (n) {
		add_parent(n, dir);
		if (nm)
			set_hint(p, n, dir, &nm, &freed);
		/* The moved dentry keeps the timeout it had. */
		if (c->idle && n != p->root && hint_is(n, dir, name)) {
			n->ent_long = 1;
			recorded = 1;
		}
	}
	pthread_mutex_unlock(&p->lock);
	free(nm);
	pass_put(p, freed);
	if (c->idle && !recorded)
		record_entry(p, dir, name);
}

static void pass_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
			const char *newname, unsigned int flags)
{
	NODE(req, parent, dir, p);
	if (foreign_ino(newparent) || node_of(newparent)->p != p) {
		fuse_reply_err(req, EXDEV);
		return;
	}
	struct pnode *ndir = node_of(newparent);
	OP_ENTER(p, req);
	int dfd = -1, ndfd = -1, r;
	if (dir_op_begin(req, p, dir, name, &dfd) < 0)
		goto done;
	if ((r = name_check(newname)) < 0 || (ndfd = node_fd(p, ndir)) < 0) {
		fuse_reply_err(req, r < 0 ? -r : -ndfd);
		node_unpin(dir);
		goto done;
	}
	struct stat a, b;
	int have_a = fstatat(dfd, name, &a, AT_SYMLINK_NOFOLLOW) == 0;
	int have_b = (flags & RENAME_EXCHANGE) && fstatat(ndfd, newname, &b, AT_SYMLINK_NOFOLLOW) == 0;
	r = renameat2(dfd, name, ndfd, newname, flags) < 0 ? -errno : 0;
	node_unpin(dir);
	node_unpin(ndir);
	if (r == 0) {
		struct idle_state c;
		state_get(p, &c);
		if (have_a)
			moved(p, &a, ndir, newname, &c);
		if (have_b)
			moved(p, &b, dir, name, &c);
	}
	fuse_reply_err(req, -r);
done:
	leave(p);
}

static void pass_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	NODE(req, ino, n, p);
	if (foreign_ino(newparent) || node_of(newparent)->p != p) {
		fuse_reply_err(req, EXDEV);
		return;
	}
	struct pnode *dir = node_of(newparent);
	OP_ENTER(p, req);
	int dfd = -1;
	if (dir_op_begin(req, p, dir, newname, &dfd) < 0)
		goto done;
	int fd = node_fd(p, n);
	int r;
	if (fd < 0) {
		r = fd;
	} else {
		char path[64];
		proc_path(path, sizeof(path), fd);
		/* linkat(fd, "", AT_EMPTY_PATH) would need CAP_DAC_READ_SEARCH;
		 * the magic link of our own fd names exactly this inode. */
		r = linkat(AT_FDCWD, path, dfd, newname, AT_SYMLINK_FOLLOW) < 0 ? -errno : 0;
		node_unpin(n);
	}
	node_unpin(dir);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		reply_new(req, p, dir, newname, 0, NULL, NULL);
done:
	leave(p);
}

/* ---- open files --------------------------------------------------------------------- */

static struct pfile *pfile_new(struct pass_fs *p, struct pnode *n, int fd, int flags, int is_dir)
{
	struct pfile *f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	if (is_dir) {
		f->buf = malloc(PASS_DIRBUF);
		if (!f->buf) {
			free(f);
			return NULL;
		}
		pthread_mutex_init(&f->dlock, NULL);
	}
	f->n = n;
	f->fd = fd;
	f->flags = flags;
	f->is_dir = is_dir;
	pthread_mutex_lock(&p->lock);
	f->next = p->files;
	if (p->files)
		p->files->prev = f;
	p->files = f;
	n->nopen++;
	pthread_mutex_unlock(&p->lock);
	return f;
}

static void pfile_free(struct pass_fs *p, struct pfile *f)
{
	pthread_mutex_lock(&p->lock);
	if (f->prev)
		f->prev->next = f->next;
	else
		p->files = f->next;
	if (f->next)
		f->next->prev = f->prev;
	int fd = f->fd;
	f->fd = -1;
	/* Without open files no process can hold POSIX locks on the file. */
	if (--f->n->nopen == 0)
		owners_close(f->n);
	pthread_mutex_unlock(&p->lock);
	if (fd >= 0)
		close(fd);
	/* A lock wait on this file cannot outlive it. */
	pthread_mutex_lock(&p->wlock);
	struct lockwait *gone = NULL;
	for (struct lockwait **pp = &p->waits; *pp;) {
		struct lockwait *w = *pp;
		if (w->f == f) {
			*pp = w->next;
			w->next = gone;
			gone = w;
		} else {
			pp = &w->next;
		}
	}
	pthread_mutex_unlock(&p->wlock);
	for (struct lockwait *w = gone, *nx; w; w = nx) {
		nx = w->next;
		fuse_reply_err(w->req, EINTR);
		close(w->fd);
		free(w);
	}
	if (f->is_dir) {
		pthread_mutex_destroy(&f->dlock);
		free(f->buf);
	}
	free(f);
}

/* Files of procfs and the like claim size 0: read them with direct_io. */
static int is_synthetic(struct pnode *n, int fd)
{
	int syn = atomic_load(&n->synthetic);
	if (syn < 0) {
		struct statfs sf;
		int s = 0;
		if (fstatfs(fd, &sf) == 0) {
			switch ((unsigned long)sf.f_type) {
			case PROC_SUPER_MAGIC:
			case SYSFS_MAGIC:
			case CGROUP_SUPER_MAGIC:
			case CGROUP2_SUPER_MAGIC:
			case DEBUGFS_MAGIC:
			case TRACEFS_MAGIC:
			case SECURITYFS_MAGIC:
				s = 1;
				break;
			}
		}
		atomic_store(&n->synthetic, s);
		syn = s;
	}
	return syn;
}

static int writeback(struct pass_fs *p)
{
	return p->fs && p->fs->writeback;
}

/* Flags for our own open of a file the kernel opens with flags. */
static int io_flags(struct pass_fs *p, int flags)
{
	flags &= ~(O_CREAT | O_EXCL | O_NOCTTY | O_NOFOLLOW | O_DIRECT);
	if (writeback(p)) {
		/* The kernel reads pages of write-only files to fill them, and
		 * appends at its own idea of the end. */
		if ((flags & O_ACCMODE) == O_WRONLY)
			flags = (flags & ~O_ACCMODE) | O_RDWR;
		flags &= ~O_APPEND;
	}
	/* O_NONBLOCK: a lease held inside, or /proc/kmsg, must not block a
	 * worker thread; regular files ignore it otherwise. */
	return flags | O_CLOEXEC | O_NONBLOCK;
}

/* Decides keep_cache and remembers what the kernel's cache now holds.
 * While idle, pages cached during this same idle period are good (only we
 * changed the file, through the kernel's own cache); otherwise only if
 * mtime, ctime and size are what they were when we last looked. */
static int keep_cache(struct pass_fs *p, struct pnode *n, const struct stat *st, const struct idle_state *c)
{
	pthread_mutex_lock(&p->lock);
	struct stamp *s = &n->stamp;
	int keep = s->valid && ((c->idle && s->idle && s->epoch == c->epoch) ||
				(s->size == st->st_size && s->mtim.tv_sec == st->st_mtim.tv_sec &&
				 s->mtim.tv_nsec == st->st_mtim.tv_nsec && s->ctim.tv_sec == st->st_ctim.tv_sec &&
				 s->ctim.tv_nsec == st->st_ctim.tv_nsec));
	s->mtim = st->st_mtim;
	s->ctim = st->st_ctim;
	s->size = st->st_size;
	s->epoch = c->epoch;
	s->idle = c->idle;
	s->valid = 1;
	pthread_mutex_unlock(&p->lock);
	return keep;
}

static void set_open_flags(struct pass_fs *p, struct pnode *n, int fd, struct fuse_file_info *fi,
			   const struct stat *st, const struct idle_state *c)
{
	/* Shared writable mmap needs the page cache: no direct_io for
	 * regular files, except O_DIRECT opens and synthetic files. */
	fi->direct_io = (fi->flags & O_DIRECT) || is_synthetic(n, fd);
	fi->keep_cache = !fi->direct_io && keep_cache(p, n, st, c);
	/* flush must reach us: it drops the closing process's locks. */
	fi->noflush = 0;
}

static void pass_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	NODE(req, ino, n, p);
	OP_ENTER(p, req);
	int r;
	if (!S_ISREG(n->type)) {
		/* Only regular files are ever reopened (the kernel opens
		 * fifos and devices itself; symlinks are never opened). */
		r = S_ISDIR(n->type) ? -EISDIR : -ENXIO;
		goto err;
	}
	int nfd = node_fd(p, n);
	if (nfd < 0) {
		r = nfd;
		goto err;
	}
	char path[64];
	proc_path(path, sizeof(path), nfd);
	int fd = open(path, io_flags(p, fi->flags));
	r = fd < 0 ? -errno : 0;
	node_unpin(n);
	if (r < 0)
		goto err;
	struct stat st;
	struct idle_state c;
	state_get(p, &c);
	if (fstat(fd, &st) < 0) {
		r = -errno;
		close(fd);
		goto err;
	}
	struct pfile *f = pfile_new(p, n, fd, fi->flags, 0);
	if (!f) {
		close(fd);
		r = -ENOMEM;
		goto err;
	}
	set_open_flags(p, n, fd, fi, &st, &c);
	fi->fh = (uint64_t)(uintptr_t)f;
	if (fuse_reply_open(req, fi) == -ENOENT)
		pfile_free(p, f);      /* the open was interrupted */
	leave(p);
	return;
err:
	fuse_reply_err(req, -r);
	leave(p);
}

static void pass_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
	NODE(req, parent, dir, p);
	OP_ENTER(p, req);
	int dfd = -1;
	struct owner own;
	int e0 = p->ranged ? caller_owner(p, req, &own) : 0;
	if (e0 < 0) {
		fuse_reply_err(req, -e0);
		goto done;
	}
	if (dir_op_begin(req, p, dir, name, &dfd) < 0)
		goto done;
	int r, fd;
	/* Create exclusively first: O_CREAT on a name that a symlink took
	 * meanwhile would otherwise follow it. */
	fd = open_child(p, dfd, name, io_flags(p, fi->flags) | O_CREAT | O_EXCL, mode & 07777);
	if (fd == -EOVERFLOW && p->ranged) {
		as_owner(&own);
		fd = open_child(p, dfd, name, io_flags(p, fi->flags) | O_CREAT | O_EXCL, mode & 07777);
		as_daemon(p);
	}
	int created = fd >= 0;
	if (fd == -EEXIST && !(fi->flags & O_EXCL)) {
		int pfd = open_child(p, dfd, name, O_PATH, 0);
		struct stat st;
		if (pfd < 0) {
			fd = pfd;
		} else if (fstatat(pfd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
			fd = -errno;
		} else if (S_ISREG(st.st_mode)) {
			char path[64];
			proc_path(path, sizeof(path), pfd);
			fd = open(path, io_flags(p, fi->flags));
			if (fd < 0)
				fd = -errno;
		} else {
			fd = S_ISDIR(st.st_mode) ? -EISDIR : S_ISLNK(st.st_mode) ? -ELOOP : -ENXIO;
		}
		if (pfd >= 0)
			close(pfd);
	}
	if (fd < 0) {
		node_unpin(dir);
		fuse_reply_err(req, -fd);
		goto done;
	}
	struct fuse_entry_param e;
	memset(&e, 0, sizeof(e));
	struct idle_state c;
	state_get(p, &c);
	struct pident id;
	r = stat_id(fd, &e.attr, &id);
	if (r < 0)
		goto fail;
	if (created && p->ranged && (r = give_new(p, dir, fd, 1, &own, &e.attr)) < 0) {
		remove_new(p, dir, name, &e.attr);
		goto fail;
	}
	if (created)
		fix_mode(p, fd, 1, mode & 07777, &e.attr);
	/* The node's own O_PATH fd: the name, if it is still this file
	 * (never a dup of fd, which would share its flock/OFD locks). */
	int pfd = open_child(p, dfd, name, O_PATH, 0);
	struct stat pst;
	if (pfd >= 0 && (fstatat(pfd, "", &pst, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ||
			 pst.st_dev != e.attr.st_dev || pst.st_ino != e.attr.st_ino)) {
		close(pfd);
		pfd = -1;
	}
	if (pfd < 0) {
		char path[64];
		proc_path(path, sizeof(path), fd);
		pfd = open(path, O_PATH | O_CLOEXEC);
	}
	struct pnode *n;
	r = node_get(p, dir, name, pfd, &e.attr, &id, c.idle, &n);
	if (r < 0)
		goto fail;
	struct pfile *f = pfile_new(p, n, fd, fi->flags, 0);
	if (!f) {
		forget_node(n, 1);
		r = -ENOMEM;
		goto fail;
	}
	node_unpin(dir);
	set_open_flags(p, n, fd, fi, &e.attr, &c);
	fi->fh = (uint64_t)(uintptr_t)f;
	e.ino = (fuse_ino_t)(uintptr_t)n;
	if (c.idle) {
		e.attr_timeout = e.entry_timeout = c.t;     /* recorded by node_get */
		atomic_store(&n->attr_long, 1);
	}
	e.ino = ino_of(p, n);
	show_owner(p, &e.attr);
	if (fuse_reply_create(req, &e, fi) == -ENOENT) {
		pfile_free(p, f);
		forget_node(n, 1);
	}
	goto done;
fail:
	node_unpin(dir);
	close(fd);
	fuse_reply_err(req, -r);
done:
	leave(p);
}

static void pass_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	NODE(req, ino, n, p);
	(void)n;
	OP_ENTER(p, req);
	struct pfile *f = (struct pfile *)(uintptr_t)fi->fh;
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = f->fd;
	buf.buf[0].pos = off;
	fuse_reply_data(req, &buf, copy_flags(p));
	leave(p);
}

static void pass_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off, struct fuse_file_info *fi)
{
	NODE(req, ino, n, p);
	(void)n;
	OP_ENTER(p, req);
	struct pfile *f = (struct pfile *)(uintptr_t)fi->fh;
	struct fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in));
	out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	out.buf[0].fd = f->fd;
	out.buf[0].pos = off;
	/* With O_APPEND our fd appends wherever off says (pwrite on an
	 * O_APPEND fd appends), so concurrent appenders never overwrite. */
	ssize_t r = fuse_buf_copy(&out, in, copy_flags(p));
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_write(req, (size_t)r);
	leave(p);
}

static void pass_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	NODE(req, ino, n, p);
	if (enter(p) < 0) {
		/* The sandbox is gone and so are its locks: a close must not
		 * fail for that. */
		fuse_reply_err(req, 0);
		return;
	}
	struct pfile *f = (struct pfile *)(uintptr_t)fi->fh;
	/* POSIX: any close by a process drops its locks on the file. */
	pthread_mutex_lock(&p->lock);
	struct lockowner *gone = NULL;
	for (struct lockowner **pp = &n->owners; *pp; pp = &(*pp)->next) {
		if ((*pp)->owner == fi->lock_owner) {
			gone = *pp;
			*pp = gone->next;
			break;
		}
	}
	pthread_mutex_unlock(&p->lock);
	if (gone) {
		close(gone->fd);
		free(gone);
	}
	/* Errors the file system reports at close (quota, network fs). */
	int d = dup(f->fd);
	int r = d < 0 ? -errno : close(d) < 0 ? -errno : 0;
	fuse_reply_err(req, -r);
	leave(p);
}

static void pass_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	NODE(req, ino, n, p);
	(void)n;
	/* No enter(): a release after pass_kill must still free the handle. */
	pfile_free(p, (struct pfile *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static int open_dir_fd(struct pass_fs *p, struct pnode *n);

static void pass_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	NODE(req, ino, n, p);
	OP_ENTER(p, req);
	struct pfile *f = (struct pfile *)(uintptr_t)fi->fh;
	int fd = f ? f->fd : open_dir_fd(p, n);   /* fsyncdir without OPENDIR */
	int r = fd < 0 ? -fd : (datasync ? fdatasync(fd) : fsync(fd)) < 0 ? errno : 0;
	if (!f && fd >= 0)
		close(fd);
	fuse_reply_err(req, r);
	leave(p);
}

static void pass_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
			   struct fuse_file_info *fi)
{
	NODE(req, ino, n, p);
	(void)n;
	OP_ENTER(p, req);
	struct pfile *f = (struct pfile *)(uintptr_t)fi->fh;
	fuse_reply_err(req, fallocate(f->fd, mode, offset, length) < 0 ? errno : 0);
	leave(p);
}

/* The inode flags the kernel's file-attribute calls carry (its
 * FS_COMMON_FL): a FUSE SETFLAGS holds these and nothing else. */
#define PASS_INODE_FLAGS (FS_SYNC_FL | FS_IMMUTABLE_FL | FS_APPEND_FL | FS_NODUMP_FL | FS_NOATIME_FL | \
			  FS_DAX_FL | FS_PROJINHERIT_FL)

/* chattr/lsattr: the inode flags of a regular file or directory (the
 * kernel sends them as FS_IOC_GETFLAGS/SETFLAGS for its fileattr calls,
 * after checking that the caller owns the file and, for the append-only
 * and immutable flags, holds CAP_LINUX_IMMUTABLE). Only those flags of the
 * file itself change; the backing file system's others (ext4's extents
 * flag, which it refuses to clear) stay as they are, and nothing else of
 * the ioctl space passes but FS_IOC_FSGETXATTR, which the kernel asks
 * before every change (FS_IOC_FSSETXATTR is refused: its project id would
 * reach the host's quotas). The file is opened anew from its node's O_PATH fd
 * (a regular file or directory, never a link): fi may be the kernel's own
 * short-lived open, or none for a directory (OPENDIR is refused). */
static void pass_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg, struct fuse_file_info *fi,
		       unsigned flags, const void *in_buf, size_t in_bufsz, size_t out_bufsz)
{
	NODE(req, ino, n, p);
	OP_ENTER(p, req);
	int r = 0, fd = -1, attr = 0;
	struct fsxattr fsx;
	size_t need = cmd == FS_IOC_FSGETXATTR ? sizeof(fsx) : sizeof(attr);
	if ((cmd != FS_IOC_GETFLAGS && cmd != FS_IOC_SETFLAGS && cmd != FS_IOC_FSGETXATTR) ||
	    (flags & FUSE_IOCTL_UNRESTRICTED) || (n->type != S_IFREG && n->type != S_IFDIR)) {
		r = -ENOTTY;
		goto out;
	}
	if (cmd == FS_IOC_SETFLAGS ? in_bufsz < need : out_bufsz < need) {
		r = -EINVAL;
		goto out;
	}
	if (cmd == FS_IOC_SETFLAGS)
		memcpy(&attr, in_buf, sizeof(attr));
	int nfd = node_fd(p, n);
	if (nfd < 0) {
		r = nfd;
		goto out;
	}
	char path[64];
	proc_path(path, sizeof(path), nfd);
	fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | (n->type == S_IFDIR ? O_DIRECTORY : 0));
	node_unpin(n);
	int cur = 0;
	if (fd < 0)
		r = -errno;
	else if (cmd == FS_IOC_SETFLAGS && ioctl(fd, FS_IOC_GETFLAGS, &cur) < 0)
		r = -errno;
	else if (cmd == FS_IOC_SETFLAGS)
		attr = (cur & ~PASS_INODE_FLAGS) | (attr & PASS_INODE_FLAGS);
	if (r == 0 && ioctl(fd, cmd, cmd == FS_IOC_FSGETXATTR ? (void *)&fsx : (void *)&attr) < 0)
		r = -errno;
out:
	if (fd >= 0)
		close(fd);
	if (r < 0)
		fuse_reply_err(req, -r);
	else if (cmd == FS_IOC_SETFLAGS)
		fuse_reply_ioctl(req, 0, NULL, 0);
	else
		fuse_reply_ioctl(req, 0, cmd == FS_IOC_FSGETXATTR ? (void *)&fsx : (void *)&attr, need);
	leave(p);
}

static void pass_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, struct fuse_file_info *fi_in,
				 fuse_ino_t ino_out, off_t off_out, struct fuse_file_info *fi_out, size_t len,
				 int flags)
{
	NODE(req, ino_in, n, p);
	(void)n;
	if (foreign_ino(ino_out) || node_of(ino_out)->p != p) {
		fuse_reply_err(req, EXDEV);     /* the kernel falls back to copying */
		return;
	}
	OP_ENTER(p, req);
	struct pfile *fin = (struct pfile *)(uintptr_t)fi_in->fh, *fout = (struct pfile *)(uintptr_t)fi_out->fh;
	loff_t a = off_in, b = off_out;
	ssize_t r = copy_file_range(fin->fd, &a, fout->fd, &b, len, (unsigned)flags);
	if (r < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_write(req, (size_t)r);
	leave(p);
}

static void pass_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi)
{
	NODE(req, ino, n, p);
	(void)n;
	OP_ENTER(p, req);
	struct pfile *f = (struct pfile *)(uintptr_t)fi->fh;
	off_t r = lseek(f->fd, off, whence);
	if (r < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_lseek(req, r);
	leave(p);
}

/* ---- locks ---------------------------------------------------------------------------- */

/* The fd whose OFD locks are owner's on n (created on demand); -ENOENT
 * when it has none and create is 0. Returned fd is a dup: close it. */
static int owner_fd(struct pass_fs *p, struct pnode *n, struct pfile *f, uint64_t owner, int create, int need)
{
	pthread_mutex_lock(&p->lock);
	for (struct lockowner *o = n->owners; o; o = o->next) {
		if (o->owner == owner) {
			int ok = o->acc == O_RDWR || o->acc == need || need < 0;
			int fd = ok ? fcntl(o->fd, F_DUPFD_CLOEXEC, 0) : -1;
			int e = ok ? -errno : -EBADF;
			pthread_mutex_unlock(&p->lock);
			return fd >= 0 ? fd : e;
		}
	}
	pthread_mutex_unlock(&p->lock);
	if (!create)
		return -ENOENT;
	/* A separate open file description per owner: locks of different
	 * owners conflict even when they share f (after fork). */
	char path[64];
	proc_path(path, sizeof(path), f->fd);
	int acc = O_RDWR;
	int fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		acc = f->flags & O_ACCMODE;
		fd = open(path, acc | O_CLOEXEC | O_NONBLOCK);
		if (fd < 0)
			return -errno;
	}
	struct lockowner *o = calloc(1, sizeof(*o));
	if (!o) {
		close(fd);
		return -ENOMEM;
	}
	o->owner = owner;
	o->fd = fd;
	o->acc = acc;
	pthread_mutex_lock(&p->lock);
	for (struct lockowner *x = n->owners; x; x = x->next) {
		if (x->owner == owner) {        /* raced with another thread */
			pthread_mutex_unlock(&p->lock);
			close(fd);
			free(o);
			return owner_fd(p, n, f, owner, 0, need);
		}
	}
	o->next = n->owners;
	n->owners = o;
	int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	int e = -errno;
	pthread_mutex_unlock(&p->lock);
	return d >= 0 ? d : e;
}

static void pass_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock)
{
	NODE(req, ino, n, p);
	OP_ENTER(p, req);
	struct pfile *f = (struct pfile *)(uintptr_t)fi->fh;
	int fd = owner_fd(p, n, f, fi->lock_owner, 0, -1);
	int own = fd >= 0;
	if (!own)
		fd = f->fd;     /* holds no OFD locks itself: sees everyone's */
	struct flock fl = *lock;
	fl.l_pid = 0;
	int r = fcntl(fd, F_OFD_GETLK, &fl) < 0 ? -errno : 0;
	if (own)
		close(fd);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_lock(req, &fl);
	leave(p);
}

static void pass_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock, int sleep)
{
	NODE(req, ino, n, p);
	OP_ENTER(p, req);
	struct pfile *f = (struct pfile *)(uintptr_t)fi->fh;
	int unlock = lock->l_type == F_UNLCK;
	int need = lock->l_type == F_WRLCK ? O_WRONLY : lock->l_type == F_RDLCK ? O_RDONLY : -1;
	int fd = owner_fd(p, n, f, fi->lock_owner, !unlock, need);
	if (fd == -ENOENT && unlock) {
		fuse_reply_err(req, 0);         /* the owner holds nothing here */
		goto done;
	}
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		goto done;
	}
	struct flock fl = *lock;
	fl.l_pid = 0;
	int r = fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
	if (r < 0 && sleep && lock_again(r)) {
		struct lockwait *w = calloc(1, sizeof(*w));
		if (w) {
			w->req = req;
			w->fd = fd;
			w->fl = fl;
			w->f = f;
			if (queue_wait(p, w) == 0)
				goto done;      /* the worker replies */
			free(w);
		}
		r = -ENOLCK;
	}
	close(fd);
	fuse_reply_err(req, -r);
done:
	leave(p);
}

static void pass_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
{
	NODE(req, ino, n, p);
	(void)n;
	OP_ENTER(p, req);
	struct pfile *f = (struct pfile *)(uintptr_t)fi->fh;
	int r = flock(f->fd, op | LOCK_NB) < 0 ? -errno : 0;
	if (r < 0 && !(op & LOCK_NB) && lock_again(r)) {
		struct lockwait *w = calloc(1, sizeof(*w));
		int fd = w ? fcntl(f->fd, F_DUPFD_CLOEXEC, 0) : -1;
		if (w && fd >= 0) {
			w->req = req;
			w->fd = fd;
			w->is_flock = 1;
			w->op = op & ~LOCK_NB;
			w->f = f;
			if (queue_wait(p, w) == 0)
				goto done;
		}
		if (fd >= 0)
			close(fd);
		free(w);
		r = -ENOLCK;
	}
	fuse_reply_err(req, -r);
done:
	leave(p);
}

/* ---- directories ------------------------------------------------------------------------ */

static void pass_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	NODE(req, ino, n, p);
	OP_ENTER(p, req);
	int r;
	if (!S_ISDIR(n->type)) {
		r = -ENOTDIR;
		goto err;
	}
	int fd = open_dir_fd(p, n);
	if (fd < 0) {
		r = fd;
		goto err;
	}
	struct pfile *f = pfile_new(p, n, fd, O_RDONLY, 1);
	if (!f) {
		close(fd);
		r = -ENOMEM;
		goto err;
	}
	struct idle_state c;
	state_get(p, &c);
	/* Listings are cached only while idle; a sweep expires the
	 * directory's attributes, and the kernel then drops the cached
	 * listing when it sees the new mtime. */
	fi->cache_readdir = c.idle;
	fi->keep_cache = c.idle;
	if (c.idle)
		atomic_store(&n->attr_long, 1);
	fi->fh = (uint64_t)(uintptr_t)f;
	if (fuse_reply_open(req, fi) == -ENOENT)
		pfile_free(p, f);
	leave(p);
	return;
err:
	fuse_reply_err(req, -r);
	leave(p);
}

struct linux_dirent64 {
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

/* ---- directory streams: READDIR without OPENDIR ----------------------------------- */

/* Opens directory n for reading; -errno on failure. */
static int open_dir_fd(struct pass_fs *p, struct pnode *n)
{
	int nfd = node_fd(p, n);
	if (nfd < 0)
		return nfd;
	/* "." from the O_PATH fd is a shorter walk than /proc/self/fd/N;
	 * it needs search permission, which /proc's reopen does not. */
	int fd = openat(nfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 && errno == EACCES) {
		char path[64];
		proc_path(path, sizeof(path), nfd);
		fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}
	int r = fd < 0 ? -errno : fd;
	node_unpin(n);
	return r;
}

static void dstream_release(struct pass_fs *p, struct pfile *f)
{
	struct pnode *n = f->n;
	pfile_free(p, f);
	pthread_mutex_lock(&p->lock);
	n->refs--;
	int freed = node_maybe_free(p, n);
	pthread_mutex_unlock(&p->lock);
	pass_put(p, freed);
}

/* The stream that continues n's listing at off, or a new one. */
static int dstream_get(struct pass_fs *p, struct pnode *n, off_t off, struct pfile **out)
{
	struct pfile *f = NULL;
	pthread_mutex_lock(&p->lock);
	for (int i = 0; i < PASS_DSTREAMS && !f; i++) {
		if (p->ds[i] && p->ds[i]->n == n && p->ds[i]->pos == off) {
			f = p->ds[i];
			p->ds[i] = NULL;
		}
	}
	pthread_mutex_unlock(&p->lock);
	if (!f) {
		if (!S_ISDIR(n->type))
			return -ENOTDIR;
		int fd = open_dir_fd(p, n);
		if (fd < 0)
			return fd;
		f = pfile_new(p, n, fd, O_RDONLY, 1);
		if (!f) {
			close(fd);
			return -ENOMEM;
		}
		pthread_mutex_lock(&p->lock);
		n->refs++;
		pthread_mutex_unlock(&p->lock);
	}
	*out = f;
	return 0;
}

/* Parks a stream for the next READDIR of its listing; a finished one
 * (or one pushed out by newer listings) is closed. */
static void dstream_done(struct pass_fs *p, struct pfile *f, int failed)
{
	struct pfile *victim = f;
	if (!failed && !f->eof && !atomic_load(&p->dead)) {
		pthread_mutex_lock(&p->lock);
		int slot = -1;
		for (int i = 0; i < PASS_DSTREAMS && slot < 0; i++)
			if (!p->ds[i])
				slot = i;
		if (slot < 0)
			slot = (int)(p->ds_hand++ % PASS_DSTREAMS);
		victim = p->ds[slot];
		p->ds[slot] = f;
		pthread_mutex_unlock(&p->lock);
	}
	if (victim)
		dstream_release(p, victim);
}

/* Drops every parked stream (the sandbox is going away). */
static void dstreams_drop(struct pass_fs *p)
{
	struct pfile *v[PASS_DSTREAMS];
	pthread_mutex_lock(&p->lock);
	for (int i = 0; i < PASS_DSTREAMS; i++) {
		v[i] = p->ds[i];
		p->ds[i] = NULL;
	}
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < PASS_DSTREAMS; i++)
		if (v[i])
			dstream_release(p, v[i]);
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi, int plus)
{
	NODE(req, ino, dir, p);
	OP_ENTER(p, req);
	struct pfile *f = (struct pfile *)(uintptr_t)fi->fh;
	int streamed = !f;
	if (streamed) {
		int r = dstream_get(p, dir, off, &f);
		if (r < 0) {
			fuse_reply_err(req, -r);
			leave(p);
			return;
		}
	}
	char *out = malloc(size ? size : 1);
	fuse_ino_t *counted = NULL;
	size_t ncounted = 0, cap = 0;
	if (!out) {
		if (streamed)
			dstream_done(p, f, 1);
		fuse_reply_err(req, ENOMEM);
		leave(p);
		return;
	}
	struct idle_state c;
	state_get(p, &c);
	size_t rem = size;
	int err = 0;
	pthread_mutex_lock(&f->dlock);
	if (off != f->pos) {
		/* The kernel restarts from an offset (seekdir, rewinddir, or
		 * a reply it could not use): the fs's own cookies. */
		if (lseek(f->fd, off, SEEK_SET) < 0) {
			err = errno;
			goto out;
		}
		f->pos = off;
		f->len = f->cur = 0;
		f->eof = 0;
	}
	for (;;) {
		if (f->cur >= f->len) {
			if (f->eof)
				break;
			long got = syscall(SYS_getdents64, f->fd, f->buf, PASS_DIRBUF);
			if (got < 0) {
				err = errno;
				break;
			}
			if (got == 0) {
				f->eof = 1;
				break;
			}
			f->len = (size_t)got;
			f->cur = 0;
		}
		struct linux_dirent64 *d = (struct linux_dirent64 *)(f->buf + f->cur);
		const char *name = d->d_name;
		int dots = name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2]));
		size_t need = plus ? fuse_add_direntry_plus(req, NULL, 0, name, NULL, 0)
				   : fuse_add_direntry(req, NULL, 0, name, NULL, 0);
		if (need > rem)
			break;
		if (!plus) {
			struct stat st = {.st_ino = d->d_ino, .st_mode = (mode_t)d->d_type << 12};
			fuse_add_direntry(req, out + size - rem, rem, name, &st, d->d_off);
		} else {
			struct fuse_entry_param e;
			memset(&e, 0, sizeof(e));
			int r = dots ? -1 : lookup_listed(p, dir, f->fd, name, d->d_ino, &e, c.idle);
			if (r == -ENOENT) {
				/* Removed since the listing was read: leave it out. */
				f->cur += d->d_reclen;
				f->pos = d->d_off;
				continue;
			}
			if (r < 0) {
				/* "." and "..", or no node (out of fds...): a
				 * plain entry; ino 0 tells the kernel to skip it. */
				memset(&e, 0, sizeof(e));
				e.attr.st_ino = d->d_ino;
				e.attr.st_mode = (mode_t)d->d_type << 12;
			} else {
				struct pnode *n = node_of(e.ino);
				if (ncounted == cap) {
					size_t nc = cap ? cap * 2 : 64;
					fuse_ino_t *t = realloc(counted, nc * sizeof(*t));
					if (!t) {
						forget_node(n, 1);
						err = ENOMEM;
						break;
					}
					counted = t;
					cap = nc;
				}
				counted[ncounted++] = e.ino;
				if (c.idle) {
					/* recorded on the node by lookup_core */
					e.attr_timeout = e.entry_timeout = c.t;
					atomic_store(&n->attr_long, 1);
				}
				e.ino = ino_of(p, n);
				show_owner(p, &e.attr);
			}
			fuse_add_direntry_plus(req, out + size - rem, rem, name, &e, d->d_off);
		}
		rem -= need;
		f->cur += d->d_reclen;
		f->pos = d->d_off;
	}
out:
	pthread_mutex_unlock(&f->dlock);
	/* An error after some entries: return those (their lookups are
	 * counted); the error comes again on the next call. */
	int sent;
	if (err && rem == size)
		sent = fuse_reply_err(req, err);
	else
		sent = fuse_reply_buf(req, out, size - rem);
	if (sent == -ENOENT)
		for (size_t i = 0; i < ncounted; i++)
			forget_node(node_of(counted[i]), 1);
	if (c.idle && ncounted && idle_gate_moved(&p->gate, &c))
		request_sweep(p);
	if (streamed)
		dstream_done(p, f, err != 0);
	free(counted);
	free(out);
	leave(p);
}

static void pass_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, 0);
}

static void pass_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, 1);
}


static void pass_statfs(fuse_req_t req, fuse_ino_t ino)
{
	NODE(req, ino, n, p);
	OP_ENTER(p, req);
	struct statvfs sv;
	int fd = node_fd(p, n);
	int r = fd < 0 ? fd : fstatvfs(fd, &sv) < 0 ? -errno : 0;
	if (fd >= 0)
		node_unpin(n);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_statfs(req, &sv);
	leave(p);
}

/* access(2) and chdir: without default_permissions (see fs/main.c) the
 * kernel asks us, and the daemon runs as the caller, so the file's own
 * check with our credentials is the caller's answer. */
static void pass_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	NODE(req, ino, n, p);
	OP_ENTER(p, req);
	int fd = node_fd(p, n);
	int r = fd < 0 ? fd : faccessat(fd, "", mask, AT_EMPTY_PATH | AT_EACCESS) < 0 ? -errno : 0;
	if (fd >= 0)
		node_unpin(n);
	fuse_reply_err(req, -r);
	leave(p);
}

/* ---- extended attributes ---------------------------------------------------------------- */

/* trusted.* needs CAP_SYS_ADMIN on the host and security.* carries file
 * capabilities and LSM labels: neither may depend on whether seerfs runs
 * as root, nor give a host process what the sandbox set. Reads say "no
 * such attribute" (exec through root/ asks for security.capability), writes
 * are refused, listings leave them out. */
static int xattr_hidden(const char *name)
{
	return !strncmp(name, "trusted.", 8) || !strncmp(name, "security.", 9);
}

/* The answer to a write of a hidden attribute: root/ has no such
 * namespace, and the kernel answers that as it does for a file system
 * without one: EPERM for an immutable or append-only file (its own check
 * comes first, and a FUSE inode does not carry those flags, so the
 * backing file's are asked), else EOPNOTSUPP (which tools that copy
 * attributes, and xfstests, take as "not kept here"). Callers the kernel
 * does not let write trusted.* or security.* get its EPERM before this. */
static int xattr_refusal(struct pass_fs *p, struct pnode *n)
{
	if (n->type != S_IFREG && n->type != S_IFDIR)
		return EOPNOTSUPP;
	int nfd = node_fd(p, n);
	if (nfd < 0)
		return -nfd;
	char path[64];
	proc_path(path, sizeof(path), nfd);
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | (n->type == S_IFDIR ? O_DIRECTORY : 0));
	node_unpin(n);
	int flags = 0;
	if (fd >= 0) {
		if (ioctl(fd, FS_IOC_GETFLAGS, &flags) < 0)
			flags = 0;
		close(fd);
	}
	return flags & (FS_IMMUTABLE_FL | FS_APPEND_FL) ? EPERM : EOPNOTSUPP;
}

/* Path for the *xattr calls: the magic link of our fd. Symlinks answer
 * without a syscall (user.* is not allowed on them anyway). */
static int xattr_begin(fuse_req_t req, struct pass_fs *p, struct pnode *n, char *path, size_t len, int *fd)
{
	*fd = node_fd(p, n);
	if (*fd < 0) {
		fuse_reply_err(req, -*fd);
		return -1;
	}
	proc_path(path, len, *fd);
	return 0;
}

static void pass_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	NODE(req, ino, n, p);
	OP_ENTER(p, req);
	char path[64];
	int fd;
	if (xattr_hidden(name) || S_ISLNK(n->type)) {
		fuse_reply_err(req, ENODATA);
		goto done;
	}
	if (xattr_begin(req, p, n, path, sizeof(path), &fd) < 0)
		goto done;
	char *buf = size ? malloc(size) : NULL;
	ssize_t r = size && !buf ? (errno = ENOMEM, -1) : getxattr(path, name, buf, size);
	node_unpin(n);
	if (r < 0)
		fuse_reply_err(req, errno);
	else if (!size)
		fuse_reply_xattr(req, (size_t)r);
	else
		fuse_reply_buf(req, buf, (size_t)r);
	free(buf);
done:
	leave(p);
}

static void pass_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	NODE(req, ino, n, p);
	OP_ENTER(p, req);
	char path[64];
	int fd;
	if (S_ISLNK(n->type)) {
		if (size)
			fuse_reply_buf(req, NULL, 0);
		else
			fuse_reply_xattr(req, 0);
		goto done;
	}
	if (xattr_begin(req, p, n, path, sizeof(path), &fd) < 0)
		goto done;
	/* Filtering needs the whole list, whatever size the caller has. */
	ssize_t len = 0;
	char *buf = NULL;
	for (int tries = 0; tries < 8; tries++) {
		len = listxattr(path, NULL, 0);
		if (len <= 0)
			break;
		free(buf);
		buf = malloc((size_t)len);
		if (!buf) {
			len = -1;
			errno = ENOMEM;
			break;
		}
		len = listxattr(path, buf, (size_t)len);
		if (len >= 0 || errno != ERANGE)
			break;
	}
	int e = errno;
	node_unpin(n);
	if (len < 0) {
		fuse_reply_err(req, e);
	} else {
		size_t o = 0;
		for (ssize_t i = 0; i < len;) {
			size_t l = strlen(buf + i) + 1;
			if (!xattr_hidden(buf + i)) {
				memmove(buf + o, buf + i, l);
				o += l;
			}
			i += (ssize_t)l;
		}
		if (!size)
			fuse_reply_xattr(req, o);
		else if (o > size)
			fuse_reply_err(req, ERANGE);
		else
			fuse_reply_buf(req, buf, o);
	}
	free(buf);
done:
	leave(p);
}

static void pass_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags)
{
	NODE(req, ino, n, p);
	OP_ENTER(p, req);
	char path[64];
	int fd;
	if (xattr_hidden(name) || S_ISLNK(n->type)) {
		fuse_reply_err(req, xattr_refusal(p, n));
		goto done;
	}
	if (xattr_begin(req, p, n, path, sizeof(path), &fd) < 0)
		goto done;
	int r = setxattr(path, name, value, size, flags) < 0 ? errno : 0;
	node_unpin(n);
	fuse_reply_err(req, r);
done:
	leave(p);
}

static void pass_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	NODE(req, ino, n, p);
	OP_ENTER(p, req);
	char path[64];
	int fd;
	if (xattr_hidden(name) || S_ISLNK(n->type)) {
		fuse_reply_err(req, xattr_refusal(p, n));
		goto done;
	}
	if (xattr_begin(req, p, n, path, sizeof(path), &fd) < 0)
		goto done;
	int r = removexattr(path, name) < 0 ? errno : 0;
	node_unpin(n);
	fuse_reply_err(req, r);
done:
	leave(p);
}

/* ---- the public side ---------------------------------------------------------------------- */

const struct fuse_lowlevel_ops pass_ops = {
	.access = pass_access,
	.lookup = pass_lookup,
	.forget = pass_forget,
	.forget_multi = pass_forget_multi,
	.getattr = pass_getattr,
	.setattr = pass_setattr,
	.readlink = pass_readlink,
	.mknod = pass_mknod,
	.mkdir = pass_mkdir,
	.unlink = pass_unlink,
	.rmdir = pass_rmdir,
	.symlink = pass_symlink,
	.rename = pass_rename,
	.link = pass_link,
	.open = pass_open,
	.read = pass_read,
	.write_buf = pass_write_buf,
	.flush = pass_flush,
	.release = pass_release,
	.fsync = pass_fsync,
	.opendir = pass_opendir,
	.readdir = pass_readdir,
	.readdirplus = pass_readdirplus,
	.releasedir = pass_release,   /* same handle type as files */
	.fsyncdir = pass_fsync,
	.statfs = pass_statfs,
	.setxattr = pass_setxattr,
	.getxattr = pass_getxattr,
	.listxattr = pass_listxattr,
	.removexattr = pass_removexattr,
	.create = pass_create,
	.getlk = pass_getlk,
	.setlk = pass_setlk,
	.flock = pass_flock,
	.fallocate = pass_fallocate,
	.ioctl = pass_ioctl,
	.copy_file_range = pass_copy_file_range,
	.lseek = pass_lseek,
};

/* One O_PATH fd per cached inode: take the whole soft limit (as
 * passthrough_hp does; idempotent, so pass_new and init both call it). */
static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

void pass_host_ids(struct pass_fs *p)
{
	if (p->duid == 0) {
		/* Every host id is the tree's own: shown as is, and new entries
		 * still go to their caller, as on a ranged root. */
		p->ids = (struct seer_idmap){.uid = 0, .gid = 0, .count = UINT32_MAX};
		p->ranged = 1;
		return;
	}
	p->ids = (struct seer_idmap){.uid = p->duid, .gid = p->dgid, .count = 1};
	p->ranged = 0;
}

void pass_set_ids(struct pass_fs *p, const struct seer_idmap *m)
{
	p->ids = *m;
	p->ranged = 1;
}

struct pass_fs *pass_new(struct seer_fs *fs, struct sandbox *sb, int root_fd)
{
	struct stat st;
	if (root_fd < 0)
		return NULL;
	if (fstatat(root_fd, "", &st, AT_EMPTY_PATH) < 0 || !S_ISDIR(st.st_mode)) {
		close(root_fd);
		return NULL;
	}
	struct pass_fs *p = calloc(1, sizeof(*p));
	struct pnode *root = calloc(1, sizeof(*root));
	if (!p || !root) {
		free(p);
		free(root);
		close(root_fd);
		return NULL;
	}
	p->fs = fs;
	p->sb = sb;
	p->umask = read_umask();
	p->duid = geteuid();
	p->dgid = getegid();
	p->muid = fs && fs->ctx ? fs->ctx->uid : p->duid;
	p->mgid = fs && fs->ctx ? fs->ctx->gid : p->dgid;
	if (fs && fs->ctx)
		p->ids = fs->ctx->ids;
	else
		p->ids = (struct seer_idmap){.uid = p->duid, .gid = p->dgid, .count = 1};
	p->ranged = p->ids.count > 1;
	if (fs && fs->ctx && fs->ctx->mountpoint && sb) {
		size_t l = strlen(fs->ctx->mountpoint) + strlen(sb->name) + 8;
		p->root_path = malloc(l);
		if (p->root_path)
			snprintf(p->root_path, l, "%s/%s/root", fs->ctx->mountpoint, sb->name);
	}
	/* Read once: the sandbox is running, its provider is set and stays. */
	p->prov = sb ? sb->prov : NULL;
	/* The two locks every lookup takes are held for a few hundred
	 * nanoseconds: spinning briefly before sleeping saves a futex call
	 * and a context switch each time they meet. */
	pthread_mutexattr_t ma;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
	pthread_mutex_init(&p->lock, &ma);
	pthread_mutexattr_destroy(&ma);
	pthread_mutex_init(&p->wlock, NULL);
	pthread_cond_init(&p->drained, NULL);
	pthread_cond_init(&p->wcond, NULL);
	atomic_init(&p->refs, 2);       /* the caller's, the root node's */
	idle_gate_init(&p->gate, fs ? fs->pass_timeout : -1, ask_busy, p);
	neg_set_init(&p->negs, PASS_MAX_LONG_ENTRIES);
	struct rlimit rl;
	raise_nofile();
	size_t lim = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (size_t)rl.rlim_cur : 1024;
	p->fd_budget = lim / 2 > 64 ? lim / 2 : 64;
	root->p = p;
	root->dev = st.st_dev;
	root->ino = st.st_ino;
	root->type = S_IFDIR;
	root->id.type = S_IFDIR;
	root->serial = ++p->serials;
	atomic_init(&root->synthetic, -1);
	atomic_init(&root->fd, root_fd);
	p->root = root;
	if (tab_insert(p, root) < 0) {
		close(root_fd);
		free(root);
		pass_free(p);
		return NULL;
	}
	return p;
}

int pass_root_entry(struct pass_fs *p, struct fuse_entry_param *e)
{
	if (enter(p) < 0)
		return -ENOTCONN;
	memset(e, 0, sizeof(*e));
	int r = 0;
	struct pnode *root = p->root;
	int fd = node_fd(p, root);
	if (fd < 0)
		r = fd;
	else if (fstatat(fd, "", &e->attr, AT_EMPTY_PATH) < 0)
		r = -errno;
	else
		show_owner(p, &e->attr);
	if (fd >= 0)
		node_unpin(root);
	if (r == 0) {
		/* fs/ll.c may hold its own lock here: no busy() RPC, only
		 * what is already known (stale counts as busy). */
		struct idle_state c;
		idle_gate_peek(&p->gate, &c);
		pthread_mutex_lock(&p->lock);
		root->nlookup++;
		pthread_mutex_unlock(&p->lock);
		e->ino = ino_of(p, root);
		if (c.idle) {
			e->attr_timeout = c.t;
			atomic_store(&root->attr_long, 1);
		}
		/* The "root" name itself lives in fs/ll.c's directory; its
		 * entry timeout is fs/ll.c's to choose. */
	}
	leave(p);
	return r;
}

void pass_invalidate(struct pass_fs *p)
{
	if (!p || atomic_load(&p->dead))
		return;
	/* Busy from now until provider->busy() says otherwise, and nothing
	 * cached while idle survives: the job may change anything. */
	idle_gate_mark_busy(&p->gate);
	sweep(p);
}

static void kill_common(struct pass_fs *p)
{
	if (atomic_exchange(&p->dead, 1))
		return;
	pthread_mutex_lock(&p->lock);
	while (atomic_load(&p->active) > 0)
		pthread_cond_wait(&p->drained, &p->lock);
	/* Nothing runs now: close every fd that reaches the sandbox, so that
	 * its mounts can go away with it. */
	for (size_t i = 0; i < p->tabsize; i++) {
		for (struct pnode *n = p->tab[i]; n; n = n->hnext) {
			int fd = atomic_exchange(&n->fd, -1);
			if (fd >= 0)
				close(fd);
			ring_del(p, n);
			owners_close(n);
		}
	}
	for (struct pnode *n = p->stale; n; n = n->hnext)
		owners_close(n);
	p->nfds = 0;
	for (struct pfile *f = p->files; f; f = f->next) {
		if (f->fd >= 0)
			close(f->fd);
		f->fd = -1;
	}
	pthread_mutex_unlock(&p->lock);
	pthread_mutex_lock(&p->wlock);
	p->worker_stop = 1;
	pthread_cond_broadcast(&p->wcond);
	pthread_mutex_unlock(&p->wlock);
}

void pass_kill(struct pass_fs *p)
{
	if (!p)
		return;
	kill_common(p);
	dstreams_drop(p);
	pthread_mutex_lock(&p->lock);
	int freed = p->root ? node_maybe_free(p, p->root) : 0;
	int caller = !p->killed;
	p->killed = 1;
	pthread_mutex_unlock(&p->lock);
	pass_put(p, freed + caller);
}

void pass_destroy(struct pass_fs *p)
{
	if (!p)
		return;
	kill_common(p);
	/* The session is over: no forget will come. Wait for the worker to
	 * reply to its waits and go, then free every node. */
	for (;;) {
		pthread_mutex_lock(&p->wlock);
		int on = p->worker_on;
		pthread_mutex_unlock(&p->wlock);
		if (!on)
			break;
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	pthread_mutex_lock(&p->lock);
	int freed = 0;
	memset(p->ds, 0, sizeof(p->ds));   /* in p->files, freed below */
	for (struct pfile *f = p->files, *nx; f; f = nx) {
		nx = f->next;
		if (f->is_dir) {
			pthread_mutex_destroy(&f->dlock);
			free(f->buf);
		}
		free(f);
	}
	p->files = NULL;
	for (size_t i = 0; i < p->tabsize; i++) {
		for (struct pnode *n = p->tab[i], *nx; n; n = nx) {
			nx = n->hnext;
			node_free_mem(n);
			freed++;
		}
		p->tab[i] = NULL;
	}
	for (struct pnode *n = p->stale, *nx; n; n = nx) {
		nx = n->hnext;
		node_free_mem(n);
		freed++;
	}
	p->stale = NULL;
	p->nnodes = 0;
	p->root = NULL;
	int caller = !p->killed;
	p->killed = 1;
	pthread_mutex_unlock(&p->lock);
	pass_put(p, freed + caller);
}

fuse_ino_t pass_make_toplevel(struct pass_fs *p)
{
	pthread_mutex_lock(&p->lock);
	p->toplevel = 1;
	p->root->nlookup++;     /* the kernel never forgets its root */
	fuse_ino_t ino = (fuse_ino_t)(uintptr_t)p->root;
	pthread_mutex_unlock(&p->lock);
	return ino;
}

void pass_set_busy_fn(struct pass_fs *p, int (*fn)(void *arg), void *arg)
{
	p->busy_fn = fn;
	p->busy_arg = arg;
	idle_gate_recheck(&p->gate);
}

void pass_set_root_path(struct pass_fs *p, const char *path)
{
	char *c = path ? strdup(path) : NULL;
	pthread_mutex_lock(&p->lock);
	free(p->root_path);
	p->root_path = c;
	pthread_mutex_unlock(&p->lock);
}

void pass_ref(struct pass_fs *p)
{
	atomic_fetch_add(&p->refs, 1);
}

void pass_unref(struct pass_fs *p)
{
	pass_put(p, 1);
}

void pass_set_fd_budget(struct pass_fs *p, size_t n)
{
	pthread_mutex_lock(&p->lock);
	p->fd_budget = n < 8 ? 8 : n;
	pthread_mutex_unlock(&p->lock);
}

void pass_init_conn(struct fuse_conn_info *conn, struct seer_fs *fs)
{
	raise_nofile();
	unsigned want = FUSE_CAP_AUTO_INVAL_DATA | FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO |
			FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_ASYNC_READ | FUSE_CAP_ASYNC_DIO | FUSE_CAP_ATOMIC_O_TRUNC |
			FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS;
	unsigned splice = FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE;
	if (!fs || !fs->no_splice)
		want |= splice;
	else
		conn->want &= ~splice;
	if (fs && fs->writeback)
		want |= FUSE_CAP_WRITEBACK_CACHE;
	else
		conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	conn->want |= want & conn->capable;
	/* Receiving by splice (libfuse turns it on by default) costs every
	 * request a second system call, the device into a pipe and the
	 * header out of it, to spare WRITE data one copy. Measured on this
	 * project's machines (docs/bench-files.md): creates 13% and cold
	 * lookups 20% faster without it, 512 MiB written into the page cache
	 * 8% slower. Metadata is what editors, git and builds do. */
	if (!fs || fs->no_splice || !fs->splice_read)
		conn->want &= ~FUSE_CAP_SPLICE_READ;
	else if (conn->capable & FUSE_CAP_SPLICE_READ)
		conn->want |= FUSE_CAP_SPLICE_READ;
	conn->want &= ~(FUSE_CAP_HANDLE_KILLPRIV | FUSE_CAP_DONT_MASK | FUSE_CAP_CACHE_SYMLINKS | FUSE_CAP_POSIX_ACL |
			FUSE_CAP_EXPORT_SUPPORT);
	conn->max_background = 64;
	conn->congestion_threshold = 48;
	conn->time_gran = 1;
}
