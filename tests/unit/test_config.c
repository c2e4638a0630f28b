/*
 * test_config.c - unit tests of core/config.c: the defaults, every field,
 * every error with the words its message must hold, JSON syntax errors with
 * line and column, the size limit, the precheck of partial texts, and the
 * diff that decides whether a running sandbox can take a new config.
 */
#include "core/config.h"
#include "core/lib/util.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static char err[1024];

/* Parses text; on success the config is kept in *c (the caller frees it). */
static int parse(const char *text, struct seer_config *c)
{
	err[0] = '\0';
	return seer_config_parse(text, strlen(text), c, err, sizeof(err));
}

/* Expects text to be refused with -EINVAL and a message holding every one
 * of the given words. */
static void refused(int line, const char *text, const char *w1, const char *w2)
{
	struct seer_config c;
	int r = parse(text, &c);
	CHECK(r == -EINVAL, "line %d: %s: got %d (%s)", line, text, r, err);
	if (r == 0)
		seer_config_free(&c);
	CHECK(has(err, w1), "line %d: %s: message \"%s\" lacks \"%s\"", line, text, err, w1);
	if (w2)
		CHECK(has(err, w2), "line %d: %s: message \"%s\" lacks \"%s\"", line, text, err, w2);
}
#define REFUSED(text, w1, w2) refused(__LINE__, text, w1, w2)

/* Expects text to be accepted. */
static void accepted(int line, const char *text)
{
	struct seer_config c;
	int r = parse(text, &c);
	CHECK(r == 0, "line %d: %s: got %d (%s)", line, text, r, err);
	if (r == 0)
		seer_config_free(&c);
}
#define ACCEPTED(text) accepted(__LINE__, text)

static void test_defaults(void)
{
	struct seer_config c;
	int r = parse("{}", &c);
	CHECK(r == 0, "{} refused: %s", err);
	if (r)
		return;
	CHECK(!strcmp(c.provider, "local"), "provider %s", c.provider);
	CHECK(c.gpu == NULL, "gpu %s", c.gpu);
	CHECK(c.gpu_count == 1, "gpu_count %d", c.gpu_count);
	CHECK(c.timeout == 3600, "timeout %lld", (long long)c.timeout);
	CHECK(c.exec_timeout == 0, "exec_timeout %lld", (long long)c.exec_timeout);
	CHECK(c.output_cap == 64LL << 20, "output_cap %lld", (long long)c.output_cap);
	CHECK(c.network == 1, "network %d", c.network);
	CHECK(c.debug == 0, "debug %d", c.debug);
	CHECK(c.execution_mode == SEER_MODE_CLI, "execution_mode %d", c.execution_mode);
	CHECK(c.on_timeout == SEER_TIMEOUT_TERMINATE, "on_timeout %d", c.on_timeout);
	CHECK(c.snapshot == NULL && c.python_version == NULL, "snapshot/python_version set");
	CHECK(c.n_models == 0 && c.n_repos == 0 && c.n_python_packages == 0 && c.n_system_packages == 0 &&
		      c.n_secrets == 0 && c.n_env == 0 && c.n_local_files == 0 && c.n_local_dirs == 0,
	      "a list is not empty");
	seer_config_free(&c);

	/* seer_config_init gives the same defaults without parsing. */
	seer_config_init(&c);
	CHECK(!strcmp(c.provider, "local") && c.timeout == 3600 && c.gpu_count == 1 && c.network == 1,
	      "seer_config_init defaults differ");
	seer_config_free(&c);

	/* Whitespace around the object is fine. */
	ACCEPTED(" \n\t{ }\r\n\n");
}

static void test_every_field(void)
{
	const char *text =
		"{\n"
		"  \"provider\": \"local\",\n"
		"  \"gpu\": \"H100\",\n"
		"  \"gpu_count\": 2,\n"
		"  \"models\": [\"org/plain\", {\"name\": \"google/gemma-2-9b\", \"var_name\": \"base\", \"revision\": \"v1\",\n"
		"              \"hidden\": true},\n"
		"             {\"name\": \"me/adapter\", \"is_peft\": true, \"base_model\": \"google/gemma-2-9b\"}],\n"
		"  \"repos\": [\"org/repo\", {\"url\": \"https://example.com/x.git\", \"install\": \"pip install -e .\",\n"
		"             \"branch\": \"dev\", \"dockerfile\": null}],\n"
		"  \"python_packages\": [\"torch\", \"numpy==1.26\"],\n"
		"  \"system_packages\": [\"jq\"],\n"
		"  \"python_version\": \"3.11\",\n"
		"  \"secrets\": [\"HF_TOKEN\", \"API_KEY_2\"],\n"
		"  \"env\": {\"SEED\": \"1\", \"EMPTY\": \"\", \"_X\": \"a b\"},\n"
		"  \"timeout\": 600,\n"
		"  \"exec_timeout\": 30,\n"
		"  \"output_cap\": 4096,\n"
		"  \"local_files\": [[\"./a.txt\", \"/workspace/a.txt\"]],\n"
		"  \"local_dirs\": [[\"/data\", \"/workspace/data\"], [\"rel\", \"/opt/rel\"]],\n"
		"  \"debug\": true,\n"
		"  \"execution_mode\": \"notebook\",\n"
		"  \"network\": false,\n"
		"  \"snapshot\": \"base-1.0\",\n"
		"  \"on_timeout\": \"snapshot\"\n"
		"}\n";
	struct seer_config c;
	int r = parse(text, &c);
	CHECK(r == 0, "full config refused: %s", err);
	if (r)
		return;
	CHECK(!strcmp(c.provider, "local"), "provider");
	CHECK(c.gpu && !strcmp(c.gpu, "H100"), "gpu");
	CHECK(c.gpu_count == 2, "gpu_count");
	CHECK(c.n_models == 3, "n_models %zu", c.n_models);
	if (c.n_models == 3) {
		CHECK(!strcmp(c.models[0].name, "org/plain") && !strcmp(c.models[0].var_name, "model") &&
			      !strcmp(c.models[0].revision, "main") && !c.models[0].hidden && !c.models[0].is_peft,
		      "shorthand model and its defaults");
		CHECK(!strcmp(c.models[1].name, "google/gemma-2-9b") && !strcmp(c.models[1].var_name, "base") &&
			      !strcmp(c.models[1].revision, "v1") && c.models[1].hidden,
		      "model object");
		CHECK(c.models[2].is_peft && c.models[2].base_model && !strcmp(c.models[2].base_model, "google/gemma-2-9b"),
		      "peft model");
	}
	CHECK(c.n_repos == 2, "n_repos %zu", c.n_repos);
	if (c.n_repos == 2) {
		CHECK(!strcmp(c.repos[0].url, "org/repo") && !c.repos[0].install, "repo shorthand");
		CHECK(!strcmp(c.repos[1].url, "https://example.com/x.git") && !strcmp(c.repos[1].install, "pip install -e .") &&
			      !strcmp(c.repos[1].branch, "dev") && c.repos[1].dockerfile == NULL,
		      "repo object");
	}
	CHECK(c.n_python_packages == 2 && !strcmp(c.python_packages[1], "numpy==1.26"), "python_packages");
	CHECK(c.n_system_packages == 1 && !strcmp(c.system_packages[0], "jq"), "system_packages");
	CHECK(c.python_version && !strcmp(c.python_version, "3.11"), "python_version");
	CHECK(c.n_secrets == 2 && !strcmp(c.secrets[0], "HF_TOKEN") && !strcmp(c.secrets[1], "API_KEY_2"), "secrets");
	CHECK(c.n_env == 3, "n_env %zu", c.n_env);
	int seen = 0;
	for (size_t i = 0; i < c.n_env; i++) {
		if (!strcmp(c.env[i].key, "SEED") && !strcmp(c.env[i].value, "1"))
			seen |= 1;
		if (!strcmp(c.env[i].key, "EMPTY") && !strcmp(c.env[i].value, ""))
			seen |= 2;
		if (!strcmp(c.env[i].key, "_X") && !strcmp(c.env[i].value, "a b"))
			seen |= 4;
	}
	CHECK(seen == 7, "env entries %d", seen);
	CHECK(c.timeout == 600 && c.exec_timeout == 30 && c.output_cap == 4096, "numbers");
	CHECK(c.n_local_files == 1 && !strcmp(c.local_files[0].host, "./a.txt") &&
		      !strcmp(c.local_files[0].sandbox, "/workspace/a.txt"),
	      "local_files");
	CHECK(c.n_local_dirs == 2 && !strcmp(c.local_dirs[1].host, "rel") && !strcmp(c.local_dirs[1].sandbox, "/opt/rel"),
	      "local_dirs");
	CHECK(c.debug == 1 && c.network == 0, "booleans");
	CHECK(c.execution_mode == SEER_MODE_NOTEBOOK, "execution_mode");
	CHECK(c.snapshot && !strcmp(c.snapshot, "base-1.0"), "snapshot");
	CHECK(c.on_timeout == SEER_TIMEOUT_SNAPSHOT, "on_timeout");
	seer_config_free(&c);

	/* Values that are allowed at the edges of their ranges, and nulls. */
	ACCEPTED("{\"gpu\": null, \"python_version\": null, \"snapshot\": null}");
	ACCEPTED("{\"timeout\": 1}");
	ACCEPTED("{\"timeout\": 31622400}");
	ACCEPTED("{\"exec_timeout\": 0}");
	ACCEPTED("{\"gpu_count\": 64}");
	ACCEPTED("{\"output_cap\": 1099511627776}");
	ACCEPTED("{\"execution_mode\": \"cli\", \"on_timeout\": \"terminate\", \"network\": true, \"debug\": false}");
	ACCEPTED("{\"models\": [], \"repos\": [], \"secrets\": [], \"env\": {}, \"local_files\": []}");
	ACCEPTED("{\"provider\": \"my-ssh.box_1\"}");   /* a named provider: checked when applied */
	ACCEPTED("{\"local_dirs\": [[\"/d\", \"/workspace/a..b\"]]}");
}

static void test_field_errors(void)
{
	/* unknown fields and the top level */
	REFUSED("{\"bogus\": 1}", "unknown field \"bogus\"", NULL);
	REFUSED("{\"Timeout\": 5}", "unknown field \"Timeout\"", NULL);
	REFUSED("[]", "JSON object", "an array");
	REFUSED("\"text\"", "JSON object", "a string");
	REFUSED("[1, 2]", "JSON object", "an array");
	{
		/* A number or null alone is complete, though json-c waits for more. */
		struct seer_config c;
		int r = parse("5", &c);
		CHECK(r == -EINVAL, "5 accepted");
		CHECK(has(err, "JSON object"), "a bare number is named as not an object");
		r = parse("null", &c);
		CHECK(r == -EINVAL, "null accepted");
	}
	REFUSED("", "empty", NULL);
	REFUSED("   \n", "JSON syntax error", NULL);

	/* provider */
	REFUSED("{\"provider\": 5}", "\"provider\"", "expected a string");
	REFUSED("{\"provider\": \"\"}", "\"provider\"", "must not be empty");
	REFUSED("{\"provider\": \"no/slash\"}", "\"provider\"", "not a provider name");
	REFUSED("{\"provider\": null}", "\"provider\"", "expected a string");

	/* gpu, gpu_count */
	REFUSED("{\"gpu\": 100}", "\"gpu\"", "expected a string");
	REFUSED("{\"gpu\": \"\"}", "\"gpu\"", "must not be empty");
	REFUSED("{\"gpu\": \"A\\u0000B\"}", "\"gpu\"", "NUL");
	REFUSED("{\"gpu_count\": 0}", "\"gpu_count\"", "out of range");
	REFUSED("{\"gpu_count\": 65}", "\"gpu_count\"", "out of range");
	REFUSED("{\"gpu_count\": \"2\"}", "\"gpu_count\"", "expected a whole number");
	REFUSED("{\"gpu_count\": 1.5}", "\"gpu_count\"", "expected a whole number");

	/* timeout and the other numbers */
	REFUSED("{\"timeout\": 0}", "\"timeout\"", "out of range");
	REFUSED("{\"timeout\": -5}", "\"timeout\"", "out of range");
	REFUSED("{\"timeout\": 31622401}", "\"timeout\"", "out of range");
	REFUSED("{\"timeout\": \"600\"}", "\"timeout\"", "expected a whole number, got a string");
	REFUSED("{\"timeout\": 600.5}", "\"timeout\"", "got a number");
	REFUSED("{\"timeout\": 1e3}", "\"timeout\"", "expected a whole number");
	REFUSED("{\"timeout\": true}", "\"timeout\"", "got a boolean");
	REFUSED("{\"timeout\": null}", "\"timeout\"", "got null");
	REFUSED("{\"timeout\": 99999999999999999999999}", "\"timeout\"", NULL);
	REFUSED("{\"timeout\": -99999999999999999999999}", "\"timeout\"", NULL);
	REFUSED("{\"exec_timeout\": -1}", "\"exec_timeout\"", "out of range");
	REFUSED("{\"exec_timeout\": []}", "\"exec_timeout\"", "got an array");
	REFUSED("{\"output_cap\": 4095}", "\"output_cap\"", "out of range");
	REFUSED("{\"output_cap\": 1099511627777}", "\"output_cap\"", "out of range");

	/* booleans and enums */
	REFUSED("{\"network\": \"no\"}", "\"network\"", "expected true or false");
	REFUSED("{\"network\": 0}", "\"network\"", "expected true or false");
	REFUSED("{\"debug\": null}", "\"debug\"", "expected true or false");
	REFUSED("{\"execution_mode\": \"batch\"}", "\"execution_mode\"", "\"cli\", \"notebook\"");
	REFUSED("{\"execution_mode\": 1}", "\"execution_mode\"", "expected a string");
	REFUSED("{\"on_timeout\": \"pause\"}", "\"on_timeout\"", "\"terminate\", \"snapshot\"");
	REFUSED("{\"snapshot\": \"a/b\"}", "\"snapshot\"", "not a snapshot name");
	REFUSED("{\"snapshot\": \"..\"}", "\"snapshot\"", "not a snapshot name");
	REFUSED("{\"python_version\": 3.11}", "\"python_version\"", "expected a string");

	/* string lists */
	REFUSED("{\"python_packages\": \"torch\"}", "\"python_packages\"", "expected an array of strings");
	REFUSED("{\"python_packages\": [\"torch\", 5]}", "\"python_packages[1]\"", "expected a string");
	REFUSED("{\"system_packages\": [\"\"]}", "\"system_packages[0]\"", "must not be empty");
	REFUSED("{\"secrets\": [\"1ABC\"]}", "\"secrets[0]\"", "not a valid environment variable name");
	REFUSED("{\"secrets\": [\"OK\", \"BAD-NAME\"]}", "\"secrets[1]\"", "not a valid environment variable name");
	REFUSED("{\"secrets\": {\"A\": \"b\"}}", "\"secrets\"", "expected an array");

	/* env */
	REFUSED("{\"env\": [\"A=1\"]}", "\"env\"", "expected an object");
	REFUSED("{\"env\": {\"A\": 1}}", "\"env.A\"", "expected a string");
	REFUSED("{\"env\": {\"A B\": \"1\"}}", "\"env.A B\"", "not a valid environment variable name");
	REFUSED("{\"env\": {\"\": \"1\"}}", "\"env.\"", "not a valid environment variable name");
	REFUSED("{\"env\": {\"9X\": \"1\"}}", "\"env.9X\"", "not a valid environment variable name");
	REFUSED("{\"env\": {\"A\": null}}", "\"env.A\"", "expected a string");

	/* local_files, local_dirs */
	REFUSED("{\"local_files\": {}}", "\"local_files\"", "pairs");
	REFUSED("{\"local_files\": [\"a\"]}", "\"local_files[0]\"", "pair");
	REFUSED("{\"local_files\": [[\"a\"]]}", "\"local_files[0]\"", "pair");
	REFUSED("{\"local_files\": [[\"a\", \"/b\", \"/c\"]]}", "\"local_files[0]\"", "pair");
	REFUSED("{\"local_files\": [[\"a\", \"rel/path\"]]}", "\"local_files[0]\"", "must be absolute");
	REFUSED("{\"local_dirs\": [[\"a\", \"/workspace/../etc\"]]}", "\"local_dirs[0]\"", "\"..\"");
	REFUSED("{\"local_dirs\": [[\"a\", \"/workspace/..\"]]}", "\"local_dirs[0]\"", "\"..\"");
	REFUSED("{\"local_dirs\": [[\"\", \"/x\"]]}", "\"local_dirs[0]\"", "must not be empty");
	REFUSED("{\"local_dirs\": [[1, \"/x\"]]}", "\"local_dirs[0]\"", "expected a string");

	/* models */
	REFUSED("{\"models\": \"org/name\"}", "\"models\"", "expected an array");
	REFUSED("{\"models\": [5]}", "\"models[0]\"", "expected an object or a string");
	REFUSED("{\"models\": [\"noslash\"]}", "\"models[0].name\"", "org/name");
	REFUSED("{\"models\": [\"a/b/c\"]}", "\"models[0].name\"", "org/name");
	REFUSED("{\"models\": [\"/b\"]}", "\"models[0].name\"", "org/name");
	REFUSED("{\"models\": [\"a/\"]}", "\"models[0].name\"", "org/name");
	REFUSED("{\"models\": [\"a/..\"]}", "\"models[0].name\"", "org/name");
	REFUSED("{\"models\": [{\"var_name\": \"m\"}]}", "\"models[0].name\"", "required");
	REFUSED("{\"models\": [{\"name\": \"a/b\", \"size\": 1}]}", "\"models[0]\"", "unknown key \"size\"");
	REFUSED("{\"models\": [{\"name\": \"a/b\", \"is_peft\": true}]}", "\"models[0].base_model\"", "required when is_peft");
	REFUSED("{\"models\": [{\"name\": \"a/b\", \"hidden\": \"yes\"}]}", "\"models[0].hidden\"", "expected true or false");
	REFUSED("{\"models\": [\"a/b\", {\"name\": 5}]}", "\"models[1].name\"", "expected a string");
	REFUSED("{\"models\": [{\"name\": \"a/b\", \"var_name\": \"\"}]}", "\"models[0].var_name\"", "must not be empty");

	/* repos */
	REFUSED("{\"repos\": {}}", "\"repos\"", "expected an array");
	REFUSED("{\"repos\": [true]}", "\"repos[0]\"", "expected an object or a string");
	REFUSED("{\"repos\": [{\"install\": \"make\"}]}", "\"repos[0].url\"", "required");
	REFUSED("{\"repos\": [{\"url\": \"a/b\", \"tag\": \"v1\"}]}", "\"repos[0]\"", "unknown key \"tag\"");
	REFUSED("{\"repos\": [{\"url\": \"a/b\", \"branch\": 1}]}", "\"repos[0].branch\"", "expected a string");

	/* The first bad field is reported even when others are fine. */
	REFUSED("{\"timeout\": 600, \"env\": {\"A\": \"1\"}, \"network\": \"off\"}", "\"network\"", NULL);
}

static void test_syntax_errors(void)
{
	REFUSED("{\"timeout\": 5,}", "JSON syntax error", "line 1");
	REFUSED("{\n  \"timeout\": 5,\n  oops\n}\n", "JSON syntax error at line 3", "column");
	REFUSED("{\"timeout\": 5} trailing", "JSON syntax error", "line 1, column 16");
	REFUSED("{}\n\n  x", "JSON syntax error", "line 3, column 3");
	REFUSED("{} {}", "JSON syntax error", "line 1, column 4");
	REFUSED("{\"timeout\": 5", "ends early", "line 1");
	REFUSED("{\"env\": {\"A\": \"unterminated", "ends early", NULL);
	REFUSED("{\"gpu\": 'A100'}", "JSON syntax error", NULL);    /* strict JSON: no single quotes */
	REFUSED("{\"timeout\": 5 /* c */}", "JSON syntax error", NULL); /* strict JSON: no comments */
	REFUSED("{\"a\": 1}\0{}", "unknown field", NULL);               /* strlen stops at the NUL */

	/* A NUL byte inside the text is refused as such. */
	struct seer_config c;
	static const char nul[] = "{\"timeout\": 5}\0";
	int r = seer_config_parse(nul, sizeof(nul) - 1, &c, err, sizeof(err));
	CHECK(r == -EINVAL && has(err, "NUL"), "NUL byte: %d %s", r, err);
	if (r == 0)
		seer_config_free(&c);

	/* The column counts from 1 and restarts after each newline. */
	r = parse("{\n\"a\":\n]", &c);
	CHECK(r == -EINVAL && has(err, "line 3, column 1"), "line/column: %s", err);
	if (r == 0)
		seer_config_free(&c);
}

static void test_size_limit(void)
{
	struct seer_config c;
	/* Exactly the limit: valid (an object padded with spaces). */
	size_t n = SEER_CONFIG_MAX;
	char *big = malloc(n + 2);
	memset(big, ' ', n + 1);
	big[0] = '{';
	big[n - 1] = '}';
	big[n + 1] = '\0';
	int r = seer_config_parse(big, n, &c, err, sizeof(err));
	CHECK(r == 0, "config of exactly %zu bytes refused: %s", n, err);
	if (r == 0)
		seer_config_free(&c);
	/* One byte more: EFBIG, whatever the text. */
	big[n - 1] = ' ';
	big[n] = '}';
	r = seer_config_parse(big, n + 1, &c, err, sizeof(err));
	CHECK(r == -EFBIG, "config of %zu bytes: %d", n + 1, r);
	CHECK(has(err, "1048577") && has(err, "1048576"), "EFBIG message: %s", err);
	if (r == 0)
		seer_config_free(&c);
	r = seer_config_precheck(big, n + 1, err, sizeof(err));
	CHECK(r == -EFBIG, "precheck of %zu bytes: %d", n + 1, r);
	free(big);
}

static void test_precheck(void)
{
	/* Unfinished texts are not errors yet. */
	static const char *const partial[] = {
		"{", "{\"timeout\"", "{\"timeout\": ", "{\"timeout\": 5", "{\"timeout\": 5,", "{\"env\": {\"A\": \"x",
		"{\"bogus", "{\"network\": t", "{\"models\": [\"a/b\", ", " \n{\n", NULL};
	for (int i = 0; partial[i]; i++) {
		int r = seer_config_precheck(partial[i], strlen(partial[i]), err, sizeof(err));
		CHECK(r == 0, "precheck of partial text %s: %d (%s)", partial[i], r, err);
	}
	/* Complete and valid. */
	CHECK(seer_config_precheck("{}", 2, err, sizeof(err)) == 0, "precheck {}");
	CHECK(seer_config_precheck("{\"timeout\": 5}\n", 15, err, sizeof(err)) == 0, "precheck timeout");
	/* Already wrong, whatever follows. */
	static const char *const wrong[] = {
		"{\"timeout\": \"x\"}", "{\"bogus\": 1}", "]", "{\"a\" 1", "{} x", "[1, 2]", "{,", "nul!", NULL};
	for (int i = 0; wrong[i]; i++) {
		int r = seer_config_precheck(wrong[i], strlen(wrong[i]), err, sizeof(err));
		CHECK(r == -EINVAL && err[0], "precheck of wrong text %s: %d (%s)", wrong[i], r, err);
	}
	int r = seer_config_precheck("{\"timeout\": 0}", 14, err, sizeof(err));
	CHECK(r == -EINVAL && has(err, "\"timeout\"") && has(err, "out of range"), "precheck message: %s", err);
}

static void diff_is(int line, const char *a, const char *b, const char *want)
{
	char buf[512];
	memset(buf, 'x', sizeof(buf));
	seer_config_diff(a, b, buf, sizeof(buf));
	CHECK(!strcmp(buf, want), "line %d: diff(%s, %s) = \"%s\", want \"%s\"", line, a, b, buf, want);
}
#define DIFF_IS(a, b, want) diff_is(__LINE__, a, b, want)

static void test_diff(void)
{
	DIFF_IS("{}", "{}", "");
	DIFF_IS("{\"timeout\": 5}", "{ \"timeout\" : 5 }", "");
	DIFF_IS("{\"timeout\": 5, \"gpu\": null}", "{\"gpu\": null, \"timeout\": 5}", "");
	DIFF_IS("{\"timeout\": 5}", "{\"timeout\": 6}", "timeout");
	DIFF_IS("{}", "{\"timeout\": 3600}", "timeout");   /* a default written out still counts as a change */
	DIFF_IS("{}", "{\"gpu\": null}", "");             /* null is the same as absent */
	DIFF_IS("{\"env\": {\"A\": \"1\"}}", "{\"env\": {\"A\": \"2\"}}", "env");
	DIFF_IS("{\"timeout\": 5}", "{\"gpu\": \"A100\", \"timeout\": 9}", "gpu,timeout");
	DIFF_IS("{\"network\": true}", "{}", "network");
	DIFF_IS("{\"models\": [\"a/b\"]}", "{\"models\": [\"a/b\", \"c/d\"]}", "models");
	DIFF_IS("{\"on_timeout\": \"terminate\", \"output_cap\": 4096, \"exec_timeout\": 1}",
		"{\"on_timeout\": \"snapshot\", \"output_cap\": 8192, \"exec_timeout\": 2}", "exec_timeout,output_cap,on_timeout");
	DIFF_IS("{}",
		"{\"provider\": \"local\", \"gpu\": \"A\", \"gpu_count\": 1, \"models\": [], \"repos\": [], \"python_packages\": [],"
		" \"system_packages\": [], \"python_version\": \"3\", \"secrets\": [], \"env\": {}, \"timeout\": 1,"
		" \"exec_timeout\": 0, \"output_cap\": 4096, \"local_files\": [], \"local_dirs\": [], \"debug\": false,"
		" \"network\": true, \"execution_mode\": \"cli\", \"snapshot\": null, \"on_timeout\": \"terminate\"}",
		"provider,gpu,gpu_count,models,repos,python_packages,system_packages,python_version,secrets,env,timeout,"
		"exec_timeout,output_cap,local_files,local_dirs,debug,network,execution_mode,on_timeout");

	/* A small buffer holds whole names only, and always a terminated string. */
	char small[12];
	seer_config_diff("{}", "{\"gpu\": \"A\", \"timeout\": 1, \"network\": false}", small, sizeof(small));
	CHECK(!strcmp(small, "gpu,timeout"), "diff into a small buffer: \"%s\"", small);
	char tiny[4];
	seer_config_diff("{}", "{\"timeout\": 1}", tiny, sizeof(tiny));
	CHECK(strlen(tiny) < sizeof(tiny), "diff into a tiny buffer is not terminated");
}

static void test_live_fields(void)
{
	static const char *const live[] = {"timeout", "exec_timeout", "env", "output_cap", "on_timeout", NULL};
	static const char *const fixed[] = {"provider", "gpu", "gpu_count", "models", "repos", "python_packages",
					   "system_packages", "python_version", "secrets", "local_files", "local_dirs",
					   "debug", "network", "execution_mode", "snapshot", "", "Timeout", NULL};
	for (int i = 0; live[i]; i++)
		CHECK(seer_config_live_field(live[i]), "%s should be live", live[i]);
	for (int i = 0; fixed[i]; i++)
		CHECK(!seer_config_live_field(fixed[i]), "%s should not be live", fixed[i]);
}

static void test_small_error_buffer(void)
{
	struct seer_config c;
	char e[8];
	memset(e, 'x', sizeof(e));
	int r = seer_config_parse("{\"timeout\": \"long text here\"}", 29, &c, e, sizeof(e));
	CHECK(r == -EINVAL && strlen(e) == sizeof(e) - 1, "small error buffer: %d \"%.8s\"", r, e);
	r = seer_config_parse("{\"timeout\": ", 12, &c, e, sizeof(e));
	CHECK(r == -EINVAL && strlen(e) < sizeof(e), "small error buffer, syntax error");
}

/* A failed parse leaves nothing to free and can be followed by a good one. */
static void test_repeat(void)
{
	struct seer_config c;
	for (int i = 0; i < 100; i++) {
		CHECK(parse("{\"models\": [\"a/b\", \"bad\"], \"env\": {\"A\": \"1\"}}", &c) == -EINVAL, "repeat bad");
		CHECK(parse("{\"env\": {\"A\": \"1\"}, \"secrets\": [\"B\"], \"models\": [\"a/b\"]}", &c) == 0, "repeat good");
		seer_config_free(&c);
	}
	/* Duplicate keys: the JSON parser keeps the last one. */
	if (parse("{\"timeout\": 5, \"timeout\": 7}", &c) == 0) {
		CHECK(c.timeout == 7, "duplicate key: timeout %lld", (long long)c.timeout);
		seer_config_free(&c);
	}
}

/* Invalid UTF-8 in any string is refused, naming the field (#15): such a
 * value would reach a sandbox's environment or a path as bytes no reader
 * expects. Well-formed multibyte text is taken. */
static void test_utf8(void)
{
	REFUSED("{\"env\": {\"SEED\": \"a\xff\"}}", "env.SEED", "UTF-8");
	REFUSED("{\"env\": {\"S\": \"\xc0\xaf\"}}", "env.S", "UTF-8");            /* overlong '/' */
	REFUSED("{\"env\": {\"S\": \"\xed\xa0\x80\"}}", "env.S", "UTF-8");        /* a surrogate */
	REFUSED("{\"env\": {\"S\": \"\xf4\x90\x80\x80\"}}", "env.S", "UTF-8");   /* past U+10FFFF */
	REFUSED("{\"env\": {\"S\": \"ab\xe2\x82\"}}", "env.S", "UTF-8");            /* cut short */
	REFUSED("{\"python_packages\": [\"numpy\", \"x\x80\"]}", "python_packages[1]", "UTF-8");
	REFUSED("{\"models\": [\"org/\xfe\"]}", "models[0]", "UTF-8");
	REFUSED("{\"repos\": [\"file:///r\xff\"]}", "repos[0]", "UTF-8");
	REFUSED("{\"local_files\": [[\"/tmp/\xff\", \"/workspace/x\"]]}", "local_files[0]", "UTF-8");
	ACCEPTED("{\"env\": {\"S\": \"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}}");
	CHECK(utf8_invalid_at("ok\xff", 3) == 2, "offset of the bad byte");
	CHECK(utf8_invalid_at("", 0) == (size_t)-1, "empty text is valid");
}

/* The container fields: image, memory (MiB or a size string), cpu. */
static void test_container_fields(void)
{
	struct seer_config c;
	CHECK(parse("{\"image\": \"seerfs-base:bookworm\", \"memory\": \"512m\", \"cpu\": 1.5}", &c) == 0, "%s", err);
	CHECK(c.image && !strcmp(c.image, "seerfs-base:bookworm"), "image %s", c.image ? c.image : "(null)");
	CHECK(c.memory == 512LL << 20, "memory %lld", (long long)c.memory);
	CHECK(c.cpu_milli == 1500, "cpu %lld", (long long)c.cpu_milli);
	seer_config_free(&c);
	CHECK(parse("{\"memory\": 2048, \"cpu\": 2}", &c) == 0, "%s", err);
	CHECK(c.memory == 2048LL << 20 && c.cpu_milli == 2000 && !c.image, "memory %lld cpu %lld", (long long)c.memory,
	      (long long)c.cpu_milli);
	seer_config_free(&c);
	CHECK(parse("{\"memory\": \"4G\", \"image\": \"registry.example:5000/org/img@sha256:abc\"}", &c) == 0, "%s", err);
	CHECK(c.memory == 4LL << 30, "memory %lld", (long long)c.memory);
	seer_config_free(&c);
	CHECK(parse("{}", &c) == 0 && !c.image && !c.memory && !c.cpu_milli, "defaults");
	seer_config_free(&c);
	REFUSED("{\"image\": \"-rm\"}", "\"image\"", "image reference");
	REFUSED("{\"image\": \"a b\"}", "\"image\"", "image reference");
	REFUSED("{\"image\": 3}", "\"image\"", NULL);
	REFUSED("{\"memory\": \"lots\"}", "\"memory\"", "not a size");
	REFUSED("{\"memory\": \"-5m\"}", "\"memory\"", "not a size");
	REFUSED("{\"memory\": 1}", "\"memory\"", "6 MiB");
	REFUSED("{\"memory\": true}", "\"memory\"", NULL);
	REFUSED("{\"cpu\": 0}", "\"cpu\"", "out of range");
	REFUSED("{\"cpu\": \"2\"}", "\"cpu\"", "number of CPUs");
	char diff[256];
	seer_config_diff("{\"image\": \"a\"}", "{\"image\": \"b\", \"cpu\": 1}", diff, sizeof(diff));
	CHECK(!strcmp(diff, "image,cpu"), "diff %s", diff);
}

int main(void)
{
	test_container_fields();
	test_defaults();
	test_utf8();
	test_every_field();
	test_field_errors();
	test_syntax_errors();
	test_size_limit();
	test_precheck();
	test_diff();
	test_live_fields();
	test_small_error_buffer();
	test_repeat();
	return check_done("test_config");
}
