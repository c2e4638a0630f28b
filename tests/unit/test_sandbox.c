/*
 * test_sandbox.c - unit tests of the sandbox state machine (core/lifecycle.c
 * and core/sandbox.c) without FUSE: a temporary state directory, sandboxes
 * created, configured, failed, retried, terminated, removed, and loaded
 * again by a second context as a remount would.
 *
 * Nothing here starts a working sandbox: the agent path points at a missing
 * file (provisioning fails in the provider's check) or at /bin/true (the
 * sandbox's init exits at once). Real sandboxes are the integration tests'.
 */
#include "core/ctx.h"
#include "core/lifecycle.h"
#include "core/ctlcmd.h"
#include "core/sandbox.h"
#include "core/lib/walk.h"
#include "tests/unit/check.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MISSING_AGENT "/nonexistent/seerfs-agent"
#define SECRET_NAME "SEERFS_UNIT_SECRET"
#define SECRET_VALUE "unit-s3cr3t-7f3a9c"

static char statedir[256];

static void ctx_init(struct seer_ctx *ctx, const char *agent)
{
	memset(ctx, 0, sizeof(*ctx));
	ctx->lock_fd = -1;
	ctx->uid = getuid();
	ctx->gid = getgid();
	ctx->state_dir = xstrdup(statedir);
	ctx->mountpoint = xstrdup("/nonexistent-mountpoint");
	ctx->start_cwd = xstrdup("/");
	ctx->agent_path = xstrdup(agent);
	ctx->providers_file = xstrdup("/nonexistent/providers.json");
	struct sbuf b = {0};
	sbuf_printf(&b, "%s/models", statedir);
	ctx->model_cache = b.data;
}

static void ctx_strings_free(struct seer_ctx *ctx)
{
	free(ctx->state_dir);
	free(ctx->mountpoint);
	free(ctx->start_cwd);
	free(ctx->agent_path);
	free(ctx->providers_file);
	free(ctx->model_cache);
}

static void set_agent(struct seer_ctx *ctx, const char *agent)
{
	free(ctx->agent_path);
	ctx->agent_path = xstrdup(agent);
}

static enum sb_state state_of(struct sandbox *sb)
{
	pthread_mutex_lock(&sb->lock);
	enum sb_state st = sb->state;
	pthread_mutex_unlock(&sb->lock);
	return st;
}

/* Waits until no provisioning or termination runs, and until the worker
 * thread has dropped its reference (refs back to `refs`). */
static enum sb_state settle(struct sandbox *sb, int refs)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 20;
	pthread_mutex_lock(&sb->lock);
	while (sb->state == SB_PROVISIONING || sb->state == SB_TERMINATING || sb->busy_op)
		if (pthread_cond_timedwait(&sb->cond, &sb->lock, &ts) == ETIMEDOUT)
			break;
	enum sb_state st = sb->state;
	pthread_mutex_unlock(&sb->lock);
	for (int i = 0; i < 2000; i++) {
		pthread_mutex_lock(&sb->ctx->lock);
		int r = sb->refs;
		pthread_mutex_unlock(&sb->ctx->lock);
		if (r <= refs)
			break;
		usleep(1000);
	}
	return st;
}

static char *text_of(char *(*fn)(struct sandbox *), struct sandbox *sb)
{
	return fn(sb);
}

static int file_exists(const char *dir, const char *name)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	struct stat st;
	return stat(p, &st) == 0;
}

static char *slurp(const char *path)
{
	char *t = NULL;
	if (read_file(path, 1 << 22, &t, NULL) < 0)
		return NULL;
	return t;
}

/* Whether any regular file under dir holds needle. */
static int tree_holds(const char *dir, const char *needle, char *where, size_t wlen)
{
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	struct dirent *de;
	int found = 0;
	while (!found && (de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		char p[1024];
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		struct stat st;
		if (lstat(p, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			found = tree_holds(p, needle, where, wlen);
		} else if (S_ISREG(st.st_mode)) {
			char *t = slurp(p);
			if (t && strstr(t, needle)) {
				found = 1;
				snprintf(where, wlen, "%s", p);
			}
			free(t);
		}
	}
	closedir(d);
	return found;
}

static struct sandbox *create(struct seer_ctx *ctx, const char *name)
{
	struct sandbox *sb = NULL;
	int r = sandbox_create(ctx, name, &sb);
	CHECK(r == 0 && sb, "create %s: %d", name, r);
	return sb;
}

static void test_names(struct seer_ctx *ctx)
{
	static const char *const bad[] = {
		"", ".", "..", "a b", "a/b", "tab\t", "star*", "semi;colon", "uni\xc3\xa9",
		"a234567890123456789012345678901234567890123456789012345678901234X", NULL};
	for (int i = 0; bad[i]; i++) {
		struct sandbox *sb = NULL;
		int r = sandbox_create(ctx, bad[i], &sb);
		CHECK(r == -EINVAL && !sb, "name \"%s\": %d", bad[i], r);
	}
	static const char *const good[] = {
		"a", "exp1", "A-b_c.d", "...", ".hidden", "a234567890123456789012345678901234567890123456789012345678901234",
		NULL};
	for (int i = 0; good[i]; i++) {
		struct sandbox *sb = create(ctx, good[i]);
		if (!sb)
			continue;
		CHECK(state_of(sb) == SB_NEW, "%s not new", good[i]);
		struct sandbox *again = NULL;
		CHECK(sandbox_create(ctx, good[i], &again) == -EEXIST && !again, "duplicate %s", good[i]);
		CHECK(sandbox_remove(sb) == 0, "remove %s", good[i]);
		CHECK(!sandbox_get(ctx, good[i]), "%s still listed after remove", good[i]);
		CHECK(!file_exists(statedir, "sandboxes/a"), "state dir of a sandbox left after remove");
		CHECK(sandbox_remove(sb) == -ENOENT, "second remove of %s", good[i]);
		sandbox_put(sb);
	}
}

static void test_new(struct seer_ctx *ctx)
{
	struct sandbox *sb = create(ctx, "n");
	if (!sb)
		return;
	CHECK(file_exists(sb->dir, "state.json"), "no state.json");
	CHECK(sb->id[0] && !strncmp(sb->id, "sb-", 3), "id \"%s\"", sb->id);
	char *s = text_of(sandbox_status_text, sb);
	CHECK(!strncmp(s, "new\n", 4), "status: %s", nn(s));
	CHECK(has(s, "\nname: n\n") && has(s, "\nprovider: local\n") && has(s, "\nsince: "), "status lines: %s", nn(s));
	free(s);
	s = text_of(sandbox_error_text, sb);
	CHECK(!strcmp(s, ""), "error of a new sandbox: \"%s\"", nn(s));
	free(s);
	s = text_of(sandbox_config_text, sb);
	CHECK(!strcmp(s, ""), "config of a new sandbox: \"%s\"", nn(s));
	free(s);
	s = text_of(sandbox_info_json, sb);
	struct json_object *o = json_tokener_parse(s), *v;
	CHECK(o != NULL, "info.json is not JSON: %s", nn(s));
	static const char *const keys[] = {"id", "name", "provider", "created", "state", "since", "gpu", "timeout",
					   "model_handles", "repo_handles", "jupyter_url", "code_server_url", NULL};
	for (int i = 0; o && keys[i]; i++)
		CHECK(json_object_object_get_ex(o, keys[i], NULL), "info.json lacks %s", keys[i]);
	if (o && json_object_object_get_ex(o, "state", &v))
		CHECK(!strcmp(json_object_get_string(v), "new"), "info state %s", json_object_get_string(v));
	if (o && json_object_object_get_ex(o, "id", &v))
		CHECK(!strcmp(json_object_get_string(v), sb->id), "info id");
	if (o && json_object_object_get_ex(o, "model_handles", &v))
		CHECK(json_object_is_type(v, json_type_array), "model_handles is not an array");
	json_object_put(o);
	free(s);
	char p[512];
	sandbox_log_path(sb, p, sizeof(p));
	s = slurp(p);
	CHECK(has(s, "created sandbox n"), "log: %s", nn(s));
	/* Log lines start with an ISO time stamp. */
	CHECK(s && strlen(s) > 24 && s[4] == '-' && s[10] == 'T' && s[23] == 'Z' && s[24] == ' ', "log stamp: %s", nn(s));
	free(s);

	/* Invalid configs: refused, named, nothing stored, still new. */
	static const struct {
		const char *text;
		int err;
		const char *w1, *w2;
	} badcfg[] = {
		{"{\"timeout\": \"x\"}", -EINVAL, "\"timeout\"", "previous config stays"},
		{"{\"bogus\": true}", -EINVAL, "unknown field \"bogus\"", NULL},
		{"{\n \"timeout\": 5,\n }", -EINVAL, "line 3", "column"},
		{"{\"provider\": \"nope\"}", -EINVAL, "\"provider\"", "no provider named \"nope\""},
		{"", -EINVAL, "empty", NULL},
	};
	for (size_t i = 0; i < ARRAY_SIZE(badcfg); i++) {
		int r = sandbox_apply_config(sb, badcfg[i].text, strlen(badcfg[i].text));
		CHECK(r == badcfg[i].err, "config %s: %d", badcfg[i].text, r);
		CHECK(state_of(sb) == SB_NEW, "config %s: state %s", badcfg[i].text, sb_state_name(state_of(sb)));
		s = text_of(sandbox_error_text, sb);
		CHECK(has(s, badcfg[i].w1), "config %s: error \"%s\" lacks %s", badcfg[i].text, nn(s), badcfg[i].w1);
		if (badcfg[i].w2)
			CHECK(has(s, badcfg[i].w2), "config %s: error \"%s\" lacks %s", badcfg[i].text, nn(s), badcfg[i].w2);
		free(s);
		CHECK(!file_exists(sb->dir, "config.json"), "config %s: stored", badcfg[i].text);
		CHECK(sb->config_text == NULL, "config %s: kept as text", badcfg[i].text);
	}
	char *big = malloc(SEER_CONFIG_MAX + 2);
	memset(big, ' ', SEER_CONFIG_MAX + 1);
	big[0] = '{';
	big[SEER_CONFIG_MAX] = '}';
	CHECK(sandbox_apply_config(sb, big, SEER_CONFIG_MAX + 1) == -EFBIG, "big config");
	free(big);
	s = text_of(sandbox_error_text, sb);
	CHECK(has(s, "over the limit"), "big config error: %s", nn(s));
	free(s);
	/* The error is persisted for a remount. */
	s = slurp(strcat(strcpy(p, sb->dir), "/error"));
	CHECK(has(s, "over the limit"), "persisted error: %s", nn(s));
	free(s);

	/* ctl on a new sandbox. */
	static const struct {
		const char *cmd;
		int err;
		const char *w;
	} ctls[] = {
		{"terminate\n", -EINVAL, "cannot terminate a sandbox that is new"},
		{"retry\n", -EINVAL, "retry only applies to a failed sandbox"},
		{"snapshot s1\n", -EINVAL, "snapshot needs a running sandbox"},
		{"bogus\n", -EINVAL, "unknown command \"bogus\""},
		{"terminate snapshot=a/b", -EINVAL, "not a valid snapshot name"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(ctls); i++) {
		int r = sandbox_ctl(sb, ctls[i].cmd, strlen(ctls[i].cmd));
		CHECK(r == ctls[i].err, "ctl %s: %d", ctls[i].cmd, r);
		s = text_of(sandbox_error_text, sb);
		CHECK(has(s, ctls[i].w), "ctl %s: error \"%s\"", ctls[i].cmd, nn(s));
		free(s);
		CHECK(state_of(sb) == SB_NEW, "ctl %s changed the state", ctls[i].cmd);
	}
	sandbox_put(sb);
}

/* Provisioning that fails in the provider's check, retry, terminate. */
static void test_failed(struct seer_ctx *ctx)
{
	struct sandbox *sb = create(ctx, "f");
	if (!sb)
		return;
	int r = sandbox_apply_config(sb, "{\"timeout\": 77}\n", 16);
	CHECK(r == 0, "apply: %d", r);
	enum sb_state st = state_of(sb);
	CHECK(st == SB_PROVISIONING || st == SB_FAILED, "state right after apply: %s", sb_state_name(st));
	CHECK(file_exists(sb->dir, "config.json"), "config.json not stored");
	st = settle(sb, 2);
	CHECK(st == SB_FAILED, "state %s", sb_state_name(st));
	char *s = text_of(sandbox_status_text, sb);
	CHECK(!strncmp(s, "failed\n", 7) && has(s, "reason: ") && has(s, MISSING_AGENT), "status: %s", nn(s));
	free(s);
	s = text_of(sandbox_error_text, sb);
	CHECK(has(s, MISSING_AGENT), "error: %s", nn(s));
	free(s);
	s = text_of(sandbox_config_text, sb);
	CHECK(!strcmp(s, "{\"timeout\": 77}\n"), "config read back: %s", nn(s));
	free(s);
	CHECK(sb->cfg.timeout == 77, "parsed config not kept");

	/* A bad config on a failed sandbox: refused, old config kept. */
	r = sandbox_apply_config(sb, "{\"timeout\": -1}", 15);
	CHECK(r == -EINVAL && state_of(sb) == SB_FAILED && sb->cfg.timeout == 77, "bad config on failed: %d", r);
	s = text_of(sandbox_config_text, sb);
	CHECK(!strcmp(s, "{\"timeout\": 77}\n"), "config after a refused one: %s", nn(s));
	free(s);

	/* retry provisions again, and fails again. */
	r = sandbox_ctl(sb, "retry\n", 6);
	CHECK(r == 0, "retry: %d", r);
	st = settle(sb, 2);
	CHECK(st == SB_FAILED, "after retry: %s", sb_state_name(st));
	/* A new config provisions a failed sandbox again. */
	r = sandbox_apply_config(sb, "{\"timeout\": 78}", 15);
	CHECK(r == 0, "new config on failed: %d", r);
	st = settle(sb, 2);
	CHECK(st == SB_FAILED && sb->cfg.timeout == 78, "after new config: %s", sb_state_name(st));

	/* terminate on failed -> terminated; files stay until remove. */
	r = sandbox_ctl(sb, "terminate", 9);
	CHECK(r == 0, "terminate failed sandbox: %d", r);
	st = settle(sb, 2);
	CHECK(st == SB_TERMINATED, "after terminate: %s", sb_state_name(st));
	s = text_of(sandbox_status_text, sb);
	CHECK(has(s, "reason: terminated by ctl"), "status: %s", nn(s));
	free(s);
	r = sandbox_ctl(sb, "terminate", 9);
	CHECK(r == -EINVAL, "terminate twice: %d", r);
	CHECK(file_exists(sb->dir, "config.json") && file_exists(sb->dir, "log"), "files gone after terminate");

	char p[512];
	sandbox_log_path(sb, p, sizeof(p));
	s = slurp(p);
	CHECK(has(s, "provisioning on provider local") && has(s, "state: failed") && has(s, "state: terminating") &&
		      has(s, "state: terminated"),
	      "log lacks the states: %s", nn(s));
	free(s);
	sandbox_put(sb);

	/* Another one left failed for the remount test. */
	sb = create(ctx, "f2");
	if (!sb)
		return;
	CHECK(sandbox_apply_config(sb, "{}", 2) == 0, "apply f2");
	CHECK(settle(sb, 2) == SB_FAILED, "f2 not failed");
	sandbox_put(sb);
}

/* Provisioning steps that fail before the start, and secrets. */
static void test_unsupported_and_secrets(struct seer_ctx *ctx)
{
	set_agent(ctx, "/bin/true");
	/* Steps that fail before the sandbox starts, each naming what is wrong. */
	static const struct {
		const char *name, *cfg, *w;
	} cases[] = {
		{"u1", "{\"gpu\": \"A100\"}", "A100"},
		{"u2", "{\"secrets\": [\"SEERFS_UNIT_MISSING_SECRET\"]}", "SEERFS_UNIT_MISSING_SECRET"},
		{"u3", "{\"local_files\": [[\"/nonexistent/seerfs-unit-src\", \"/workspace/x\"]]}",
		 "/nonexistent/seerfs-unit-src"},
		{"u4", "{\"local_dirs\": [[\"/nonexistent/seerfs-unit-dir\", \"/workspace/d\"]]}",
		 "/nonexistent/seerfs-unit-dir"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct sandbox *sb = create(ctx, cases[i].name);
		if (!sb)
			continue;
		CHECK(sandbox_apply_config(sb, cases[i].cfg, strlen(cases[i].cfg)) == 0, "apply %s", cases[i].cfg);
		enum sb_state st = settle(sb, 2);
		char *e = text_of(sandbox_error_text, sb);
		CHECK(st == SB_FAILED, "%s: %s (%s)", cases[i].cfg, sb_state_name(st), nn(e));
		CHECK(has(e, cases[i].w), "%s: error \"%s\" does not name %s", cases[i].cfg, e, cases[i].w);
		free(e);
		CHECK(sandbox_remove(sb) == 0, "remove %s", cases[i].name);
		sandbox_put(sb);
	}

	/* A secret that is set reaches the environment and is stored nowhere. */
	setenv(SECRET_NAME, SECRET_VALUE, 1);
	struct sandbox *sb = create(ctx, "sec");
	if (sb) {
		const char *cfg = "{\"secrets\": [\"" SECRET_NAME "\"], \"env\": {\"PLAIN\": \"p1\", \"HOME\": \"/w\"}}";
		CHECK(sandbox_apply_config(sb, cfg, strlen(cfg)) == 0, "apply secret config");
		settle(sb, 2);
		char **env = sandbox_environ(sb);
		int secret = 0, plain = 0, home = 0, name = 0, path = 0;
		for (char **e = env; e && *e; e++) {
			secret += !strcmp(*e, SECRET_NAME "=" SECRET_VALUE);
			plain += !strcmp(*e, "PLAIN=p1");
			home += !strncmp(*e, "HOME=", 5);
			name += !strcmp(*e, "SEER_SANDBOX=sec");
			path += !strncmp(*e, "PATH=/", 6);
		}
		CHECK(secret == 1 && plain == 1 && name == 1 && path == 1, "environ: secret %d plain %d name %d path %d",
		      secret, plain, name, path);
		CHECK(home == 1, "HOME appears %d times", home);
		for (char **e = env; e && *e; e++)
			if (!strncmp(*e, "HOME=", 5))
				CHECK(!strcmp(*e, "HOME=/w"), "config env does not override the default: %s", *e);
		strv_free(env);
		char *texts[] = {sandbox_status_text(sb), sandbox_error_text(sb), sandbox_info_json(sb),
				 sandbox_config_text(sb)};
		for (size_t i = 0; i < ARRAY_SIZE(texts); i++) {
			CHECK(!has(texts[i], SECRET_VALUE), "secret value shown: %s", nn(texts[i]));
			free(texts[i]);
		}
		char where[1024] = "";
		CHECK(!tree_holds(statedir, SECRET_VALUE, where, sizeof(where)), "secret value stored in %s", where);
		sandbox_put(sb);
	}
	unsetenv(SECRET_NAME);
	set_agent(ctx, MISSING_AGENT);
}

static void write_state(const char *name, const char *json)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/sandboxes/%s", statedir, name);
	mkdir(p, 0700);
	strcat(p, "/state.json");
	CHECK(write_file_atomic(p, json, strlen(json), 0600) == 0, "write %s", p);
}

static void test_reload(void)
{
	/* Sandboxes a crash left mid-way, written as a crash would leave them. */
	write_state("crash-prov", "{\"id\": \"sb-1\", \"state\": \"provisioning\", \"created_ns\": 1, \"since_ns\": 1}");
	write_state("crash-term", "{\"id\": \"sb-2\", \"state\": \"terminating\", \"created_ns\": 1, \"since_ns\": 1}");
	write_state("crash-run", "{\"id\": \"sb-3\", \"state\": \"running\", \"created_ns\": 1, \"since_ns\": 1}");
	write_state("garbage", "this is not json");
	write_state("bad name", "{\"state\": \"failed\"}");

	struct seer_ctx ctx;
	char err[1024];
	ctx_init(&ctx, MISSING_AGENT);
	int r = seer_ctx_open(&ctx, err, sizeof(err));
	CHECK(r == 0, "reopen: %d %s", r, err);
	if (r)
		return;
	CHECK(seer_ctx_start(&ctx) == 0, "start");
	static const struct {
		const char *name;
		enum sb_state st;
		const char *reason;
	} want[] = {
		{"n", SB_NEW, NULL},
		{"f", SB_TERMINATED, "terminated by ctl"},
		{"f2", SB_FAILED, MISSING_AGENT},
		{"sec", SB_FAILED, NULL},
		{"crash-prov", SB_FAILED, "seerfs stopped while provisioning"},
		{"crash-term", SB_TERMINATED, "seerfs stopped while terminating"},
		{"crash-run", SB_FAILED, "could not be read"},
		{"garbage", SB_NEW, NULL},
	};
	for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
		struct sandbox *sb = sandbox_get(&ctx, want[i].name);
		CHECK(sb != NULL, "%s not loaded", want[i].name);
		if (!sb)
			continue;
		enum sb_state st = settle(sb, 2);
		CHECK(st == want[i].st, "%s: %s, want %s", want[i].name, sb_state_name(st), sb_state_name(want[i].st));
		if (want[i].reason)
			CHECK(has(sb->reason, want[i].reason), "%s: reason %s", want[i].name, nn(sb->reason));
		sandbox_put(sb);
	}
	struct sandbox *sb = sandbox_get(&ctx, "f");
	if (sb) {
		char *c = sandbox_config_text(sb);
		CHECK(!strcmp(c, "{\"timeout\": 78}"), "config of f after reload: %s", nn(c));
		free(c);
		c = sandbox_error_text(sb);
		CHECK(has(c, "cannot terminate a sandbox that is terminated"), "error of f after reload: %s", nn(c));
		free(c);
		sandbox_put(sb);
	}
	sb = sandbox_get(&ctx, "n");
	if (sb) {
		char *c = sandbox_error_text(sb);
		CHECK(has(c, "not a valid snapshot name"), "error of n after reload: %s", nn(c));
		free(c);
		sandbox_put(sb);
	}
	CHECK(sandbox_get(&ctx, "bad name") == NULL, "a directory with a bad name was loaded");

	/* A second context on the same state directory is refused, naming the holder. */
	struct seer_ctx two;
	ctx_init(&two, MISSING_AGENT);
	r = seer_ctx_open(&two, err, sizeof(err));
	char pid[32];
	snprintf(pid, sizeof(pid), "pid %d", (int)getpid());
	CHECK(r == -EBUSY, "second open: %d", r);
	CHECK(has(err, pid) && has(err, "in use by another seerfs"), "second open message: %s", err);
	ctx_strings_free(&two);

	seer_ctx_close(&ctx);
	ctx_strings_free(&ctx);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(statedir, sizeof(statedir), "%s/seerfs-unit-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(statedir)) {
		perror("mkdtemp");
		return 2;
	}
	struct seer_ctx ctx;
	char err[1024];
	ctx_init(&ctx, MISSING_AGENT);
	int r = seer_ctx_open(&ctx, err, sizeof(err));
	CHECK(r == 0, "open: %d %s", r, err);
	if (r == 0) {
		CHECK(file_exists(statedir, "sandboxes") && file_exists(statedir, "lock"), "state dir layout");
		CHECK(seer_ctx_start(&ctx) == 0, "start");
		test_names(&ctx);
		test_new(&ctx);
		test_failed(&ctx);
		test_unsupported_and_secrets(&ctx);
		seer_ctx_close(&ctx);
	}
	ctx_strings_free(&ctx);
	if (r == 0)
		test_reload();
	walk_rm(statedir);
	return check_done("test_sandbox");
}
