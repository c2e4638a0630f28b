/*
 * cell_client.c - the cell client of notebook sessions, in C: what
 * core/sessions/seer_cell.py does, without starting a Python for every cell. It is
 * part of seerfs-agent (`/.seerfs/agent --cell`), which every local sandbox
 * has; ssh sandboxes use the Python one.
 *
 * From the environment: SEERFS_KNAME (the kernel's directory under
 * $TMPDIR/.seerfs-sessions), SEERFS_SEQ, SEERFS_CODE, SEERFS_SESSION and
 * SEERFS_NOTE. It connects to the kernel's socket, sends {"seq", "code"},
 * relays the frames ("o" stdout, "e" stderr, "x" exit status), hands SIGINT
 * on as "i", and ends with the kernel's signal when the kernel dies under
 * the cell.
 */
#include "core/sessions/cell_client.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static volatile int cell_sock = -1;

static void on_sigint(int sig)
{
	(void)sig;
	char c = 'i';
	if (cell_sock >= 0)
		send(cell_sock, &c, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void say(const char *s)
{
	size_t n = strlen(s);
	while (n) {
		ssize_t w = write(2, s, n);
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

static void msleep(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int died_status(void)
{
	FILE *f = fopen("died", "r");
	int v = -1;
	if (f) {
		if (fscanf(f, "%d", &v) != 1)
			v = 1;
		fclose(f);
	}
	return v;
}

static int fail(int st, const char *session, const char *when)
{
	char m[512];
	if (st > 128 && st < 128 + 65) {
		snprintf(m, sizeof(m),
			 "seerfs: the kernel of session %s was killed by signal %d %s; the next cell starts a fresh one "
			 "(state lost)\n", session, st - 128, when);
		say(m);
		signal(st - 128, SIG_DFL);
		kill(getpid(), st - 128);
		msleep(1000);
	}
	snprintf(m, sizeof(m), "seerfs: the kernel of session %s exited with status %d %s; the next cell starts a fresh one\n",
		 session, st, when);
	say(m);
	return 1;
}

static int write_all_fd(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int recv_exact(int s, char *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = recv(s, buf + got, n - got, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

/* {"seq": N, "code": "..."}\n with the code as a JSON string. */
static char *request(const char *seq, const char *code, size_t *len)
{
	size_t cl = strlen(code), cap = cl * 6 + 64, n = 0;
	char *b = malloc(cap);
	if (!b)
		return NULL;
	n += (size_t)snprintf(b, cap, "{\"seq\": %ld, \"code\": \"", strtol(seq, NULL, 10));
	for (const unsigned char *p = (const unsigned char *)code; *p; p++) {
		if (*p == '"' || *p == '\\') {
			b[n++] = '\\';
			b[n++] = (char)*p;
		} else if (*p < 0x20) {
			n += (size_t)snprintf(b + n, cap - n, "\\u%04x", *p);
		} else {
			b[n++] = (char)*p;
		}
	}
	n += (size_t)snprintf(b + n, cap - n, "\"}\n");
	*len = n;
	return b;
}

int cell_client_main(void)
{
	const char *kname = getenv("SEERFS_KNAME"), *seq = getenv("SEERFS_SEQ"), *code = getenv("SEERFS_CODE");
	const char *session = getenv("SEERFS_SESSION"), *note = getenv("SEERFS_NOTE"), *tmp = getenv("TMPDIR");
	if (!kname || !seq || !code) {
		say("seerfs-agent --cell: run by seerfs for a notebook session's cell only\n");
		return 2;
	}
	if (!session)
		session = "";
	if (note && *note) {
		say(note);
		say("\n");
	}
	char kdir[4096];
	snprintf(kdir, sizeof(kdir), "%s/.seerfs-sessions/%s", tmp && *tmp ? tmp : "/tmp", kname);
	signal(SIGPIPE, SIG_IGN);
	int s = -1;
	long delay = 1;
	time_t deadline = time(NULL) + 120;
	for (;;) {
		if (chdir(kdir) == 0) {
			s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
			struct sockaddr_un a = {.sun_family = AF_UNIX, .sun_path = "sock"};
			if (s >= 0 && connect(s, (struct sockaddr *)&a, sizeof(a)) == 0)
				break;
			if (s >= 0)
				close(s);
			s = -1;
			int st = died_status();
			if (st >= 0)
				return fail(st, session, "before it could run this cell");
		}
		if (time(NULL) > deadline) {
			char m[256];
			snprintf(m, sizeof(m), "seerfs: the kernel of session %s did not start in 120 s; see its job (jobs/) for its output\n",
				 session);
			say(m);
			return 1;
		}
		msleep(delay);
		delay = delay * 2 > 50 ? 50 : delay * 2;
	}
	size_t rl;
	char *req = request(seq, code, &rl);
	if (!req || write_all_fd(s, req, rl) < 0) {
		free(req);
		say("seerfs: the cell could not be handed to the kernel\n");
		return 1;
	}
	free(req);
	cell_sock = s;
	struct sigaction sa = {.sa_handler = on_sigint};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	for (;;) {
		unsigned char h[5];
		if (recv_exact(s, (char *)h, 5) < 0)
			break;
		uint32_t n = (uint32_t)h[1] << 24 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 8 | h[4];
		char *data = malloc(n + 1);
		if (!data || recv_exact(s, data, n) < 0) {
			free(data);
			break;
		}
		data[n] = '\0';
		if (h[0] == 'o')
			write_all_fd(1, data, n);
		else if (h[0] == 'e')
			write_all_fd(2, data, n);
		else if (h[0] == 'x') {
			int st = atoi(data);
			free(data);
			close(s);
			return st;
		}
		free(data);
	}
	for (int i = 0; i < 100; i++) {
		int st = died_status();
		if (st >= 0)
			return fail(st, session, "while it ran this cell");
		msleep(10);
	}
	char m[256];
	snprintf(m, sizeof(m), "seerfs: the kernel of session %s went away (restarted or ended) while it ran this cell\n",
		 session);
	say(m);
	kill(getpid(), SIGKILL);
	return 1;
}
