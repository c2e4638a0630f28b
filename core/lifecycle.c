/*
 * lifecycle.c - what a sandbox goes through: its state machine and state
 * directory, creation, loading and removal, provisioning and termination
 * threads, config changes and ctl commands, the status and info.json
 * texts, the timeout timer and the restart of what was running; and the
 * context's own life (open the state directory, start, stop, close).
 *
 * Locking: ctx->lock guards the sandbox list and reference counts; sb->lock
 * guards a sandbox's fields. Never take ctx->lock while holding sb->lock.
 * Slow work (starting bubblewrap, downloads, stopping processes) runs in a
 * thread of its own with no lock held, so no FUSE request waits on it.
 */
#include "core/lifecycle.h"
#include "core/sandbox.h"
#include "core/lib/walk.h"
#include "core/ctlcmd.h"
#include "core/provider.h"
#include "core/registry.h"
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
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int state_from_name(const char *s)
{
	for (int i = SB_NEW; i <= SB_TERMINATED; i++)
		if (!strcmp(s, sb_state_name((enum sb_state)i)))
			return i;
	return -1;
}

/* ---- provisioning times ---------------------------------------------------- */

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
		sandbox_put(sb);   /* the only reference: frees it */
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
		/* The provider gets what it starts from, resolved here. */
		struct seer_start in;
		memset(&in, 0, sizeof(in));
		r = snapshot_start_ref(sb, &in.snap, err, sizeof(err));
		if (r == 0) {
			provision_start_inputs(sb, &in);
			r = prov->start(sb, cfg, &in, err, sizeof(err));
		}
		provision_start_free(&in);
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
	sandbox_clear_error(sb);
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
		sandbox_clear_error(sb);   /* an earlier rejection no longer applies */
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
	sandbox_clear_error(sb);   /* an earlier rejection no longer applies */
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

/* The parts of a sandbox the lifecycle attached (sandbox_free calls this). */
static void parts_free(struct sandbox *sb)
{
	jobs_free(sb);
	sessions_free(sb);
	functions_free(sb);
}

/* ---- the context: open, start, stop, close --------------------------------------- */

/* Under root the sandboxes' ids are an unprivileged range (core/lib/idmap.h),
 * and bubblewrap, running as that range's root, must reach its sources in
 * the state directory: the directories on the way are made searchable by
 * the range's group only (root:GID 0710, as Docker's remapped root is), and
 * every parent above them, and above the model cache, must be searchable by
 * others (as /var/lib/docker's must be for userns-remap). */
static int share_state_dirs(struct seer_ctx *ctx, char *err, size_t n)
{
	char p[4096];
	const char *sub[] = {"", "/sandboxes", "/empty", "/models", NULL};
	for (int i = 0; sub[i]; i++) {
		snprintf(p, sizeof(p), "%s%s", ctx->state_dir, sub[i]);
		if (chown(p, 0, ctx->ids.gid) < 0 || chmod(p, 0710) < 0) {
			int r = -errno;
			snprintf(err, n, "cannot give %s to the sandboxes' group %u: %s", p, (unsigned)ctx->ids.gid,
				 strerror(-r));
			return r;
		}
	}
	/* The agent may be anywhere (a build tree under a 0700 home): the
	 * sandboxes get a copy of it in the state directory. */
	char *agent = NULL;
	size_t alen = 0;
	snprintf(p, sizeof(p), "%s/agent", ctx->state_dir);
	int r = ctx->agent_path ? read_file(ctx->agent_path, 256u << 20, &agent, &alen) : -ENOENT;
	if (r == 0)
		r = write_file_atomic(p, agent, alen, 0755);
	free(agent);
	if (r < 0 && r != -ENOENT) {
		snprintf(err, n, "cannot copy the sandbox init %s to %s: %s", ctx->agent_path, p, strerror(-r));
		return r;
	}
	if (r == 0) {   /* else local_check says the agent is missing */
		free(ctx->agent_path);
		ctx->agent_path = xstrdup(p);
	}
	const char *dirs[] = {ctx->state_dir, ctx->model_cache, NULL};
	for (int d = 0; dirs[d]; d++) {
		snprintf(p, sizeof(p), "%s", dirs[d]);
		for (char *slash = strrchr(p, '/'); slash && slash != p; slash = strrchr(p, '/')) {
			*slash = '\0';
			struct stat st;
			if (stat(p, &st) == 0 && !(st.st_mode & S_IXOTH) &&
			    !(st.st_gid == ctx->ids.gid && (st.st_mode & S_IXGRP))) {
				snprintf(err, n, "%s is under %s, which only its owner may enter (mode %04o), so the "
					 "sandboxes (host ids %u and up) cannot reach it; chmod o+x %s, or use a path "
					 "others may enter (the default state directory /var/lib/seerfs)",
					 dirs[d], p, (unsigned)(st.st_mode & 07777), (unsigned)ctx->ids.uid, p);
				return -EACCES;
			}
		}
	}
	return 0;
}

int seer_ctx_open(struct seer_ctx *ctx, char *err, size_t n)
{
	char p[4096];
	int r = mkdir_p(ctx->state_dir, 0700);
	if (r < 0) {
		snprintf(err, n, "cannot create the state directory %s: %s", ctx->state_dir, strerror(-r));
		return r;
	}
	snprintf(p, sizeof(p), "%s/lock", ctx->state_dir);
	ctx->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (ctx->lock_fd < 0) {
		r = -errno;
		snprintf(err, n, "cannot open %s: %s", p, strerror(-r));
		return r;
	}
	if (flock(ctx->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		r = -errno;
		char *holder = NULL;
		read_file(p, 4096, &holder, NULL);
		if (holder)
			holder[strcspn(holder, "\n")] = '\0';
		snprintf(err, n, "the state directory %s is in use by another seerfs (%s); unmount that one first, or pick another with -o state=DIR",
			 ctx->state_dir, holder && *holder ? holder : "pid unknown");
		free(holder);
		close(ctx->lock_fd);
		ctx->lock_fd = -1;
		return r == -EWOULDBLOCK ? -EBUSY : r;
	}
	char who[4200];
	int len = snprintf(who, sizeof(who), "pid %d, mounted at %s\n", (int)getpid(), ctx->mountpoint);
	if (ftruncate(ctx->lock_fd, 0) < 0 || pwrite(ctx->lock_fd, who, (size_t)len, 0) < 0) {
		/* the lock itself is what counts; the text only helps people */
	}
	const char *sub[] = {"sandboxes", "snapshots", "models", "empty", NULL};
	for (int i = 0; sub[i]; i++) {
		snprintf(p, sizeof(p), "%s/%s", ctx->state_dir, sub[i]);
		if ((r = mkdir_p(p, 0700)) < 0) {
			snprintf(err, n, "cannot create %s: %s", p, strerror(-r));
			return r;
		}
	}
	if ((r = seer_idmap_init(&ctx->ids, ctx->uid, ctx->gid, ctx->idmap_user, p, sizeof(p))) < 0) {
		snprintf(err, n, "cannot map the sandboxes' ids: %s", p);
		return r;
	}
	if (ctx->ids.count > 1 && (r = share_state_dirs(ctx, err, n)) < 0)
		return r;
	pthread_mutex_init(&ctx->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_cond_init(&ctx->timer_cond, &ca);
	pthread_condattr_destroy(&ca);
	ctx->sb_parts_free = parts_free;
	if ((r = seer_providers_init(ctx, err, n)) < 0)
		return r;
	r = sandbox_load_all(ctx);
	if (r < 0) {
		snprintf(err, n, "cannot read the sandboxes in %s: %s", ctx->state_dir, strerror(-r));
		return r;
	}
	return 0;
}

int seer_ctx_start(struct seer_ctx *ctx)
{
	sandbox_recover_all(ctx);
	return -pthread_create(&ctx->timer, NULL, sandbox_timer_main, ctx);
}

void seer_ctx_stop_processes(struct seer_ctx *ctx)
{
	pthread_mutex_lock(&ctx->lock);
	/* seerfs is ending (the mount went away): providers whose sandboxes
	 * outlive it (docker's containers) see that in stop. */
	ctx->stopping = 1;
	pthread_cond_broadcast(&ctx->timer_cond);
	size_t n = 0;
	for (struct sandbox *sb = ctx->sandboxes; sb; sb = sb->next)
		n++;
	struct sandbox **all = calloc(n + 1, sizeof(*all));
	n = 0;
	for (struct sandbox *sb = ctx->sandboxes; all && sb; sb = sb->next) {
		all[n++] = sb;
		sb->refs++;
	}
	pthread_mutex_unlock(&ctx->lock);
	for (size_t i = 0; i < n; i++) {
		if (all[i]->prov)
			all[i]->prov->stop(all[i]);
		sandbox_put(all[i]);
	}
	free(all);
}

void seer_ctx_close(struct seer_ctx *ctx)
{
	pthread_mutex_lock(&ctx->lock);
	ctx->stopping = 1;
	pthread_cond_broadcast(&ctx->timer_cond);
	pthread_mutex_unlock(&ctx->lock);
	pthread_join(ctx->timer, NULL);
	/* Stop every sandbox's processes; states stay as they are on disk so
	 * that a remount brings running sandboxes back. */
	for (;;) {
		pthread_mutex_lock(&ctx->lock);
		struct sandbox *sb = ctx->sandboxes;
		if (sb)
			ctx->sandboxes = sb->next;
		pthread_mutex_unlock(&ctx->lock);
		if (!sb)
			break;
		jobs_shutdown(sb);
		if (sb->prov)
			sb->prov->stop(sb);
		jobs_close_all(sb);   /* jobs reference their sandbox */
		sandbox_put(sb);
	}
	seer_providers_cleanup(ctx);
	if (ctx->lock_fd >= 0)
		close(ctx->lock_fd);
}
