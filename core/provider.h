/*
 * provider.h - the interface every sandbox provider implements.
 *
 * A provider is one folder, core/providers/NAME/, whose one const struct
 * seer_provider fills every slot below, in the manner of curl's TLS
 * backends: the core calls through this table and never knows which
 * provider it holds. The registry (core/registry.c) has one line per
 * provider: its type name, the parser of its providers-file entries, its
 * ops. Each sandbox keeps its provider's private data in sb->priv; each
 * context keeps one slot of per-provider state (init, cleanup,
 * seer_provider_state).
 *
 * All functions return 0 or a negative errno; where a person needs to act,
 * they also write a message into err (naming what is missing and what to do).
 */
#ifndef SEER_PROVIDER_H
#define SEER_PROVIDER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "core/ctx.h"

struct sandbox;
struct seer_config;
struct seer_ctx;
struct seer_root;
struct json_object;

/* A process to start inside a sandbox. */
struct seer_spawn {
	char *const *argv;
	char *const *envp;       /* complete environment */
	const char *cwd;
	int fd_in, fd_out, fd_err;   /* the provider dups these into the child */
	uint64_t cookie;         /* handed back in the exit callback */
};

/* What the provider reports when a spawned process ends. */
struct seer_exit {
	uint64_t cookie;
	int status;              /* as from waitpid() */
	uint64_t utime_us, stime_us;
};

/* What a provider reports about a snapshot it took. */
struct seer_snap_taken {
	char where[2048];        /* its location in the provider's store (info.json "where"); "": the layer */
	uint64_t bytes, entries; /* size of its files, and how many entries */
	double frozen_s;         /* how long the sandbox's processes were stopped */
};

/* A snapshot as the catalog (core/snapshot.c) knows it. */
struct seer_snap_ref {
	const char *name;
	const char *where;       /* where its provider keeps it; "" : in the state directory */
	const char *layers;      /* in the state directory: its layer dirs, ':' separated, newest first */
};

/* A hub model provisioning downloaded (core/provision.c), in the cache of
 * this machine. */
struct seer_start_model {
	char *dir;               /* CACHE/models--ORG--NAME */
	char *commit;            /* its snapshot there (snapshots/COMMIT) */
	char *mount;             /* its name under /models */
};

/* A host directory the sandbox is shown read-only (providers with
 * host_binds: pip's settings name it). */
struct seer_bind {
	char *host;              /* real path on this machine */
	char *inside;            /* where the sandbox sees it */
};

/* What the core resolved before start: the provider need not ask. */
struct seer_start {
	struct seer_start_model *models;   /* in the order of the config, bases after their PEFT model */
	size_t n_models;
	struct seer_bind *binds;
	size_t n_binds;
	struct seer_snap_ref snap;   /* the snapshot it is restored from; name NULL: none */
};

typedef void (*seer_exit_fn)(struct sandbox *sb, const struct seer_exit *e);

struct seer_provider {
	const char *name;
	/* The provider's per-context state, made when the context opens
	 * (before any sandbox is loaded, and before seerfs forks into the
	 * background: no threads here) and freed after every sandbox stopped.
	 * Reached with seer_provider_state. */
	int (*init)(struct seer_ctx *ctx, void **state);
	void (*cleanup)(struct seer_ctx *ctx, void *state);
	/* Refuses what this provider cannot honour (a GPU the host lacks...). */
	int (*check)(struct sandbox *sb, const struct seer_config *cfg, char *err, size_t errlen);
	/* Creates (first time) or restarts the sandbox's environment, with
	 * the models, binds and snapshot in `in`; blocking. */
	int (*start)(struct sandbox *sb, const struct seer_config *cfg, const struct seer_start *in, char *err,
		     size_t errlen);
	/* Ends every process of the sandbox; its files stay. */
	int (*stop)(struct sandbox *sb);
	/* Removes the sandbox's files for good (after stop). */
	int (*destroy)(struct sandbox *sb);
	/* The sandbox's files as its processes see them, for root/
	 * (core/root.h: an fd on its "/", or an SFTP client and a path);
	 * -ENOTCONN when not running. */
	int (*root)(struct sandbox *sb, struct seer_root *out);
	/* For a root that is not an fd (an fd's the core copies into itself,
	 * walking by fd): copies the host file or directory open as sfd (st:
	 * its stat) to /REL in the sandbox through root (one this provider
	 * handed out), making REL's missing parents; *bad may name the entry
	 * that failed. -ENOTSUP for providers whose roots are fds. */
	int (*copy_in)(struct sandbox *sb, const struct seer_root *root, int sfd, const struct stat *st, const char *rel,
		       char *bad, size_t badn);
	/* Starts a process; *pid receives its id as the provider names it. */
	int (*spawn)(struct sandbox *sb, const struct seer_spawn *req, int *pid, char *err, size_t errlen);
	/* Signals a spawned process, or with tree set its whole process tree. */
	int (*signal)(struct sandbox *sb, int pid, int sig, int tree);
	/* Stops (freeze=1) or resumes (0) every process of the sandbox. */
	int (*freeze)(struct sandbox *sb, int freeze);
	/*
	 * Snapshots. snap_take copies the running sandbox's files as snapshot
	 * snap, its processes stopped for the copy and resumed on every path:
	 * into layer (STATE/snapshots/SNAP.tmp/layer, not made yet) for a
	 * provider whose snapshots live in the state directory (out->where
	 * left empty), or into the provider's own store, out->where saying
	 * where. It returns once the copy is durable and complete, and leaves
	 * nothing behind in its store on failure (-ENOSPC passes through).
	 * -ENOTSUP with a message where this sandbox cannot be snapshotted.
	 * The catalog (core/snapshot.c) writes info.json around it. Restoring
	 * is part of start (struct seer_start's snap).
	 */
	int (*snap_take)(struct sandbox *sb, const char *snap, const char *layer, struct seer_snap_taken *out, char *err,
			 size_t errlen);
	/* Deletes the snapshot stored at where (settings: the provider entry
	 * it was taken on; the snapshot outlives its sandbox). A copy already
	 * gone counts as deleted. */
	int (*snap_remove)(struct seer_ctx *ctx, const void *settings, const char *snap, const char *where, char *err,
			   size_t errlen);
	/* The files of a snapshot taken on this provider, read-only, for
	 * MOUNT/snapshots/NAME/root/ (core/root.h). settings: as for
	 * snap_remove. */
	int (*snap_root)(struct seer_ctx *ctx, const void *settings, const struct seer_snap_ref *snap,
			 struct seer_root *out, char *err, size_t errlen);
	/* Whether any process other than the provider's own is alive. */
	int (*busy)(struct sandbox *sb);
	/* root/ of a sandbox whose root is not an fd: one file operation
	 * that the root's protocol cannot make (SFTP v3: owners, FIFOs,
	 * sockets, link counts, ctime, nanoseconds), made inside the sandbox
	 * (fs/root/sftpfs_agent.c says the request's text and its answer's).
	 * -ENOTSUP where the provider cannot; NULL: never can. */
	int (*fileop)(struct sandbox *sb, const void *req, size_t len, char *reply, size_t cap, size_t *rlen);
	/* Frees sb->priv (the sandbox object is going away). */
	void (*release)(struct sandbox *sb);
	/* One line for status: how the running sandbox is isolated, in words
	 * a user can check ("bubblewrap (...)", "NONE: ..."). Called without
	 * sb->lock held. */
	void (*isolation)(struct sandbox *sb, char *buf, size_t len);
	/* 1: the sandbox runs on this machine and is shown host directories
	 * read-only (models, pip's settings' directories); 0: they are copied
	 * to where it runs. */
	int host_binds;
	/* 1: system_packages, python_version and python_packages are built
	 * by start itself (into the image the sandbox runs, cached): the
	 * core's provisioning neither checks nor installs them. */
	int builds_packages;
};

/* Parses one entry of the providers file (the JSON object o, called name,
 * in file) of the provider's type into *settings, which the provider keeps
 * (in its per-context state) for as long as seerfs runs: sandboxes hold
 * plain pointers to it. -EINVAL with a message naming the file, the entry
 * and the field. */
typedef int (*seer_entry_parse_fn)(struct seer_ctx *ctx, void *state, const char *file, const char *name,
				   struct json_object *o, const void **settings, char *err, size_t errlen);

/* The per-context state of provider p (what its init made; NULL before the
 * context opened or after it closed). */
static inline void *seer_provider_state(struct seer_ctx *ctx, const struct seer_provider *p)
{
	for (int i = 0; i < SEER_PROVIDER_SLOTS; i++)
		if (ctx->prov_ops[i] == p)
			return ctx->prov_state[i];
	return NULL;
}

#endif
