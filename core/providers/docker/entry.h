/*
 * entry.h - the docker provider's entries in the providers file
 * (-o providers=FILE), and its per-context state:
 *
 *   {"box": {"type": "docker", "endpoint": "unix:///var/run/docker.sock",
 *            "image": "debian:bookworm-slim", "timeout": 30},
 *    "gpuhost": {"type": "docker", "endpoint": "tcp://gpu1.example:2376",
 *                "ca": "~/.docker/ca.pem", "cert": "~/.docker/cert.pem",
 *                "key": "~/.docker/key.pem", "local": false}}
 *
 * Entries are interned as the ssh provider's are (core/providers/ssh/
 * entry.h): they live as long as the seerfs, sandboxes keep plain pointers
 * to them, and identical settings share one entry.
 */
#ifndef SEER_DOCKER_ENTRY_H
#define SEER_DOCKER_ENTRY_H

#include "core/providers/entryfield.h"

#include <pthread.h>
#include <stddef.h>

struct seer_ctx;
struct json_object;
struct engine;

/* One entry of type "docker". */
struct docker_entry {
	char *name;                  /* "box" */
	char *endpoint;              /* unix:///PATH or tcp://HOST:PORT */
	char *sock;                  /* unix://: the socket's path; else NULL */
	char *url;                   /* the base URL requests go to ("http://docker" over a unix socket) */
	char *ca, *cert, *key;       /* TLS client certificates (tcp:// only); NULL: none */
	char *image;                 /* the default image; default "debian:bookworm-slim" */
	int timeout_ms;              /* "timeout" in seconds, default 30: every request, and the connect */
	int local;                   /* the engine runs on this machine (unix://, or tcp:// to a loopback address) */
	int userns_host;             /* "userns": "host": no user namespace asked for */
	int userns_auto;             /* "userns": "auto": one where the engine offers it (unset: dockerd's userns-remap, none on Podman) */
	struct engine *eng;          /* its client (core/lib/engine.h), opened by the first request (api.c) */
	pthread_mutex_t lock;        /* eng */
};

/* The provider's state in one seerfs: the interned entries. */
struct docker_state {
	struct entry_set entries;    /* struct docker_entry */
	char *agent_path;            /* STATE/docker/agent: the static agent, written by the first start */
	pthread_mutex_t agent_lock;
};

int docker_state_init(struct seer_ctx *ctx, void **state);
void docker_state_cleanup(struct seer_ctx *ctx, void *state);

/* Parses entry `name` of the providers file `file` into its interned copy
 * (*settings). -EINVAL with a message naming the file, the entry and the
 * field. */
int docker_entry_parse(struct seer_ctx *ctx, void *state, const char *file, const char *name, struct json_object *o,
		       const void **settings, char *err, size_t errlen);

#endif
