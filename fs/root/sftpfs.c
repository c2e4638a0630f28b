/*
 * sftpfs.c - root/ of a remote sandbox, served over SFTP (core/lib/sftp.h).
 *
 * Model: one struct snode per remote path the kernel knows, keyed by that
 * path in a hash table, with a lookup count; its address | REMOTE_INO_FLAG
 * is the FUSE inode number (fs/ll.c forwards every such inode here).
 * SFTP names files by path only, so renames re-key the moved node and its
 * descendants, and unlink/rmdir/rename-over orphan the node that was there
 * (its open handles keep working; path operations on it fail ENOENT).
 *
 * Speed comes from round trips, not bandwidth:
 *  - READDIR returns attributes with the names, so readdirplus fills the
 *    kernel's dentries and attributes in one listing; a listing costs two
 *    round trips (OPENDIR, then two READDIRs at once; CLOSE not waited
 *    for), and the subdirectories of a listing in use are read ahead, two
 *    levels deep, many per batch, by the prefetcher thread;
 *  - a read-only open of a small file reads it and the next small files
 *    of its listing whole, in one batch (read_ahead_files), and keeps
 *    their content, so their opens need no server;
 *  - replies carry long entry/attr timeouts and open files keep their page
 *    cache (keep_cache) and directories their readdir cache; everything
 *    handed out is dropped by sftpfs_invalidate() (a job started in the
 *    sandbox), including negative entries, which we remember for that
 *    (the idle/busy gate and that set are fs/root/cache.c's);
 *  - writes are write-behind: the data is copied, the write is answered at
 *    once and a pool of worker threads sends it (each 1 MiB FUSE write as
 *    WRITEs of the server's largest size, 255 KiB for OpenSSH, all in
 *    flight, several writes at once).  Writes that
 *    overlap an earlier unfinished one (or any write of an O_APPEND file)
 *    wait for it, so the order of overlapping data is kept.  An error is
 *    sticky on the open file, logged with its file, and reported by the
 *    next write, flush, fsync; flush (every close) waits until the server
 *    acknowledged every byte, its held-back FSETSTAT sent behind them;
 *    getattr/lookup/read/truncate of a node first wait for its pending
 *    writes, so no stale size can shrink the kernel's i_size;
 *  - reads use sftp_pread_range (32 x 64 KiB in flight) per FUSE read; the
 *    kernel's async readahead keeps two such reads going; sequential ones
 *    a growing window, read with READs of the server's largest size;
 *  - with the sandbox's agent, a create whose outcome the cached listing
 *    decides is answered here and its small content kept; its close makes
 *    it with one agent request (see "deferred creates" below).
 *
 * Symlinks are never followed by us (lstat, lsetstat@openssh.com for
 * times); readlink rewrites absolute targets, relative ones that climb
 * above the sandbox's "/" and any with a ".." after a name into relative
 * ones that stay inside root/ (fs/root/link.c).
 *
 * Lifetime: the sftpfs holds one reference for its owner and one per node.
 * sftpfs_kill() fails queued writes, joins the workers and waits for the
 * requests in flight (bounded by the client's timeout); after that the
 * client is never touched again (the provider may close it) and every
 * operation fails with ENOTCONN; nodes are freed as the kernel forgets
 * them and the last one frees the sftpfs.
 *
 * Locking: one mutex (r->mu) for the table, the write queue and counts; it
 * is never held across a network call or a fuse_lowlevel_notify_*.
 *
 * Read-only mode (sftpfs_set_readonly, a snapshot's copy on a remote host):
 * every op that changes the tree fails EROFS before touching the network.
 *
 * Every helper returns 0 or a negative errno; every op replies once.
 */
#include "fs/fs.h"
#include "core/provider.h"
#include "core/sandbox.h"
#include "core/lib/sftp.h"
#include "fs/root/cache.h"
#include "fs/root/link.h"
#include "fs/root/sftpfs_agent.h"
#include "fs/root/sftpfs_defer.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

/* Write-behind workers: each sends one FUSE write (max_write, capped to a
 * splice pipe by fs/ll.c) and waits for its answers, so they bound what is
 * in flight; at 100 ms a round trip, 4 of them moved only about 0.5 MiB per
 * round trip (docs/remote-latency.md). */
#ifndef SFTPFS_WORKERS
#define SFTPFS_WORKERS 12
#endif
/* Write-behind budget: bytes accepted but not yet acknowledged. */
#define SFTPFS_WB_MAX (64u << 20)
/* Sequential reads: the window fetched ahead grows to this. */
#define SFTPFS_RA_MIN (1u << 20)
#define SFTPFS_RA_MAX (8u << 20)
/* Negative entries remembered for invalidation; past this, not cached. */
#define SFTPFS_NEG_MAX 16384
/* Content kept of files we wrote (struct snode: cdata): per file, in all. */
#define SFTPFS_CDATA_FILE_MAX (256u << 10)
#define SFTPFS_CDATA_TOTAL (64u << 20)
/* Small files read whole at their open, with the next small files of the
 * same listing (read_ahead_files): at most this size each, this many and
 * this many bytes per batch. */
#define SFTPFS_RD_FILE_MAX (64u << 10)
#define SFTPFS_RD_BATCH 32
#define SFTPFS_RD_BYTES (1u << 20)
/* A batch goes on with the files a walk reads next in other directories
 * whose listings we hold: entering this many levels below a listing, and
 * going up this many levels from the file's directory. What no node names
 * yet is kept by path (struct spare), at most this many files. */
#define SFTPFS_RD_DEPTH 2
#define SFTPFS_RD_UP 2
#define SFTPFS_SPARES 128
/* Changes sent without waiting for their answer (out_add), at most. */
#define SFTPFS_OUT_MAX 64

struct sftpfs;

/* Content of a small file read ahead before the kernel looked it up (a
 * walk's next directories, read_ahead_files): kept by path until an open
 * takes it, if nothing changed through us since (mgen), no listing was
 * dropped (lgen: a job started) and the size and mtime are still those the
 * listing told. */
struct spare {
	char *path;
	char *data;
	size_t len;
	uint32_t mtime;
	uint64_t lgen, mgen;
	int64_t ms;
};

struct snode {
	struct sftpfs *r;
	char *path;           /* full remote path; NULL once orphaned */
	struct snode *hnext;
	uint64_t nlookup;
	unsigned pending;     /* write-behind jobs not yet acknowledged */
	unsigned unsent;      /* ... of which not yet all sent (settle_file) */
	uint32_t mode;        /* S_IFMT of the last attributes seen */
	uint64_t wgen;        /* bumped by every write/truncate through us */
	uint64_t sino;        /* st_ino: a hash of the path it was created
	                         for, stable across forget and re-lookup
	                         (git compares st_ino with its index) */
	struct sftp_attrs a;         /* last attributes sent to the kernel ... */
	uint64_t a_wgen;      /* ... while wgen was this */
	int a_valid;
	int64_t a_ms;         /* when the server last told them */
	int opened;           /* opened through us since the last invalidation */
	int kcached;          /* handed to the kernel with a timeout since then */
	int linked;           /* has another name we made (link): see node_timeout */
	struct snode *lpeer;  /* the one other name, while there is one (orphan_path) */
	/* Mode and time changes of a file we created, not yet sent: they go
	 * with one FSETSTAT through cf's handle when a handle is flushed, before
	 * the next write, and before anything asks the server (settle_node).
	 * `tar x` sets times, owner and mode on every file it writes: three
	 * round trips each, now none until the close. */
	struct sfile *cf;     /* the open handle that created it, if still open */
	struct sftp_attrs pend;      /* pend.flags: which fields are waiting */
	int pend_busy;        /* apply_pend is sending some: one at a time, so
	                         a later chmod never overtakes an earlier one */
	/* Content of a small file we created and wrote from its start, kept
	 * while only we can change it (cdata_*): reading it back - `git add`
	 * after `tar x`, a compiler after an editor - needs no OPEN or READ.
	 * The kernel's own pages miss the partial last page of every file. */
	char *cdata;
	size_t clen;
	uint64_t cgen;        /* valid while equal to wgen */
	int cvalid;
};

struct sfile {
	struct snode *n;
	struct sftp_handle *h;
	/* Or a file the sandbox's agents keep open (x_open): a path SFTP
	 * cannot carry, or a file the login may not open and the caller may;
	 * read, written, truncated and synced through the agent, no
	 * write-behind (h is NULL then). */
	struct sftpx_fh *xh;
	int append;
	int written;
	unsigned pending;
	int werr;             /* sticky write-behind error */
	/* Readahead: the kernel reads 128 KiB at a time (its window cannot
	 * be raised above the bdi default), one round trip each; sequential
	 * readers get a growing window fetched in one pipelined burst. */
	pthread_mutex_t ra_mu;
	pthread_cond_t ra_cv;
	int ra_filling;
	char *ra_buf;
	uint64_t ra_off, ra_wgen, ra_next;
	size_t ra_len, ra_win;
	int ra_eof;           /* the window ended at end of file */
	int flags;            /* open(2)'s flags */
	/* A create answered without the server (dc_try_create): its content
	 * until the close sends it (dc_commit) or something needs the file on
	 * the server first (dc_materialize); dc_busy while one of them sends
	 * it; on r->dcs through dc_next. */
	struct sdefer *dc;
	int dc_busy;
	struct sfile *dc_next;
};

struct wjob {
	struct wjob *next;
	struct sfile *f;
	uint64_t off;
	size_t len;
	int running;
	int sent;             /* every WRITE of it is on the wire */
	char data[];
};

struct sdent {
	char *name;
	struct sftp_attrs a;
};

/* A directory listing, sorted by name; shared by the node's cache and
 * open directory handles (refs under r->mu). */
struct sdir {
	struct sdent *e;
	size_t n;
	int refs;
};

/* A directory's cached listing, keyed by path (not by node, so that it
 * outlives the kernel forgetting the directory: `drop_caches`). */
struct lent {
	struct lent *next;
	char *path;
	struct sdir *d;       /* or NULL: only counting misses */
	int64_t ms;           /* when d was read */
	int64_t changed_ms;   /* last change through us */
	unsigned misses;      /* lookups sent to the server */
	/* The directory changed through us since d was read: d's entries may
	 * be stale, but a name in neither d nor added[] still does not exist
	 * (only we change the tree while the cache is on), so lookups of new
	 * names - every file of a `tar x` - are answered without a round trip. */
	int dirty;
	char **added;         /* names made here through us since d was read */
	size_t nadded;
	int loading;          /* queued for, or being read by, the prefetcher */
	int kids;             /* its subdirectories were queued (d's) */
	int ahead;            /* prefetched this many levels below one in use */
};

/* Past this many names made in one directory, its listing is dropped. */
#define SFTPFS_ADDED_MAX 4096

#define SFTPFS_LISTS_MAX 8192
/* Listing prefetch (prefetcher): directories read per batch, and queued
 * at most. */
#define SFTPFS_PF_BATCH 64
#define SFTPFS_PF_QUEUE 1024
/* Levels read ahead of a listing in use: a walk entering a directory finds
 * its subdirectories' listings, and theirs, already read. */
#define SFTPFS_PF_DEPTH 2

/* Listings kept for READDIRs that continue one (see cont_list). */
#define SFTPFS_CONT 16
#define SFTPFS_LISTS_BUCKETS 4096

struct sftpfs {
	struct seer_fs *fs;
	struct sandbox *sb;
	struct sftp_client *cli;
	char *root;           /* remote path of the sandbox's "/" */
	size_t rootlen;       /* 0 when root is "/" */
	int readonly;         /* a snapshot's files: every change fails EROFS */

	pthread_mutex_t mu;
	pthread_cond_t work_cv;   /* a job was queued or became runnable */
	pthread_cond_t done_cv;   /* a job finished, or the sftpfs died */
	struct snode **tab;
	size_t tabsz, count;
	struct snode *rootn;
	struct sftp_attrs root_attrs;
	int refs;
	int dead, stop;
	int x_off;                /* the sandbox's agent cannot make file operations (sftpfs_agent.c) */
	int own_off;              /* the owners' agent cannot give new entries their creator's owner (own_new) */
	int as_off;               /* the owners' agent cannot make callers' operations as them (as_caller) */
	/* The last owner it could not give (EINVAL: an id the sandbox cannot
	 * map): not asked again for each new entry (under mu). */
	int own_bad;
	uint32_t own_bad_uid, own_bad_gid;
	unsigned active;          /* requests using cli right now */
	struct wjob *jobs, **jtail;
	size_t qbytes;
	size_t cbytes;        /* held in snode.cdata, all nodes, and spares */
	struct spare spares[SFTPFS_SPARES];
	unsigned spare_hand;
	uint64_t mgen;            /* bumped by every change through us: a name, a file's content */
	/* Changes sent, answers not taken yet (out_add), and the first
	 * failure among them not yet reported by a directory's fsync. */
	struct {
		char *path;
		struct sftp_later *l;
		int kind;             /* OUT_UNLINK, ... */
	} outq[SFTPFS_OUT_MAX];
	unsigned nout;
	int out_err;
	struct neg_set negs;      /* negative entries given a long timeout */
	struct lent *lists[SFTPFS_LISTS_BUCKETS];
	size_t nlists;
	fuse_ino_t root_alias;    /* tests/drivers/sftpmount.c: the kernel's name for rootn */
	struct idle_gate gate;    /* idle/busy (fs/root/cache.c) */
	/* Listings being read without OPENDIR (fs/ll.c refuses it): the
	 * READDIRs after the first of a listing continue the same copy, so
	 * offsets stay those of one listing. Keyed by path; under mu. */
	struct {
		char *path;
		struct sdir *d;
	} cont[SFTPFS_CONT];
	unsigned cont_hand;
	unsigned dir_gen;         /* see sftpfs_getattr */
	pthread_t workers[SFTPFS_WORKERS];
	int nworkers;
	/* Listing prefetch: the subdirectories of a listing in use are read
	 * ahead, many in one batch (sftp_list_dirs), by one thread; a walk
	 * (`find`, `grep -r`, `git status`) then finds them in the cache. */
	pthread_t pf;
	int pf_on;
	pthread_cond_t pf_cv;     /* a directory was queued, or stop */
	pthread_cond_t list_cv;   /* a prefetched listing arrived, or stop */
	char *pfq[SFTPFS_PF_QUEUE];
	size_t pfn;
	uint64_t lgen;            /* bumped when listings are dropped */
	struct sfile *dcs;        /* handles with a deferred create (struct sfile: dc) */
	unsigned ndc;
	/* The owner the server gives a new entry (the login's, as the sandbox
	 * sees it), learnt from the first one made: a deferred create tells it. */
	int ids_known;
	uint32_t new_uid, new_gid;
};

static int get_list(struct sftpfs *r, struct snode *n, struct sdir **out);
static void *prefetcher(void *arg);
static int send_pend(struct sftpfs *r, struct snode *n);
static void queue_kids(struct sftpfs *r, struct lent *l, const struct sdir *d, int level);
static void wait_loading(struct sftpfs *r, const char *path);
static int sdent_cmp(const void *a, const void *b);
static void sdir_put(struct sdir *d);
static void drop_parent_list(struct sftpfs *r, const char *path);
static void dc_settle_node(struct sftpfs *r, struct snode *n);
static void dc_flush_all(struct sftpfs *r, struct snode *except);
static void out_settle(struct sftpfs *r);
static struct sandbox *xsb(struct sftpfs *r);
static int login_may_write(const struct sftp_attrs *pa, uint32_t uid, uint32_t gid);
static void learn_ids(struct sftpfs *r, struct snode *n, const struct sftp_attrs *a);

static struct snode *node_of(fuse_ino_t ino)
{
	return (struct snode *)(uintptr_t)(ino & ~REMOTE_INO_FLAG);
}

static fuse_ino_t ino_of(struct snode *n)
{
	return (fuse_ino_t)(uintptr_t)n | REMOTE_INO_FLAG;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- hash table ------------------------------------------------------- */

static uint64_t hash_more(uint64_t h, const char *s)
{
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static size_t hash_path(const char *s)
{
	return (size_t)hash_more(1469598103934665603ULL, s);
}

/* hash_path(join(dir, name)) without building the string. */
static uint64_t hash_child(const char *dir, const char *name)
{
	uint64_t h = hash_more(1469598103934665603ULL, dir);
	size_t dl = strlen(dir);
	if (!(dl && dir[dl - 1] == '/'))
		h = hash_more(h, "/");
	return hash_more(h, name);
}

static int tab_insert(struct sftpfs *r, struct snode *n)
{
	if (r->count + 1 > r->tabsz) {
		size_t nsz = r->tabsz ? r->tabsz * 2 : 1024;
		struct snode **nt = calloc(nsz, sizeof(*nt));
		if (nt) {
			for (size_t i = 0; i < r->tabsz; i++) {
				struct snode *m = r->tab[i], *next;
				for (; m; m = next) {
					next = m->hnext;
					size_t b = hash_path(m->path) & (nsz - 1);
					m->hnext = nt[b];
					nt[b] = m;
				}
			}
			free(r->tab);
			r->tab = nt;
			r->tabsz = nsz;
		} else if (!r->tabsz) {
			return -ENOMEM;
		}
	}
	size_t b = hash_path(n->path) & (r->tabsz - 1);
	n->hnext = r->tab[b];
	r->tab[b] = n;
	r->count++;
	return 0;
}

static void tab_remove(struct sftpfs *r, struct snode *n)
{
	if (!n->path)
		return;
	struct snode **pp = &r->tab[hash_path(n->path) & (r->tabsz - 1)];
	for (; *pp; pp = &(*pp)->hnext) {
		if (*pp == n) {
			*pp = n->hnext;
			r->count--;
			return;
		}
	}
}

static struct snode *tab_find(struct sftpfs *r, const char *path)
{
	if (!r->tabsz)
		return NULL;
	struct snode *n = r->tab[hash_path(path) & (r->tabsz - 1)];
	for (; n; n = n->hnext)
		if (!strcmp(n->path, path))
			return n;
	return NULL;
}

/* Under r->mu: the node for path with one more lookup, created if new. */
static struct snode *node_get(struct sftpfs *r, const char *path, uint32_t mode)
{
	struct snode *n = tab_find(r, path);
	if (!n) {
		n = calloc(1, sizeof(*n));
		if (!n || !(n->path = strdup(path))) {
			free(n);
			return NULL;
		}
		n->r = r;
		n->sino = hash_path(path) | 2;
		if (tab_insert(r, n) < 0) {
			free(n->path);
			free(n);
			return NULL;
		}
		r->refs++;
	}
	n->nlookup++;
	n->mode = mode & S_IFMT;
	return n;
}

static void lc_drop_all(struct sftpfs *r);

static void sdir_put(struct sdir *d);

static void sftpfs_free(struct sftpfs *r)
{
	lc_drop_all(r);
	for (size_t i = 0; i < r->pfn; i++)
		free(r->pfq[i]);
	pthread_cond_destroy(&r->pf_cv);
	pthread_cond_destroy(&r->list_cv);
	for (int i = 0; i < SFTPFS_CONT; i++) {
		free(r->cont[i].path);
		sdir_put(r->cont[i].d);
	}
	for (int i = 0; i < SFTPFS_SPARES; i++) {
		free(r->spares[i].path);
		free(r->spares[i].data);
	}
	neg_set_destroy(&r->negs);
	free(r->tab);
	free(r->root);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->work_cv);
	pthread_cond_destroy(&r->done_cv);
	free(r);
}

static void sdir_free(struct sdir *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->e[i].name);
	free(d->e);
	free(d);
}

/* Under r->mu. */
static void sdir_put(struct sdir *d)
{
	if (d && --d->refs == 0)
		sdir_free(d);
}

/* Under r->mu: the cache entry for path, created if asked. */
static struct lent *lc_get(struct sftpfs *r, const char *path, int create)
{
	size_t b = hash_path(path) % SFTPFS_LISTS_BUCKETS;
	for (struct lent *l = r->lists[b]; l; l = l->next)
		if (!strcmp(l->path, path))
			return l;
	if (!create || r->nlists >= SFTPFS_LISTS_MAX)
		return NULL;
	struct lent *l = calloc(1, sizeof(*l));
	if (!l || !(l->path = strdup(path))) {
		free(l);
		return NULL;
	}
	l->next = r->lists[b];
	r->lists[b] = l;
	r->nlists++;
	return l;
}

/* Under r->mu: forget every listing (invalidation, directory renames, or
 * the cache is full). */
static void lent_clean(struct lent *l)
{
	for (size_t i = 0; i < l->nadded; i++)
		free(l->added[i]);
	free(l->added);
	l->added = NULL;
	l->nadded = 0;
	l->dirty = 0;
}

/* Under r->mu: l's listing goes (the entry stays, counting misses). */
static void lent_drop_list(struct lent *l)
{
	sdir_put(l->d);
	l->d = NULL;
	l->kids = 0;
	lent_clean(l);
}

static void lent_free(struct lent *l)
{
	lent_drop_list(l);
	free(l->path);
	free(l);
}

static void lc_drop_all(struct sftpfs *r)
{
	r->lgen++;
	for (size_t b = 0; b < SFTPFS_LISTS_BUCKETS; b++) {
		for (struct lent *l = r->lists[b], *next; l; l = next) {
			next = l->next;
			lent_free(l);
		}
		r->lists[b] = NULL;
	}
	r->nlists = 0;
}

/* Under r->mu: forget the listings of path and everything below it. */
static void lc_drop_prefix(struct sftpfs *r, const char *path)
{
	size_t pl = strlen(path);
	r->lgen++;
	for (size_t b = 0; b < SFTPFS_LISTS_BUCKETS; b++) {
		for (struct lent **pp = &r->lists[b]; *pp;) {
			struct lent *l = *pp;
			if (!strncmp(l->path, path, pl) && (l->path[pl] == 0 || l->path[pl] == '/')) {
				*pp = l->next;
				lent_free(l);
				r->nlists--;
			} else {
				pp = &l->next;
			}
		}
	}
}

/* Under r->mu: directory path changed through us, and name (if not NULL)
 * may exist in it now. A listing we hold stays, marked dirty, for negative
 * lookups (struct lent); without one, lookups in a directory being filled
 * go to the server one by one rather than re-listing it after every
 * create. */
static void lc_changed(struct sftpfs *r, const char *path, const char *name)
{
	r->mgen++;
	struct lent *l = lc_get(r, path, 1);
	if (!l)
		return;
	l->changed_ms = now_ms();
	if (l->d && (!name || l->nadded < SFTPFS_ADDED_MAX)) {
		char *dup = name ? strdup(name) : NULL;
		char **na = dup ? realloc(l->added, (l->nadded + 1) * sizeof(*na)) : NULL;
		if (!name || na) {
			if (na) {
				l->added = na;
				l->added[l->nadded++] = dup;
			}
			l->dirty = 1;
			return;
		}
		free(dup);
	}
	lent_drop_list(l);
	l->misses = 0;
}

static void mark_changed(struct snode *n, const char *name)
{
	if (n && n->path)
		lc_changed(n->r, n->path, name);
}

/* Under r->mu: path is a directory we just made, so it is empty. */
static void lc_seed_empty(struct sftpfs *r, const char *path)
{
	struct lent *l = lc_get(r, path, 1);
	struct sdir *d = l && !l->d ? calloc(1, sizeof(*d)) : NULL;
	if (!d)
		return;
	lent_clean(l);
	d->refs = 1;
	l->d = d;
	l->ms = now_ms();
}

/* The path of the directory holding path (malloc'd), or NULL: none (no
 * "/" in it) or no memory. */
static char *parent_path(const char *path)
{
	const char *slash = path ? strrchr(path, '/') : NULL;
	return slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : NULL;
}

/* Under r->mu: the node of the directory holding path, or NULL. */
static struct snode *parent_node(struct sftpfs *r, const char *path)
{
	char *dir = parent_path(path);
	struct snode *pn = dir ? tab_find(r, dir) : NULL;
	free(dir);
	return pn;
}

/* Under r->mu: the listing of the directory holding path changed. */
static void drop_parent_list(struct sftpfs *r, const char *path)
{
	char *dir = parent_path(path);
	if (dir)
		lc_changed(r, dir, NULL);
	free(dir);
}

/* Under r->mu; returns whether the sftpfs itself must now be freed. */
/* Under r->mu: n's kept content goes. */
static void cdata_drop(struct sftpfs *r, struct snode *n)
{
	r->cbytes -= n->clen;
	free(n->cdata);
	n->cdata = NULL;
	n->clen = 0;
	n->cvalid = 0;
}

/* Under r->mu: n's size or content changes through us. */
static void wgen_bump(struct sftpfs *r, struct snode *n)
{
	n->wgen++;
	r->mgen++;
}

/* Under r->mu, after a write through us bumped n->wgen from wgen0: the
 * content grows with an append to what we keep, else is no longer known. */
static void cdata_write(struct sftpfs *r, struct snode *n, uint64_t wgen0, uint64_t off, const char *buf, size_t size,
			int keep)
{
	if (!n->cvalid)
		return;
	char *nd = NULL;
	if (keep && n->cgen == wgen0 && off == n->clen && n->clen + size <= SFTPFS_CDATA_FILE_MAX &&
	    r->cbytes + size <= SFTPFS_CDATA_TOTAL)
		nd = realloc(n->cdata, n->clen + size ? n->clen + size : 1);
	if (!nd) {
		cdata_drop(r, n);
		return;
	}
	memcpy(nd + n->clen, buf, size);
	n->cdata = nd;
	n->clen += size;
	r->cbytes += size;
	n->cgen = n->wgen;
}

/* Under r->mu: whether n's content is what we keep. Not for a file with
 * another name we made (link): a write through that name is not seen here. */
static int cdata_ok(struct snode *n)
{
	return n->cvalid && n->cgen == n->wgen && !n->linked;
}

static int node_unref(struct snode *n, uint64_t k)
{
	struct sftpfs *r = n->r;
	n->nlookup = k >= n->nlookup ? 0 : n->nlookup - k;
	if (n->nlookup)
		return 0;
	tab_remove(r, n);
	if (r->rootn == n)
		r->rootn = NULL;
	if (n->lpeer)
		n->lpeer->lpeer = NULL; /* it stays linked: we no longer know */
	cdata_drop(r, n);
	free(n->path);
	free(n);
	return --r->refs == 0;
}

/* Under r->mu: the orphaned node no longer names a path. */
static void node_orphan(struct sftpfs *r, struct snode *n)
{
	if (n->path && S_ISDIR(n->mode))
		lc_changed(r, n->path, NULL);
	tab_remove(r, n);
	free(n->path);
	n->path = NULL;
}

/* ---- paths ------------------------------------------------------------ */

static char *join(const char *dir, const char *name)
{
	size_t dl = strlen(dir), nl = strlen(name);
	int slash = !(dl && dir[dl - 1] == '/');
	char *p = malloc(dl + slash + nl + 1);
	if (!p)
		return NULL;
	memcpy(p, dir, dl);
	if (slash)
		p[dl] = '/';
	memcpy(p + dl + slash, name, nl + 1);
	return p;
}

static int use_x(struct sftpfs *r);

/* A copy of n's path (name == NULL) or of its child's; NULL with *err. */
static char *node_path(struct snode *n, const char *name, int *err)
{
	struct sftpfs *r = n->r;
	if (name) {
		size_t l = strlen(name);
		if (l > 255) {
			*err = -ENAMETOOLONG;
			return NULL;
		}
		if (!strcmp(name, ".") || !strcmp(name, "..") || memchr(name, '/', l)) {
			*err = -EINVAL;
			return NULL;
		}
	}
	pthread_mutex_lock(&r->mu);
	char *p = NULL;
	if (!n->path)
		*err = -ENOENT;
	else if (!(p = name ? join(n->path, name) : strdup(n->path)))
		*err = -ENOMEM;
	pthread_mutex_unlock(&r->mu);
	/* The server takes whole paths, which its kernel refuses from
	 * PATH_MAX on (SFTP says FAILURE, EINVAL here): the sandbox's agents
	 * take them (long_path), else the errno the kernel gives for such a
	 * path. */
	if (p && strlen(p) >= PATH_MAX && (!use_x(r) || strlen(p) > SFTPX_PATH_MAX)) {
		free(p);
		p = NULL;
		*err = -ENAMETOOLONG;
	}
	return p;
}

/* ---- request bookkeeping --------------------------------------------- */

static int op_enter(struct sftpfs *r)
{
	pthread_mutex_lock(&r->mu);
	int dead = r->dead;
	if (!dead)
		r->active++;
	pthread_mutex_unlock(&r->mu);
	return dead ? -ENOTCONN : 0;
}

static void op_exit(struct sftpfs *r)
{
	pthread_mutex_lock(&r->mu);
	if (--r->active == 0 && r->dead)
		pthread_cond_broadcast(&r->done_cv);
	pthread_mutex_unlock(&r->mu);
}

/* Waits until n has no write-behind job left (or the sftpfs died). */
static void drain_node(struct snode *n)
{
	struct sftpfs *r = n->r;
	pthread_mutex_lock(&r->mu);
	while (n->pending && !r->dead)
		pthread_cond_wait(&r->done_cv, &r->mu);
	pthread_mutex_unlock(&r->mu);
}

/* Waits for f's jobs; returns its sticky error. */
static int drain_file(struct sftpfs *r, struct sfile *f)
{
	/* Not cut short by sftpfs_kill(): it fails the queued jobs itself, and
	 * a running one still uses f's handle until it returns. */
	pthread_mutex_lock(&r->mu);
	while (f->pending)
		pthread_cond_wait(&r->done_cv, &r->mu);
	int e = f->werr ? f->werr : (r->dead ? -ENOTCONN : 0);
	pthread_mutex_unlock(&r->mu);
	return e;
}

static int x_fallback(struct sftpfs *r, int rc);

/* Sends n's deferred mode/time changes (struct snode: cf, pend) after every
 * write queued before them; the error also sticks to the handle, so the
 * close reports it. */
static int apply_pend(struct sftpfs *r, struct snode *n)
{
	dc_settle_node(r, n);
	pthread_mutex_lock(&r->mu);
	int any = (n->pend.flags && n->cf) || n->pend_busy;
	pthread_mutex_unlock(&r->mu);
	if (!any)
		return 0;
	drain_node(n);
	return send_pend(r, n);
}

/* apply_pend's second half: sends n's deferred changes now, once every
 * write of n queued before is on the wire (the server handles them first). */
static int send_pend(struct sftpfs *r, struct snode *n)
{
	pthread_mutex_lock(&r->mu);
	/* Two senders in flight could reach the server in either order (a
	 * chmod 0 after the chmod 600 that followed it): one at a time, and
	 * only once every write queued before is on the wire. */
	while (n->pend_busy || (n->unsent && !r->dead))
		pthread_cond_wait(&r->done_cv, &r->mu);
	struct sfile *f = n->cf;
	struct sftp_attrs a = n->pend;
	n->pend.flags = 0;
	if (!f || !a.flags) {
		pthread_mutex_unlock(&r->mu);
		return 0;
	}
	f->pending++; /* keeps f (and its handle) until we are done */
	n->pend_busy = 1;
	pthread_mutex_unlock(&r->mu);
	int rc = 1;
	/* Times with their nanoseconds (and the mode in the same trip): the
	 * sandbox's agent; SFTP has whole seconds only. */
	char *xp = (a.flags & SFTP_ATTR_ACMODTIME) && (a.x & SFTPX_TIMES) && use_x(r) ? node_path(n, NULL, &rc) : NULL;
	if (xp) {
		/* The agent is another channel: it could overtake writes still
		 * in flight on the SFTP one, and a write landing after the
		 * times moves mtime again. Their replies first. */
		drain_node(n);
		struct timespec ts[2] = {{.tv_sec = (time_t)a.xatime, .tv_nsec = a.atime_ns},
					 {.tv_sec = (time_t)a.xmtime, .tv_nsec = a.mtime_ns}};
		rc = sftpx_setattr(xsb(r), xp, !!(a.flags & SFTP_ATTR_PERMISSIONS), a.perm, ts);
		if (x_fallback(r, rc))
			rc = 1;
		free(xp);
	}
	if (rc == 1 || !xp)
		rc = sftp_fsetstat(r->cli, f->h, &a);
	pthread_mutex_lock(&r->mu);
	if (rc < 0 && !f->werr)
		f->werr = rc;
	f->pending--;
	n->pend_busy = 0;
	pthread_cond_broadcast(&r->done_cv);
	pthread_mutex_unlock(&r->mu);
	return rc;
}

/* Before asking the server about n: its writes and deferred changes are
 * there. */
static int settle_node(struct sftpfs *r, struct snode *n)
{
	dc_settle_node(r, n);
	drain_node(n);
	return apply_pend(r, n);
}

/* flush and fsync: n's deferred changes sent right behind its writes
 * (not after their replies: one round trip for both, `tar x`'s close),
 * then f's writes acknowledged; the first error of either. */
static int settle_file(struct sftpfs *r, struct snode *n, struct sfile *f)
{
	int prc = send_pend(r, n);
	int rc = drain_file(r, f);
	return rc ? rc : prc;
}

/* The provider's answer; without one (tests/drivers/sftpmount.c) the tree is
 * only changed through us and by those who say so (sftpfs_invalidate). */
static int ask_busy(void *arg)
{
	struct sftpfs *r = arg;
	if (!r->sb || !r->sb->prov || !r->sb->prov->busy)
		return 0;
	return r->sb->prov->busy(r->sb);
}

/* While a job runs in the sandbox files change under us: no caching. A
 * job seerfs starts calls sftpfs_invalidate(); one we only see starting
 * here is not expired at once (pass.c does that from its worker thread;
 * here no thread may send notifications), it is bounded by the timeout. */
static double cur_timeout(struct sftpfs *r)
{
	struct idle_state c;
	idle_gate_get(&r->gate, &c);
	return c.idle ? c.t : 0.0;
}

/* ---- attributes ------------------------------------------------------- */

/* What the sandbox's agent told beyond SFTP (struct sftp_attrs: x): the
 * link count (SFTPX_NLINK), and (SFTPX_TIMES) 64-bit times with nanoseconds
 * and ctime, while the whole seconds still agree with atime and mtime (a
 * write through us moves mtime: then whole seconds, ctime with it). */
static void to_stat_x(const struct sftp_attrs *a, struct stat *st)
{
	if (a->x & SFTPX_NLINK)
		st->st_nlink = a->nlink;
	if (!(a->x & SFTPX_TIMES) || !(a->flags & SFTP_ATTR_ACMODTIME))
		return;
	if ((uint32_t)a->xatime == a->atime) {
		st->st_atim.tv_sec = (time_t)a->xatime;
		st->st_atim.tv_nsec = a->atime_ns;
	}
	if ((uint32_t)a->xmtime == a->mtime) {
		st->st_mtim.tv_sec = (time_t)a->xmtime;
		st->st_mtim.tv_nsec = a->mtime_ns;
		st->st_ctim.tv_sec = (time_t)a->xctime;
		st->st_ctim.tv_nsec = a->ctime_ns;
	}
	if (a->size == a->xsize)
		st->st_blocks = (blkcnt_t)a->blocks;
	if (S_ISCHR(a->perm) || S_ISBLK(a->perm))
		st->st_rdev = makedev(a->rdev_major, a->rdev_minor);
}

static void to_stat(const struct sftp_attrs *a, fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = (a->flags & SFTP_ATTR_PERMISSIONS) ? a->perm : (S_IFREG | 0644);
	st->st_nlink = S_ISDIR(st->st_mode) ? 2 : 1;
	if (a->flags & SFTP_ATTR_UIDGID) {
		st->st_uid = a->uid;
		st->st_gid = a->gid;
	}
	if (a->flags & SFTP_ATTR_SIZE)
		st->st_size = (off_t)a->size;
	st->st_blksize = 65536;
	st->st_blocks = (st->st_size + 511) / 512;
	if (a->flags & SFTP_ATTR_ACMODTIME) {
		st->st_atim.tv_sec = a->atime;
		st->st_mtim.tv_sec = a->mtime;
		st->st_ctim.tv_sec = a->mtime;
	}
	to_stat_x(a, st);
}

/* The cache timeout for n's entry, attributes and pages. A file we gave a
 * second name (sftpfs_link) is two nodes, so a write through one name would
 * leave the other's cached size and pages stale (a read of the old length):
 * such nodes are never cached. Links made inside the sandbox are unknown
 * here; a job's start drops every cache anyway (sftpfs_invalidate). */
static double node_timeout(struct sftpfs *r, struct snode *n)
{
	double t = cur_timeout(r);
	pthread_mutex_lock(&r->mu);
	if (n->linked)
		t = 0;
	else if (t > 0)
		n->kcached = 1; /* the kernel may now keep it: see sftpfs_invalidate */
	pthread_mutex_unlock(&r->mu);
	return t;
}

/* Fills e for path with attributes a, counting a lookup on its node. */
static int make_entry(struct sftpfs *r, const char *path, const struct sftp_attrs *a, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	pthread_mutex_lock(&r->mu);
	struct snode *n = node_get(r, path, a->perm);
	if (n) {
		n->a = *a;
		n->a_wgen = n->wgen;
		n->a_valid = !idle_gate_busy(&r->gate);
		n->a_ms = now_ms();
	}
	pthread_mutex_unlock(&r->mu);
	if (!n)
		return -ENOMEM;
	e->ino = ino_of(n);
	to_stat(a, n->sino, &e->attr);
	e->attr_timeout = e->entry_timeout = node_timeout(r, n);
	return 0;
}

static void forget_entry(struct sftpfs *r, fuse_ino_t ino)
{
	pthread_mutex_lock(&r->mu);
	int last = node_unref(node_of(ino), 1);
	pthread_mutex_unlock(&r->mu);
	if (last)
		sftpfs_free(r);
}

static void remember_neg(struct sftpfs *r, fuse_ino_t parent, const char *name, struct fuse_entry_param *e)
{
	double t = cur_timeout(r);
	if (t > 0 && neg_set_add(&r->negs, parent, 0, name))
		e->entry_timeout = t;
}

/* ---- write-behind workers -------------------------------------------- */

static int overlaps(const struct wjob *a, const struct wjob *b)
{
	return a->f->append || b->f->append || (a->off < b->off + b->len && b->off < a->off + a->len);
}

/* Under r->mu: the first queued job with no earlier unfinished job of the
 * same node overlapping it. */
static struct wjob *pick_job(struct sftpfs *r)
{
	for (struct wjob *j = r->jobs; j; j = j->next) {
		if (j->running)
			continue;
		int ok = 1;
		for (struct wjob *k = r->jobs; k != j; k = k->next)
			if (k->f->n == j->f->n && overlaps(k, j)) {
				ok = 0;
				break;
			}
		if (ok)
			return j;
	}
	return NULL;
}

/* Under r->mu: j is finished with status rc. */
static void job_done(struct sftpfs *r, struct wjob *j, int rc)
{
	struct wjob **pp = &r->jobs;
	while (*pp != j)
		pp = &(*pp)->next;
	*pp = j->next;
	if (r->jtail == &j->next)
		r->jtail = pp;
	r->qbytes -= j->len;
	j->f->pending--;
	j->f->n->pending--;
	if (!j->sent)
		j->f->n->unsent--;
	if (rc < 0 && !j->f->werr) {
		j->f->werr = rc;
		/* The write was answered long ago: say which file lost it (the
		 * close or fsync of this handle reports the error). */
		fprintf(stderr, "seerfs: sandbox %s: a deferred write of %s (%zu bytes at %llu) failed: %s; "
				"the close or fsync of that file reports it, rewrite the file\n",
			r->sb ? r->sb->name : "?", j->f->n->path ? j->f->n->path : "(removed file)", j->len,
			(unsigned long long)j->off, strerror(-rc));
	}
	free(j);
	pthread_cond_broadcast(&r->done_cv);
	pthread_cond_broadcast(&r->work_cv);
}

/*
 * OpenSSH's sftp-server reports EROFS and ENOSPC, like most errnos, as
 * FAILURE, which the client turns into a per-operation guess (EIO, EEXIST,
 * EPERM, ENOTEMPTY). statvfs tells them apart: its read-only flag (a
 * sandbox's /usr and /etc are read-only binds), its free space and inodes
 * (a full disk: checked only for what needs space, `need` bytes; 1 for a
 * new name). It is asked of the open file h (writes), else of the entry's
 * directory for entry operations (entry), else of the path itself. An EEXIST whose name does exist stays EEXIST, as the
 * kernel's checks would have it; one whose name does not is EIO. One round
 * trip more, on failures only.
 */
#define STATVFS_ST_RDONLY 0x1u /* SSH2_FXE_STATVFS_ST_RDONLY */

static int refine_failure(struct sftpfs *r, const char *p, struct sftp_handle *h, int entry, size_t need, int rc)
{
	if (rc != -EIO && rc != -EEXIST && rc != -EPERM && rc != -ENOTEMPTY)
		return rc;
	if (p && strlen(p) >= PATH_MAX)
		return rc; /* the agents' answer (long_path): the kernel's errno already */
	struct sftp_attrs a;
	if (rc == -EEXIST && p && sftp_lstat(r->cli, p, &a) == 0)
		return rc;
	struct sftp_vfsinfo v;
	int q;
	if (h) {
		q = sftp_fstatvfs(r->cli, h, &v);
	} else {
		char dir[PATH_MAX];
		snprintf(dir, sizeof(dir), "%s", p);
		char *slash = strrchr(dir, '/');
		if (entry && slash)
			slash[slash == dir] = '\0';   /* "/usr/x" -> "/usr", "/x" -> "/" */
		q = sftp_statvfs(r->cli, dir, &v);
	}
	if (q != 0)
		return rc;
	if (v.flag & STATVFS_ST_RDONLY)
		return -EROFS;
	uint64_t bs = v.frsize ? v.frsize : v.bsize;
	if (need && (v.bavail * bs < need || (entry && v.favail == 0)))
		return -ENOSPC;
	return rc == -EEXIST ? -EIO : rc;
}

struct sent_note {
	struct sftpfs *r;
	struct wjob *j;
};

/* Every WRITE of a job is on the wire (sftp_pwrite_range_notify). */
static void job_sent(void *arg)
{
	struct sent_note *s = arg;
	pthread_mutex_lock(&s->r->mu);
	s->j->sent = 1;
	s->j->f->n->unsent--;
	pthread_cond_broadcast(&s->r->done_cv);
	pthread_mutex_unlock(&s->r->mu);
}

static void *worker(void *arg)
{
	struct sftpfs *r = arg;
	pthread_mutex_lock(&r->mu);
	while (!r->stop) {
		struct wjob *j = pick_job(r);
		if (!j) {
			pthread_cond_wait(&r->work_cv, &r->mu);
			continue;
		}
		j->running = 1;
		pthread_mutex_unlock(&r->mu);
		struct sent_note note = {r, j};
		int rc = sftp_pwrite_range_notify(r->cli, j->f->h, j->off, j->data, j->len, 0, sftp_max_write(r->cli),
						  job_sent, &note);
		if (rc == -EIO)
			rc = refine_failure(r, NULL, j->f->h, 0, j->len, rc);
		pthread_mutex_lock(&r->mu);
		job_done(r, j, rc);
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

/* ---- lifecycle -------------------------------------------------------- */

struct sftpfs *sftpfs_new(struct seer_fs *fs, struct sandbox *sb, struct sftp_client *cli, const char *root)
{
	if (!cli || !root || root[0] != '/')
		return NULL;
	struct sftpfs *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->fs = fs;
	r->sb = sb;
	r->cli = cli;
	r->root = strdup(root);
	if (!r->root) {
		free(r);
		return NULL;
	}
	size_t l = strlen(r->root);
	while (l > 1 && r->root[l - 1] == '/')
		r->root[--l] = 0;
	r->rootlen = l == 1 ? 0 : l;
	idle_gate_init(&r->gate, fs ? fs->pass_timeout : -1, ask_busy, r);
	r->refs = 1;
	r->jtail = &r->jobs;
	pthread_mutex_init(&r->mu, NULL);
	neg_set_init(&r->negs, SFTPFS_NEG_MAX);
	pthread_cond_init(&r->work_cv, NULL);
	pthread_cond_init(&r->done_cv, NULL);
	pthread_cond_init(&r->pf_cv, NULL);
	pthread_cond_init(&r->list_cv, NULL);
	/* The root is stat'ed (following a link to it) here, outside fs->lock,
	 * so sftpfs_root_entry never waits on the network. */
	if (sftp_stat(cli, r->root, &r->root_attrs) < 0 || !S_ISDIR(r->root_attrs.perm)) {
		sftpfs_free(r);
		return NULL;
	}
	for (int i = 0; i < SFTPFS_WORKERS; i++)
		if (pthread_create(&r->workers[r->nworkers], NULL, worker, r) == 0)
			r->nworkers++;
	if (!r->nworkers) {
		sftpfs_free(r);
		return NULL;
	}
	r->pf_on = pthread_create(&r->pf, NULL, prefetcher, r) == 0;
	return r;
}

void sftpfs_set_readonly(struct sftpfs *r)
{
	r->readonly = 1;
}

int sftpfs_uses(struct sftpfs *r, const struct sftp_client *cli)
{
	pthread_mutex_lock(&r->mu);
	int same = !r->dead && r->cli == cli;
	pthread_mutex_unlock(&r->mu);
	return same;
}

void sftpfs_kill(struct sftpfs *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->dead = 1;
	r->stop = 1;
	/* Queued writes will never be sent: their files learn it at flush. */
	for (struct wjob *j = r->jobs, *next; j; j = next) {
		next = j->next;
		if (!j->running)
			job_done(r, j, -ENOTCONN);
	}
	pthread_cond_broadcast(&r->work_cv);
	pthread_cond_broadcast(&r->done_cv);
	pthread_cond_broadcast(&r->pf_cv);
	pthread_cond_broadcast(&r->list_cv);
	pthread_mutex_unlock(&r->mu);
	for (int i = 0; i < r->nworkers; i++)
		pthread_join(r->workers[i], NULL);
	if (r->pf_on)
		pthread_join(r->pf, NULL);
	pthread_mutex_lock(&r->mu);
	while (r->active)
		pthread_cond_wait(&r->done_cv, &r->mu);
	pthread_mutex_unlock(&r->mu);
	out_settle(r);
	pthread_mutex_lock(&r->mu);
	r->cli = NULL;
	int last = --r->refs == 0;
	pthread_mutex_unlock(&r->mu);
	if (last)
		sftpfs_free(r);
}

int sftpfs_root_entry(struct sftpfs *r, struct fuse_entry_param *e)
{
	pthread_mutex_lock(&r->mu);
	if (r->dead) {
		pthread_mutex_unlock(&r->mu);
		return -ENOTCONN;
	}
	struct snode *n = r->rootn ? r->rootn : node_get(r, r->root, S_IFDIR);
	if (!n) {
		pthread_mutex_unlock(&r->mu);
		return -ENOMEM;
	}
	if (r->rootn)
		n->nlookup++;
	r->rootn = n;
	memset(e, 0, sizeof(*e));
	e->ino = ino_of(n);
	to_stat(&r->root_attrs, n->sino, &e->attr);
	pthread_mutex_unlock(&r->mu);
	e->attr_timeout = e->entry_timeout = cur_timeout(r);
	return 0;
}

struct inval {
	fuse_ino_t ino, parent;
	char *name;
	int pages;            /* its cached pages go too */
	int dir;
};

void sftpfs_invalidate(struct sftpfs *r)
{
	if (!r || !r->fs || !r->fs->se)
		return;
	/* A job starts: what was created through root/ is there for it. */
	if (op_enter(r) == 0) {
		dc_flush_all(r, NULL);
		out_settle(r);
		op_exit(r);
	}
	/* Collect under the lock, notify without it: the kernel may have to
	 * wait for a request that itself waits for r->mu. */
	pthread_mutex_lock(&r->mu);
	size_t cap = r->count + 1, k = 0;
	struct inval *v = calloc(cap, sizeof(*v));
	for (size_t i = 0; v && i < r->tabsz; i++) {
		for (struct snode *n = r->tab[i]; n; n = n->hnext) {
			n->a_valid = 0;
			cdata_drop(r, n);
			/* Only what the kernel may hold: each notification costs a
			 * system call, and a sandbox whose tree was walked once
			 * keeps tens of thousands of nodes (every exec paid for
			 * all of them). Given with timeout 0 means nothing kept. */
			if (!n->kcached && !n->opened && n != r->rootn)
				continue;
			n->kcached = 0;
			v[k].ino = ino_of(n);
			/* Pages: a directory's hold its cached listing; a file
			 * has them only if it was opened since the last time. */
			v[k].pages = S_ISDIR(n->mode) || n->opened;
			v[k].dir = S_ISDIR(n->mode);
			n->opened = 0;
			if (n != r->rootn) {
				struct snode *p = parent_node(r, n->path);
				if (p && (v[k].name = strdup(strrchr(n->path, '/') + 1)))
					v[k].parent = ino_of(p);
			}
			k++;
		}
	}
	lc_drop_all(r);
	fuse_ino_t rootino = r->rootn ? ino_of(r->rootn) : 0, alias = r->root_alias;
	pthread_mutex_unlock(&r->mu);
	struct neg_entry *negs = neg_set_take(&r->negs);
	struct fuse_session *se = r->fs->se;
	for (size_t i = 0; i < k; i++) {
		if (alias && v[i].parent == rootino)
			v[i].parent = alias;
		if (alias && v[i].ino == rootino)
			v[i].ino = alias;
		if (v[i].name) {
			/* A file's name is only expired: the dentry stays but
			 * is looked up again at next use, cheaper than dropping
			 * it with thousands of known names. A directory's is
			 * dropped: an expired directory dentry kept the kernel's
			 * cached listing of it (test_stale_entries). */
			if (v[i].dir)
				fuse_lowlevel_notify_inval_entry(se, v[i].parent, v[i].name, strlen(v[i].name));
			else
				fuse_lowlevel_notify_expire_entry(se, v[i].parent, v[i].name, strlen(v[i].name),
								  FUSE_LL_EXPIRE_ONLY);
			free(v[i].name);
		}
		if (v[i].ino)
			fuse_lowlevel_notify_inval_inode(se, v[i].ino, v[i].pages ? 0 : -1, 0);
	}
	free(v);
	neg_list_expire(se, negs, alias ? rootino : 0, alias);
}

/* For the standalone harness, which mounts the root node as FUSE_ROOT_ID:
 * notifications about the root must name it so.  Not part of fs.h. */
void sftpfs_set_root_alias(struct sftpfs *r, fuse_ino_t ino);
void sftpfs_set_root_alias(struct sftpfs *r, fuse_ino_t ino)
{
	pthread_mutex_lock(&r->mu);
	r->root_alias = ino;
	pthread_mutex_unlock(&r->mu);
}

void sftpfs_forget_one(fuse_ino_t ino, uint64_t nlookup)
{
	struct snode *n = node_of(ino);
	struct sftpfs *r = n->r;
	pthread_mutex_lock(&r->mu);
	int last = node_unref(n, nlookup);
	pthread_mutex_unlock(&r->mu);
	if (last)
		sftpfs_free(r);
}

/* ---- operations ------------------------------------------------------- */

static void note_attrs(struct sftpfs *r, struct snode *n, const struct sftp_attrs *a)
{
	pthread_mutex_lock(&r->mu);
	n->a = *a;
	n->a_wgen = n->wgen;
	/* While a job runs it may change the file right after: not kept. */
	n->a_valid = !idle_gate_busy(&r->gate);
	n->a_ms = now_ms();
	pthread_mutex_unlock(&r->mu);
}

/* n's last attributes, if nothing through us changed its data since. */
static int known_attrs(struct sftpfs *r, struct snode *n, struct sftp_attrs *a)
{
	pthread_mutex_lock(&r->mu);
	int ok = n->a_valid && !idle_gate_busy(&r->gate) && n->a_wgen == n->wgen && (n->a.flags & SFTP_ATTR_PERMISSIONS) &&
		 (n->a.flags & SFTP_ATTR_UIDGID) && (n->a.flags & SFTP_ATTR_ACMODTIME);
	if (ok)
		*a = n->a;
	pthread_mutex_unlock(&r->mu);
	return ok;
}

/* ---- changes not waited for ------------------------------------------ */

/* What a change sent without waiting was (r->outq). */
#define OUT_UNLINK 0
#define OUT_MKDIR 1
#define OUT_CHMOD 2   /* the exact mode of a directory made so */

/* A change sent without waiting that the host refused: logged with the
 * file's name, what we told of it dropped, and the next fsync of a
 * directory reports it. An unlink's ENOENT is no failure: the name is gone,
 * as asked; a mode after a failed mkdir says nothing more. */
static void out_fail(struct sftpfs *r, const char *p, int kind, int rc)
{
	if (rc == 0 || (kind != OUT_MKDIR && rc == -ENOENT))
		return;
	static const char *const what[] = {"unlink", "mkdir", "mode change"};
	static const char *const now[] = {"the name is there again", "the directory is not there",
					  "its mode is the host's"};
	fprintf(stderr, "seerfs: sandbox %s: the %s of %s failed on the host: %s; %s, and the next fsync of a "
			"directory reports it\n",
		r->sb ? r->sb->name : "?", what[kind], p, strerror(-rc), now[kind]);
	pthread_mutex_lock(&r->mu);
	if (!r->out_err)
		r->out_err = rc;
	drop_parent_list(r, p);
	struct snode *m = tab_find(r, p);
	if (m)
		m->a_valid = 0;
	if (kind == OUT_MKDIR)
		lc_drop_prefix(r, p);
	pthread_mutex_unlock(&r->mu);
}

/* Takes the answers of changes sent without waiting: every one (all), or
 * those already here, in the order sent. Not under r->mu. */
static void out_take(struct sftpfs *r, int all)
{
	for (;;) {
		pthread_mutex_lock(&r->mu);
		if (!r->nout || (!all && !sftp_later_done(r->cli, r->outq[0].l))) {
			pthread_mutex_unlock(&r->mu);
			return;
		}
		char *p = r->outq[0].path;
		struct sftp_later *l = r->outq[0].l;
		int kind = r->outq[0].kind;
		memmove(&r->outq[0], &r->outq[1], (r->nout - 1) * sizeof(r->outq[0]));
		r->nout--;
		pthread_mutex_unlock(&r->mu);
		out_fail(r, p, kind, sftp_later_wait(r->cli, l));
		free(p);
	}
}

/* Records a change just sent (l) on path; where the list is full, its
 * answer is waited for here. */
static void out_add(struct sftpfs *r, const char *p, int kind, struct sftp_later *l)
{
	char *dup = strdup(p);
	pthread_mutex_lock(&r->mu);
	if (dup && r->nout < SFTPFS_OUT_MAX) {
		r->outq[r->nout].path = dup;
		r->outq[r->nout].kind = kind;
		r->outq[r->nout++].l = l;
		l = NULL;
	}
	pthread_mutex_unlock(&r->mu);
	if (l) {
		out_fail(r, p, kind, sftp_later_wait(r->cli, l));
		free(dup);
	}
}

/* Every change sent is answered: before a request on the agent's channel
 * (it could overtake them there), a job's start and the unmount. */
static void out_settle(struct sftpfs *r)
{
	out_take(r, 1);
}

/* r->sb for a request to the sandbox's agent (fs/root/sftpfs_agent.c),
 * once the unlinks sent on root/'s SFTP channel are answered. */
static struct sandbox *xsb(struct sftpfs *r)
{
	out_settle(r);
	return r->sb;
}

/* Whether root/ may ask the sandbox's agent (fs/root/sftpfs_agent.c):
 * root/'s "/" is the sandbox's own (its confined SFTP server: the agent
 * sees the same tree) and the provider has an agent there. */
static int use_x(struct sftpfs *r)
{
	return !r->readonly && r->rootlen == 0 && !__atomic_load_n(&r->x_off, __ATOMIC_RELAXED) && sftpx_can(r->sb);
}

/* Whether an agent's answer means "ask SFTP instead": no agent there (for
 * good: not asked again), or it did not answer this time. */
static int x_fallback(struct sftpfs *r, int rc)
{
	if (rc == -ENOTSUP || rc == -ENOSYS)
		__atomic_store_n(&r->x_off, 1, __ATOMIC_RELAXED);
	return rc == -ENOTSUP || rc == -ENOSYS || rc == -ENOTCONN || rc == -ETIMEDOUT;
}

/* lstat with the link count, ctime and nanoseconds where the agent can
 * tell them, else SFTP's. */
static int x_lstat(struct sftpfs *r, const char *p, struct sftp_attrs *a)
{
	if (use_x(r)) {
		int rc = sftpx_lstat(xsb(r), p, a);
		if (!x_fallback(r, rc))
			return rc;
	}
	return strlen(p) >= PATH_MAX ? -ENAMETOOLONG : sftp_lstat(r->cli, p, a);
}

/* Whether new entries may get their creator's owner (own_new): only a
 * root seerfs gives files away (as chown through root/; under another user
 * the mounting user's entries stay the login's), through the agents. */
static int own_may(struct sftpfs *r)
{
	return geteuid() == 0 && use_x(r) && !__atomic_load_n(&r->own_off, __ATOMIC_RELAXED);
}

/* A new entry gets its creator's owner, as the kernel gives it (the
 * SFTP server makes it as the login): the caller's uid, and its gid
 * unless parent (its directory) is setgid, where the server's kernel
 * already gave the directory's gid. Through the owners' agent's chown
 * (lchown by a no-follow walk: a name swapped for a symlink meanwhile
 * changes the link, never its target), only where the caller is not who
 * the entry already belongs to. Where that agent cannot run (docs/ssh.md)
 * the entry stays the login's, as before; once logged per sandbox. Waited
 * for (one round trip more, for such callers only): sent behind, a later
 * SFTP or agent call of another channel could overtake it.
 * Updates a (and the set-id bits a chown of a file clears). */
static void own_new(struct sftpfs *r, fuse_req_t req, struct snode *parent, const char *p, struct sftp_attrs *a)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	if (!ctx || !own_may(r) || !(a->flags & SFTP_ATTR_UIDGID))
		return;
	pthread_mutex_lock(&r->mu);
	int have_pm = parent && (parent->a.flags & SFTP_ATTR_PERMISSIONS);
	uint32_t pperm = have_pm ? parent->a.perm : 0;
	pthread_mutex_unlock(&r->mu);
	if (!have_pm && parent) {
		int e = 0;
		char *pp = node_path(parent, NULL, &e);
		struct sftp_attrs pa;
		if (pp && x_lstat(r, pp, &pa) == 0 && (pa.flags & SFTP_ATTR_PERMISSIONS))
			pperm = pa.perm;
		free(pp);
	}
	uint32_t uid = ctx->uid, gid = (pperm & S_ISGID) ? (uint32_t)-1 : ctx->gid;
	if (uid == a->uid)
		uid = (uint32_t)-1;
	if (gid == a->gid)
		gid = (uint32_t)-1;
	if (uid == (uint32_t)-1 && gid == (uint32_t)-1)
		return;
	if ((uid != (uint32_t)-1 && uid > 65535) || (gid != (uint32_t)-1 && gid > 65535))
		return; /* beyond the sandbox's ids (EINVAL there): stays the login's */
	pthread_mutex_lock(&r->mu);
	int bad = r->own_bad && r->own_bad_uid == uid && r->own_bad_gid == gid;
	pthread_mutex_unlock(&r->mu);
	if (bad)
		return; /* refused before (logged then): stays the login's */
	int rc = sftpx_chown(xsb(r), p, uid, gid, 1);
	if (rc == -EINVAL) {
		pthread_mutex_lock(&r->mu);
		r->own_bad = 1;
		r->own_bad_uid = uid;
		r->own_bad_gid = gid;
		pthread_mutex_unlock(&r->mu);
	}
	if (rc < 0) {
		if (x_fallback(r, rc) || rc == -EPERM) {
			if (!__atomic_exchange_n(&r->own_off, 1, __ATOMIC_RELAXED))
				fprintf(stderr,
					"seerfs: sandbox %s: %s made by uid %u stays owned by %u:%u: the owners' agent "
					"cannot chown (%s); new entries of other users keep the SSH login's owner "
					"(docs/ssh.md: owners)\n",
					r->sb ? r->sb->name : "?", p, ctx->uid, a->uid, a->gid, strerror(-rc));
		} else {
			fprintf(stderr, "seerfs: sandbox %s: %s made by uid %u stays owned by %u:%u: chown failed: %s\n",
				r->sb ? r->sb->name : "?", p, ctx->uid, a->uid, a->gid, strerror(-rc));
		}
		return;
	}
	if (uid != (uint32_t)-1)
		a->uid = uid;
	if (gid != (uint32_t)-1)
		a->gid = gid;
	/* The kernel clears a file's set-uid bit on chown, and its set-gid
	 * bit where group-executable. */
	if ((a->flags & SFTP_ATTR_PERMISSIONS) && !S_ISDIR(a->perm) && !S_ISLNK(a->perm)) {
		a->perm &= ~(uint32_t)S_ISUID;
		if (a->perm & S_IXGRP)
			a->perm &= ~(uint32_t)S_ISGID;
	}
}

/*
 * Directory operations as their caller (docs/ssh.md: "callers' own ids"):
 * root/'s SFTP server acts as the login, root without capabilities, which
 * may neither write in another owner's 0755 directory nor remove another's
 * entry from a sticky one, nor make device nodes. Under a root seerfs the
 * owners' agent makes such an operation with the caller's fsuid, fsgid and
 * groups instead (fs/root/sftpfs_agent.c: sftpx_as), so the host's kernel
 * checks it as the local provider's does, and a new entry is the caller's
 * at once. when: AS_FIRST, a caller other than root goes there first (one
 * round trip, no chown after); AS_ALWAYS, any caller (device nodes);
 * AS_REFUSED, any caller SFTP refused (a create, which needs SFTP's handle); a
 * negative errno, what SFTP answered: root goes there once SFTP refused
 * (EACCES, EPERM), so its own entries keep their single SFTP round trip.
 * -ENOTSUP where it does not apply (no owners' agent, a seerfs not run by
 * root, ids beyond the sandbox's 0 to 65535): SFTP then, as before.
 */
#define AS_FIRST 0
#define AS_ALWAYS 1
#define AS_REFUSED 2 /* any caller, SFTP having refused (EACCES, EPERM) */

/* Paths root/'s SFTP server cannot take: its kernel refuses a whole path
 * from PATH_MAX on. The agents walk them one name at a time instead
 * (docs/ssh.md: long paths). */
static int long_path(const char *p)
{
	return p && strlen(p) >= PATH_MAX;
}

/* Listings SFTP may give short: OpenSSH's sftp-server stats each entry by
 * its whole path (PATH_MAX at most, cut beyond) and leaves out those it
 * cannot, so a directory where a name of NAME_MAX would pass PATH_MAX is
 * listed by the agent (fetch_list_x). */
static int long_list(const char *p)
{
	return p && strlen(p) + 1 + NAME_MAX >= PATH_MAX;
}

/* Whether as_caller applies to req at when (see above): 0 with the
 * caller's ids in c (its groups in g, SFTPX_GROUPS_MAX of room), or
 * -ENOTSUP. */
static int as_ids(struct sftpfs *r, fuse_req_t req, int when, struct sftpx_caller *c, gid_t *g)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	if (!ctx || !own_may(r) || __atomic_load_n(&r->as_off, __ATOMIC_RELAXED))
		return -ENOTSUP;
	if (when == AS_FIRST ? ctx->uid == 0
			     : when < 0 && (ctx->uid != 0 || (when != -EACCES && when != -EPERM)))
		return -ENOTSUP;
	if (ctx->uid > 65535 || ctx->gid > 65535)
		return -ENOTSUP;
	gid_t all[SFTPX_GROUPS_MAX];
	int ng = fuse_req_getgroups(req, SFTPX_GROUPS_MAX, all), k = 0;
	if (ng > SFTPX_GROUPS_MAX)
		return -ENOTSUP; /* more groups than it takes: SFTP, as before */
	/* A group beyond the sandbox's ids is left out: fewer rights, never more. */
	for (int i = 0; i < ng; i++)
		if (all[i] <= 65535)
			g[k++] = all[i];
	*c = (struct sftpx_caller){.uid = ctx->uid, .gid = ctx->gid, .ngroups = k, .groups = g};
	return 0;
}

/* An answer of the owners' agent that means it cannot act as callers at
 * all: as_off, logged once; -ENOTSUP then, else rc. */
static int as_gone(struct sftpfs *r, const struct sftpx_caller *c, const char *path, int rc)
{
	if (rc != -ENOTSUP && rc != -ENOSYS)
		return rc;
	if (!__atomic_exchange_n(&r->as_off, 1, __ATOMIC_RELAXED) && rc == -ENOSYS)
		fprintf(stderr,
			"seerfs: sandbox %s: %s by uid %u: the owners' agent cannot act as root/'s callers (%s); "
			"their directory operations go over SFTP as the SSH login (docs/ssh.md: owners)\n",
			r->sb ? r->sb->name : "?", path, c->uid, strerror(-rc));
	return -ENOTSUP;
}

static int x_lstat(struct sftpfs *r, const char *p, struct sftp_attrs *a);

static int as_caller(struct sftpfs *r, fuse_req_t req, int when, const char *op, const char *path, const char *str,
		     const int64_t *args, int nargs, struct sftp_attrs *a)
{
	/* A path SFTP cannot carry goes to an agent whoever the caller is:
	 * the owners' agent as the caller, else the sandbox's as the login
	 * (what SFTP would have made), else ENAMETOOLONG. */
	int two = !strcmp(op, "link") || !strcmp(op, "rename");
	int lp = long_path(path) || (two && long_path(str));
	if (lp)
		when = AS_ALWAYS;
	struct sftpx_caller c;
	gid_t g[SFTPX_GROUPS_MAX];
	int rc = as_ids(r, req, when, &c, g);
	if (rc == 0)
		rc = as_gone(r, &c, path, sftpx_as(xsb(r), &c, op, path, str, args, nargs, a));
	if (rc != -ENOTSUP || !lp)
		return rc;
	if (!use_x(r) || !strcmp(op, "mkfile"))
		return -ENAMETOOLONG;
	rc = sftpx_op(xsb(r), op, path, str, args, nargs);
	if (x_fallback(r, rc))
		return -ENAMETOOLONG;
	if (rc == 0 && a)
		rc = x_lstat(r, two ? str : path, a);
	return rc;
}

/* After SFTP answered rc for op: a refusal goes to the owners' agent as
 * the caller (as_caller with when = rc), whose answer then stands, and
 * *as (when not NULL) says the agent made the entry; rc as it was where
 * that does not apply. */
static int as_caller_after(struct sftpfs *r, fuse_req_t req, int rc, const char *op, const char *path,
			   const char *str, const int64_t *args, int nargs, struct sftp_attrs *a, int *as)
{
	int xr = rc < 0 ? as_caller(r, req, rc, op, path, str, args, nargs, a) : -ENOTSUP;
	if (xr == -ENOTSUP)
		return rc;
	if (as)
		*as = 1;
	return xr;
}

/* Opens p through the sandbox's agents (struct sfile: xh) where SFTP
 * cannot: a path it cannot carry (long_path: the owners' agent as the
 * caller, else the sandbox's as the login, else ENAMETOOLONG), or (when,
 * as as_caller takes it) a file SFTP refused to the login that the caller
 * may open, by the owners' agent as the caller (the host's kernel checks
 * the caller's rights, and the file stays open with them alone).
 * -ENOTSUP where neither applies. With the writeback cache, as
 * open_flags, a write-only open reads too where the caller may. */
static int x_open(struct sftpfs *r, fuse_req_t req, int when, const char *p, int flags, mode_t mode,
		  struct sftpx_fh **h, struct sftp_attrs *a)
{
	int lp = long_path(p);
	if (lp)
		when = AS_ALWAYS;
	if (!use_x(r))
		return lp ? -ENAMETOOLONG : -ENOTSUP;
	int wb = r->fs && r->fs->writeback && (flags & O_ACCMODE) == O_WRONLY;
	int fl = wb ? (flags & ~O_ACCMODE) | O_RDWR : flags;
	struct sftpx_caller c;
	gid_t g[SFTPX_GROUPS_MAX];
	int rc = as_ids(r, req, when, &c, g);
	if (rc == 0) {
		rc = sftpx_open(xsb(r), &c, p, fl, mode, h, a);
		if (wb && rc == -EACCES)
			rc = sftpx_open(xsb(r), &c, p, flags, mode, h, a);
		rc = as_gone(r, &c, p, rc);
	}
	if (rc != -ENOTSUP || !lp)
		return rc;
	rc = sftpx_open(xsb(r), NULL, p, fl, mode, h, a);
	if (wb && rc == -EACCES)
		rc = sftpx_open(xsb(r), NULL, p, flags, mode, h, a);
	return x_fallback(r, rc) ? -ENAMETOOLONG : rc;
}

/* Under r->mu: directory n's attributes are not to be answered from what
 * we last saw (its mtime and link count moved with a change in it). */
static void dir_attrs_stale(struct snode *n)
{
	if (n)
		n->a_valid = 0;
}

/* Under r->mu: the directory holding path, as dir_attrs_stale. */
static void parent_attrs_stale(struct sftpfs *r, const char *path)
{
	dir_attrs_stale(parent_node(r, path));
}

/* Something in directory n (or, n NULL, the one holding path) changed
 * through us: its cached listing and attributes go. */
static void dir_changed(struct sftpfs *r, struct snode *n, const char *path)
{
	pthread_mutex_lock(&r->mu);
	if (n) {
		mark_changed(n, NULL);
		dir_attrs_stale(n);
	} else if (path) {
		drop_parent_list(r, path);
		parent_attrs_stale(r, path);
	}
	pthread_mutex_unlock(&r->mu);
}

/* name in directory n was made (or may have been) through us. */
static void dir_added(struct sftpfs *r, struct snode *n, const char *name)
{
	pthread_mutex_lock(&r->mu);
	mark_changed(n, name);
	dir_attrs_stale(n);
	pthread_mutex_unlock(&r->mu);
}

#define BEGIN(ino)                                 \
	struct snode *n = node_of(ino);            \
	struct sftpfs *r = n->r;                   \
	int rc = op_enter(r);                      \
	if (rc < 0) {                              \
		fuse_reply_err(req, -rc);          \
		return;                            \
	}

/* BEGIN for an op that changes the tree. */
#define BEGIN_CHANGE(ino)                          \
	BEGIN(ino);                                \
	if (r->readonly)                           \
		FAIL(-EROFS);

#define FAIL(e)                                    \
	do {                                       \
		op_exit(r);                        \
		fuse_reply_err(req, -(e));         \
		return;                            \
	} while (0)

static void sftpfs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	sftpfs_forget_one(ino, nlookup);
	fuse_reply_none(req);
}

static void sftpfs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		sftpfs_forget_one(forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

/* The node at path, if the kernel knows it, has no write in flight. */
static void drain_path(struct sftpfs *r, const char *path)
{
	pthread_mutex_lock(&r->mu);
	struct snode *m = tab_find(r, path);
	while (m && m->pending && !r->dead) {
		pthread_cond_wait(&r->done_cv, &r->mu);
		m = tab_find(r, path);
	}
	pthread_mutex_unlock(&r->mu);
}

/* name in a listing; NULL when absent (an empty listing has no array,
 * and bsearch must not be given a NULL one). */
static struct sdent *sdir_find(const struct sdir *d, const char *name)
{
	struct sdent key = {.name = (char *)name};
	return d->n ? bsearch(&key, d->e, d->n, sizeof(*d->e), sdent_cmp) : NULL;
}

static void sftpfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	BEGIN(parent);
	char *p = node_path(n, name, &rc);
	if (!p)
		FAIL(rc);
	drain_path(r, p);
	double t = cur_timeout(r);
	struct sftp_attrs a;
	/* Answer from the parent's listing when we have one; the second miss
	 * in a directory fetches it (one round trip set for all siblings:
	 * `git status` after a cache drop, `make` probing for files). */
	pthread_mutex_lock(&r->mu);
	if (t > 0 && n->path)
		wait_loading(r, n->path);
	struct snode *child = tab_find(r, p);
	int writing = child && child->pending;
	struct lent *l = writing || t <= 0 || !n->path ? NULL : lc_get(r, n->path, 1);
	int64_t now = now_ms();
	if (l && l->d && now - l->ms > (int64_t)(t * 1000))
		lent_drop_list(l);
	struct sdir *d = l ? l->d : NULL;
	int neg = 0;
	if (d && l->dirty) {
		/* Only a miss can be trusted now (struct lent). */
		neg = !sdir_find(d, name);
		for (size_t i = 0; neg && i < l->nadded; i++)
			neg = strcmp(l->added[i], name) != 0;
		d = NULL;
	}
	/* A name the kernel let expire whose node we know, with attributes
	 * as fresh as getattr would answer from (its listing may be dirty:
	 * git's objects after link and unlink). */
	int known = !writing && t > 0 && child && !neg && child->a_valid && child->a_wgen == child->wgen &&
		    !child->linked && (child->cf || now - child->a_ms < (int64_t)(t * 1000));
	if (known) {
		a = child->a;
		d = NULL;
	}
	if (d) {
		d->refs++;
		queue_kids(r, l, d, 1);
	}
	int want = l && !d && !neg && !known && ++l->misses >= 2 && now - l->changed_ms > 1000;
	pthread_mutex_unlock(&r->mu);
	if (!d && want && get_list(r, n, &d) < 0)
		d = NULL;
	if (neg) {
		rc = -ENOENT;
	} else if (known) {
		rc = 0;
	} else if (d) {
		struct sdent *hit = sdir_find(d, name);
		rc = hit ? 0 : -ENOENT;
		if (hit)
			a = hit->a;
		pthread_mutex_lock(&r->mu);
		sdir_put(d);
		pthread_mutex_unlock(&r->mu);
	} else {
		rc = x_lstat(r, p, &a);
	}
	struct fuse_entry_param e;
	if (rc == -ENOENT) {
		memset(&e, 0, sizeof(e));
		remember_neg(r, parent, name, &e);
		free(p);
		op_exit(r);
		fuse_reply_entry(req, &e);
		return;
	}
	if (rc == 0)
		rc = make_entry(r, p, &a, &e);
	free(p);
	if (rc < 0)
		FAIL(rc);
	op_exit(r);
	if (fuse_reply_entry(req, &e) < 0)
		forget_entry(r, e.ino);
}

/* The server's attributes of node n (the root followed, others not), noted
 * in the node. */
static int node_stat(struct sftpfs *r, struct snode *n, struct sftp_attrs *a)
{
	int rc;
	dc_settle_node(r, n);
	char *p = node_path(n, NULL, &rc);
	if (!p)
		return rc;
	rc = n == r->rootn ? sftp_stat(r->cli, p, a) : x_lstat(r, p, a);
	free(p);
	if (rc == 0)
		note_attrs(r, n, a);
	return rc;
}

static void sftpfs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	BEGIN(ino);
	struct sftp_attrs a;
	/* A file we created and still write: its attributes are the ones we
	 * track (struct snode: cf). The kernel asks after every write and
	 * before every chown (to clear set-id bits), one round trip each. */
	double t0 = cur_timeout(r);
	int mine = t0 > 0 && known_attrs(r, n, &a);
	pthread_mutex_lock(&r->mu);
	/* ... and any file whose attributes the server told us within the
	 * cache time, followed by our own changes since: the kernel asks
	 * again after every read (atime) and every close. */
	mine = mine && !n->linked && (n->cf || now_ms() - n->a_ms < (int64_t)(t0 * 1000));
	pthread_mutex_unlock(&r->mu);
	if (!mine)
		settle_node(r, n);
	struct sfile *f = fi && fi->fh && !S_ISDIR(n->mode) ? (struct sfile *)(uintptr_t)fi->fh : NULL;
	struct sftpx_fh *xh = f ? f->xh : NULL;
	if (f && !f->h)
		f = NULL; /* opened without the server (sftpfs_open): ask by path */
	/* An open file with a name: by that name where the agent gives link
	 * count and ctime; else (or deleted) by its handle. */
	rc = !mine && f && use_x(r) ? node_stat(r, n, &a) : -ENOENT;
	if (rc == -ENOTDIR || rc == -ELOOP)
		rc = -ENOENT; /* a directory on its path swapped for a symlink */
	if (mine) {
		rc = 0;
	} else if (f && rc == -ENOENT) {
		rc = sftp_fstat(r->cli, f->h, &a);
		if (rc == 0) {
			pthread_mutex_lock(&r->mu);
			if (n->a.x & SFTPX_NLINK) {   /* 0 once its last name went (sftpfs_unlink) */
				a.x |= SFTPX_NLINK;
				a.nlink = n->a.nlink;
			}
			pthread_mutex_unlock(&r->mu);
			note_attrs(r, n, &a);
		}
	} else if (!f) {
		rc = node_stat(r, n, &a);
		/* the agent's open file, deleted or moved: by its descriptor
		 * (its link count 0 once its last name went) */
		if (xh && (rc == -ENOENT || rc == -ENOTDIR || rc == -ELOOP) && sftpx_hstat(xsb(r), xh, &a) == 0)
			rc = 0;
		/* Deleted while open without a server handle (content we
		 * keep): what we last knew, with its link count. */
		pthread_mutex_lock(&r->mu);
		if (rc == -ENOENT && !n->path && fi && fi->fh && (n->a.flags & SFTP_ATTR_PERMISSIONS)) {
			a = n->a;
			rc = 0;
		}
		pthread_mutex_unlock(&r->mu);
	}
	if (rc < 0)
		FAIL(rc);
	op_exit(r);
	struct stat st;
	to_stat(&a, n->sino, &st);
	double t = node_timeout(r, n);   /* directories are never linked: 0 only while busy */
	if (t == 0 && S_ISDIR(st.st_mode)) {
		/* The kernel keeps every listing (no OPENDIR to say otherwise)
		 * until it sees the directory's mtime move, and SFTP's mtimes
		 * have whole seconds: while the sandbox is busy each answer
		 * gets its own nanoseconds, so that the next listing is read
		 * from the server again as before. */
		pthread_mutex_lock(&r->mu);
		st.st_mtim.tv_nsec = (long)(++r->dir_gen % 1000000000u);
		pthread_mutex_unlock(&r->mu);
	}
	fuse_reply_attr(req, &st, t);
}

/* The times a setattr gives (to_set, attr; known: the attributes before)
 * into a's 64-bit, nanosecond fields, where the agent keeps them; ctime is
 * now. Without the agent, a keeps SFTP's whole seconds only. */
static void x_set_times(struct sftpfs *r, struct sftp_attrs *a, const struct sftp_attrs *known, const struct stat *attr,
			int to_set)
{
	if (!use_x(r)) {
		a->x &= ~SFTPX_TIMES;
		return;
	}
	struct timespec nw;
	clock_gettime(CLOCK_REALTIME, &nw);
	if (!(known->x & SFTPX_TIMES)) {
		a->xatime = known->atime;
		a->xmtime = known->mtime;
		a->atime_ns = a->mtime_ns = 0;
		a->xsize = known->size;
		a->blocks = (known->size + 511) / 512;
	}
	a->x |= SFTPX_TIMES;
	if (to_set & FUSE_SET_ATTR_ATIME) {
		a->xatime = (to_set & FUSE_SET_ATTR_ATIME_NOW) ? nw.tv_sec : attr->st_atim.tv_sec;
		a->atime_ns = (uint32_t)((to_set & FUSE_SET_ATTR_ATIME_NOW) ? nw.tv_nsec : attr->st_atim.tv_nsec);
	}
	if (to_set & FUSE_SET_ATTR_MTIME) {
		a->xmtime = (to_set & FUSE_SET_ATTR_MTIME_NOW) ? nw.tv_sec : attr->st_mtim.tv_sec;
		a->mtime_ns = (uint32_t)((to_set & FUSE_SET_ATTR_MTIME_NOW) ? nw.tv_nsec : attr->st_mtim.tv_nsec);
	}
	a->atime = (uint32_t)a->xatime;
	a->mtime = (uint32_t)a->xmtime;
	a->xctime = nw.tv_sec;
	a->ctime_ns = (uint32_t)nw.tv_nsec;
}

/* Defers a mode/time change of a file we created and still hold open
 * (struct snode: cf, pend); owner changes that change nothing are dropped.
 * Such a change cannot fail on the server short of a lost link: we own the
 * file. Returns 1 with the new attributes in *out, 0 if it must be sent now. */
static int defer_attrs(struct sftpfs *r, struct snode *n, const struct sftp_attrs *known, const struct stat *attr, int to_set,
		       struct sftp_attrs *out)
{
	const int ids = FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID;
	const int ok = FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
		       FUSE_SET_ATTR_MTIME_NOW | FUSE_SET_ATTR_CTIME | ids;
	if ((to_set & ~ok) || !S_ISREG(known->perm) || cur_timeout(r) <= 0)
		return 0;
	if ((to_set & FUSE_SET_ATTR_UID) && attr->st_uid != known->uid)
		return 0;
	if ((to_set & FUSE_SET_ATTR_GID) && attr->st_gid != known->gid)
		return 0;
	/* chown, even to the same owner, clears set-id bits on the server */
	if ((to_set & ids) && (known->perm & (S_ISUID | S_ISGID)))
		return 0;
	struct sftp_attrs a = *known;
	time_t now = time(NULL);
	if (to_set & FUSE_SET_ATTR_MODE)
		a.perm = (known->perm & S_IFMT) | (attr->st_mode & 07777);
	if (to_set & FUSE_SET_ATTR_ATIME)
		a.atime = (to_set & FUSE_SET_ATTR_ATIME_NOW) ? (uint32_t)now : (uint32_t)attr->st_atim.tv_sec;
	if (to_set & FUSE_SET_ATTR_MTIME)
		a.mtime = (to_set & FUSE_SET_ATTR_MTIME_NOW) ? (uint32_t)now : (uint32_t)attr->st_mtim.tv_sec;
	x_set_times(r, &a, known, attr, to_set);
	pthread_mutex_lock(&r->mu);
	int can = n->cf && n->a_valid && n->a_wgen == n->wgen;
	if (can) {
		if (to_set & FUSE_SET_ATTR_MODE) {
			n->pend.flags |= SFTP_ATTR_PERMISSIONS;
			n->pend.perm = a.perm & 07777;
		}
		if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
			n->pend.flags |= SFTP_ATTR_ACMODTIME;
			n->pend.atime = a.atime;
			n->pend.mtime = a.mtime;
			/* with the nanoseconds, for the agent (apply_pend) */
			n->pend.x = a.x & SFTPX_TIMES;
			n->pend.xatime = a.xatime;
			n->pend.atime_ns = a.atime_ns;
			n->pend.xmtime = a.xmtime;
			n->pend.mtime_ns = a.mtime_ns;
		}
		n->a = a;
	}
	pthread_mutex_unlock(&r->mu);
	if (can)
		*out = a;
	return can;
}

static void sftpfs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
	BEGIN_CHANGE(ino);
	/* Another file's deferred create is not to see this change (a
	 * directory made read-only); this one's may take it (defer_attrs). */
	dc_flush_all(r, n);
	struct sfile *f = fi && fi->fh && !S_ISDIR(n->mode) ? (struct sfile *)(uintptr_t)fi->fh : NULL;
	struct sftpx_fh *xh = f ? f->xh : NULL;   /* ftruncate through the agent's file */
	if (f && !f->h)
		f = NULL; /* opened without the server (sftpfs_open): ask by path */
	char *p = node_path(n, NULL, &rc);
	if (!p && !f && !xh)
		FAIL(rc);
	struct sftp_attrs a, cur, known;
	/* Mode, owner and times changes are answered from the attributes we
	 * last saw plus the change: one round trip per change instead of up
	 * to three (tar x sets owner, mode and times on every file). */
	int have = !(to_set & FUSE_SET_ATTR_SIZE) && known_attrs(r, n, &known);
	if (have && defer_attrs(r, n, &known, attr, to_set, &a)) {
		free(p);
		op_exit(r);
		struct stat st;
		to_stat(&a, n->sino, &st);
		fuse_reply_attr(req, &st, node_timeout(r, n));
		return;
	}
	settle_node(r, n);
	if (p)
		dir_changed(r, NULL, p);
	if (to_set & FUSE_SET_ATTR_SIZE) {
		pthread_mutex_lock(&r->mu);
		wgen_bump(r, n);
		pthread_mutex_unlock(&r->mu);
	}
	rc = 0;
	if (to_set & FUSE_SET_ATTR_MODE) {
		memset(&a, 0, sizeof(a));
		a.flags = SFTP_ATTR_PERMISSIONS;
		a.perm = attr->st_mode & 07777;
		int64_t m = attr->st_mode & 07777;
		if (!f && long_path(p))
			rc = as_caller(r, req, AS_ALWAYS, "chmod", p, NULL, &m, 1, NULL);
		else
			rc = f ? sftp_fsetstat(r->cli, f->h, &a) : sftp_setstat(r->cli, p, &a);
		/* An entry the login does not own (another owner's, root/
		 * gave it): the owners' agent, with CAP_FOWNER, for a change
		 * the kernel allowed (a root seerfs: a root caller, or the
		 * owner under -o allow_other's default_permissions). */
		if ((rc == -EACCES || rc == -EPERM) && p && geteuid() == 0 && use_x(r)) {
			int xr = sftpx_pchmod(xsb(r), p, attr->st_mode & 07777);
			if (!x_fallback(r, xr))
				rc = xr;
		}
	}
	int x_owner = 1;
	if (rc == 0 && (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) && p && use_x(r)) {
		/* fchownat inside the sandbox: the kernel's own answer; under
		 * a root seerfs with CAP_CHOWN: the caller is root, or the
		 * kernel checked the change (-o allow_other brings
		 * default_permissions, fs/main.c), so what it let through is
		 * what the caller may do (another owner, as root may; a group
		 * of the owner's) */
		const struct fuse_ctx *ctx = fuse_req_ctx(req);
		rc = sftpx_chown(xsb(r), p, (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : (uint32_t)-1,
				 (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : (uint32_t)-1,
				 (ctx && ctx->uid == 0) || geteuid() == 0);
		x_owner = x_fallback(r, rc);
		if (f && (rc == -ENOENT || rc == -ENOTDIR || rc == -ELOOP))
			x_owner = 1;
		if (x_owner)
			rc = 0;
	}
	if (rc == 0 && x_owner && (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
		if (have)
			cur = known;
		else
			rc = f ? sftp_fstat(r->cli, f->h, &cur) : sftp_lstat(r->cli, p, &cur);
		if (rc == 0) {
			memset(&a, 0, sizeof(a));
			a.flags = SFTP_ATTR_UIDGID;
			a.uid = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : cur.uid;
			a.gid = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : cur.gid;
			rc = f ? sftp_fsetstat(r->cli, f->h, &a) : sftp_lsetstat(r->cli, p, &a);
			if (rc == -ENOTSUP && !S_ISLNK(n->mode))
				rc = sftp_setstat(r->cli, p, &a);
			/* A chown the server's user may not make is EPERM in
			 * POSIX; SFTP carries it as PERMISSION_DENIED (EACCES
			 * here), and an owner the sandbox's user namespace cannot
			 * map (its sftp-server runs in bwrap's) as EINVAL. */
			if (rc == -EINVAL || rc == -EACCES)
				rc = -EPERM;
		}
	}
	if (rc == 0 && (to_set & FUSE_SET_ATTR_SIZE)) {
		memset(&a, 0, sizeof(a));
		a.flags = SFTP_ATTR_SIZE;
		a.size = (uint64_t)attr->st_size;
		if (xh)
			rc = sftpx_htrunc(xsb(r), xh, (uint64_t)attr->st_size);
		else if (!f && long_path(p))
			rc = -ENAMETOOLONG;   /* the agent's truncate below */
		else
			rc = f ? sftp_fsetstat(r->cli, f->h, &a) : sftp_setstat(r->cli, p, &a);
		/* SFTP says FAILURE (EPERM here) for what the kernel tells
		 * apart (EFBIG past the file system's largest file): ask the
		 * agent to make it, which answers with the kernel's errno. */
		if (rc < 0 && rc != -ENOTCONN && !xh && p && use_x(r)) {
			int xr = sftpx_truncate(xsb(r), p, (uint64_t)attr->st_size);
			if (!x_fallback(r, xr))
				rc = xr;
		}
		/* A file the login may not write and the caller may (its
		 * owner's; the kernel checked the caller): truncated by the
		 * owners' agent as the caller (as_caller). */
		if ((rc == -EACCES || rc == -EPERM) && p && !xh) {
			int64_t sz = (int64_t)attr->st_size;
			int xr = as_caller(r, req, AS_REFUSED, "truncate", p, NULL, &sz, 1, NULL);
			if (xr != -ENOTSUP)
				rc = xr;
		}
	}
	int x_times = 1;
	if (rc == 0 && (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) && p && use_x(r)) {
		/* utimensat inside the sandbox: nanoseconds, 64-bit seconds */
		struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_OMIT}};
		if (to_set & FUSE_SET_ATTR_ATIME)
			ts[0] = (to_set & FUSE_SET_ATTR_ATIME_NOW) ? (struct timespec){.tv_nsec = UTIME_NOW} : attr->st_atim;
		if (to_set & FUSE_SET_ATTR_MTIME)
			ts[1] = (to_set & FUSE_SET_ATTR_MTIME_NOW) ? (struct timespec){.tv_nsec = UTIME_NOW} : attr->st_mtim;
		rc = sftpx_setattr(xsb(r), p, 0, 0, ts);
		/* Times the login may not set and the caller may (its own
		 * file's, root's, "now" by one who may write it; the kernel
		 * checked the caller): set by the owners' agent as the caller. */
		if (rc == -EACCES || rc == -EPERM) {
			int64_t ta[4] = {(int64_t)ts[0].tv_sec, ts[0].tv_nsec, (int64_t)ts[1].tv_sec, ts[1].tv_nsec};
			int xr = as_caller(r, req, AS_REFUSED, "utimens", p, NULL, ta, 4, NULL);
			if (xr != -ENOTSUP)
				rc = xr;
		}
		x_times = x_fallback(r, rc);
		/* an open file whose name went or moved: by its handle */
		if (f && (rc == -ENOENT || rc == -ENOTDIR || rc == -ELOOP))
			x_times = 1;
		if (x_times)
			rc = 0;
	}
	if (rc == 0 && x_times && (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))) {
		/* SFTP sets both times at once, whole seconds only. */
		memset(&a, 0, sizeof(a));
		a.flags = SFTP_ATTR_ACMODTIME;
		time_t now = time(NULL);
		int both = (to_set & FUSE_SET_ATTR_ATIME) && (to_set & FUSE_SET_ATTR_MTIME);
		if (!both && have)
			cur = known;
		else if (!both)
			rc = f ? sftp_fstat(r->cli, f->h, &cur) : sftp_lstat(r->cli, p, &cur);
		if (rc == 0) {
			a.atime = (to_set & FUSE_SET_ATTR_ATIME_NOW) ? (uint32_t)now
				  : (to_set & FUSE_SET_ATTR_ATIME) ? (uint32_t)attr->st_atim.tv_sec : cur.atime;
			a.mtime = (to_set & FUSE_SET_ATTR_MTIME_NOW) ? (uint32_t)now
				  : (to_set & FUSE_SET_ATTR_MTIME) ? (uint32_t)attr->st_mtim.tv_sec : cur.mtime;
			/* lsetstat: setstat follows symlinks (sshfs's tar failure). */
			rc = f ? sftp_fsetstat(r->cli, f->h, &a) : sftp_lsetstat(r->cli, p, &a);
			if (rc == -ENOTSUP && !f)
				rc = S_ISLNK(n->mode) ? -EPERM : sftp_setstat(r->cli, p, &a);
		}
	}
	/* chown may clear set-id bits on the server: ask it then. */
	if (have && (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) && (known.perm & (S_ISUID | S_ISGID)))
		have = 0;
	/* With the agent, ask it: ctime, nanoseconds, times past 2^32. */
	if (rc == 0 && have && p && use_x(r)) {
		int xr = x_lstat(r, p, &a);
		if (xr == 0)
			have = 2;
		else if (!f || (xr != -ENOENT && xr != -ENOTDIR && xr != -ELOOP))
			rc = xr;
	}
	if (have == 2) {
		; /* a is the agent's */
	} else if (rc == 0 && have) {
		a = known;
		if (to_set & FUSE_SET_ATTR_MODE)
			a.perm = (known.perm & S_IFMT) | (attr->st_mode & 07777);
		if (to_set & FUSE_SET_ATTR_UID)
			a.uid = attr->st_uid;
		if (to_set & FUSE_SET_ATTR_GID)
			a.gid = attr->st_gid;
		if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
			time_t now = time(NULL);
			if (to_set & FUSE_SET_ATTR_ATIME)
				a.atime = (to_set & FUSE_SET_ATTR_ATIME_NOW) ? (uint32_t)now : (uint32_t)attr->st_atim.tv_sec;
			if (to_set & FUSE_SET_ATTR_MTIME)
				a.mtime = (to_set & FUSE_SET_ATTR_MTIME_NOW) ? (uint32_t)now : (uint32_t)attr->st_mtim.tv_sec;
		}
	} else if (rc == 0) {
		rc = f && !(p && use_x(r)) ? sftp_fstat(r->cli, f->h, &a)
		       : (n == r->rootn ? sftp_stat(r->cli, p, &a) : x_lstat(r, p, &a));
		if (f && (rc == -ENOENT || rc == -ENOTDIR || rc == -ELOOP))
			rc = sftp_fstat(r->cli, f->h, &a); /* its name went or moved */
	}
	if (rc < 0 && p)
		rc = refine_failure(r, p, NULL, 0, 0, rc);
	free(p);
	if (rc < 0)
		FAIL(rc);
	note_attrs(r, n, &a);
	op_exit(r);
	struct stat st;
	to_stat(&a, n->sino, &st);
	fuse_reply_attr(req, &st, node_timeout(r, n));
}

/* Fixes the mode the server's umask may have narrowed. */
static void fix_perm(struct sftpfs *r, const char *p, struct sftp_handle *h, struct sftp_attrs *a, mode_t mode)
{
	if ((a->perm & 07777) == (mode & 07777))
		return;
	struct sftp_attrs m = {.flags = SFTP_ATTR_PERMISSIONS, .perm = mode & 07777};
	if ((h ? sftp_fsetstat(r->cli, h, &m) : sftp_setstat(r->cli, p, &m)) == 0)
		a->perm = (a->perm & S_IFMT) | (mode & 07777);
}

/* The end of an op that made path p (freed here) with attributes a: its
 * entry to the kernel, or rc's error. */
static void reply_made(fuse_req_t req, struct sftpfs *r, char *p, const struct sftp_attrs *a, int rc)
{
	struct fuse_entry_param e;
	if (rc == 0)
		rc = make_entry(r, p, a, &e);
	free(p);
	if (rc < 0)
		FAIL(rc);
	op_exit(r);
	if (fuse_reply_entry(req, &e) < 0)
		forget_entry(r, e.ino);
}

static void sftpfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	BEGIN_CHANGE(parent);
	char *p = node_path(n, name, &rc);
	if (!p)
		FAIL(rc);
	struct sftp_attrs a;
	int lrc;
	int64_t am = mode & 07777;
	dc_flush_all(r, NULL);
	rc = as_caller(r, req, AS_FIRST, "mkdir", p, NULL, &am, 1, &a);
	int as = rc != -ENOTSUP;
	if (!as) {
		rc = sftp_mkdir_lstat(r->cli, p, mode & 07777, &a, &lrc);
		/* The server says FAILURE for most things; what is in the way
		 * tells EEXIST apart, statvfs the rest (refine_failure). */
		if ((rc == -EEXIST || rc == -ENOTEMPTY || rc == -EIO) && lrc == 0)
			rc = -EEXIST;
		else if (rc < 0)
			rc = refine_failure(r, p, NULL, 1, 1, rc);
		else
			rc = lrc;
		rc = as_caller_after(r, req, rc, "mkdir", p, NULL, &am, 1, &a, &as);
	}
	dir_added(r, n, name);
	if (rc == 0 && !as) {
		pthread_mutex_lock(&r->mu);
		learn_ids(r, n, &a);
		pthread_mutex_unlock(&r->mu);
	}
	/* A directory made in a setgid one is setgid too (the server's
	 * kernel made it so): kept, as the kernel keeps it. The owners'
	 * agent made it with the caller's ids and the exact mode. */
	if (rc == 0 && !as)
		fix_perm(r, p, NULL, &a, (mode & 01777) | (a.perm & S_ISGID));
	if (rc == 0 && !as)
		own_new(r, req, n, p, &a);
	if (rc == 0 && cur_timeout(r) > 0) {
		pthread_mutex_lock(&r->mu);
		lc_seed_empty(r, p);
		pthread_mutex_unlock(&r->mu);
	}
	reply_made(req, r, p, &a, rc);
}

/* A FIFO or a socket: made by the sandbox's agent (SFTP has neither);
 * EPERM without it. Ends the op begun in sftpfs_mknod. */
static void sftpfs_mknod_x(fuse_req_t req, struct sftpfs *r, struct snode *n, const char *name, mode_t mode)
{
	int rc;
	if (!use_x(r))
		FAIL(-EPERM);
	char *p = node_path(n, name, &rc);
	if (!p)
		FAIL(rc);
	dc_flush_all(r, NULL);
	struct sftp_attrs a;
	int64_t args[2] = {(int64_t)mode, 0};
	rc = as_caller(r, req, AS_FIRST, "mknod", p, NULL, args, 2, &a);
	int as = rc != -ENOTSUP;
	if (!as) {
		rc = sftpx_mknod(xsb(r), p, mode);
		if (x_fallback(r, rc))
			rc = -EPERM;
		rc = as_caller_after(r, req, rc, "mknod", p, NULL, args, 2, &a, &as);
	}
	dir_added(r, n, name);
	if (rc == 0 && !as)
		rc = x_lstat(r, p, &a);
	if (rc == 0 && !as)
		own_new(r, req, n, p, &a);
	reply_made(req, r, p, &a, rc);
}

/* A device node: as on the local provider, only root (host root through a
 * root seerfs) may make one; here by the owners' agent as root, with
 * CAP_MKNOD (as_caller). EPERM for anyone else, and without that agent.
 * Ends the op begun in sftpfs_mknod. */
static void sftpfs_mknod_dev(fuse_req_t req, struct sftpfs *r, struct snode *n, const char *name, mode_t mode,
			     dev_t rdev)
{
	int rc;
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	if (!ctx || ctx->uid != 0 || rdev > UINT32_MAX)
		FAIL(-EPERM);
	char *p = node_path(n, name, &rc);
	if (!p)
		FAIL(rc);
	struct sftp_attrs a;
	int64_t args[2] = {(int64_t)mode, (int64_t)rdev};
	rc = as_caller(r, req, AS_ALWAYS, "mknod", p, NULL, args, 2, &a);
	if (rc == -ENOTSUP)
		rc = -EPERM; /* SFTP carries no device nodes */
	dir_added(r, n, name);
	reply_made(req, r, p, &a, rc);
}

static void sftpfs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	BEGIN_CHANGE(parent);
	if (S_ISFIFO(mode) || S_ISSOCK(mode)) {
		sftpfs_mknod_x(req, r, n, name, mode);
		return;
	}
	if (S_ISCHR(mode) || S_ISBLK(mode)) {
		sftpfs_mknod_dev(req, r, n, name, mode, rdev);
		return;
	}
	if (!S_ISREG(mode))
		FAIL(-EINVAL);
	char *p = node_path(n, name, &rc);
	if (!p)
		FAIL(rc);
	struct sftp_attrs a = {.flags = SFTP_ATTR_PERMISSIONS, .perm = mode & 07777};
	struct sftp_handle *h = NULL;
	int64_t args[2] = {(int64_t)mode, 0};
	dc_flush_all(r, NULL);
	rc = as_caller(r, req, AS_FIRST, "mknod", p, NULL, args, 2, &a);
	int as = rc != -ENOTSUP;
	if (!as) {
		rc = sftp_open(r->cli, p, SFTP_WRITE | SFTP_CREAT | SFTP_EXCL, &a, &h);
		rc = refine_failure(r, p, NULL, 1, 1, rc);
		rc = as_caller_after(r, req, rc, "mknod", p, NULL, args, 2, &a, &as);
	}
	dir_added(r, n, name);
	if (rc == 0 && !as) {
		rc = sftp_fstat(r->cli, h, &a);
		if (rc == 0)
			fix_perm(r, p, h, &a, mode);
		sftp_close(r->cli, h);
	}
	if (rc == 0 && !as)
		own_new(r, req, n, p, &a);
	reply_made(req, r, p, &a, rc);
}

/* Under r->mu: the file of node n lost another name through us: one link
 * fewer, and its ctime moved (to now, never back: the host's clock may be
 * ahead), known without asking the server - git stats every object it
 * linked and unlinked the temporary name of. Where the link count is not
 * known, the attributes are asked for again. */
static void one_link_less(struct snode *n)
{
	if (!n->a_valid || !(n->a.x & SFTPX_NLINK) || !(n->a.x & SFTPX_TIMES) || n->a.nlink < 2) {
		n->a_valid = 0;
		return;
	}
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	n->a.nlink--;
	if (now.tv_sec > n->a.xctime || (now.tv_sec == n->a.xctime && (uint32_t)now.tv_nsec > n->a.ctime_ns)) {
		n->a.xctime = now.tv_sec;
		n->a.ctime_ns = (uint32_t)now.tv_nsec;
	} else if (++n->a.ctime_ns >= 1000000000u) {
		n->a.ctime_ns = 0;
		n->a.xctime++;
	}
}

/* After unlink/rmdir: the node that had path names nothing now. */
static void orphan_path(struct sftpfs *r, const char *p)
{
	pthread_mutex_lock(&r->mu);
	struct snode *m = tab_find(r, p);
	if (m && m->lpeer)
		one_link_less(m->lpeer);
	if (m && m->lpeer && !m->cf && !m->pending) {
		/* The other name of a file we linked is its only one again
		 * (git: link the temporary object to its name, unlink the
		 * temporary): it may be cached again. */
		m->lpeer->linked = 0;
		m->lpeer->lpeer = NULL;
		m->lpeer = NULL;
	}
	if (m)
		node_orphan(r, m);
	pthread_mutex_unlock(&r->mu);
}

/*
 * An unlink whose outcome we know is sent without waiting for its answer
 * (out_take takes it later): the other name of a file we linked through
 * root/ (git: the temporary object, once linked to its name), a regular
 * file nothing has open or pending, in a directory the login may change
 * (not sticky, or the file is the login's), while the cache is on. Only a
 * host-side failure (I/O, a change made meanwhile outside root/) can fail
 * it: logged, and reported by the next fsync of a directory.
 */
static int unl_later(struct sftpfs *r, struct snode *n, const char *p)
{
	if (cur_timeout(r) <= 0)
		return -1;
	out_take(r, 0);
	pthread_mutex_lock(&r->mu);
	struct snode *m = tab_find(r, p);
	int ok = m && m->lpeer && !m->cf && !m->pending && S_ISREG(m->mode) && r->ids_known &&
		 (n->a.flags & SFTP_ATTR_PERMISSIONS) && (n->a.flags & SFTP_ATTR_UIDGID) &&
		 login_may_write(&n->a, r->new_uid, r->new_gid) &&
		 (!(n->a.perm & S_ISVTX) || (m->a_valid && m->a.uid == r->new_uid));
	pthread_mutex_unlock(&r->mu);
	struct sftp_later *l = NULL;
	if (!ok || sftp_remove_later(r->cli, p, &l) < 0)
		return -1;
	out_add(r, p, OUT_UNLINK, l);
	return 0;
}

static void sftpfs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	BEGIN_CHANGE(parent);
	char *p = node_path(n, name, &rc);
	if (!p)
		FAIL(rc);
	dc_flush_all(r, NULL);
	rc = as_caller(r, req, AS_FIRST, "unlink", p, NULL, NULL, 0, NULL);
	if (rc == -ENOTSUP && unl_later(r, n, p) == 0) {
		rc = 0;
	} else if (rc == -ENOTSUP) {
		rc = sftp_remove(r->cli, p);
		if (rc == -EIO) {
			/* FAILURE: most likely a directory */
			struct sftp_attrs a;
			if (sftp_lstat(r->cli, p, &a) == 0 && S_ISDIR(a.perm))
				rc = -EISDIR;
		}
		rc = refine_failure(r, p, NULL, 1, 0, rc);
		rc = as_caller_after(r, req, rc, "unlink", p, NULL, NULL, 0, NULL, NULL);
	}
	dir_changed(r, n, NULL);
	if (rc == 0) {
		/* One name fewer: an open file whose last name went has 0
		 * links (fstat of it; unlink/14 of pjdfstest). */
		pthread_mutex_lock(&r->mu);
		struct snode *m = tab_find(r, p);
		if (m) {
			m->a.nlink = (m->a.x & SFTPX_NLINK) && m->a.nlink > 0 ? m->a.nlink - 1 : 0;
			m->a.x |= SFTPX_NLINK;
		}
		pthread_mutex_unlock(&r->mu);
		orphan_path(r, p);
	}
	free(p);
	op_exit(r);
	fuse_reply_err(req, -rc);
}

static void sftpfs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	BEGIN_CHANGE(parent);
	char *p = node_path(n, name, &rc);
	if (!p)
		FAIL(rc);
	dc_flush_all(r, NULL);
	rc = as_caller(r, req, AS_FIRST, "rmdir", p, NULL, NULL, 0, NULL);
	if (rc == -ENOTSUP) {
		rc = sftp_rmdir(r->cli, p);
		if (rc == -ENOTEMPTY) {
			struct sftp_attrs a;
			int s = sftp_lstat(r->cli, p, &a);
			if (s == 0 && !S_ISDIR(a.perm))
				rc = -ENOTDIR;
		}
		rc = refine_failure(r, p, NULL, 1, 0, rc);
		rc = as_caller_after(r, req, rc, "rmdir", p, NULL, NULL, 0, NULL, NULL);
	}
	dir_changed(r, n, NULL);
	pthread_mutex_lock(&r->mu);
	lc_drop_prefix(r, p);
	pthread_mutex_unlock(&r->mu);
	if (rc == 0)
		orphan_path(r, p);
	free(p);
	op_exit(r);
	fuse_reply_err(req, -rc);
}

static void sftpfs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	BEGIN_CHANGE(parent);
	char *p = node_path(n, name, &rc);
	if (!p)
		FAIL(rc);
	struct sftp_attrs a;
	int lrc;
	dc_flush_all(r, NULL);
	rc = as_caller(r, req, AS_FIRST, "symlink", p, link, NULL, 0, &a);
	int as = rc != -ENOTSUP;
	if (!as) {
		rc = sftp_symlink_lstat(r->cli, link, p, &a, &lrc);
		if (rc < 0 && rc != -ENOENT && rc != -EACCES && lrc == 0)
			rc = -EEXIST;
		else if (rc < 0)
			rc = refine_failure(r, p, NULL, 1, 1, rc);
		else
			rc = lrc;
		rc = as_caller_after(r, req, rc, "symlink", p, link, NULL, 0, &a, &as);
	}
	dir_added(r, n, name);
	if (rc == 0 && !as)
		own_new(r, req, n, p, &a);
	reply_made(req, r, p, &a, rc);
}

static void sftpfs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	BEGIN_CHANGE(ino);
	struct snode *np = node_of(newparent);
	char *op = node_path(n, NULL, &rc);
	char *p = op ? node_path(np, newname, &rc) : NULL;
	if (!p) {
		free(op);
		FAIL(rc);
	}
	struct sftp_attrs a;
	int lrc = 0;
	dc_flush_all(r, NULL);
	rc = as_caller(r, req, AS_FIRST, "link", op, p, NULL, 0, &a);
	int as = rc != -ENOTSUP;
	/* Through the agent, the link count comes in the same answer (SFTP's
	 * LSTAT has none: one round trip more per link, git's every object). */
	int x = !as && use_x(r);
	if (x && x_fallback(r, rc = sftpx_link(xsb(r), op, p, &a)))
		x = 0;
	if (!as && !x) {
		rc = sftp_hardlink_lstat(r->cli, op, p, &a, &lrc);
		rc = refine_failure(r, p, NULL, 1, 1, rc);
		rc = as_caller_after(r, req, rc, "link", op, p, NULL, 0, &a, &as);
		if (as)
			lrc = 0;
	}
	if (x && rc < 0)
		rc = as_caller_after(r, req, rc, "link", op, p, NULL, 0, &a, &as);
	dir_added(r, np, newname);
	dir_changed(r, NULL, op); /* the link count in its listing */
	if (rc == 0)
		rc = lrc;
	if (rc == 0 && use_x(r) && !as && !x) {
		struct sftp_attrs xa;   /* its link count */
		if (x_lstat(r, p, &xa) == 0)
			a = xa;
	}
	struct fuse_entry_param e;
	if (rc == 0)
		rc = make_entry(r, p, &a, &e);
	if (rc == 0) {
		/* The new name is the same file: it shows the source's st_ino
		 * (SFTP has no inode numbers; ours hash the path). `git clone`
		 * of a local repository links every object and then compares
		 * st_ino of both names ("hardlink different from source").
		 * Only while the kernel keeps the node: looked up afresh after
		 * a forget, the name gets its own path's number again. */
		pthread_mutex_lock(&r->mu);
		struct snode *m = node_of(e.ino);
		/* One pair is tracked: a third name keeps them linked for good. */
		if (!n->linked && !m->linked && m != n) {
			n->lpeer = m;
			m->lpeer = n;
		} else {
			if (n->lpeer)
				n->lpeer->lpeer = NULL;
			if (m->lpeer)
				m->lpeer->lpeer = NULL;
			n->lpeer = m->lpeer = NULL;
		}
		m->sino = n->sino;
		m->linked = n->linked = 1;
		pthread_mutex_unlock(&r->mu);
		e.attr.st_ino = n->sino;
		e.attr_timeout = e.entry_timeout = 0;
	}
	free(op);
	free(p);
	if (rc < 0)
		FAIL(rc);
	op_exit(r);
	if (fuse_reply_entry(req, &e) < 0)
		forget_entry(r, e.ino);
	/* The kernel keeps the source's attributes (its link count) as
	 * cached before: the new name is another node here, so nothing it
	 * got says the count moved. Told after the reply (no lock held). */
	else if (r->fs && r->fs->se)
		fuse_lowlevel_notify_inval_inode(r->fs->se, ino, -1, 0);
}

/* access(2), chdir, `test -x`: the server checks every operation as the
 * remote user, so R_OK and W_OK are left to it (answered 0); but X_OK on a
 * non-directory without any x bit is EACCES for everyone, root included
 * (execve refuses it too), so that is asked of the server's attributes.
 * Without this, access(X_OK) said yes for a mode-0644 file. */
static void sftpfs_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	BEGIN(ino);
	if (r->readonly && (mask & W_OK))
		FAIL(-EROFS);
	if (!(mask & X_OK) || S_ISDIR(n->mode)) {
		op_exit(r);
		fuse_reply_err(req, 0);
		return;
	}
	struct sftp_attrs a;
	rc = node_stat(r, n, &a);
	if (rc < 0)
		FAIL(rc);
	op_exit(r);
	int dir = (a.flags & SFTP_ATTR_PERMISSIONS) && S_ISDIR(a.perm);
	int x = !(a.flags & SFTP_ATTR_PERMISSIONS) || (a.perm & 0111);
	fuse_reply_err(req, dir || x ? 0 : EACCES);
}

/* Under r->mu: the table after `from` was renamed to `to`. */
static void rename_nodes(struct sftpfs *r, const char *from, const char *to)
{
	/* Cached listings are keyed by path: those below either name go. */
	lc_drop_prefix(r, from);
	lc_drop_prefix(r, to);
	struct snode *victim = tab_find(r, to);
	struct snode *moved = tab_find(r, from);
	if (victim && victim != moved)
		node_orphan(r, victim);
	if (!moved)
		return;
	if (!S_ISDIR(moved->mode)) {
		char *np = strdup(to);
		if (!np) {
			node_orphan(r, moved);
			return;
		}
		tab_remove(r, moved);
		free(moved->path);
		moved->path = np;
		if (tab_insert(r, moved) < 0) {
			free(moved->path);
			moved->path = NULL;
		}
		return;
	}
	/* A directory: every descendant moves too, and whatever was under a
	 * replaced (empty) directory is gone. */
	size_t fl = strlen(from), tl = strlen(to), nm = 0;
	struct snode **mv = malloc(sizeof(*mv) * (r->count + 1));
	for (size_t i = 0; i < r->tabsz; i++) {
		for (struct snode *m = r->tab[i]; m; m = m->hnext) {
			if (!strncmp(m->path, from, fl) && (m->path[fl] == 0 || m->path[fl] == '/')) {
				if (mv)
					mv[nm++] = m;
			} else if (!strncmp(m->path, to, tl) && m->path[tl] == '/' && mv) {
				mv[nm++] = m; /* marked below by a NULL rewrite */
			}
		}
	}
	for (size_t i = 0; i < nm; i++) {
		struct snode *m = mv[i];
		int under_from = !strncmp(m->path, from, fl) && (m->path[fl] == 0 || m->path[fl] == '/');
		tab_remove(r, m);
		if (!under_from) {
			free(m->path);
			m->path = NULL;
			continue;
		}
		char *np = malloc(tl + strlen(m->path + fl) + 1);
		if (np) {
			memcpy(np, to, tl);
			strcpy(np + tl, m->path + fl);
		}
		free(m->path);
		m->path = np;
	}
	for (size_t i = 0; i < nm; i++) {
		if (mv[i]->path && tab_insert(r, mv[i]) < 0) {
			free(mv[i]->path);
			mv[i]->path = NULL;
		}
	}
	free(mv);
}

/* Under r->mu: the table after a and b were exchanged (RENAME_EXCHANGE):
 * each node, and everything below it, takes the other's path. */
static void exchange_nodes(struct sftpfs *r, const char *a, const char *b)
{
	static const char tmp[] = "\001exchange"; /* never a path: they start with "/" */
	rename_nodes(r, a, tmp);
	rename_nodes(r, b, a);
	rename_nodes(r, tmp, b);
}

/* RENAME_EXCHANGE, which SFTP has not: renameat2 by the owners' agent as
 * the caller, else by the sandbox's agent as the login; EINVAL without an
 * agent (docs/ssh.md). */
static int exchange_x(struct sftpfs *r, fuse_req_t req, const char *from, const char *to)
{
	int64_t fl = RENAME_EXCHANGE;
	if (!use_x(r))
		return -EINVAL;
	int rc = as_caller(r, req, AS_ALWAYS, "rename", from, to, &fl, 1, NULL);
	if (rc == -ENOTSUP) {
		rc = sftpx_op(xsb(r), "rename", from, to, &fl, 1);
		if (x_fallback(r, rc))
			rc = -EINVAL;
	}
	return rc;
}

static void sftpfs_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname,
		     unsigned int flags)
{
	BEGIN_CHANGE(parent);
	/* RENAME_WHITEOUT: nothing makes whiteouts here (EINVAL); the
	 * exchange through an agent (exchange_x). */
	if ((flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) ||
	    ((flags & RENAME_EXCHANGE) && (flags & RENAME_NOREPLACE)))
		FAIL(-EINVAL);
	char *from = node_path(n, name, &rc);
	char *to = from ? node_path(node_of(newparent), newname, &rc) : NULL;
	if (!to) {
		free(from);
		FAIL(rc);
	}
	/* Writes still queued target a handle, not the path: no drain needed. */
	int64_t fl = flags;
	dc_flush_all(r, NULL);
	int xr = flags & RENAME_EXCHANGE ? exchange_x(r, req, from, to)
					 : as_caller(r, req, AS_FIRST, "rename", from, to, &fl, 1, NULL);
	if (xr != -ENOTSUP) {
		rc = xr;
	} else if (flags & RENAME_NOREPLACE) {
		rc = sftp_rename(r->cli, from, to);
		if (rc == -EEXIST) {
			struct sftp_attrs a;
			if (sftp_lstat(r->cli, from, &a) == -ENOENT)
				rc = -ENOENT;
		}
	} else {
		rc = sftp_posix_rename(r->cli, from, to);
		if (rc == -ENOTSUP)
			rc = sftp_rename(r->cli, from, to);
		if (rc == -EIO) {
			/* posix-rename's FAILURE: the usual causes, checked */
			struct sftp_attrs a, b;
			if (sftp_lstat(r->cli, from, &a) == 0 && sftp_lstat(r->cli, to, &b) == 0) {
				if (S_ISDIR(b.perm) && !S_ISDIR(a.perm))
					rc = -EISDIR;
				else if (!S_ISDIR(b.perm) && S_ISDIR(a.perm))
					rc = -ENOTDIR;
				else if (S_ISDIR(b.perm))
					rc = -ENOTEMPTY;
			}
		}
	}
	if (xr == -ENOTSUP) {
		rc = refine_failure(r, from, NULL, 1, 0, rc);
		xr = rc < 0 ? as_caller(r, req, rc, "rename", from, to, &fl, 1, NULL) : -ENOTSUP;
		if (xr != -ENOTSUP)
			rc = xr;
	}
	dir_changed(r, n, NULL);
	dir_added(r, node_of(newparent), newname);
	if (rc == 0) {
		pthread_mutex_lock(&r->mu);
		if (flags & RENAME_EXCHANGE)
			exchange_nodes(r, from, to);
		else
			rename_nodes(r, from, to);
		pthread_mutex_unlock(&r->mu);
	}
	free(from);
	free(to);
	op_exit(r);
	fuse_reply_err(req, -rc);
}

/* A link's target as root/ must show it (the rule: fs/root/link.c). The
 * kernel found the link through the nodes of its path, one per component,
 * so the depth of its directory below root/ is exact. */
static int rewrite_link(struct sftpfs *r, const char *lpath, const char *t, char *out, size_t outsz)
{
	const char *rel = lpath + r->rootlen;
	while (*rel == '/')
		rel++;
	const char *slash = strrchr(rel, '/');
	size_t dirlen = slash ? (size_t)(slash - rel) : 0;
	struct link_place pl = {.depth = dirlen ? 1 : 0, .exact = 1};
	for (size_t i = 0; i < dirlen; i++)
		pl.depth += rel[i] == '/';
	return link_confine(t, &pl, out, outsz);
}

static void sftpfs_readlink(fuse_req_t req, fuse_ino_t ino)
{
	BEGIN(ino);
	char *p = node_path(n, NULL, &rc);
	if (!p)
		FAIL(rc);
	char *t = NULL;
	rc = long_path(p) ? sftpx_readlink(xsb(r), p, &t) : sftp_readlink(r->cli, p, &t);
	if (long_path(p) && x_fallback(r, rc))
		rc = -ENAMETOOLONG;
	char out[PATH_MAX];
	if (rc == 0)
		rc = rewrite_link(r, p, t, out, sizeof(out));
	free(t);
	free(p);
	if (rc < 0)
		FAIL(rc);
	op_exit(r);
	fuse_reply_readlink(req, out);
}

static uint32_t open_flags(struct sftpfs *r, int flags)
{
	uint32_t pf = sftp_flags_from_posix(flags & ~(O_CREAT | O_EXCL));
	/* With the writeback cache the kernel reads pages of files opened
	 * write-only (partial page writes). */
	if (r->fs && r->fs->writeback && (flags & O_ACCMODE) == O_WRONLY)
		pf |= SFTP_READ;
	return pf;
}

static void file_free(struct sfile *f)
{
	if (!f)
		return;
	pthread_mutex_destroy(&f->ra_mu);
	pthread_cond_destroy(&f->ra_cv);
	free(f->ra_buf);
	free(f);
}

static struct sfile *file_new(struct snode *n, struct sftp_handle *h, int flags)
{
	struct sfile *f = calloc(1, sizeof(*f));
	if (f) {
		n->opened = 1; /* racy by design: a stale 1 only costs a page drop */
		f->n = n;
		f->h = h;
		f->append = !!(flags & O_APPEND);
		f->flags = flags;
		pthread_mutex_init(&f->ra_mu, NULL);
		pthread_cond_init(&f->ra_cv, NULL);
	}
	return f;
}

/* ---- deferred creates -------------------------------------------------- */

/*
 * A create whose outcome the cache already knows - the parent's listing is
 * current and the name is nowhere in it nor among the names made there
 * since - is answered without the server, with the attributes the server
 * would give (its owner learnt from the entries made before: ids_known).
 * Its writes up to SFTPX_CREATE_MAX are kept (struct sdefer), and its
 * close sends create, content, mode, times and close as one request to
 * the sandbox's agent (sftpx_create: no symlink followed on the way) and
 * waits for it: one round trip per small file where SFTP needs two (OPEN,
 * then the WRITE acknowledged). An error reaches that close, and the log
 * names the file, as a deferred write's does. Whatever needs the file on
 * the server before - another open of it, a stat or change of it that is
 * not answered here, a bigger write, a read, any change of the tree or
 * listing read from the server, a job's start - makes it there first over
 * SFTP (dc_materialize: the create as it would have been, the kept bytes
 * queued as its first write), so every later operation finds it.
 */

/* Under r->mu: f off r->dcs. */
static void dc_unlist(struct sftpfs *r, struct sfile *f)
{
	for (struct sfile **pp = &r->dcs; *pp; pp = &(*pp)->dc_next) {
		if (*pp == f) {
			*pp = f->dc_next;
			f->dc_next = NULL;
			r->ndc--;
			return;
		}
	}
}

/* Under r->mu: f's deferred create, taken for sending (dc_busy), or NULL
 * when it has none (any more). */
static struct sdefer *dc_take(struct sftpfs *r, struct sfile *f)
{
	while (f->dc_busy)
		pthread_cond_wait(&r->done_cv, &r->mu);
	if (f->dc)
		f->dc_busy = 1;
	return f->dc;
}

/* Under r->mu: f's deferred create is sent, or failed: gone. */
static void dc_done(struct sftpfs *r, struct sfile *f)
{
	sdefer_free(f->dc);
	f->dc = NULL;
	f->dc_busy = 0;
	dc_unlist(r, f);
	pthread_cond_broadcast(&r->done_cv);
}

static void dc_log(struct sftpfs *r, const char *p, int rc)
{
	fprintf(stderr, "seerfs: sandbox %s: the deferred create of %s failed: %s; the close of that file reports it, "
			"write the file again\n",
		r->sb ? r->sb->name : "?", p ? p : "(removed file)", strerror(-rc));
}

/* Under r->mu: n's create failed: nothing we told of it stands. */
static void dc_failed(struct sftpfs *r, struct sfile *f, int rc)
{
	struct snode *n = f->n;
	if (!f->werr)
		f->werr = rc;
	n->a_valid = 0;
	cdata_drop(r, n);
	if (n->path)
		drop_parent_list(r, n->path);
}

/* Makes f's deferred create on the server over SFTP, as sftpfs_create would
 * have, its kept content queued as its first write; f goes on as any open
 * file. Returns 0 (nothing deferred, or made) or the error, which also
 * sticks to f (its close reports it). */
static int dc_materialize(struct sftpfs *r, struct sfile *f)
{
	struct snode *n = f->n;
	pthread_mutex_lock(&r->mu);
	struct sdefer *d = dc_take(r, f);
	char *p = d && n->path ? strdup(n->path) : NULL;
	pthread_mutex_unlock(&r->mu);
	if (!d)
		return 0;
	struct sftp_attrs a = {.flags = SFTP_ATTR_PERMISSIONS, .perm = d->mode & 07777};
	struct sftp_handle *h = NULL;
	int rc = p ? sftp_open_lstat(r->cli, p, open_flags(r, d->flags) | SFTP_CREAT | ((d->flags & O_EXCL) ? SFTP_EXCL : 0),
				     &a, &h, &a)
		   : -ENOENT;
	if (rc < 0 && p)
		rc = refine_failure(r, p, NULL, 1, 1, rc);
	if (rc == 0 && !S_ISREG(a.perm))
		rc = sftp_fstat(r->cli, h, &a);
	if (rc == 0)
		fix_perm(r, p, h, &a, d->mode);
	if (rc == 0 && (d->uid != (uint32_t)-1 || d->gid != (uint32_t)-1))
		(void)sftpx_chown(xsb(r), p, d->uid, d->gid, 1); /* as own_new; the login's where it cannot */
	struct wjob *j = NULL;
	if (rc == 0 && d->len && !(j = calloc(1, sizeof(*j) + d->len)))
		rc = -ENOMEM;
	pthread_mutex_lock(&r->mu);
	if (rc == 0 && r->dead)
		rc = -ENOTCONN;
	if (rc == 0) {
		f->h = h;
		h = NULL;
		if (j) {
			j->f = f;
			j->len = d->len;
			memcpy(j->data, d->buf, d->len);
			*r->jtail = j;
			r->jtail = &j->next;
			r->qbytes += j->len;
			f->pending++;
			n->pending++;
			n->unsent++;
			j = NULL;
			pthread_cond_signal(&r->work_cv);
		}
	} else {
		dc_failed(r, f, rc);
	}
	dc_done(r, f);
	pthread_mutex_unlock(&r->mu);
	free(j);
	if (h)
		sftp_close(r->cli, h);
	if (rc < 0)
		dc_log(r, p, rc);
	free(p);
	return rc;
}

/* f's deferred create, sent with its content and held-back mode and times
 * in one request to the agent, answered. Returns 1 when f had none (it is
 * an ordinary handle), else 0 or the error (sticky on f, logged).
 * At a flush (at_flush) of a handle nothing was written through yet, it
 * waits for a later flush or the release: a shell's `echo x > f` opens f,
 * dup2s it to 1 and closes the first descriptor (a flush) before it
 * writes; sending it there would cost a second round trip to open it again. */
static int dc_commit(struct sftpfs *r, struct sfile *f, int at_flush)
{
	struct snode *n = f->n;
	pthread_mutex_lock(&r->mu);
	struct sdefer *d = dc_take(r, f);
	if (!d || (at_flush && !f->written)) {
		if (d) {
			f->dc_busy = 0;
			pthread_cond_broadcast(&r->done_cv);
		}
		pthread_mutex_unlock(&r->mu);
		return d ? 0 : 1;
	}
	/* The held-back changes go with it; later ones go by path. */
	struct sftp_attrs pend = {0};
	if (n->cf == f) {
		pend = n->pend;
		n->pend.flags = 0;
		n->cf = NULL;
	}
	char *p = n->path ? strdup(n->path) : NULL;
	pthread_mutex_unlock(&r->mu);
	struct timespec ts[2];
	int times = !!(pend.flags & SFTP_ATTR_ACMODTIME);
	if (times && (pend.x & SFTPX_TIMES)) {
		ts[0] = (struct timespec){.tv_sec = (time_t)pend.xatime, .tv_nsec = pend.atime_ns};
		ts[1] = (struct timespec){.tv_sec = (time_t)pend.xmtime, .tv_nsec = pend.mtime_ns};
	} else if (times) {
		ts[0] = (struct timespec){.tv_sec = pend.atime};
		ts[1] = (struct timespec){.tv_sec = pend.mtime};
	}
	struct sftp_attrs a;
	int cherr = 0;
	int rc = p ? sftpx_create(xsb(r), p, !!(d->flags & O_EXCL), !!(d->flags & O_TRUNC), d->mode,
				  (pend.flags & SFTP_ATTR_PERMISSIONS) ? (int)(pend.perm & 07777) : -1, times ? ts : NULL,
				  d->uid, d->gid, d->buf, d->len, &a, &cherr)
		   : -ENOENT;
	if (rc == 0 && cherr == -EINVAL) {
		/* an owner the sandbox cannot map: own_new's case, remembered */
		pthread_mutex_lock(&r->mu);
		int again = r->own_bad && r->own_bad_uid == d->uid && r->own_bad_gid == d->gid;
		r->own_bad = 1;
		r->own_bad_uid = d->uid;
		r->own_bad_gid = d->gid;
		pthread_mutex_unlock(&r->mu);
		if (!again)
			fprintf(stderr, "seerfs: sandbox %s: %s made by uid %u stays owned by %u:%u: chown failed: %s\n",
				r->sb ? r->sb->name : "?", p, d->uid, a.uid, a.gid, strerror(-cherr));
	} else if (rc == 0 && cherr && !__atomic_exchange_n(&r->own_off, 1, __ATOMIC_RELAXED)) {
		/* the owners' agent could not give it away (own_new's case) */
		fprintf(stderr,
			"seerfs: sandbox %s: %s made by uid %u stays owned by %u:%u: the owners' agent cannot chown (%s); "
			"new entries of other users keep the SSH login's owner (docs/ssh.md: owners)\n",
			r->sb ? r->sb->name : "?", p, d->uid, a.uid, a.gid, strerror(-cherr));
	}
	if (rc == -ENOTSUP || rc == -ENOSYS) {
		/* No agent for it after all: over SFTP, as before. */
		x_fallback(r, rc);
		pthread_mutex_lock(&r->mu);
		if (pend.flags && !n->cf) {
			n->cf = f;
			n->pend = pend;
		}
		f->dc_busy = 0;
		pthread_cond_broadcast(&r->done_cv);
		pthread_mutex_unlock(&r->mu);
		free(p);
		rc = dc_materialize(r, f);
		return rc < 0 ? rc : settle_file(r, n, f);
	}
	pthread_mutex_lock(&r->mu);
	if (rc == 0) {
		n->a = a;
		n->a_wgen = n->wgen;
		n->a_valid = !idle_gate_busy(&r->gate);
		n->a_ms = now_ms();
	} else {
		dc_failed(r, f, rc);
	}
	dc_done(r, f);
	pthread_mutex_unlock(&r->mu);
	if (rc < 0)
		dc_log(r, p, rc);
	free(p);
	return rc;
}

/* After n's deferred create failed at its close (replied): the kernel
 * forgets what it was told of it (the entry, its attributes). */
static void dc_forget(struct sftpfs *r, struct snode *n, fuse_ino_t ino)
{
	if (!r->fs || !r->fs->se)
		return;
	fuse_ino_t parent = 0;
	char *name = NULL;
	pthread_mutex_lock(&r->mu);
	struct snode *pn = parent_node(r, n->path);
	if (pn && (name = strdup(strrchr(n->path, '/') + 1)))
		parent = pn == r->rootn && r->root_alias ? r->root_alias : ino_of(pn);
	pthread_mutex_unlock(&r->mu);
	fuse_lowlevel_notify_inval_inode(r->fs->se, ino, 0, 0);
	if (name)
		fuse_lowlevel_notify_inval_entry(r->fs->se, parent, name, strlen(name));
	free(name);
}

/* dc_materialize of f, which the caller kept with f->pending++ (under
 * r->mu), then let go. */
static void dc_materialize_held(struct sftpfs *r, struct sfile *f)
{
	dc_materialize(r, f);
	pthread_mutex_lock(&r->mu);
	f->pending--;
	pthread_cond_broadcast(&r->done_cv);
	pthread_mutex_unlock(&r->mu);
}

/* Before the server is asked about n: its deferred create is there. */
static void dc_settle_node(struct sftpfs *r, struct snode *n)
{
	pthread_mutex_lock(&r->mu);
	/* One being sent (a release's dc_commit, which took it off n->cf):
	 * the server has it once that is answered, not before. */
	for (;;) {
		struct sfile *g = r->dcs;
		while (g && !(g->n == n && g->dc_busy))
			g = g->dc_next;
		if (!g)
			break;
		pthread_cond_wait(&r->done_cv, &r->mu);
	}
	struct sfile *f = n->cf && n->cf->dc ? n->cf : NULL;
	if (f)
		f->pending++; /* keeps f until we are done (sftpfs_release drains it) */
	pthread_mutex_unlock(&r->mu);
	if (f)
		dc_materialize_held(r, f);
}

/* Before a change of the tree or a listing read from the server: every
 * deferred create (but except's) is there. */
static void dc_flush_all(struct sftpfs *r, struct snode *except)
{
	for (;;) {
		pthread_mutex_lock(&r->mu);
		struct sfile *f = r->dcs;
		int busy = 0;
		for (; f && (f->n == except || f->dc_busy); f = f->dc_next)
			busy |= f->n != except;
		if (f)
			busy = 0;
		else if (busy) /* one being sent: wait for it, then look again */
			pthread_cond_wait(&r->done_cv, &r->mu);
		if (f)
			f->pending++;
		pthread_mutex_unlock(&r->mu);
		if (busy)
			continue;
		if (!f)
			return;
		dc_materialize_held(r, f);
	}
}

/* A write to f while its create is deferred: kept (0), or f's create made
 * on the server first and the write left to the caller (1). */
static int dc_write(struct sftpfs *r, struct sfile *f, const char *buf, size_t size, off_t off)
{
	struct snode *n = f->n;
	int cached = cur_timeout(r) > 0;
	pthread_mutex_lock(&r->mu);
	while (f->dc_busy)
		pthread_cond_wait(&r->done_cv, &r->mu);
	int rc = 1;
	/* Times or a mode set before this write must not be sent after it. */
	if (f->dc && cached && !n->pend.flags && sdefer_write(f->dc, (uint64_t)off, buf, size, SFTPX_CREATE_MAX) == 0) {
		if (!f->written && n->path)
			drop_parent_list(r, n->path);
		int track = n->a_valid && n->a_wgen == n->wgen;
		uint64_t wgen0 = n->wgen;
		wgen_bump(r, n);
		cdata_write(r, n, wgen0, (uint64_t)off, buf, size, 1);
		if (track) {
			if (n->a.size < (uint64_t)off + size)
				n->a.size = (uint64_t)off + size;
			n->a.mtime = (uint32_t)time(NULL);
			n->a_wgen = n->wgen;
		}
		f->written = 1;
		rc = 0;
	}
	pthread_mutex_unlock(&r->mu);
	if (rc == 1)
		dc_materialize(r, f);
	return rc;
}

/* A handle whose create was sent at a close (dc_commit) has none on the
 * server: a later write through it (a dup'd descriptor) opens one. */
static int dc_reopen(struct sftpfs *r, struct sfile *f)
{
	int rc = 0;
	pthread_mutex_lock(&f->ra_mu);
	if (!f->h) {
		char *p = node_path(f->n, NULL, &rc);
		struct sftp_handle *h = NULL;
		if (p)
			rc = sftp_open(r->cli, p, open_flags(r, f->flags & ~O_TRUNC), NULL, &h);
		if (rc < 0 && p)
			rc = refine_failure(r, p, NULL, 0, 0, rc);
		free(p);
		if (rc == 0)
			f->h = h;
	}
	pthread_mutex_unlock(&f->ra_mu);
	return rc;
}

/* Answers a create without the server where the cache knows its outcome
 * (see above). Returns 1 when it replied (the op ended), 0 to create on
 * the server. */
/* Whether a directory of attributes pa lets uid:gid (no capabilities, no
 * supplementary groups known) add a name: write and search permission. */
static int login_may_write(const struct sftp_attrs *pa, uint32_t uid, uint32_t gid)
{
	uint32_t m = pa->perm;
	uint32_t bits = pa->uid == uid ? m >> 6 : pa->gid == gid ? m >> 3 : m;
	return (bits & 3) == 3;
}

static int dc_try_create(fuse_req_t req, struct sftpfs *r, struct snode *n, const char *name, mode_t mode,
			 struct fuse_file_info *fi)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	double t = cur_timeout(r);
	/* O_RDWR too (git's objects and locks): a read through the handle
	 * makes the file on the server first. */
	int acc = fi->flags & O_ACCMODE;
	if (t <= 0 || !ctx || !use_x(r) || (mode & 07000) || (acc != O_WRONLY && acc != O_RDWR) || (fi->flags & O_APPEND))
		return 0;
	int own = own_may(r);
	/* A caller other than root under the owners' agent: its entries are
	 * made as it (as_caller), with the host's kernel checking its rights;
	 * pcreate (the owners' agent's own capabilities) is for root alone. */
	if (own && ctx->uid != 0 && !__atomic_load_n(&r->as_off, __ATOMIC_RELAXED))
		return 0;
	int rc = 0;
	char *p = node_path(n, name, &rc);
	if (!p)
		return 0;
	if (long_path(p)) {   /* its later steps go over SFTP: x_create */
		free(p);
		return 0;
	}
	pthread_mutex_lock(&r->mu);
	int ok = n->path && r->ids_known && (n->a.flags & SFTP_ATTR_PERMISSIONS) && (n->a.flags & SFTP_ATTR_UIDGID) &&
		 !tab_find(r, p);
	/* The login must be able to make it there (its ids are those new
	 * entries get): where it cannot, the create goes the way that asks
	 * the owners' agent after SFTP's refusal (sftpfs_create). */
	ok = ok && login_may_write(&n->a, r->new_uid, r->new_gid);
	struct lent *l = ok ? lc_get(r, n->path, 0) : NULL;
	ok = l && l->d && !l->loading && now_ms() - l->ms <= (int64_t)(t * 1000) && !sdir_find(l->d, name);
	for (size_t i = 0; ok && i < l->nadded; i++)
		ok = strcmp(l->added[i], name) != 0;
	int sgid = ok && (n->a.perm & S_ISGID);
	uint32_t uid = r->new_uid, gid = sgid ? n->a.gid : r->new_gid;
	/* Given to its creator as own_new would (the owners' agent, in the
	 * same request: pcreate); beyond the sandbox's ids own_new leaves it. */
	uint32_t cu = (uint32_t)-1, cg = (uint32_t)-1;
	if (ok && own) {
		if (ctx->uid != uid)
			cu = ctx->uid;
		if (!sgid && ctx->gid != gid)
			cg = ctx->gid;
		if ((cu != (uint32_t)-1 && cu > 65535) || (cg != (uint32_t)-1 && cg > 65535) ||
		    (r->own_bad && r->own_bad_uid == cu && r->own_bad_gid == cg))
			cu = cg = (uint32_t)-1; /* own_new would leave it the login's */
	}
	pthread_mutex_unlock(&r->mu);
	struct sdefer *d = ok ? sdefer_new(fi->flags, mode & 07777) : NULL;
	if (!d) {
		free(p);
		return 0;
	}
	d->uid = cu;
	d->gid = cg;
	if (cu != (uint32_t)-1)
		uid = cu;
	if (cg != (uint32_t)-1)
		gid = cg;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	struct sftp_attrs a;
	memset(&a, 0, sizeof(a));
	a.flags = SFTP_ATTR_SIZE | SFTP_ATTR_UIDGID | SFTP_ATTR_PERMISSIONS | SFTP_ATTR_ACMODTIME;
	a.perm = S_IFREG | (mode & 0777);
	a.uid = uid;
	a.gid = gid;
	a.atime = a.mtime = (uint32_t)now.tv_sec;
	a.x = SFTPX_NLINK | SFTPX_TIMES;
	a.nlink = 1;
	a.xatime = a.xmtime = a.xctime = now.tv_sec;
	a.atime_ns = a.mtime_ns = a.ctime_ns = (uint32_t)now.tv_nsec;
	struct fuse_entry_param e;
	rc = make_entry(r, p, &a, &e);
	struct sfile *f = rc == 0 ? file_new(node_of(e.ino), NULL, fi->flags) : NULL;
	if (!f) {
		if (rc == 0)
			forget_entry(r, e.ino);
		sdefer_free(d);
		free(p);
		return 0;
	}
	dir_added(r, n, name);
	pthread_mutex_lock(&r->mu);
	f->dc = d;
	f->dc_next = r->dcs;
	r->dcs = f;
	r->ndc++;
	f->n->cf = f;
	f->n->pend.flags = 0;
	cdata_drop(r, f->n);
	f->n->cvalid = 1; /* empty, and ours */
	f->n->cgen = f->n->wgen;
	pthread_mutex_unlock(&r->mu);
	free(p);
	op_exit(r);
	fi->fh = (uintptr_t)f;
	fi->keep_cache = 1;
	if (fuse_reply_create(req, &e, fi) < 0) {
		pthread_mutex_lock(&r->mu);
		if (f->n->cf == f)
			f->n->cf = NULL;
		dc_done(r, f);
		pthread_mutex_unlock(&r->mu);
		forget_entry(r, e.ino);
		file_free(f);
	}
	return 1;
}

/* Under r->mu: a is what the server gave an entry just made in directory
 * n, before any chown: the owner a deferred create is given. */
static void learn_ids(struct sftpfs *r, struct snode *n, const struct sftp_attrs *a)
{
	if (r->ids_known || !(a->flags & SFTP_ATTR_UIDGID) || !(n->a.flags & SFTP_ATTR_PERMISSIONS) ||
	    (n->a.perm & S_ISGID))
		return;
	r->new_uid = a->uid;
	r->new_gid = a->gid;
	r->ids_known = 1;
}

/* sftpfs_create's end for a file the agent opened (x_open: xh, its
 * attributes a): its entry and handle to the kernel. p is freed. */
static void create_reply_x(fuse_req_t req, struct sftpfs *r, struct snode *n, char *p, struct sftpx_fh *xh,
			   struct sftp_attrs *a, struct fuse_file_info *fi)
{
	/* Made by the sandbox's agent (as the login): its creator's owner,
	 * as own_new gives it; one the owners' agent made is the caller's. */
	if (!xh->as && (fi->flags & O_EXCL))
		own_new(r, req, n, p, a);
	struct fuse_entry_param e;
	int rc = make_entry(r, p, a, &e);
	free(p);
	struct sfile *f = NULL;
	if (rc == 0 && !(f = file_new(node_of(e.ino), NULL, fi->flags))) {
		forget_entry(r, e.ino);
		rc = -ENOMEM;
	}
	if (rc < 0) {
		sftpx_hclose(xsb(r), xh);
		FAIL(rc);
	}
	f->xh = xh;
	op_exit(r);
	fi->fh = (uintptr_t)f;
	if (fuse_reply_create(req, &e, fi) < 0) {
		forget_entry(r, e.ino);
		if (op_enter(r) == 0) {
			sftpx_hclose(xsb(r), xh);
			op_exit(r);
		} else {
			free(xh);
		}
		file_free(f);
	}
}

static void sftpfs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
	BEGIN_CHANGE(parent);
	if (dc_try_create(req, r, n, name, mode, fi))
		return;
	char *p = node_path(n, name, &rc);
	if (!p)
		FAIL(rc);
	struct sftpx_fh *xh = NULL;
	struct sftp_attrs xa;
	if (long_path(p)) {
		/* a path SFTP cannot carry: the agents make and open it */
		dc_flush_all(r, NULL);
		rc = x_open(r, req, AS_ALWAYS, p, fi->flags | O_CREAT, mode & 07777, &xh, &xa);
		dir_added(r, n, name);
		if (rc < 0) {
			free(p);
			FAIL(rc);
		}
		create_reply_x(req, r, n, p, xh, &xa, fi);
		return;
	}
	struct sftp_attrs a = {.flags = SFTP_ATTR_PERMISSIONS, .perm = mode & 07777};
	struct sftp_handle *h = NULL;
	/* Where the entry may get its creator's owner (own_new), made with
	 * EXCL: only a file made here changes owner, never one that was there
	 * (or a symlink's target); one that was is opened as open(2) would. */
	int tried = 0, made = 1;
	if (!(fi->flags & O_EXCL) && own_may(r)) {
		rc = sftp_open_lstat(r->cli, p, open_flags(r, fi->flags) | SFTP_CREAT | SFTP_EXCL, &a, &h, &a);
		tried = 1;
		if (rc == -EIO || rc == -EEXIST) {
			made = 0;
			tried = 0;
			a = (struct sftp_attrs){.flags = SFTP_ATTR_PERMISSIONS, .perm = mode & 07777};
			h = NULL;
		}
	}
	if (!tried)
		rc = sftp_open_lstat(r->cli, p, open_flags(r, fi->flags) | SFTP_CREAT | ((fi->flags & O_EXCL) ? SFTP_EXCL : 0),
				     &a, &h, &a);
	dir_added(r, n, name);
	if (rc == -EIO && (fi->flags & O_EXCL) && sftp_lstat(r->cli, p, &a) == 0)
		rc = -EEXIST;
	else
		rc = refine_failure(r, p, NULL, 1, 1, rc);
	if ((rc == -EACCES || rc == -EPERM) && !h) {
		/* Refused to the SFTP server (the login, root without
		 * capabilities) in another owner's directory: the file made by
		 * the owners' agent as the caller (the host's kernel checks
		 * the caller), given to the login so that the server opens
		 * it, then given its mode and its caller's owner as above. */
		int xr = as_caller(r, req, AS_REFUSED, "mkfile", p, NULL, NULL, 0, NULL);
		if (xr == 0) {
			made = 1;
			rc = sftp_open_lstat(r->cli, p, open_flags(r, fi->flags), &a, &h, &a);
			rc = refine_failure(r, p, NULL, 1, 0, rc);
		} else if (xr != -ENOTSUP && !(xr == -EEXIST && !(fi->flags & O_EXCL))) {
			rc = xr;
		}
	}
	if ((rc == -EACCES || rc == -EPERM) && !h) {
		/* A file that was there, which the login may not open and
		 * the caller may: the owners' agent opens it as the caller. */
		int xr = x_open(r, req, AS_REFUSED, p, fi->flags | O_CREAT, mode & 07777, &xh, &xa);
		if (xr == 0) {
			create_reply_x(req, r, n, p, xh, &xa, fi);
			return;
		}
		if (xr != -ENOTSUP)
			rc = xr;
	}
	/* The lstat went by path: a symlink there (created without O_EXCL
	 * over an existing link) is not the file the handle opened. */
	if (rc == 0 && !S_ISREG(a.perm))
		rc = sftp_fstat(r->cli, h, &a);
	if (rc == 0 && made && (tried || (fi->flags & O_EXCL))) {
		pthread_mutex_lock(&r->mu);
		learn_ids(r, n, &a);
		pthread_mutex_unlock(&r->mu);
	}
	if (rc == 0)
		fix_perm(r, p, h, &a, mode);
	if (rc == 0 && made)
		own_new(r, req, n, p, &a);
	struct fuse_entry_param e;
	if (rc == 0)
		rc = make_entry(r, p, &a, &e);
	free(p);
	struct sfile *f = NULL;
	if (rc == 0 && !(f = file_new(node_of(e.ino), h, fi->flags))) {
		forget_entry(r, e.ino);
		rc = -ENOMEM;
	}
	if (rc < 0) {
		if (h)
			sftp_close(r->cli, h);
		FAIL(rc);
	}
	op_exit(r);
	fi->fh = (uintptr_t)f;
	fi->keep_cache = 1;
	int keep = cur_timeout(r) > 0 && !(fi->flags & O_APPEND);
	pthread_mutex_lock(&r->mu);
	f->n->cf = f;
	f->n->pend.flags = 0;
	cdata_drop(r, f->n);
	if (keep) {
		f->n->cvalid = 1; /* empty, and ours */
		f->n->cgen = f->n->wgen;
	}
	pthread_mutex_unlock(&r->mu);
	if (fuse_reply_create(req, &e, fi) < 0) {
		pthread_mutex_lock(&r->mu);
		f->n->cf = NULL;
		pthread_mutex_unlock(&r->mu);
		forget_entry(r, e.ino);
		if (op_enter(r) == 0) {
			sftp_close(r->cli, h);
			op_exit(r);
		}
		file_free(f);
	}
}

/* The largest file read whole: one READ's worth, less the byte asked
 * beyond it to see growth. */
static size_t rd_max(struct sftpfs *r)
{
	size_t max = sftp_max_read(r->cli) - 1;
	return max > SFTPFS_RD_FILE_MAX ? SFTPFS_RD_FILE_MAX : max;
}

/* A listed regular file read_ahead_files may read whole: non-empty, small,
 * readable by all (the lazy open in sftpfs_open checks no permission on the
 * server). */
static int rd_small(struct sftpfs *r, const struct sftp_attrs *a)
{
	return (a->flags & SFTP_ATTR_SIZE) && (a->flags & SFTP_ATTR_PERMISSIONS) && S_ISREG(a->perm) &&
	       (a->perm & 0444) == 0444 && a->size > 0 && a->size <= rd_max(r);
}

/* Under r->mu: m is a small file whose content read_ahead_files may keep:
 * attributes current, nothing of ours pending, content not kept yet. */
static int rd_candidate(struct sftpfs *r, struct snode *m)
{
	return m->path && m->a_valid && m->a_wgen == m->wgen && !m->pending && !m->linked && !m->cf &&
	       rd_small(r, &m->a) && !cdata_ok(m);
}

/* Under r->mu. */
static void spare_free(struct sftpfs *r, struct spare *s)
{
	r->cbytes -= s->len;
	free(s->path);
	free(s->data);
	memset(s, 0, sizeof(*s));
}

/* Under r->mu: keeps data (taking it and path) for path's next open. */
static void spare_put(struct sftpfs *r, char *path, char *data, size_t len, uint32_t mtime, uint64_t mgen)
{
	struct spare *s = &r->spares[r->spare_hand++ % SFTPFS_SPARES];
	spare_free(r, s);
	*s = (struct spare){.path = path, .data = data, .len = len, .mtime = mtime, .lgen = r->lgen, .mgen = mgen,
			    .ms = now_ms()};
	r->cbytes += len;
}

/* Under r->mu: n's content from a spare read ahead for its path, if still
 * good (struct spare). Returns 1 when n's content is kept now. */
static int spare_take(struct sftpfs *r, struct snode *n, double t)
{
	for (int i = 0; i < SFTPFS_SPARES; i++) {
		struct spare *s = &r->spares[i];
		if (!s->path || strcmp(s->path, n->path))
			continue;
		int good = s->lgen == r->lgen && s->mgen == r->mgen && now_ms() - s->ms <= (int64_t)(t * 1000) &&
			   n->a.size == s->len && n->a.mtime == s->mtime;
		if (good) {
			cdata_drop(r, n);
			n->cdata = s->data;
			n->clen = s->len;
			n->cgen = n->wgen;
			n->cvalid = 1;
			r->cbytes += s->len;
			s->data = NULL;
		}
		spare_free(r, s);
		return good;
	}
	return 0;
}

/* Under r->mu: path's listing, if we hold it unchanged and fresh. */
static const struct sdir *fresh_list(struct sftpfs *r, const char *path, double t)
{
	struct lent *l = lc_get(r, path, 0);
	return l && l->d && !l->dirty && !l->loading && now_ms() - l->ms <= (int64_t)(t * 1000) ? l->d : NULL;
}

/* The small files one read-ahead batch reads (read_ahead_files). */
struct rdbatch {
	struct sftp_fileread fr[SFTPFS_RD_BATCH];
	uint64_t wg[SFTPFS_RD_BATCH];   /* the node's wgen when asked */
	uint32_t mt[SFTPFS_RD_BATCH];   /* a spare's mtime in the listing */
	char spare[SFTPFS_RD_BATCH];    /* no node names it: kept as a spare */
	size_t k, bytes;
	double t;
};

static int rd_full(const struct rdbatch *b)
{
	return b->k >= SFTPFS_RD_BATCH || b->bytes >= SFTPFS_RD_BYTES;
}

/* Adds path (taken) to b, or frees it if its size does not fit. */
static void rd_add(struct rdbatch *b, char *path, uint64_t size, uint64_t wgen, int spare, uint32_t mtime)
{
	if (b->bytes + size > SFTPFS_RD_BYTES) {
		free(path);
		return;
	}
	b->fr[b->k].path = path;
	b->fr[b->k].want = size + 1;
	b->wg[b->k] = wgen;
	b->mt[b->k] = mtime;
	b->spare[b->k++] = (char)spare;
	b->bytes += size;
}

/* Under r->mu: into b, the small files a walk (`grep -r`: depth first, in
 * the listings' order, which is readdir's) reads after entry `from` of
 * dir's listing d, entering subdirectories whose fresh listing we hold,
 * depth levels deep. A file no node names is taken only from a clean
 * listing (its attributes are the server's). */
static void rd_walk(struct sftpfs *r, struct rdbatch *b, const char *dir, const struct sdir *d, size_t from, int depth,
		    int clean)
{
	for (size_t i = from; i < d->n && !rd_full(b); i++) {
		const struct sdent *e = &d->e[i];
		char *cp = join(dir, e->name);
		if (!cp)
			return;
		struct snode *m = tab_find(r, cp);
		const struct sdir *cd = NULL;
		if ((e->a.flags & SFTP_ATTR_PERMISSIONS) && S_ISDIR(e->a.perm)) {
			if (depth > 0 && (cd = fresh_list(r, cp, b->t)))
				rd_walk(r, b, cp, cd, 0, depth - 1, 1);
			free(cp);
		} else if (m ? rd_candidate(r, m) : clean && rd_small(r, &e->a)) {
			rd_add(b, cp, m ? m->a.size : e->a.size, m ? m->wgen : 0, !m, e->a.mtime);
		} else {
			free(cp);
		}
	}
}

/* Under r->mu: the walk of rd_walk from n on: the rest of n's directory,
 * then of the directories above it, SFTPFS_RD_UP levels, within the root. */
static void rd_collect(struct sftpfs *r, struct rdbatch *b, struct snode *n)
{
	char *dir = parent_path(n->path);
	struct lent *l = dir ? lc_get(r, dir, 0) : NULL;
	const struct sdir *d = l ? l->d : NULL; /* even if dirty: nodes only */
	const struct sdent *at = d ? sdir_find(d, strrchr(n->path, '/') + 1) : NULL;
	if (at)
		rd_walk(r, b, dir, d, (size_t)(at - d->e) + 1, SFTPFS_RD_DEPTH, fresh_list(r, dir, b->t) != NULL);
	for (int up = 0; at && dir && up < SFTPFS_RD_UP && !rd_full(b); up++) {
		if (strlen(dir) <= r->rootlen || !strcmp(dir, "/"))
			break;
		char *pd = parent_path(dir);
		const struct sdir *pdd = pd ? fresh_list(r, pd, b->t) : NULL;
		const struct sdent *me = pdd ? sdir_find(pdd, strrchr(dir, '/') + 1) : NULL;
		if (me)
			rd_walk(r, b, pd, pdd, (size_t)(me - pdd->e) + 1, SFTPFS_RD_DEPTH, 1);
		free(dir);
		dir = pd;
		at = me;
	}
	free(dir);
}

/* Under r->mu: what one read of b brought is kept: a node's content, or a
 * spare. */
static void rd_keep(struct sftpfs *r, struct rdbatch *b, size_t i, uint64_t mgen)
{
	struct sftp_fileread *fr = &b->fr[i];
	if (r->cbytes + fr->got > SFTPFS_CDATA_TOTAL)
		return;
	struct snode *m = tab_find(r, fr->path);
	if (b->spare[i]) {
		if (!m && mgen == r->mgen) {
			spare_put(r, (char *)fr->path, (char *)fr->data, fr->got, b->mt[i], mgen);
			fr->path = NULL;
			fr->data = NULL;
		}
		return;
	}
	if (m && m->wgen == b->wg[i] && rd_candidate(r, m)) {
		cdata_drop(r, m);
		m->cdata = (char *)fr->data;
		fr->data = NULL;
		m->clen = fr->got;
		m->cgen = m->wgen;
		m->cvalid = 1;
		r->cbytes += m->clen;
	}
}

/*
 * A read-only open of a small file (grep -r, git status, a compiler's
 * headers): instead of OPEN, then READ, it and the small files a walk reads
 * after it (the rest of its directory's listing, then the next directories
 * whose listings we hold: rd_collect) are read whole in one batch, two
 * round trips for all (sftp_read_files), and kept as their content (struct
 * snode: cdata, or struct spare where no node names the file yet), so their
 * opens need no server. Kept only if the size read is the size the listing
 * told (one byte more is asked, to see growth), the file did not change
 * through us and the caches were not dropped meanwhile (a job started).
 * Returns 1 when n's content is kept now.
 */
static int read_ahead_files(struct sftpfs *r, struct snode *n)
{
	struct rdbatch *b = calloc(1, sizeof(*b));
	if (!b)
		return 0;
	b->t = cur_timeout(r);
	pthread_mutex_lock(&r->mu);
	if (!rd_candidate(r, n) || spare_take(r, n, b->t)) {
		int ok = cdata_ok(n);
		pthread_mutex_unlock(&r->mu);
		free(b);
		return ok;
	}
	char *np = strdup(n->path);
	if (np)
		rd_add(b, np, n->a.size, n->wgen, 0, 0);
	if (np && b->t > 0)
		rd_collect(r, b, n);
	uint64_t gen = r->lgen, mgen = r->mgen;
	pthread_mutex_unlock(&r->mu);
	int on = b->t > 0;
	if (b->k)
		(void)sftp_read_files(r->cli, b->fr, b->k); /* each fr[i].rc says how it went */
	on = on && cur_timeout(r) > 0;
	pthread_mutex_lock(&r->mu);
	for (size_t i = 0; i < b->k; i++) {
		if (b->fr[i].rc == 0 && on && gen == r->lgen && b->fr[i].got + 1 == b->fr[i].want)
			rd_keep(r, b, i, mgen);
		free(b->fr[i].data);
		free((char *)b->fr[i].path);
	}
	int ok = cdata_ok(n);
	pthread_mutex_unlock(&r->mu);
	free(b);
	return ok;
}

static void sftpfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	BEGIN(ino);
	if (r->readonly && ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)))
		FAIL(-EROFS);
	char *p = node_path(n, NULL, &rc);
	if (!p)
		FAIL(rc);
	if (fi->flags & O_TRUNC) {
		drain_node(n);
		dir_changed(r, NULL, p);
		pthread_mutex_lock(&r->mu);
		wgen_bump(r, n); /* its size and content change */
		cdata_drop(r, n);
		pthread_mutex_unlock(&r->mu);
	}
	/* The server checks permissions at OPEN: mode changes held back for
	 * this file (another handle created it) are there first. */
	apply_pend(r, n);
	struct sftp_handle *h = NULL;
	/* A read of content we keep opens nothing on the server (it would,
	 * lazily, if the content stopped being ours: see sftpfs_read). We made
	 * the file, so its owner-read bit decides. */
	int lazy = (fi->flags & O_ACCMODE) == O_RDONLY && !(fi->flags & O_TRUNC) && cur_timeout(r) > 0;
	if (lazy) {
		pthread_mutex_lock(&r->mu);
		lazy = cdata_ok(n) && n->a_valid && (n->a.perm & S_IRUSR) && (n->cf || (n->a.perm & 0444) == 0444);
		pthread_mutex_unlock(&r->mu);
		if (!lazy)
			lazy = read_ahead_files(r, n);
	}
	struct sftpx_fh *xh = NULL;
	struct sftp_attrs xa;
	if (long_path(p)) {
		lazy = 0;
		rc = x_open(r, req, AS_ALWAYS, p, fi->flags & ~(O_CREAT | O_EXCL), 0, &xh, &xa);
	} else {
		rc = lazy ? 0 : sftp_open(r->cli, p, open_flags(r, fi->flags), NULL, &h);
		if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
			rc = refine_failure(r, p, NULL, 0, 0, rc);
		/* The login may not open it (root without capabilities, or
		 * another uid): the caller may (the host's kernel decides). */
		if (rc == -EACCES || rc == -EPERM) {
			int xr = x_open(r, req, AS_REFUSED, p, fi->flags & ~(O_CREAT | O_EXCL), 0, &xh, &xa);
			if (xr != -ENOTSUP)
				rc = xr;
		}
	}
	free(p);
	if (rc < 0)
		FAIL(rc);
	if (xh)
		note_attrs(r, n, &xa);
	if ((fi->flags & O_TRUNC) && !(fi->flags & O_APPEND) && cur_timeout(r) > 0) {
		pthread_mutex_lock(&r->mu);
		n->cvalid = 1; /* empty now, and what we write next */
		n->cgen = n->wgen;
		pthread_mutex_unlock(&r->mu);
	}
	struct sfile *f = file_new(n, h, fi->flags);
	if (!f) {
		if (h)
			sftp_close(r->cli, h);
		sftpx_hclose(xsb(r), xh);
		FAIL(-ENOMEM);
	}
	f->xh = xh;
	op_exit(r);
	fi->fh = (uintptr_t)f;
	/* Cached pages stay until sftpfs_invalidate() or a changed mtime/size
	 * (AUTO_INVAL_DATA); while a job runs they are dropped at open. */
	fi->keep_cache = node_timeout(r, n) > 0;
	if (fuse_reply_open(req, fi) < 0) {
		if ((h || xh) && op_enter(r) == 0) {
			if (h)
				sftp_close(r->cli, h);
			sftpx_hclose(xsb(r), xh);
			op_exit(r);
		}
		file_free(f);
	}
}

/* Serves [off, off+size) from f's window if it holds it; -1 if not. */
static ssize_t ra_take(struct sfile *f, uint64_t wgen, uint64_t off, size_t size, char *out)
{
	if (!f->ra_buf || f->ra_wgen != wgen || off < f->ra_off || off > f->ra_off + f->ra_len)
		return -1;
	size_t have = (size_t)(f->ra_off + f->ra_len - off);
	if (have < size && !f->ra_eof)
		return -1;
	size_t n = have < size ? have : size;
	memcpy(out, f->ra_buf + (off - f->ra_off), n);
	return (ssize_t)n;
}

/* A read through a handle opened without the server (sftpfs_open's lazy case):
 * answered from the kept content (0), or failed (< 0); 1 when the content
 * is no longer ours, after opening the real handle for sftpfs_read to use. */
static int read_kept(struct sftpfs *r, struct snode *n, struct sfile *f, size_t size, off_t off, fuse_req_t req)
{
	int on = cur_timeout(r) > 0;
	pthread_mutex_lock(&f->ra_mu); /* one lazy open per handle */
	pthread_mutex_lock(&r->mu);
	if (!f->h && on && cdata_ok(n)) {
		size_t o = (size_t)off < n->clen ? (size_t)off : n->clen;
		size_t k = n->clen - o < size ? n->clen - o : size;
		char *copy = malloc(k ? k : 1);
		if (copy)
			memcpy(copy, n->cdata + o, k);
		pthread_mutex_unlock(&r->mu);
		pthread_mutex_unlock(&f->ra_mu);
		if (!copy)
			return -ENOMEM;
		fuse_reply_buf(req, copy, k);
		free(copy);
		return 0;
	}
	pthread_mutex_unlock(&r->mu);
	int rc = 0;
	if (!f->h) {
		char *p = node_path(n, NULL, &rc);
		struct sftp_handle *h = NULL;
		if (p)
			rc = sftp_open(r->cli, p, SFTP_READ, NULL, &h);
		free(p);
		if (rc == 0)
			f->h = h;
	}
	pthread_mutex_unlock(&f->ra_mu);
	return rc < 0 ? rc : 1;
}

static void sftpfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	BEGIN(ino);
	struct sfile *f = (struct sfile *)(uintptr_t)fi->fh;
	if (f->xh) {
		char *xb = malloc(size ? size : 1);
		rc = xb ? sftpx_hread(xsb(r), f->xh, (uint64_t)off, xb, size) : -ENOMEM;
		op_exit(r);
		if (rc < 0)
			fuse_reply_err(req, -rc);
		else
			fuse_reply_buf(req, xb, (size_t)rc);
		free(xb);
		return;
	}
	if (f->dc)
		dc_materialize(r, f);
	drain_node(n); /* read-your-writes */
	if (!f->h) {
		rc = read_kept(r, n, f, size, off, req);
		if (rc <= 0) {
			op_exit(r);
			if (rc < 0)
				fuse_reply_err(req, -rc);
			return;
		}
	}
	char *buf = malloc(size ? size : 1);
	if (!buf)
		FAIL(-ENOMEM);
	pthread_mutex_lock(&r->mu);
	uint64_t wgen = n->wgen;
	/* Where the file ends, if we know: a short READ reaching it is the
	 * end, not asked again (grep: two round trips per file, not three). */
	uint64_t eof_at = n->a_valid && n->a_wgen == wgen && !n->pending && (n->a.flags & SFTP_ATTR_SIZE) &&
				  !idle_gate_busy(&r->gate) ? n->a.size : UINT64_MAX;
	pthread_mutex_unlock(&r->mu);
	size_t got = 0;
	uint64_t o = (uint64_t)off;
	pthread_mutex_lock(&f->ra_mu);
	while (f->ra_filling)
		pthread_cond_wait(&f->ra_cv, &f->ra_mu);
	ssize_t t = ra_take(f, wgen, o, size, buf);
	int seq = o && o == f->ra_next;
	f->ra_next = o + size;
	if (t >= 0) {
		pthread_mutex_unlock(&f->ra_mu);
		got = (size_t)t;
		rc = 0;
	} else if (seq) {
		/* Fetch a window from here; later reads (and the kernel's own
		 * concurrent readahead) are served from it. */
		size_t win = f->ra_win ? f->ra_win * 2 : SFTPFS_RA_MIN;
		if (win > SFTPFS_RA_MAX)
			win = SFTPFS_RA_MAX;
		if (win < size)
			win = size;
		f->ra_win = win;
		f->ra_filling = 1;
		pthread_mutex_unlock(&f->ra_mu);
		char *nb = malloc(win);
		size_t ngot = 0;
		rc = nb ? sftp_pread_range_eof(r->cli, f->h, o, nb, win, &ngot, 0, sftp_max_read(r->cli), eof_at)
			: -ENOMEM;
		pthread_mutex_lock(&f->ra_mu);
		if (rc == 0) {
			free(f->ra_buf);
			f->ra_buf = nb;
			f->ra_off = o;
			f->ra_len = ngot;
			f->ra_eof = ngot < win;
			f->ra_wgen = wgen;
			got = ngot < size ? ngot : size;
			memcpy(buf, nb, got);
		} else {
			free(nb);
		}
		f->ra_filling = 0;
		pthread_cond_broadcast(&f->ra_cv);
		pthread_mutex_unlock(&f->ra_mu);
	} else {
		f->ra_win = 0;
		pthread_mutex_unlock(&f->ra_mu);
		rc = sftp_pread_range_eof(r->cli, f->h, o, buf, size, &got, 0, 0, eof_at);
	}
	op_exit(r);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_buf(req, buf, got);
	free(buf);
}

static void sftpfs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	BEGIN(ino);
	struct sfile *f = (struct sfile *)(uintptr_t)fi->fh;
	if (f->xh) {
		/* Through the agent's file, answered when written (no
		 * write-behind: it is another channel than SFTP's). */
		size_t done = 0;
		rc = 0;
		while (done < size) {
			int k = sftpx_hwrite(xsb(r), f->xh, (uint64_t)off + done, buf + done, size - done);
			if (k <= 0) {
				rc = k < 0 ? k : -EIO;
				break;
			}
			done += (size_t)k;
		}
		pthread_mutex_lock(&r->mu);
		n->wgen++;
		n->a_valid = 0;
		cdata_drop(r, n);
		if (n->path)
			drop_parent_list(r, n->path);
		pthread_mutex_unlock(&r->mu);
		op_exit(r);
		if (done == 0 && rc < 0)
			fuse_reply_err(req, -rc);
		else
			fuse_reply_write(req, done);
		return;
	}
	if (f->dc && dc_write(r, f, buf, size, off) == 0) {
		op_exit(r);
		fuse_reply_write(req, size);
		return;
	}
	if (!f->h && !f->dc) {
		rc = dc_reopen(r, f);
		if (rc < 0)
			FAIL(rc);
	}
	struct wjob *j = malloc(sizeof(*j) + size);
	if (!j)
		FAIL(-ENOMEM);
	memset(j, 0, sizeof(*j));
	j->f = f;
	j->off = (uint64_t)off;
	j->len = size;
	memcpy(j->data, buf, size);
	/* Times set before this write must not be sent after it. */
	rc = apply_pend(r, n);
	if (rc < 0) {
		free(j);
		FAIL(rc);
	}
	int cached = cur_timeout(r) > 0;
	pthread_mutex_lock(&r->mu);
	/* Back-pressure: at most SFTPFS_WB_MAX bytes unacknowledged. */
	while (!r->dead && !f->werr && r->qbytes && r->qbytes + size > SFTPFS_WB_MAX)
		pthread_cond_wait(&r->done_cv, &r->mu);
	rc = r->dead ? -ENOTCONN : f->werr;
	if (rc == 0) {
		if (!f->written && n->path)
			drop_parent_list(r, n->path); /* its size there is stale now */
		/* While nothing else runs in the sandbox we know the size this
		 * write leaves (setattr answers from it instead of asking). */
		int track = n->a_valid && n->a_wgen == n->wgen && !f->append && cached;
		uint64_t wgen0 = n->wgen;
		wgen_bump(r, n);
		cdata_write(r, n, wgen0, (uint64_t)off, buf, size, !f->append && cached);
		if (track) {
			if (n->a.size < (uint64_t)off + size)
				n->a.size = (uint64_t)off + size;
			n->a.mtime = (uint32_t)time(NULL);
			n->a_wgen = n->wgen;
		}
		*r->jtail = j;
		r->jtail = &j->next;
		r->qbytes += size;
		f->pending++;
		n->pending++;
		n->unsent++;
		f->written = 1;
		pthread_cond_signal(&r->work_cv);
	}
	pthread_mutex_unlock(&r->mu);
	op_exit(r);
	if (rc < 0) {
		free(j);
		fuse_reply_err(req, -rc);
		return;
	}
	fuse_reply_write(req, size);
}

static void sftpfs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	BEGIN(ino);
	(void)n;
	struct sfile *f = (struct sfile *)(uintptr_t)fi->fh;
	/* close(2): every byte written is acknowledged by the server (in its
	 * kernel) before close returns, or close reports why not; so are the
	 * deferred mode and time changes; a deferred create is made with
	 * them, in one request. */
	int dcr = dc_commit(r, f, 1);
	rc = dcr == 1 ? settle_file(r, n, f) : dcr;
	if (f->written) {
		pthread_mutex_lock(&r->mu);
		if (n->path)
			drop_parent_list(r, n->path);
		pthread_mutex_unlock(&r->mu);
	}
	op_exit(r);
	fuse_reply_err(req, -rc);
	if (dcr < 0)
		dc_forget(r, n, ino);
}

static void sftpfs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)datasync;
	BEGIN(ino);
	(void)n;
	struct sfile *f = (struct sfile *)(uintptr_t)fi->fh;
	if (f->dc)
		dc_materialize(r, f); /* its own handle's fsync below */
	/* One wait for everything: send_pend returns once every write of n
	 * is on the wire, so the FSYNC goes right behind them (the server
	 * handles a handle's requests in order) and its answer comes after
	 * theirs; a failed write is reported before the FSYNC's answer. */
	int prc = send_pend(r, n);
	int frc = f->h ? sftp_fsync(r->cli, f->h) : 0;
	if (frc == -ENOTSUP)
		frc = 0; /* nothing better the protocol offers */
	rc = drain_file(r, f);
	if (rc == 0)
		rc = prc ? prc : frc;
	if (rc == 0 && f->xh)
		rc = sftpx_hsync(xsb(r), f->xh);
	op_exit(r);
	fuse_reply_err(req, -rc);
}

static void sftpfs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct snode *n = node_of(ino);
	struct sftpfs *r = n->r;
	struct sfile *f = (struct sfile *)(uintptr_t)fi->fh;
	if (op_enter(r) == 0) {
		/* A create still deferred (no flush came: the flush made it)
		 * is made now; a failure is logged. */
		dc_commit(r, f, 0);
		/* Changes still deferred go through this handle before it closes
		 * (a flush normally sent them already). */
		apply_pend(r, n);
		pthread_mutex_lock(&r->mu);
		/* A setattr deferred while apply_pend was sending (cf was still
		 * f) is sent too, not dropped with cf: dropping a chmod 600 that
		 * followed a chmod 0 left the file unreadable (test_permissions). */
		while (n->cf == f && n->pend.flags) {
			pthread_mutex_unlock(&r->mu);
			apply_pend(r, n);
			pthread_mutex_lock(&r->mu);
		}
		if (n->cf == f)
			n->cf = NULL;
		pthread_mutex_unlock(&r->mu);
		int err = drain_file(r, f);
		/* Nothing is left to report: the flush did (writes acknowledged,
		 * changes applied); the server's answer to CLOSE is not waited
		 * for. After an error, wait, so the handle is surely gone. */
		if (f->xh)
			sftpx_hclose(xsb(r), f->xh); /* the agent's file */
		else if (!f->h)
			; /* opened without the server */
		else if (err)
			sftp_close(r->cli, f->h);
		else
			sftp_close_nowait(r->cli, f->h);
		op_exit(r);
	} else {
		/* the client is gone; the channel's close released the handle */
		pthread_mutex_lock(&r->mu);
		if (f->dc) {
			dc_log(r, n->path, -ENOTCONN);
			dc_done(r, f);
		}
		pthread_mutex_unlock(&r->mu);
		drain_file(r, f);
		free(f->xh); /* the agent closes it when it ends */
	}
	file_free(f);
	fuse_reply_err(req, 0);
}

static int sdent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct sdent *)a)->name, ((const struct sdent *)b)->name);
}

/* A listing read by sftp_list_dirs as an sdir (ls's entries taken). */
static int sdir_from(struct sftp_listing *ls, struct sdir **out)
{
	*out = NULL;
	if (ls->rc < 0)
		return ls->rc;
	struct sdir *d = calloc(1, sizeof(*d));
	if (d && ls->n && !(d->e = calloc(ls->n, sizeof(*d->e)))) {
		free(d);
		d = NULL;
	}
	if (!d) {
		sftp_dirents_free(ls->ents, ls->n);
		ls->ents = NULL;
		ls->n = 0;
		return -ENOMEM;
	}
	for (size_t i = 0; i < ls->n; i++) {
		d->e[d->n].name = ls->ents[i].name;
		ls->ents[i].name = NULL;
		d->e[d->n].a = ls->ents[i].attrs;
		sftpx_longname_nlink(&d->e[d->n++].a, ls->ents[i].longname);
	}
	sftp_dirents_free(ls->ents, ls->n);
	ls->ents = NULL;
	ls->n = 0;
	if (d->n > 1)
		qsort(d->e, d->n, sizeof(*d->e), sdent_cmp);
	d->refs = 1;
	*out = d;
	return 0;
}

/* Reads the whole listing of path (READDIR brings every entry's lstat):
 * OPENDIR, then two READDIRs at once, the CLOSE not waited for. */
static int list_add(void *ud, const char *name, const struct sftp_attrs *a)
{
	struct sdir *d = ud;
	if (!(d->n & (d->n + 1)) || !d->e) {   /* grows at 1, 3, 7, ... entries */
		struct sdent *ne = realloc(d->e, sizeof(*d->e) * (d->n + 1) * 2);
		if (!ne)
			return -ENOMEM;
		d->e = ne;
	}
	if (!(d->e[d->n].name = strdup(name)))
		return -ENOMEM;
	d->e[d->n++].a = *a;
	return 0;
}

/* A listing of a path SFTP cannot carry (long_path), by the sandbox's agent. */
static int fetch_list_x(struct sftpfs *r, const char *path, struct sdir **out)
{
	*out = NULL;
	struct sdir *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->refs = 1;
	int rc = use_x(r) ? sftpx_list(xsb(r), path, list_add, d) : -ENAMETOOLONG;
	if (x_fallback(r, rc))
		rc = -ENAMETOOLONG;
	if (rc < 0) {
		sdir_free(d);
		return rc;
	}
	if (d->n > 1)
		qsort(d->e, d->n, sizeof(*d->e), sdent_cmp);
	*out = d;
	return 0;
}

static int fetch_list(struct sftpfs *r, const char *path, struct sdir **out)
{
	if (long_list(path) && use_x(r))
		return fetch_list_x(r, path, out);
	if (long_path(path))
		return -ENAMETOOLONG;
	struct sftp_listing ls = {.path = path};
	int rc = sftp_list_dirs(r->cli, &ls, 1);
	return rc < 0 ? rc : sdir_from(&ls, out);
}

/* Under r->mu: queues the subdirectories of path (listing d) not cached
 * for the prefetcher, once per listing (l is path's entry); they are
 * `level` levels below the listing in use. */
static void queue_kids(struct sftpfs *r, struct lent *l, const struct sdir *d, int level)
{
	if (!r->pf_on || !l || l->kids || l->d != d)
		return;
	l->kids = 1;
	char *path = strdup(l->path); /* lc_get below may not move l, but be safe */
	if (!path)
		return;
	int any = 0;
	for (size_t i = 0; i < d->n && r->pfn < SFTPFS_PF_QUEUE; i++) {
		const struct sdent *e = &d->e[i];
		if (!(e->a.flags & SFTP_ATTR_PERMISSIONS) || !S_ISDIR(e->a.perm) || !strcmp(e->name, ".") ||
		    !strcmp(e->name, ".."))
			continue;
		char *cp = join(path, e->name);
		struct lent *c = cp && !long_list(cp) ? lc_get(r, cp, 1) : NULL;   /* not SFTP's: get_list */
		if (!c || c->d || c->loading) {
			free(cp);
			continue;
		}
		c->loading = 1;
		c->ahead = level;
		r->pfq[r->pfn++] = cp;
		any = 1;
	}
	free(path);
	if (any)
		pthread_cond_signal(&r->pf_cv);
}

/* Under r->mu: waits while path's listing is being prefetched. */
static void wait_loading(struct sftpfs *r, const char *path)
{
	struct lent *l;
	while (!r->stop && (l = lc_get(r, path, 0)) && l->loading)
		pthread_cond_wait(&r->list_cv, &r->mu);
}

/* The prefetcher: reads queued directories in batches and caches their
 * listings, unless the directory changed through us or the caches were
 * dropped (lgen) since the batch was sent. */
static void *prefetcher(void *arg)
{
	struct sftpfs *r = arg;
	pthread_mutex_lock(&r->mu);
	while (!r->stop) {
		if (!r->pfn) {
			pthread_cond_wait(&r->pf_cv, &r->mu);
			continue;
		}
		size_t k = r->pfn < SFTPFS_PF_BATCH ? r->pfn : SFTPFS_PF_BATCH;
		char *paths[SFTPFS_PF_BATCH];
		memcpy(paths, r->pfq, k * sizeof(*paths));
		memmove(r->pfq, r->pfq + k, (r->pfn - k) * sizeof(*paths));
		r->pfn -= k;
		uint64_t gen = r->lgen;
		int64_t start = now_ms();
		int dcs = r->ndc > 0;
		pthread_mutex_unlock(&r->mu);
		if (dcs)
			dc_flush_all(r, NULL);
		/* Read while a job runs, a listing may miss what it does next. */
		int on0 = cur_timeout(r) > 0;
		struct sftp_listing ls[SFTPFS_PF_BATCH];
		struct sdir *d[SFTPFS_PF_BATCH];
		memset(ls, 0, sizeof(ls));
		for (size_t i = 0; i < k; i++)
			ls[i].path = paths[i];
		if (sftp_list_dirs(r->cli, ls, k) < 0)
			for (size_t i = 0; i < k; i++)
				ls[i].rc = -ENOMEM;
		for (size_t i = 0; i < k; i++)
			sdir_from(&ls[i], &d[i]);
		int on = on0 && cur_timeout(r) > 0;
		pthread_mutex_lock(&r->mu);
		for (size_t i = 0; i < k; i++) {
			struct lent *l = lc_get(r, paths[i], 0);
			if (l)
				l->loading = 0;
			if (l && d[i] && on && gen == r->lgen && !l->d && l->changed_ms < start) {
				lent_clean(l);
				l->d = d[i];
				l->ms = start;
				d[i] = NULL;
				if (l->ahead < SFTPFS_PF_DEPTH)
					queue_kids(r, l, l->d, l->ahead + 1);
			}
			sdir_put(d[i]);
			free(paths[i]);
		}
		pthread_cond_broadcast(&r->list_cv);
	}
	/* Stopped: what is still queued will not be read. */
	for (size_t i = 0; i < r->pfn; i++) {
		struct lent *l = lc_get(r, r->pfq[i], 0);
		if (l)
			l->loading = 0;
		free(r->pfq[i]);
	}
	r->pfn = 0;
	pthread_cond_broadcast(&r->list_cv);
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

/* The listing of n, from the cache or the server; the caller owns a ref. */
static int get_list(struct sftpfs *r, struct snode *n, struct sdir **out)
{
	double t = cur_timeout(r);
	pthread_mutex_lock(&r->mu);
	if (n->path && t > 0)
		wait_loading(r, n->path);
	int64_t start = now_ms();
	struct lent *l = n->path && t > 0 ? lc_get(r, n->path, 0) : NULL;
	struct sdir *d = l && l->d && !l->dirty && start - l->ms <= (int64_t)(t * 1000) ? l->d : NULL;
	if (d) {
		d->refs++;
		queue_kids(r, l, d, 1);
	}
	char *p = !d && n->path ? strdup(n->path) : NULL;
	int gone = !d && !n->path;
	pthread_mutex_unlock(&r->mu);
	if (d) {
		*out = d;
		return 0;
	}
	if (gone)
		return -ENOENT;
	if (!p)
		return -ENOMEM;
	dc_flush_all(r, NULL); /* a listing that misses them would stay */
	int rc = fetch_list(r, p, &d);
	if (rc < 0) {
		free(p);
		return rc;
	}
	pthread_mutex_lock(&r->mu);
	/* Cache it unless the directory changed through us meanwhile. */
	if (t > 0) {
		if (r->nlists >= SFTPFS_LISTS_MAX)
			lc_drop_all(r);
		l = lc_get(r, p, 1);
		if (l && l->changed_ms < start && (!l->d || l->ms < start)) {
			lent_drop_list(l);
			l->d = d;
			l->ms = start;
			d->refs++;
			queue_kids(r, l, d, 1);
		}
	}
	pthread_mutex_unlock(&r->mu);
	free(p);
	*out = d;
	return 0;
}

static void sftpfs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	BEGIN(ino);
	struct sdir *d = NULL;
	/* The whole listing is read (or taken from the cache) here: offsets
	 * stay stable, and READDIR's attributes feed readdirplus. */
	rc = get_list(r, n, &d);
	if (rc < 0)
		FAIL(rc);
	op_exit(r);
	fi->fh = (uintptr_t)d;
	if (cur_timeout(r) > 0) {
		/* The kernel keeps the listing until the directory changes
		 * through us, its mtime changes, or sftpfs_invalidate(). */
		fi->cache_readdir = 1;
		fi->keep_cache = 1;
	}
	if (fuse_reply_open(req, fi) < 0) {
		pthread_mutex_lock(&r->mu);
		sdir_put(d);
		pthread_mutex_unlock(&r->mu);
	}
}

/* The listing a READDIR without a handle reads: a fresh one at offset 0
 * (kept for the READDIRs that continue it), else the one it continues. */
static int cont_list(struct sftpfs *r, struct snode *n, off_t off, struct sdir **out)
{
	if (off > 0) {
		pthread_mutex_lock(&r->mu);
		struct sdir *d = NULL;
		for (int i = 0; i < SFTPFS_CONT && !d; i++)
			if (r->cont[i].path && n->path && !strcmp(r->cont[i].path, n->path))
				d = r->cont[i].d;
		if (d)
			d->refs++;
		pthread_mutex_unlock(&r->mu);
		if (d) {
			*out = d;
			return 0;
		}
	}
	struct sdir *d;
	int rc = get_list(r, n, &d);
	if (rc < 0)
		return rc;
	char *p = n->path ? strdup(n->path) : NULL;
	pthread_mutex_lock(&r->mu);
	if (p) {
		int slot = -1;
		for (int i = 0; i < SFTPFS_CONT && slot < 0; i++)
			if (r->cont[i].path && !strcmp(r->cont[i].path, p))
				slot = i;
		for (int i = 0; i < SFTPFS_CONT && slot < 0; i++)
			if (!r->cont[i].path)
				slot = i;
		if (slot < 0)
			slot = (int)(r->cont_hand++ % SFTPFS_CONT);
		free(r->cont[slot].path);
		sdir_put(r->cont[slot].d);
		r->cont[slot].path = p;
		r->cont[slot].d = d;
		d->refs++;
	}
	pthread_mutex_unlock(&r->mu);
	*out = d;
	return 0;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi, int plus)
{
	BEGIN(ino);
	struct sdir *d = (struct sdir *)(uintptr_t)fi->fh, *own = NULL;
	if (!d) {
		rc = cont_list(r, n, off, &own);
		if (rc < 0)
			FAIL(rc);
		d = own;
	}
	char *buf = malloc(size);
	char *dpath = node_path(n, NULL, &rc);
	if (!buf || !dpath) {
		free(buf);
		if (own) {
			pthread_mutex_lock(&r->mu);
			sdir_put(own);
			pthread_mutex_unlock(&r->mu);
		}
		FAIL(dpath ? -ENOMEM : rc);
	}
	size_t used = 0;
	double t = cur_timeout(r);
	for (size_t i = (size_t)off; i < d->n; i++) {
		struct sdent *de = &d->e[i];
		int dot = !strcmp(de->name, ".") || !strcmp(de->name, "..");
		size_t sz;
		if (!plus) {
			struct stat st;
			to_stat(&de->a, dot ? (de->name[1] == 0 ? n->sino : 1) : (hash_child(dpath, de->name) | 2), &st);
			sz = fuse_add_direntry(req, buf + used, size - used, de->name, &st, (off_t)(i + 1));
			if (sz > size - used)
				break;
			used += sz;
			continue;
		}
		struct fuse_entry_param e;
		memset(&e, 0, sizeof(e));
		if (dot) {
			/* not looked up: the kernel skips "." and ".." here */
			to_stat(&de->a, de->name[1] == 0 ? n->sino : 1, &e.attr);
		} else {
			char *cp = join(dpath, de->name);
			if (!cp)
				break;
			drain_path(r, cp);
			if (make_entry(r, cp, &de->a, &e) < 0) {
				free(cp);
				break;
			}
			e.attr_timeout = e.entry_timeout = t;
			free(cp);
		}
		sz = fuse_add_direntry_plus(req, buf + used, size - used, de->name, &e, (off_t)(i + 1));
		if (sz > size - used) {
			if (!dot)
				forget_entry(r, e.ino);
			break;
		}
		used += sz;
	}
	free(dpath);
	if (own) {
		pthread_mutex_lock(&r->mu);
		sdir_put(own);
		pthread_mutex_unlock(&r->mu);
	}
	op_exit(r);
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void sftpfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, 0);
}

static void sftpfs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, 1);
}

static void sftpfs_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct sftpfs *r = node_of(ino)->r;
	pthread_mutex_lock(&r->mu);
	sdir_put((struct sdir *)(uintptr_t)fi->fh);
	pthread_mutex_unlock(&r->mu);
	fuse_reply_err(req, 0);
}

static void sftpfs_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)datasync;
	(void)fi;
	/* SFTP has no directory fsync and its other changes are answered when
	 * made; unlinks sent without waiting are answered now. */
	BEGIN(ino);
	out_settle(r);
	pthread_mutex_lock(&r->mu);
	rc = r->out_err;
	r->out_err = 0;
	pthread_mutex_unlock(&r->mu);
	op_exit(r);
	fuse_reply_err(req, -rc);
}

static void sftpfs_statfs(fuse_req_t req, fuse_ino_t ino)
{
	BEGIN(ino);
	/* Of the file's own mount: root/ may span several (a sandbox's "/"
	 * is a tmpfs with its binds on it); an orphan asks for the root's. */
	char *p = node_path(n, NULL, &rc);
	struct sftp_vfsinfo v;
	rc = sftp_statvfs(r->cli, p ? p : r->root, &v);
	free(p);
	op_exit(r);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	struct statvfs sv;
	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = v.bsize;
	sv.f_frsize = v.frsize;
	sv.f_blocks = v.blocks;
	sv.f_bfree = v.bfree;
	sv.f_bavail = v.bavail;
	sv.f_files = v.files;
	sv.f_ffree = v.ffree;
	sv.f_favail = v.favail;
	sv.f_fsid = v.fsid;
	sv.f_flag = v.flag;
	sv.f_namemax = v.namemax;
	fuse_reply_statfs(req, &sv);
}

const struct fuse_lowlevel_ops sftpfs_ops = {
	.lookup = sftpfs_lookup,
	.forget = sftpfs_forget,
	.forget_multi = sftpfs_forget_multi,
	.getattr = sftpfs_getattr,
	.setattr = sftpfs_setattr,
	.readlink = sftpfs_readlink,
	.mknod = sftpfs_mknod,
	.mkdir = sftpfs_mkdir,
	.unlink = sftpfs_unlink,
	.rmdir = sftpfs_rmdir,
	.symlink = sftpfs_symlink,
	.rename = sftpfs_rename,
	.link = sftpfs_link,
	.access = sftpfs_access,
	.open = sftpfs_open,
	.read = sftpfs_read,
	.write = sftpfs_write,
	.flush = sftpfs_flush,
	.release = sftpfs_release,
	.fsync = sftpfs_fsync,
	.opendir = sftpfs_opendir,
	.readdir = sftpfs_readdir,
	.readdirplus = sftpfs_readdirplus,
	.releasedir = sftpfs_releasedir,
	.fsyncdir = sftpfs_fsyncdir,
	.statfs = sftpfs_statfs,
	.create = sftpfs_create,
};
