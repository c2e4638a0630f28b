/*
 * test_docker_entry.c - unit tests of the docker provider's providers-file
 * entries (core/providers/docker/entry.c): defaults, every field, every
 * refusal with the words its message must hold, and interning (identical
 * settings share one entry).
 */
#include "core/ctx.h"
#include "core/providers/docker/entry.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct seer_ctx ctx;
static void *state;
static char err[1024];

static int parse(const char *json, const struct docker_entry **out)
{
	struct json_object *o = json_tokener_parse(json);
	err[0] = '\0';
	const void *s = NULL;
	int r = docker_entry_parse(&ctx, state, "providers.json", "box", o, &s, err, sizeof(err));
	json_object_put(o);
	*out = s;
	return r;
}

static void refused(int line, const char *json, const char *w1, const char *w2)
{
	const struct docker_entry *e;
	int r = parse(json, &e);
	CHECK(r == -EINVAL, "line %d: %s: got %d", line, json, r);
	CHECK(has(err, "providers.json") && has(err, "\"box\""), "line %d: %s: message \"%s\" names no file/entry", line,
	      json, err);
	CHECK(has(err, w1), "line %d: %s: message \"%s\" lacks \"%s\"", line, json, err, w1);
	if (w2)
		CHECK(has(err, w2), "line %d: %s: message \"%s\" lacks \"%s\"", line, json, err, w2);
}
#define REFUSED(j, w1, w2) refused(__LINE__, j, w1, w2)

int main(void)
{
	ctx.state_dir = "/tmp/seerfs-test-docker-entry";
	ctx.uid = getuid();
	CHECK(docker_state_init(&ctx, &state) == 0, "state init");
	const struct docker_entry *e, *e2;

	CHECK(parse("{\"type\": \"docker\"}", &e) == 0, "defaults: %s", err);
	CHECK(e && !strcmp(e->endpoint, "unix:///var/run/docker.sock") && !strcmp(e->sock, "/var/run/docker.sock") &&
	      e->local == 1 && e->timeout_ms == 30000 && !strcmp(e->image, "debian:bookworm-slim") && !e->ca,
	      "defaults: %s %d %d %s", e ? e->endpoint : "-", e ? e->local : -1, e ? e->timeout_ms : -1,
	      e ? e->image : "-");

	CHECK(parse("{\"type\": \"docker\", \"endpoint\": \"tcp://gpu1.example:2376\", \"ca\": \"/c/ca.pem\", "
		    "\"cert\": \"/c/cert.pem\", \"key\": \"/c/key.pem\", \"image\": \"org/img:1\", \"timeout\": 2.5}",
		    &e) == 0, "tls: %s", err);
	CHECK(e && !e->sock && e->local == 0 && !strcmp(e->url, "https://gpu1.example:2376") &&
	      !strcmp(e->key, "/c/key.pem") && e->timeout_ms == 2500 && !strcmp(e->image, "org/img:1"),
	      "tls entry: %s local %d", e ? e->url : "-", e ? e->local : -1);
	CHECK(parse("{\"type\": \"docker\", \"endpoint\": \"tcp://127.0.0.1:2375\"}", &e) == 0 && e->local == 1 &&
	      !strcmp(e->url, "http://127.0.0.1:2375"), "loopback tcp is local: %s", err);
	CHECK(parse("{\"type\": \"docker\", \"endpoint\": \"tcp://10.0.0.5:2375\", \"local\": true}", &e) == 0 &&
	      e->local == 1, "local forced: %s", err);
	/* "userns": "auto" or "host"; neither when absent */
	CHECK(parse("{\"type\": \"docker\"}", &e) == 0 && !e->userns_auto && !e->userns_host, "userns unset: %s", err);
	CHECK(parse("{\"type\": \"docker\", \"userns\": \"auto\"}", &e) == 0 && e->userns_auto && !e->userns_host,
	      "userns auto: %s", err);
	CHECK(parse("{\"type\": \"docker\", \"userns\": \"host\"}", &e2) == 0 && e2->userns_host && !e2->userns_auto &&
	      e != e2, "userns host: %s", err);
	/* "~/" is the mounting user's home */
	CHECK(parse("{\"type\": \"docker\", \"endpoint\": \"tcp://h:1\", \"ca\": \"~/ca\", \"cert\": \"~/c\", \"key\": \"~/k\"}",
		    &e) == 0 && e->ca[0] == '/' && has(e->ca, "/ca"), "home: %s", e ? nn(e->ca) : err);

	/* interning: the same settings give the same entry, others another */
	CHECK(parse("{\"type\": \"docker\", \"image\": \"a:1\"}", &e) == 0 && parse("{\"type\": \"docker\", \"image\": \"a:1\"}", &e2) == 0 &&
	      e == e2, "same settings, one entry");
	CHECK(parse("{\"type\": \"docker\", \"image\": \"a:2\"}", &e2) == 0 && e != e2, "other settings, another entry");

	REFUSED("{\"type\": \"docker\", \"endpoint\": \"http://x:1\"}", "\"endpoint\"", "unix:///PATH");
	REFUSED("{\"type\": \"docker\", \"endpoint\": \"unix://relative.sock\"}", "\"endpoint\"", "absolute");
	REFUSED("{\"type\": \"docker\", \"endpoint\": \"tcp://nohost\"}", "\"endpoint\"", "tcp://HOST:PORT");
	REFUSED("{\"type\": \"docker\", \"endpoint\": \"tcp://h:12x\"}", "\"endpoint\"", "tcp://HOST:PORT");
	REFUSED("{\"type\": \"docker\", \"endpoint\": \"unix:///s\", \"ca\": \"/ca\", \"cert\": \"/c\", \"key\": \"/k\"}",
		"tcp://", NULL);
	REFUSED("{\"type\": \"docker\", \"endpoint\": \"tcp://h:1\", \"cert\": \"/c\"}", "go together", NULL);
	REFUSED("{\"type\": \"docker\", \"image\": \"-bad\"}", "\"image\"", "image reference");
	REFUSED("{\"type\": \"docker\", \"image\": 5}", "\"image\"", "string");
	REFUSED("{\"type\": \"docker\", \"timeout\": 0}", "\"timeout\"", "seconds");
	REFUSED("{\"type\": \"docker\", \"timeout\": \"5\"}", "\"timeout\"", "seconds");
	REFUSED("{\"type\": \"docker\", \"local\": 1}", "\"local\"", "true or false");
	REFUSED("{\"type\": \"docker\", \"userns\": \"private\"}", "\"userns\"", "\"host\"");
	REFUSED("{\"type\": \"docker\", \"userns\": true}", "\"userns\"", "string");
	REFUSED("{\"type\": \"docker\", \"hots\": \"x\"}", "unknown field", "\"hots\"");
	REFUSED("[1]", "must be an object", NULL);

	docker_state_cleanup(&ctx, state);
	return check_done("docker_entry");
}
