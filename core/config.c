/*
 * config.c - parse and check config.json (Seer's SandboxConfig fields).
 *
 * Each field has one checker; an unknown field, a wrong type or a value out of
 * range stops the parse with a message naming the field. Nothing is applied
 * until the whole text is valid, so a bad write never loses the old config.
 */
#include "core/config.h"
#include "core/lib/util.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_TIMEOUT (366LL * 24 * 3600)

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static const char *type_name(struct json_object *o)
{
	switch (json_object_get_type(o)) {
	case json_type_null: return "null";
	case json_type_boolean: return "a boolean";
	case json_type_double: return "a number";
	case json_type_int: return "an integer";
	case json_type_object: return "an object";
	case json_type_array: return "an array";
	case json_type_string: return "a string";
	}
	return "?";
}

/* A string field; empty strings are refused where they make no sense. */
static int get_str(struct json_object *o, const char *field, int allow_empty, char **out, char *err, size_t n)
{
	if (!json_object_is_type(o, json_type_string))
		return fail(err, n, "field \"%s\": expected a string, got %s", field, type_name(o));
	const char *s = json_object_get_string(o);
	if (!allow_empty && !*s)
		return fail(err, n, "field \"%s\": must not be empty", field);
	if (strlen(s) != (size_t)json_object_get_string_len(o))
		return fail(err, n, "field \"%s\": must not contain NUL bytes", field);
	size_t bad = utf8_invalid_at(s, strlen(s));
	if (bad != (size_t)-1)
		return fail(err, n, "field \"%s\": is not valid UTF-8 (byte %zu); write the text as UTF-8", field, bad);
	*out = xstrdup(s);
	return 0;
}

static int get_opt_str(struct json_object *o, const char *field, char **out, char *err, size_t n)
{
	if (json_object_is_type(o, json_type_null)) {
		*out = NULL;
		return 0;
	}
	return get_str(o, field, 0, out, err, n);
}

static int get_bool(struct json_object *o, const char *field, int *out, char *err, size_t n)
{
	if (!json_object_is_type(o, json_type_boolean))
		return fail(err, n, "field \"%s\": expected true or false, got %s", field, type_name(o));
	*out = json_object_get_boolean(o);
	return 0;
}

static int get_int(struct json_object *o, const char *field, int64_t lo, int64_t hi, int64_t *out, char *err, size_t n)
{
	if (!json_object_is_type(o, json_type_int))
		return fail(err, n, "field \"%s\": expected a whole number, got %s", field, type_name(o));
	errno = 0;
	int64_t v = json_object_get_int64(o);
	if (errno == ERANGE || v < lo || v > hi)
		return fail(err, n, "field \"%s\": %s is out of range (%lld to %lld)", field,
			    json_object_to_json_string(o), (long long)lo, (long long)hi);
	*out = v;
	return 0;
}

static int env_name_valid(const char *s)
{
	if (!*s || (*s >= '0' && *s <= '9'))
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_'))
			return 0;
	return 1;
}

static int get_str_array(struct json_object *o, const char *field, char ***out, size_t *count, int env_names,
			 char *err, size_t n)
{
	if (!json_object_is_type(o, json_type_array))
		return fail(err, n, "field \"%s\": expected an array of strings, got %s", field, type_name(o));
	size_t len = json_object_array_length(o);
	char **v = xcalloc(len + 1, sizeof(char *));
	*out = v;
	*count = 0;
	for (size_t i = 0; i < len; i++) {
		struct json_object *e = json_object_array_get_idx(o, i);
		char name[128];
		snprintf(name, sizeof(name), "%s[%zu]", field, i);
		int r = get_str(e, name, 0, &v[i], err, n);
		if (r < 0)
			return r;
		(*count)++;
		if (env_names && !env_name_valid(v[i]))
			return fail(err, n, "field \"%s\": \"%s\" is not a valid environment variable name", name, v[i]);
	}
	return 0;
}

static int get_pairs(struct json_object *o, const char *field, struct seer_pair **out, size_t *count, char *err, size_t n)
{
	if (!json_object_is_type(o, json_type_array))
		return fail(err, n, "field \"%s\": expected an array of [host path, sandbox path] pairs, got %s", field,
			    type_name(o));
	size_t len = json_object_array_length(o);
	struct seer_pair *v = xcalloc(len + 1, sizeof(*v));
	*out = v;
	*count = 0;
	for (size_t i = 0; i < len; i++) {
		struct json_object *e = json_object_array_get_idx(o, i);
		char name[128];
		snprintf(name, sizeof(name), "%s[%zu]", field, i);
		if (!json_object_is_type(e, json_type_array) || json_object_array_length(e) != 2)
			return fail(err, n, "field \"%s\": expected a pair [\"host path\", \"/sandbox/path\"]", name);
		(*count)++;
		int r = get_str(json_object_array_get_idx(e, 0), name, 0, &v[i].host, err, n);
		if (r == 0)
			r = get_str(json_object_array_get_idx(e, 1), name, 0, &v[i].sandbox, err, n);
		if (r < 0)
			return r;
		if (v[i].sandbox[0] != '/')
			return fail(err, n, "field \"%s\": the sandbox path \"%s\" must be absolute", name, v[i].sandbox);
		if (strstr(v[i].sandbox, "/../") || str_endswith(v[i].sandbox, "/.."))
			return fail(err, n, "field \"%s\": the sandbox path \"%s\" must not contain \"..\"", name,
				    v[i].sandbox);
	}
	return 0;
}

/* Checks that every key of an object entry is one of `known`. */
static int check_keys(struct json_object *o, const char *field, const char *const *known, char *err, size_t n);

/* "serve": [{"file": "/workspace/interface.py", "name": "model_tools"}] */
static int get_serve(struct json_object *o, struct seer_config *c, char *err, size_t n)
{
	static const char *const keys[] = {"file", "name", NULL};
	if (!json_object_is_type(o, json_type_array))
		return fail(err, n, "field \"serve\": expected an array of {\"file\": PATH, \"name\": NAME}, got %s",
			    type_name(o));
	size_t len = json_object_array_length(o);
	c->serve = xcalloc(len + 1, sizeof(*c->serve));
	c->n_serve = 0;
	for (size_t i = 0; i < len; i++) {
		struct json_object *e = json_object_array_get_idx(o, i), *f, *nm;
		char name[64];
		snprintf(name, sizeof(name), "serve[%zu]", i);
		if (!json_object_is_type(e, json_type_object))
			return fail(err, n, "field \"%s\": expected {\"file\": PATH, \"name\": NAME}", name);
		int r = check_keys(e, name, keys, err, n);
		if (r < 0)
			return r;
		if (!json_object_object_get_ex(e, "file", &f) || !json_object_object_get_ex(e, "name", &nm))
			return fail(err, n, "field \"%s\": both \"file\" and \"name\" are required", name);
		c->n_serve++;
		struct seer_serve *sv = &c->serve[i];
		if ((r = get_str(f, name, 0, &sv->file, err, n)) < 0 || (r = get_str(nm, name, 0, &sv->name, err, n)) < 0)
			return r;
		if (sv->file[0] != '/')
			return fail(err, n, "field \"%s\": the file \"%s\" must be an absolute path in the sandbox", name,
				    sv->file);
		int ok = sv->name[0] && strlen(sv->name) <= 64 && !(sv->name[0] >= '0' && sv->name[0] <= '9');
		for (const char *p = sv->name; *p; p++)
			ok &= (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_';
		if (!ok)
			return fail(err, n, "field \"%s\": the name \"%s\" must be a Python identifier (letters, digits, _)",
				    name, sv->name);
		for (size_t k = 0; k < i; k++)
			if (!strcmp(c->serve[k].name, sv->name))
				return fail(err, n, "field \"%s\": the name \"%s\" is served twice", name, sv->name);
	}
	return 0;
}

static int check_keys(struct json_object *o, const char *field, const char *const *known, char *err, size_t n)
{
	json_object_object_foreach(o, key, val) {
		(void)val;
		int ok = 0;
		for (size_t i = 0; known[i]; i++)
			if (!strcmp(key, known[i]))
				ok = 1;
		if (!ok)
			return fail(err, n, "field \"%s\": unknown key \"%s\"", field, key);
	}
	return 0;
}

static int get_models(struct json_object *o, struct seer_config *c, char *err, size_t n)
{
	static const char *const keys[] = {"name", "var_name", "hidden", "is_peft", "base_model", "revision", NULL};
	if (!json_object_is_type(o, json_type_array))
		return fail(err, n, "field \"models\": expected an array of {\"name\": \"org/model\"} objects, got %s",
			    type_name(o));
	size_t len = json_object_array_length(o);
	c->models = xcalloc(len + 1, sizeof(*c->models));
	for (size_t i = 0; i < len; i++) {
		struct json_object *e = json_object_array_get_idx(o, i), *v;
		struct seer_model *m = &c->models[i];
		char f[64];
		snprintf(f, sizeof(f), "models[%zu]", i);
		c->n_models++;
		if (json_object_is_type(e, json_type_string)) {   /* shorthand: "org/name" */
			int r = get_str(e, f, 0, &m->name, err, n);
			if (r < 0)
				return r;
		} else {
			if (!json_object_is_type(e, json_type_object))
				return fail(err, n, "field \"%s\": expected an object or a string, got %s", f, type_name(e));
			int r = check_keys(e, f, keys, err, n);
			if (r < 0)
				return r;
			char sub[96];
			if (!json_object_object_get_ex(e, "name", &v))
				return fail(err, n, "field \"%s.name\": required (the model's hub ID, e.g. \"org/name\")", f);
			snprintf(sub, sizeof(sub), "%s.name", f);
			if ((r = get_str(v, sub, 0, &m->name, err, n)) < 0)
				return r;
			if (json_object_object_get_ex(e, "var_name", &v)) {
				snprintf(sub, sizeof(sub), "%s.var_name", f);
				if ((r = get_str(v, sub, 0, &m->var_name, err, n)) < 0)
					return r;
			}
			if (json_object_object_get_ex(e, "revision", &v)) {
				snprintf(sub, sizeof(sub), "%s.revision", f);
				if ((r = get_str(v, sub, 0, &m->revision, err, n)) < 0)
					return r;
			}
			if (json_object_object_get_ex(e, "base_model", &v)) {
				snprintf(sub, sizeof(sub), "%s.base_model", f);
				if ((r = get_opt_str(v, sub, &m->base_model, err, n)) < 0)
					return r;
			}
			if (json_object_object_get_ex(e, "hidden", &v)) {
				snprintf(sub, sizeof(sub), "%s.hidden", f);
				if ((r = get_bool(v, sub, &m->hidden, err, n)) < 0)
					return r;
			}
			if (json_object_object_get_ex(e, "is_peft", &v)) {
				snprintf(sub, sizeof(sub), "%s.is_peft", f);
				if ((r = get_bool(v, sub, &m->is_peft, err, n)) < 0)
					return r;
			}
		}
		const char *slash = strchr(m->name, '/');
		if (!slash || slash == m->name || !slash[1] || strchr(slash + 1, '/') || strstr(m->name, ".."))
			return fail(err, n, "field \"%s.name\": \"%s\" is not a hub model ID of the form \"org/name\"", f,
				    m->name);
		if (m->is_peft && !m->base_model)
			return fail(err, n, "field \"%s.base_model\": required when is_peft is true", f);
		if (!m->var_name)
			m->var_name = xstrdup("model");
		if (!m->revision)
			m->revision = xstrdup("main");
	}
	return 0;
}

static int get_repos(struct json_object *o, struct seer_config *c, char *err, size_t n)
{
	static const char *const keys[] = {"url", "dockerfile", "install", "branch", NULL};
	if (!json_object_is_type(o, json_type_array))
		return fail(err, n, "field \"repos\": expected an array of {\"url\": ...} objects, got %s", type_name(o));
	size_t len = json_object_array_length(o);
	c->repos = xcalloc(len + 1, sizeof(*c->repos));
	for (size_t i = 0; i < len; i++) {
		struct json_object *e = json_object_array_get_idx(o, i), *v;
		struct seer_repo *rp = &c->repos[i];
		char f[64], sub[96];
		snprintf(f, sizeof(f), "repos[%zu]", i);
		c->n_repos++;
		int r;
		if (json_object_is_type(e, json_type_string)) {
			if ((r = get_str(e, f, 0, &rp->url, err, n)) < 0)
				return r;
			continue;
		}
		if (!json_object_is_type(e, json_type_object))
			return fail(err, n, "field \"%s\": expected an object or a string, got %s", f, type_name(e));
		if ((r = check_keys(e, f, keys, err, n)) < 0)
			return r;
		if (!json_object_object_get_ex(e, "url", &v))
			return fail(err, n, "field \"%s.url\": required (\"org/repo\", a git URL or a host path)", f);
		snprintf(sub, sizeof(sub), "%s.url", f);
		if ((r = get_str(v, sub, 0, &rp->url, err, n)) < 0)
			return r;
		if (json_object_object_get_ex(e, "dockerfile", &v)) {
			snprintf(sub, sizeof(sub), "%s.dockerfile", f);
			if ((r = get_opt_str(v, sub, &rp->dockerfile, err, n)) < 0)
				return r;
		}
		if (json_object_object_get_ex(e, "install", &v)) {
			snprintf(sub, sizeof(sub), "%s.install", f);
			if ((r = get_opt_str(v, sub, &rp->install, err, n)) < 0)
				return r;
		}
		if (json_object_object_get_ex(e, "branch", &v)) {
			snprintf(sub, sizeof(sub), "%s.branch", f);
			if ((r = get_opt_str(v, sub, &rp->branch, err, n)) < 0)
				return r;
		}
	}
	return 0;
}

static int get_env(struct json_object *o, struct seer_config *c, char *err, size_t n)
{
	if (!json_object_is_type(o, json_type_object))
		return fail(err, n, "field \"env\": expected an object of string values, got %s", type_name(o));
	c->env = xcalloc((size_t)json_object_object_length(o) + 1, sizeof(*c->env));
	json_object_object_foreach(o, key, val) {
		char f[160];
		snprintf(f, sizeof(f), "env.%.100s", key);
		if (!env_name_valid(key))
			return fail(err, n, "field \"%s\": \"%.100s\" is not a valid environment variable name", f, key);
		struct seer_kv *kv = &c->env[c->n_env++];
		kv->key = xstrdup(key);
		int r = get_str(val, f, 1, &kv->value, err, n);
		if (r < 0)
			return r;
	}
	return 0;
}

void seer_config_init(struct seer_config *c)
{
	memset(c, 0, sizeof(*c));
	c->provider = xstrdup("local");
	c->gpu_count = 1;
	c->timeout = 3600;
	c->network = 1;
	c->execution_mode = SEER_MODE_CLI;
	c->on_timeout = SEER_TIMEOUT_TERMINATE;
	c->output_cap = 64LL << 20;
}

static void free_strv(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void free_pairs(struct seer_pair *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(p[i].host);
		free(p[i].sandbox);
	}
	free(p);
}

void seer_config_free(struct seer_config *c)
{
	free(c->provider);
	free(c->gpu);
	for (size_t i = 0; i < c->n_models; i++) {
		free(c->models[i].name);
		free(c->models[i].var_name);
		free(c->models[i].revision);
		free(c->models[i].base_model);
	}
	free(c->models);
	for (size_t i = 0; i < c->n_repos; i++) {
		free(c->repos[i].url);
		free(c->repos[i].dockerfile);
		free(c->repos[i].install);
		free(c->repos[i].branch);
	}
	free(c->repos);
	free_strv(c->python_packages, c->n_python_packages);
	free_strv(c->system_packages, c->n_system_packages);
	free(c->python_version);
	free_strv(c->secrets, c->n_secrets);
	for (size_t i = 0; i < c->n_env; i++) {
		free(c->env[i].key);
		free(c->env[i].value);
	}
	free(c->env);
	free_pairs(c->local_files, c->n_local_files);
	free_pairs(c->local_dirs, c->n_local_dirs);
	for (size_t i = 0; c->serve && i < c->n_serve; i++) {
		free(c->serve[i].file);
		free(c->serve[i].name);
	}
	free(c->serve);
	free(c->snapshot);
	free(c->image);
	memset(c, 0, sizeof(*c));
}

/* Line and column (1-based) of a byte offset, for syntax errors. */
static void line_col(const char *text, size_t off, int *line, int *col)
{
	*line = 1;
	*col = 1;
	for (size_t i = 0; i < off && text[i]; i++) {
		if (text[i] == '\n') {
			(*line)++;
			*col = 1;
		} else {
			(*col)++;
		}
	}
}

static int parse_json(const char *text, size_t len, struct json_object **out, char *err, size_t n)
{
	if (len == 0)
		return fail(err, n, "the config is empty: write a JSON object, e.g. {} or {\"timeout\": 600}");
	if (memchr(text, '\0', len))
		return fail(err, n, "the config contains a NUL byte: write a JSON object");
	struct json_tokener *tok = json_tokener_new_ex(64);
	if (!tok)
		return -ENOMEM;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	struct json_object *o = json_tokener_parse_ex(tok, text, (int)len);
	enum json_tokener_error je = json_tokener_get_error(tok);
	size_t lead = 0;   /* the text is len bytes, not NUL-terminated */
	while (lead < len && (text[lead] == ' ' || text[lead] == '\t' || text[lead] == '\r' || text[lead] == '\n'))
		lead++;
	if (!o && je == json_tokener_continue && lead < len && !strchr("{[\"", text[lead])) {
		/* A bare number or literal is complete, but json-c waits for more
		 * digits: end the text so it says what it got. */
		o = json_tokener_parse_ex(tok, "", 1);
		je = json_tokener_get_error(tok);
		if (je == json_tokener_success) {
			json_tokener_free(tok);
			const char *t = o ? type_name(o) : "null";
			json_object_put(o);
			return fail(err, n, "the config must be a JSON object ({...}), got %s", t);
		}
	}
	size_t end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	int line, col;
	if (!o || je != json_tokener_success) {
		if (o)
			json_object_put(o);
		line_col(text, end, &line, &col);
		if (je == json_tokener_continue)
			return fail(err, n, "JSON syntax error at line %d, column %d: the text ends early (unclosed { or \")",
				    line, col);
		return fail(err, n, "JSON syntax error at line %d, column %d: %s", line, col,
			    json_tokener_error_desc(je));
	}
	for (size_t i = end; i < len; i++) {
		if (text[i] != ' ' && text[i] != '\n' && text[i] != '\t' && text[i] != '\r') {
			json_object_put(o);
			line_col(text, i, &line, &col);
			return fail(err, n, "JSON syntax error at line %d, column %d: text after the end of the object",
				    line, col);
		}
	}
	if (!json_object_is_type(o, json_type_object)) {
		const char *t = type_name(o);
		json_object_put(o);
		return fail(err, n, "the config must be a JSON object ({...}), got %s", t);
	}
	*out = o;
	return 0;
}

/* An image reference as container engines take it: [registry/]name[:tag][@digest]. */
static int image_ref_valid(const char *s)
{
	size_t l = strlen(s);
	if (!l || l > 255 || strchr("-:/.@", s[0]))
		return 0;
	return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:@") == l;
}

/* "memory": a whole number of MiB, or a string NUMBER with a unit k, m, g
 * (KiB, MiB, GiB; "512m", "4g"), as the docker CLI takes it. At least 6 MiB
 * (the engines' own floor), at most 16 TiB. */
static int get_memory(struct json_object *v, int64_t *out, char *err, size_t n)
{
	int64_t bytes = 0;
	if (json_object_is_type(v, json_type_int)) {
		int64_t mib = json_object_get_int64(v);
		if (mib < 0 || mib > (16LL << 20))
			return fail(err, n, "field \"memory\": %lld MiB is out of range (6 MiB to 16 TiB)", (long long)mib);
		bytes = mib << 20;
	} else if (json_object_is_type(v, json_type_string)) {
		const char *s = json_object_get_string(v);
		char *end = NULL;
		errno = 0;
		long long num = strtoll(s, &end, 10);
		int shift = -1;
		if (end && end != s && s[0] != '-' && !errno) {
			if (!strcasecmp(end, "k"))
				shift = 10;
			else if (!strcasecmp(end, "m"))
				shift = 20;
			else if (!strcasecmp(end, "g"))
				shift = 30;
			else if (!*end || !strcasecmp(end, "b"))
				shift = 0;
		}
		if (shift < 0 || num > (16LL << 40) >> shift)
			return fail(err, n, "field \"memory\": \"%.40s\" is not a size: write MiB as a number (512) or a string with a unit (\"512m\", \"4g\")", s);
		bytes = (int64_t)num << shift;
	} else {
		return fail(err, n, "field \"memory\": expected MiB as a number or a size string (\"4g\"), got %s", type_name(v));
	}
	if (bytes < (6LL << 20))
		return fail(err, n, "field \"memory\": at least 6 MiB (the container engines' floor)");
	*out = bytes;
	return 0;
}

/* "cpu": how many CPUs (fractions allowed), 0.01 to 1024. */
static int get_cpu(struct json_object *v, int64_t *out, char *err, size_t n)
{
	if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
		return fail(err, n, "field \"cpu\": expected a number of CPUs (2, 0.5), got %s", type_name(v));
	double d = json_object_get_double(v);
	if (!(d >= 0.01 && d <= 1024))
		return fail(err, n, "field \"cpu\": %g is out of range (0.01 to 1024 CPUs)", d);
	*out = (int64_t)(d * 1000 + 0.5);
	return 0;
}

static int parse_fields(struct json_object *root, struct seer_config *c, char *err, size_t n)
{
	int r = 0;
	json_object_object_foreach(root, key, v) {
		int64_t iv;
		if (!strcmp(key, "provider")) {
			free(c->provider);
			c->provider = NULL;
			if ((r = get_str(v, key, 0, &c->provider, err, n)) == 0 && !name_valid(c->provider))
				r = fail(err, n, "field \"provider\": \"%s\" is not a provider name", c->provider);
		} else if (!strcmp(key, "gpu")) {
			r = get_opt_str(v, key, &c->gpu, err, n);
		} else if (!strcmp(key, "gpu_count")) {
			if ((r = get_int(v, key, 1, 64, &iv, err, n)) == 0)
				c->gpu_count = (int)iv;
		} else if (!strcmp(key, "models")) {
			r = get_models(v, c, err, n);
		} else if (!strcmp(key, "repos")) {
			r = get_repos(v, c, err, n);
		} else if (!strcmp(key, "python_packages")) {
			r = get_str_array(v, key, &c->python_packages, &c->n_python_packages, 0, err, n);
		} else if (!strcmp(key, "system_packages")) {
			r = get_str_array(v, key, &c->system_packages, &c->n_system_packages, 0, err, n);
		} else if (!strcmp(key, "python_version")) {
			r = get_opt_str(v, key, &c->python_version, err, n);
		} else if (!strcmp(key, "secrets")) {
			r = get_str_array(v, key, &c->secrets, &c->n_secrets, 1, err, n);
		} else if (!strcmp(key, "env")) {
			r = get_env(v, c, err, n);
		} else if (!strcmp(key, "timeout")) {
			if ((r = get_int(v, key, 1, MAX_TIMEOUT, &iv, err, n)) == 0)
				c->timeout = iv;
		} else if (!strcmp(key, "exec_timeout")) {
			if ((r = get_int(v, key, 0, MAX_TIMEOUT, &iv, err, n)) == 0)
				c->exec_timeout = iv;
		} else if (!strcmp(key, "output_cap")) {
			if ((r = get_int(v, key, 4096, 1LL << 40, &iv, err, n)) == 0)
				c->output_cap = iv;
		} else if (!strcmp(key, "serve")) {
			r = get_serve(v, c, err, n);
		} else if (!strcmp(key, "scoped")) {
			r = get_bool(v, key, &c->scoped, err, n);
		} else if (!strcmp(key, "local_files")) {
			r = get_pairs(v, key, &c->local_files, &c->n_local_files, err, n);
		} else if (!strcmp(key, "local_dirs")) {
			r = get_pairs(v, key, &c->local_dirs, &c->n_local_dirs, err, n);
		} else if (!strcmp(key, "debug")) {
			r = get_bool(v, key, &c->debug, err, n);
		} else if (!strcmp(key, "network")) {
			r = get_bool(v, key, &c->network, err, n);
		} else if (!strcmp(key, "execution_mode")) {
			char *s = NULL;
			if ((r = get_str(v, key, 0, &s, err, n)) == 0) {
				if (!strcmp(s, "cli"))
					c->execution_mode = SEER_MODE_CLI;
				else if (!strcmp(s, "notebook"))
					c->execution_mode = SEER_MODE_NOTEBOOK;
				else
					r = fail(err, n, "field \"execution_mode\": \"%s\" is not one of \"cli\", \"notebook\"", s);
			}
			free(s);
		} else if (!strcmp(key, "snapshot")) {
			if ((r = get_opt_str(v, key, &c->snapshot, err, n)) == 0 && c->snapshot && !name_valid(c->snapshot))
				r = fail(err, n, "field \"snapshot\": \"%s\" is not a snapshot name", c->snapshot);
		} else if (!strcmp(key, "image")) {
			if ((r = get_opt_str(v, key, &c->image, err, n)) == 0 && c->image && !image_ref_valid(c->image))
				r = fail(err, n, "field \"image\": \"%.100s\" is not an image reference (name[:tag], e.g. \"debian:bookworm-slim\")",
					 c->image);
		} else if (!strcmp(key, "memory")) {
			r = get_memory(v, &c->memory, err, n);
		} else if (!strcmp(key, "cpu")) {
			r = get_cpu(v, &c->cpu_milli, err, n);
		} else if (!strcmp(key, "on_timeout")) {
			char *s = NULL;
			if ((r = get_str(v, key, 0, &s, err, n)) == 0) {
				if (!strcmp(s, "terminate"))
					c->on_timeout = SEER_TIMEOUT_TERMINATE;
				else if (!strcmp(s, "snapshot"))
					c->on_timeout = SEER_TIMEOUT_SNAPSHOT;
				else
					r = fail(err, n, "field \"on_timeout\": \"%s\" is not one of \"terminate\", \"snapshot\"", s);
			}
			free(s);
		} else {
			r = fail(err, n, "unknown field \"%.100s\" (see docs/config.md for the fields)", key);
		}
		if (r < 0)
			return r;
	}
	return 0;
}

int seer_config_precheck(const char *text, size_t len, char *err, size_t errlen)
{
	struct seer_config c;
	int r = seer_config_parse(text, len, &c, err, errlen);
	if (r == 0) {
		seer_config_free(&c);
		return 0;
	}
	/* An unfinished text is not an error yet. */
	if (strstr(err, "ends early"))
		return 0;
	return r;
}

int seer_config_parse(const char *text, size_t len, struct seer_config *c, char *err, size_t errlen)
{
	if (len > SEER_CONFIG_MAX) {
		snprintf(err, errlen, "the config is %zu bytes, over the limit of %d", len, SEER_CONFIG_MAX);
		return -EFBIG;
	}
	struct json_object *root;
	int r = parse_json(text, len, &root, err, errlen);
	if (r < 0)
		return r;
	seer_config_init(c);
	r = parse_fields(root, c, err, errlen);
	json_object_put(root);
	if (r < 0)
		seer_config_free(c);
	return r;
}

static const char *const all_fields[] = {
	"provider", "gpu", "gpu_count", "models", "repos", "python_packages", "system_packages",
	"python_version", "secrets", "env", "timeout", "exec_timeout", "output_cap", "local_files",
	"local_dirs", "debug", "network", "execution_mode", "snapshot", "on_timeout", "serve", "scoped", "image", "memory", "cpu", NULL};

/* Fields whose work a snapshot's files already hold: a fork does not redo them. */
static const char *const not_forked[] = {"local_files", "local_dirs", "repos", "snapshot", NULL};

int seer_config_fork(const char *base, const char *over, size_t len, char **out, char *err, size_t errlen)
{
	struct json_object *o;
	int r = parse_json(over, len, &o, err, errlen);
	if (r < 0)
		return r;
	struct json_object *b = base ? json_tokener_parse(base) : NULL;
	if (!b || !json_object_is_type(b, json_type_object)) {
		json_object_put(b);
		b = json_object_new_object();
	}
	for (size_t i = 0; not_forked[i]; i++)
		json_object_object_del(b, not_forked[i]);
	json_object_object_foreach(o, key, v) {
		struct json_object *benv = NULL;
		if (!strcmp(key, "env") && json_object_is_type(v, json_type_object) &&
		    json_object_object_get_ex(b, "env", &benv) && json_object_is_type(benv, json_type_object)) {
			json_object_object_foreach(v, ek, ev)
				json_object_object_add(benv, ek, json_object_get(ev));
			continue;
		}
		json_object_object_add(b, key, json_object_get(v));
	}
	*out = xstrdup(json_object_to_json_string_ext(b, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(b);
	json_object_put(o);
	return 0;
}

int seer_config_live_field(const char *field)
{
	/* These change nothing that provisioning built: they are read when a job
	 * starts or when the timer next looks, so a running sandbox can take them. */
	return !strcmp(field, "timeout") || !strcmp(field, "exec_timeout") || !strcmp(field, "env") ||
	       !strcmp(field, "output_cap") || !strcmp(field, "on_timeout");
}

void seer_config_diff(const char *a, const char *b, char *buf, size_t len)
{
	buf[0] = '\0';
	struct json_object *ja = json_tokener_parse(a), *jb = json_tokener_parse(b);
	size_t used = 0;
	for (size_t i = 0; all_fields[i]; i++) {
		struct json_object *va = NULL, *vb = NULL;
		if (ja)
			json_object_object_get_ex(ja, all_fields[i], &va);
		if (jb)
			json_object_object_get_ex(jb, all_fields[i], &vb);
		if (json_object_equal(va, vb))
			continue;
		int w = snprintf(buf + used, len - used, "%s%s", used ? "," : "", all_fields[i]);
		if (w < 0 || (size_t)w >= len - used)
			break;
		used += (size_t)w;
	}
	json_object_put(ja);
	json_object_put(jb);
}
