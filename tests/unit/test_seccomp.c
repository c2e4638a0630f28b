/*
 * test_seccomp.c - unit tests of core/lib/seccomp_filter.c: the filter for a
 * machine it does not know is refused with a message naming it (the ssh
 * provider then refuses the sandbox instead of running it unfiltered),
 * filters for other machines are built, system call numbers come from the
 * right table, and the native filter, loaded in a child, denies what it
 * should and allows what it should.
 */
#include "core/lib/seccomp_filter.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static char err[512];

/* The size of the program in fd (or -1). */
static long prog_size(int fd)
{
	struct stat st;
	return fd >= 0 && fstat(fd, &st) == 0 ? (long)st.st_size : -1;
}

static void unknown_machines(void)
{
	static const char *const bad[] = {"vax", "armv7l", "", "x86_64 ", "X86_64", NULL};
	for (int i = 0; bad[i]; i++) {
		err[0] = '\0';
		int fd = seer_seccomp_fd(bad[i], err, sizeof(err));
		CHECK(fd == -ENOTSUP, "\"%s\": %d", bad[i], fd);
		CHECK(has(err, "machine type") && has(err, bad[i]) && has(err, "x86_64"),
		      "\"%s\": message \"%s\" names neither the machine nor the known ones", bad[i], err);
		CHECK(seer_syscall_nr(bad[i], "prctl") == -ENOTSUP, "\"%s\": prctl number", bad[i]);
	}
}

static void known_machines(void)
{
	static const char *const good[] = {"x86_64", "aarch64", "i686", "ppc64le", "s390x", "riscv64", NULL};
	long sizes[8] = {0};
	for (int i = 0; good[i]; i++) {
		err[0] = '\0';
		int fd = seer_seccomp_fd(good[i], err, sizeof(err));
		sizes[i] = prog_size(fd);
		CHECK(fd >= 0, "%s: %d (%s)", good[i], fd, err);
		CHECK(sizes[i] > 0 && sizes[i] % (long)sizeof(struct sock_filter) == 0, "%s: %ld bytes", good[i],
		      sizes[i]);
		if (fd >= 0)
			close(fd);
	}
	/* The table is the machine's: numbers every Linux port has fixed. */
	CHECK(seer_syscall_nr("x86_64", "prctl") == 157, "x86_64 prctl %d", seer_syscall_nr("x86_64", "prctl"));
	CHECK(seer_syscall_nr("aarch64", "prctl") == 167, "aarch64 prctl %d", seer_syscall_nr("aarch64", "prctl"));
	CHECK(seer_syscall_nr("riscv64", "prctl") == 167, "riscv64 prctl %d", seer_syscall_nr("riscv64", "prctl"));
	CHECK(seer_syscall_nr("i686", "prctl") == 172, "i686 prctl %d", seer_syscall_nr("i686", "prctl"));
	CHECK(seer_syscall_nr("ppc64le", "prctl") == 171, "ppc64le prctl %d", seer_syscall_nr("ppc64le", "prctl"));
	CHECK(seer_syscall_nr("s390x", "prctl") == 172, "s390x prctl %d", seer_syscall_nr("s390x", "prctl"));
	CHECK(seer_syscall_nr(NULL, "prctl") == SYS_prctl, "native prctl %d", seer_syscall_nr(NULL, "prctl"));
	CHECK(seer_syscall_nr("x86_64", "no_such_call") == -ENOENT, "unknown call");
}

/* In a child: load the native filter, then what must fail and what must
 * work. The exit code is the number of the first check that went wrong. */
static int child_checks(int fd)
{
	struct sock_filter prog[4096];
	ssize_t n = read(fd, prog, sizeof(prog));
	if (n <= 0 || n % (ssize_t)sizeof(prog[0]))
		return 10;
	struct sock_fprog fp = {.len = (unsigned short)(n / (ssize_t)sizeof(prog[0])), .filter = prog};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fp) < 0)
		return 11;
	if (syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0) != -1 || errno != EPERM)
		return 12;
	if (unshare(CLONE_NEWUSER) != -1 || errno != EPERM)
		return 13;
	if (syscall(SYS_mount, "none", "/", "tmpfs", 0, NULL) != -1 || errno != EPERM)
		return 14;
	/* allowed: a fork, and prctl for the agent's PR_SET_DUMPABLE */
	pid_t p = fork();
	if (p == 0)
		_exit(7);
	int st;
	if (p < 0 || waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 7)
		return 15;
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 || prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0)
		return 16;
	return 0;
}

static void native_filter_works(void)
{
	int fd = seer_seccomp_fd(NULL, err, sizeof(err));
	CHECK(fd >= 0, "native: %d (%s)", fd, err);
	if (fd < 0)
		return;
	pid_t p = fork();
	if (p == 0)
		_exit(child_checks(fd));
	int st = 0;
	CHECK(p > 0 && waitpid(p, &st, 0) == p, "fork");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the filtered child failed check %d (status %#x)",
	      WIFEXITED(st) ? WEXITSTATUS(st) : -1, st);
	close(fd);
}

int main(void)
{
	unknown_machines();
	known_machines();
	native_filter_works();
	return check_done("seccomp");
}
