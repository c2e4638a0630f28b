/*
 * freezer.h - the cgroup freezer of a local sandbox.
 *
 * A snapshot of a running sandbox must be one point in time. The agent's
 * SIGSTOP to every process is a request the sandbox can dodge (a process
 * in a long system call, one forked while the signal went round); the
 * cgroup freezer is not: the kernel stops every task of the cgroup and says
 * when all are stopped. Where seerfs may make cgroups (root, with a cgroup
 * v2 hierarchy, or v1's freezer controller), each sandbox gets one; the
 * sandbox's processes cannot leave it (no cgroupfs inside, no privilege).
 */
#ifndef SEER_FREEZER_H
#define SEER_FREEZER_H

struct seer_freezer {
	char *dir;   /* the sandbox's cgroup directory; NULL: none */
	int v2;      /* cgroup.freeze (v2) or freezer.state (v1) */
};

/* Makes the cgroup of sandbox `name` for daemon `owner` (its pid): 0, or
 * -ENOENT where this host offers no freezer we may use (f->dir stays NULL). */
int freezer_create(struct seer_freezer *f, int owner, const char *name);
/* Freezes (1) or thaws (0); freezing waits up to timeout_s for every task
 * to be frozen, else thaws again and returns -ETIMEDOUT. */
int freezer_set(const struct seer_freezer *f, int frozen, double timeout_s);
/* Removes the cgroup (once its processes are gone) and frees f. */
void freezer_remove(struct seer_freezer *f);

/* The cgroups of daemons that died without removing them (SIGKILL while a
 * snapshot had a sandbox frozen): their tasks are killed and thawed, and
 * the cgroups removed. Run once per daemon, as root. */
void freezer_reap_stale(void);

#endif
