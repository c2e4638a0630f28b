/*
 * seccomp_filter.h - the system call filter every sandbox runs under.
 *
 * On the model of Docker's default profile: everything is allowed but the
 * calls that reach the kernel's shared state or its rarely used, often
 * exploited corners (keyrings, mounts and namespaces, BPF, perf, module and
 * kexec loading, userfaultfd, io_uring, the clock, swap, reboot, ...). Those
 * fail with EPERM (clone3 with ENOSYS, so that libc falls back to clone,
 * whose namespace flags the filter can see). Built with libseccomp and
 * handed to bubblewrap as a compiled BPF program (`--seccomp FD`).
 */
#ifndef SEER_SECCOMP_FILTER_H
#define SEER_SECCOMP_FILTER_H

#include <stddef.h>
#include <stdint.h>

/* A memfd holding the filter as BPF for the machine named by `uname -m`
 * output machine (NULL: this one), positioned at 0; or -errno with err set. */
int seer_seccomp_fd(const char *machine, char *err, size_t n);

/* The number of system call name on machine (`uname -m`; NULL: this one),
 * from libseccomp's tables: -ENOTSUP for a machine the filter does not
 * know, -ENOENT for a call that machine lacks. The ssh provider's agent
 * needs prctl's, which differs between architectures. */
int seer_syscall_nr(const char *machine, const char *name);

#endif
