/*
 * providers.h - named providers from the providers file
 * (-o providers=FILE, default $XDG_CONFIG_HOME/seerfs/providers.json):
 *
 *   {"gpu1": {"type": "ssh", "host": "gpu1.example", "port": 22, "user": "me",
 *             "identity_file": "~/.ssh/id_ed25519", "known_hosts": "~/.ssh/known_hosts",
 *             "workdir": "/srv/seerfs", "mode": "host", "timeout": 30}}
 *
 * The file is read again each time a config names a provider, so an edit
 * applies to the next sandbox without a remount. Parsed entries are interned
 * in the seerfs's context (struct seer_remote_ctx, ctx->ssh) and live as long
 * as the seerfs: a sandbox keeps a plain pointer to its entry, and two
 * sandboxes naming identical settings share one entry (and one connection).
 */
#ifndef SEER_PROVIDERS_H
#define SEER_PROVIDERS_H

#include <pthread.h>
#include <stddef.h>

struct seer_ctx;
struct seer_provider;
struct ssh_host;

enum seer_ssh_mode { SEER_SSH_HOST, SEER_SSH_DIRECT };

/* One entry of the providers file (only type "ssh" exists so far). */
struct seer_provider_entry {
	struct seer_provider_entry *next;   /* seer_remote_ctx.entries */
	char *name;                         /* "gpu1" */
	char *type;                         /* "ssh" */
	char *host;
	int port;                           /* default 22 */
	char *user;                         /* default: the mounting user's name */
	char *identity_file;                /* NULL: ssh-agent only */
	int use_agent;                      /* "agent": also try ssh-agent (default: no identity_file) */
	char *known_hosts;                  /* default ~/.ssh/known_hosts of the mounting user */
	char *workdir;                      /* mode host: sandboxes are workdir/NAME; default ~/seerfs on the remote */
	enum seer_ssh_mode mode;
	int timeout_ms;                     /* "timeout" in seconds; default 30 */
	int exec_channel;                   /* "exec": "channel": no resident agent (provider_ssh.c) */
	struct ssh_host *conn;              /* the shared connection (provider_ssh.c) */
};

/* Everything remote providers share in one seerfs: the interned entries and
 * their connections. Created on first use; lives until the process ends. */
struct seer_remote_ctx {
	pthread_mutex_t lock;
	struct seer_provider_entry *entries;
};

/* The remote context of ctx (created on first call). */
struct seer_remote_ctx *seer_remote_ctx(struct seer_ctx *ctx);

/* Reads the providers file and returns the interned entry called name.
 * -ENOENT when the file or the entry is missing, -EINVAL when it is
 * malformed; err says which and what to do. */
int seer_providers_lookup(struct seer_ctx *ctx, const char *name, const struct seer_provider_entry **out,
			  char *err, size_t errlen);

#endif
