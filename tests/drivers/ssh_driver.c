/*
 * ssh_driver.c - command-line driver for core/lib/sshconn, core/lib/sftp and
 * core/lib/sshexec, used by tests/integration/test_ssh_unit.py against a real
 * OpenSSH server (no mocks).
 *
 * Usage:
 *   ssh_driver [options] HOST PORT USER KEY KNOWN_HOSTS COMMAND [ARGS...]
 * KEY "-" means: authenticate with ssh-agent only.
 * Options:
 *   --timeout MS      per-operation timeout (default 30000)
 *   --depth N         requests in flight for pipelined transfers
 *   --chunk BYTES     bytes per request for pipelined transfers
 *   --throttle-ms MS  sleep after each chunk delivered by `get` (fault tests)
 *   --sftp-exec CMD   SFTP over an exec channel running CMD (an SFTP server
 *                     binary) instead of the "sftp" subsystem
 *   --agent           also try ssh-agent
 *   --keepalive S     keepalive interval in seconds (-1: off)
 * Commands:
 *   connect | exts
 *   put LOCAL REMOTE | get REMOTE LOCAL          (streaming, pipelined)
 *   put-range LOCAL REMOTE | get-range REMOTE LOCAL (buffer, pipelined)
 *   stat P | lstat P | statvfs P | realpath P | readlink P | ls DIR
 *   rename A B | rename-over A B | hardlink OLD NEW | symlink TARGET LINK
 *   mkdir P | rmdir P | rm P | fsync P
 *   exec CMD          stdin is forwarded; exits with the remote status
 *   bench-write REMOTE MIB | bench-read REMOTE
 *   stress DIR THREADS ITERS   concurrent mixed requests, verified
 *   idle-stat SECONDS P        stay idle, then stat (keepalive test)
 * When an operation times out the driver aborts the connection, as a
 * provider would before reconnecting, so cleanup does not wait again.
 * Exit status: 0 ok, 1 operation failed (message on stderr), 2 usage; for
 * exec the remote exit status, or 128+signal.
 */
#ifndef _GNU_SOURCE /* the meson build defines it project-wide */
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/lib/sftp.h"
#include "core/lib/sshconn.h"
#include "core/lib/sshexec.h"

/* Settings of this one run (the driver's only mutable global state). */
static struct driver_ctx {
	int timeout_ms;
	unsigned depth;
	size_t chunk;
	int throttle_ms;
	const char *sftp_exec;
	int use_agent;
	int keepalive_s;
	struct ssh_conn *conn;
	struct sftp_client *sftp;
} drv;

static int fail(const char *what, int rc, const char *msg)
{
	char why[512] = "";
	if (rc == -ETIMEDOUT && drv.conn)
		ssh_conn_abort(drv.conn, "an operation timed out");
	if (!msg || !*msg) {
		if (drv.sftp && sftp_client_error(drv.sftp, why, sizeof why))
			msg = why;
		else if (drv.conn && ssh_conn_error(drv.conn, why, sizeof why))
			msg = why;
	}
	fprintf(stderr, "error: %s: %s (%s)%s%s\n", what, ssh_errno_name(rc),
			strerror(rc < 0 ? -rc : rc), msg && *msg ? ": " : "",
			msg ? msg : "");
	return 1;
}

static double secs_since(int64_t t0)
{
	return (double)(ssh_now_ms() - t0) / 1000.0;
}

static void print_rate(const char *what, uint64_t bytes, double secs)
{
	if (secs <= 0)
		secs = 0.001;
	printf("%s bytes=%" PRIu64 " seconds=%.3f MBps=%.1f\n", what, bytes,
		   secs, (double)bytes / secs / 1e6);
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* ---- streaming transfer callbacks ---- */

struct fdio {
	int fd;
	int announced;
};

static ssize_t src_fd(void *ud, void *buf, size_t len)
{
	struct fdio *f = ud;
	size_t got = 0;
	/* Fill whole chunks so requests stay large even from a pipe. */
	while (got < len) {
		ssize_t n = read(f->fd, (char *)buf + got, len - got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

static int sink_fd(void *ud, const void *buf, size_t len)
{
	struct fdio *f = ud;
	if (!f->announced) {
		/* Lets a test know the transfer is under way (fault injection). */
		printf("progress\n");
		fflush(stdout);
		f->announced = 1;
	}
	if (drv.throttle_ms > 0) {
		struct timespec ts = { drv.throttle_ms / 1000,
							   (drv.throttle_ms % 1000) * 1000000L };
		nanosleep(&ts, NULL);
	}
	return f->fd >= 0 ? write_all(f->fd, buf, len) : 0;
}

static int cmd_put(const char *local, const char *remote)
{
	struct fdio f = { -1, 0 };
	struct sftp_handle *h;
	struct sftp_attrs a = { .flags = SFTP_ATTR_PERMISSIONS, .perm = 0644 };
	uint64_t total = 0;
	int64_t t0;
	int rc;

	f.fd = open(local, O_RDONLY | O_CLOEXEC);
	if (f.fd < 0)
		return fail(local, -errno, "cannot open local file");
	rc = sftp_open(drv.sftp, remote, SFTP_WRITE | SFTP_CREAT | SFTP_TRUNC,
				   &a, &h);
	if (rc) {
		close(f.fd);
		return fail("open remote", rc, NULL);
	}
	t0 = ssh_now_ms();
	rc = sftp_upload(drv.sftp, h, 0, src_fd, &f, drv.depth, drv.chunk,
					 &total);
	close(f.fd);
	if (rc) {
		sftp_close(drv.sftp, h);
		return fail("upload", rc, NULL);
	}
	rc = sftp_close(drv.sftp, h);
	if (rc)
		return fail("close remote", rc, NULL);
	print_rate("put", total, secs_since(t0));
	return 0;
}

static int cmd_get(const char *remote, const char *local)
{
	struct fdio f = { -1, 0 };
	struct sftp_handle *h;
	uint64_t total = 0;
	int64_t t0;
	int rc;

	rc = sftp_open(drv.sftp, remote, SFTP_READ, NULL, &h);
	if (rc)
		return fail("open remote", rc, NULL);
	if (local) {
		f.fd = open(local, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (f.fd < 0) {
			sftp_close(drv.sftp, h);
			return fail(local, -errno, "cannot create local file");
		}
	}
	t0 = ssh_now_ms();
	rc = sftp_download(drv.sftp, h, 0, UINT64_MAX, sink_fd, &f, drv.depth,
					   drv.chunk, &total);
	if (f.fd >= 0 && close(f.fd) && !rc)
		rc = -errno;
	if (rc) {
		int64_t ms = ssh_now_ms() - t0;
		if (rc == -ETIMEDOUT)
			ssh_conn_abort(drv.conn, "download timed out");
		sftp_close(drv.sftp, h);
		fprintf(stderr, "failed after %" PRId64 " ms, %" PRIu64 " bytes\n",
				ms, total);
		return fail("download", rc, NULL);
	}
	rc = sftp_close(drv.sftp, h);
	if (rc)
		return fail("close remote", rc, NULL);
	print_rate(local ? "get" : "bench-read", total, secs_since(t0));
	return 0;
}

static int cmd_get_range(const char *remote, const char *local)
{
	struct sftp_handle *h;
	struct sftp_attrs a;
	char *buf;
	size_t got = 0;
	int64_t t0;
	int rc, fd;

	rc = sftp_open(drv.sftp, remote, SFTP_READ, NULL, &h);
	if (rc)
		return fail("open remote", rc, NULL);
	rc = sftp_fstat(drv.sftp, h, &a);
	if (rc) {
		sftp_close(drv.sftp, h);
		return fail("fstat", rc, NULL);
	}
	buf = malloc(a.size + 1);
	if (!buf) {
		sftp_close(drv.sftp, h);
		return fail("malloc", -ENOMEM, NULL);
	}
	t0 = ssh_now_ms();
	/* Ask for one byte more than the size to exercise the EOF path. */
	rc = sftp_pread_range(drv.sftp, h, 0, buf, a.size + 1, &got, drv.depth,
						  drv.chunk);
	sftp_close(drv.sftp, h);
	if (rc) {
		free(buf);
		return fail("pread_range", rc, NULL);
	}
	fd = open(local, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write_all(fd, buf, got) || close(fd)) {
		free(buf);
		return fail(local, -errno, "cannot write local file");
	}
	free(buf);
	print_rate("get-range", got, secs_since(t0));
	return 0;
}

static int cmd_put_range(const char *local, const char *remote)
{
	struct sftp_handle *h;
	struct sftp_attrs a = { .flags = SFTP_ATTR_PERMISSIONS, .perm = 0644 };
	struct stat st;
	char *buf;
	int64_t t0;
	int rc, fd = open(local, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st))
		return fail(local, -errno, "cannot open local file");
	buf = malloc((size_t)st.st_size + 1);
	if (!buf || read(fd, buf, (size_t)st.st_size) != st.st_size) {
		close(fd);
		free(buf);
		return fail(local, -EIO, "cannot read local file");
	}
	close(fd);
	rc = sftp_open(drv.sftp, remote, SFTP_WRITE | SFTP_CREAT | SFTP_TRUNC,
				   &a, &h);
	if (rc) {
		free(buf);
		return fail("open remote", rc, NULL);
	}
	t0 = ssh_now_ms();
	rc = sftp_pwrite_range(drv.sftp, h, 0, buf, (size_t)st.st_size,
						   drv.depth, drv.chunk);
	free(buf);
	if (rc) {
		sftp_close(drv.sftp, h);
		return fail("pwrite_range", rc, NULL);
	}
	rc = sftp_close(drv.sftp, h);
	if (rc)
		return fail("close remote", rc, NULL);
	print_rate("put-range", (uint64_t)st.st_size, secs_since(t0));
	return 0;
}

static const char *ftype(uint32_t perm)
{
	switch (perm & S_IFMT) {
	case S_IFREG: return "reg";
	case S_IFDIR: return "dir";
	case S_IFLNK: return "lnk";
	case S_IFIFO: return "fifo";
	case S_IFSOCK: return "sock";
	case S_IFCHR: return "chr";
	case S_IFBLK: return "blk";
	default: return "unknown";
	}
}

static int cmd_stat(const char *p, int link)
{
	struct sftp_attrs a;
	int rc = link ? sftp_lstat(drv.sftp, p, &a) : sftp_stat(drv.sftp, p, &a);
	if (rc)
		return fail(link ? "lstat" : "stat", rc, NULL);
	printf("type=%s size=%" PRIu64 " mode=%04o uid=%u gid=%u mtime=%u\n",
		   ftype(a.perm), a.size, a.perm & 07777, a.uid, a.gid, a.mtime);
	return 0;
}

static int cmd_statvfs(const char *p)
{
	struct sftp_vfsinfo st;
	int rc = sftp_statvfs(drv.sftp, p, &st);
	if (rc)
		return fail("statvfs", rc, NULL);
	printf("bsize=%" PRIu64 " frsize=%" PRIu64 " blocks=%" PRIu64
		   " bfree=%" PRIu64 " bavail=%" PRIu64 " files=%" PRIu64
		   " ffree=%" PRIu64 " favail=%" PRIu64 " fsid=%" PRIu64
		   " flag=%" PRIu64 " namemax=%" PRIu64 "\n",
		   st.bsize, st.frsize, st.blocks, st.bfree, st.bavail, st.files,
		   st.ffree, st.favail, st.fsid, st.flag, st.namemax);
	return 0;
}

static int cmd_ls(const char *p)
{
	struct sftp_handle *h;
	struct sftp_dirent *e;
	size_t n, i;
	int rc = sftp_opendir(drv.sftp, p, &h);
	if (rc)
		return fail("opendir", rc, NULL);
	for (;;) {
		rc = sftp_readdir(drv.sftp, h, &e, &n);
		if (rc || !n)
			break;
		for (i = 0; i < n; i++)
			printf("%s %s %" PRIu64 "\n", ftype(e[i].attrs.perm), e[i].name,
				   e[i].attrs.size);
		sftp_dirents_free(e, n);
	}
	sftp_close(drv.sftp, h);
	return rc ? fail("readdir", rc, NULL) : 0;
}

static int cmd_fsync(const char *p)
{
	static const char data[] = "fsync-test\n";
	struct sftp_handle *h;
	int rc = sftp_open(drv.sftp, p, SFTP_WRITE | SFTP_CREAT | SFTP_TRUNC,
					   NULL, &h);
	if (rc)
		return fail("open", rc, NULL);
	rc = sftp_write(drv.sftp, h, 0, data, sizeof data - 1);
	if (rc == 0)
		rc = sftp_fsync(drv.sftp, h);
	if (rc) {
		sftp_close(drv.sftp, h);
		return fail("write+fsync", rc, NULL);
	}
	rc = sftp_close(drv.sftp, h);
	if (rc)
		return fail("close", rc, NULL);
	printf("fsync ok\n");
	return 0;
}

static int name_cmd(const char *what, int rc, char *out)
{
	if (rc)
		return fail(what, rc, NULL);
	printf("%s\n", out);
	free(out);
	return 0;
}

/* ---- exec ---- */

static void exec_out(void *ud, int stream, const void *data, size_t len)
{
	(void)ud;
	if (write_all(stream == SSH_EXEC_STDERR ? 2 : 1, data, len)) {
		/* nothing sensible to do if our own stdout is gone */
	}
}

static int signal_exit(const char *name)
{
	static const struct { const char *n; int s; } tab[] = {
		{ "HUP", SIGHUP }, { "INT", SIGINT }, { "QUIT", SIGQUIT },
		{ "ABRT", SIGABRT }, { "KILL", SIGKILL }, { "SEGV", SIGSEGV },
		{ "PIPE", SIGPIPE }, { "TERM", SIGTERM }, { "USR1", SIGUSR1 },
		{ "USR2", SIGUSR2 },
	};
	size_t i;
	for (i = 0; i < sizeof tab / sizeof tab[0]; i++)
		if (strcmp(tab[i].n, name) == 0)
			return 128 + tab[i].s;
	return 255;
}

static int cmd_exec(const char *command)
{
	char err[SSH_ERRMSG_LEN], buf[65536];
	struct ssh_exec *e;
	struct ssh_exec_status st;
	int rc = ssh_exec_start(drv.conn, command, exec_out, NULL, &e, err,
							sizeof err);
	if (rc)
		return fail("exec", rc, err);
	for (;;) {
		ssize_t n = read(0, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		rc = ssh_exec_write(e, buf, (size_t)n, 0);
		if (rc == -EPIPE) {
			rc = 0; /* command stopped reading; still collect its status */
			break;
		}
		if (rc) {
			ssh_exec_free(e);
			return fail("exec stdin", rc, NULL);
		}
	}
	rc = ssh_exec_close_stdin(e);
	if (rc == 0 || rc == -EPIPE)
		rc = ssh_exec_wait(e, -1, &st);
	ssh_exec_free(e);
	if (rc)
		return fail("exec wait", rc, NULL);
	if (st.signal[0]) {
		fprintf(stderr, "remote command killed by signal %s\n", st.signal);
		return signal_exit(st.signal);
	}
	return st.exit_code & 0xff;
}

/* ---- benchmarks ---- */

struct gen {
	uint64_t left;
	uint64_t x; /* xorshift state: cheap incompressible data */
};

static ssize_t src_gen(void *ud, void *buf, size_t len)
{
	struct gen *g = ud;
	size_t n = g->left < len ? (size_t)g->left : len, i;
	uint64_t *w = buf;
	for (i = 0; i < n / 8; i++) {
		g->x ^= g->x << 13;
		g->x ^= g->x >> 7;
		g->x ^= g->x << 17;
		w[i] = g->x;
	}
	g->left -= n;
	return (ssize_t)n;
}

static int cmd_bench_write(const char *remote, const char *mib)
{
	struct gen g = { strtoull(mib, NULL, 10) * 1024 * 1024,
					 0x9e3779b97f4a7c15ull };
	uint64_t total = 0;
	struct sftp_handle *h;
	int64_t t0;
	int rc = sftp_open(drv.sftp, remote, SFTP_WRITE | SFTP_CREAT | SFTP_TRUNC,
					   NULL, &h);
	if (rc)
		return fail("open remote", rc, NULL);
	t0 = ssh_now_ms();
	rc = sftp_upload(drv.sftp, h, 0, src_gen, &g, drv.depth, drv.chunk,
					 &total);
	if (rc == 0)
		rc = sftp_close(drv.sftp, h);
	else
		sftp_close(drv.sftp, h);
	if (rc)
		return fail("bench-write", rc, NULL);
	print_rate("bench-write", total, secs_since(t0));
	return 0;
}

/* ---- stress: many threads, many requests in flight at once ---- */

struct stress_arg {
	const char *dir;
	int idx, iters;
	int rc;
	char what[128];
	unsigned long ops;
};

static void *stress_thread(void *p)
{
	struct stress_arg *a = p;
	char path[4096], path2[4096];
	unsigned char data[100000], back[100000];
	struct sftp_handle *h = NULL;
	unsigned seed = (unsigned)a->idx * 2654435761u + 1;
	size_t i;
	int it, rc;

	for (i = 0; i < sizeof data; i++)
		data[i] = (unsigned char)(a->idx * 31 + i * 7);
	snprintf(path, sizeof path, "%s/stress-%d", a->dir, a->idx);
	snprintf(path2, sizeof path2, "%s/stress-%d.renamed", a->dir, a->idx);
	rc = sftp_open(drv.sftp, path, SFTP_WRITE | SFTP_READ | SFTP_CREAT |
				   SFTP_TRUNC, NULL, &h);
	if (rc) {
		snprintf(a->what, sizeof a->what, "open %.100s", path);
		goto out;
	}
	rc = sftp_pwrite_range(drv.sftp, h, 0, data, sizeof data, 8, 8192);
	if (rc) {
		snprintf(a->what, sizeof a->what, "pwrite_range");
		goto out;
	}
	for (it = 0; it < a->iters; it++) {
		size_t off = rand_r(&seed) % sizeof data, len, got = 0;
		struct sftp_attrs at;
		len = 1 + rand_r(&seed) % 20000;
		if (off + len > sizeof data)
			len = sizeof data - off;
		rc = sftp_read(drv.sftp, h, off, back, len, &got);
		if (rc || got != len || memcmp(back, data + off, len)) {
			snprintf(a->what, sizeof a->what, "read off=%zu len=%zu got=%zu"
					 " rc=%d", off, len, got, rc);
			rc = rc ? rc : -EIO;
			goto out;
		}
		rc = sftp_fstat(drv.sftp, h, &at);
		if (rc || at.size != sizeof data) {
			snprintf(a->what, sizeof a->what, "fstat size=%" PRIu64,
					 at.size);
			rc = rc ? rc : -EIO;
			goto out;
		}
		rc = sftp_stat(drv.sftp, a->dir, &at);
		if (rc || (at.perm & S_IFMT) != S_IFDIR) {
			snprintf(a->what, sizeof a->what, "stat dir");
			rc = rc ? rc : -EIO;
			goto out;
		}
		rc = sftp_stat(drv.sftp, path2, &at);
		if (rc != -ENOENT) {
			snprintf(a->what, sizeof a->what, "stat missing gave %d", rc);
			rc = rc ? rc : -EIO;
			goto out;
		}
		rc = 0;
		a->ops += 4;
	}
out:
	if (h)
		sftp_close(drv.sftp, h);
	if (!rc)
		rc = sftp_remove(drv.sftp, path);
	a->rc = rc;
	return NULL;
}

static int cmd_stress(const char *dir, int threads, int iters)
{
	pthread_t *t = calloc((size_t)threads, sizeof *t);
	struct stress_arg *a = calloc((size_t)threads, sizeof *a);
	unsigned long ops = 0;
	int i, bad = 0;
	int64_t t0 = ssh_now_ms();

	if (!t || !a)
		return fail("stress", -ENOMEM, NULL);
	for (i = 0; i < threads; i++) {
		a[i].dir = dir;
		a[i].idx = i;
		a[i].iters = iters;
		pthread_create(&t[i], NULL, stress_thread, &a[i]);
	}
	for (i = 0; i < threads; i++) {
		pthread_join(t[i], NULL);
		ops += a[i].ops;
		if (a[i].rc && !bad) {
			bad = 1;
			fail(a[i].what, a[i].rc, NULL);
		}
	}
	free(t);
	free(a);
	if (bad)
		return 1;
	printf("stress ok threads=%d ops=%lu seconds=%.3f\n", threads, ops,
		   secs_since(t0));
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: ssh_driver [--timeout MS] [--depth N] [--chunk N]"
			" [--throttle-ms MS] [--sftp-exec CMD] [--agent] HOST PORT USER KEY KNOWN_HOSTS "
			"COMMAND [ARGS...]\n");
	return 2;
}

static int run(int argc, char **argv)
{
	const char *cmd = argv[0];
	char *out = NULL;
#define NEED(n) do { if (argc < (n) + 1) return usage(); } while (0)
	if (!strcmp(cmd, "connect")) {
		printf("connected fingerprint=%s\n", ssh_conn_fingerprint(drv.conn));
		return 0;
	}
	if (!strcmp(cmd, "exec")) {
		NEED(1);
		return cmd_exec(argv[1]);
	}
	if (!strcmp(cmd, "exts")) {
		printf("exts=0x%x max_read=%zu max_write=%zu\n",
			   sftp_extensions(drv.sftp), sftp_max_read(drv.sftp),
			   sftp_max_write(drv.sftp));
		return 0;
	}
	if (!strcmp(cmd, "put")) { NEED(2); return cmd_put(argv[1], argv[2]); }
	if (!strcmp(cmd, "get")) { NEED(2); return cmd_get(argv[1], argv[2]); }
	if (!strcmp(cmd, "put-range")) {
		NEED(2);
		return cmd_put_range(argv[1], argv[2]);
	}
	if (!strcmp(cmd, "get-range")) {
		NEED(2);
		return cmd_get_range(argv[1], argv[2]);
	}
	if (!strcmp(cmd, "stat")) { NEED(1); return cmd_stat(argv[1], 0); }
	if (!strcmp(cmd, "lstat")) { NEED(1); return cmd_stat(argv[1], 1); }
	if (!strcmp(cmd, "statvfs")) { NEED(1); return cmd_statvfs(argv[1]); }
	if (!strcmp(cmd, "ls")) { NEED(1); return cmd_ls(argv[1]); }
	if (!strcmp(cmd, "fsync")) { NEED(1); return cmd_fsync(argv[1]); }
	if (!strcmp(cmd, "realpath") || !strcmp(cmd, "readlink")) {
		int rc;
		NEED(1);
		/* separate statement: `out` must be read after the call */
		rc = !strcmp(cmd, "realpath") ? sftp_realpath(drv.sftp, argv[1], &out)
									  : sftp_readlink(drv.sftp, argv[1], &out);
		return name_cmd(cmd, rc, out);
	}
	if (!strcmp(cmd, "rename-over") || !strcmp(cmd, "rename") ||
		!strcmp(cmd, "hardlink") || !strcmp(cmd, "symlink")) {
		int rc;
		NEED(2);
		if (!strcmp(cmd, "rename-over"))
			rc = sftp_posix_rename(drv.sftp, argv[1], argv[2]);
		else if (!strcmp(cmd, "rename"))
			rc = sftp_rename(drv.sftp, argv[1], argv[2]);
		else if (!strcmp(cmd, "hardlink"))
			rc = sftp_hardlink(drv.sftp, argv[1], argv[2]);
		else
			rc = sftp_symlink(drv.sftp, argv[1], argv[2]);
		if (rc)
			return fail(cmd, rc, NULL);
		printf("%s ok\n", cmd);
		return 0;
	}
	if (!strcmp(cmd, "mkdir") || !strcmp(cmd, "rmdir") ||
		!strcmp(cmd, "rm")) {
		int rc;
		NEED(1);
		rc = !strcmp(cmd, "mkdir") ? sftp_mkdir(drv.sftp, argv[1], 0755)
			 : !strcmp(cmd, "rmdir") ? sftp_rmdir(drv.sftp, argv[1])
									 : sftp_remove(drv.sftp, argv[1]);
		if (rc)
			return fail(cmd, rc, NULL);
		printf("%s ok\n", cmd);
		return 0;
	}
	if (!strcmp(cmd, "bench-write")) {
		NEED(2);
		return cmd_bench_write(argv[1], argv[2]);
	}
	if (!strcmp(cmd, "bench-read")) {
		NEED(1);
		return cmd_get(argv[1], NULL);
	}
	if (!strcmp(cmd, "idle-stat")) {
		struct timespec ts = { 0, 0 };
		NEED(2);
		ts.tv_sec = atoi(argv[1]);
		nanosleep(&ts, NULL);
		return cmd_stat(argv[2], 0);
	}
	if (!strcmp(cmd, "stress")) {
		NEED(3);
		return cmd_stress(argv[1], atoi(argv[2]), atoi(argv[3]));
	}
#undef NEED
	return usage();
}

int main(int argc, char **argv)
{
	struct ssh_conn_opts o;
	char err[SSH_ERRMSG_LEN];
	int i = 1, rc, needs_sftp;

	drv.timeout_ms = 30000;
	for (; i < argc && !strncmp(argv[i], "--", 2); i++) {
		if (!strcmp(argv[i], "--agent"))
			drv.use_agent = 1;
		else if (i + 1 < argc && !strcmp(argv[i], "--timeout"))
			drv.timeout_ms = atoi(argv[++i]);
		else if (i + 1 < argc && !strcmp(argv[i], "--depth"))
			drv.depth = (unsigned)atoi(argv[++i]);
		else if (i + 1 < argc && !strcmp(argv[i], "--chunk"))
			drv.chunk = (size_t)atol(argv[++i]);
		else if (i + 1 < argc && !strcmp(argv[i], "--keepalive"))
			drv.keepalive_s = atoi(argv[++i]);
		else if (i + 1 < argc && !strcmp(argv[i], "--throttle-ms"))
			drv.throttle_ms = atoi(argv[++i]);
		else if (i + 1 < argc && !strcmp(argv[i], "--sftp-exec"))
			drv.sftp_exec = argv[++i];
		else
			return usage();
	}
	if (argc - i < 6)
		return usage();
	memset(&o, 0, sizeof o);
	o.host = argv[i];
	o.port = atoi(argv[i + 1]);
	o.user = argv[i + 2];
	o.identity_file = strcmp(argv[i + 3], "-") ? argv[i + 3] : NULL;
	o.known_hosts = argv[i + 4];
	o.use_agent = drv.use_agent;
	o.timeout_ms = drv.timeout_ms;
	o.keepalive_s = drv.keepalive_s;
	signal(SIGPIPE, SIG_IGN);

	rc = ssh_conn_open(&o, &drv.conn, err, sizeof err);
	if (rc)
		return fail("connect", rc, err);
	needs_sftp = strcmp(argv[i + 5], "exec") && strcmp(argv[i + 5],
														"connect");
	if (needs_sftp) {
		rc = drv.sftp_exec
			 ? sftp_client_open_exec(drv.conn, drv.sftp_exec, &drv.sftp, err,
									 sizeof err)
			 : sftp_client_open(drv.conn, &drv.sftp, err, sizeof err);
		if (rc) {
			fail("sftp", rc, err);
			ssh_conn_close(drv.conn);
			return 1;
		}
	}
	rc = run(argc - i - 5, argv + i + 5);
	fflush(stdout);
	if (drv.sftp)
		sftp_client_close(drv.sftp);
	drv.sftp = NULL;
	ssh_conn_close(drv.conn);
	return rc;
}
