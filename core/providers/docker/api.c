/*
 * api.c - Engine API requests of the docker provider (see api.h).
 */
#include "core/lib/util.h"
#include "core/providers/docker/api.h"
#include "core/providers/docker/entry.h"

#include <curl/curl.h>
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The newest API this client knows: dockerd 20.10 (Debian 12) and Podman
 * 4.x's compatible service both speak it. */
#define DK_API_MAX "1.41"

static size_t on_data(char *p, size_t sz, size_t nm, void *ud)
{
	struct sbuf *b = ud;
	if (b->len + sz * nm > (512u << 20))
		return 0;
	return sbuf_append(b, p, sz * nm) < 0 ? 0 : sz * nm;
}

static CURL *handle_for(struct docker_entry *e, int timeout_ms)
{
	CURL *c = curl_easy_init();
	if (!c)
		return NULL;
	if (e->sock)
		curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, e->sock);
	if (e->ca)
		curl_easy_setopt(c, CURLOPT_CAINFO, e->ca);
	if (e->cert) {
		curl_easy_setopt(c, CURLOPT_SSLCERT, e->cert);
		curl_easy_setopt(c, CURLOPT_SSLKEY, e->key);
	}
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)e->timeout_ms);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(timeout_ms > 0 ? timeout_ms : e->timeout_ms));
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	return c;
}

static int perform(struct docker_entry *e, const char *method, const char *url, const char *body, int timeout_ms,
		   long *status, struct sbuf *resp, char *err, size_t n)
{
	CURL *c = handle_for(e, timeout_ms);
	if (!c) {
		snprintf(err, n, "docker engine %s: cannot make a request (libcurl)", e->endpoint);
		return -ENOMEM;
	}
	struct curl_slist *h = NULL;
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (body) {
		h = curl_slist_append(h, "Content-Type: application/json");
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	} else if (!strcmp(method, "POST") || !strcmp(method, "PUT")) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, 0L);
	}
	if (h)
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	CURLcode cr = curl_easy_perform(c);
	*status = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	if (cr == CURLE_OK)
		return 0;
	int r = cr == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EHOSTUNREACH;
	snprintf(err, n, "docker engine %s cannot be reached: %s%s; start the engine or fix the provider's \"endpoint\"",
		 e->endpoint, curl_easy_strerror(cr), r == -ETIMEDOUT ? " (timed out)" : "");
	return r;
}

/* The API version to speak: the engine's, capped at ours. */
static int negotiate(struct docker_entry *e, char *err, size_t n)
{
	pthread_mutex_lock(&e->lock);
	int have = e->api[0] != '\0';
	pthread_mutex_unlock(&e->lock);
	if (have)
		return 0;
	struct sbuf url = {0}, resp = {0};
	sbuf_printf(&url, "%s/version", e->url);
	long st = 0;
	int r = perform(e, "GET", url.data, NULL, 0, &st, &resp, err, n);
	sbuf_free(&url);
	if (r < 0) {
		sbuf_free(&resp);
		return r;
	}
	struct json_object *o = resp.data ? json_tokener_parse(resp.data) : NULL, *v;
	sbuf_free(&resp);
	const char *ver = o && json_object_object_get_ex(o, "ApiVersion", &v) ? json_object_get_string(v) : NULL;
	if (st != 200 || !ver) {
		json_object_put(o);
		snprintf(err, n, "docker engine %s: GET /version answered %ld without an ApiVersion: not a Docker Engine API",
			 e->endpoint, st);
		return -EPROTO;
	}
	int maj = 0, min = 0;
	sscanf(ver, "%d.%d", &maj, &min);
	pthread_mutex_lock(&e->lock);
	if (maj > 1 || (maj == 1 && min >= 41))
		snprintf(e->api, sizeof(e->api), "%s", DK_API_MAX);
	else
		snprintf(e->api, sizeof(e->api), "%d.%d", maj, min);
	pthread_mutex_unlock(&e->lock);
	json_object_put(o);
	if (maj == 1 && min < 25) {
		snprintf(err, n, "docker engine %s speaks API %s; seerfs needs 1.25 or newer", e->endpoint, ver);
		return -EPROTO;
	}
	return 0;
}

int dk_call_raw(struct docker_entry *e, const char *method, const char *path, const char *body, int timeout_ms,
		long *status, char **raw, size_t *rawlen, char *err, size_t n)
{
	*raw = NULL;
	*rawlen = 0;
	int r = negotiate(e, err, n);
	if (r < 0)
		return r;
	struct sbuf url = {0}, resp = {0};
	pthread_mutex_lock(&e->lock);
	sbuf_printf(&url, "%s/v%s%s", e->url, e->api, path);
	pthread_mutex_unlock(&e->lock);
	r = perform(e, method, url.data, body, timeout_ms, status, &resp, err, n);
	sbuf_free(&url);
	if (r < 0) {
		sbuf_free(&resp);
		return r;
	}
	if (*status < 200 || *status > 299) {
		struct json_object *o = resp.data ? json_tokener_parse(resp.data) : NULL, *v;
		const char *msg = o && json_object_object_get_ex(o, "message", &v) ? json_object_get_string(v) : NULL;
		snprintf(err, n, "docker engine %s: %s %s: %ld %s", e->endpoint, method, path, *status,
			 msg ? msg : "(no message)");
		json_object_put(o);
		sbuf_free(&resp);
		return *status == 404 ? -ENOENT : *status == 409 ? -EEXIST : -EIO;
	}
	*raw = resp.data;
	*rawlen = resp.len;
	return 0;
}

int dk_call(struct docker_entry *e, const char *method, const char *path, const char *body, int timeout_ms,
	    long *status, struct json_object **out, char *err, size_t n)
{
	char *raw;
	size_t len;
	long st;
	if (!status)
		status = &st;
	if (out)
		*out = NULL;
	int r = dk_call_raw(e, method, path, body, timeout_ms, status, &raw, &len, err, n);
	if (r < 0)
		return r;
	if (out && raw)
		*out = json_tokener_parse(raw);
	free(raw);
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
