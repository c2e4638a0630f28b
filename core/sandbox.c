/*
 * sandbox.c - the sandbox state machine, its state directory, provisioning
 * and termination threads, the timeout timer, log, error and status texts.
 *
 * Locking: ctx->lock guards the sandbox list and reference counts; sb->lock
 * guards a sandbox's fields. Never take ctx->lock while holding sb->lock.
 * Slow work (starting bubblewrap, downloads, stopping processes) runs in a
 * thread of its own with no lock held, so no FUSE request waits on it.
 */
#include "core/sandbox.h"
#include "core/lib/walk.h"
#include "core/ctlcmd.h"
#include "core/provider.h"
#include "core/jobs.h"
#include "core/sessions/sessions.h"
#include "core/sessions/functions.h"
#include "core/snapshot.h"
#include "core/provision.h"

#include <dirent.h>
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

static int state_from_name(const char *s)
{
	for (size_t i = 0; i < ARRAY_SIZE(state_names); i++)
		if (!strcmp(s, state_names[i]))
			return (int)i;
	return -1;
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
	jobs_free(sb);
	sessions_free(sb);
	functions_free(sb);
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

static void clear_error(struct sandbox *sb)
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

/* Seconds to the millisecond, as JSON ("0.2", not 0.20000000000000001). */
static struct json_object *json_secs(double s)
{
	char t[32];
	snprintf(t, sizeof(t), "%.3f", s);
	return json_object_new_double_s((double)(int64_t)(s * 1000 + 0.5) / 1000, t);
}

/* {"step": seconds, ...} in the order the steps ran; sb->lock held. */
static struct json_object *steps_json_locked(struct sandbox *sb)
{
	struct json_object *o = json_object_new_object();
	for (size_t i = 0; i < sb->n_steps; i++)
		json_object_object_add(o, sb->steps[i].name, json_secs(sb->steps[i].s));
	return o;
}

static void steps_from_json_locked(struct sandbox *sb, struct json_object *o)
{
	if (!o || !json_object_is_type(o, json_type_object))
		return;
	json_object_object_foreach(o, k, v) {
		struct sb_step *nv = realloc(sb->steps, (sb->n_steps + 1) * sizeof(*nv));
		if (!nv)
			return;
		sb->steps = nv;
		snprintf(nv[sb->n_steps].name, sizeof(nv[0].name), "%s", k);
		nv[sb->n_steps++].s = json_object_get_double(v);
	}
}

/* ---- persistence ---------------------------------------------------------- */

/* Writes state.json; called with sb->lock held. */
static void persist_state_locked(struct sandbox *sb)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string(sb->id));
	json_object_object_add(o, "created_ns", json_object_new_int64((int64_t)sb->created_ns));
	json_object_object_add(o, "state", json_object_new_string(sb_state_name(sb->state)));
	json_object_object_add(o, "since_ns", json_object_new_int64((int64_t)sb->since_ns));
	if (sb->reason)
		json_object_object_add(o, "reason", json_object_new_string(sb->reason));
	if (sb->deadline_ns)
		json_object_object_add(o, "deadline_ns", json_object_new_int64((int64_t)sb->deadline_ns));
	if (sb->prov_s > 0) {
		json_object_object_add(o, "provision_s", json_secs(sb->prov_s));
		json_object_object_add(o, "provision_steps", steps_json_locked(sb));
	}
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
	char path[4096];
	snprintf(path, sizeof(path), "%s/state.json", sb->dir);
	write_file_atomic(path, s, strlen(s), 0600);
	json_object_put(o);
}

/* Moves to a new state (sb->lock held), persisting it before anyone sees it. */
static void set_state_locked(struct sandbox *sb, enum sb_state st, const char *reason)
{
	sb->state = st;
	sb->since_ns = now_ns();
	free(sb->reason);
	sb->reason = reason ? xstrdup(reason) : NULL;
	if (st != SB_PROVISIONING) {
		free(sb->progress);
		sb->progress = NULL;
	}
	persist_state_locked(sb);
	sb->gen++;
	pthread_cond_broadcast(&sb->cond);
}

static void set_state(struct sandbox *sb, enum sb_state st, const char *reason)
{
	pthread_mutex_lock(&sb->lock);
	set_state_locked(sb, st, reason);
	pthread_mutex_unlock(&sb->lock);
	sandbox_log(sb, "state: %s%s%s", sb_state_name(st), reason ? ": " : "", reason ? reason : "");
	if (sb->ctx->hooks.changed)
		sb->ctx->hooks.changed(sb->ctx->hooks.arg, sb);
	pthread_cond_broadcast(&sb->ctx->timer_cond);
}

static struct sandbox *sandbox_new(struct seer_ctx *ctx, const char *name)
{
	struct sandbox *sb = xcalloc(1, sizeof(*sb));
	sb->ctx = ctx;
	/* Callers checked name_valid (at most 64 bytes), so nothing is cut; the
	 * precision tells -O3's -Wformat-truncation so, which cannot see it. */
	snprintf(sb->name, sizeof(sb->name), "%.*s", (int)sizeof(sb->name) - 1, name);
	struct sbuf b = {0};
	sbuf_printf(&b, "%s/sandboxes/%s", ctx->state_dir, name);
	sb->dir = b.data;
	pthread_mutex_init(&sb->lock, NULL);
	pthread_cond_init(&sb->cond, NULL);
	seer_config_init(&sb->cfg);
	sb->refs = 1;
	return sb;
}

static void link_sandbox(struct seer_ctx *ctx, struct sandbox *sb)
{
	/* called with ctx->lock held */
	sb->serial = ++ctx->next_serial;
	sb->next = ctx->sandboxes;
	ctx->sandboxes = sb;
}

static void make_id(char *buf, size_t len)
{
	unsigned char r[16];
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || read(fd, r, sizeof(r)) != (ssize_t)sizeof(r)) {
		uint64_t t = now_ns();
		memcpy(r, &t, 8);
		memcpy(r + 8, &t, 8);
	}
	if (fd >= 0)
		close(fd);
	snprintf(buf, len, "sb-%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]);
}

int sandbox_create(struct seer_ctx *ctx, const char *name, struct sandbox **out)
{
	if (!name_valid(name))
		return -EINVAL;
	pthread_mutex_lock(&ctx->lock);
	for (struct sandbox *s = ctx->sandboxes; s; s = s->next) {
		if (!strcmp(s->name, name)) {
			pthread_mutex_unlock(&ctx->lock);
			return -EEXIST;
		}
	}
	struct sandbox *sb = sandbox_new(ctx, name);
	if (mkdir(sb->dir, 0700) < 0) {
		int e = -errno;
		pthread_mutex_unlock(&ctx->lock);
		sandbox_free(sb);
		return e;
	}
	make_id(sb->id, sizeof(sb->id));
	sessions_load(sb);
	functions_load(sb);
	sb->created_ns = sb->since_ns = now_ns();
	sb->state = SB_NEW;
	persist_state_locked(sb);
	link_sandbox(ctx, sb);
	sb->refs++;
	pthread_mutex_unlock(&ctx->lock);
	sandbox_log(sb, "created sandbox %s (id %s); write config.json to provision it", name, sb->id);
	*out = sb;
	return 0;
}

int sandbox_remove(struct sandbox *sb)
{
	pthread_mutex_lock(&sb->lock);
	enum sb_state st = sb->state;
	if (st == SB_PROVISIONING || st == SB_RUNNING || st == SB_TERMINATING || sb->busy_op) {
		pthread_mutex_unlock(&sb->lock);
		sandbox_set_error(sb, "sandbox %s is %s: terminate it first (echo terminate > %s/ctl), then rmdir",
				  sb->name, sb_state_name(st), sb->name);
		return -EBUSY;
	}
	pthread_mutex_unlock(&sb->lock);
	struct seer_ctx *ctx = sb->ctx;
	pthread_mutex_lock(&ctx->lock);
	if (sb->removed) {
		pthread_mutex_unlock(&ctx->lock);
		return -ENOENT;
	}
	sb->removed = 1;
	for (struct sandbox **pp = &ctx->sandboxes; *pp; pp = &(*pp)->next) {
		if (*pp == sb) {
			*pp = sb->next;
			break;
		}
	}
	pthread_mutex_unlock(&ctx->lock);
	if (sb->prov) {
		sb->prov->stop(sb);
		sb->prov->destroy(sb);
	}
	jobs_close_all(sb);
	walk_rm(sb->dir);
	sandbox_put(sb);   /* the list's reference */
	return 0;
}

/*
 * Parses a config text into *cfg. A config naming a snapshot is a fork: it
 * is merged over the config its snapshot was taken with
 * (seer_config_fork), the merged text goes to *eff and *cfg is parsed from
 * it. When the snapshot is missing there is nothing to merge: provisioning
 * then fails naming it.
 */
static int parse_effective(struct seer_ctx *ctx, const char *text, size_t len, struct seer_config *cfg, char **eff,
			   char *err, size_t n)
{
	*eff = NULL;
	int r = seer_config_parse(text, len, cfg, err, n);
	if (r < 0 || !cfg->snapshot)
		return r;
	char *base = snapshot_config(ctx, cfg->snapshot);
	if (!base)
		return 0;
	char *merged = NULL;
	r = seer_config_fork(base, text, len, &merged, err, n);
	free(base);
	if (r < 0)
		return r;
	struct seer_config m;
	char e2[512];
	r = seer_config_parse(merged, strlen(merged), &m, e2, sizeof(e2));
	if (r < 0) {
		/* The snapshot's config is from an older seerfs that took fields
		 * this one does not: say so rather than start half of it. */
		snprintf(err, n, "snapshot %s's config (which a sandbox started from it inherits) does not parse here: %s; take the snapshot again from a sandbox this seerfs runs, or write the config without \"snapshot\"",
			 cfg->snapshot, e2);
		free(merged);
		seer_config_free(cfg);
		return -EINVAL;
	}
	seer_config_free(cfg);
	*cfg = m;
	*eff = merged;
	return 0;
}

static void load_one(struct seer_ctx *ctx, const char *name)
{
	struct sandbox *sb = sandbox_new(ctx, name);
	char path[4096], *text = NULL;
	snprintf(path, sizeof(path), "%s/state.json", sb->dir);
	struct json_object *o = NULL, *v;
	if (read_file(path, 1 << 20, &text, NULL) == 0)
		o = json_tokener_parse(text);
	free(text);
	sb->state = SB_NEW;
	sb->created_ns = sb->since_ns = now_ns();
	if (o) {
		if (json_object_object_get_ex(o, "id", &v))
			snprintf(sb->id, sizeof(sb->id), "%s", json_object_get_string(v));
		if (json_object_object_get_ex(o, "created_ns", &v))
			sb->created_ns = (uint64_t)json_object_get_int64(v);
		if (json_object_object_get_ex(o, "since_ns", &v))
			sb->since_ns = (uint64_t)json_object_get_int64(v);
		if (json_object_object_get_ex(o, "deadline_ns", &v))
			sb->deadline_ns = (uint64_t)json_object_get_int64(v);
		if (json_object_object_get_ex(o, "reason", &v))
			sb->reason = xstrdup(json_object_get_string(v));
		if (json_object_object_get_ex(o, "provision_s", &v))
			sb->prov_s = json_object_get_double(v);
		if (json_object_object_get_ex(o, "provision_steps", &v))
			steps_from_json_locked(sb, v);
		if (json_object_object_get_ex(o, "state", &v)) {
			int st = state_from_name(json_object_get_string(v));
			if (st >= 0)
				sb->state = (enum sb_state)st;
		}
		json_object_put(o);
	}
	if (!sb->id[0])
		make_id(sb->id, sizeof(sb->id));
	snprintf(path, sizeof(path), "%s/config.json", sb->dir);
	size_t len;
	if (read_file(path, SEER_CONFIG_MAX, &text, &len) == 0) {
		char err[512];
		struct seer_config cfg;
		char *eff = NULL;
		if (parse_effective(ctx, text, len, &cfg, &eff, err, sizeof(err)) == 0) {
			seer_config_free(&sb->cfg);
			sb->cfg = cfg;
			sb->config_text = text;
			sb->effective_text = eff;
			char perr[1024];
			const void *ps = NULL;
			if (seer_provider_resolve(ctx, cfg.provider, &sb->prov, &ps, perr, sizeof(perr)) < 0)
				sb->prov = NULL;
			sb->prov_settings = ps;
		} else {
			free(text);
		}
	}
	snprintf(path, sizeof(path), "%s/error", sb->dir);
	if (read_file(path, 1 << 20, &text, NULL) == 0) {
		if (*text)
			sb->error = text;
		else
			free(text);
	}
	pthread_mutex_lock(&ctx->lock);
	link_sandbox(ctx, sb);
	pthread_mutex_unlock(&ctx->lock);
	jobs_load(sb);
	sessions_load(sb);
	functions_load(sb);
}

int sandbox_load_all(struct seer_ctx *ctx)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/sandboxes", ctx->state_dir);
	DIR *d = opendir(path);
	if (!d)
		return -errno;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || !name_valid(de->d_name))
			continue;
		load_one(ctx, de->d_name);
	}
	closedir(d);
	return 0;
}

/* ---- provisioning and termination ---------------------------------------- */

struct thread_arg {
	struct sandbox *sb;
	int restart;   /* coming back after a seerfs restart: keep `running` */
};

static int check_secrets(struct sandbox *sb, const struct seer_config *c, char *err, size_t n)
{
	for (size_t i = 0; i < c->n_secrets; i++) {
		if (!getenv(c->secrets[i])) {
			snprintf(err, n,
				 "sandbox %s: secret %s is not set in seerfs's environment; export %s=... before starting seerfs, or remove it from \"secrets\"",
				 sb->name, c->secrets[i], c->secrets[i]);
			return -ENOENT;
		}
	}
	return 0;
}

static void terminate_now(struct sandbox *sb, const char *reason);

static void *provision_main(void *p)
{
	struct thread_arg *ta = p;
	struct sandbox *sb = ta->sb;
	int restart = ta->restart;
	free(ta);
	char err[1024] = "";
	double t0 = mono_s();

	pthread_mutex_lock(&sb->lock);
	const struct seer_provider *prov = sb->prov;
	/* The provisioning steps read the config without the lock: it cannot
	 * change while busy_op is set (a new config gets EBUSY). */
	const struct seer_config *cfg = &sb->cfg;
	free(sb->steps);
	sb->steps = NULL;
	sb->n_steps = 0;
	sb->prov_s = 0;
	pthread_mutex_unlock(&sb->lock);

	sandbox_log(sb, "%s on provider %s", restart ? "restarting after a seerfs restart" : "provisioning", prov->name);
	int r = prov->check(sb, cfg, err, sizeof(err));
	if (r == 0)
		r = check_secrets(sb, cfg, err, sizeof(err));
	/* Models are downloaded before the start: bubblewrap binds them in. */
	if (r == 0)
		r = provision_prepare(sb, cfg, err, sizeof(err));
	if (r == 0) {
		sandbox_set_progress(sb, "starting the sandbox");
		double ts = mono_s();
		r = prov->start(sb, cfg, err, sizeof(err));
		sandbox_step_time(sb, "start", mono_s() - ts);
	}
	if (r == 0)
		r = provision_run(sb, cfg, err, sizeof(err));
	/* Served functions (config "serve") load as the last step: a failing
	 * interface file fails provisioning with its traceback. */
	if (r == 0 && !sb->cancel)
		r = functions_provision(sb, restart, err, sizeof(err));
	if (r == 0 && sb->cancel)
		r = -ECANCELED;
	pthread_mutex_lock(&sb->lock);
	sb->prov_s = mono_s() - t0;   /* persisted by the state change below */
	pthread_mutex_unlock(&sb->lock);

	if (r < 0) {
		if (!err[0])
			snprintf(err, sizeof(err), "sandbox %s: provisioning failed: %s", sb->name, strerror(-r));
		prov->stop(sb);
		if (r == -ECANCELED) {
			sandbox_log(sb, "provisioning cancelled by terminate");
			pthread_mutex_lock(&sb->lock);
			sb->busy_op = 0;
			pthread_mutex_unlock(&sb->lock);
			set_state(sb, SB_TERMINATED, "terminated while provisioning");
		} else {
			sandbox_set_error(sb, "%s", err);
			pthread_mutex_lock(&sb->lock);
			sb->busy_op = 0;
			pthread_mutex_unlock(&sb->lock);
			set_state(sb, SB_FAILED, err);
		}
		sandbox_put(sb);
		return NULL;
	}
	pthread_mutex_lock(&sb->lock);
	sb->busy_op = 0;
	if (!restart || !sb->deadline_ns)
		sb->deadline_ns = now_ns() + (uint64_t)sb->cfg.timeout * 1000000000ull;
	pthread_mutex_unlock(&sb->lock);
	clear_error(sb);
	if (restart) {
		pthread_mutex_lock(&sb->lock);
		persist_state_locked(sb);
		sb->gen++;
		pthread_mutex_unlock(&sb->lock);
		sandbox_log(sb, "running again after a seerfs restart (%.0f ms); processes that ran before it were ended",
			    (mono_s() - t0) * 1000);
		sandbox_changed(sb);
	} else {
		sandbox_log(sb, "provisioned in %.0f ms", sb->prov_s * 1000);
		set_state(sb, SB_RUNNING, NULL);
	}
	pthread_cond_broadcast(&sb->ctx->timer_cond);
	sandbox_put(sb);
	return NULL;
}

static int start_thread(void *(*fn)(void *), struct sandbox *sb, int restart)
{
	struct thread_arg *ta = xcalloc(1, sizeof(*ta));
	ta->sb = sb;
	ta->restart = restart;
	sandbox_ref(sb);
	pthread_t t;
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	int r = pthread_create(&t, &at, fn, ta);
	pthread_attr_destroy(&at);
	if (r) {
		free(ta);
		sandbox_put(sb);
		return -r;
	}
	return 0;
}

/* Starts provisioning; sb->lock held, state already checked. */
static int begin_provisioning_locked(struct sandbox *sb)
{
	sb->busy_op = 1;
	sb->cancel = 0;
	sb->deadline_ns = 0;
	set_state_locked(sb, SB_PROVISIONING, NULL);
	return 0;
}

static void *terminate_main(void *p)
{
	struct thread_arg *ta = p;
	struct sandbox *sb = ta->sb;
	free(ta);
	jobs_sandbox_stopping(sb);
	if (sb->prov)
		sb->prov->stop(sb);
	if (sb->ctx->hooks.root_gone)
		sb->ctx->hooks.root_gone(sb->ctx->hooks.arg, sb);
	pthread_mutex_lock(&sb->lock);
	sb->busy_op = 0;
	char *reason = sb->reason ? xstrdup(sb->reason) : NULL;
	pthread_mutex_unlock(&sb->lock);
	set_state(sb, SB_TERMINATED, reason);
	free(reason);
	sandbox_put(sb);
	return NULL;
}

/* Moves a running or failed sandbox to terminating and stops it in the background. */
static void terminate_now(struct sandbox *sb, const char *reason)
{
	pthread_mutex_lock(&sb->lock);
	sb->busy_op = 1;
	set_state_locked(sb, SB_TERMINATING, reason);
	pthread_mutex_unlock(&sb->lock);
	sandbox_log(sb, "state: terminating%s%s", reason ? ": " : "", reason ? reason : "");
	if (sb->ctx->hooks.changed)
		sb->ctx->hooks.changed(sb->ctx->hooks.arg, sb);
	if (start_thread(terminate_main, sb, 0) < 0) {
		/* No thread: stop inline rather than leave processes behind. */
		sandbox_ref(sb);
		struct thread_arg *ta = xcalloc(1, sizeof(*ta));
		ta->sb = sb;
		terminate_main(ta);
	}
}

int sandbox_apply_config(struct sandbox *sb, const char *text, size_t len)
{
	char err[1024];
	struct seer_config cfg;
	char *eff = NULL;
	int r = parse_effective(sb->ctx, text, len, &cfg, &eff, err, sizeof(err));
	if (r < 0) {
		sandbox_set_error(sb, "sandbox %s: config.json was not applied: %s; the previous config stays", sb->name, err);
		return r;
	}
	const struct seer_provider *prov = NULL;
	const void *prov_settings = NULL;
	char perr[1024];
	r = seer_provider_resolve(sb->ctx, cfg.provider, &prov, &prov_settings, perr, sizeof(perr));
	if (r < 0) {
		sandbox_set_error(sb, "sandbox %s: config.json was not applied: field \"provider\": %s", sb->name, perr);
		seer_config_free(&cfg);
		free(eff);
		return -EINVAL;
	}
	char *copy = malloc(len + 1);
	if (!copy) {
		seer_config_free(&cfg);
		free(eff);
		return -ENOMEM;
	}
	memcpy(copy, text, len);
	copy[len] = '\0';

	pthread_mutex_lock(&sb->lock);
	enum sb_state st = sb->state;
	if (st == SB_PROVISIONING || st == SB_TERMINATING || sb->busy_op) {
		pthread_mutex_unlock(&sb->lock);
		sandbox_set_error(sb, "sandbox %s is %s: config.json cannot change now; wait for it (cat %s/wait) and write it again",
				  sb->name, sb_state_name(st), sb->name);
		seer_config_free(&cfg);
		free(copy);
		free(eff);
		return -EBUSY;
	}
	if (st == SB_RUNNING) {
		char diff[512], bad[512] = "";
		/* A fork compares what it runs with: its merged configs. */
		const char *cur = sb->effective_text ? sb->effective_text : sb->config_text ? sb->config_text : "{}";
		seer_config_diff(cur, eff ? eff : copy, diff, sizeof(diff));
		size_t used = 0;
		char *save = NULL, tmp[512];
		snprintf(tmp, sizeof(tmp), "%s", diff);
		for (char *f = strtok_r(tmp, ",", &save); f; f = strtok_r(NULL, ",", &save))
			if (!seer_config_live_field(f))
				used += (size_t)snprintf(bad + used, sizeof(bad) - used, "%s%s", used ? ", " : "", f);
		if (bad[0]) {
			pthread_mutex_unlock(&sb->lock);
			sandbox_set_error(sb,
					  "sandbox %s is running: field(s) %s cannot change live (only timeout, exec_timeout, env, output_cap and on_timeout can); terminate it and write the config again",
					  sb->name, bad);
			seer_config_free(&cfg);
			free(copy);
			free(eff);
			return -EBUSY;
		}
	}
	char path[4096];
	snprintf(path, sizeof(path), "%s/config.json", sb->dir);
	r = write_file_atomic(path, copy, len, 0600);
	if (r < 0) {
		pthread_mutex_unlock(&sb->lock);
		sandbox_set_error(sb, "sandbox %s: cannot store config.json in the state directory: %s", sb->name, strerror(-r));
		seer_config_free(&cfg);
		free(copy);
		free(eff);
		return r;
	}
	int64_t old_timeout = sb->cfg.timeout;
	seer_config_free(&sb->cfg);
	sb->cfg = cfg;
	free(sb->config_text);
	sb->config_text = copy;
	free(sb->effective_text);
	sb->effective_text = eff;
	if (st == SB_RUNNING) {
		if (sb->cfg.timeout != old_timeout) {
			/* A new timeout counts from when the sandbox started running. */
			uint64_t started = sb->deadline_ns - (uint64_t)old_timeout * 1000000000ull;
			sb->deadline_ns = started + (uint64_t)sb->cfg.timeout * 1000000000ull;
			persist_state_locked(sb);
		}
		pthread_mutex_unlock(&sb->lock);
		clear_error(sb);   /* an earlier rejection no longer applies */
		sandbox_log(sb, "config changed live (timeout %lld s)", (long long)sb->cfg.timeout);
		pthread_cond_broadcast(&sb->ctx->timer_cond);
		return 0;
	}
	if (sb->prov && sb->prov != prov && sb->prov->release)
		sb->prov->release(sb);   /* priv belongs to the old provider */
	sb->prov = prov;
	sb->prov_settings = prov_settings;
	begin_provisioning_locked(sb);
	pthread_mutex_unlock(&sb->lock);
	clear_error(sb);   /* an earlier rejection no longer applies */
	sandbox_log(sb, "config.json accepted (%zu bytes)%s%s", len, sb->cfg.snapshot && eff ? ": a fork of snapshot " : "",
		    sb->cfg.snapshot && eff ? sb->cfg.snapshot : "");
	if (sb->ctx->hooks.changed)
		sb->ctx->hooks.changed(sb->ctx->hooks.arg, sb);
	r = start_thread(provision_main, sb, 0);
	if (r < 0) {
		pthread_mutex_lock(&sb->lock);
		sb->busy_op = 0;
		pthread_mutex_unlock(&sb->lock);
		set_state(sb, SB_FAILED, "could not start the provisioning thread");
	}
	return 0;
}

int sandbox_ctl(struct sandbox *sb, const char *text, size_t len)
{
	struct ctl_cmd cmd;
	char err[512];
	if (functions_ctl_word(text, len))
		return functions_ctl(sb, text, len);   /* "serve FILE as NAME" */
	int r = ctl_parse(text, len, &cmd, err, sizeof(err));
	if (r < 0) {
		sandbox_set_error(sb, "sandbox %s: ctl: %s", sb->name, err);
		return r;
	}
	pthread_mutex_lock(&sb->lock);
	enum sb_state st = sb->state;
	int busy = sb->busy_op;
	switch (cmd.op) {
	case CTL_TERMINATE:
		if (st == SB_PROVISIONING || (st == SB_RUNNING && busy)) {
			sb->cancel = 1;
			pthread_mutex_unlock(&sb->lock);
			sandbox_log(sb, "terminate asked while provisioning: cancelling");
			return 0;
		}
		if ((st != SB_RUNNING && st != SB_FAILED) || busy) {
			pthread_mutex_unlock(&sb->lock);
			sandbox_set_error(sb, "sandbox %s: ctl: cannot terminate a sandbox that is %s", sb->name,
					  sb_state_name(st));
			return st == SB_TERMINATING ? -EBUSY : -EINVAL;
		}
		pthread_mutex_unlock(&sb->lock);
		if (cmd.name[0]) {
			r = snapshot_take(sb, cmd.name, err, sizeof(err));
			if (r < 0) {
				sandbox_set_error(sb, "sandbox %s: not terminated, because the snapshot failed: %s", sb->name, err);
				return r;
			}
		}
		terminate_now(sb, "terminated by ctl");
		return 0;
	case CTL_RETRY:
		if (st != SB_FAILED || busy) {
			pthread_mutex_unlock(&sb->lock);
			sandbox_set_error(sb, "sandbox %s: ctl: retry only applies to a failed sandbox; this one is %s",
					  sb->name, sb_state_name(st));
			return -EINVAL;
		}
		begin_provisioning_locked(sb);
		pthread_mutex_unlock(&sb->lock);
		if (sb->ctx->hooks.changed)
			sb->ctx->hooks.changed(sb->ctx->hooks.arg, sb);
		return start_thread(provision_main, sb, 0);
	case CTL_SNAPSHOT:
		if (st != SB_RUNNING || busy) {
			pthread_mutex_unlock(&sb->lock);
			sandbox_set_error(sb, "sandbox %s: ctl: snapshot needs a running sandbox; this one is %s",
					  sb->name, sb_state_name(st));
			return st == SB_PROVISIONING || st == SB_TERMINATING ? -EBUSY : -EINVAL;
		}
		pthread_mutex_unlock(&sb->lock);
		r = snapshot_take(sb, cmd.name, err, sizeof(err));
		if (r < 0)
			sandbox_set_error(sb, "sandbox %s: snapshot %s failed: %s", sb->name, cmd.name, err);
		return r;
	}
	pthread_mutex_unlock(&sb->lock);
	return -EINVAL;
}

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

char *sandbox_status_text(struct sandbox *sb)
{
	struct sbuf b = {0};
	char t[40], iso[512] = "";
	pthread_mutex_lock(&sb->lock);
	const struct seer_provider *prov = sb->prov;
	pthread_mutex_unlock(&sb->lock);
	if (prov && prov->isolation)
		prov->isolation(sb, iso, sizeof(iso));
	pthread_mutex_lock(&sb->lock);
	sbuf_printf(&b, "%s\n", sb_state_name(sb->state));
	sbuf_printf(&b, "name: %s\n", sb->name);
	sbuf_printf(&b, "provider: %s\n", sb->prov ? sb->prov->name : sb->cfg.provider);
	fmt_time_iso(sb->since_ns, t, sizeof(t));
	sbuf_printf(&b, "since: %s\n", t);
	if (sb->reason)
		sbuf_printf(&b, "reason: %s\n", sb->reason);
	if (sb->state == SB_PROVISIONING && sb->progress)
		sbuf_printf(&b, "progress: %s\n", sb->progress);
	if (sb->state != SB_PROVISIONING && sb->prov_s > 0) {
		sbuf_printf(&b, "provisioned: %.2f s", sb->prov_s);
		for (size_t i = 0; i < sb->n_steps; i++)
			sbuf_printf(&b, "%s%s %.2f s", i ? ", " : " (", sb->steps[i].name, sb->steps[i].s);
		sbuf_printf(&b, "%s\n", sb->n_steps ? ")" : "");
	}
	if (sb->state == SB_RUNNING && sb->deadline_ns) {
		uint64_t now = now_ns();
		fmt_time_iso(sb->deadline_ns, t, sizeof(t));
		sbuf_printf(&b, "timeout: %lld s, ends %s (in %lld s)\n", (long long)sb->cfg.timeout, t,
			    sb->deadline_ns > now ? (long long)((sb->deadline_ns - now) / 1000000000ull) : 0LL);
	}
	if ((sb->state == SB_RUNNING || sb->state == SB_PROVISIONING) && iso[0])
		sbuf_printf(&b, "isolation: %s\n", iso);
	pthread_mutex_unlock(&sb->lock);
	jobs_status_lines(sb, &b);
	return b.data;
}

char *sandbox_info_json(struct sandbox *sb)
{
	struct json_object *o = json_object_new_object();
	char t[40];
	pthread_mutex_lock(&sb->lock);
	json_object_object_add(o, "id", json_object_new_string(sb->id));
	json_object_object_add(o, "name", json_object_new_string(sb->name));
	json_object_object_add(o, "provider", json_object_new_string(sb->prov ? sb->prov->name : sb->cfg.provider));
	fmt_time_iso(sb->created_ns, t, sizeof(t));
	json_object_object_add(o, "created", json_object_new_string(t));
	json_object_object_add(o, "state", json_object_new_string(sb_state_name(sb->state)));
	fmt_time_iso(sb->since_ns, t, sizeof(t));
	json_object_object_add(o, "since", json_object_new_string(t));
	if (sb->reason)
		json_object_object_add(o, "reason", json_object_new_string(sb->reason));
	json_object_object_add(o, "gpu", sb->cfg.gpu ? json_object_new_string(sb->cfg.gpu) : NULL);
	json_object_object_add(o, "timeout", json_object_new_int64(sb->cfg.timeout));
	if (sb->prov_s > 0) {
		json_object_object_add(o, "provision_s", json_secs(sb->prov_s));
		json_object_object_add(o, "provision_steps", steps_json_locked(sb));
	}
	if (sb->effective_text) {
		/* A fork: what it runs with, its snapshot's config merged with its own. */
		struct json_object *e = json_tokener_parse(sb->effective_text);
		if (e)
			json_object_object_add(o, "effective_config", e);
	}
	json_object_object_add(o, "model_handles", json_object_new_array());
	json_object_object_add(o, "repo_handles", json_object_new_array());
	json_object_object_add(o, "jupyter_url", NULL);
	json_object_object_add(o, "code_server_url", NULL);
	pthread_mutex_unlock(&sb->lock);
	provision_info(sb, o);   /* reads provisioned.json: outside sb->lock */
	struct sbuf b = {0};
	sbuf_printf(&b, "%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return b.data;
}

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

char **sandbox_environ(struct sandbox *sb)
{
	char **v = xcalloc(1, sizeof(char *));
	size_t n = 0;
	env_set(&v, &n, "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
	if (provision_venv_ready(sb)) {
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

/* ---- the timeout timer and restart --------------------------------------------- */

void *sandbox_timer_main(void *arg)
{
	struct seer_ctx *ctx = arg;
	pthread_mutex_lock(&ctx->lock);
	while (!ctx->stopping) {
		uint64_t now = now_ns(), next = now + 1000000000ull;
		struct sandbox *due = NULL;
		for (struct sandbox *sb = ctx->sandboxes; sb && !due; sb = sb->next) {
			pthread_mutex_lock(&sb->lock);
			if (sb->state == SB_RUNNING && !sb->busy_op && sb->deadline_ns) {
				if (sb->deadline_ns <= now) {
					due = sb;
					sb->refs++;   /* ctx->lock is held */
				} else if (sb->deadline_ns < next) {
					next = sb->deadline_ns;
				}
			}
			pthread_mutex_unlock(&sb->lock);
		}
		if (due) {
			pthread_mutex_unlock(&ctx->lock);
			char reason[128], err[512];
			snprintf(reason, sizeof(reason), "timeout of %lld s reached", (long long)due->cfg.timeout);
			if (due->cfg.on_timeout == SEER_TIMEOUT_SNAPSHOT) {
				char name[80];
				snprintf(name, sizeof(name), "%s-timeout", due->name);
				if (snapshot_take(due, name, err, sizeof(err)) < 0)
					sandbox_log(due, "snapshot before timeout failed: %s", err);
				else
					sandbox_log(due, "snapshot %s taken before the timeout", name);
			}
			sandbox_log(due, "%s: terminating", reason);
			terminate_now(due, reason);
			sandbox_put(due);
			pthread_mutex_lock(&ctx->lock);
			continue;
		}
		struct timespec ts = {.tv_sec = (time_t)(next / 1000000000ull), .tv_nsec = (long)(next % 1000000000ull)};
		pthread_cond_timedwait(&ctx->timer_cond, &ctx->lock, &ts);
	}
	pthread_mutex_unlock(&ctx->lock);
	return NULL;
}

/* Called once at start-up: sandboxes caught mid-way by a crash settle, and
 * running ones start again (their processes did not survive seerfs). */
void sandbox_recover_all(struct seer_ctx *ctx)
{
	pthread_mutex_lock(&ctx->lock);
	size_t n = 0;
	for (struct sandbox *sb = ctx->sandboxes; sb; sb = sb->next)
		n++;
	struct sandbox **all = xcalloc(n + 1, sizeof(*all));
	n = 0;
	for (struct sandbox *sb = ctx->sandboxes; sb; sb = sb->next) {
		all[n++] = sb;
		sb->refs++;
	}
	pthread_mutex_unlock(&ctx->lock);
	for (size_t i = 0; i < n; i++) {
		struct sandbox *sb = all[i];
		pthread_mutex_lock(&sb->lock);
		enum sb_state st = sb->state;
		pthread_mutex_unlock(&sb->lock);
		if (st == SB_TERMINATING) {
			set_state(sb, SB_TERMINATED, "seerfs stopped while terminating");
		} else if (st == SB_PROVISIONING) {
			if (sb->prov) {
				pthread_mutex_lock(&sb->lock);
				begin_provisioning_locked(sb);
				pthread_mutex_unlock(&sb->lock);
				sandbox_log(sb, "seerfs restarted during provisioning: provisioning again");
				start_thread(provision_main, sb, 0);
			} else {
				set_state(sb, SB_FAILED, "seerfs stopped while provisioning; write config.json again");
			}
		} else if (st == SB_RUNNING) {
			if (sb->prov) {
				pthread_mutex_lock(&sb->lock);
				sb->busy_op = 1;
				pthread_mutex_unlock(&sb->lock);
				start_thread(provision_main, sb, 1);
			} else {
				set_state(sb, SB_FAILED, "its config could not be read after a restart");
			}
		}
		sandbox_put(sb);
	}
	free(all);
}
