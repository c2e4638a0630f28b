/*
 * seer-exec - run a command in a seerfs sandbox through its files, like
 * `docker exec` or `ssh host cmd`.
 *
 *   seer-exec [-n] SANDBOX_DIR CMD [ARG...]
 *
 * It writes the command to SANDBOX_DIR/exec (arguments are shell-quoted),
 * finds its job through jobs/mine, forwards its own stdin to the job's stdin
 * (-n: none), copies the job's stdout and stderr to its own as they grow,
 * and exits with the job's exit status (128+N for a signal, 255 when the
 * job was lost). It uses nothing but the file interface.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fwd {
	int from, to;
};

static void die(const char *what, const char *path)
{
	fprintf(stderr, "seer-exec: %s %s: %s\n", what, path, strerror(errno));
	exit(255);
}

/* Appends s to the command line, quoted for /bin/sh. */
static void quote(char **buf, size_t *len, size_t *cap, const char *s)
{
	size_t need = *len + strlen(s) * 4 + 4;
	if (need > *cap) {
		*cap = need * 2;
		*buf = realloc(*buf, *cap);
		if (!*buf)
			exit(255);
	}
	char *p = *buf + *len;
	if (*len)
		*p++ = ' ';
	*p++ = '\'';
	for (; *s; s++) {
		if (*s == '\'') {
			memcpy(p, "'\\''", 4);
			p += 4;
		} else {
			*p++ = *s;
		}
	}
	*p++ = '\'';
	*p = '\0';
	*len = (size_t)(p - *buf);
}

static void *stdin_main(void *arg)
{
	struct fwd *f = arg;
	char buf[65536];
	for (;;) {
		ssize_t n = read(f->from, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (ssize_t done = 0; done < n;) {
			ssize_t w = write(f->to, buf + done, (size_t)(n - done));
			if (w < 0) {
				if (errno == EINTR)
					continue;
				goto out;   /* the job closed its stdin */
			}
			done += w;
		}
	}
out:
	close(f->to);   /* the last writer closing sends EOF */
	return NULL;
}

/* Copies what is new in a job's stream file to fd `to`. */
static void drain(int from, int to, off_t *pos)
{
	char buf[1 << 16];
	for (;;) {
		ssize_t n = pread(from, buf, sizeof(buf), *pos);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		*pos += n;
		for (ssize_t done = 0; done < n;) {
			ssize_t w = write(to, buf + done, (size_t)(n - done));
			if (w < 0) {
				if (errno == EINTR)
					continue;
				return;
			}
			done += w;
		}
	}
}

int main(int argc, char **argv)
{
	int no_stdin = 0, ai = 1;
	if (ai < argc && !strcmp(argv[ai], "-n")) {
		no_stdin = 1;
		ai++;
	}
	if (argc - ai < 2) {
		fprintf(stderr, "usage: seer-exec [-n] SANDBOX_DIR CMD [ARG...]\n");
		return 255;
	}
	signal(SIGPIPE, SIG_IGN);
	const char *dir = argv[ai++];
	char *cmd = NULL;
	size_t len = 0, cap = 0;
	if (argc - ai == 1) {
		cmd = strdup(argv[ai]);   /* one word: a shell command line, as ssh takes it */
		len = strlen(cmd);
	} else {
		for (; ai < argc; ai++)
			quote(&cmd, &len, &cap, argv[ai]);
	}
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/exec", dir);
	int ex = open(path, O_RDWR | O_CLOEXEC);
	if (ex < 0)
		die("cannot open", path);
	if (write(ex, cmd, len) != (ssize_t)len) {
		int e = errno;
		char epath[PATH_MAX], msg[1024] = "";
		snprintf(epath, sizeof(epath), "%s/error", dir);
		int efd = open(epath, O_RDONLY);
		if (efd >= 0) {
			ssize_t n = read(efd, msg, sizeof(msg) - 1);
			msg[n > 0 ? n : 0] = '\0';
			close(efd);
		}
		fprintf(stderr, "seer-exec: %s: %s\n%s", dir, strerror(e), msg);
		return 255;
	}
	free(cmd);
	char job[64];
	snprintf(path, sizeof(path), "%s/jobs/mine", dir);
	ssize_t jn = readlink(path, job, sizeof(job) - 1);
	if (jn <= 0)
		die("cannot find the job through", path);
	job[jn] = '\0';

	pthread_t th;
	int have_thread = 0;
	snprintf(path, sizeof(path), "%s/jobs/%s/stdin", dir, job);
	if (!no_stdin) {
		static struct fwd f;
		f.from = 0;
		f.to = open(path, O_WRONLY | O_CLOEXEC);
		if (f.to >= 0 && pthread_create(&th, NULL, stdin_main, &f) == 0) {
			pthread_detach(th);
			have_thread = 1;
		}
	}
	(void)have_thread;
	int fds[2];
	const char *names[2] = {"stdout", "stderr"};
	off_t pos[2] = {0, 0};
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/jobs/%s/%s", dir, job, names[i]);
		fds[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0)
			die("cannot open", path);
	}
	/* The exec file's read returns whenever the job produced output and EOF
	 * when it is over: use it as the wake-up, copy from the two streams. */
	char buf[1 << 16];
	for (;;) {
		ssize_t n = read(ex, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		drain(fds[0], 1, &pos[0]);
		drain(fds[1], 2, &pos[1]);
		if (n <= 0)
			break;
	}
	close(ex);
	snprintf(path, sizeof(path), "%s/jobs/%s/exit", dir, job);
	int xf = open(path, O_RDONLY | O_CLOEXEC);
	if (xf < 0)
		die("cannot open", path);
	char st[64];
	ssize_t n = read(xf, st, sizeof(st) - 1);
	close(xf);
	if (n <= 0)
		return 255;
	st[n] = '\0';
	if (!strncmp(st, "signal ", 7))
		return 128 + atoi(st + 7);
	if (st[0] >= '0' && st[0] <= '9')
		return atoi(st);
	return 255;
}
