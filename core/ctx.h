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

#include "core/providers/local/idmap.h"

struct sandbox;
struct seer_snapshot;
struct jobio;
struct forker_req;

/* How core/ tells fs/ that what a file shows changed (for kernel cache
 * invalidation and for pending blocking reads). Set by fs/ at start-up. */
struct seer_fs_hooks {
	void (*changed)(void *arg, struct sandbox *sb);    /* state, status, log, jobs */
	void (*root_gone)(void *arg, struct sandbox *sb);  /* root/ must be dropped */
	void (*job_started)(void *arg, struct sandbox *sb); /* its files may change now */
	void (*stop_helpers)(void *arg);                    /* end helper processes (snapshot views) */
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
	struct seer_idmap ids;  /* the host ids of the sandboxes' ids (core/providers/local/idmap.h) */
	char *idmap_user;       /* -o idmap_user: whose subordinate ids a root seerfs uses */

	pthread_mutex_t lock;   /* protects the lists below and next_serial */
	struct sandbox *sandboxes;
	uint32_t next_serial;   /* inode-number space: never reused in a session */

	pthread_t timer;        /* enforces sandbox timeouts */
	pthread_cond_t timer_cond;
	int stopping;

	/* Sandboxes are forked from this one long-lived thread: bubblewrap sets
	 * PR_SET_PDEATHSIG, which fires when the *thread* that forked it ends. */
	pthread_t forker;
	pthread_cond_t forker_cond;
	struct forker_req *forker_q;
	int forker_started;

	struct seer_fs_hooks hooks;
	struct jobio *jobio;    /* the thread that moves job output to disk (core/jobs.c) */
	void *ssh;              /* struct seer_remote_ctx: named providers, SSH links (core/providers.h) */
};

/* Opens (creating) the state directory, takes its lock and loads every
 * sandbox. -EBUSY with a message naming the holder when another seerfs has it. */
int seer_ctx_open(struct seer_ctx *ctx, char *err, size_t errlen);
/* Starts sandboxes that were running before and the timeout timer. */
int seer_ctx_start(struct seer_ctx *ctx);
/* Ends every sandbox's processes (states stay): used when the mount went
 * away under us. */
void seer_ctx_stop_processes(struct seer_ctx *ctx);
/* Runs fn(arg) on the forker thread and returns its result. */
int seer_in_forker(struct seer_ctx *ctx, int (*fn)(void *), void *arg);
/* Stops the timer and every sandbox's processes; the state stays on disk. */
void seer_ctx_close(struct seer_ctx *ctx);

#endif
