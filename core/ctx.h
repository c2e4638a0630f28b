/*
 * ctx.h - the one context struct of a seerfs process.
 *
 * Every piece of mutable state that is not owned by a single sandbox lives
 * here: options, the state directory, the list of sandboxes and snapshots,
 * and the hooks through which core/ tells fs/ that something changed.
 */
#ifndef SEER_CTX_H
#define SEER_CTX_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/lib/idmap.h"

struct sandbox;
struct jobio;
struct seer_provider;

/* Slots of per-provider state (core/registry.c's registry has at most this
 * many providers). */
#define SEER_PROVIDER_SLOTS 8

/* How core/ tells fs/ that what a file shows changed (for kernel cache
 * invalidation and for pending blocking reads). Set by fs/ at start-up. */
struct seer_fs_hooks {
	void (*changed)(void *arg, struct sandbox *sb);    /* state, status, log, jobs */
	void (*root_gone)(void *arg, struct sandbox *sb);  /* root/ must be dropped */
	void (*job_started)(void *arg, struct sandbox *sb); /* its files may change now */
	void *arg;
};

struct seer_ctx {
	char *state_dir;        /* absolute; holds sandboxes/, snapshots/, models/ */
	char *mountpoint;       /* absolute */
	char *start_cwd;        /* relative local_files/local_dirs resolve here */
	char *agent_path;       /* the seerfs-agent binary (PID 1 of local sandboxes) */
	char *providers_file;   /* named providers (ssh, ...) */
	char *model_cache;      /* shared cache of hub models */
	int lock_fd;            /* flock on state_dir/lock: one daemon per state dir */
	uid_t uid;              /* the mounting user */
	gid_t gid;
	struct seer_idmap ids;  /* the host ids of the sandboxes' ids (core/lib/idmap.h) */
	char *idmap_user;       /* -o idmap_user: whose subordinate ids a root seerfs uses */

	pthread_mutex_t lock;   /* protects the list below and next_serial */
	struct sandbox *sandboxes;
	uint32_t next_serial;   /* inode-number space: never reused in a session */

	pthread_t timer;        /* enforces sandbox timeouts */
	pthread_cond_t timer_cond;
	int stopping;

	struct seer_fs_hooks hooks;
	/* Frees what core/lifecycle.c attached to a sandbox (jobs, sessions,
	 * functions) when the object goes (sandbox.c sits below them). */
	void (*sb_parts_free)(struct sandbox *sb);
	struct jobio *jobio;    /* the thread that moves job output to disk (core/jobs.c) */
	/* Each provider's own state, by its place in the registry
	 * (seer_provider_state, core/provider.h; filled by core/registry.c). */
	const struct seer_provider *prov_ops[SEER_PROVIDER_SLOTS];
	void *prov_state[SEER_PROVIDER_SLOTS];
};

#endif
