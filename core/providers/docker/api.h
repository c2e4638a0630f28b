/*
 * api.h - the few Engine API requests the docker provider makes, over
 * libcurl: JSON in, JSON out, on a unix socket or tcp:// with TLS client
 * certificates. The API version is negotiated once per entry (GET /version:
 * the engine's, capped at the newest this client was written for).
 *
 * They go through the shared client core/lib/engine.h (api.c keeps one
 * per entry); these wrappers give the provider's callers errnos for the
 * statuses they branch on.
 */
#ifndef SEER_DOCKER_API_H
#define SEER_DOCKER_API_H

#include <stddef.h>

struct docker_entry;
struct json_object;
struct sbuf;

/* method path (no version prefix; query included), body a JSON text or
 * NULL. *status gets the HTTP status, *out (when out is not NULL) the
 * parsed JSON answer (NULL when the answer is not JSON). timeout_ms 0: the
 * entry's. Returns 0 for a 2xx answer; -ENOENT (404), -EEXIST (409),
 * -EHOSTUNREACH (the engine cannot be opened: err names the endpoint), the
 * client's -errno (-ETIMEDOUT...), -EIO (any other answer: err holds the
 * engine's message). */
int dk_call(struct docker_entry *e, const char *method, const char *path, const char *body, int timeout_ms,
	    long *status, struct json_object **out, char *err, size_t errlen);

/* GET only: the answer's raw bytes in *raw (malloc'd, *rawlen), such as
 * logs. */
int dk_call_raw(struct docker_entry *e, const char *method, const char *path, const char *body, int timeout_ms,
		long *status, char **raw, size_t *rawlen, char *err, size_t errlen);

/* Appends to out the text of a multiplexed log stream (8-byte frame
 * headers: stream, 0, 0, 0, length), stdout and stderr alike. */
void dk_demux(const char *raw, size_t len, struct sbuf *out);

/* The entry's engine client (engine.h), opened on first use; NULL with a
 * message naming the endpoint when it cannot be opened. */
struct engine;
struct engine *dk_engine(struct docker_entry *e, char *err, size_t errlen);

/* A value of a JSON object by dotted path ("State.Pid"), or NULL. */
struct json_object *dk_get(struct json_object *o, const char *path);

/* Whether e's engine is Podman's compatible service: what its handle
 * learnt from GET /version when it was opened (engine_server_kind). */
int dk_podman(struct docker_entry *e);

/* Puts into hc (a HostConfig) the user namespace a container of entry e
 * runs in, and returns 1 when that is a namespace of its own. Package
 * builds (for_build) get the same as the entry's sandboxes, so that the
 * ids of a committed layer are the ids its sandboxes see, except on
 * Podman, whose 4.3 commits an "auto" container's layer with host ids:
 * builds there run without one. */
int dk_userns_mode(struct docker_entry *e, struct json_object *hc, int for_build);

#endif
