/*
 * pass_int.h - what the files of root/'s fd backend share (not for anyone
 * else: fs/fs.h is its public side). The backend is split along its
 * seams: pass.c (the overview at its top, owners, lifetime and every FUSE
 * operation), pass_node.c (the node table, the fd budget and the depth of
 * a symlink for fs/root/link.c), pass_worker.c (the idle/busy state,
 * sweeping what was cached, and the worker thread that runs sweeps and
 * waits for locks).
 */
#ifndef SEER_PASS_INT_H
#define SEER_PASS_INT_H

#include "fs/fs.h"
#include "core/provider.h"
#include "core/sandbox.h"
#include "fs/root/cache.h"
#include "fs/root/link.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/fsuid.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(fuse_ino_t) >= sizeof(uintptr_t), "inode numbers hold pointers");

/* Negative entries given a long timeout and remembered for expiry; past
 * this the set is swept early rather than grown. */
#define PASS_MAX_LONG_ENTRIES (1u << 20)
/* Directories a node may have a dentry in that we track for the depth of
 * symlinks; more than this and the node's depth counts as unknown. */
#define PASS_PARENTS 4
/* Older names of one node kept for the next sweep; past this a sweep is
 * asked for, which empties them. */
#define PASS_NODE_ENTS 16
/* Nodes visited when bounding a symlink's depth; past this, depth 0. */
#define PASS_DEPTH_BUDGET 256
/* getdents64 buffer of an open directory. */
#define PASS_DIRBUF 32768
/* Directory streams kept between READDIRs (see struct pass_fs). */
#define PASS_DSTREAMS 16
/* Lock retry interval bounds of the worker, in ms. */
#define PASS_LOCK_POLL_MIN_MS 1
#define PASS_LOCK_POLL_MAX_MS 16

struct pass_fs;
struct pnode;

struct pkey {
	dev_t dev;
	ino_t ino;
};

/* What tells two inodes with one (st_dev, st_ino) apart: a number is only
 * reused after the inode is gone, which a held O_PATH fd prevents, but an
 * evicted node holds none. */
struct pident {
	mode_t type;
	int has_btime;
	int64_t btime_sec;
	uint32_t btime_nsec;
};

/* One fd per (inode, POSIX lock owner): its OFD locks are the owner's. */
struct lockowner {
	struct lockowner *next;
	uint64_t owner;
	int fd;
	int acc;                       /* O_RDONLY / O_WRONLY / O_RDWR */
};

/* What the kernel's page cache of a file corresponds to (for keep_cache). */
struct stamp {
	struct timespec mtim, ctim;
	off_t size;
	uint64_t epoch;                /* the idle gate's epoch when taken */
	int idle;                      /* taken while idle */
	int valid;
};

struct pnode {
	struct pass_fs *p;
	struct pnode *hnext;           /* hash chain; under p->lock */
	struct pnode *cprev, *cnext;   /* CLOCK ring of evictable fds; under p->lock */
	dev_t dev;
	ino_t ino;
	mode_t type;                   /* S_IFMT bits */
	struct pident id;
	atomic_int stale;              /* its inode is gone; off the table */
	atomic_int fd;                 /* O_PATH (or -1 while evicted) */
	atomic_int pins;               /* users of fd right now */
	atomic_int used;               /* CLOCK reference bit */
	atomic_int attr_long;          /* attrs given a long timeout since the last sweep */
	uint64_t serial;               /* tells this node from a later one at its address;
	                                * set before the node is on the table, never changed */
	/* under p->lock: */
	uint64_t swept;                /* the last sweep that pinned it (sweep()) */
	uint64_t nlookup;
	unsigned refs;                 /* nodes whose hint_parent is this one, temporary holds */
	unsigned nopen;
	struct pnode *hint_parent;     /* where to reopen an evicted fd */
	char *hint_name;
	/* Entries of this node the kernel may hold with a long timeout, for
	 * sweep(): (hint_parent, hint_name) when ent_long, and older names
	 * (hard links, earlier hints) on ents. Kept on the node rather than
	 * in one set: they die with it (the kernel forgot the node, so it
	 * holds none of them), and recording one costs no allocation. */
	unsigned char ent_long;
	unsigned nents;
	struct pname *ents;
	char *link_text;               /* a symlink's own text once known: stat reads nothing */
	struct pkey parents[PASS_PARENTS];
	unsigned char nparents, parents_overflow;
	atomic_int synthetic;          /* -1 unknown, 0 no, 1 procfs-like: direct_io */
	struct lockowner *owners;
	struct stamp stamp;
};

/* One name a node had: (parent, name), parent an ino given to the kernel
 * and the serial its node had (the id may name another node later). */
struct pname {
	struct pname *next;
	fuse_ino_t parent;
	char *name;
	uint64_t serial;
};

/* An open file or directory (fi->fh). */
struct pfile {
	struct pfile *prev, *next;     /* p->files; under p->lock */
	struct pnode *n;
	int fd;                        /* -1 after pass_kill */
	int flags;
	/* directories */
	pthread_mutex_t dlock;
	int is_dir;
	off_t pos;                     /* offset of the next unread entry */
	size_t len, cur;
	int eof;
	char *buf;
};

/* A lock request that must wait: retried by the worker. */
struct lockwait {
	struct lockwait *next;
	fuse_req_t req;
	int fd;                        /* dup: same open file description */
	int is_flock;
	int op;                        /* flock */
	struct flock fl;               /* POSIX (OFD) */
	struct pfile *f;
};

struct pass_fs {
	struct seer_fs *fs;
	struct sandbox *sb;
	const struct seer_provider *prov;
	int (*busy_fn)(void *arg);     /* tests; else prov->busy(sb) */
	void *busy_arg;
	atomic_int refs;               /* caller, every node, the worker */
	atomic_int dead;
	atomic_long active;            /* ops running right now */
	mode_t umask;                  /* the daemon's, read at pass_new */
	/* Owners (see "owners" below): the sandbox's ids on the host, the
	 * mounting user, who stands for the sandbox's root, and the daemon's
	 * own ids, which a new file gets before it is given away. ranged:
	 * the sandbox maps more than the mounting user (a root seerfs). */
	struct seer_idmap ids;
	uid_t muid, duid;
	gid_t mgid, dgid;
	int ranged;
	char *root_path;               /* root/ on the host (MOUNT/NAME/root), or NULL */
	int toplevel;                  /* root is the mount's FUSE_ROOT_ID (passmount) */
	int killed;                    /* pass_kill dropped the caller's reference */
	atomic_int no_openat2;

	pthread_mutex_t lock;          /* nodes, table, files, CLOCK ring */
	pthread_cond_t drained;        /* active reached 0 after dead */
	struct pnode **tab;
	size_t tabsize, nnodes;
	struct pnode *root;
	struct pnode *stale;           /* nodes off the table (see node_get), by hnext */
	uint64_t serials;              /* the last node serial given */
	uint64_t sweeps;               /* the last sweep's number */
	struct pnode *hand;            /* CLOCK hand */
	size_t nfds, fd_budget;
	struct pfile *files;
	int warned_fds;
	/* Listings in progress without OPENDIR (fs/ll.c refuses it): a
	 * directory read in several READDIRs keeps its fd and position
	 * here between them; each holds a ref on its node. */
	struct pfile *ds[PASS_DSTREAMS];
	unsigned ds_hand;

	struct idle_gate gate;         /* idle/busy (fs/root/cache.c) */
	struct neg_set negs;           /* negative entries given a long timeout */

	pthread_mutex_t wlock;         /* worker */
	pthread_cond_t wcond;
	int worker_on, worker_stop, sweep_req;
	struct lockwait *waits;
};

/* pass.c: small helpers, owners, lifetime, replies */
fuse_ino_t ino_of(struct pass_fs *p, struct pnode *n);
int stat_id(int fd, struct stat *st, struct pident *id);
int same_id(const struct pident *a, const struct pident *b);
int dbg(struct pass_fs *p);
void pass_put(struct pass_fs *p, int n);

/* pass_node.c: the node table and fd budget, the depth of a symlink */
struct pnode *tab_find(struct pass_fs *p, dev_t dev, ino_t ino);
int tab_insert(struct pass_fs *p, struct pnode *n);
void ring_del(struct pass_fs *p, struct pnode *n);
void owners_close(struct pnode *n);
void names_free(struct pname *e);
void node_free_mem(struct pnode *n);
int node_maybe_free(struct pass_fs *p, struct pnode *n);
int open_child(struct pass_fs *p, int dfd, const char *name, int flags, mode_t mode);
void node_unpin(struct pnode *n);
int node_fd(struct pass_fs *p, struct pnode *n);
void add_parent(struct pnode *n, struct pnode *dir);
int hint_is(const struct pnode *n, const struct pnode *dir, const char *name);
void set_hint(struct pass_fs *p, struct pnode *n, struct pnode *dir, char **name, int *freed);
int node_get(struct pass_fs *p, struct pnode *dir, const char *name, int fd, const struct stat *st,
	     const struct pident *id, int long_entry, struct pnode **out);
void forget_node(struct pnode *n, uint64_t count);
int rewrite_link(struct pass_fs *p, struct pnode *n, const char *t, char *out, size_t outsz);

/* pass_worker.c: idle/busy, sweeping, the worker and its lock waits */
int ask_busy(void *arg);
void state_get(struct pass_fs *p, struct idle_state *c);
int record_entry(struct pass_fs *p, struct pnode *dir, const char *name);
void sweep(struct pass_fs *p);
int lock_again(int r);
void request_sweep(struct pass_fs *p);
int queue_wait(struct pass_fs *p, struct lockwait *w);

#endif
