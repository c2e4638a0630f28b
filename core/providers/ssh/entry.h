/*
 * entry.h - the ssh provider's entries in the providers file
 * (-o providers=FILE, default $XDG_CONFIG_HOME/seerfs/providers.json):
 *
 *   {"gpu1": {"type": "ssh", "host": "gpu1.example", "port": 22, "user": "me",
 *             "identity_file": "~/.ssh/id_ed25519", "known_hosts": "~/.ssh/known_hosts",
 *             "workdir": "/srv/seerfs", "mode": "host", "timeout": 30}}
 *
 * core/registry.c reads the file (again each time a config names a
 * provider, so an edit applies to the next sandbox without a remount) and
 * hands an entry of type "ssh" to ssh_entry_parse. Parsed entries are
 * interned in the provider's per-context state (struct ssh_state) and live
 * as long as the seerfs: a sandbox keeps a plain pointer to its entry
 * (sb->prov_settings), and two sandboxes naming identical settings share
 * one entry (and one connection).
 */
#ifndef SEER_SSH_ENTRY_H
#define SEER_SSH_ENTRY_H

#include "core/providers/entryfield.h"

#include <pthread.h>
#include <stddef.h>

struct seer_ctx;
struct ssh_host;
struct json_object;

enum seer_ssh_mode { SEER_SSH_HOST, SEER_SSH_DIRECT };

/* One entry of type "ssh". */
struct ssh_entry {
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
	int exec_channel;                   /* "exec": "channel": no resident agent (ssh.c) */
	struct ssh_host *conn;              /* the shared connection (ssh.c) */
};

/* The ssh provider's state in one seerfs (its slot of the context): the
 * interned entries and, through them, their connections. Made by
 * ssh_state_init when the context opens; lives until the process ends. */
struct ssh_state {
	struct entry_set entries;           /* struct ssh_entry */
};

/* The provider's init and cleanup (struct seer_provider). */
int ssh_state_init(struct seer_ctx *ctx, void **state);
void ssh_state_cleanup(struct seer_ctx *ctx, void *state);

/* Parses entry `name` of the providers file `file` (the JSON object o)
 * and returns its interned copy in *settings. -EINVAL with a message
 * naming the file, the entry and the field. */
int ssh_entry_parse(struct seer_ctx *ctx, void *state, const char *file, const char *name, struct json_object *o,
		    const void **settings, char *err, size_t errlen);

#endif
