/*
 * passmount.c - mounts fs/root/pass.c alone, for its tests and benchmarks.
 *
 *   passmount SRCDIR MOUNTPOINT [-o OPTIONS] [-d] [-s]
 *
 * SRCDIR plays the sandbox's "/" (give /proc/PID/root to serve a running
 * sandbox's tree exactly as seerfs does). A minimal dispatcher maps
 * FUSE_ROOT_ID to the pass root node and forwards every op to pass_ops,
 * as fs/ll.c does for root/.
 *
 * Options (besides the usual FUSE mount options):
 *   mode=busy     timeouts 0, as while a sandbox runs a job (default)
 *   mode=idle     long timeouts, as while a sandbox is idle (benchmarks)
 *   mode=auto     busy while SRCDIR/proc lists a process besides PID 1:
 *                 the local provider's busy() for a bubblewrap sandbox
 *   timeout=SEC   the idle timeout (fs->pass_timeout)
 *   fd_budget=N   O_PATH fds kept before evicting (tests eviction)
 *   writeback, nosplice, threads=N
 *   ack=FILE      after each SIGUSR1 (= pass_invalidate, what fs/ll.c does
 *                 when a job starts) write the count of them to FILE
 * SIGUSR2 calls pass_kill (later ops fail with ENOTCONN).
 *
 * Build: see the top of fs/root/pass.c's tests; sandbox_log is stubbed here.
 */
#include "fs/fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Declared in fs/fs.h by the report's proposal; repeated here so that the
 * harness builds against the header as it is. */
void pass_init_conn(struct fuse_conn_info *conn, struct seer_fs *fs);
void pass_forget_one(fuse_ino_t ino, uint64_t nlookup);
void pass_destroy(struct pass_fs *p);
fuse_ino_t pass_make_toplevel(struct pass_fs *p);
void pass_set_busy_fn(struct pass_fs *p, int (*fn)(void *arg), void *arg);
void pass_set_fd_budget(struct pass_fs *p, size_t n);
void pass_set_root_path(struct pass_fs *p, const char *path);

/* fs/root/pass.c logs through the sandbox's log; there is no sandbox here. */
__attribute__((weak)) void sandbox_log(struct sandbox *sb, const char *fmt, ...)
{
	(void)sb;
	(void)fmt;
}

struct harness {
	struct seer_fs fs;
	struct pass_fs *p;
	fuse_ino_t root;
	char *mode;
	char *ack;
	int procfd;             /* SRCDIR/proc, mode=auto */
	int writeback, nosplice, threads;
	double timeout;
	unsigned long fd_budget;
	unsigned long acks;
	int killed;
	pthread_mutex_t siglock;        /* a signal's work vs. the final pass_destroy */
};

static const struct fuse_opt opts[] = {
	{"mode=%s", offsetof(struct harness, mode), 0},
	{"ack=%s", offsetof(struct harness, ack), 0},
	{"timeout=%lf", offsetof(struct harness, timeout), 0},
	{"fd_budget=%lu", offsetof(struct harness, fd_budget), 0},
	{"threads=%d", offsetof(struct harness, threads), 0},
	{"writeback", offsetof(struct harness, writeback), 1},
	{"nosplice", offsetof(struct harness, nosplice), 1},
	FUSE_OPT_END,
};

static int busy_always(void *arg)
{
	(void)arg;
	return 1;
}

static int busy_never(void *arg)
{
	(void)arg;
	return 0;
}

/* Busy while the sandbox's pid namespace has more than its init. */
static int busy_procs(void *arg)
{
	struct harness *h = arg;
	int fd = openat(h->procfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return 1;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return 1;
	}
	int n = 0;
	for (struct dirent *e; (e = readdir(d));)
		if (e->d_name[0] >= '1' && e->d_name[0] <= '9')
			n++;
	closedir(d);
	return n > 1;
}

#define H(req) ((struct harness *)fuse_req_userdata(req))
#define MAP(req, ino) ((ino) == FUSE_ROOT_ID ? H(req)->root : (ino))

static void h_init(void *userdata, struct fuse_conn_info *conn)
{
	struct harness *h = userdata;
	pass_init_conn(conn, &h->fs);
}

static void h_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	pass_ops.lookup(req, MAP(req, parent), name);
}

static void h_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	if (ino != FUSE_ROOT_ID)
		pass_forget_one(ino, nlookup);
	fuse_reply_none(req);
}

static void h_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		if (forgets[i].ino != FUSE_ROOT_ID)
			pass_forget_one(forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void h_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	pass_ops.getattr(req, MAP(req, ino), fi);
}

static void h_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
	pass_ops.setattr(req, MAP(req, ino), attr, to_set, fi);
}

static void h_readlink(fuse_req_t req, fuse_ino_t ino)
{
	pass_ops.readlink(req, MAP(req, ino));
}

static void h_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	pass_ops.mknod(req, MAP(req, parent), name, mode, rdev);
}

static void h_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	pass_ops.mkdir(req, MAP(req, parent), name, mode);
}

static void h_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	pass_ops.unlink(req, MAP(req, parent), name);
}

static void h_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	pass_ops.rmdir(req, MAP(req, parent), name);
}

static void h_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	pass_ops.symlink(req, link, MAP(req, parent), name);
}

static void h_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname,
		     unsigned int flags)
{
	pass_ops.rename(req, MAP(req, parent), name, MAP(req, newparent), newname, flags);
}

static void h_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	pass_ops.link(req, MAP(req, ino), MAP(req, newparent), newname);
}

static void h_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	pass_ops.open(req, MAP(req, ino), fi);
}

static void h_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	pass_ops.read(req, MAP(req, ino), size, off, fi);
}

static void h_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *bufv, off_t off, struct fuse_file_info *fi)
{
	pass_ops.write_buf(req, MAP(req, ino), bufv, off, fi);
}

static void h_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	pass_ops.flush(req, MAP(req, ino), fi);
}

static void h_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	pass_ops.release(req, MAP(req, ino), fi);
}

static void h_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	pass_ops.fsync(req, MAP(req, ino), datasync, fi);
}

static void h_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	pass_ops.opendir(req, MAP(req, ino), fi);
}

static void h_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	pass_ops.readdir(req, MAP(req, ino), size, off, fi);
}

static void h_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	pass_ops.readdirplus(req, MAP(req, ino), size, off, fi);
}

static void h_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	pass_ops.releasedir(req, MAP(req, ino), fi);
}

static void h_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	pass_ops.fsyncdir(req, MAP(req, ino), datasync, fi);
}

static void h_statfs(fuse_req_t req, fuse_ino_t ino)
{
	pass_ops.statfs(req, MAP(req, ino));
}

static void h_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	pass_ops.access(req, MAP(req, ino), mask);
}

static void h_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags)
{
	pass_ops.setxattr(req, MAP(req, ino), name, value, size, flags);
}

static void h_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	pass_ops.getxattr(req, MAP(req, ino), name, size);
}

static void h_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	pass_ops.listxattr(req, MAP(req, ino), size);
}

static void h_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	pass_ops.removexattr(req, MAP(req, ino), name);
}

static void h_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
	pass_ops.create(req, MAP(req, parent), name, mode, fi);
}

static void h_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock)
{
	pass_ops.getlk(req, MAP(req, ino), fi, lock);
}

static void h_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock, int sleep)
{
	pass_ops.setlk(req, MAP(req, ino), fi, lock, sleep);
}

static void h_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
{
	pass_ops.flock(req, MAP(req, ino), fi, op);
}

static void h_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, struct fuse_file_info *fi)
{
	pass_ops.fallocate(req, MAP(req, ino), mode, offset, length, fi);
}

static void h_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, struct fuse_file_info *fi_in,
			      fuse_ino_t ino_out, off_t off_out, struct fuse_file_info *fi_out, size_t len, int flags)
{
	pass_ops.copy_file_range(req, MAP(req, ino_in), off_in, fi_in, MAP(req, ino_out), off_out, fi_out, len, flags);
}

static void h_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi)
{
	pass_ops.lseek(req, MAP(req, ino), off, whence, fi);
}

static const struct fuse_lowlevel_ops h_ops = {
	.init = h_init,
	.lookup = h_lookup,
	.forget = h_forget,
	.forget_multi = h_forget_multi,
	.getattr = h_getattr,
	.setattr = h_setattr,
	.readlink = h_readlink,
	.mknod = h_mknod,
	.mkdir = h_mkdir,
	.unlink = h_unlink,
	.rmdir = h_rmdir,
	.symlink = h_symlink,
	.rename = h_rename,
	.link = h_link,
	.open = h_open,
	.read = h_read,
	.write_buf = h_write_buf,
	.flush = h_flush,
	.release = h_release,
	.fsync = h_fsync,
	.opendir = h_opendir,
	.readdir = h_readdir,
	.readdirplus = h_readdirplus,
	.releasedir = h_releasedir,
	.fsyncdir = h_fsyncdir,
	.statfs = h_statfs,
	.access = h_access,
	.setxattr = h_setxattr,
	.getxattr = h_getxattr,
	.listxattr = h_listxattr,
	.removexattr = h_removexattr,
	.create = h_create,
	.getlk = h_getlk,
	.setlk = h_setlk,
	.flock = h_flock,
	.fallocate = h_fallocate,
	.copy_file_range = h_copy_file_range,
	.lseek = h_lseek,
};

/* SIGUSR1: a job starts (pass_invalidate); SIGUSR2: the sandbox stops. */
static void *signal_main(void *arg)
{
	struct harness *h = arg;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	for (;;) {
		int sig;
		if (sigwait(&set, &sig) != 0)
			continue;
		pthread_mutex_lock(&h->siglock);
		if (sig == SIGUSR2) {
			if (!__atomic_exchange_n(&h->killed, 1, __ATOMIC_SEQ_CST))
				pass_kill(h->p);
		} else if (h->p) {
			/* After SIGUSR2 there is nothing to invalidate, but the
			 * sender still waits for its acknowledgement. */
			if (!__atomic_load_n(&h->killed, __ATOMIC_SEQ_CST))
				pass_invalidate(h->p);
			h->acks++;
			if (h->ack) {
				char tmp[4096], num[32];
				snprintf(tmp, sizeof(tmp), "%s.tmp", h->ack);
				int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
				if (fd >= 0) {
					int l = snprintf(num, sizeof(num), "%lu\n", h->acks);
					if (write(fd, num, (size_t)l) != l)
						perror("passmount: ack");
					close(fd);
					rename(tmp, h->ack);
				}
			}
		}
		pthread_mutex_unlock(&h->siglock);
	}
	return NULL;
}

int main(int argc, char *argv[])
{
	struct harness h = {.timeout = 0, .threads = 64, .siglock = PTHREAD_MUTEX_INITIALIZER};
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	const char *src = NULL, *mnt = NULL;
	int debug = 0, single = 0;
	fuse_opt_add_arg(&args, argv[0]);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-o") && i + 1 < argc) {
			fuse_opt_add_arg(&args, "-o");
			fuse_opt_add_arg(&args, argv[++i]);
		} else if (!strcmp(argv[i], "-d")) {
			debug = 1;
			fuse_opt_add_arg(&args, "-odebug");
		} else if (!strcmp(argv[i], "-s")) {
			single = 1;
		} else if (!src) {
			src = argv[i];
		} else if (!mnt) {
			mnt = argv[i];
		} else {
			fprintf(stderr, "passmount: unexpected %s\n", argv[i]);
			return 2;
		}
	}
	if (!src || !mnt) {
		fprintf(stderr, "usage: passmount SRCDIR MOUNTPOINT [-o mode=busy|idle|auto,timeout=S,ack=F,...] [-d] [-s]\n");
		return 2;
	}
	if (fuse_opt_parse(&args, &h, opts, NULL) < 0)
		return 2;
	fuse_opt_add_arg(&args, "-ofsname=passmount,subtype=seerfs-pass");

	int rootfd = open(src, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0) {
		fprintf(stderr, "passmount: %s: %s\n", src, strerror(errno));
		return 1;
	}
	h.procfd = openat(rootfd, "proc", O_PATH | O_DIRECTORY | O_CLOEXEC);
	h.fs.debug = debug;
	h.fs.pass_timeout = h.timeout;
	h.fs.writeback = h.writeback;
	h.fs.no_splice = h.nosplice;

	/* SIGUSR1/2 go to signal_main only: block them before any thread. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	struct fuse_session *se = fuse_session_new(&args, &h_ops, sizeof(h_ops), &h);
	if (!se)
		return 1;
	h.fs.se = se;
	h.p = pass_new(&h.fs, NULL, rootfd);
	if (!h.p) {
		fprintf(stderr, "passmount: cannot serve %s\n", src);
		return 1;
	}
	const char *mode = h.mode ? h.mode : "busy";
	if (!strcmp(mode, "idle"))
		pass_set_busy_fn(h.p, busy_never, &h);
	else if (!strcmp(mode, "auto") && h.procfd >= 0)
		pass_set_busy_fn(h.p, busy_procs, &h);
	else
		pass_set_busy_fn(h.p, busy_always, &h);
	if (h.fd_budget)
		pass_set_fd_budget(h.p, h.fd_budget);
	h.root = pass_make_toplevel(h.p);
	/* Absolute symlink rewrites point into the mount, as fs/ll.c's do
	 * into MOUNT/NAME/root. */
	char *rp = realpath(mnt, NULL);
	pass_set_root_path(h.p, rp);
	free(rp);

	int ret = 1;
	if (fuse_set_signal_handlers(se) != 0)
		goto out;
	if (fuse_session_mount(se, mnt) != 0)
		goto out_sig;
	pthread_t sigt;
	pthread_create(&sigt, NULL, signal_main, &h);
	pthread_detach(sigt);
	if (single) {
		ret = fuse_session_loop(se);
	} else {
		struct fuse_loop_config *cfg = fuse_loop_cfg_create();
		fuse_loop_cfg_set_max_threads(cfg, (unsigned)h.threads);
		ret = fuse_session_loop_mt(se, cfg);
		fuse_loop_cfg_destroy(cfg);
	}
	fuse_session_unmount(se);
out_sig:
	fuse_remove_signal_handlers(se);
out:
	/* The root node's permanent lookup keeps h.p alive even after a
	 * SIGUSR2 pass_kill; the session is over, free it all. */
	pthread_mutex_lock(&h.siglock);
	__atomic_store_n(&h.killed, 1, __ATOMIC_SEQ_CST);
	pass_destroy(h.p);
	h.p = NULL;
	fuse_session_destroy(se);
	if (h.procfd >= 0)
		close(h.procfd);
	free(h.mode);
	free(h.ack);
	fuse_opt_free_args(&args);
	return ret ? 1 : 0;
}
