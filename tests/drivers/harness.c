/*
 * harness.c - the dispatcher, signal thread and main loop the standalone
 * root/ harnesses share (see harness.h).
 */
#include "tests/drivers/harness.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define H(req) ((struct harness *)fuse_req_userdata(req))
#define BE(req) (H(req)->be)

/* The backend's own inode for what the kernel calls ino. */
static fuse_ino_t map(fuse_req_t req, fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? H(req)->root : ino;
}

static void h_init(void *userdata, struct fuse_conn_info *conn)
{
	struct harness *h = userdata;
	if (h->init)
		h->init(h, conn);
}

/* The root is the backend's permanently: the kernel's lookups of
 * FUSE_ROOT_ID are not the backend's to count. */
static void h_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	if (ino != FUSE_ROOT_ID)
		H(req)->forget_one(ino, nlookup);
	fuse_reply_none(req);
}

static void h_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		if (forgets[i].ino != FUSE_ROOT_ID)
			H(req)->forget_one(forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void h_lookup(fuse_req_t q, fuse_ino_t p, const char *n) { BE(q)->lookup(q, map(q, p), n); }
static void h_getattr(fuse_req_t q, fuse_ino_t i, struct fuse_file_info *f) { BE(q)->getattr(q, map(q, i), f); }
static void h_setattr(fuse_req_t q, fuse_ino_t i, struct stat *a, int s, struct fuse_file_info *f)
{
	BE(q)->setattr(q, map(q, i), a, s, f);
}
static void h_readlink(fuse_req_t q, fuse_ino_t i) { BE(q)->readlink(q, map(q, i)); }
static void h_mknod(fuse_req_t q, fuse_ino_t p, const char *n, mode_t m, dev_t d)
{
	BE(q)->mknod(q, map(q, p), n, m, d);
}
static void h_mkdir(fuse_req_t q, fuse_ino_t p, const char *n, mode_t m) { BE(q)->mkdir(q, map(q, p), n, m); }
static void h_unlink(fuse_req_t q, fuse_ino_t p, const char *n) { BE(q)->unlink(q, map(q, p), n); }
static void h_rmdir(fuse_req_t q, fuse_ino_t p, const char *n) { BE(q)->rmdir(q, map(q, p), n); }
static void h_symlink(fuse_req_t q, const char *l, fuse_ino_t p, const char *n)
{
	BE(q)->symlink(q, l, map(q, p), n);
}
static void h_rename(fuse_req_t q, fuse_ino_t p, const char *n, fuse_ino_t np, const char *nn, unsigned f)
{
	BE(q)->rename(q, map(q, p), n, map(q, np), nn, f);
}
static void h_link(fuse_req_t q, fuse_ino_t i, fuse_ino_t np, const char *nn)
{
	BE(q)->link(q, map(q, i), map(q, np), nn);
}
static void h_open(fuse_req_t q, fuse_ino_t i, struct fuse_file_info *f) { BE(q)->open(q, map(q, i), f); }
static void h_read(fuse_req_t q, fuse_ino_t i, size_t s, off_t o, struct fuse_file_info *f) { BE(q)->read(q, map(q, i), s, o, f); }
static void h_write(fuse_req_t q, fuse_ino_t i, const char *b, size_t s, off_t o, struct fuse_file_info *f)
{
	BE(q)->write(q, map(q, i), b, s, o, f);
}
static void h_write_buf(fuse_req_t q, fuse_ino_t i, struct fuse_bufvec *b, off_t o, struct fuse_file_info *f)
{
	BE(q)->write_buf(q, map(q, i), b, o, f);
}
static void h_flush(fuse_req_t q, fuse_ino_t i, struct fuse_file_info *f) { BE(q)->flush(q, map(q, i), f); }
static void h_release(fuse_req_t q, fuse_ino_t i, struct fuse_file_info *f) { BE(q)->release(q, map(q, i), f); }
static void h_fsync(fuse_req_t q, fuse_ino_t i, int d, struct fuse_file_info *f) { BE(q)->fsync(q, map(q, i), d, f); }
static void h_opendir(fuse_req_t q, fuse_ino_t i, struct fuse_file_info *f) { BE(q)->opendir(q, map(q, i), f); }
static void h_readdir(fuse_req_t q, fuse_ino_t i, size_t s, off_t o, struct fuse_file_info *f)
{
	BE(q)->readdir(q, map(q, i), s, o, f);
}
static void h_readdirplus(fuse_req_t q, fuse_ino_t i, size_t s, off_t o, struct fuse_file_info *f)
{
	BE(q)->readdirplus(q, map(q, i), s, o, f);
}
static void h_releasedir(fuse_req_t q, fuse_ino_t i, struct fuse_file_info *f) { BE(q)->releasedir(q, map(q, i), f); }
static void h_fsyncdir(fuse_req_t q, fuse_ino_t i, int d, struct fuse_file_info *f) { BE(q)->fsyncdir(q, map(q, i), d, f); }
static void h_statfs(fuse_req_t q, fuse_ino_t i) { BE(q)->statfs(q, map(q, i)); }
static void h_access(fuse_req_t q, fuse_ino_t i, int m) { BE(q)->access(q, map(q, i), m); }
static void h_setxattr(fuse_req_t q, fuse_ino_t i, const char *n, const char *v, size_t s, int f)
{
	BE(q)->setxattr(q, map(q, i), n, v, s, f);
}
static void h_getxattr(fuse_req_t q, fuse_ino_t i, const char *n, size_t s) { BE(q)->getxattr(q, map(q, i), n, s); }
static void h_listxattr(fuse_req_t q, fuse_ino_t i, size_t s) { BE(q)->listxattr(q, map(q, i), s); }
static void h_removexattr(fuse_req_t q, fuse_ino_t i, const char *n) { BE(q)->removexattr(q, map(q, i), n); }
static void h_create(fuse_req_t q, fuse_ino_t p, const char *n, mode_t m, struct fuse_file_info *f)
{
	BE(q)->create(q, map(q, p), n, m, f);
}
static void h_getlk(fuse_req_t q, fuse_ino_t i, struct fuse_file_info *f, struct flock *l) { BE(q)->getlk(q, map(q, i), f, l); }
static void h_setlk(fuse_req_t q, fuse_ino_t i, struct fuse_file_info *f, struct flock *l, int s)
{
	BE(q)->setlk(q, map(q, i), f, l, s);
}
static void h_flock(fuse_req_t q, fuse_ino_t i, struct fuse_file_info *f, int op) { BE(q)->flock(q, map(q, i), f, op); }
static void h_fallocate(fuse_req_t q, fuse_ino_t i, int m, off_t o, off_t l, struct fuse_file_info *f)
{
	BE(q)->fallocate(q, map(q, i), m, o, l, f);
}
static void h_copy_file_range(fuse_req_t q, fuse_ino_t ii, off_t oi, struct fuse_file_info *fi, fuse_ino_t io, off_t oo, struct fuse_file_info *fo,
			      size_t len, int flags)
{
	BE(q)->copy_file_range(q, map(q, ii), oi, fi, map(q, io), oo, fo, len, flags);
}
static void h_lseek(fuse_req_t q, fuse_ino_t i, off_t o, int w, struct fuse_file_info *f) { BE(q)->lseek(q, map(q, i), o, w, f); }

struct fuse_session *harness_session(struct harness *h, struct fuse_args *args)
{
	const struct fuse_lowlevel_ops *b = h->be;
	/* Only the ops the backend has: libfuse answers the others (ENOSYS,
	 * or locally for locks), as it would for the backend itself. */
#define OP(x) .x = b->x ? h_##x : NULL
	struct fuse_lowlevel_ops ops = {
		.init = h_init,
		.forget = h_forget,
		.forget_multi = h_forget_multi,
		OP(lookup), OP(getattr), OP(setattr), OP(readlink), OP(mknod), OP(mkdir), OP(unlink),
		OP(rmdir), OP(symlink), OP(rename), OP(link), OP(open), OP(read), OP(write), OP(write_buf),
		OP(flush), OP(release), OP(fsync), OP(opendir), OP(readdir), OP(readdirplus), OP(releasedir),
		OP(fsyncdir), OP(statfs), OP(access), OP(setxattr), OP(getxattr), OP(listxattr),
		OP(removexattr), OP(create), OP(getlk), OP(setlk), OP(flock), OP(fallocate),
		OP(copy_file_range), OP(lseek),
	};
#undef OP
	h->se = fuse_session_new(args, &ops, sizeof(ops), h);
	return h->se;
}

void harness_block_signals(struct harness *h)
{
	pthread_sigmask(SIG_BLOCK, &h->sigs, NULL);
}

static void *signal_main(void *arg)
{
	struct harness *h = arg;
	for (;;) {
		int sig = 0;
		if (sigwait(&h->sigs, &sig) == 0)
			h->on_signal(h, sig);
	}
	return NULL;
}

int harness_run(struct harness *h, const char *mnt, int single, unsigned max_threads, int idle_threads)
{
	if (fuse_session_mount(h->se, mnt) != 0)
		return -1;
	pthread_t st;
	if (pthread_create(&st, NULL, signal_main, h) == 0)
		pthread_detach(st);
	fprintf(stderr, "%s: ready\n", h->name);
	int r;
	if (single) {
		r = fuse_session_loop(h->se);
	} else {
		struct fuse_loop_config *lc = fuse_loop_cfg_create();
		fuse_loop_cfg_set_max_threads(lc, max_threads);
		if (idle_threads > 0)
			fuse_loop_cfg_set_idle_threads(lc, (unsigned)idle_threads);
		r = fuse_session_loop_mt(h->se, lc);
		fuse_loop_cfg_destroy(lc);
	}
	fuse_session_unmount(h->se);
	return r;
}
