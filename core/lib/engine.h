/*
 * engine.h - a client of the Docker Engine API (dockerd 20.10 and later,
 * Podman 4.3's compatible service) over libcurl and json-c, for the docker
 * provider: one endpoint (a unix socket or TCP with TLS client
 * certificates, as the docker CLI takes them), JSON requests, raw bodies
 * (tar archives in and out, logs), hijacked streams (exec, attach) with
 * docker's stdout/stderr framing, and tar archives of host trees built and
 * extracted by file descriptor (libarchive).
 *
 * Every function that can fail returns 0 (or an HTTP status, a length) or
 * a negative errno, and writes into err a message that names the endpoint
 * and what to do. Nothing here hangs: connecting is bounded by the
 * endpoint's timeout_s, and so is waiting for the reply's headers (a
 * stalled engine that accepted the connection fails with -ETIMEDOUT);
 * only a stream's body, once it started, runs for as long as it runs.
 * TLS key contents are never logged; a message names the key's path at most.
 *
 * A struct engine is thread-safe: every call uses a curl handle of its own
 * (TLS sessions are shared between them under a lock).
 */
#ifndef SEER_ENGINE_H
#define SEER_ENGINE_H

#include <stddef.h>
#include <sys/types.h>

struct json_object;

/* The API versions this client speaks: it negotiates min(server, MAX) and
 * refuses a server whose newest version is below MIN. */
#define ENGINE_API_MIN "1.40"
#define ENGINE_API_MAX "1.41"

struct engine;

struct engine_opts {
	const char *endpoint;    /* unix:///path/docker.sock or tcp://HOST:PORT */
	const char *ca, *cert, *key;  /* PEM paths, as docker's --tlscacert,
				       * --tlscert, --tlskey: all three or none;
				       * given, tcp:// speaks HTTPS and verifies
				       * the server against ca */
	int timeout_s;           /* connect and reply-header deadline; <= 0: 30 */
};

/* A parsed endpoint (engine_parse_endpoint): the pure part of engine_open. */
struct engine_addr {
	int is_unix;
	char path[108];          /* the socket's path (unix) */
	char host[256];          /* the host (tcp), without brackets */
	int port;                /* tcp */
};

/* Parses "unix:///abs/path" or "tcp://HOST:PORT" (an IPv6 HOST in
 * brackets). -EINVAL with a message otherwise (other schemes, a relative
 * or too long socket path, no or a bad port). */
int engine_parse_endpoint(const char *endpoint, struct engine_addr *a, char *err, size_t errlen);

/* The version to speak to a server whose newest is server ("1.43"):
 * min(server, ENGINE_API_MAX) into out. -EINVAL when server is not
 * MAJOR.MINOR, -ENOTSUP when it is older than ENGINE_API_MIN. */
int engine_negotiate_api(const char *server, char *out, size_t outlen);

/* Opens an endpoint: GET /version (unversioned) and negotiates the API
 * version min(server's ApiVersion, ENGINE_API_MAX). Fails within the
 * timeout, naming the endpoint: -ECONNREFUSED/-ENOENT (nothing listens),
 * -ETIMEDOUT (no answer), -EACCES (TLS: the server refused our
 * certificate, or we refused its), -EPROTO (not an Engine API, or a server
 * older than ENGINE_API_MIN), -EINVAL (bad options). */
int engine_open(const struct engine_opts *o, struct engine **out, char *err, size_t errlen);
void engine_close(struct engine *e);

/* The negotiated version ("1.41"), the server's kind ("docker" or
 * "podman", from /version's Components), its own version ("20.10.24",
 * "4.3.1") and the endpoint as given. Valid while e is open. */
const char *engine_api_version(const struct engine *e);
const char *engine_server_kind(const struct engine *e);
const char *engine_server_version(const struct engine *e);
const char *engine_endpoint(const struct engine *e);

/* One request: path without the /vX.Y prefix (added; path starts with
 * '/', its query already escaped, see engine_escape), body NULL or JSON.
 * Returns the HTTP status (>= 100) or -errno; *reply (reply may be NULL)
 * gets the parsed JSON body, or NULL when the body was empty or not JSON
 * (the caller json_object_put()s it). On a status >= 400, err gets the
 * engine's "message". The reply's headers must come within the endpoint's
 * timeout. */
int engine_call(struct engine *e, const char *method, const char *path, struct json_object *body,
		struct json_object **reply, char *err, size_t errlen);
/* The same with a deadline of its own for the reply's headers, for calls
 * that work before they answer (commit, wait, stop): timeout_s <= 0 waits
 * without bound (connecting is still bounded). */
int engine_call_t(struct engine *e, const char *method, const char *path, struct json_object *body,
		  int timeout_s, struct json_object **reply, char *err, size_t errlen);

/* A raw body (a tar for PUT /containers/ID/archive, POST /images/load,
 * POST /build): the request's Content-Type is content_type. Returns and
 * replies as engine_call; the headers' deadline is the endpoint's timeout
 * (an upload's own time does not count: the deadline starts once the body
 * is sent). */
int engine_put_raw(struct engine *e, const char *method, const char *path, const char *content_type,
		   const void *data, size_t len, struct json_object **reply, char *err, size_t errlen);

/* GET path and hand the body to sink as it arrives (an archive, logs, an
 * export). A sink returning non-zero stops the transfer, and that value is
 * returned. Returns the HTTP status of a successful reply (2xx), else
 * -errno (a status >= 400: -ENOENT for 404, -EIO otherwise, with the
 * engine's message in err). */
int engine_get_stream(struct engine *e, const char *path, int (*sink)(void *ud, const void *buf, size_t len),
		      void *ud, char *err, size_t errlen);

/* Percent-escapes s for a query value or a path segment into buf. Returns
 * the length or -ENAMETOOLONG. */
int engine_escape(const char *s, char *buf, size_t len);

/* A hijacked stream (POST /exec/ID/start, /containers/ID/attach): the
 * request goes with "Connection: Upgrade" and "Upgrade: tcp" over a
 * connect-only curl handle (so TLS works too); after the 101 (dockerd) or
 * 200 (podman) reply the connection carries raw bytes both ways: docker's
 * framed stdout/stderr (engine_demux) from the engine, stdin to it.
 * One thread may read while another writes (the stream's calls into curl
 * are serialised by a lock of its own; reads and writes never block in it). */
struct engine_stream;
int engine_hijack(struct engine *e, const char *path, struct json_object *body, struct engine_stream **out,
		  char *err, size_t errlen);
/* The socket, for poll(POLLIN). Data may already be buffered: read until
 * -EAGAIN before polling. */
int engine_stream_fd(struct engine_stream *s);
/* Up to len bytes; -EAGAIN when nothing has come yet; 0 at EOF. */
ssize_t engine_stream_read(struct engine_stream *s, void *buf, size_t len);
/* Writes all of buf (waits while the socket is full). len or -errno. */
ssize_t engine_stream_write(struct engine_stream *s, const void *buf, size_t len);
/* Half-close: the process's stdin sees EOF; output still comes.
 * shutdown(SHUT_WR) of the socket (for TLS too: the engine, written in Go,
 * reads a clean EOF at a record boundary as the end of stdin). */
int engine_stream_close_write(struct engine_stream *s);
void engine_stream_free(struct engine_stream *s);

/* docker's stdout/stderr framing on non-tty exec and attach streams and
 * logs: 8-byte headers {stream, 0, 0, 0, size (big endian, 32 bits)} then
 * size bytes. Fed any split of the stream, calls out once per contiguous
 * piece with stream 0 (stdin), 1 (stdout) or 2 (stderr). A tty stream is
 * not framed: init with raw = 1 and every byte is stdout. */
struct engine_demux {
	unsigned char hdr[8];
	size_t hlen;             /* header bytes gathered */
	size_t left;             /* payload bytes left of the current frame */
	int stream;              /* the current frame's stream */
	int raw;                 /* tty: no framing */
};
void engine_demux_init(struct engine_demux *d, int raw);
/* 0, or -EPROTO at a header that is not docker's framing (then the demux
 * stays failed). */
int engine_demux_feed(struct engine_demux *d, const void *buf, size_t len,
		      void (*out)(void *ud, int stream, const void *p, size_t n), void *ud);
/* Whether the stream ended between frames (an EOF inside one is truncation). */
int engine_demux_at_boundary(const struct engine_demux *d);

/*
 * tar archives (libarchive, pax format) for the archive endpoint.
 *
 * engine_tar_from_path: an in-memory tar of the host file or directory src
 * (relative to dirfd, or a path with AT_FDCWD) under the name dest_name
 * (its entries are dest_name/...). src itself must not be a symlink
 * (O_NOFOLLOW); a directory's tree is walked by fd (walk.h: openat2
 * RESOLVE_BENEATH, no symlinks followed, a swapped entry fails the walk);
 * symlinks are stored as links, fifos/sockets/devices skipped. Entries
 * are owned by uid/gid 0 (engine_tar_from_path_owner chooses), keep their
 * mode and mtime. *tar is malloc'ed (free it).
 *
 * engine_tar_extract: extracts a tar held in memory into the directory
 * dirfd, safely for a tar an engine (that is, a container) made: a name
 * that is absolute or holds ".." is refused (-EINVAL), every parent is
 * opened with openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS (a link in
 * the way fails with -ELOOP rather than be followed), files are created
 * O_NOFOLLOW, symlinks are made but never followed, hard links only to
 * entries beneath dirfd, devices refused. Owners are not restored (files
 * belong to the caller); modes keep their 0777 bits.
 */
int engine_tar_from_path(int dirfd, const char *src, const char *dest_name, void **tar, size_t *len, char *err,
			 size_t errlen);
int engine_tar_from_path_owner(int dirfd, const char *src, const char *dest_name, unsigned uid, unsigned gid,
			       void **tar, size_t *len, char *err, size_t errlen);
/* The same from an open file or directory (a provider's copy_in gets the fd
 * the core opened); fd's offset is not used. */
int engine_tar_from_fd(int fd, const char *dest_name, unsigned uid, unsigned gid, void **tar, size_t *len, char *err,
		       size_t errlen);
int engine_tar_extract(int dirfd, const void *tar, size_t len, char *err, size_t errlen);

#endif /* SEER_ENGINE_H */
