/*
 * api.c - Engine API requests of the docker provider (see api.h), through
 * the shared client core/lib/engine.h: one struct engine per providers-file
 * entry, opened at the first request (which negotiates the API version)
 * and kept; a failed open is tried again by the next request.
 */
#include "core/lib/engine.h"
#include "core/lib/util.h"
#include "core/providers/docker/api.h"
#include "core/providers/docker/entry.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct engine *engine_of(struct docker_entry *e, char *err, size_t n)
{
	pthread_mutex_lock(&e->lock);
	struct engine *eng = e->eng;
	if (!eng) {
		struct engine_opts o = {.endpoint = e->endpoint, .ca = e->ca, .cert = e->cert, .key = e->key,
					.timeout_s = (e->timeout_ms + 999) / 1000};
		char e2[768];
		int r = engine_open(&o, &eng, e2, sizeof(e2));
		if (r < 0) {
			eng = NULL;
			snprintf(err, n, "%s; start the engine or fix the provider's \"endpoint\"", e2);
		} else {
			e->eng = eng;
		}
	}
	pthread_mutex_unlock(&e->lock);
	return eng;
}

struct engine *dk_engine(struct docker_entry *e, char *err, size_t n)
{
	return engine_of(e, err, n);
}

static int status_errno(int st)
{
	return st == 404 ? -ENOENT : st == 409 ? -EEXIST : -EIO;
}

int dk_call(struct docker_entry *e, const char *method, const char *path, const char *body, int timeout_ms,
	    long *status, struct json_object **out, char *err, size_t n)
{
	long st0;
	if (!status)
		status = &st0;
	*status = 0;
	if (out)
		*out = NULL;
	struct engine *eng = engine_of(e, err, n);
	if (!eng)
		return -EHOSTUNREACH;
	struct json_object *b = body ? json_tokener_parse(body) : NULL;
	if (body && !b) {
		snprintf(err, n, "docker engine %s: %s %s: the request body is not JSON", e->endpoint, method, path);
		return -EINVAL;
	}
	struct json_object *reply = NULL;
	int r = timeout_ms > 0 ? engine_call_t(eng, method, path, b, (timeout_ms + 999) / 1000, &reply, err, n)
			       : engine_call(eng, method, path, b, &reply, err, n);
	json_object_put(b);
	if (r < 0) {
		json_object_put(reply);
		return r;
	}
	*status = r;
	if (r < 200 || r > 299) {
		json_object_put(reply);
		return status_errno(r);
	}
	if (out)
		*out = reply;
	else
		json_object_put(reply);
	return 0;
}

static int to_sbuf(void *ud, const void *buf, size_t len)
{
	struct sbuf *b = ud;
	if (b->len + len > (64u << 20))
		return -EFBIG;
	return sbuf_append(b, buf, len) < 0 ? -ENOMEM : 0;
}

int dk_call_raw(struct docker_entry *e, const char *method, const char *path, const char *body, int timeout_ms,
		long *status, char **raw, size_t *rawlen, char *err, size_t n)
{
	(void)timeout_ms;
	*raw = NULL;
	*rawlen = 0;
	*status = 0;
	if (strcmp(method, "GET") || body) {
		snprintf(err, n, "docker engine %s: raw %s %s: only GET without a body", e->endpoint, method, path);
		return -EINVAL;
	}
	struct engine *eng = engine_of(e, err, n);
	if (!eng)
		return -EHOSTUNREACH;
	struct sbuf b = {0};
	int r = engine_get_stream(eng, path, to_sbuf, &b, err, n);
	if (r < 0) {
		sbuf_free(&b);
		return r;
	}
	*status = r;
	*raw = b.data;
	*rawlen = b.len;
	return 0;
}

void dk_demux(const char *raw, size_t len, struct sbuf *out)
{
	size_t o = 0;
	while (o + 8 <= len) {
		const unsigned char *h = (const unsigned char *)raw + o;
		size_t fl = ((size_t)h[4] << 24) | ((size_t)h[5] << 16) | ((size_t)h[6] << 8) | h[7];
		if (h[0] > 2 || h[1] || h[2] || h[3] || o + 8 + fl > len) {
			sbuf_append(out, raw + o, len - o);   /* a TTY's stream: not framed */
			return;
		}
		sbuf_append(out, raw + o + 8, fl);
		o += 8 + fl;
	}
}

struct json_object *dk_get(struct json_object *o, const char *path)
{
	char key[128];
	while (o && *path) {
		const char *dot = strchr(path, '.');
		size_t l = dot ? (size_t)(dot - path) : strlen(path);
		if (l >= sizeof(key))
			return NULL;
		memcpy(key, path, l);
		key[l] = '\0';
		struct json_object *v = NULL;
		if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
			return NULL;
		o = v;
		path = dot ? dot + 1 : path + l;
	}
	return o;
}

int dk_podman(struct docker_entry *e)
{
	char e2[256];
	struct engine *eng = dk_engine(e, e2, sizeof(e2));
	return eng && !strcmp(engine_server_kind(eng), "podman");
}

/* Whether e's engine runs every container in a user namespace of its own
 * (dockerd's --userns-remap: GET /info's SecurityOptions name "userns").
 * Asked each time: an engine restarted without the remap must not keep
 * its containers' ids translated. */
static int dk_remapped(struct docker_entry *e)
{
	char e2[256];
	struct json_object *o = NULL;
	int userns = 0;
	if (dk_call(e, "GET", "/info", NULL, 0, NULL, &o, e2, sizeof(e2)) == 0) {
		struct json_object *so = dk_get(o, "SecurityOptions");
		size_t k = so && json_object_is_type(so, json_type_array) ? json_object_array_length(so) : 0;
		for (size_t i = 0; i < k; i++) {
			const char *v = json_object_get_string(json_object_array_get_idx(so, i));
			if (v && strstr(v, "name=userns"))
				userns = 1;
		}
	}
	json_object_put(o);
	return userns;
}

/* dockerd: its daemon-wide userns-remap unless "userns": "host" opts out
 * (then the container's root is host root). Podman: a per-container
 * "auto" namespace (a range of user `containers`'s in /etc/subuid and
 * /etc/subgid) with "userns": "auto" only, since Podman 4.3 cannot restore
 * a commit of such a container (docker_snap_take refuses them). */
int dk_userns_mode(struct docker_entry *e, struct json_object *hc, int for_build)
{
	if (dk_podman(e)) {
		int own = e->userns_auto && !for_build;
		json_object_object_add(hc, "UsernsMode", json_object_new_string(own ? "auto" : "host"));
		return own;
	}
	if (e->userns_host) {
		json_object_object_add(hc, "UsernsMode", json_object_new_string("host"));
		return 0;
	}
	return dk_remapped(e);
}
