/*
 * engine_driver.c - a command-line driver of core/lib/engine.c for
 * tests/integration/test_engine.py, which runs it against real engines
 * (dockerd, Podman's service) started by the tests' fixtures. Each command
 * prints one JSON object on stdout; the test asserts on it.
 *
 *   engine_driver [--ca F --cert F --key F] [--timeout S] ENDPOINT version
 *       {"ok", "api", "kind", "server", "seconds"} or {"ok": false, "errno", "error", "seconds"}
 *   engine_driver ... ENDPOINT roundtrip IMAGE HOSTPATH OUTDIR
 *       create, start, exec over a hijacked stream (1 MiB of stdin echoed
 *       back by cat, a line on stderr, exit 3 read by exec inspect), an
 *       archive PUT of HOSTPATH's tar as /tmp/up and its GET extracted into
 *       OUTDIR, the exec round trip time of `true`, then the container removed.
 *   engine_driver ... ENDPOINT call METHOD PATH [JSON]
 *       {"status", "reply", "error"}
 *   engine_driver ... ENDPOINT exec IMAGE SHELLCMD
 *       a container, SHELLCMD run over a hijacked stream (no stdin):
 *       {"exec", "stdout", "stderr", "exit", "seconds"}; a stream outlives
 *       the endpoint's timeout (only connecting and the reply are bounded)
 *   engine_driver ... ENDPOINT parallel THREADS CALLS
 *       THREADS threads each make CALLS GET /_ping on one struct engine:
 *       {"ok", "failed", "error", "seconds"}
 *   engine_driver tar HOSTPATH NAME OUTDIR
 *       engine_tar_from_path then engine_tar_extract into OUTDIR (no engine)
 *   engine_driver extract TARFILE OUTDIR
 *       engine_tar_extract of a tar file (no engine): {"ok", "errno", "error"}
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "core/lib/engine.h"
#include "core/lib/util.h"

#define STDIN_BYTES (1u << 20)

static void print_json(struct json_object *j)
{
	printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
	json_object_put(j);
}

static int print_fail(int r, const char *err, double t0)
{
	struct json_object *j = json_object_new_object();
	json_object_object_add(j, "ok", json_object_new_boolean(0));
	json_object_object_add(j, "errno", json_object_new_int(-r));
	json_object_object_add(j, "error", json_object_new_string(err));
	json_object_object_add(j, "seconds", json_object_new_double(mono_s() - t0));
	print_json(j);
	return 1;
}

/* ---- exec over a hijacked stream ---- */

struct out {
	struct sbuf o, e;
};

static void on_out(void *ud, int stream, const void *p, size_t n)
{
	struct out *x = ud;
	sbuf_append(stream == 2 ? &x->e : &x->o, p, n);
}

struct feeder {
	struct engine_stream *s;
	const char *data;
	size_t len;
	int r;
};

static void *feed(void *ud)
{
	struct feeder *f = ud;
	ssize_t w = f->len ? engine_stream_write(f->s, f->data, f->len) : 0;
	f->r = w < 0 ? (int)w : engine_stream_close_write(f->s);
	return NULL;
}

/* Runs argv in container id with stdin; output into *x; the exit code via
 * exec inspect. 0 or -errno. */
static int run_exec(struct engine *e, const char *id, const char *const *argv, const char *in, size_t inlen,
		    struct out *x, int *code, char *err, size_t errlen)
{
	struct json_object *body = json_object_new_object(), *cmd = json_object_new_array(), *rep = NULL, *v;
	for (int i = 0; argv[i]; i++)
		json_object_array_add(cmd, json_object_new_string(argv[i]));
	json_object_object_add(body, "Cmd", cmd);
	json_object_object_add(body, "AttachStdin", json_object_new_boolean(1));
	json_object_object_add(body, "AttachStdout", json_object_new_boolean(1));
	json_object_object_add(body, "AttachStderr", json_object_new_boolean(1));
	char path[300];
	snprintf(path, sizeof(path), "/containers/%s/exec", id);
	int st = engine_call(e, "POST", path, body, &rep, err, errlen);
	json_object_put(body);
	if (st != 201 || !json_object_object_get_ex(rep, "Id", &v)) {
		json_object_put(rep);
		return st < 0 ? st : -EIO;
	}
	char eid[128];
	snprintf(eid, sizeof(eid), "%s", json_object_get_string(v));
	json_object_put(rep);
	body = json_object_new_object();
	json_object_object_add(body, "Detach", json_object_new_boolean(0));
	json_object_object_add(body, "Tty", json_object_new_boolean(0));
	snprintf(path, sizeof(path), "/exec/%s/start", eid);
	struct engine_stream *s;
	int r = engine_hijack(e, path, body, &s, err, errlen);
	json_object_put(body);
	if (r < 0)
		return r;
	struct feeder f = { s, in, inlen, 0 };
	pthread_t th;
	pthread_create(&th, NULL, feed, &f);
	struct engine_demux d;
	engine_demux_init(&d, 0);
	char buf[65536];
	for (;;) {
		ssize_t n = engine_stream_read(s, buf, sizeof(buf));
		if (n == -EAGAIN) {
			struct pollfd p = { .fd = engine_stream_fd(s), .events = POLLIN };
			if (poll(&p, 1, 30000) == 0) {
				r = -ETIMEDOUT;
				break;
			}
			continue;
		}
		if (n <= 0) {
			r = (int)n;
			break;
		}
		r = engine_demux_feed(&d, buf, (size_t)n, on_out, x);
		if (r < 0)
			break;
	}
	pthread_join(th, NULL);
	engine_stream_free(s);
	if (r == 0 && !engine_demux_at_boundary(&d))
		r = -EPROTO;
	if (r < 0) {
		snprintf(err, errlen, "exec stream: %s (feeder %d)", strerror(-r), f.r);
		return r;
	}
	/* The exit code: inspect until the exec is no longer running. */
	snprintf(path, sizeof(path), "/exec/%s/json", eid);
	for (int i = 0; i < 200; i++) {
		st = engine_call(e, "GET", path, NULL, &rep, err, errlen);
		if (st != 200) {
			json_object_put(rep);
			return st < 0 ? st : -EIO;
		}
		struct json_object *run = NULL, *ec = NULL;
		json_object_object_get_ex(rep, "Running", &run);
		json_object_object_get_ex(rep, "ExitCode", &ec);
		if (!json_object_get_boolean(run) && ec && !json_object_is_type(ec, json_type_null)) {
			*code = json_object_get_int(ec);
			json_object_put(rep);
			return 0;
		}
		json_object_put(rep);
		usleep(10000);
	}
	snprintf(err, errlen, "exec %s still running after its stream ended", eid);
	return -ETIMEDOUT;
}

static int sink_buf(void *ud, const void *p, size_t n)
{
	return sbuf_append(ud, p, n) < 0 ? -ENOMEM : 0;
}

static int roundtrip(struct engine *e, const char *image, const char *hostpath, const char *outdir)
{
	char err[2048] = "", path[600], id[128] = "";
	struct json_object *res = json_object_new_object(), *rep = NULL, *v;
	double t0 = mono_s();
	json_object_object_add(res, "api", json_object_new_string(engine_api_version(e)));
	json_object_object_add(res, "kind", json_object_new_string(engine_server_kind(e)));

	struct json_object *body = json_object_new_object(), *cmd = json_object_new_array(), *hc = json_object_new_object(),
			   *labels = json_object_new_object();
	json_object_object_add(body, "Image", json_object_new_string(image));
	json_object_array_add(cmd, json_object_new_string("sleep"));
	json_object_array_add(cmd, json_object_new_string("infinity"));
	json_object_object_add(body, "Cmd", cmd);
	json_object_object_add(labels, "seerfs.test", json_object_new_string("engine_driver"));
	json_object_object_add(body, "Labels", labels);
	json_object_object_add(hc, "NetworkMode", json_object_new_string("none"));
	json_object_object_add(body, "HostConfig", hc);
	int st = engine_call(e, "POST", "/containers/create", body, &rep, err, sizeof(err));
	json_object_put(body);
	json_object_object_add(res, "create", json_object_new_int(st));
	if (st == 201 && json_object_object_get_ex(rep, "Id", &v))
		snprintf(id, sizeof(id), "%s", json_object_get_string(v));
	json_object_put(rep);
	rep = NULL;
	if (!id[0])
		goto out;
	snprintf(path, sizeof(path), "/containers/%s/start", id);
	st = engine_call(e, "POST", path, NULL, NULL, err, sizeof(err));
	json_object_object_add(res, "start", json_object_new_int(st));
	if (st != 204)
		goto remove;

	/* stdin both ways, stderr apart, the exit code */
	char *in = malloc(STDIN_BYTES);
	for (size_t i = 0; i < STDIN_BYTES; i++)
		in[i] = (char)('a' + (i * 7 + i / 1000) % 26);
	struct out x = { { 0 }, { 0 } };
	int code = -1;
	static const char *const argv[] = { "sh", "-c", "cat; echo to-stderr >&2; exit 3", NULL };
	double te = mono_s();
	int r = run_exec(e, id, argv, in, STDIN_BYTES, &x, &code, err, sizeof(err));
	json_object_object_add(res, "exec", json_object_new_int(r));
	json_object_object_add(res, "exec_seconds", json_object_new_double(mono_s() - te));
	json_object_object_add(res, "stdout_len", json_object_new_int64((int64_t)x.o.len));
	json_object_object_add(res, "stdout_same", json_object_new_boolean(x.o.len == STDIN_BYTES && !memcmp(x.o.data, in, STDIN_BYTES)));
	json_object_object_add(res, "stderr", json_object_new_string(x.e.data ? x.e.data : ""));
	json_object_object_add(res, "exit", json_object_new_int(code));
	sbuf_free(&x.o);
	sbuf_free(&x.e);
	free(in);
	if (r < 0)
		goto remove;

	/* the exec round trip of `true`, median of 15 */
	static const char *const tv[] = { "true", NULL };
	double rtt[15];
	for (int i = 0; i < 15; i++) {
		struct out y = { { 0 }, { 0 } };
		double t = mono_s();
		r = run_exec(e, id, tv, NULL, 0, &y, &code, err, sizeof(err));
		rtt[i] = mono_s() - t;
		sbuf_free(&y.o);
		sbuf_free(&y.e);
		if (r < 0)
			goto remove;
	}
	for (int i = 1; i < 15; i++)
		for (int j = i; j > 0 && rtt[j] < rtt[j - 1]; j--) {
			double t = rtt[j];
			rtt[j] = rtt[j - 1];
			rtt[j - 1] = t;
		}
	json_object_object_add(res, "exec_rtt_ms", json_object_new_double(rtt[7] * 1000));

	/* archive: PUT a tar of hostpath as /tmp/up, GET it back into outdir */
	void *tar = NULL;
	size_t tlen = 0;
	r = engine_tar_from_path(AT_FDCWD, hostpath, "up", &tar, &tlen, err, sizeof(err));
	json_object_object_add(res, "tar", json_object_new_int(r));
	if (r < 0)
		goto remove;
	snprintf(path, sizeof(path), "/containers/%s/archive?path=%%2Ftmp", id);
	st = engine_put_raw(e, "PUT", path, "application/x-tar", tar, tlen, NULL, err, sizeof(err));
	free(tar);
	json_object_object_add(res, "put", json_object_new_int(st));
	if (st != 200)
		goto remove;
	static const char *const ls[] = { "sh", "-c", "cd /tmp/up && find . | sort && stat -c '%u:%g %a %n' . sub 2>/dev/null", NULL };
	struct out y = { { 0 }, { 0 } };
	r = run_exec(e, id, ls, NULL, 0, &y, &code, err, sizeof(err));
	json_object_object_add(res, "inside", json_object_new_string(y.o.data ? y.o.data : ""));
	sbuf_free(&y.o);
	sbuf_free(&y.e);
	struct sbuf got = { 0 };
	snprintf(path, sizeof(path), "/containers/%s/archive?path=%%2Ftmp%%2Fup", id);
	st = engine_get_stream(e, path, sink_buf, &got, err, sizeof(err));
	json_object_object_add(res, "get", json_object_new_int(st));
	if (st == 200) {
		int dfd = open(outdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		r = dfd < 0 ? -errno : engine_tar_extract(dfd, got.data, got.len, err, sizeof(err));
		if (dfd >= 0)
			close(dfd);
		json_object_object_add(res, "extract", json_object_new_int(r));
	}
	sbuf_free(&got);
	/* a missing path is the engine's 404 with its message */
	snprintf(path, sizeof(path), "/containers/%s/archive?path=%%2Fno%%2Fsuch", id);
	char err2[1024] = "";
	st = engine_get_stream(e, path, sink_buf, &got, err2, sizeof(err2));
	sbuf_free(&got);
	json_object_object_add(res, "get_missing", json_object_new_int(st));
	json_object_object_add(res, "get_missing_error", json_object_new_string(err2));

remove:
	snprintf(path, sizeof(path), "/containers/%s?force=true", id);
	{
		char err3[1024];
		st = engine_call_t(e, "DELETE", path, NULL, 60, NULL, err3, sizeof(err3));
	}
	json_object_object_add(res, "remove", json_object_new_int(st));
out:
	json_object_object_add(res, "error", json_object_new_string(err));
	json_object_object_add(res, "seconds", json_object_new_double(mono_s() - t0));
	print_json(res);
	return 0;
}

static int exec_cmd(struct engine *e, const char *image, const char *shcmd)
{
	char err[2048] = "", path[300], id[128] = "";
	struct json_object *res = json_object_new_object(), *rep = NULL, *v;
	struct json_object *body = json_object_new_object(), *cmd = json_object_new_array(), *hc = json_object_new_object();
	json_object_object_add(body, "Image", json_object_new_string(image));
	json_object_array_add(cmd, json_object_new_string("sleep"));
	json_object_array_add(cmd, json_object_new_string("infinity"));
	json_object_object_add(body, "Cmd", cmd);
	json_object_object_add(hc, "NetworkMode", json_object_new_string("none"));
	json_object_object_add(body, "HostConfig", hc);
	int st = engine_call_t(e, "POST", "/containers/create", body, 60, &rep, err, sizeof(err));
	json_object_put(body);
	if (st == 201 && json_object_object_get_ex(rep, "Id", &v))
		snprintf(id, sizeof(id), "%s", json_object_get_string(v));
	json_object_put(rep);
	if (id[0]) {
		snprintf(path, sizeof(path), "/containers/%s/start", id);
		st = engine_call_t(e, "POST", path, NULL, 60, NULL, err, sizeof(err));
	}
	if (id[0] && st == 204) {
		const char *argv[] = { "sh", "-c", shcmd, NULL };
		struct out x = { { 0 }, { 0 } };
		int code = -1;
		double t = mono_s();
		int r = run_exec(e, id, argv, NULL, 0, &x, &code, err, sizeof(err));
		json_object_object_add(res, "exec", json_object_new_int(r));
		json_object_object_add(res, "seconds", json_object_new_double(mono_s() - t));
		json_object_object_add(res, "stdout", json_object_new_string(x.o.data ? x.o.data : ""));
		json_object_object_add(res, "stderr", json_object_new_string(x.e.data ? x.e.data : ""));
		json_object_object_add(res, "exit", json_object_new_int(code));
		sbuf_free(&x.o);
		sbuf_free(&x.e);
	}
	if (id[0]) {
		char err3[1024];
		snprintf(path, sizeof(path), "/containers/%s?force=true", id);
		json_object_object_add(res, "remove", json_object_new_int(engine_call_t(e, "DELETE", path, NULL, 60, NULL, err3, sizeof(err3))));
	}
	json_object_object_add(res, "error", json_object_new_string(err));
	print_json(res);
	return 0;
}

struct pinger {
	struct engine *e;
	int calls, ok, failed;
	char err[512];
};

static void *ping_thread(void *ud)
{
	struct pinger *p = ud;
	for (int i = 0; i < p->calls; i++) {
		char err[512] = "";
		int st = engine_call(p->e, "GET", "/_ping", NULL, NULL, err, sizeof(err));
		if (st == 200) {
			p->ok++;
		} else {
			p->failed++;
			snprintf(p->err, sizeof(p->err), "%d: %s", st, err);
		}
	}
	return NULL;
}

static int parallel_cmd(struct engine *e, int threads, int calls)
{
	if (threads < 1 || threads > 64)
		threads = 8;
	struct pinger p[64];
	pthread_t th[64];
	double t0 = mono_s();
	for (int i = 0; i < threads; i++) {
		p[i] = (struct pinger){ .e = e, .calls = calls };
		pthread_create(&th[i], NULL, ping_thread, &p[i]);
	}
	int ok = 0, failed = 0;
	const char *err = "";
	for (int i = 0; i < threads; i++) {
		pthread_join(th[i], NULL);
		ok += p[i].ok;
		failed += p[i].failed;
		if (p[i].err[0])
			err = p[i].err;
	}
	struct json_object *j = json_object_new_object();
	json_object_object_add(j, "ok", json_object_new_int(ok));
	json_object_object_add(j, "failed", json_object_new_int(failed));
	json_object_object_add(j, "error", json_object_new_string(err));
	json_object_object_add(j, "seconds", json_object_new_double(mono_s() - t0));
	print_json(j);
	return 0;
}

static int tar_cmd(const char *src, const char *name, const char *outdir)
{
	char err[1024] = "";
	void *tar = NULL;
	size_t len = 0;
	int r = engine_tar_from_path(AT_FDCWD, src, name, &tar, &len, err, sizeof(err));
	if (r == 0) {
		int dfd = open(outdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		r = dfd < 0 ? -errno : engine_tar_extract(dfd, tar, len, err, sizeof(err));
		if (dfd >= 0)
			close(dfd);
	}
	free(tar);
	struct json_object *j = json_object_new_object();
	json_object_object_add(j, "ok", json_object_new_boolean(r == 0));
	json_object_object_add(j, "errno", json_object_new_int(-r));
	json_object_object_add(j, "error", json_object_new_string(err));
	json_object_object_add(j, "bytes", json_object_new_int64((int64_t)len));
	print_json(j);
	return 0;
}

static int extract_cmd(const char *file, const char *outdir)
{
	char err[1024] = "", *data = NULL;
	size_t len = 0;
	int r = read_file(file, 1u << 30, &data, &len);
	if (r < 0)
		snprintf(err, sizeof(err), "cannot read %s", file);
	if (r == 0) {
		int dfd = open(outdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		r = dfd < 0 ? -errno : engine_tar_extract(dfd, data, len, err, sizeof(err));
		if (dfd >= 0)
			close(dfd);
	}
	free(data);
	struct json_object *j = json_object_new_object();
	json_object_object_add(j, "ok", json_object_new_boolean(r == 0));
	json_object_object_add(j, "errno", json_object_new_int(-r));
	json_object_object_add(j, "error", json_object_new_string(err));
	print_json(j);
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: engine_driver [--ca F --cert F --key F] [--timeout S] ENDPOINT version|roundtrip IMAGE HOSTPATH OUTDIR|call METHOD PATH [JSON]\n"
			"       engine_driver tar HOSTPATH NAME OUTDIR | extract TARFILE OUTDIR\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct engine_opts o = { 0 };
	int i = 1;
	if (argc >= 5 && !strcmp(argv[1], "tar"))
		return tar_cmd(argv[2], argv[3], argv[4]);
	if (argc >= 4 && !strcmp(argv[1], "extract"))
		return extract_cmd(argv[2], argv[3]);
	for (; i + 1 < argc && !strncmp(argv[i], "--", 2); i += 2) {
		if (!strcmp(argv[i], "--ca"))
			o.ca = argv[i + 1];
		else if (!strcmp(argv[i], "--cert"))
			o.cert = argv[i + 1];
		else if (!strcmp(argv[i], "--key"))
			o.key = argv[i + 1];
		else if (!strcmp(argv[i], "--timeout"))
			o.timeout_s = atoi(argv[i + 1]);
		else
			return usage();
	}
	if (i + 1 >= argc)
		return usage();
	o.endpoint = argv[i];
	const char *cmd = argv[i + 1];
	char err[2048] = "";
	double t0 = mono_s();
	struct engine *e;
	int r = engine_open(&o, &e, err, sizeof(err));
	if (r < 0)
		return print_fail(r, err, t0);
	if (!strcmp(cmd, "version")) {
		struct json_object *j = json_object_new_object();
		json_object_object_add(j, "ok", json_object_new_boolean(1));
		json_object_object_add(j, "api", json_object_new_string(engine_api_version(e)));
		json_object_object_add(j, "kind", json_object_new_string(engine_server_kind(e)));
		json_object_object_add(j, "server", json_object_new_string(engine_server_version(e)));
		json_object_object_add(j, "seconds", json_object_new_double(mono_s() - t0));
		print_json(j);
	} else if (!strcmp(cmd, "roundtrip") && i + 4 < argc) {
		roundtrip(e, argv[i + 2], argv[i + 3], argv[i + 4]);
	} else if (!strcmp(cmd, "parallel") && i + 3 < argc) {
		parallel_cmd(e, atoi(argv[i + 2]), atoi(argv[i + 3]));
	} else if (!strcmp(cmd, "exec") && i + 3 < argc) {
		exec_cmd(e, argv[i + 2], argv[i + 3]);
	} else if (!strcmp(cmd, "call") && i + 3 < argc) {
		struct json_object *body = i + 4 < argc ? json_tokener_parse(argv[i + 4]) : NULL, *rep = NULL;
		int st = engine_call(e, argv[i + 2], argv[i + 3], body, &rep, err, sizeof(err));
		struct json_object *j = json_object_new_object();
		json_object_object_add(j, "status", json_object_new_int(st));
		json_object_object_add(j, "reply", rep);
		json_object_object_add(j, "error", json_object_new_string(err));
		print_json(j);
		json_object_put(body);
	} else {
		engine_close(e);
		return usage();
	}
	engine_close(e);
	return 0;
}
