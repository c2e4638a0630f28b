/*
 * hf.c - fetch a model repository from the Hugging Face hub into the shared
 * huggingface_hub-compatible cache (see hf.h for the layout and the API).
 *
 * Flow of one hf_fetch():
 *   1. resolve the revision:  GET {ep}/api/models/{id}/revision/{rev}
 *      -> commit sha + file list.  If that commit's snapshot is already
 *      complete we stop here (no file traffic).  If the endpoint cannot be
 *      reached we fall back to refs/{rev} when its snapshot is complete.
 *   2. sizes and hashes:      GET {ep}/api/models/{id}/tree/{commit}?recursive=true
 *      (paginated through the Link: rel="next" header, as the hub does).
 *   3. files:                 GET {ep}/{id}/resolve/{commit}/{path}, redirects
 *      followed, several at once on one curl multi handle, into
 *      blobs/{hash}.incomplete, resumed with Range, hashed while they stream,
 *      fdatasync'ed and renamed only once verified, then symlinked from
 *      snapshots/{commit}/{path}.
 *   4. a completion manifest .seerfs/{commit}.complete and refs/{rev} are
 *      written last, so refs never lead the offline fallback to a half
 *      downloaded snapshot.
 *
 * Concurrency: each blob is guarded by flock() on
 * {cache}/.locks/models--{org}--{name}/{hash}.lock - the same file
 * huggingface_hub's filelock uses - so threads, processes and python tools
 * sharing the cache never write the same .incomplete file at once.  A file
 * whose lock is busy is polled without blocking, so other files keep going.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "core/lib/hf.h"
#include "core/lib/sha256.h"
#include "core/lib/util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>

#define HF_DEFAULT_ENDPOINT "https://huggingface.co"
#define HF_MAX_META (256u << 20)	/* cap on one metadata reply */
#define HF_ERRBODY_MAX 400		/* bytes of an error reply kept for messages */
#define HF_TICK_S 0.2			/* progress callback period */
#define HF_LOCK_POLL_S 0.25		/* retry period for a busy blob lock */
#ifndef HF_UA_VERSION
#define HF_UA_VERSION "0.1"
#endif

/*
 * The only process-wide state: libcurl must be globally initialised once
 * before any thread uses it, and curl_global_init() itself is not safe to
 * race, so it runs under pthread_once.
 */
static struct hf_global_ctx {
	pthread_once_t once;
	CURLcode init_rc;
} hf_global = { PTHREAD_ONCE_INIT, CURLE_OK };

static void hf_global_init(void)
{
	hf_global.init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

struct hf_buf {
	char *d;
	size_t len, cap;
};

static int hf_buf_add(struct hf_buf *b, const void *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *d = realloc(b->d, cap);
		if (!d)
			return -ENOMEM;
		b->d = d;
		b->cap = cap;
	}
	memcpy(b->d + b->len, p, n);
	b->len += n;
	b->d[b->len] = '\0';
	return 0;
}

static void hf_buf_free(struct hf_buf *b)
{
	free(b->d);
	memset(b, 0, sizeof(*b));
}

static char *hf_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *hf_asprintf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	return s;
}

static bool is_hex(const char *s, size_t len)
{
	if (strlen(s) != len)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isxdigit((unsigned char)s[i]))
			return false;
	return true;
}

static void lower(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

/* Human sizes for messages ("3.2 GB"). */
static const char *hsize(uint64_t n, char buf[32])
{
	static const char *u[] = { "B", "KB", "MB", "GB", "TB" };
	double v = (double)n;
	int i = 0;
	while (v >= 1000 && i < 4) {
		v /= 1000;
		i++;
	}
	snprintf(buf, 32, i ? "%.1f %s" : "%.0f %s", v, u[i]);
	return buf;
}

/* Percent-encodes everything but RFC 3986 unreserved characters (and '/'
 * when keep_slash), so odd file names and "refs/pr/1" revisions survive. */
static char *url_quote(const char *s, bool keep_slash)
{
	static const char hx[] = "0123456789ABCDEF";
	char *out = malloc(strlen(s) * 3 + 1), *o = out;
	if (!out)
		return NULL;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~' || (keep_slash && *p == '/')) {
			*o++ = (char)*p;
		} else {
			*o++ = '%';
			*o++ = hx[*p >> 4];
			*o++ = hx[*p & 15];
		}
	}
	*o = '\0';
	return out;
}

static int hf_mkdir_parent(const char *path)
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	char *slash = strrchr(tmp, '/');
	if (!slash || slash == tmp)
		return 0;
	*slash = '\0';
	return mkdir_p(tmp, 0755);
}

/* Replaces a small file atomically (temp + rename) so concurrent readers see
 * the old or the new content, never a torn one. */
static int write_small_atomic(const char *path, const char *data, size_t len)
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d.%d", path, (int)getpid(), (int)gettid()) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	int rc = 0;
	for (size_t off = 0; off < len;) {
		ssize_t w = write(fd, data + off, len - off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			break;
		}
		off += (size_t)w;
	}
	if (!rc && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path) < 0)
		rc = -errno;
	if (rc)
		unlink(tmp);
	return rc;
}

static char *read_small(const char *path, size_t max)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	struct hf_buf b = { 0 };
	char chunk[4096];
	ssize_t r;
	while ((r = read(fd, chunk, sizeof(chunk))) > 0) {
		if (b.len + (size_t)r > max || hf_buf_add(&b, chunk, (size_t)r) < 0) {
			hf_buf_free(&b);
			break;
		}
	}
	close(fd);
	if (r < 0)
		hf_buf_free(&b);
	return b.d ? b.d : (r == 0 ? strdup("") : NULL);
}

/* ------------------------------------------------------------------ */
/* per-call context                                                    */

struct fetch {
	const struct hf_opts *o;
	const char *token;		/* NULL or non-empty */
	char endpoint[1024];		/* no trailing '/' */
	const char *endpoint_src;	/* where the endpoint came from, for messages */
	const char *id, *rev;
	char commit[41];
	char cache[PATH_MAX];		/* absolute */
	char repo_dir[PATH_MAX];	/* {cache}/models--org--name */
	char lock_dir[PATH_MAX];	/* {cache}/.locks/models--org--name */
	struct curl_slist *auth;	/* "Authorization: Bearer ..." or NULL */
	char msg[2048];			/* first failure, copied to the caller's err */
	bool failed;
	int parallel, max_retries;

	/* progress accounting */
	uint64_t total, done_files;	/* bytes of all files / of finished ones */
	uint64_t net_bytes;		/* bytes received from the network */
	uint64_t tick_net;
	double tick_t, rate;
};

/* Overwrites every occurrence of the token with '*' in place: a last line of
 * defence so that a server echoing headers can never put it in a message. */
static void scrub(const struct fetch *f, char *s)
{
	if (!f->token || !s)
		return;
	size_t tl = strlen(f->token);
	for (char *p = strstr(s, f->token); p; p = strstr(p + tl, f->token))
		memset(p, '*', tl);
}

/* Records the first error (later ones are usually consequences of it). */
static int fail(struct fetch *f, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct fetch *f, int rc, const char *fmt, ...)
{
	if (!f->failed) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(f->msg, sizeof(f->msg), fmt, ap);
		va_end(ap);
		scrub(f, f->msg);
		f->failed = true;
	}
	return rc;
}

static void logline(struct fetch *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logline(struct fetch *f, const char *fmt, ...)
{
	if (!f->o->log)
		return;
	char line[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	scrub(f, line);
	f->o->log(f->o->arg, line);
}

static bool cancelled(const struct fetch *f)
{
	return f->o->cancel && *f->o->cancel;
}

/* ------------------------------------------------------------------ */
/* HTTP plumbing                                                       */

/* What we keep from the headers of the latest response of a transfer
 * (with redirects curl reports several; each status line resets this). */
struct resp_hdrs {
	long status;
	int64_t range_start;		/* from Content-Range, -1 if none */
	char xcode[64];			/* hub's X-Error-Code */
	char xmsg[256];			/* hub's X-Error-Message */
	char next[2048];		/* Link: <...>; rel="next" */
	bool body_seen;			/* first body byte of this response handled */
};

static void hdr_value(const char *line, size_t len, char *out, size_t outlen)
{
	const char *c = memchr(line, ':', len);
	size_t i = 0;
	if (c) {
		const char *p = c + 1, *end = line + len;
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		while (end > p && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
			end--;
		for (; p < end && i + 1 < outlen; p++)
			out[i++] = (*p >= 0x20 && *p != 0x7f) ? *p : ' ';
	}
	out[i] = '\0';
}

static bool hdr_is(const char *line, size_t len, const char *name)
{
	size_t n = strlen(name);
	return len > n && line[n] == ':' && strncasecmp(line, name, n) == 0;
}

static size_t on_header(char *line, size_t sz, size_t nm, void *ud)
{
	struct resp_hdrs *h = ud;
	size_t len = sz * nm;
	if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) {
		long st = 0;
		const char *sp = memchr(line, ' ', len);
		if (sp)
			st = strtol(sp + 1, NULL, 10);
		memset(h, 0, sizeof(*h));
		h->status = st;
		h->range_start = -1;
	} else if (hdr_is(line, len, "Content-Range")) {
		char v[128];
		unsigned long long a;
		hdr_value(line, len, v, sizeof(v));
		if (sscanf(v, "bytes %llu-", &a) == 1)
			h->range_start = (int64_t)a;
	} else if (hdr_is(line, len, "X-Error-Code")) {
		hdr_value(line, len, h->xcode, sizeof(h->xcode));
	} else if (hdr_is(line, len, "X-Error-Message")) {
		hdr_value(line, len, h->xmsg, sizeof(h->xmsg));
	} else if (hdr_is(line, len, "Link")) {
		char v[2048];
		hdr_value(line, len, v, sizeof(v));
		/* Link: <url1>; rel="prev", <url2>; rel="next" */
		for (char *lt = strchr(v, '<'); lt; lt = strchr(lt + 1, '<')) {
			char *gt = strchr(lt, '>');
			if (!gt)
				break;
			char *comma = strchr(gt, ',');
			char *rel = strstr(gt, "rel=\"next\"");
			if (rel && (!comma || rel < comma)) {
				*gt = '\0';
				snprintf(h->next, sizeof(h->next), "%s", lt + 1);
				break;
			}
		}
	}
	return len;
}

static int on_xfer_meta(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
	(void)a, (void)b, (void)c, (void)d;
	return cancelled(ud) ? 1 : 0;
}

static void easy_common(struct fetch *f, CURL *e, const char *url, char *cerr)
{
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "seerfs-hf/" HF_UA_VERSION " libcurl");
	/* Threads: no SIGALRM-based DNS timeouts. */
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	/* Resolve URLs redirect to a CDN.  curl (>= 7.58) sends our custom
	 * Authorization header only to the original host, so the token does
	 * not leak to the CDN. */
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(e, CURLOPT_MAXREDIRS, 10L);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#endif
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 30L);
	/* A stalled connection (< 1 KB/s for a minute) is a failure we retry,
	 * not a hang. */
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1024L);
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, 60L);
	if (f->auth)
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, f->auth);
	cerr[0] = '\0';
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, cerr);
}

static size_t on_meta_body(char *p, size_t sz, size_t nm, void *ud)
{
	struct hf_buf *b = ud;
	size_t n = sz * nm;
	if (b->len + n > HF_MAX_META || hf_buf_add(b, p, n) < 0)
		return 0;
	return n;
}

/* Blocking GET for small JSON replies.  Returns the curl code; the status,
 * hub error headers and body land in h / body. */
static CURLcode http_get(struct fetch *f, const char *url, struct resp_hdrs *h, struct hf_buf *body,
			 char cerr[CURL_ERROR_SIZE])
{
	CURL *e = curl_easy_init();
	if (!e)
		return CURLE_OUT_OF_MEMORY;
	easy_common(f, e, url, cerr);
	memset(h, 0, sizeof(*h));
	h->range_start = -1;
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");	/* JSON compresses well */
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, h);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_meta_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, body);
	curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_xfer_meta);
	curl_easy_setopt(e, CURLOPT_XFERINFODATA, f);
	CURLcode res = curl_easy_perform(e);
	curl_easy_cleanup(e);
	return res;
}

static int curl_errno(CURLcode res)
{
	switch (res) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
		return -EINVAL;
	default:
		return -EIO;
	}
}

/* Network-level failure: names the endpoint and where it came from, and
 * carries curl's own words. */
static int fail_net(struct fetch *f, CURLcode res, const char *cerr, const char *what)
{
	if (res == CURLE_ABORTED_BY_CALLBACK && cancelled(f))
		return fail(f, -ECANCELED, "download of %s cancelled", f->id);
	return fail(f, curl_errno(res),
		    "cannot reach the Hugging Face endpoint %s (%s) while %s: %s%s%s. "
		    "Check the network, or set HF_ENDPOINT to a reachable mirror.",
		    f->endpoint, f->endpoint_src, what, curl_easy_strerror(res), cerr[0] ? ": " : "", cerr);
}

/* Readable excerpt of an error reply: the hub's X-Error-Message, else the
 * JSON "error" field, else the first line of the body. */
static void err_detail(const struct resp_hdrs *h, const char *body, char *out, size_t outlen)
{
	out[0] = '\0';
	if (h->xmsg[0]) {
		snprintf(out, outlen, "%s", h->xmsg);
		return;
	}
	if (!body || !*body)
		return;
	json_object *j = json_tokener_parse(body), *e;
	if (j && json_object_object_get_ex(j, "error", &e) && json_object_is_type(e, json_type_string))
		snprintf(out, outlen, "%s", json_object_get_string(e));
	else
		snprintf(out, outlen, "%.*s", (int)strcspn(body, "\r\n"), body);
	json_object_put(j);
	for (char *p = out; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
	if (strlen(out) > HF_ERRBODY_MAX)
		out[HF_ERRBODY_MAX] = '\0';
}

/* Turns an HTTP error status into errno + words.  `file` is NULL for API
 * calls, else the repo path being downloaded. */
static int fail_http(struct fetch *f, const struct resp_hdrs *h, const char *body, const char *file)
{
	char det[HF_ERRBODY_MAX + 8];
	err_detail(h, body, det, sizeof(det));
	const char *sep = det[0] ? " Server said: " : "";
	long st = h->status;

	bool repo_missing = !strcmp(h->xcode, "RepoNotFound") || (st == 404 && !h->xcode[0] && !file);
	/* The hub answers 401 + RepoNotFound for missing *and* private repos
	 * when no token is sent; the not-found message then also mentions the
	 * token.  Plain 401/403 or GatedRepo is an access problem. */
	if ((!strcmp(h->xcode, "GatedRepo") || st == 401 || st == 403) && !repo_missing) {
		if (!f->token)
			return fail(f, -EACCES,
				    "access to %s denied (HTTP %ld): the repository is gated or private and no token "
				    "was given. Set HF_TOKEN (or add HF_TOKEN to the sandbox's secrets) with a token "
				    "that has read access, after accepting the model's terms at %s/%s.%s%s",
				    f->id, st, f->endpoint, f->id, sep, det);
		return fail(f, -EACCES,
			    "access to %s denied (HTTP %ld) with the token given: check the token is valid, has "
			    "read access, and that its account accepted the model's terms at %s/%s.%s%s",
			    f->id, st, f->endpoint, f->id, sep, det);
	}
	if (!strcmp(h->xcode, "RevisionNotFound"))
		return fail(f, -ENOENT, "revision '%s' not found in repository %s at %s (HTTP %ld).%s%s", f->rev,
			    f->id, f->endpoint, st, sep, det);
	if (file && (st == 404 || !strcmp(h->xcode, "EntryNotFound")))
		return fail(f, -ENOENT, "file '%s' not found in %s at commit %s (HTTP %ld).%s%s", file, f->id,
			    f->commit, st, sep, det);
	if (repo_missing || st == 404)
		return fail(f, -ENOENT,
			    "repository %s not found at %s (HTTP %ld). Check the model id%s.%s%s", f->id, f->endpoint,
			    st, f->token ? "" : "; if it is private, set HF_TOKEN or add it to the sandbox's secrets",
			    sep, det);
	if (st == 429)
		return fail(f, -EAGAIN, "the hub at %s is rate limiting requests (HTTP 429)%s%s; wait and retry%s.",
			    f->endpoint, file ? " for " : "", file ? file : "",
			    f->token ? "" : ", or set HF_TOKEN for a higher limit");
	return fail(f, st >= 500 ? -EIO : -EPROTO, "HTTP %ld from %s for %s%s%s.%s%s", st, f->endpoint, f->id,
		    file ? " file " : "", file ? file : "", sep, det);
}

/* ------------------------------------------------------------------ */
/* validation                                                          */

/* Hub repo ids: "name" or "org/name", [A-Za-z0-9._-], no "--" or "..". */
static bool valid_id(const char *id)
{
	size_t len = strlen(id);
	int slashes = 0;
	if (!len || len > 200 || id[0] == '/' || id[len - 1] == '/' || id[0] == '.' || id[0] == '-')
		return false;
	if (strstr(id, "--") || strstr(id, ".."))
		return false;
	for (const char *p = id; *p; p++) {
		if (*p == '/') {
			if (++slashes > 1 || p[1] == '.' || p[1] == '-')
				return false;
		} else if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.') {
			return false;
		}
	}
	return true;
}

/* A relative path with no empty, "." or ".." component and no control
 * characters: safe to join under snapshots/ or refs/. */
static bool valid_relpath(const char *p)
{
	size_t len = strlen(p);
	if (!len || len > 1024 || p[0] == '/' || p[len - 1] == '/')
		return false;
	for (const char *c = p; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f || *c == '\\')
			return false;
	for (const char *s = p; *s;) {
		size_t n = strcspn(s, "/");
		if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
			return false;
		s += n;
		if (*s == '/')
			s++;
	}
	return true;
}

/* ------------------------------------------------------------------ */
/* cache bookkeeping                                                   */

struct hf_file;
static int snapshot_path(const struct fetch *f, const char *commit, const char *path, char *out, size_t outlen)
{
	int n = path ? snprintf(out, outlen, "%s/snapshots/%s/%s", f->repo_dir, commit, path)
		     : snprintf(out, outlen, "%s/snapshots/%s", f->repo_dir, commit);
	return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

static int manifest_path(const struct fetch *f, const char *commit, char *out, size_t outlen)
{
	int n = snprintf(out, outlen, "%s/.seerfs/%s.complete", f->repo_dir, commit);
	return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

/*
 * A snapshot is complete when our manifest for the commit exists and every
 * file it lists resolves (through the symlink) to a blob of the right size.
 * The second check catches snapshots pruned by huggingface-cli delete-cache.
 */
static bool snapshot_complete(const struct fetch *f, const char *commit)
{
	char mp[PATH_MAX], sp[PATH_MAX];
	if (manifest_path(f, commit, mp, sizeof(mp)) < 0)
		return false;
	char *m = read_small(mp, 64u << 20);
	if (!m)
		return false;
	bool ok = true;
	char *save = NULL;
	for (char *line = strtok_r(m, "\n", &save); line && ok; line = strtok_r(NULL, "\n", &save)) {
		/* "hash size path" */
		char *sp1 = strchr(line, ' '), *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
		if (!sp2) {
			ok = false;
			break;
		}
		unsigned long long size = strtoull(sp1 + 1, NULL, 10);
		struct stat st;
		if (snapshot_path(f, commit, sp2 + 1, sp, sizeof(sp)) < 0 || stat(sp, &st) < 0 ||
		    !S_ISREG(st.st_mode) || (unsigned long long)st.st_size != size)
			ok = false;
	}
	free(m);
	return ok;
}

static int set_out_path(struct fetch *f, const char *commit, char *out, size_t outlen)
{
	char sp[PATH_MAX];
	int rc = snapshot_path(f, commit, NULL, sp, sizeof(sp));
	if (rc == 0)
		rc = mkdir_p(sp, 0755);
	if (rc)
		return fail(f, rc, "cannot create snapshot directory %s: %s", sp, strerror(-rc));
	if ((size_t)snprintf(out, outlen, "%s", sp) >= outlen)
		return fail(f, -ENAMETOOLONG, "out_path buffer too small for %s", sp);
	return 0;
}

static int write_ref(struct fetch *f)
{
	if (!strcmp(f->rev, f->commit))
		return 0;	/* huggingface_hub keeps no ref for a commit */
	char rp[PATH_MAX];
	if ((size_t)snprintf(rp, sizeof(rp), "%s/refs/%s", f->repo_dir, f->rev) >= sizeof(rp))
		return fail(f, -ENAMETOOLONG, "revision name too long: %s", f->rev);
	char *old = read_small(rp, 4096);
	bool same = old && !strcmp(old, f->commit);
	free(old);
	if (same)
		return 0;
	int rc = hf_mkdir_parent(rp);
	if (!rc)
		rc = write_small_atomic(rp, f->commit, strlen(f->commit));
	if (rc)
		return fail(f, rc, "cannot write %s: %s", rp, strerror(-rc));
	return 0;
}

/* Commit recorded for f->rev by an earlier fetch (or f->rev itself when it is
 * a commit hash); false when unknown. */
static bool cached_commit(struct fetch *f, char out[41])
{
	if (is_hex(f->rev, 40)) {
		snprintf(out, 41, "%s", f->rev);
		lower(out);
		return true;
	}
	char rp[PATH_MAX];
	if ((size_t)snprintf(rp, sizeof(rp), "%s/refs/%s", f->repo_dir, f->rev) >= sizeof(rp))
		return false;
	char *c = read_small(rp, 4096);
	if (c)
		c[strcspn(c, " \r\n")] = '\0';
	bool ok = c && is_hex(c, 40);
	if (ok) {
		snprintf(out, 41, "%s", c);
		lower(out);
	}
	free(c);
	return ok;
}

/* ------------------------------------------------------------------ */
/* metadata                                                            */

struct tree_ent {
	char *path;
	uint64_t size;
	bool lfs;
	char hash[65];		/* lfs sha256, or git blob oid (sha1) */
};

struct filelist {
	char **names;		/* siblings, in hub order */
	size_t n;
	struct tree_ent *ents;	/* tree entries of type file, sorted by path */
	size_t nents;
};

static void filelist_free(struct filelist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->names[i]);
	for (size_t i = 0; i < l->nents; i++)
		free(l->ents[i].path);
	free(l->names);
	free(l->ents);
	memset(l, 0, sizeof(*l));
}

static json_object *parse_json(struct fetch *f, const struct hf_buf *b, const char *url)
{
	enum json_tokener_error jerr = json_tokener_success;
	json_object *j = b->d ? json_tokener_parse_verbose(b->d, &jerr) : NULL;
	if (!j)
		fail(f, -EPROTO, "unexpected reply from %s: not JSON (%s); is %s a Hugging Face hub endpoint?", url,
		     b->d ? json_tokener_error_desc(jerr) : "empty body", f->endpoint);
	return j;
}

/* Step 1: revision -> commit + sibling names.  *net_rc is set to a negative
 * errno when the endpoint could not be reached (offline fallback applies). */
static int fetch_revision(struct fetch *f, struct filelist *l, bool *unreachable)
{
	char *qrev = url_quote(f->rev, false);
	char *url = qrev ? hf_asprintf("%s/api/models/%s/revision/%s", f->endpoint, f->id, qrev) : NULL;
	free(qrev);
	if (!url)
		return fail(f, -ENOMEM, "out of memory");
	struct resp_hdrs h;
	struct hf_buf body = { 0 };
	char cerr[CURL_ERROR_SIZE];
	int rc = 0;
	CURLcode res = http_get(f, url, &h, &body, cerr);
	json_object *j = NULL, *v;
	if (res != CURLE_OK) {
		*unreachable = !(res == CURLE_ABORTED_BY_CALLBACK && cancelled(f));
		rc = fail_net(f, res, cerr, "resolving the revision");
		goto out;
	}
	if (h.status != 200) {
		*unreachable = h.status >= 500 || h.status == 429;
		rc = fail_http(f, &h, body.d, NULL);
		goto out;
	}
	if (!(j = parse_json(f, &body, url))) {
		rc = -EPROTO;
		goto out;
	}
	if (!json_object_object_get_ex(j, "sha", &v) || !is_hex(json_object_get_string(v), 40)) {
		rc = fail(f, -EPROTO, "reply from %s has no commit \"sha\"", url);
		goto out;
	}
	snprintf(f->commit, sizeof(f->commit), "%s", json_object_get_string(v));
	lower(f->commit);
	if (json_object_object_get_ex(j, "siblings", &v) && json_object_is_type(v, json_type_array)) {
		size_t n = json_object_array_length(v);
		l->names = calloc(n ? n : 1, sizeof(char *));
		if (!l->names) {
			rc = fail(f, -ENOMEM, "out of memory");
			goto out;
		}
		for (size_t i = 0; i < n; i++) {
			json_object *s = json_object_array_get_idx(v, i), *rf;
			if (!json_object_object_get_ex(s, "rfilename", &rf) || !json_object_is_type(rf, json_type_string))
				continue;
			const char *name = json_object_get_string(rf);
			if (!valid_relpath(name)) {
				rc = fail(f, -EPROTO, "the hub lists an unsafe file name in %s: '%s'", f->id, name);
				goto out;
			}
			if (!(l->names[l->n++] = strdup(name))) {
				rc = fail(f, -ENOMEM, "out of memory");
				goto out;
			}
		}
	}
out:
	json_object_put(j);
	hf_buf_free(&body);
	free(url);
	return rc;
}

static int ent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct tree_ent *)a)->path, ((const struct tree_ent *)b)->path);
}

static int add_tree_entry(struct fetch *f, struct filelist *l, size_t *cap, json_object *e)
{
	json_object *v, *lfs;
	if (!json_object_object_get_ex(e, "type", &v) || strcmp(json_object_get_string(v), "file"))
		return 0;	/* directories are implied by paths */
	if (!json_object_object_get_ex(e, "path", &v))
		return fail(f, -EPROTO, "tree entry without a path in %s", f->id);
	const char *path = json_object_get_string(v);
	if (!valid_relpath(path))
		return fail(f, -EPROTO, "the hub lists an unsafe file name in %s: '%s'", f->id, path);
	struct tree_ent t = { 0 };
	if (json_object_object_get_ex(e, "lfs", &lfs) && json_object_is_type(lfs, json_type_object)) {
		const char *oid = json_object_object_get_ex(lfs, "oid", &v) ? json_object_get_string(v) : "";
		/* Older hub replies spell it "sha256:<hex>". */
		if (!strncmp(oid, "sha256:", 7))
			oid += 7;
		if (!is_hex(oid, 64))
			return fail(f, -EPROTO, "tree entry for '%s' in %s has no valid lfs sha256", path, f->id);
		t.lfs = true;
		snprintf(t.hash, sizeof(t.hash), "%s", oid);
		if (!json_object_object_get_ex(lfs, "size", &v))
			json_object_object_get_ex(e, "size", &v);
		t.size = (uint64_t)json_object_get_int64(v);
	} else {
		const char *oid = json_object_object_get_ex(e, "oid", &v) ? json_object_get_string(v) : "";
		if (!is_hex(oid, 40))
			return fail(f, -EPROTO, "tree entry for '%s' in %s has no valid git oid", path, f->id);
		snprintf(t.hash, sizeof(t.hash), "%s", oid);
		if (!json_object_object_get_ex(e, "size", &v))
			return fail(f, -EPROTO, "tree entry for '%s' in %s has no size", path, f->id);
		t.size = (uint64_t)json_object_get_int64(v);
	}
	lower(t.hash);
	if (l->nents == *cap) {
		size_t nc = *cap ? *cap * 2 : 64;
		struct tree_ent *ne = realloc(l->ents, nc * sizeof(*ne));
		if (!ne)
			return fail(f, -ENOMEM, "out of memory");
		l->ents = ne;
		*cap = nc;
	}
	if (!(t.path = strdup(path)))
		return fail(f, -ENOMEM, "out of memory");
	l->ents[l->nents++] = t;
	return 0;
}

/* Step 2: sizes and hashes for every file at the commit. */
static int fetch_tree(struct fetch *f, struct filelist *l)
{
	char *url = hf_asprintf("%s/api/models/%s/tree/%s?recursive=true", f->endpoint, f->id, f->commit);
	size_t cap = 0;
	int rc = 0;
	if (!url)
		return fail(f, -ENOMEM, "out of memory");
	for (int page = 0; url && page < 100000; page++) {
		struct resp_hdrs h;
		struct hf_buf body = { 0 };
		char cerr[CURL_ERROR_SIZE];
		CURLcode res = http_get(f, url, &h, &body, cerr);
		json_object *j = NULL;
		if (res != CURLE_OK)
			rc = fail_net(f, res, cerr, "listing files");
		else if (h.status != 200)
			rc = fail_http(f, &h, body.d, NULL);
		else if (!(j = parse_json(f, &body, url)))
			rc = -EPROTO;
		else if (!json_object_is_type(j, json_type_array))
			rc = fail(f, -EPROTO, "reply from %s is not a JSON array of files", url);
		for (size_t i = 0; !rc && i < (j ? json_object_array_length(j) : 0); i++)
			rc = add_tree_entry(f, l, &cap, json_object_array_get_idx(j, i));
		json_object_put(j);
		hf_buf_free(&body);
		free(url);
		url = NULL;
		if (rc)
			break;
		if (h.next[0]) {
			/* The hub sends absolute URLs; accept a path too. */
			if (h.next[0] == '/') {
				const char *host = strstr(f->endpoint, "://");
				const char *slash = host ? strchr(host + 3, '/') : NULL;
				int olen = slash ? (int)(slash - f->endpoint) : (int)strlen(f->endpoint);
				url = hf_asprintf("%.*s%s", olen, f->endpoint, h.next);
			} else {
				url = strdup(h.next);
			}
			if (!url)
				rc = fail(f, -ENOMEM, "out of memory");
		}
	}
	free(url);
	if (!rc && l->nents)
		qsort(l->ents, l->nents, sizeof(*l->ents), ent_cmp);
	return rc;
}

/* ------------------------------------------------------------------ */
/* downloads                                                           */

enum fstate { FS_PENDING, FS_WAIT_LOCK, FS_RETRY_WAIT, FS_ACTIVE, FS_DONE };
enum body_mode { BM_DISCARD, BM_WRITE, BM_ERROR };

struct hf_file {
	struct fetch *f;
	const struct tree_ent *t;	/* path, size, hash */
	char *blob, *inc, *lock;	/* blobs/{hash}, its .incomplete, its lock */
	enum fstate st;
	double wake;			/* when a waiting file may try again */
	bool told_wait;
	int lock_fd, fd;		/* -1 when not held / not open */
	uint64_t have;			/* valid bytes in the .incomplete file */
	struct sha256_ctx s256;
	struct sha1_ctx s1;
	int tries;

	/* current transfer */
	CURL *easy;
	struct resp_hdrs h;
	enum body_mode mode;
	struct hf_buf errbody;
	int werr;			/* errno from writing the .incomplete file */
	const char *abort_why;		/* protocol problem seen in a callback */
	char cerr[CURL_ERROR_SIZE];

	/* progress */
	uint64_t tick_have;
	double rate;
};

static void hash_reset(struct hf_file *x)
{
	if (x->t->lfs) {
		sha256_init(&x->s256);
	} else {
		/* git blob id = sha1("blob <size>\0" + content) */
		char hdr[48];
		int n = snprintf(hdr, sizeof(hdr), "blob %llu", (unsigned long long)x->t->size);
		sha1_init(&x->s1);
		sha1_update(&x->s1, hdr, (size_t)n + 1);
	}
}

static void hash_update(struct hf_file *x, const void *p, size_t n)
{
	if (x->t->lfs)
		sha256_update(&x->s256, p, n);
	else
		sha1_update(&x->s1, p, n);
}

static void release(struct hf_file *x)
{
	if (x->fd >= 0)
		close(x->fd);
	if (x->lock_fd >= 0)
		close(x->lock_fd);	/* drops the flock */
	x->fd = x->lock_fd = -1;
}

/* Write failures: ENOSPC gets its own advice. */
static int fail_write(struct fetch *f, const char *path, int e, const char *file)
{
	if (e == ENOSPC || e == EDQUOT)
		return fail(f, -e,
			    "disk full while writing '%s' to %s (%s). Free some space or set the cache "
			    "(HF_HUB_CACHE) to a larger disk; the partial download is kept and resumes next time.",
			    file, path, strerror(e));
	return fail(f, -e, "cannot write '%s' to %s: %s", file, path, strerror(e));
}

/*
 * Points snapshots/{commit}/{path} at ../../blobs/{hash} (relative, as
 * huggingface_hub does, so the cache can move).  Built as a temporary link
 * renamed into place so concurrent fetchers never see a missing file.
 */
static int link_snapshot(struct fetch *f, const struct tree_ent *t)
{
	char sp[PATH_MAX], tmp[PATH_MAX + 64], target[PATH_MAX], cur[PATH_MAX];
	int rc = snapshot_path(f, f->commit, t->path, sp, sizeof(sp));
	if (rc)
		return fail(f, rc, "path too long: %s", t->path);
	size_t depth = 2, off = 0;
	for (const char *p = t->path; *p; p++)
		depth += *p == '/';
	for (size_t i = 0; i < depth && off + 4 < sizeof(target); i++)
		off += (size_t)snprintf(target + off, sizeof(target) - off, "../");
	snprintf(target + off, sizeof(target) - off, "blobs/%s", t->hash);

	ssize_t n = readlink(sp, cur, sizeof(cur) - 1);
	if (n >= 0) {
		cur[n] = '\0';
		if (!strcmp(cur, target))
			return 0;
	}
	if ((rc = hf_mkdir_parent(sp)) < 0)
		return fail(f, rc, "cannot create the directory for %s: %s", sp, strerror(-rc));
	snprintf(tmp, sizeof(tmp), "%s.tmp.%d.%d", sp, (int)getpid(), (int)gettid());
	unlink(tmp);
	if (symlink(target, tmp) < 0 || rename(tmp, sp) < 0) {
		int e = errno;
		unlink(tmp);
		return fail(f, -e, "cannot link %s into the snapshot: %s", sp, strerror(e));
	}
	return 0;
}

static void progress_file(struct fetch *f, struct hf_file *x, uint64_t done, double rate)
{
	if (!f->o->progress)
		return;
	struct hf_progress p = {
		.done = done,
		.total = x->t->size,
		.rate_bps = rate,
		.eta_s = done >= x->t->size ? 0 : rate > 0 ? (double)(x->t->size - done) / rate : -1,
		.file = x->t->path,
	};
	f->o->progress(f->o->arg, &p);
}

/* Marks a file finished: its blob is verified and in place. */
static int file_complete(struct fetch *f, struct hf_file *x, bool downloaded)
{
	int rc = link_snapshot(f, x->t);
	if (rc)
		return rc;
	x->st = FS_DONE;
	f->done_files += x->t->size;
	if (!downloaded)
		logline(f, "%s: already in the cache", x->t->path);
	progress_file(f, x, x->t->size, x->rate);
	return 0;
}

/* Verifies the fully downloaded .incomplete file and renames it into place. */
static int file_verify(struct fetch *f, struct hf_file *x)
{
	const char *inc = x->inc, *blob = x->blob;
	char got[65], sz[32];
	uint8_t d[SHA256_DIGEST_LEN];
	if (x->t->lfs) {
		sha256_final(&x->s256, d);
		sha_hex(d, SHA256_DIGEST_LEN, got);
	} else {
		sha1_final(&x->s1, d);
		sha_hex(d, SHA1_DIGEST_LEN, got);
	}
	if (strcmp(got, x->t->hash)) {
		/* Never keep bad bytes around: a resume would extend them. */
		unlink(inc);
		release(x);
		return fail(f, -EBADMSG,
			    "checksum mismatch for '%s' in %s: expected %s %s, got %s (%s from %s). The damaged "
			    "download was deleted; run again to re-download it.",
			    x->t->path, f->id, x->t->lfs ? "sha256" : "git-sha1", x->t->hash, got,
			    hsize(x->t->size, sz), f->endpoint);
	}
	/* Durable before visible: the final name must only ever hold a
	 * complete file, even across a crash. */
	if (fdatasync(x->fd) < 0) {
		int e = errno;
		release(x);
		return fail_write(f, inc, e, x->t->path);
	}
	if (rename(inc, blob) < 0) {
		int e = errno;
		release(x);
		return fail(f, -e, "cannot rename %s to %s: %s", inc, blob, strerror(e));
	}
	release(x);
	logline(f, "%s: finished (%s, %s verified)", x->t->path, hsize(x->t->size, sz),
		x->t->lfs ? "sha256" : "git sha1");
	return file_complete(f, x, true);
}

static size_t on_file_body(char *p, size_t sz, size_t nm, void *ud)
{
	struct hf_file *x = ud;
	size_t n = sz * nm;
	if (!x->h.body_seen) {
		/* First body bytes of this response: decide what they are. */
		x->h.body_seen = true;
		long st = x->h.status;
		if (st >= 300 && st < 400) {
			x->mode = BM_DISCARD;
		} else if (st == 206) {
			if (x->h.range_start != (int64_t)x->have) {
				x->abort_why = "the server resumed at a different offset than asked";
				return 0;
			}
			x->mode = BM_WRITE;
		} else if (st == 200) {
			if (x->have) {
				/* Server ignored Range: start over. */
				if (ftruncate(x->fd, 0) < 0) {
					x->werr = errno;
					return 0;
				}
				logline(x->f, "%s: server does not support resuming; restarting from 0", x->t->path);
				x->have = x->tick_have = 0;
				hash_reset(x);
			}
			x->mode = BM_WRITE;
		} else {
			x->mode = BM_ERROR;
		}
	}
	if (x->mode == BM_DISCARD)
		return n;
	if (x->mode == BM_ERROR) {
		if (x->errbody.len < HF_ERRBODY_MAX)
			hf_buf_add(&x->errbody, p, n < HF_ERRBODY_MAX ? n : HF_ERRBODY_MAX);
		return n;
	}
	if (x->have + n > x->t->size) {
		x->abort_why = "the server sent more bytes than the file's published size";
		return 0;
	}
	for (size_t off = 0; off < n;) {
		ssize_t w = pwrite(x->fd, p + off, n - off, (off_t)(x->have + off));
		if (w < 0) {
			if (errno == EINTR)
				continue;
			x->werr = errno;
			return 0;	/* makes curl stop with CURLE_WRITE_ERROR */
		}
		off += (size_t)w;
	}
	hash_update(x, p, n);
	x->have += n;
	x->f->net_bytes += n;
	return n;
}

static int start_transfer(struct fetch *f, CURLM *m, struct hf_file *x)
{
	char *qpath = url_quote(x->t->path, true);
	char *url = qpath ? hf_asprintf("%s/%s/resolve/%s/%s", f->endpoint, f->id, f->commit, qpath) : NULL;
	free(qpath);
	CURL *e = url ? curl_easy_init() : NULL;
	if (!e) {
		free(url);
		return fail(f, -ENOMEM, "out of memory");
	}
	easy_common(f, e, url, x->cerr);
	free(url);	/* curl copies the URL */
	memset(&x->h, 0, sizeof(x->h));
	x->h.range_start = -1;
	x->werr = 0;
	x->abort_why = NULL;
	hf_buf_free(&x->errbody);
	x->tick_have = x->have;	/* rate counts only new bytes */
	char range[48];
	if (x->have) {
		snprintf(range, sizeof(range), "%llu-", (unsigned long long)x->have);
		curl_easy_setopt(e, CURLOPT_RANGE, range);	/* curl copies it */
	}
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, &x->h);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_file_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(e, CURLOPT_PRIVATE, x);
	if (curl_multi_add_handle(m, e) != CURLM_OK) {
		curl_easy_cleanup(e);
		return fail(f, -ENOMEM, "cannot start the download of %s", x->t->path);
	}
	x->easy = e;
	x->st = FS_ACTIVE;
	return 0;
}

/* Reads what an earlier attempt left in the .incomplete file into the hash,
 * so a resume only downloads the rest.  Returns the valid prefix length. */
static uint64_t hash_prefix(struct hf_file *x, uint64_t len)
{
	static const size_t chunk = 1u << 20;
	char *b = malloc(chunk);
	uint64_t off = 0;
	if (!b)
		return 0;
	while (off < len) {
		size_t want = len - off < chunk ? (size_t)(len - off) : chunk;
		ssize_t r = pread(x->fd, b, want, (off_t)off);
		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			break;
		}
		hash_update(x, b, (size_t)r);
		off += (uint64_t)r;
	}
	free(b);
	return off;
}

/* Is a final blob already there?  Anything at the final name was verified
 * before the rename, so the size check is only against foreign damage. */
static int blob_state(struct hf_file *x)
{
	struct stat st;
	if (stat(x->blob, &st) < 0)
		return 0;
	if ((uint64_t)st.st_size == x->t->size)
		return 1;
	return -1;	/* wrong size: must be replaced */
}

/* Moves a pending / lock-waiting file forward: cached, waiting, or started. */
static int file_begin(struct fetch *f, CURLM *m, struct hf_file *x, double now)
{
	const char *lock = x->lock, *inc = x->inc;
	char sz[32], sz2[32];
	if (blob_state(x) == 1)
		return file_complete(f, x, false);

	x->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (x->lock_fd < 0)
		return fail(f, -errno, "cannot open lock file %s: %s", lock, strerror(errno));
	if (flock(x->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		release(x);
		if (e != EWOULDBLOCK)
			return fail(f, -e, "cannot lock %s: %s", lock, strerror(e));
		/* Someone else (thread, process, python) is fetching this blob:
		 * poll rather than block so our other files keep moving. */
		if (!x->told_wait)
			logline(f, "%s: another download of this file is in progress; waiting for it", x->t->path);
		x->told_wait = true;
		x->st = FS_WAIT_LOCK;
		x->wake = now + HF_LOCK_POLL_S;
		return 0;
	}
	int bs = blob_state(x);	/* may have appeared while we waited */
	if (bs == 1) {
		release(x);
		return file_complete(f, x, false);
	}
	if (bs < 0) {
		logline(f, "%s: cached blob has the wrong size; downloading it again", x->t->path);
		unlink(x->blob);
	}

	x->fd = open(inc, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (x->fd < 0) {
		int e = errno;
		release(x);
		return fail_write(f, inc, e, x->t->path);
	}
	struct stat st;
	if (fstat(x->fd, &st) < 0) {
		int e = errno;
		release(x);
		return fail(f, -e, "cannot stat %s: %s", inc, strerror(e));
	}
	x->have = (uint64_t)st.st_size;
	if (x->have > x->t->size) {
		logline(f, "%s: partial file is larger than the file; starting over", x->t->path);
		if (ftruncate(x->fd, 0) < 0) {
			int e = errno;
			release(x);
			return fail_write(f, inc, e, x->t->path);
		}
		x->have = 0;
	}
	hash_reset(x);
	if (x->have) {
		uint64_t ok = hash_prefix(x, x->have);
		if (ok != x->have) {
			/* Unreadable tail: keep what hashed. */
			x->have = ok;
		}
	}
	if (x->have == x->t->size)
		return file_verify(f, x);	/* also covers empty files */
	if (x->have)
		logline(f, "%s: resuming at %s of %s", x->t->path, hsize(x->have, sz), hsize(x->t->size, sz2));
	else
		logline(f, "%s: downloading (%s)", x->t->path, hsize(x->t->size, sz));
	return start_transfer(f, m, x);
}

static bool transient(CURLcode r)
{
	switch (r) {
	case CURLE_PARTIAL_FILE:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_SSL_CONNECT_ERROR:
		return true;
	default:
		return false;
	}
}

/* Transient failure: retry later from x->have (lock and file stay held), or
 * give up with a message saying the next run resumes. */
static int retry_or_fail(struct fetch *f, struct hf_file *x, int rc, const char *why, double now)
{
	char sz[32];
	if (x->tries < f->max_retries) {
		x->tries++;
		double delay = 0.5 * (double)(1 << (x->tries < 6 ? x->tries - 1 : 5));
		logline(f, "%s: %s; retrying from %s in %.1fs (attempt %d of %d)", x->t->path, why,
			hsize(x->have, sz), delay, x->tries + 1, f->max_retries + 1);
		x->st = FS_RETRY_WAIT;
		x->wake = now + delay;
		return 0;
	}
	release(x);
	return fail(f, rc,
		    "download of '%s' from %s (%s) failed: %s. The first %s is kept; run again to resume.",
		    x->t->path, f->endpoint, f->endpoint_src, why, hsize(x->have, sz));
}

static int file_transfer_done(struct fetch *f, CURLM *m, struct hf_file *x, CURLcode res, double now)
{
	char why[CURL_ERROR_SIZE + 128];
	const char *inc = x->inc;
	long st = x->h.status;
	curl_multi_remove_handle(m, x->easy);
	curl_easy_cleanup(x->easy);
	x->easy = NULL;

	if (x->werr) {
		int e = x->werr;
		release(x);
		return fail_write(f, inc, e, x->t->path);
	}
	if (x->abort_why) {
		/* The partial file can no longer be trusted to line up: start over. */
		snprintf(why, sizeof(why), "%s", x->abort_why);
		if (ftruncate(x->fd, 0) < 0) {
			int e = errno;
			release(x);
			return fail_write(f, inc, e, x->t->path);
		}
		x->have = 0;
		hash_reset(x);
		return retry_or_fail(f, x, -EPROTO, why, now);
	}
	if (res != CURLE_OK) {
		snprintf(why, sizeof(why), "%s%s%s", curl_easy_strerror(res), x->cerr[0] ? ": " : "", x->cerr);
		if (transient(res))
			return retry_or_fail(f, x, curl_errno(res), why, now);
		release(x);
		return fail(f, curl_errno(res), "download of '%s' from %s (%s) failed: %s", x->t->path, f->endpoint,
			    f->endpoint_src, why);
	}
	if (st == 200 || st == 206) {
		if (x->have < x->t->size) {
			snprintf(why, sizeof(why), "connection ended early (%llu of %llu bytes)",
				 (unsigned long long)x->have, (unsigned long long)x->t->size);
			return retry_or_fail(f, x, -EIO, why, now);
		}
		return file_verify(f, x);
	}
	if (st == 416) {
		/* Our partial file does not fit the server's: start over. */
		if (ftruncate(x->fd, 0) < 0) {
			int e = errno;
			release(x);
			return fail_write(f, inc, e, x->t->path);
		}
		x->have = 0;
		hash_reset(x);
		return retry_or_fail(f, x, -EPROTO, "server refused the resume range (HTTP 416)", now);
	}
	if (st >= 500 || st == 408 || st == 429) {
		snprintf(why, sizeof(why), "HTTP %ld", st);
		if (x->tries < f->max_retries)
			return retry_or_fail(f, x, -EIO, why, now);
	}
	release(x);
	return fail_http(f, &x->h, x->errbody.d, x->t->path);
}

/* Progress: per active file, then overall.  Rates are smoothed over ~2 s
 * so the ETA does not jump around. */
static void progress_tick(struct fetch *f, struct hf_file *xs, size_t n, double now, bool force)
{
	double dt = now - f->tick_t;
	if (!force && dt < HF_TICK_S)
		return;
	double a = dt > 0 ? dt / (dt + 2.0) : 0;
	if (dt > 0)
		f->rate = f->tick_t == 0 ? 0 : f->rate + a * ((double)(f->net_bytes - f->tick_net) / dt - f->rate);
	uint64_t done = f->done_files;
	for (size_t i = 0; i < n; i++) {
		struct hf_file *x = &xs[i];
		if (x->st != FS_ACTIVE && x->st != FS_RETRY_WAIT)
			continue;
		done += x->have;
		if (dt > 0 && x->have >= x->tick_have)
			x->rate += a * ((double)(x->have - x->tick_have) / dt - x->rate);
		x->tick_have = x->have;
		progress_file(f, x, x->have, x->rate);
	}
	f->tick_t = now;
	f->tick_net = f->net_bytes;
	if (f->o->progress) {
		struct hf_progress p = {
			.done = done,
			.total = f->total,
			.rate_bps = f->rate,
			.eta_s = done >= f->total ? 0 : f->rate > 0 ? (double)(f->total - done) / f->rate : -1,
			.file = NULL,
		};
		f->o->progress(f->o->arg, &p);
	}
}

/* Refuses early when the disk obviously cannot hold what is missing. */
static int check_space(struct fetch *f, struct hf_file *xs, size_t n)
{
	uint64_t need = 0;
	for (size_t i = 0; i < n; i++) {
		struct stat st;
		if (blob_state(&xs[i]) == 1)
			continue;
		uint64_t have = 0;
		if (stat(xs[i].inc, &st) == 0 && S_ISREG(st.st_mode))
			have = (uint64_t)st.st_size;
		if (have < xs[i].t->size)
			need += xs[i].t->size - have;
	}
	char blobs[PATH_MAX + 8];
	snprintf(blobs, sizeof(blobs), "%s/blobs", f->repo_dir);
	struct statvfs vfs;
	if (statvfs(blobs, &vfs) < 0)
		return 0;	/* unknown: let the writes tell */
	uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	if (need > avail) {
		char a[32], b[32];
		return fail(f, -ENOSPC,
			    "disk full: %s needs %s more in %s but only %s is free. Free some space or set the "
			    "cache (HF_HUB_CACHE) to a larger disk.",
			    f->id, hsize(need, a), f->cache, hsize(avail, b));
	}
	return 0;
}

static int download_all(struct fetch *f, struct hf_file *xs, size_t n)
{
	CURLM *m = curl_multi_init();
	if (!m)
		return fail(f, -ENOMEM, "out of memory");
	size_t ndone = 0;
	int active = 0, rc = 0;
	f->tick_t = 0;
	progress_tick(f, xs, n, mono_s(), true);
	while (ndone < n) {
		if (cancelled(f)) {
			rc = fail(f, -ECANCELED,
				  "download of %s cancelled; partial files are kept in %s/blobs and resume next time",
				  f->id, f->repo_dir);
			break;
		}
		double now = mono_s();
		for (size_t i = 0; i < n && active < f->parallel && !rc; i++) {
			struct hf_file *x = &xs[i];
			if (x->st == FS_PENDING || (x->st == FS_WAIT_LOCK && now >= x->wake))
				rc = file_begin(f, m, x, now);
			else if (x->st == FS_RETRY_WAIT && now >= x->wake)
				rc = start_transfer(f, m, x);
			else
				continue;
			if (x->st == FS_ACTIVE)
				active++;
			else if (x->st == FS_DONE)
				ndone++;
		}
		if (rc || ndone == n)
			break;
		int running;
		CURLMcode mc = curl_multi_perform(m, &running);
		if (mc != CURLM_OK) {
			rc = fail(f, -EIO, "curl: %s", curl_multi_strerror(mc));
			break;
		}
		CURLMsg *msg;
		int left;
		while (!rc && (msg = curl_multi_info_read(m, &left))) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			CURL *e = msg->easy_handle;
			CURLcode res = msg->data.result;
			char *priv = NULL;
			curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
			struct hf_file *x = (struct hf_file *)priv;
			active--;
			rc = file_transfer_done(f, m, x, res, mono_s());
			if (x->st == FS_DONE)
				ndone++;
		}
		if (rc)
			break;
		progress_tick(f, xs, n, mono_s(), false);
		if (ndone < n)
			curl_multi_poll(m, NULL, 0, 100, NULL);
	}
	if (!rc)
		progress_tick(f, xs, n, mono_s(), true);
	for (size_t i = 0; i < n; i++) {
		if (xs[i].easy) {
			curl_multi_remove_handle(m, xs[i].easy);
			curl_easy_cleanup(xs[i].easy);
			xs[i].easy = NULL;
		}
		release(&xs[i]);
		hf_buf_free(&xs[i].errbody);
	}
	curl_multi_cleanup(m);
	return rc;
}

static int write_manifest(struct fetch *f, struct hf_file *xs, size_t n)
{
	char mp[PATH_MAX];
	struct hf_buf b = { 0 };
	int rc = manifest_path(f, f->commit, mp, sizeof(mp));
	for (size_t i = 0; !rc && i < n; i++) {
		char line[128];
		int len = snprintf(line, sizeof(line), "%s %llu ", xs[i].t->hash, (unsigned long long)xs[i].t->size);
		if (hf_buf_add(&b, line, (size_t)len) < 0 || hf_buf_add(&b, xs[i].t->path, strlen(xs[i].t->path)) < 0 ||
		    hf_buf_add(&b, "\n", 1) < 0)
			rc = -ENOMEM;
	}
	if (!rc)
		rc = hf_mkdir_parent(mp);
	if (!rc)
		rc = write_small_atomic(mp, b.d ? b.d : "", b.len);
	hf_buf_free(&b);
	if (rc)
		return fail(f, rc, "cannot record the finished snapshot in %s: %s", mp, strerror(-rc));
	return 0;
}

/* Steps 2-4 for f->commit. */
static int fetch_files(struct fetch *f, struct filelist *l)
{
	int rc = fetch_tree(f, l);
	if (rc)
		return rc;
	/* The revision's sibling list is the file list; older replies may lack
	 * it, then the tree is. */
	size_t n = l->names ? l->n : l->nents;
	struct hf_file *xs = calloc(n ? n : 1, sizeof(*xs));
	if (!xs)
		return fail(f, -ENOMEM, "out of memory");
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		const struct tree_ent *t;
		if (l->names) {
			struct tree_ent key = { .path = l->names[i] };
			t = bsearch(&key, l->ents, l->nents, sizeof(*l->ents), ent_cmp);
			if (!t) {
				rc = fail(f, -EPROTO,
					  "%s lists '%s' but its tree at %s gives no size or hash for it; cannot verify it",
					  f->id, l->names[i], f->commit);
				break;
			}
		} else {
			t = &l->ents[i];
		}
		bool dup = false;
		for (size_t j = 0; j < k && !dup; j++)
			dup = xs[j].t == t;
		if (dup)
			continue;
		xs[k] = (struct hf_file){ .f = f, .t = t, .st = FS_PENDING, .fd = -1, .lock_fd = -1 };
		xs[k].blob = hf_asprintf("%s/blobs/%s", f->repo_dir, t->hash);
		xs[k].inc = hf_asprintf("%s/blobs/%s.incomplete", f->repo_dir, t->hash);
		xs[k].lock = hf_asprintf("%s/%s.lock", f->lock_dir, t->hash);
		k++;
		if (!xs[k - 1].blob || !xs[k - 1].inc || !xs[k - 1].lock) {
			rc = fail(f, -ENOMEM, "out of memory");
			break;
		}
		f->total += t->size;
	}
	if (!rc)
		rc = check_space(f, xs, k);
	if (!rc)
		rc = download_all(f, xs, k);
	if (!rc)
		rc = write_manifest(f, xs, k);
	if (!rc) {
		char sz[32];
		logline(f, "%s@%s: snapshot %s complete (%zu files, %s downloaded)", f->id, f->rev, f->commit, k,
			hsize(f->net_bytes, sz));
	}
	for (size_t i = 0; i < k; i++) {
		free(xs[i].blob);
		free(xs[i].inc);
		free(xs[i].lock);
	}
	free(xs);
	return rc;
}

/* ------------------------------------------------------------------ */
/* entry point                                                         */

static int setup(struct fetch *f, const struct hf_opts *o, const char *id, const char *revision)
{
	f->o = o;
	f->id = id;
	f->rev = revision && *revision ? revision : "main";
	f->token = o->token && *o->token ? o->token : NULL;
	f->parallel = o->parallel > 0 ? o->parallel : 4;
	f->max_retries = o->max_retries == 0 ? 3 : o->max_retries < 0 ? 0 : o->max_retries;

	if (!id || !valid_id(id))
		return fail(f, -EINVAL, "invalid model id '%s': expected 'org/name' using letters, digits, '-', '_', '.'",
			    id ? id : "(null)");
	if (!valid_relpath(f->rev) || strlen(f->rev) > 255)
		return fail(f, -EINVAL, "invalid revision '%s'", f->rev);
	if (f->token && strpbrk(f->token, "\r\n"))
		return fail(f, -EINVAL, "the Hugging Face token contains a line break; check HF_TOKEN");

	const char *ep = o->endpoint;
	f->endpoint_src = "set by the caller";
	if (!ep || !*ep) {
		ep = getenv("HF_ENDPOINT");
		f->endpoint_src = "from HF_ENDPOINT";
	}
	if (!ep || !*ep) {
		ep = HF_DEFAULT_ENDPOINT;
		f->endpoint_src = "default";
	}
	if ((size_t)snprintf(f->endpoint, sizeof(f->endpoint), "%s", ep) >= sizeof(f->endpoint))
		return fail(f, -EINVAL, "endpoint URL too long");
	for (size_t len = strlen(f->endpoint); len && f->endpoint[len - 1] == '/';)
		f->endpoint[--len] = '\0';

	/* Same defaults as huggingface_hub, so both share one cache. */
	char dflt[PATH_MAX];
	const char *cache = o->cache_dir, *e;
	if (!cache || !*cache)
		cache = getenv("HF_HUB_CACHE");
	if ((!cache || !*cache) && (e = getenv("HF_HOME")) && *e) {
		snprintf(dflt, sizeof(dflt), "%s/hub", e);
		cache = dflt;
	}
	if ((!cache || !*cache) && (e = getenv("XDG_CACHE_HOME")) && *e) {
		snprintf(dflt, sizeof(dflt), "%s/huggingface/hub", e);
		cache = dflt;
	}
	if ((!cache || !*cache) && (e = getenv("HOME")) && *e) {
		snprintf(dflt, sizeof(dflt), "%s/.cache/huggingface/hub", e);
		cache = dflt;
	}
	if (!cache || !*cache)
		return fail(f, -EINVAL, "no cache directory: pass cache_dir or set HF_HUB_CACHE");
	int rc = mkdir_p(cache, 0755);
	if (rc)
		return fail(f, rc, "cannot create the cache directory %s: %s", cache, strerror(-rc));
	if (!realpath(cache, f->cache))
		return fail(f, -errno, "cannot resolve the cache directory %s: %s", cache, strerror(errno));

	char folder[256];
	snprintf(folder, sizeof(folder), "models--%s", id);
	for (char *p = folder; *p; p++)
		if (*p == '/') {
			memmove(p + 2, p + 1, strlen(p + 1) + 1);
			p[0] = p[1] = '-';
		}
	if ((size_t)snprintf(f->repo_dir, sizeof(f->repo_dir), "%s/%s", f->cache, folder) >= sizeof(f->repo_dir) ||
	    (size_t)snprintf(f->lock_dir, sizeof(f->lock_dir), "%s/.locks/%s", f->cache, folder) >= sizeof(f->lock_dir))
		return fail(f, -ENAMETOOLONG, "cache path too long: %s", f->cache);
	const char *sub[] = { "blobs", "snapshots", "refs" };
	for (size_t i = 0; i < 3; i++) {
		char d[PATH_MAX + 16];
		snprintf(d, sizeof(d), "%s/%s", f->repo_dir, sub[i]);
		if ((rc = mkdir_p(d, 0755)) < 0)
			return fail(f, rc, "cannot create %s: %s", d, strerror(-rc));
	}
	if ((rc = mkdir_p(f->lock_dir, 0755)) < 0)
		return fail(f, rc, "cannot create %s: %s", f->lock_dir, strerror(-rc));

	pthread_once(&hf_global.once, hf_global_init);
	if (hf_global.init_rc != CURLE_OK)
		return fail(f, -EIO, "libcurl initialisation failed: %s", curl_easy_strerror(hf_global.init_rc));
	if (f->token) {
		char *h = hf_asprintf("Authorization: Bearer %s", f->token);
		f->auth = h ? curl_slist_append(NULL, h) : NULL;
		if (h) {
			memset(h, 0, strlen(h));	/* keep no stray copies */
			free(h);
		}
		if (!f->auth)
			return fail(f, -ENOMEM, "out of memory");
	}
	return 0;
}

static bool env_true(const char *name)
{
	const char *v = getenv(name);
	return v && (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on"));
}

int hf_fetch(const struct hf_opts *o, const char *id, const char *revision, char *out_path, size_t out_len,
	     char *err, size_t errlen)
{
	struct fetch f = { 0 };
	struct filelist l = { 0 };
	if (err && errlen)
		err[0] = '\0';
	if (!o || !out_path || !out_len) {
		if (err && errlen)
			snprintf(err, errlen, "hf_fetch: missing options or output buffer");
		return -EINVAL;
	}
	out_path[0] = '\0';
	int rc = setup(&f, o, id, revision);
	if (rc)
		goto out;

	char commit[41];
	bool have_cached = cached_commit(&f, commit) && snapshot_complete(&f, commit);
	/* A commit hash never changes: a complete snapshot needs no request. */
	if (have_cached && is_hex(f.rev, 40)) {
		snprintf(f.commit, sizeof(f.commit), "%s", commit);
		rc = set_out_path(&f, commit, out_path, out_len);
		goto out;
	}
	if (env_true("HF_HUB_OFFLINE")) {
		if (have_cached) {
			logline(&f, "HF_HUB_OFFLINE is set; using cached snapshot %s of %s@%s", commit, f.id, f.rev);
			rc = set_out_path(&f, commit, out_path, out_len);
		} else {
			rc = fail(&f, -ENOENT,
				  "HF_HUB_OFFLINE is set and %s@%s is not completely in the cache %s; unset it to download",
				  f.id, f.rev, f.cache);
		}
		goto out;
	}

	bool unreachable = false;
	rc = fetch_revision(&f, &l, &unreachable);
	if (rc && unreachable && have_cached) {
		logline(&f, "using cached snapshot %s of %s@%s because: %s", commit, f.id, f.rev, f.msg);
		f.failed = false;
		f.msg[0] = '\0';
		snprintf(f.commit, sizeof(f.commit), "%s", commit);
		rc = set_out_path(&f, commit, out_path, out_len);
		goto out;
	}
	if (rc)
		goto out;
	if (!snapshot_complete(&f, f.commit))
		rc = fetch_files(&f, &l);
	else
		logline(&f, "%s@%s: snapshot %s already complete in the cache", f.id, f.rev, f.commit);
	if (!rc)
		rc = write_ref(&f);
	if (!rc)
		rc = set_out_path(&f, f.commit, out_path, out_len);
out:
	filelist_free(&l);
	curl_slist_free_all(f.auth);
	if (rc && err && errlen)
		snprintf(err, errlen, "%s", f.failed ? f.msg : strerror(-rc));
	return rc;
}
