/*
 * engine.c - the Docker Engine API client (engine.h): endpoints, version
 * negotiation, JSON and raw requests over libcurl, hijacked streams over a
 * connect-only curl handle, docker's stdout/stderr demultiplexer. The tar
 * half (libarchive) is in engine_tar.c.
 */
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "core/lib/engine.h"
#include "core/lib/util.h"

#define ENGINE_DEFAULT_TIMEOUT_S 30
#define ENGINE_MAX_REPLY (64u << 20)	/* a JSON reply larger than this is refused */
#define ENGINE_MAX_HDRS 16384		/* a hijack reply's headers */

/*
 * The only process-wide state: libcurl must be initialised once before any
 * thread uses it (as in hf.c), under pthread_once.
 */
static struct engine_global {
	pthread_once_t once;
	CURLcode rc;
} engine_global = { PTHREAD_ONCE_INIT, CURLE_OK };

static void engine_global_init(void)
{
	engine_global.rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct engine {
	char *endpoint;
	struct engine_addr addr;
	char *ca, *cert, *key;
	int tls;
	int timeout_s;
	char base[300];		/* "http://localhost", "https://HOST:PORT" */
	char hosthdr[280];	/* the Host header of hijack requests */
	char api[16];
	char kind[16];
	char version[64];
	CURLSH *share;		/* TLS sessions and DNS, shared by the calls */
	pthread_mutex_t locks[CURL_LOCK_DATA_LAST];
};

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *ud)
{
	struct engine *e = ud;
	pthread_mutex_lock(&e->locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *ud)
{
	struct engine *e = ud;
	pthread_mutex_unlock(&e->locks[data]);
}

/* ------------------------------------------------------------------ */
/* endpoints                                                           */

int engine_parse_endpoint(const char *ep, struct engine_addr *a, char *err, size_t errlen)
{
	memset(a, 0, sizeof(*a));
	if (!ep || !*ep) {
		snprintf(err, errlen, "no engine endpoint given: set \"endpoint\" to unix:///path/docker.sock or tcp://HOST:PORT");
		return -EINVAL;
	}
	if (!strncmp(ep, "unix://", 7)) {
		const char *p = ep + 7;
		if (p[0] != '/') {
			snprintf(err, errlen, "engine endpoint %s: a unix socket's path must be absolute (unix:///run/docker.sock)", ep);
			return -EINVAL;
		}
		if (strlen(p) >= sizeof(a->path)) {
			snprintf(err, errlen, "engine endpoint %s: the socket's path is longer than %zu bytes", ep, sizeof(a->path) - 1);
			return -EINVAL;
		}
		a->is_unix = 1;
		strcpy(a->path, p);
		return 0;
	}
	if (strncmp(ep, "tcp://", 6)) {
		snprintf(err, errlen, "engine endpoint %s: not unix:///path or tcp://HOST:PORT", ep);
		return -EINVAL;
	}
	const char *h = ep + 6, *colon;
	size_t hl;
	if (*h == '[') {
		const char *close = strchr(h, ']');
		if (!close || close[1] != ':') {
			snprintf(err, errlen, "engine endpoint %s: an IPv6 host goes in brackets, then :PORT", ep);
			return -EINVAL;
		}
		hl = (size_t)(close - h - 1);
		h++;
		colon = close + 1;
	} else {
		colon = strrchr(h, ':');
		if (!colon) {
			snprintf(err, errlen, "engine endpoint %s: no port (tcp://HOST:PORT, docker's TLS port is 2376)", ep);
			return -EINVAL;
		}
		hl = (size_t)(colon - h);
		if (memchr(h, ':', hl)) {
			snprintf(err, errlen, "engine endpoint %s: an IPv6 host goes in brackets ([::1]:2376)", ep);
			return -EINVAL;
		}
	}
	if (hl == 0 || hl >= sizeof(a->host)) {
		snprintf(err, errlen, "engine endpoint %s: no host, or a host too long", ep);
		return -EINVAL;
	}
	for (size_t i = 0; i < hl; i++)
		if (!isalnum((unsigned char)h[i]) && !strchr(".-_:", h[i])) {
			snprintf(err, errlen, "engine endpoint %s: the host holds '%c'", ep, h[i]);
			return -EINVAL;
		}
	const char *ps = colon + 1;
	char *end;
	errno = 0;
	long port = strtol(ps, &end, 10);
	if (!isdigit((unsigned char)*ps) || *end != '\0') {
		snprintf(err, errlen, "engine endpoint %s: the port is not a number", ep);
		return -EINVAL;
	}
	if (errno || port < 1 || port > 65535) {
		snprintf(err, errlen, "engine endpoint %s: the port must be 1-65535", ep);
		return -EINVAL;
	}
	memcpy(a->host, h, hl);
	a->host[hl] = '\0';
	a->port = (int)port;
	return 0;
}

int engine_escape(const char *s, char *buf, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		int plain = isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~';
		if (o + (plain ? 1 : 3) >= len)
			return -ENAMETOOLONG;
		if (plain) {
			buf[o++] = (char)*p;
		} else {
			buf[o++] = '%';
			buf[o++] = hex[*p >> 4];
			buf[o++] = hex[*p & 15];
		}
	}
	if (o >= len)
		return -ENAMETOOLONG;
	buf[o] = '\0';
	return (int)o;
}

/* ------------------------------------------------------------------ */
/* requests                                                            */

struct xfer {
	struct engine *e;
	struct sbuf body;
	int (*sink)(void *ud, const void *buf, size_t len);
	void *ud;
	int sink_rc;
	int got_headers;
	int deadline_s;		/* for the headers, from the end of the upload; 0: none */
	double sent_at;		/* when the upload ended (0: not yet) */
	int timed_out;
	int too_big;
	CURL *h;
};

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
	struct xfer *x = ud;
	if (n * size <= 2 && (p[0] == '\r' || p[0] == '\n')) {
		long code = 0;
		curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &code);
		if (code >= 200)	/* not a 100 Continue */
			x->got_headers = 1;
	}
	return n * size;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
	struct xfer *x = ud;
	size_t len = size * n;
	long code = 0;
	curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &code);
	if (x->sink && code >= 200 && code < 300) {
		int r = x->sink(x->ud, p, len);
		if (r) {
			x->sink_rc = r;
			return 0;
		}
		return len;
	}
	if (x->body.len + len > ENGINE_MAX_REPLY) {
		x->too_big = 1;
		return 0;
	}
	if (sbuf_append(&x->body, p, len) < 0)
		return 0;
	return len;
}

static int on_progress(void *ud, curl_off_t dltot, curl_off_t dlnow, curl_off_t ultot, curl_off_t ulnow)
{
	struct xfer *x = ud;
	if (x->got_headers || x->deadline_s <= 0)
		return 0;
	double now = mono_s();
	if (!x->sent_at && ulnow >= ultot)
		x->sent_at = now;
	if (x->sent_at && now - x->sent_at > x->deadline_s) {
		x->timed_out = 1;
		return 1;
	}
	return 0;
}

/* A handle with the endpoint's settings, for url. */
static CURL *engine_handle(struct engine *e, const char *url, char *cerr)
{
	CURL *h = curl_easy_init();
	if (!h)
		return NULL;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long)e->timeout_s);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_USERAGENT, "seerfs/" SEERFS_VERSION);
	curl_easy_setopt(h, CURLOPT_SHARE, e->share);
	if (e->addr.is_unix)
		curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, e->addr.path);
	if (e->tls) {
		curl_easy_setopt(h, CURLOPT_CAINFO, e->ca);
		curl_easy_setopt(h, CURLOPT_SSLCERT, e->cert);
		curl_easy_setopt(h, CURLOPT_SSLKEY, e->key);
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	}
	return h;
}

static int is_tls_error(CURLcode res, const char *cerr, int tls)
{
	switch (res) {
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_CLIENTCERT:
		return 1;
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
		/* A refused client certificate shows at the first read after
		 * the handshake (TLS 1.3) as the server's alert and close. */
		return tls || strstr(cerr, "SSL") || strstr(cerr, "alert");
	default:
		return 0;
	}
}

/* A transfer that got no HTTP reply: names the endpoint, says what to do. */
static int net_fail(struct engine *e, CURLcode res, const char *cerr, int os_errno, const char *what, char *err,
		    size_t errlen)
{
	char detail[CURL_ERROR_SIZE + 128];
	snprintf(detail, sizeof(detail), "%s%s%s", curl_easy_strerror(res), cerr && cerr[0] ? ": " : "", cerr ? cerr : "");
	if (is_tls_error(res, cerr ? cerr : "", e->tls)) {
		snprintf(err, errlen,
			 "engine %s: %s: TLS failed (%s): check the endpoint's ca, cert and key (the engine must trust "
			 "the client certificate, and its own certificate must be signed by ca for this host)",
			 e->endpoint, what, detail);
		return -EACCES;
	}
	switch (res) {
	case CURLE_COULDNT_CONNECT: {
		int r = os_errno == ENOENT ? -ENOENT : os_errno == EACCES ? -EACCES : -ECONNREFUSED;
		snprintf(err, errlen, "engine %s: %s: cannot connect (%s): is the engine running there%s?", e->endpoint,
			 what, detail, e->addr.is_unix ? ", and may seerfs open its socket" : " and the port right");
		return r;
	}
	case CURLE_COULDNT_RESOLVE_HOST:
		snprintf(err, errlen, "engine %s: %s: unknown host (%s)", e->endpoint, what, detail);
		return -EHOSTUNREACH;
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_ABORTED_BY_CALLBACK:
		snprintf(err, errlen, "engine %s: %s: no answer within %d s: the engine is stalled or unreachable",
			 e->endpoint, what, e->timeout_s);
		return -ETIMEDOUT;
	case CURLE_OUT_OF_MEMORY:
		snprintf(err, errlen, "engine %s: %s: out of memory", e->endpoint, what);
		return -ENOMEM;
	case CURLE_GOT_NOTHING:
		snprintf(err, errlen, "engine %s: %s: the connection closed without a reply: is it an Engine API endpoint "
			 "(for TLS, give ca, cert and key)?", e->endpoint, what);
		return -EPROTO;
	default:
		snprintf(err, errlen, "engine %s: %s: %s", e->endpoint, what, detail);
		return -EIO;
	}
}

/* The engine's "message" of an error reply, else the body's first line. */
static void reply_message(const char *body, struct json_object *j, char *out, size_t outlen)
{
	struct json_object *m;
	out[0] = '\0';
	if (j && json_object_object_get_ex(j, "message", &m) && json_object_is_type(m, json_type_string))
		snprintf(out, outlen, "%s", json_object_get_string(m));
	else if (body && *body)
		snprintf(out, outlen, "%.*s", (int)strcspn(body, "\r\n"), body);
	for (char *p = out; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
	size_t l = strlen(out);
	while (l && out[l - 1] == ' ')
		out[--l] = '\0';
}

static struct json_object *parse_json(const char *s, size_t len)
{
	if (!len)
		return NULL;
	struct json_tokener *t = json_tokener_new_ex(64);
	if (!t)
		return NULL;
	struct json_object *j = json_tokener_parse_ex(t, s, (int)len);
	if (j && json_tokener_get_error(t) == json_tokener_success) {
		size_t off = json_tokener_get_parse_end(t);
		while (off < len && isspace((unsigned char)s[off]))
			off++;
		if (off != len) {	/* a stream of objects (a pull, a load): keep the last one */
			struct json_object *last = j;
			while (off < len) {
				json_tokener_reset(t);
				struct json_object *n = json_tokener_parse_ex(t, s + off, (int)(len - off));
				if (!n)
					break;
				json_object_put(last);
				last = n;
				off += json_tokener_get_parse_end(t);
				while (off < len && isspace((unsigned char)s[off]))
					off++;
			}
			j = last;
		}
	} else {
		json_object_put(j);
		j = NULL;
	}
	json_tokener_free(t);
	return j;
}

struct req {
	const char *method, *path;
	int versioned;
	const char *ctype;
	const void *data;
	size_t len;
	int deadline_s;
	int (*sink)(void *ud, const void *buf, size_t len);
	void *ud;
};

static int do_request(struct engine *e, const struct req *q, struct json_object **reply, char *err, size_t errlen)
{
	char url[2048], cerr[CURL_ERROR_SIZE] = "", what[600];
	if (reply)
		*reply = NULL;
	if (!q->path || q->path[0] != '/') {
		snprintf(err, errlen, "engine %s: request path %s does not start with '/'", e->endpoint, q->path ? q->path : "(null)");
		return -EINVAL;
	}
	int n = q->versioned ? snprintf(url, sizeof(url), "%s/v%s%s", e->base, e->api, q->path)
			     : snprintf(url, sizeof(url), "%s%s", e->base, q->path);
	if (n < 0 || (size_t)n >= sizeof(url)) {
		snprintf(err, errlen, "engine %s: request path too long", e->endpoint);
		return -ENAMETOOLONG;
	}
	snprintf(what, sizeof(what), "%s %.500s", q->method, q->path);
	struct xfer x = { .e = e, .sink = q->sink, .ud = q->ud, .deadline_s = q->deadline_s };
	CURL *h = engine_handle(e, url, cerr);
	if (!h) {
		snprintf(err, errlen, "engine %s: out of memory", e->endpoint);
		return -ENOMEM;
	}
	x.h = h;
	struct curl_slist *hdrs = NULL;
	char ct[200];
	if (q->data || !strcmp(q->method, "POST") || !strcmp(q->method, "PUT")) {
		snprintf(ct, sizeof(ct), "Content-Type: %s", q->ctype ? q->ctype : "application/json");
		hdrs = curl_slist_append(hdrs, ct);
		hdrs = curl_slist_append(hdrs, "Expect:");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->len);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, q->data ? q->data : "");
	}
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, q->method);
	if (!strcmp(q->method, "HEAD"))
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, &x);
	CURLcode res = curl_easy_perform(h);
	long code = 0, oserr = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &oserr);
	curl_easy_cleanup(h);
	curl_slist_free_all(hdrs);
	int r;
	if (res == CURLE_WRITE_ERROR && x.sink_rc) {
		r = x.sink_rc;
	} else if (res == CURLE_WRITE_ERROR && x.too_big) {
		snprintf(err, errlen, "engine %s: %s: the reply is larger than %u MiB", e->endpoint, what, ENGINE_MAX_REPLY >> 20);
		r = -EFBIG;
	} else if (res == CURLE_ABORTED_BY_CALLBACK && x.timed_out) {
		snprintf(err, errlen, "engine %s: %s: no reply within %d s: the engine is stalled", e->endpoint, what,
			 q->deadline_s);
		r = -ETIMEDOUT;
	} else if (res != CURLE_OK) {	/* a reply cut short is no reply */
		r = net_fail(e, res, cerr, (int)oserr, what, err, errlen);
	} else {
		struct json_object *j = parse_json(x.body.data ? x.body.data : "", x.body.len);
		r = (int)code;
		if (code >= 400) {
			char msg[1024];
			reply_message(x.body.data, j, msg, sizeof(msg));
			snprintf(err, errlen, "engine %s: %s: HTTP %ld%s%s", e->endpoint, what, code, msg[0] ? ": " : "", msg);
			if (q->sink) {
				json_object_put(j);
				j = NULL;
				r = code == 404 ? -ENOENT : code == 409 ? -EBUSY : -EIO;
			}
		}
		if (reply)
			*reply = j;
		else
			json_object_put(j);
	}
	sbuf_free(&x.body);
	return r;
}

int engine_call_t(struct engine *e, const char *method, const char *path, struct json_object *body, int timeout_s,
		  struct json_object **reply, char *err, size_t errlen)
{
	const char *s = NULL;
	size_t len = 0;
	if (body)
		s = json_object_to_json_string_length(body, JSON_C_TO_STRING_PLAIN, &len);
	struct req q = { .method = method, .path = path, .versioned = 1, .data = s, .len = len,
			 .deadline_s = timeout_s > 0 ? timeout_s : 0 };
	return do_request(e, &q, reply, err, errlen);
}

int engine_call(struct engine *e, const char *method, const char *path, struct json_object *body,
		struct json_object **reply, char *err, size_t errlen)
{
	return engine_call_t(e, method, path, body, e->timeout_s, reply, err, errlen);
}

int engine_put_raw(struct engine *e, const char *method, const char *path, const char *content_type, const void *data,
		   size_t len, struct json_object **reply, char *err, size_t errlen)
{
	struct req q = { .method = method, .path = path, .versioned = 1, .ctype = content_type, .data = data ? data : "",
			 .len = len, .deadline_s = e->timeout_s };
	return do_request(e, &q, reply, err, errlen);
}

int engine_get_stream(struct engine *e, const char *path, int (*sink)(void *ud, const void *buf, size_t len),
		      void *ud, char *err, size_t errlen)
{
	struct req q = { .method = "GET", .path = path, .versioned = 1, .deadline_s = e->timeout_s, .sink = sink, .ud = ud };
	return do_request(e, &q, NULL, err, errlen);
}

/* ------------------------------------------------------------------ */
/* open                                                                */

/* "1.41" -> 1041; -1 when it is not MAJOR.MINOR. */
static int api_num(const char *v)
{
	unsigned maj, min;
	char tail;
	if (!v || sscanf(v, "%u.%u%c", &maj, &min, &tail) != 2 || maj > 99 || min > 999)
		return -1;
	return (int)(maj * 1000 + min);
}

int engine_negotiate_api(const char *server, char *out, size_t outlen)
{
	int s = api_num(server), max = api_num(ENGINE_API_MAX);
	if (s < 0)
		return -EINVAL;
	if (s < api_num(ENGINE_API_MIN))
		return -ENOTSUP;
	if (s < max)
		snprintf(out, outlen, "%d.%d", s / 1000, s % 1000);
	else
		snprintf(out, outlen, "%s", ENGINE_API_MAX);
	return 0;
}

static const char *jstr(struct json_object *j, const char *key)
{
	struct json_object *v;
	if (j && json_object_object_get_ex(j, key, &v) && json_object_is_type(v, json_type_string))
		return json_object_get_string(v);
	return NULL;
}

/* "podman" when /version's Components (or Platform) name Podman. */
static const char *kind_of(struct json_object *ver)
{
	struct json_object *comps, *plat;
	if (json_object_object_get_ex(ver, "Components", &comps) && json_object_is_type(comps, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(comps); i++) {
			const char *name = jstr(json_object_array_get_idx(comps, i), "Name");
			if (name && strcasestr(name, "podman"))
				return "podman";
		}
	}
	if (json_object_object_get_ex(ver, "Platform", &plat)) {
		const char *name = jstr(plat, "Name");
		if (name && strcasestr(name, "podman"))
			return "podman";
	}
	return "docker";
}

static int tls_file(const char *what, const char *path, const char *ep, char *err, size_t errlen)
{
	if (access(path, R_OK) < 0) {
		int r = -errno;
		snprintf(err, errlen, "engine %s: cannot read the TLS %s %s: %s", ep, what, path, strerror(errno));
		return r;
	}
	return 0;
}

int engine_open(const struct engine_opts *o, struct engine **out, char *err, size_t errlen)
{
	*out = NULL;
	pthread_once(&engine_global.once, engine_global_init);
	if (engine_global.rc != CURLE_OK) {
		snprintf(err, errlen, "libcurl failed to initialise: %s", curl_easy_strerror(engine_global.rc));
		return -EIO;
	}
	struct engine_addr a;
	int r = engine_parse_endpoint(o->endpoint, &a, err, errlen);
	if (r < 0)
		return r;
	int ntls = !!(o->ca && *o->ca) + !!(o->cert && *o->cert) + !!(o->key && *o->key);
	if (ntls != 0 && ntls != 3) {
		snprintf(err, errlen, "engine %s: TLS needs ca, cert and key together (as docker's --tlscacert, "
			 "--tlscert, --tlskey); %d of them given", o->endpoint, ntls);
		return -EINVAL;
	}
	if (ntls && a.is_unix) {
		snprintf(err, errlen, "engine %s: ca, cert and key are for tcp:// endpoints, not a unix socket", o->endpoint);
		return -EINVAL;
	}
	if (ntls && ((r = tls_file("CA", o->ca, o->endpoint, err, errlen)) < 0 ||
		     (r = tls_file("certificate", o->cert, o->endpoint, err, errlen)) < 0 ||
		     (r = tls_file("key", o->key, o->endpoint, err, errlen)) < 0))
		return r;
	struct engine *e = calloc(1, sizeof(*e));
	if (!e) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	e->endpoint = strdup(o->endpoint);
	e->addr = a;
	e->tls = ntls == 3;
	if (e->tls) {
		e->ca = strdup(o->ca);
		e->cert = strdup(o->cert);
		e->key = strdup(o->key);
	}
	e->timeout_s = o->timeout_s > 0 ? o->timeout_s : ENGINE_DEFAULT_TIMEOUT_S;
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&e->locks[i], NULL);
	e->share = curl_share_init();
	if (!e->endpoint || (e->tls && (!e->ca || !e->cert || !e->key)) || !e->share) {
		engine_close(e);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	curl_share_setopt(e->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(e->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(e->share, CURLSHOPT_USERDATA, e);
	curl_share_setopt(e->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	curl_share_setopt(e->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	if (a.is_unix) {
		snprintf(e->base, sizeof(e->base), "http://localhost");
		snprintf(e->hosthdr, sizeof(e->hosthdr), "localhost");
	} else {
		int v6 = strchr(a.host, ':') != NULL;
		snprintf(e->hosthdr, sizeof(e->hosthdr), "%s%s%s:%d", v6 ? "[" : "", a.host, v6 ? "]" : "", a.port);
		snprintf(e->base, sizeof(e->base), "%s://%s", e->tls ? "https" : "http", e->hosthdr);
	}

	struct json_object *ver = NULL;
	struct req q = { .method = "GET", .path = "/version", .versioned = 0, .deadline_s = e->timeout_s };
	r = do_request(e, &q, &ver, err, errlen);
	if (r >= 0 && r != 200) {
		if (r < 400)
			snprintf(err, errlen, "engine %s: GET /version: HTTP %d: not a Docker Engine API endpoint", e->endpoint, r);
		json_object_put(ver);
		engine_close(e);
		return -EPROTO;
	}
	if (r < 0) {
		engine_close(e);
		return r;
	}
	const char *sv = jstr(ver, "ApiVersion");
	r = engine_negotiate_api(sv, e->api, sizeof(e->api));
	if (r == -EINVAL) {
		snprintf(err, errlen, "engine %s: GET /version has no ApiVersion: not a Docker Engine API endpoint", e->endpoint);
	} else if (r < 0) {
		snprintf(err, errlen, "engine %s: its API version %s is older than %s (Docker 19.03): upgrade the engine",
			 e->endpoint, sv, ENGINE_API_MIN);
	}
	if (r < 0) {
		json_object_put(ver);
		engine_close(e);
		return -EPROTO;
	}
	snprintf(e->kind, sizeof(e->kind), "%s", kind_of(ver));
	const char *v = jstr(ver, "Version");
	snprintf(e->version, sizeof(e->version), "%s", v ? v : "?");
	json_object_put(ver);
	*out = e;
	return 0;
}

void engine_close(struct engine *e)
{
	if (!e)
		return;
	if (e->share)
		curl_share_cleanup(e->share);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&e->locks[i]);
	free(e->endpoint);
	free(e->ca);
	free(e->cert);
	free(e->key);
	free(e);
}

const char *engine_api_version(const struct engine *e)
{
	return e->api;
}

const char *engine_server_kind(const struct engine *e)
{
	return e->kind;
}

const char *engine_server_version(const struct engine *e)
{
	return e->version;
}

const char *engine_endpoint(const struct engine *e)
{
	return e->endpoint;
}

/* ------------------------------------------------------------------ */
/* hijacked streams                                                    */

struct engine_stream {
	CURL *h;
	int fd;
	int timeout_s;
	pthread_mutex_t lock;	/* curl_easy_send/recv of one handle, one thread at a time */
	char *pending;		/* bytes that came with the reply's headers */
	size_t plen, poff;
};

/* Waits for fd to be ready for ev; -ETIMEDOUT after timeout_s. */
static int wait_fd(int fd, short ev, int timeout_s)
{
	struct pollfd p = { .fd = fd, .events = ev };
	int r;
	do
		r = poll(&p, 1, timeout_s > 0 ? timeout_s * 1000 : -1);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	return r == 0 ? -ETIMEDOUT : 0;
}

int engine_hijack(struct engine *e, const char *path, struct json_object *body, struct engine_stream **out, char *err,
		  size_t errlen)
{
	char url[600], cerr[CURL_ERROR_SIZE] = "", what[600];
	*out = NULL;
	snprintf(what, sizeof(what), "POST %.500s (hijacked)", path);
	if (path[0] != '/' || strlen(path) > 500 || strpbrk(path, "\r\n ")) {
		snprintf(err, errlen, "engine %s: %s: bad path", e->endpoint, what);
		return -EINVAL;
	}
	snprintf(url, sizeof(url), "%s/", e->base);
	CURL *h = engine_handle(e, url, cerr);
	if (!h) {
		snprintf(err, errlen, "engine %s: out of memory", e->endpoint);
		return -ENOMEM;
	}
	curl_easy_setopt(h, CURLOPT_CONNECT_ONLY, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)e->timeout_s);
	CURLcode res = curl_easy_perform(h);
	if (res != CURLE_OK) {
		long oserr = 0;
		curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &oserr);
		curl_easy_cleanup(h);
		return net_fail(e, res, cerr, (int)oserr, what, err, errlen);
	}
	curl_socket_t sock = CURL_SOCKET_BAD;
	curl_easy_getinfo(h, CURLINFO_ACTIVESOCKET, &sock);
	struct engine_stream *s = calloc(1, sizeof(*s));
	if (!s || sock == CURL_SOCKET_BAD) {
		free(s);
		curl_easy_cleanup(h);
		snprintf(err, errlen, "engine %s: %s: no socket after connecting", e->endpoint, what);
		return -EIO;
	}
	s->h = h;
	s->fd = (int)sock;
	s->timeout_s = e->timeout_s;
	pthread_mutex_init(&s->lock, NULL);

	const char *js = "{}";
	size_t jl = 2;
	if (body)
		js = json_object_to_json_string_length(body, JSON_C_TO_STRING_PLAIN, &jl);
	struct sbuf rq = { 0 };
	sbuf_printf(&rq,
		    "POST /v%s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: seerfs/%s\r\nContent-Type: application/json\r\n"
		    "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: %zu\r\n\r\n",
		    e->api, path, e->hosthdr, SEERFS_VERSION, jl);
	sbuf_append(&rq, js, jl);
	int r = rq.data ? 0 : -ENOMEM;
	if (r == 0) {
		ssize_t w = engine_stream_write(s, rq.data, rq.len);
		r = w < 0 ? (int)w : 0;
	}
	sbuf_free(&rq);
	if (r < 0) {
		snprintf(err, errlen, "engine %s: %s: sending the request failed: %s", e->endpoint, what, strerror(-r));
		engine_stream_free(s);
		return r;
	}

	/* The reply's headers, within the timeout. */
	char *buf = malloc(ENGINE_MAX_HDRS + 1);
	size_t have = 0;
	char *end = NULL;
	double t0 = mono_s();
	while (buf && !end) {
		if (have == ENGINE_MAX_HDRS) {
			r = -EPROTO;
			break;
		}
		size_t n = 0;
		res = curl_easy_recv(h, buf + have, ENGINE_MAX_HDRS - have, &n);
		if (res == CURLE_AGAIN) {
			int left = e->timeout_s - (int)(mono_s() - t0);
			r = left <= 0 ? -ETIMEDOUT : wait_fd(s->fd, POLLIN, left);
			if (r < 0)
				break;
			continue;
		}
		if (res != CURLE_OK) {
			r = -EIO;
			snprintf(cerr, sizeof(cerr), "%s", curl_easy_strerror(res));
			if (is_tls_error(res, cerr, e->tls))
				r = -EACCES;
			break;
		}
		if (n == 0) {
			r = -ECONNRESET;
			break;
		}
		have += n;
		buf[have] = '\0';
		end = strstr(buf, "\r\n\r\n");
	}
	if (!buf)
		r = -ENOMEM;
	if (!end) {
		if (r == -ETIMEDOUT)
			snprintf(err, errlen, "engine %s: %s: no reply within %d s: the engine is stalled", e->endpoint, what,
				 e->timeout_s);
		else if (r == -EACCES)
			snprintf(err, errlen, "engine %s: %s: TLS failed reading the reply (%s): check the endpoint's ca, "
				 "cert and key", e->endpoint, what, cerr);
		else
			snprintf(err, errlen, "engine %s: %s: no complete reply (%s)", e->endpoint, what, strerror(-r));
		free(buf);
		engine_stream_free(s);
		return r;
	}
	int code = 0;
	if (sscanf(buf, "HTTP/1.%*d %d", &code) != 1)
		code = 0;
	size_t hl = (size_t)(end + 4 - buf);
	if (code != 101 && code != 200) {
		/* An error: its JSON body (Content-Length) when it came along. */
		const char *b = end + 4;
		struct json_object *j = parse_json(b, have - hl);
		char msg[1024];
		reply_message(b, j, msg, sizeof(msg));
		json_object_put(j);
		snprintf(err, errlen, "engine %s: %s: HTTP %d%s%s", e->endpoint, what, code, msg[0] ? ": " : "", msg);
		free(buf);
		engine_stream_free(s);
		return code == 404 ? -ENOENT : code == 409 ? -EBUSY : code ? -EIO : -EPROTO;
	}
	if (have > hl) {
		memmove(buf, buf + hl, have - hl);
		s->pending = buf;
		s->plen = have - hl;
	} else {
		free(buf);
	}
	*out = s;
	return 0;
}

int engine_stream_fd(struct engine_stream *s)
{
	return s->fd;
}

ssize_t engine_stream_read(struct engine_stream *s, void *buf, size_t len)
{
	pthread_mutex_lock(&s->lock);
	if (s->pending && s->poff < s->plen) {
		size_t n = s->plen - s->poff < len ? s->plen - s->poff : len;
		memcpy(buf, s->pending + s->poff, n);
		s->poff += n;
		pthread_mutex_unlock(&s->lock);
		return (ssize_t)n;
	}
	size_t n = 0;
	CURLcode res = curl_easy_recv(s->h, buf, len, &n);
	pthread_mutex_unlock(&s->lock);
	if (res == CURLE_AGAIN)
		return -EAGAIN;
	if (res != CURLE_OK)
		return res == CURLE_UNSUPPORTED_PROTOCOL ? -ENOTCONN : -ECONNRESET;
	return (ssize_t)n;
}

ssize_t engine_stream_write(struct engine_stream *s, const void *buf, size_t len)
{
	size_t off = 0;
	while (off < len) {
		size_t n = 0;
		pthread_mutex_lock(&s->lock);
		CURLcode res = curl_easy_send(s->h, (const char *)buf + off, len - off, &n);
		pthread_mutex_unlock(&s->lock);
		if (res == CURLE_AGAIN) {
			int r = wait_fd(s->fd, POLLOUT, s->timeout_s);
			if (r < 0)
				return r;
			continue;
		}
		if (res != CURLE_OK)
			return -EPIPE;
		off += n;
	}
	return (ssize_t)len;
}

int engine_stream_close_write(struct engine_stream *s)
{
	return shutdown(s->fd, SHUT_WR) < 0 ? -errno : 0;
}

void engine_stream_free(struct engine_stream *s)
{
	if (!s)
		return;
	curl_easy_cleanup(s->h);
	pthread_mutex_destroy(&s->lock);
	free(s->pending);
	free(s);
}

/* ------------------------------------------------------------------ */
/* stdout/stderr framing                                               */

void engine_demux_init(struct engine_demux *d, int raw)
{
	memset(d, 0, sizeof(*d));
	d->raw = raw;
}

int engine_demux_feed(struct engine_demux *d, const void *buf, size_t len,
		      void (*out)(void *ud, int stream, const void *p, size_t n), void *ud)
{
	const unsigned char *p = buf;
	if (d->stream < 0)
		return -EPROTO;
	if (d->raw) {
		if (len)
			out(ud, 1, p, len);
		return 0;
	}
	while (len) {
		if (d->left == 0) {
			size_t take = sizeof(d->hdr) - d->hlen < len ? sizeof(d->hdr) - d->hlen : len;
			memcpy(d->hdr + d->hlen, p, take);
			d->hlen += take;
			p += take;
			len -= take;
			if (d->hlen < sizeof(d->hdr))
				return 0;
			d->hlen = 0;
			if (d->hdr[0] > 2 || d->hdr[1] || d->hdr[2] || d->hdr[3]) {
				d->stream = -1;
				return -EPROTO;
			}
			d->stream = d->hdr[0];
			d->left = (size_t)d->hdr[4] << 24 | (size_t)d->hdr[5] << 16 | (size_t)d->hdr[6] << 8 | d->hdr[7];
			continue;
		}
		size_t n = d->left < len ? d->left : len;
		out(ud, d->stream, p, n);
		d->left -= n;
		p += n;
		len -= n;
	}
	return 0;
}

int engine_demux_at_boundary(const struct engine_demux *d)
{
	return d->raw || (d->stream >= 0 && d->left == 0 && d->hlen == 0);
}
