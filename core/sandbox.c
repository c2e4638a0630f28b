/*
 * sandbox.c - the sandbox object: references and lookup, its log, error,
 * progress and provisioning times, the texts every part may show, and the
 * environment of its processes. What a sandbox goes through (its state
 * machine, provisioning and termination, the timer) is core/lifecycle.c's.
 *
 * Locking: ctx->lock guards the sandbox list and reference counts; sb->lock
 * guards a sandbox's fields. Never take ctx->lock while holding sb->lock.
 */
#include "core/sandbox.h"
#include "core/provider.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *const state_names[] = {
	[SB_NEW] = "new", [SB_PROVISIONING] = "provisioning", [SB_RUNNING] = "running",
	[SB_FAILED] = "failed", [SB_TERMINATING] = "terminating", [SB_TERMINATED] = "terminated",
};

const char *sb_state_name(enum sb_state s)
{
	return state_names[s];
}

/* ---- references and lookup ---------------------------------------------- */

void sandbox_ref(struct sandbox *sb)
{
	pthread_mutex_lock(&sb->ctx->lock);
	sb->refs++;
	pthread_mutex_unlock(&sb->ctx->lock);
}

static void sandbox_free(struct sandbox *sb)
{
	if (sb->prov && sb->prov->release)
		sb->prov->release(sb);
	/* What the lifecycle attached (jobs, sessions, functions), freed by
	 * it: they sit above the sandbox object. */
	if (sb->ctx->sb_parts_free)
		sb->ctx->sb_parts_free(sb);
	seer_config_free(&sb->cfg);
	free(sb->config_text);
	free(sb->effective_text);
	free(sb->steps);
	free(sb->reason);
	free(sb->progress);
	free(sb->error);
	free(sb->terminate_snapshot);
	free(sb->dir);
	pthread_mutex_destroy(&sb->lock);
	pthread_cond_destroy(&sb->cond);
	free(sb);
}

void sandbox_put(struct sandbox *sb)
{
	if (!sb)
		return;
	pthread_mutex_lock(&sb->ctx->lock);
	int last = --sb->refs == 0;
	pthread_mutex_unlock(&sb->ctx->lock);
	if (last)
		sandbox_free(sb);
}

struct sandbox *sandbox_get(struct seer_ctx *ctx, const char *name)
{
	pthread_mutex_lock(&ctx->lock);
	struct sandbox *sb;
	for (sb = ctx->sandboxes; sb; sb = sb->next)
		if (!strcmp(sb->name, name))
			break;
	if (sb)
		sb->refs++;
	pthread_mutex_unlock(&ctx->lock);
	return sb;
}

struct sandbox *sandbox_get_serial(struct seer_ctx *ctx, uint32_t serial)
{
	pthread_mutex_lock(&ctx->lock);
	struct sandbox *sb;
	for (sb = ctx->sandboxes; sb; sb = sb->next)
		if (sb->serial == serial)
			break;
	if (sb)
		sb->refs++;
	pthread_mutex_unlock(&ctx->lock);
	return sb;
}

int sandbox_network(struct sandbox *sb)
{
	pthread_mutex_lock(&sb->lock);
	int network = sb->cfg.network;
	pthread_mutex_unlock(&sb->lock);
	return network;
}

void sandbox_changed(struct sandbox *sb)
{
	pthread_mutex_lock(&sb->lock);
	sb->gen++;
	pthread_cond_broadcast(&sb->cond);
	pthread_mutex_unlock(&sb->lock);
	if (sb->ctx->hooks.changed)
		sb->ctx->hooks.changed(sb->ctx->hooks.arg, sb);
}

/* ---- log, error, progress ------------------------------------------------ */

void sandbox_log_path(struct sandbox *sb, char *buf, size_t len)
{
	snprintf(buf, len, "%s/log", sb->dir);
}

static void log_line(struct sandbox *sb, const char *msg)
{
	char path[4096], ts[40];
	sandbox_log_path(sb, path, sizeof(path));
	fmt_time_iso(now_ns(), ts, sizeof(ts));
	struct sbuf b = {0};
	sbuf_printf(&b, "%s %s\n", ts, msg);
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0) {
		/* One write() per line so concurrent writers never interleave. */
		if (write(fd, b.data, b.len) < 0) {
			/* The log is best effort; the state file is what counts. */
		}
		close(fd);
	}
	sbuf_free(&b);
}

void sandbox_log(struct sandbox *sb, const char *fmt, ...)
{
	struct sbuf b = {0};
	va_list ap;
	va_start(ap, fmt);
	sbuf_vprintf(&b, fmt, ap);
	va_end(ap);
	if (b.data) {
		for (char *p = b.data; *p; p++)
			if (*p == '\n')
				*p = ' ';
		log_line(sb, b.data);
	}
	sbuf_free(&b);
	sandbox_changed(sb);
}

static void persist_error(struct sandbox *sb, const char *text)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/error", sb->dir);
	write_file_atomic(path, text, strlen(text), 0600);
}

void sandbox_set_error(struct sandbox *sb, const char *fmt, ...)
{
	struct sbuf b = {0};
	va_list ap;
	va_start(ap, fmt);
	sbuf_vprintf(&b, fmt, ap);
	va_end(ap);
	if (!b.data)
		return;
	pthread_mutex_lock(&sb->lock);
	free(sb->error);
	sb->error = xstrdup(b.data);
	pthread_mutex_unlock(&sb->lock);
	persist_error(sb, b.data);
	sandbox_log(sb, "error: %s", b.data);
	sbuf_free(&b);
}

void sandbox_clear_error(struct sandbox *sb)
{
	pthread_mutex_lock(&sb->lock);
	int had = sb->error != NULL;
	free(sb->error);
	sb->error = NULL;
	pthread_mutex_unlock(&sb->lock);
	if (had)
		persist_error(sb, "");
}

void sandbox_set_progress(struct sandbox *sb, const char *fmt, ...)
{
	char *p = NULL;
	if (fmt) {
		struct sbuf b = {0};
		va_list ap;
		va_start(ap, fmt);
		sbuf_vprintf(&b, fmt, ap);
		va_end(ap);
		p = b.data;
	}
	pthread_mutex_lock(&sb->lock);
	free(sb->progress);
	sb->progress = p;
	pthread_mutex_unlock(&sb->lock);
	sandbox_changed(sb);
}

/* ---- provisioning times ---------------------------------------------------- */

void sandbox_step_time(struct sandbox *sb, const char *step, double seconds)
{
	pthread_mutex_lock(&sb->lock);
	struct sb_step *v = realloc(sb->steps, (sb->n_steps + 1) * sizeof(*v));
	if (v) {
		sb->steps = v;
		snprintf(v[sb->n_steps].name, sizeof(v[0].name), "%s", step);
		v[sb->n_steps++].s = seconds;
	}
	pthread_mutex_unlock(&sb->lock);
}

/* ---- provisioning and termination ---------------------------------------- */

int sandbox_settling(struct sandbox *sb)
{
	pthread_mutex_lock(&sb->lock);
	/* busy_op covers a running sandbox being started again after a remount:
	 * it cannot run anything until that ends. */
	int r = sb->state == SB_PROVISIONING || sb->state == SB_TERMINATING || sb->busy_op;
	pthread_mutex_unlock(&sb->lock);
	return r;
}

/* ---- texts ------------------------------------------------------------------ */

char *sandbox_error_text(struct sandbox *sb)
{
	struct sbuf b = {0};
	pthread_mutex_lock(&sb->lock);
	if (sb->error)
		sbuf_printf(&b, "%s\n", sb->error);
	else
		sbuf_append(&b, "", 0);
	pthread_mutex_unlock(&sb->lock);
	return b.data;
}

char *sandbox_config_text(struct sandbox *sb)
{
	pthread_mutex_lock(&sb->lock);
	char *s = xstrdup(sb->config_text ? sb->config_text : "");
	pthread_mutex_unlock(&sb->lock);
	return s;
}

/* ---- environment ------------------------------------------------------------- */

void strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

static void env_set(char ***v, size_t *n, const char *key, const char *val)
{
	size_t kl = strlen(key);
	struct sbuf b = {0};
	sbuf_printf(&b, "%s=%s", key, val);
	for (size_t i = 0; i < *n; i++) {
		if (!strncmp((*v)[i], key, kl) && (*v)[i][kl] == '=') {
			free((*v)[i]);
			(*v)[i] = b.data;
			return;
		}
	}
	char **nv = realloc(*v, (*n + 2) * sizeof(char *));
	if (!nv)
		abort();
	*v = nv;
	nv[(*n)++] = b.data;
	nv[*n] = NULL;
}

struct json_object *sandbox_provisioned(struct sandbox *sb)
{
	char p[4096], *text = NULL;
	snprintf(p, sizeof(p), "%s/provisioned.json", sb->dir);
	struct json_object *o = NULL;
	if (read_file(p, 4 << 20, &text, NULL) == 0)
		o = json_tokener_parse(text);
	free(text);
	if (!o || !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		o = json_object_new_object();
	}
	struct json_object *v;
	if (!json_object_object_get_ex(o, "steps", &v))
		json_object_object_add(o, "steps", json_object_new_object());
	return o;
}

/* Whether /opt/venv was built by provisioning (PATH then starts with it). */
static int venv_ready(struct sandbox *sb)
{
	struct json_object *st = sandbox_provisioned(sb), *steps, *py;
	int r = json_object_object_get_ex(st, "steps", &steps) && json_object_object_get_ex(steps, "python", &py);
	json_object_put(st);
	return r;
}

char **sandbox_environ(struct sandbox *sb)
{
	char **v = xcalloc(1, sizeof(char *));
	size_t n = 0;
	env_set(&v, &n, "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
	if (venv_ready(sb)) {
		env_set(&v, &n, "PATH", "/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
		env_set(&v, &n, "VIRTUAL_ENV", "/opt/venv");
	}
	env_set(&v, &n, "HOME", "/root");
	env_set(&v, &n, "USER", "root");
	env_set(&v, &n, "LOGNAME", "root");
	env_set(&v, &n, "SHELL", "/bin/sh");
	env_set(&v, &n, "LANG", "C.UTF-8");
	env_set(&v, &n, "TERM", "xterm-256color");
	env_set(&v, &n, "HOSTNAME", sb->name);
	env_set(&v, &n, "SEER_SANDBOX", sb->name);
	pthread_mutex_lock(&sb->lock);
	for (size_t i = 0; i < sb->cfg.n_env; i++)
		env_set(&v, &n, sb->cfg.env[i].key, sb->cfg.env[i].value);
	/* Secrets are read from seerfs's own environment at every start, never
	 * stored: a restart reads them again. */
	for (size_t i = 0; i < sb->cfg.n_secrets; i++) {
		const char *val = getenv(sb->cfg.secrets[i]);
		if (val)
			env_set(&v, &n, sb->cfg.secrets[i], val);
	}
	pthread_mutex_unlock(&sb->lock);
	return v;
}
