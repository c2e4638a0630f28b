/*
 * sftpmount.c - mounts fs/root/sftpfs.c's operations on their own, for tests
 * and benchmarks of root/ over SFTP without the rest of seerfs.
 *
 *   sftpmount HOST PORT USER KEY KNOWN_HOSTS REMOTE_DIR MOUNTPOINT [fuse args]
 *
 * The mount's root (FUSE_ROOT_ID) is REMOTE_DIR's node: a minimal
 * dispatcher rewrites inode 1 to it and forwards everything else to
 * sftpfs_ops unchanged, as fs/ll.c does for REMOTE_INO_FLAG inodes.
 * SIGUSR1 calls sftpfs_invalidate() (what fs/ll.c does when a job starts);
 * SIGTERM/SIGINT unmount.  Environment: SFTPMOUNT_TIMEOUT (cache seconds,
 * default 60), SFTPMOUNT_THREADS (default 64).  Runs in the foreground.
 *
 * Build (ASan + UBSan):
 *   gcc -std=gnu11 -Wall -Wextra -Werror -g -O1 -fsanitize=address,undefined \
 *       -I. tests/unit/sftpmount.c fs/root/sftpfs.c core/lib/sshconn.c core/lib/sftp.c \
 *       core/lib/util.c $(pkg-config --cflags --libs fuse3 libssh2) -lpthread \
 *       -o build/sftpmount
 */
#include "fs/fs.h"
#include "core/lib/sftp.h"
#include "core/lib/sshconn.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What the handlers need, passed as the session's userdata. */
struct harness {
	struct seer_fs fs;
	struct sftpfs *r;
	fuse_ino_t root;
};

/* fs/root/sftpfs.c's hook for this harness (not in fs.h). */
void sftpfs_set_root_alias(struct sftpfs *r, fuse_ino_t ino);

/* pass.c's symbol, which fs.h's backend_of() names; never used here. */
const struct fuse_lowlevel_ops pass_ops;

static fuse_ino_t map(fuse_req_t req, fuse_ino_t ino)
{
	struct harness *h = fuse_req_userdata(req);
	return ino == FUSE_ROOT_ID ? h->root : ino;
}

static void h_init(void *ud, struct fuse_conn_info *conn)
{
	(void)ud;
	/* As pass_init_conn, less locks (the kernel keeps them locally) and
	 * splice (sftpfs copies buffers anyway). */
	unsigned want = FUSE_CAP_AUTO_INVAL_DATA | FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO |
			FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_ASYNC_READ | FUSE_CAP_ASYNC_DIO | FUSE_CAP_ATOMIC_O_TRUNC;
	conn->want |= want & conn->capable;
	conn->want &= ~(FUSE_CAP_HANDLE_KILLPRIV | FUSE_CAP_DONT_MASK | FUSE_CAP_CACHE_SYMLINKS | FUSE_CAP_POSIX_ACL |
			FUSE_CAP_EXPORT_SUPPORT | FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS |
			FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
	conn->max_background = 64;
	conn->congestion_threshold = 48;
	conn->time_gran = 1000000000; /* SFTP times are whole seconds */
	conn->max_write = 1 << 20;
	conn->max_readahead = 1 << 20;
}

#define O sftpfs_ops
static void h_lookup(fuse_req_t q, fuse_ino_t p, const char *n) { O.lookup(q, map(q, p), n); }
static void h_getattr(fuse_req_t q, fuse_ino_t i, struct fuse_file_info *f) { O.getattr(q, map(q, i), f); }
static void h_setattr(fuse_req_t q, fuse_ino_t i, struct stat *a, int s, struct fuse_file_info *f)
{
	O.setattr(q, map(q, i), a, s, f);
}
static void h_readlink(fuse_req_t q, fuse_ino_t i) { O.readlink(q, map(q, i)); }
static void h_mknod(fuse_req_t q, fuse_ino_t p, const char *n, mode_t m, dev_t d) { O.mknod(q, map(q, p), n, m, d); }
static void h_mkdir(fuse_req_t q, fuse_ino_t p, const char *n, mode_t m) { O.mkdir(q, map(q, p), n, m); }
static void h_unlink(fuse_req_t q, fuse_ino_t p, const char *n) { O.unlink(q, map(q, p), n); }
static void h_rmdir(fuse_req_t q, fuse_ino_t p, const char *n) { O.rmdir(q, map(q, p), n); }
static void h_symlink(fuse_req_t q, const char *l, fuse_ino_t p, const char *n) { O.symlink(q, l, map(q, p), n); }
static void h_rename(fuse_req_t q, fuse_ino_t p, const char *n, fuse_ino_t np, const char *nn, unsigned f)
{
	O.rename(q, map(q, p), n, map(q, np), nn, f);
}
static void h_link(fuse_req_t q, fuse_ino_t i, fuse_ino_t np, const char *nn) { O.link(q, map(q, i), map(q, np), nn); }
static void h_open(fuse_req_t q, fuse_ino_t i, struct fuse_file_info *f) { O.open(q, map(q, i), f); }
static void h_read(fuse_req_t q, fuse_ino_t i, size_t s, off_t o, struct fuse_file_info *f)
{
	O.read(q, map(q, i), s, o, f);
}
static void h_write(fuse_req_t q, fuse_ino_t i, const char *b, size_t s, off_t o, struct fuse_file_info *f)
{
	O.write(q, map(q, i), b, s, o, f);
}
static void h_flush(fuse_req_t q, fuse_ino_t i, struct fuse_file_info *f) { O.flush(q, map(q, i), f); }
static void h_release(fuse_req_t q, fuse_ino_t i, struct fuse_file_info *f) { O.release(q, map(q, i), f); }
static void h_fsync(fuse_req_t q, fuse_ino_t i, int d, struct fuse_file_info *f) { O.fsync(q, map(q, i), d, f); }
static void h_opendir(fuse_req_t q, fuse_ino_t i, struct fuse_file_info *f) { O.opendir(q, map(q, i), f); }
static void h_readdir(fuse_req_t q, fuse_ino_t i, size_t s, off_t o, struct fuse_file_info *f)
{
	O.readdir(q, map(q, i), s, o, f);
}
static void h_readdirplus(fuse_req_t q, fuse_ino_t i, size_t s, off_t o, struct fuse_file_info *f)
{
	O.readdirplus(q, map(q, i), s, o, f);
}
static void h_releasedir(fuse_req_t q, fuse_ino_t i, struct fuse_file_info *f) { O.releasedir(q, map(q, i), f); }
static void h_fsyncdir(fuse_req_t q, fuse_ino_t i, int d, struct fuse_file_info *f) { O.fsyncdir(q, map(q, i), d, f); }
static void h_statfs(fuse_req_t q, fuse_ino_t i) { O.statfs(q, map(q, i)); }
static void h_create(fuse_req_t q, fuse_ino_t p, const char *n, mode_t m, struct fuse_file_info *f)
{
	O.create(q, map(q, p), n, m, f);
}
static void h_forget(fuse_req_t q, fuse_ino_t i, uint64_t n)
{
	if (i == FUSE_ROOT_ID)
		fuse_reply_none(q);
	else
		O.forget(q, i, n);
}
static void h_forget_multi(fuse_req_t q, size_t c, struct fuse_forget_data *f)
{
	for (size_t k = 0; k < c; k++)
		if (f[k].ino != FUSE_ROOT_ID)
			sftpfs_forget_one(f[k].ino, f[k].nlookup);
	fuse_reply_none(q);
}
#undef O

static const struct fuse_lowlevel_ops harness_ops = {
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
	.write = h_write,
	.flush = h_flush,
	.release = h_release,
	.fsync = h_fsync,
	.opendir = h_opendir,
	.readdir = h_readdir,
	.readdirplus = h_readdirplus,
	.releasedir = h_releasedir,
	.fsyncdir = h_fsyncdir,
	.statfs = h_statfs,
	.create = h_create,
};

/* Signals arrive here, not in a FUSE worker: notifications must not be
 * sent from a thread the kernel may be waiting for. */
static void *sig_thread(void *arg)
{
	struct harness *h = arg;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	for (;;) {
		int sig = 0;
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGUSR1) {
			sftpfs_invalidate(h->r);
			fprintf(stderr, "sftpmount: invalidated\n");
			continue;
		}
		fuse_session_exit(h->fs.se);
		/* wake the loop: a harmless request on the mount */
		return NULL;
	}
}

int main(int argc, char **argv)
{
	if (argc < 8) {
		fprintf(stderr, "usage: %s HOST PORT USER KEY KNOWN_HOSTS REMOTE_DIR MOUNTPOINT [fuse args]\n", argv[0]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	/* Blocked before any thread starts (the SSH I/O thread included), so
	 * only sig_thread receives them. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	struct ssh_conn_opts o;
	memset(&o, 0, sizeof(o));
	o.host = argv[1];
	o.port = atoi(argv[2]);
	o.user = argv[3];
	o.identity_file = argv[4];
	o.known_hosts = argv[5];
	o.timeout_ms = 10000;
	o.keepalive_s = 5;
	char err[SSH_ERRMSG_LEN];
	struct ssh_conn *c = NULL;
	struct sftp_client *cli = NULL;
	int rc = ssh_conn_open(&o, &c, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "sftpmount: connect: %s: %s\n", ssh_errno_name(-rc), err);
		return 1;
	}
	rc = sftp_client_open(c, &cli, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "sftpmount: sftp: %s: %s\n", ssh_errno_name(-rc), err);
		ssh_conn_close(c);
		return 1;
	}

	struct harness h;
	memset(&h, 0, sizeof(h));
	const char *t = getenv("SFTPMOUNT_TIMEOUT");
	h.fs.pass_timeout = t ? atof(t) : 60.0;
	if (h.fs.pass_timeout <= 0)
		h.fs.pass_timeout = 1e-9; /* "no caching" without falling back to the default */
	h.r = sftpfs_new(&h.fs, NULL, cli, argv[6]);
	if (!h.r) {
		fprintf(stderr, "sftpmount: %s: not a directory on the server\n", argv[6]);
		sftp_client_close(cli);
		ssh_conn_close(c);
		return 1;
	}
	struct fuse_entry_param e;
	rc = sftpfs_root_entry(h.r, &e);
	if (rc < 0) {
		fprintf(stderr, "sftpmount: root: %s\n", strerror(-rc));
		return 1;
	}
	h.root = e.ino;
	sftpfs_set_root_alias(h.r, FUSE_ROOT_ID);

	char *fargv[64];
	int fargc = 0;
	fargv[fargc++] = argv[0];
	for (int i = 8; i < argc && fargc < 62; i++)
		fargv[fargc++] = argv[i];
	struct fuse_args args = FUSE_ARGS_INIT(fargc, fargv);
	struct fuse_session *se = fuse_session_new(&args, &harness_ops, sizeof(harness_ops), &h);
	if (!se)
		return 1;
	h.fs.se = se;
	if (fuse_session_mount(se, argv[7]) != 0) {
		fuse_session_destroy(se);
		return 1;
	}
	pthread_t st;
	pthread_create(&st, NULL, sig_thread, &h);
	pthread_detach(st);

	struct fuse_loop_config *lc = fuse_loop_cfg_create();
	const char *th = getenv("SFTPMOUNT_THREADS");
	fuse_loop_cfg_set_max_threads(lc, th ? (unsigned)atoi(th) : 64);
	fuse_loop_cfg_set_idle_threads(lc, 16);
	fprintf(stderr, "sftpmount: ready\n");
	rc = fuse_session_loop_mt(se, lc);
	fuse_loop_cfg_destroy(lc);
	fuse_session_unmount(se);
	fuse_session_destroy(se);
	sftpfs_kill(h.r);
	sftp_client_close(cli);
	ssh_conn_close(c);
	return rc ? 1 : 0;
}
