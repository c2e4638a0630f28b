/*
 * entry.c - the docker provider's providers-file entries (see entry.h).
 */
#include "core/providers/docker/entry.h"
#include "core/ctx.h"
#include "core/providers/entryfield.h"
#include "core/lib/engine.h"
#include "core/lib/util.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int docker_state_init(struct seer_ctx *ctx, void **state)
{
	struct docker_state *st = xcalloc(1, sizeof(*st));
	entry_set_init(&st->entries);
	pthread_mutex_init(&st->agent_lock, NULL);
	struct sbuf b = {0};
	sbuf_printf(&b, "%s/docker/agent", ctx->state_dir);
	st->agent_path = b.data;
	*state = st;
	return 0;
}

static void entry_free(void *p)
{
	struct docker_entry *e = p;
	free(e->name);
	free(e->endpoint);
	free(e->sock);
	free(e->url);
	free(e->ca);
	free(e->cert);
	free(e->key);
	free(e->image);
	if (e->eng)
		engine_close(e->eng);
	pthread_mutex_destroy(&e->lock);
	free(e);
}

/* Called after every sandbox stopped: nothing refers to the entries. */
void docker_state_cleanup(struct seer_ctx *ctx, void *state)
{
	(void)ctx;
	struct docker_state *st = state;
	entry_set_cleanup(&st->entries, entry_free);
	free(st->agent_path);
	pthread_mutex_destroy(&st->agent_lock);
	free(st);
}

static int same_entry(const void *pa, const void *pb)
{
	const struct docker_entry *a = pa, *b = pb;
	return entry_same_str(a->name, b->name) && entry_same_str(a->endpoint, b->endpoint) &&
	       entry_same_str(a->ca, b->ca) && entry_same_str(a->cert, b->cert) && entry_same_str(a->key, b->key) &&
	       entry_same_str(a->image, b->image) && a->timeout_ms == b->timeout_ms && a->local == b->local &&
	       a->userns_host == b->userns_host && a->userns_auto == b->userns_auto;
}

/* A loopback host of tcp://HOST:PORT: the engine is on this machine. */
static int loopback(const char *hostport)
{
	static const char *const lo[] = {"127.", "localhost:", "localhost", "[::1]", NULL};
	for (int i = 0; lo[i]; i++)
		if (!strncmp(hostport, lo[i], strlen(lo[i])))
			return 1;
	return 0;
}

/* endpoint -> sock/url; -EINVAL with a message for anything else. */
static int parse_endpoint(struct docker_entry *e, const char *file, const char *name, char *err, size_t n)
{
	const char *ep = e->endpoint;
	struct sbuf b = {0};
	if (!strncmp(ep, "unix://", 7)) {
		if (ep[7] != '/' || strlen(ep + 7) >= 108) {
			snprintf(err, n,
				 "providers file %s: entry \"%s\": field \"endpoint\": \"%s\" must name an absolute socket path under 108 bytes (unix:///var/run/docker.sock)",
				 file, name, ep);
			return -EINVAL;
		}
		e->sock = xstrdup(ep + 7);
		e->url = xstrdup("http://docker");
		e->local = 1;
		return 0;
	}
	if (!strncmp(ep, "tcp://", 6)) {
		const char *hp = ep + 6;
		const char *colon = strrchr(hp, ':');
		if (!*hp || strpbrk(hp, "/?#@ ") || !colon || !colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1)) {
			snprintf(err, n,
				 "providers file %s: entry \"%s\": field \"endpoint\": \"%s\" must be tcp://HOST:PORT",
				 file, name, ep);
			return -EINVAL;
		}
		sbuf_printf(&b, "%s://%s", e->cert || e->ca ? "https" : "http", hp);
		e->url = b.data;
		e->local = loopback(hp);
		return 0;
	}
	snprintf(err, n,
		 "providers file %s: entry \"%s\": field \"endpoint\": \"%s\" is neither unix:///PATH nor tcp://HOST:PORT",
		 file, name, ep);
	return -EINVAL;
}

/* An image reference as the engine takes it: [registry/]name[:tag][@digest]. */
static int image_valid(const char *s)
{
	size_t l = strlen(s);
	if (!l || l > 255 || s[0] == '-' || s[0] == ':' || s[0] == '/')
		return 0;
	return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:@") == l;
}

static int parse_fields(struct seer_ctx *ctx, const char *file, const char *name, struct json_object *o,
			struct docker_entry **out, char *err, size_t n)
{
	static const char *const known[] = {"type", "endpoint", "ca", "cert", "key", "image", "timeout", "local", "userns", NULL};
	int r = entry_check_fields(o, known, file, name, err, n);
	if (r < 0)
		return r;
	json_object_object_foreach(o, key, val) {
		if (strcmp(key, "timeout") && strcmp(key, "local") && !json_object_is_type(val, json_type_string)) {
			snprintf(err, n, "providers file %s: entry \"%s\": field \"%s\" must be a string", file, name, key);
			return -EINVAL;
		}
	}
	struct docker_entry *e = xcalloc(1, sizeof(*e));
	pthread_mutex_init(&e->lock, NULL);
	e->name = xstrdup(name);
	const char *ep = entry_str(o, "endpoint");
	e->endpoint = xstrdup(ep && *ep ? ep : "unix:///var/run/docker.sock");
	e->ca = entry_local_path(ctx->uid, entry_str(o, "ca"));
	e->cert = entry_local_path(ctx->uid, entry_str(o, "cert"));
	e->key = entry_local_path(ctx->uid, entry_str(o, "key"));
	const char *img = entry_str(o, "image");
	e->image = xstrdup(img ? img : "debian:bookworm-slim");
	e->timeout_ms = 30000;
	r = parse_endpoint(e, file, name, err, n);
	if (r == 0 && e->sock && (e->ca || e->cert || e->key)) {
		snprintf(err, n,
			 "providers file %s: entry \"%s\": \"ca\", \"cert\" and \"key\" are for tcp:// endpoints, not %s",
			 file, name, e->endpoint);
		r = -EINVAL;
	}
	if (r == 0 && (e->ca || e->cert || e->key) && !(e->ca && e->cert && e->key)) {
		snprintf(err, n, "providers file %s: entry \"%s\": \"ca\", \"cert\" and \"key\" go together (TLS with client certificates); give all three or none",
			 file, name);
		r = -EINVAL;
	}
	if (r == 0 && !image_valid(e->image)) {
		snprintf(err, n, "providers file %s: entry \"%s\": field \"image\": \"%s\" is not an image reference",
			 file, name, e->image);
		r = -EINVAL;
	}
	struct json_object *v;
	if (r == 0)
		r = entry_timeout(o, file, name, &e->timeout_ms, err, n);
	if (r == 0 && json_object_object_get_ex(o, "local", &v)) {
		if (!json_object_is_type(v, json_type_boolean)) {
			snprintf(err, n, "providers file %s: entry \"%s\": field \"local\" must be true or false", file, name);
			r = -EINVAL;
		} else {
			e->local = json_object_get_boolean(v);
		}
	}
	const char *un = entry_str(o, "userns");
	if (r == 0 && un && strcmp(un, "auto") && strcmp(un, "host")) {
		snprintf(err, n, "providers file %s: entry \"%s\": field \"userns\" is \"auto\" (a user namespace where the engine offers one) or \"host\" (none), not \"%s\"",
			 file, name, un);
		r = -EINVAL;
	}
	e->userns_host = un && !strcmp(un, "host");
	e->userns_auto = un && !strcmp(un, "auto");
	if (r < 0) {
		entry_free(e);
		return r;
	}
	*out = e;
	return 0;
}

int docker_entry_parse(struct seer_ctx *ctx, void *state, const char *file, const char *name, struct json_object *o,
		       const void **settings, char *err, size_t n)
{
	struct docker_entry *e = NULL;
	int r = parse_fields(ctx, file, name, o, &e, err, n);
	if (r < 0)
		return r;
	struct docker_state *st = state;
	*settings = entry_set_intern(&st->entries, e, same_entry, entry_free);
	return 0;
}
