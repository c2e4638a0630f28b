/*
 * passmount.c - mounts fs/root/pass.c alone, for its tests and benchmarks.
 *
 *   passmount SRCDIR MOUNTPOINT [-o OPTIONS] [-d] [-s]
 *
 * SRCDIR plays the sandbox's "/" (give /proc/PID/root to serve a running
 * sandbox's tree exactly as seerfs does). A minimal dispatcher maps
 * FUSE_ROOT_ID to the pass root node and forwards every op to pass_ops,
 * as fs/ll.c does for root/ (tests/drivers/harness.c, shared with
 * sftpmount.c).
 *
 * Options (besides the usual FUSE mount options):
 *   mode=busy     timeouts 0, as while a sandbox runs a job (default)
 *   mode=idle     long timeouts, as while a sandbox is idle (benchmarks)
 *   mode=auto     busy while SRCDIR/proc lists a process besides PID 1:
 *                 the local provider's busy() for a bubblewrap sandbox
 *   timeout=SEC   the idle timeout (fs->pass_timeout; 0: no caching, default 30)
 *   fd_budget=N   O_PATH fds kept before evicting (tests eviction)
 *   writeback, nosplice, threads=N
 *   ack=FILE      after each SIGUSR1 (= pass_invalidate, what fs/ll.c does
 *                 when a job starts) write the count of them to FILE
 * SIGUSR2 calls pass_kill (later ops fail with ENOTCONN).
 *
 * Build: see the top of fs/root/pass.c's tests; sandbox_log is stubbed here.
 */
#include "fs/fs.h"
#include "tests/drivers/harness.h"

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

struct passmount {
	struct harness hh;
	struct seer_fs fs;
	struct pass_fs *p;
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
	{"mode=%s", offsetof(struct passmount, mode), 0},
	{"ack=%s", offsetof(struct passmount, ack), 0},
	{"timeout=%lf", offsetof(struct passmount, timeout), 0},
	{"fd_budget=%lu", offsetof(struct passmount, fd_budget), 0},
	{"threads=%d", offsetof(struct passmount, threads), 0},
	{"writeback", offsetof(struct passmount, writeback), 1},
	{"nosplice", offsetof(struct passmount, nosplice), 1},
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
	struct passmount *h = arg;
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

static void pm_init(struct harness *hh, struct fuse_conn_info *conn)
{
	struct passmount *h = hh->owner;
	pass_init_conn(conn, &h->fs);
}

/* SIGUSR1: a job starts (pass_invalidate); SIGUSR2: the sandbox stops. */
static void pm_signal(struct harness *hh, int sig)
{
	struct passmount *h = hh->owner;
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

int main(int argc, char *argv[])
{
	struct passmount h = {
		.hh = {.name = "passmount", .be = &pass_ops, .forget_one = pass_forget_one, .init = pm_init,
		       .on_signal = pm_signal},
		.timeout = -1, .threads = 64, .siglock = PTHREAD_MUTEX_INITIALIZER,
	};
	h.hh.owner = &h;
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

	/* SIGUSR1/2 go to pm_signal only: block them before any thread. */
	sigemptyset(&h.hh.sigs);
	sigaddset(&h.hh.sigs, SIGUSR1);
	sigaddset(&h.hh.sigs, SIGUSR2);
	harness_block_signals(&h.hh);

	struct fuse_session *se = harness_session(&h.hh, &args);
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
	h.hh.root = pass_make_toplevel(h.p);
	/* Absolute symlink rewrites point into the mount, as fs/ll.c's do
	 * into MOUNT/NAME/root. */
	char *rp = realpath(mnt, NULL);
	pass_set_root_path(h.p, rp);
	free(rp);

	int ret = 1;
	if (fuse_set_signal_handlers(se) != 0)
		goto out;
	/* SIGTERM/SIGINT end the loop through libfuse's own handlers. */
	ret = harness_run(&h.hh, mnt, single, (unsigned)h.threads, 0);
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
