/*
 * seccomp_filter.c - builds the sandboxes' system call filter (see seccomp_filter.h).
 *
 * The deny list follows Docker's default profile, where a call needs a
 * capability the sandbox never has or touches state shared with the host;
 * ptrace and process_vm_* stay allowed (debuggers inside work; the agent,
 * the only process worth attacking, is not dumpable). Names unknown to
 * this libseccomp or architecture are skipped, not fatal.
 */
#include "core/lib/seccomp_filter.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static const char *const denied[] = {
	/* keyrings: per uid, so shared between sandboxes and with the host */
	"add_key", "keyctl", "request_key",
	/* mounts and namespaces */
	"mount", "umount", "umount2", "pivot_root", "setns", "unshare", "open_tree", "move_mount", "fsopen",
	"fsconfig", "fsmount", "fspick", "mount_setattr", "name_to_handle_at", "open_by_handle_at",
	/* kernel code and its tracing */
	"bpf", "perf_event_open", "kexec_load", "kexec_file_load", "init_module", "finit_module",
	"delete_module", "create_module", "get_kernel_syms", "query_module", "lookup_dcookie", "syslog",
	"userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "fanotify_init",
	/* the machine's clock, swap, power, accounting, quotas */
	"settimeofday", "stime", "clock_settime", "clock_settime64", "clock_adjtime", "clock_adjtime64",
	"adjtimex", "swapon", "swapoff", "reboot", "acct", "quotactl", "quotactl_fd", "nfsservctl",
	"_sysctl", "sysfs", "ustat", "uselib", "vm86", "vm86old", "iopl", "ioperm", "vhangup",
	NULL,
};

static uint32_t arch_of(const char *machine)
{
	static const struct {
		const char *name;
		uint32_t token;
	} arches[] = {
		{"x86_64", SCMP_ARCH_X86_64}, {"aarch64", SCMP_ARCH_AARCH64}, {"i686", SCMP_ARCH_X86},
		{"i386", SCMP_ARCH_X86},      {"ppc64le", SCMP_ARCH_PPC64LE}, {"s390x", SCMP_ARCH_S390X},
		{"riscv64", SCMP_ARCH_RISCV64},
	};
	for (size_t i = 0; i < sizeof(arches) / sizeof(arches[0]); i++)
		if (!strcmp(machine, arches[i].name))
			return arches[i].token;
	return 0;
}

static int add_rules(scmp_filter_ctx f)
{
	for (int i = 0; denied[i]; i++) {
		int nr = seccomp_syscall_resolve_name(denied[i]);
		if (nr == __NR_SCMP_ERROR)
			continue;
		int r = seccomp_rule_add(f, SCMP_ACT_ERRNO(EPERM), nr, 0);
		if (r < 0 && r != -EDOM && r != -EOPNOTSUPP)
			return r;
	}
	int clone3 = seccomp_syscall_resolve_name("clone3");
	if (clone3 != __NR_SCMP_ERROR && seccomp_rule_add(f, SCMP_ACT_ERRNO(ENOSYS), clone3, 0) < 0)
		return -EINVAL;
	/* clone's flags are its first argument (on x86, arm and riscv; s390
	 * swaps the first two): any namespace flag fails. */
	static const unsigned long ns_flags[] = {CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER,
						 CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP};
	int clone = seccomp_syscall_resolve_name("clone");
	for (size_t i = 0; i < sizeof(ns_flags) / sizeof(ns_flags[0]); i++)
		if (seccomp_rule_add(f, SCMP_ACT_ERRNO(EPERM), clone, 1,
				     SCMP_A0(SCMP_CMP_MASKED_EQ, ns_flags[i], ns_flags[i])) < 0)
			return -EINVAL;
	return 0;
}

int seer_seccomp_fd(const char *machine, char *err, size_t n)
{
	uint32_t arch = machine ? arch_of(machine) : seccomp_arch_native();
	if (!arch) {
		snprintf(err, n, "no system call filter for machine type %s; seerfs knows x86_64, aarch64, i686, "
			 "ppc64le, s390x and riscv64", machine);
		return -ENOTSUP;
	}
	scmp_filter_ctx f = seccomp_init(SCMP_ACT_ALLOW);
	if (!f) {
		snprintf(err, n, "cannot build the system call filter (libseccomp): out of memory");
		return -ENOMEM;
	}
	int r = 0, fd = -1;
	if (arch != seccomp_arch_native()) {
		if ((r = seccomp_arch_remove(f, SCMP_ARCH_NATIVE)) == 0)
			r = seccomp_arch_add(f, arch);
	}
	if (r == 0)
		r = add_rules(f);
	if (r == 0 && (fd = memfd_create("seerfs-seccomp", MFD_CLOEXEC)) < 0)
		r = -errno;
	if (r == 0)
		r = seccomp_export_bpf(f, fd);
	if (r == 0 && lseek(fd, 0, SEEK_SET) < 0)
		r = -errno;
	seccomp_release(f);
	if (r < 0) {
		snprintf(err, n, "cannot build the system call filter (libseccomp): %s", strerror(-r));
		if (fd >= 0)
			close(fd);
		return r;
	}
	return fd;
}

int seer_syscall_nr(const char *machine, const char *name)
{
	uint32_t arch = machine ? arch_of(machine) : seccomp_arch_native();
	if (!arch)
		return -ENOTSUP;
	int nr = seccomp_syscall_resolve_name_arch(arch, name);
	return nr == __NR_SCMP_ERROR || nr < 0 ? -ENOENT : nr;
}
