/*
 * sftpmount.c - mounts fs/root/sftpfs.c's operations on their own, for tests
 * and benchmarks of root/ over SFTP without the rest of seerfs.
 *
 *   sftpmount HOST PORT USER KEY KNOWN_HOSTS REMOTE_DIR MOUNTPOINT [fuse args]
 *
 * The mount's root (FUSE_ROOT_ID) is REMOTE_DIR's node: a minimal
 * dispatcher (tests/drivers/harness.c, shared with passmount.c) rewrites
 * inode 1 to it and forwards everything else to sftpfs_ops unchanged, as
 * fs/ll.c does for REMOTE_INO_FLAG inodes.
 * SIGUSR1 calls sftpfs_invalidate() (what fs/ll.c does when a job starts);
 * SIGTERM/SIGINT unmount.  Environment: SFTPMOUNT_TIMEOUT (cache seconds,
 * default 60), SFTPMOUNT_THREADS (default 64).  Runs in the foreground.
 *
 * Built by tests/meson.build (build-asan's is the ASan/UBSan one).
 */
#include "fs/fs.h"
#include "tests/drivers/harness.h"
#include "core/lib/sftp.h"
#include "core/lib/sshconn.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sftpmount {
	struct harness hh;
	struct seer_fs fs;
	struct sftpfs *r;
};

/* fs/root/sftpfs.c's hook for this harness (not in fs.h). */
void sftpfs_set_root_alias(struct sftpfs *r, fuse_ino_t ino);

/* pass.c's symbol, which fs.h's backend_of() names; never used here. */
const struct fuse_lowlevel_ops pass_ops;

static void sm_init(struct harness *hh, struct fuse_conn_info *conn)
{
	(void)hh;
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

/* SIGUSR1: a job starts (sftpfs_invalidate); SIGTERM/SIGINT: unmount. */
static void sm_signal(struct harness *hh, int sig)
{
	struct sftpmount *h = hh->owner;
	if (sig == SIGUSR1) {
		sftpfs_invalidate(h->r);
		fprintf(stderr, "sftpmount: invalidated\n");
		return;
	}
	fuse_session_exit(hh->se);
}

int main(int argc, char **argv)
{
	if (argc < 8) {
		fprintf(stderr, "usage: %s HOST PORT USER KEY KNOWN_HOSTS REMOTE_DIR MOUNTPOINT [fuse args]\n", argv[0]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	struct sftpmount h;
	memset(&h, 0, sizeof(h));
	h.hh = (struct harness){.name = "sftpmount", .be = &sftpfs_ops, .forget_one = sftpfs_forget_one,
				.init = sm_init, .on_signal = sm_signal, .owner = &h};
	/* Blocked before any thread starts (the SSH I/O thread included), so
	 * only sm_signal receives them. */
	sigemptyset(&h.hh.sigs);
	sigaddset(&h.hh.sigs, SIGUSR1);
	sigaddset(&h.hh.sigs, SIGTERM);
	sigaddset(&h.hh.sigs, SIGINT);
	harness_block_signals(&h.hh);
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
	h.hh.root = e.ino;
	sftpfs_set_root_alias(h.r, FUSE_ROOT_ID);

	char *fargv[64];
	int fargc = 0;
	fargv[fargc++] = argv[0];
	for (int i = 8; i < argc && fargc < 62; i++)
		fargv[fargc++] = argv[i];
	struct fuse_args args = FUSE_ARGS_INIT(fargc, fargv);
	struct fuse_session *se = harness_session(&h.hh, &args);
	if (!se)
		return 1;
	h.fs.se = se;
	const char *th = getenv("SFTPMOUNT_THREADS");
	rc = harness_run(&h.hh, argv[7], 0, th ? (unsigned)atoi(th) : 64, 16);
	fuse_session_destroy(se);
	sftpfs_kill(h.r);
	sftp_client_close(cli);
	ssh_conn_close(c);
	return rc ? 1 : 0;
}
