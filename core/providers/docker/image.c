/*
 * image.c - base images and cached package layers of the docker provider
 * (see image.h).
 *
 * A layer is built in a container of its own, not in the sandbox's: the
 * package managers need what the sandbox is not given (the capabilities to
 * chown and switch users, the network). It runs the image's shell with the
 * engine's default capabilities (not privileged), host networking, and for
 * pip the host directories pip's settings name, read-only; then it is
 * committed, tagged and removed.
 */
#include "core/providers/docker/image.h"
#include "core/providers/docker/api.h"
#include "core/providers/docker/entry.h"
#include "core/config.h"
#include "core/lib/sha256.h"
#include "core/lib/util.h"
#include "core/provider.h"
#include "core/sandbox.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUILD_TIMEOUT_MS (60 * 60 * 1000)

static void urlenc(struct sbuf *b, const char *s)
{
	for (; *s; s++) {
		if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || strchr("-._~", *s))
			sbuf_append(b, s, 1);
		else
			sbuf_printf(b, "%%%02X", (unsigned char)*s);
	}
}

static int inspect_id(struct docker_entry *e, const char *ref, char *id, size_t idlen, char *err, size_t n)
{
	struct sbuf p = {0};
	sbuf_printf(&p, "/images/");
	urlenc(&p, ref);
	sbuf_printf(&p, "/json");
	struct json_object *o = NULL;
	int r = dk_call(e, "GET", p.data, NULL, 0, NULL, &o, err, n);
	sbuf_free(&p);
	if (r == 0) {
		struct json_object *v = dk_get(o, "Id");
		if (v)
			snprintf(id, idlen, "%s", json_object_get_string(v));
		else
			r = -EPROTO;
	}
	json_object_put(o);
	return r;
}

int dk_image_id(struct sandbox *sb, struct docker_entry *e, const char *ref, char *id, size_t idlen, char *err,
		size_t n)
{
	int r = inspect_id(e, ref, id, idlen, err, n);
	if (r != -ENOENT)
		return r;
	sandbox_set_progress(sb, "image: pulling %s", ref);
	sandbox_log(sb, "provision: docker: image %s is not on %s; pulling it", ref, e->endpoint);
	struct sbuf p = {0};
	sbuf_printf(&p, "/images/create?fromImage=");
	urlenc(&p, ref);
	if (!strchr(ref, ':') && !strchr(ref, '@'))
		sbuf_printf(&p, "&tag=latest");
	char e2[512];
	r = dk_call(e, "POST", p.data, NULL, BUILD_TIMEOUT_MS, NULL, NULL, e2, sizeof(e2));
	sbuf_free(&p);
	if (r == 0)
		r = inspect_id(e, ref, id, idlen, e2, sizeof(e2));
	if (r < 0)
		snprintf(err, n, "sandbox %s: image \"%s\" is not on engine %s and cannot be pulled: %s; load it there (docker load / docker import) or set \"image\"",
			 sb->name, ref, e->endpoint, e2);
	return r;
}

static int remove_container(struct docker_entry *e, const char *id)
{
	char p[256], e2[256];
	snprintf(p, sizeof(p), "/containers/%s?force=1&v=1", id);
	return dk_call(e, "DELETE", p, NULL, 0, NULL, NULL, e2, sizeof(e2));
}

/* Runs script (sh -c) in a container of image from and commits the result
 * as seerfs-layer:tag. */
static int build_layer(struct sandbox *sb, struct docker_entry *e, const char *from, const char *tag,
		       const char *what, const char *script, const struct seer_start *in, char *const *env, char *err,
		       size_t n)
{
	struct json_object *req = json_object_new_object(), *hc = json_object_new_object();
	json_object_object_add(req, "Image", json_object_new_string(from));
	struct json_object *ep = json_object_new_array(), *cmd = json_object_new_array();
	json_object_array_add(ep, json_object_new_string("/bin/sh"));
	json_object_array_add(ep, json_object_new_string("-c"));
	json_object_array_add(cmd, json_object_new_string(script));
	json_object_object_add(req, "Entrypoint", ep);
	json_object_object_add(req, "Cmd", cmd);
	struct json_object *envs = json_object_new_array();
	json_object_array_add(envs, json_object_new_string("DEBIAN_FRONTEND=noninteractive"));
	json_object_array_add(envs, json_object_new_string("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
	for (size_t i = 0; env && env[i]; i++)
		json_object_array_add(envs, json_object_new_string(env[i]));
	json_object_object_add(req, "Env", envs);
	struct json_object *labels = json_object_new_object();
	json_object_object_add(labels, "seerfs.state", json_object_new_string(sb->ctx->state_dir));
	json_object_object_add(labels, "seerfs.build", json_object_new_string(tag));
	json_object_object_add(req, "Labels", labels);
	/* Builds reach the package mirrors through the host's network, or,
	 * in a user namespace (where the engines refuse the host's network
	 * namespace), through the engine's default network, as the sandbox's
	 * own "network": true does. */
	int own_ns = dk_userns_mode(e, hc, 1);
	json_object_object_add(hc, "NetworkMode", json_object_new_string(own_ns ? "default" : "host"));
	json_object_object_add(hc, "SecurityOpt", json_object_new_array());
	json_object_array_add(dk_get(hc, "SecurityOpt"), json_object_new_string("no-new-privileges"));
	if (in && in->n_binds && e->local) {
		struct json_object *binds = json_object_new_array();
		for (size_t i = 0; i < in->n_binds; i++) {
			struct sbuf b = {0};
			sbuf_printf(&b, "%s:%s:ro", in->binds[i].host, in->binds[i].inside);
			json_object_array_add(binds, json_object_new_string(b.data));
			sbuf_free(&b);
		}
		json_object_object_add(hc, "Binds", binds);
	}
	json_object_object_add(req, "HostConfig", hc);
	struct json_object *res = NULL;
	int r = dk_call(e, "POST", "/containers/create", json_object_to_json_string(req), 0, NULL, &res, err, n);
	json_object_put(req);
	char id[128] = "";
	if (r == 0 && dk_get(res, "Id"))
		snprintf(id, sizeof(id), "%s", json_object_get_string(dk_get(res, "Id")));
	json_object_put(res);
	if (r < 0 || !id[0])
		return r < 0 ? r : -EPROTO;
	char p[512];
	snprintf(p, sizeof(p), "/containers/%s/start", id);
	r = dk_call(e, "POST", p, NULL, 0, NULL, NULL, err, n);
	long code = -1;
	if (r == 0) {
		snprintf(p, sizeof(p), "/containers/%s/wait", id);
		r = dk_call(e, "POST", p, NULL, BUILD_TIMEOUT_MS, NULL, &res, err, n);
		if (r == 0 && dk_get(res, "StatusCode"))
			code = json_object_get_int64(dk_get(res, "StatusCode"));
		json_object_put(res);
		res = NULL;
	}
	if (r == 0 && code != 0) {
		snprintf(p, sizeof(p), "/containers/%s/logs?stdout=1&stderr=1&tail=15", id);
		char *raw = NULL;
		size_t rl = 0;
		long st;
		char e2[256];
		struct sbuf txt = {0};
		if (dk_call_raw(e, "GET", p, NULL, 0, &st, &raw, &rl, e2, sizeof(e2)) == 0)
			dk_demux(raw, rl, &txt);
		free(raw);
		snprintf(err, n, "sandbox %s: %s failed (exit %ld) in a build container of engine %s: %s", sb->name, what,
			 code, e->endpoint, txt.data ? txt.data : "(no output)");
		sbuf_free(&txt);
		r = -EIO;
	}
	if (r == 0) {
		snprintf(p, sizeof(p), "/commit?container=%s&repo=seerfs-layer&tag=%s", id, tag);
		r = dk_call(e, "POST", p, "{}", BUILD_TIMEOUT_MS, NULL, NULL, err, n);
	}
	remove_container(e, id);
	return r;
}

static void layer_tag(const char *from, const char *kind, const struct sbuf *list, char *tag, size_t n)
{
	struct sha256_ctx c;
	uint8_t d[SHA256_DIGEST_LEN];
	sha256_init(&c);
	sha256_update(&c, from, strlen(from));
	sha256_update(&c, "\n", 1);
	sha256_update(&c, kind, strlen(kind));
	sha256_update(&c, "\n", 1);
	if (list->len)
		sha256_update(&c, list->data, list->len);
	sha256_final(&c, d);
	char hex[2 * SHA256_DIGEST_LEN + 1];
	sha_hex(d, SHA256_DIGEST_LEN, hex);
	snprintf(tag, n, "%.24s", hex);
}

/* One layer: the cached image when there is one, else built. from and
 * out are image ids. */
static int one_layer(struct sandbox *sb, struct docker_entry *e, const char *from, const char *kind,
		     const struct sbuf *list, const char *what, const char *script, const struct seer_start *in,
		     char *const *env, char *out, size_t outlen, char *err, size_t n)
{
	char tag[32], ref[64];
	layer_tag(from, kind, list, tag, sizeof(tag));
	snprintf(ref, sizeof(ref), "seerfs-layer:%s", tag);
	char e2[512];
	int r = inspect_id(e, ref, out, outlen, e2, sizeof(e2));
	if (r == 0) {
		sandbox_log(sb, "provision: docker: %s: image layer %s cached, nothing installed", kind, ref);
		return 0;
	}
	if (r != -ENOENT) {
		snprintf(err, n, "sandbox %s: %s", sb->name, e2);
		return r;
	}
	double t0 = mono_s();
	sandbox_set_progress(sb, "%s: %s (image layer %s)", kind, what, ref);
	sandbox_log(sb, "provision: docker: %s: installing into image layer %s: %s", kind, ref, what);
	r = build_layer(sb, e, from, tag, what, script, in, env, err, n);
	if (r == 0)
		r = inspect_id(e, ref, out, outlen, err, n);
	if (r == 0)
		sandbox_log(sb, "provision: docker: %s: image layer %s built in %.1f s", kind, ref, mono_s() - t0);
	return r;
}

static int deb_name_ok(const char *p)
{
	int ok = p[0] && p[0] != '-' && strlen(p) < 128;
	for (const char *c = p; ok && *c; c++)
		ok = (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || strchr("+.-:=~", *c);
	return ok;
}

int dk_image_layers(struct sandbox *sb, struct docker_entry *e, const struct seer_config *cfg,
		    const struct seer_start *in, const char *base, char *out, size_t outlen, char *err, size_t n)
{
	char cur[160];
	snprintf(cur, sizeof(cur), "%s", base);
	int r = 0;
	if (cfg->n_system_packages) {
		struct sbuf list = {0}, script = {0}, what = {0};
		for (size_t i = 0; i < cfg->n_system_packages && r == 0; i++) {
			const char *p = cfg->system_packages[i];
			if (!deb_name_ok(p)) {
				snprintf(err, n, "sandbox %s: system_packages: \"%s\" is not a package name", sb->name, p);
				r = -EINVAL;
			}
			sbuf_printf(&list, "%s\n", p);
		}
		sbuf_printf(&what, "apt-get install of %zu package(s)", cfg->n_system_packages);
		sbuf_printf(&script, "set -e; apt-get update -q; apt-get install -y -q --no-install-recommends");
		for (size_t i = 0; i < cfg->n_system_packages; i++) {
			sbuf_append(&script, " ", 1);
			sbuf_shell_quote(&script, cfg->system_packages[i]);
		}
		sbuf_printf(&script, "; apt-get clean; rm -rf /var/lib/apt/lists/*");
		if (r == 0)
			r = one_layer(sb, e, cur, "system_packages", &list, what.data, script.data, in, NULL, cur, sizeof(cur),
				      err, n);
		sbuf_free(&list);
		sbuf_free(&script);
		sbuf_free(&what);
	}
	if (r == 0 && (cfg->python_version || cfg->n_python_packages)) {
		struct sbuf list = {0}, script = {0}, what = {0};
		char py[64] = "python3";
		if (cfg->python_version) {
			const char *v = cfg->python_version;
			if (!python_version_valid(v)) {
				snprintf(err, n, "sandbox %s: python_version \"%s\" is not a version (3.11)", sb->name, v);
				return -EINVAL;
			}
			snprintf(py, sizeof(py), "python%s", v);
		}
		sbuf_printf(&list, "%s\n", py);
		for (size_t i = 0; i < cfg->n_python_packages; i++)
			sbuf_printf(&list, "%s\n", cfg->python_packages[i]);
		/* pip's settings from seerfs's environment reach the build only. */
		char *env[PIP_ENV_MAX + 1];
		size_t ne = pip_env(env);
		/* a different index can give different packages */
		for (size_t i = 0; i < ne; i++)
			sbuf_printf(&list, "%s\n", env[i]);
		sbuf_printf(&what, "venv /opt/venv (%s) and pip install of %zu package(s)", py, cfg->n_python_packages);
		sbuf_printf(&script, "set -e; command -v %s >/dev/null || { echo \"%s is not in the image\" >&2; exit 3; }; "
			    "%s -m venv /opt/venv", py, py, py);
		if (cfg->n_python_packages) {
			sbuf_printf(&script, "; /opt/venv/bin/pip install --disable-pip-version-check --no-input");
			for (size_t i = 0; i < cfg->n_python_packages; i++) {
				sbuf_append(&script, " ", 1);
				sbuf_shell_quote(&script, cfg->python_packages[i]);
			}
		}
		r = one_layer(sb, e, cur, "python", &list, what.data, script.data, in, env, cur, sizeof(cur), err, n);
		for (size_t i = 0; i < ne; i++)
			free(env[i]);
		sbuf_free(&list);
		sbuf_free(&script);
		sbuf_free(&what);
	}
	if (r == 0)
		snprintf(out, outlen, "%s", cur);
	return r;
}
