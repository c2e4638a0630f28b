/*
 * agent.c - seerfs-agent, PID 1 inside every local sandbox.
 *
 * It is started by bubblewrap (--as-pid-1) and talks to seerfs over the
 * socket on fd 3. It starts commands (each in a session of its own), reaps
 * every process of the sandbox, reports exits, signals whole process trees,
 * freezes the sandbox for snapshots and counts its processes. When seerfs
 * goes away (the socket closes) it kills everything and exits, which ends
 * the PID namespace: no process of a sandbox outlives its seerfs.
 *
 * In a container of the docker provider it runs as `agent --connect PATH`:
 * the engine starts it, so it reaches seerfs by connecting to the unix
 * socket PATH (a read-only bind of a directory seerfs listens in). When
 * that connection closes it kills every other process of the container (as
 * above: seerfs is gone, its jobs with it) and connects again, every 100 ms,
 * so that the next seerfs adopts the container with its files.
 */
#include "core/lib/agentproto.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_JOBS 4096

/* The agent's whole state: the pids it started for seerfs. */
struct agent {
	int sock;
	int sigfd;
	pid_t jobs[MAX_JOBS];
	int njobs;
};

static void send_msg(struct agent *a, struct agent_msg *m)
{
	m->len = 0;
	for (;;) {
		ssize_t n = send(a->sock, m, sizeof(*m), MSG_NOSIGNAL);
		if (n >= 0 || errno != EINTR)
			return;
	}
}

static void reply(struct agent *a, uint32_t seq, int32_t pid, int32_t arg, int64_t v1)
{
	struct agent_msg m = {.type = AG_REPLY, .seq = seq, .pid = pid, .arg = arg, .val1 = v1};
	send_msg(a, &m);
}

static int is_job(struct agent *a, pid_t pid, int remove)
{
	for (int i = 0; i < a->njobs; i++) {
		if (a->jobs[i] == pid) {
			if (remove)
				a->jobs[i] = a->jobs[--a->njobs];
			return 1;
		}
	}
	return 0;
}

/* Reads pid, ppid and session of one /proc entry. */
static int proc_stat(pid_t pid, pid_t *ppid, pid_t *sid, char *state)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	char *p = strrchr(buf, ')');   /* the command name may hold spaces */
	if (!p)
		return -1;
	int pg;
	if (sscanf(p + 2, "%c %d %d %d", state, ppid, &pg, sid) != 4)
		return -1;
	return 0;
}

struct proc_ent {
	pid_t pid, ppid, sid;
	char state;
};

static int list_procs(struct proc_ent *out, int max)
{
	DIR *d = opendir("/proc");
	if (!d)
		return 0;
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)) && n < max) {
		pid_t pid = atoi(de->d_name);
		if (pid <= 1)
			continue;
		struct proc_ent *e = &out[n];
		if (proc_stat(pid, &e->ppid, &e->sid, &e->state) == 0) {
			e->pid = pid;
			n++;
		}
	}
	closedir(d);
	return n;
}

#define MAX_PROCS 32768

/* Signals a job's process tree: its session (which setsid daemons leave)
 * and every descendant still linked to it by parentage. For SIGKILL the tree
 * is stopped first so that nothing forks while it is collected. */
static int signal_tree(pid_t root, int sig)
{
	static struct proc_ent procs[MAX_PROCS];
	int total = 0;
	for (int round = 0; round < 20; round++) {
		int n = list_procs(procs, MAX_PROCS);
		char mark[MAX_PROCS] = {0};
		int changed = 1, found = 0;
		while (changed) {
			changed = 0;
			for (int i = 0; i < n; i++) {
				if (mark[i])
					continue;
				int in = procs[i].pid == root || procs[i].sid == root;
				for (int j = 0; j < n && !in; j++)
					if (mark[j] && procs[j].pid == procs[i].ppid)
						in = 1;
				if (in) {
					mark[i] = 1;
					changed = 1;
				}
			}
		}
		for (int i = 0; i < n; i++) {
			if (!mark[i])
				continue;
			if (sig == SIGKILL)
				kill(procs[i].pid, SIGSTOP);
			found++;
		}
		for (int i = 0; i < n; i++)
			if (mark[i] && kill(procs[i].pid, sig) == 0)
				total++;
		if (sig != SIGKILL || !found)
			break;
		/* Repeat until nothing of the tree is left alive (zombies aside). */
		int alive = 0;
		for (int i = 0; i < n; i++) {
			char st;
			pid_t pp, ss;
			if (mark[i] && proc_stat(procs[i].pid, &pp, &ss, &st) == 0 && st != 'Z')
				alive = 1;
		}
		if (!alive)
			break;
		struct timespec ts = {0, 2000000};
		nanosleep(&ts, NULL);
	}
	return total;
}

/* Whether SIGSTOP is pending for a process. A shell's vfork() parent sleeps
 * in the kernel ('D') until its child execs; with the child stopped it never
 * reaches the stop itself, yet it runs no code of its own: count it. */
static int stop_pending(pid_t pid)
{
	char path[64], buf[4096];
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 1;   /* gone: nothing left to wait for */
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 1;
	buf[n] = '\0';
	const char *keys[] = {"ShdPnd:", "SigPnd:"};
	for (int k = 0; k < 2; k++) {
		char *p = strstr(buf, keys[k]);
		if (p && (strtoull(p + strlen(keys[k]), NULL, 16) & (1ull << (SIGSTOP - 1))))
			return 1;
	}
	return 0;
}

/* Stops every process but us, and waits until each is really stopped so a
 * snapshot sees one point in time. */
static int freeze_all(int stop)
{
	static struct proc_ent procs[MAX_PROCS];
	if (getpid() != 1)
		return -EPERM;
	kill(-1, stop ? SIGSTOP : SIGCONT);
	if (!stop)
		return 0;
	for (int tries = 0; tries < 1000; tries++) {
		int n = list_procs(procs, MAX_PROCS), running = 0;
		for (int i = 0; i < n; i++)
			if (procs[i].state != 'T' && procs[i].state != 't' && procs[i].state != 'Z' && procs[i].state != 'X' &&
			    !(procs[i].state == 'D' && stop_pending(procs[i].pid)))
				running++;
		if (!running)
			return 0;
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	return -ETIMEDOUT;
}

static void do_spawn(struct agent *a, struct agent_msg *m, char *payload, size_t len, int *fds, int nfds)
{
	int argc = m->arg, envc = (int)m->val1;
	if (nfds != 3 || argc < 1 || envc < 0 || argc > 4096 || envc > 4096 || a->njobs >= MAX_JOBS) {
		reply(a, m->seq, -EINVAL, 0, 0);
		return;
	}
	char **argv = calloc((size_t)argc + 1, sizeof(char *));
	char **envp = calloc((size_t)envc + 1, sizeof(char *));
	char *p = payload, *end = payload + len;
	char *cwd = p;
	int ok = argv && envp;
	p += strnlen(p, (size_t)(end - p)) + 1;
	for (int i = 0; ok && i < argc; i++) {
		if (p >= end) {
			ok = 0;
			break;
		}
		argv[i] = p;
		p += strnlen(p, (size_t)(end - p)) + 1;
	}
	for (int i = 0; ok && i < envc; i++) {
		if (p >= end) {
			ok = 0;
			break;
		}
		envp[i] = p;
		p += strnlen(p, (size_t)(end - p)) + 1;
	}
	if (!ok || p > end) {
		free(argv);
		free(envp);
		reply(a, m->seq, -EINVAL, 0, 0);
		return;
	}
	/* A pipe closed by a successful exec tells us that the exec worked. */
	int ep[2];
	if (pipe2(ep, O_CLOEXEC) < 0) {
		reply(a, m->seq, -errno, 0, 0);
		free(argv);
		free(envp);
		return;
	}
	pid_t pid = fork();
	if (pid == 0) {
		setsid();
		sigset_t all;
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		signal(SIGPIPE, SIG_DFL);
		dup2(fds[0], 0);
		dup2(fds[1], 1);
		dup2(fds[2], 2);
		syscall(SYS_close_range, 3, ~0U, 0x4 /* CLOSE_RANGE_CLOEXEC */);
		if (chdir(cwd) < 0 && chdir("/") < 0) {
			/* an unreachable cwd still lets the command run from / */
		}
		environ = envp;
		execvp(argv[0], argv);
		int e = errno;
		if (write(ep[1], &e, sizeof(e)) < 0) {
			/* nothing more to do: the parent sees EOF */
		}
		_exit(127);
	}
	int e = pid < 0 ? errno : 0;
	close(ep[1]);
	if (pid > 0) {
		int ce;
		ssize_t n;
		do
			n = read(ep[0], &ce, sizeof(ce));
		while (n < 0 && errno == EINTR);
		if (n == (ssize_t)sizeof(ce)) {
			e = ce;
			waitpid(pid, NULL, 0);
			pid = -1;
		}
	}
	close(ep[0]);
	free(argv);
	free(envp);
	if (pid < 0) {
		reply(a, m->seq, -e, 0, 0);
		return;
	}
	a->jobs[a->njobs++] = pid;
	reply(a, m->seq, pid, 0, 0);
}

static void reap(struct agent *a)
{
	for (;;) {
		int st;
		struct rusage ru;
		pid_t pid = wait4(-1, &st, WNOHANG, &ru);
		if (pid <= 0)
			return;
		if (!is_job(a, pid, 1))
			continue;   /* an orphan that ended: PID 1 reaps it, nobody asked */
		struct agent_msg m = {.type = AG_EXIT, .pid = pid, .arg = st};
		m.val1 = (int64_t)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec;
		m.val2 = (int64_t)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec;
		send_msg(a, &m);
	}
}

static int handle(struct agent *a)
{
	static char buf[sizeof(struct agent_msg) + AGENT_MAX_PAYLOAD];
	char cbuf[CMSG_SPACE(sizeof(int) * 8)];
	struct iovec iov = {buf, sizeof(buf)};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	ssize_t n = recvmsg(a->sock, &mh, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -1;
	if (n == 0)
		return -1;
	int fds[8], nfds = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			for (int i = 0; i < k && nfds < 8; i++)
				memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
		}
	}
	struct agent_msg m;
	if ((size_t)n < sizeof(m))
		goto out;
	memcpy(&m, buf, sizeof(m));
	size_t plen = (size_t)n - sizeof(m);
	switch (m.type) {
	case AG_PING:
		reply(a, m.seq, getpid(), 0, 0);
		break;
	case AG_SPAWN:
		if (plen == 0 || buf[n - 1] != '\0')
			reply(a, m.seq, -EINVAL, 0, 0);
		else
			do_spawn(a, &m, buf + sizeof(m), plen, fds, nfds);
		break;
	case AG_SIGNAL:
		if (m.pid <= 1 || m.arg < 0 || m.arg > 64) {
			reply(a, m.seq, 0, -EINVAL, 0);
		} else if (m.val1) {
			reply(a, m.seq, 0, 0, signal_tree(m.pid, m.arg));
		} else {
			/* the job leader runs setsid(): its group is its pid */
			int r = kill(-m.pid, m.arg) < 0 && kill(m.pid, m.arg) < 0 ? -errno : 0;
			reply(a, m.seq, 0, r, r == 0);
		}
		break;
	case AG_FREEZE:
		reply(a, m.seq, 0, freeze_all(m.arg), 0);
		break;
	case AG_COUNT: {
		static struct proc_ent procs[MAX_PROCS];
		int cnt = list_procs(procs, MAX_PROCS), live = 0;
		for (int i = 0; i < cnt; i++)
			if (procs[i].state != 'Z')
				live++;
		reply(a, m.seq, 0, 0, live);
		break;
	}
	default:
		reply(a, m.seq, 0, -ENOSYS, 0);
	}
out:
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	return 0;
}

/* --connect PATH: the socket to seerfs, made again after every hangup;
 * blocks until seerfs listens. Returns the connected fd on AGENT_FD. */
static int connect_seerfs(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return -1;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -1;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			if (fd != AGENT_FD) {
				dup3(fd, AGENT_FD, O_CLOEXEC);
				close(fd);
			}
			return AGENT_FD;
		}
		close(fd);
		struct timespec ts = {0, 100000000};
		nanosleep(&ts, NULL);
	}
}

/* seerfs went away: every other process of the sandbox ends (PID 1 of its
 * own namespace only), and what the agent knew of its jobs with them. */
static void end_all(struct agent *a)
{
	if (getpid() != 1)
		return;
	kill(-1, SIGKILL);
	for (;;) {
		pid_t p = waitpid(-1, NULL, 0);
		if (p < 0 && errno != EINTR)
			break;
	}
	a->njobs = 0;
}

int main(int argc, char **argv)
{
	struct agent a = {.sock = AGENT_FD};
	const char *connect_path = argc == 3 && !strcmp(argv[1], "--connect") ? argv[2] : NULL;
	if (argc > 1 && !connect_path)
		return 2;
	/* Out of the sandbox's reach: a process of the same uid could otherwise
	 * ptrace us (and hold us stopped through a snapshot's freeze) or read
	 * our memory and fds through /proc/1. Not dumpable, that takes
	 * CAP_SYS_PTRACE, which no process of the sandbox has. Signals from
	 * inside reach PID 1 only for handlers it installed: none. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		return 1;
	/* No handler may be left that a sanitizer's runtime installed (the
	 * ASan build's SIGSEGV, SIGBUS, ...): a handler is what lets a signal
	 * from inside reach PID 1. A fault of our own still ends us. */
	for (int sig = 1; sig < SIGRTMIN; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			signal(sig, SIG_DFL);
	/* fd 3 is the socket's: held by a placeholder until it connects, so
	 * that the signalfd below does not take it. */
	if (connect_path) {
		int ph = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (ph >= 0 && ph != AGENT_FD) {
			dup3(ph, AGENT_FD, O_CLOEXEC);
			close(ph);
		}
	}
	sigset_t ss;
	sigemptyset(&ss);
	sigaddset(&ss, SIGCHLD);
	sigprocmask(SIG_BLOCK, &ss, NULL);
	signal(SIGPIPE, SIG_IGN);
	a.sigfd = signalfd(-1, &ss, SFD_CLOEXEC | SFD_NONBLOCK);
	if (connect_path && connect_seerfs(connect_path) < 0)
		return 1;
	fcntl(a.sock, F_SETFD, FD_CLOEXEC);
	if (a.sigfd < 0)
		return 1;
	for (;;) {
		struct pollfd p[2] = {{a.sock, POLLIN, 0}, {a.sigfd, POLLIN, 0}};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents) {
			struct signalfd_siginfo si;
			while (read(a.sigfd, &si, sizeof(si)) > 0)
				;
			reap(&a);
		}
		int gone = 0;
		if (p[0].revents & POLLIN)
			gone = handle(&a) < 0;
		else if (p[0].revents & (POLLHUP | POLLERR))
			gone = 1;
		if (!gone)
			continue;
		if (!connect_path)
			break;
		close(a.sock);
		end_all(&a);
		if (connect_seerfs(connect_path) < 0)
			return 1;
	}
	/* seerfs is gone: end the sandbox's processes with us. Only as PID 1
	 * of its own namespace: anywhere else kill(-1) would hit the host. */
	if (getpid() == 1)
		kill(-1, SIGKILL);
	return 0;
}
