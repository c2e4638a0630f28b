/*
 * sandbox.h - a sandbox: the object every part of seerfs holds (its
 * fields, references, log, error, progress and environment; sandbox.c).
 * What it goes through is core/lifecycle.h's.
 *
 * States: new -> provisioning -> running | failed; running -> terminating ->
 * terminated; failed or terminated -> provisioning again on a new config
 * (or `retry`). Every change is written to state.json before it is shown,
 * so a restarted seerfs shows the same states.
 */
#ifndef SEER_SANDBOX_H
#define SEER_SANDBOX_H

#include <pthread.h>
#include <stdint.h>

#include "core/config.h"
#include "core/ctx.h"
#include "core/lib/util.h"

enum sb_state {
	SB_NEW,
	SB_PROVISIONING,
	SB_RUNNING,
	SB_FAILED,
	SB_TERMINATING,
	SB_TERMINATED,
};

const char *sb_state_name(enum sb_state s);

struct seer_provider;
struct json_object;
struct jobtab;
struct sesstab;
struct fntab;

struct sandbox {
	struct seer_ctx *ctx;
	struct sandbox *next;          /* ctx->sandboxes, under ctx->lock */
	char name[72];
	char *dir;                     /* state_dir/sandboxes/NAME */
	uint32_t serial;               /* names its inodes for this session */
	int refs;                      /* under ctx->lock; the list holds one */
	int removed;                   /* rmdir'd; no new lookups */

	pthread_mutex_t lock;          /* everything below */
	pthread_cond_t cond;           /* state changes */
	enum sb_state state;
	uint64_t created_ns, since_ns;
	char id[40];
	char *reason;                  /* why failed/terminated */
	char *progress;                /* one line while provisioning */
	char *error;                   /* last error a person can act on */
	char *config_text;             /* config.json as written (NULL: none yet) */
	char *effective_text;          /* a fork's config merged with its snapshot's (NULL: not a fork) */
	struct seer_config cfg;        /* parsed effective_text, else config_text */
	const struct seer_provider *prov;
	void *priv;                    /* the provider's */
	const void *prov_settings;     /* its providers-file entry, as its type parsed it; NULL for built-ins */
	uint64_t deadline_ns;          /* timeout; 0 = none */
	int busy_op;                   /* a provisioning/terminating thread runs */
	volatile int cancel;           /* ask provisioning to stop */
	char *terminate_snapshot;      /* snapshot before terminating */
	struct jobtab *jobs;
	struct sesstab *sessions;      /* notebook sessions (core/sessions/sessions.c) */
	struct fntab *functions;       /* served functions (core/sessions/functions.c) */
	uint64_t gen;                  /* bumped on every visible change */
	struct sb_step *steps;         /* the last provisioning's steps and their times */
	size_t n_steps;
	double prov_s;                 /* how long it took (0: none recorded) */
};

struct sb_step {
	char name[40];
	double s;
};

/* Lookup by name or serial; returns a referenced sandbox or NULL. */
struct sandbox *sandbox_get(struct seer_ctx *ctx, const char *name);
struct sandbox *sandbox_get_serial(struct seer_ctx *ctx, uint32_t serial);
void sandbox_ref(struct sandbox *sb);
void sandbox_put(struct sandbox *sb);

/* Texts shown by the control files; the caller frees them. */
char *sandbox_error_text(struct sandbox *sb);
char *sandbox_config_text(struct sandbox *sb);
/* Path of the log file. */
void sandbox_log_path(struct sandbox *sb, char *buf, size_t len);

/* Appends a timestamped line to the log. */
void sandbox_log(struct sandbox *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Sets the last error (also logged). */
void sandbox_set_error(struct sandbox *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Clears it (an earlier rejection no longer applies). */
void sandbox_clear_error(struct sandbox *sb);
/* Sets the provisioning progress line shown in status (NULL clears). */
void sandbox_set_progress(struct sandbox *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Records how long a provisioning step took (status, info.json). */
void sandbox_step_time(struct sandbox *sb, const char *step, double seconds);

/* Whether the state is one a `wait` read must block on. */
int sandbox_settling(struct sandbox *sb);

/* Tells fs/ that something visible changed (status, log, jobs...). */
void sandbox_changed(struct sandbox *sb);

/* Whether its config gives it the network (cfg.network, read under its lock). */
int sandbox_network(struct sandbox *sb);

/* Environment for a process in the sandbox: config env, secrets, basics.
 * NULL-terminated; free with strv_free. */
char **sandbox_environ(struct sandbox *sb);
void strv_free(char **v);

/* STATE/sandboxes/NAME/provisioned.json, parsed (an empty object with
 * "steps" when missing or unreadable); the caller puts it. */
struct json_object *sandbox_provisioned(struct sandbox *sb);

#endif
