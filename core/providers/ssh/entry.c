/*
 * entry.c - the ssh provider's providers-file entries (see entry.h).
 *
 * Entries are interned rather than owned by a sandbox: a sandbox's config
 * can change, a restart can resolve it again, and the ssh provider keys its
 * shared connection on the entry; an entry that never goes away makes all
 * of that free of lifetime questions at the cost of a few bytes per edit
 * of the file.
 */
#include "core/providers/ssh/entry.h"
#include "core/ctx.h"
#include "core/providers/entryfield.h"
#include "core/lib/util.h"

#include <errno.h>
#include <json-c/json.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ssh_state_init(struct seer_ctx *ctx, void **state)
{
	struct ssh_state *st = xcalloc(1, sizeof(*st));
	entry_set_init(&st->entries);
	*state = st;
	return 0;
}


static int same_entry(const void *pa, const void *pb)
{
	const struct ssh_entry *a = pa, *b = pb;
	return entry_same_str(a->name, b->name) && entry_same_str(a->type, b->type) &&
	       entry_same_str(a->host, b->host) && a->port == b->port && entry_same_str(a->user, b->user) &&
	       entry_same_str(a->identity_file, b->identity_file) && a->use_agent == b->use_agent &&
	       entry_same_str(a->known_hosts, b->known_hosts) && entry_same_str(a->workdir, b->workdir) &&
	       a->mode == b->mode && a->timeout_ms == b->timeout_ms && a->exec_channel == b->exec_channel;
}

static void entry_free(void *p)
{
	struct ssh_entry *e = p;
	free(e->name);
	free(e->type);
	free(e->host);
	free(e->user);
	free(e->identity_file);
	free(e->known_hosts);
	free(e->workdir);
	free(e);
}

void ssh_state_cleanup(struct seer_ctx *ctx, void *state)
{
	/* Entries with a connection stay: sandboxes and the connection's
	 * thread hold plain pointers to them (see above), and that thread ends
	 * with the process. Without any, nothing can refer to them. */
	(void)ctx;
	struct ssh_state *st = state;
	pthread_mutex_lock(&st->entries.lock);
	int linked = 0;
	for (size_t i = 0; i < st->entries.n; i++)
		linked |= ((struct ssh_entry *)st->entries.v[i])->conn != NULL;
	pthread_mutex_unlock(&st->entries.lock);
	if (linked)
		return;
	entry_set_cleanup(&st->entries, entry_free);
	free(st);
}

static int parse_fields(struct seer_ctx *ctx, const char *file, const char *name, struct json_object *o,
			struct ssh_entry **out, char *err, size_t n)
{
	static const char *const known[] = {"type", "host", "port", "user", "identity_file", "agent",
					    "known_hosts", "workdir", "mode", "timeout", "exec", NULL};
	int r = entry_check_fields(o, known, file, name, err, n);
	if (r < 0)
		return r;
	const char *type = "ssh";   /* core/registry.c chose this parser by it */
	const char *host = entry_str(o, "host");
	if (!host || !*host) {
		snprintf(err, n, "providers file %s: entry \"%s\": field \"host\" is missing; add the SSH host name",
			 file, name);
		return -EINVAL;
	}
	struct ssh_entry *e = xcalloc(1, sizeof(*e));
	e->name = xstrdup(name);
	e->type = xstrdup(type);
	e->host = xstrdup(host);
	e->port = 22;
	e->timeout_ms = 30000;
	struct json_object *v;
	if (json_object_object_get_ex(o, "port", &v)) {
		int p = json_object_get_int(v);
		if (!json_object_is_type(v, json_type_int) || p < 1 || p > 65535) {
			snprintf(err, n, "providers file %s: entry \"%s\": field \"port\" must be a number 1..65535", file, name);
			entry_free(e);
			return -EINVAL;
		}
		e->port = p;
	}
	r = entry_timeout(o, file, name, &e->timeout_ms, err, n);
	if (r < 0) {
		entry_free(e);
		return r;
	}
	const char *user = entry_str(o, "user");
	if (!user) {
		struct passwd *pw = getpwuid(ctx->uid);
		user = pw ? pw->pw_name : "root";
	}
	e->user = xstrdup(user);
	e->identity_file = entry_local_path(ctx->uid, entry_str(o, "identity_file"));
	e->use_agent = !e->identity_file;
	if (json_object_object_get_ex(o, "agent", &v))
		e->use_agent = json_object_get_boolean(v);
	const char *kh = entry_str(o, "known_hosts");
	if (kh) {
		e->known_hosts = entry_local_path(ctx->uid, kh);
	} else {
		struct sbuf b = {0};
		sbuf_printf(&b, "%s/.ssh/known_hosts", entry_home(ctx->uid));
		e->known_hosts = b.data;
	}
	const char *mode = entry_str(o, "mode");
	if (!mode || !strcmp(mode, "host")) {
		e->mode = SEER_SSH_HOST;
	} else if (!strcmp(mode, "direct")) {
		e->mode = SEER_SSH_DIRECT;
	} else {
		snprintf(err, n, "providers file %s: entry \"%s\": field \"mode\" must be \"host\" or \"direct\", not \"%s\"",
			 file, name, mode);
		entry_free(e);
		return -EINVAL;
	}
	/* "agent": a sandbox's commands go through its resident agent where
	 * it can run (ssh.c); "channel": each gets an exec channel
	 * and a bubblewrap of its own, as a host without a usable perl does. */
	const char *ex = entry_str(o, "exec");
	if (ex && strcmp(ex, "agent") && strcmp(ex, "channel")) {
		snprintf(err, n, "providers file %s: entry \"%s\": field \"exec\" must be \"agent\" or \"channel\", not \"%s\"",
			 file, name, ex);
		entry_free(e);
		return -EINVAL;
	}
	e->exec_channel = ex && !strcmp(ex, "channel");
	const char *wd = entry_str(o, "workdir");
	if (wd && (wd[0] != '/' || strstr(wd, "/../") || !strcmp(wd, "/") || str_endswith(wd, "/.."))) {
		snprintf(err, n,
			 "providers file %s: entry \"%s\": field \"workdir\" must be an absolute directory other than /, not \"%s\"",
			 file, name, wd);
		entry_free(e);
		return -EINVAL;
	}
	/* Without a workdir, sandboxes go to ~/seerfs of the remote user (the
	 * remote shell expands it; SFTP paths relative to the login directory). */
	e->workdir = xstrdup(wd ? wd : "seerfs");
	size_t l = strlen(e->workdir);
	while (l > 1 && e->workdir[l - 1] == '/')
		e->workdir[--l] = '\0';
	*out = e;
	return 0;
}

int ssh_entry_parse(struct seer_ctx *ctx, void *state, const char *file, const char *name, struct json_object *o,
		    const void **settings, char *err, size_t n)
{
	struct ssh_entry *e = NULL;
	int r = parse_fields(ctx, file, name, o, &e, err, n);
	if (r < 0)
		return r;
	struct ssh_state *st = state;
	*settings = entry_set_intern(&st->entries, e, same_entry, entry_free);
	return 0;
}
