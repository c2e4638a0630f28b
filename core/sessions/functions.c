/*
 * functions.c - served functions of a sandbox (see functions.h): serving an
 * interface file, the calls and their answers, the README and the
 * generated client module.
 */
#include "core/sessions/functions.h"
#include "core/jobs.h"
#include "core/sandbox.h"
#include "core/lib/util.h"

#include "core/sessions/seer_serve_py.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fn {
	char *name, *signature, *doc, *schema, *returns;
};

struct answer {
	struct answer *next;
	uint64_t id;
	char *text;           /* NULL: dropped, discard when it comes */
};

struct fset {
	struct fset *next;
	uint32_t id;
	char name[72];
	char *file;
	int removed;
	pthread_mutex_t mu;   /* everything below */
	uint32_t kjob;        /* the server's job */
	struct fn *fns;
	size_t nfn;
	uint64_t next_call;
	int out_fd;           /* the server job's stdout file */
	uint64_t parsed;
	struct sbuf partial;
	struct answer *answers;
};

struct fntab {
	pthread_mutex_t lock;  /* the list; held across a serve, so serves do not race */
	pthread_mutex_t serving;
	struct fset *list;
	uint32_t next_id;
};

/* How long an interface file may take to load (models...). */
#define SERVE_TIMEOUT_S 1800

void functions_load(struct sandbox *sb)
{
	struct fntab *t = xcalloc(1, sizeof(*t));
	pthread_mutex_init(&t->lock, NULL);
	pthread_mutex_init(&t->serving, NULL);
	t->next_id = 1;
	sb->functions = t;
}

static void fset_free(struct fset *f)
{
	for (size_t i = 0; i < f->nfn; i++) {
		free(f->fns[i].name);
		free(f->fns[i].signature);
		free(f->fns[i].doc);
		free(f->fns[i].schema);
		free(f->fns[i].returns);
	}
	free(f->fns);
	while (f->answers) {
		struct answer *a = f->answers;
		f->answers = a->next;
		free(a->text);
		free(a);
	}
	if (f->out_fd >= 0)
		close(f->out_fd);
	sbuf_free(&f->partial);
	free(f->file);
	pthread_mutex_destroy(&f->mu);
	free(f);
}

void functions_free(struct sandbox *sb)
{
	struct fntab *t = sb->functions;
	if (!t)
		return;
	while (t->list) {
		struct fset *f = t->list;
		t->list = f->next;
		fset_free(f);
	}
	pthread_mutex_destroy(&t->lock);
	pthread_mutex_destroy(&t->serving);
	free(t);
	sb->functions = NULL;
}

/* Sets are freed only with their sandbox: a pointer found under the lock
 * stays valid (a replaced one is marked removed). */
static struct fset *find(struct sandbox *sb, uint32_t id, const char *name)
{
	struct fntab *t = sb->functions;
	if (!t)
		return NULL;
	pthread_mutex_lock(&t->lock);
	struct fset *f = t->list;
	while (f && (f->removed || (id ? f->id != id : !name || strcmp(f->name, name))))
		f = f->next;
	pthread_mutex_unlock(&t->lock);
	return f;
}

/* ---- serving ------------------------------------------------------------------------------ */

static void persist(struct sandbox *sb)
{
	struct fntab *t = sb->functions;
	struct json_object *a = json_object_new_array();
	pthread_mutex_lock(&t->lock);
	for (struct fset *f = t->list; f; f = f->next) {
		if (f->removed)
			continue;
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "file", json_object_new_string(f->file));
		json_object_object_add(o, "name", json_object_new_string(f->name));
		json_object_array_add(a, o);
	}
	pthread_mutex_unlock(&t->lock);
	const char *s = json_object_to_json_string_ext(a, JSON_C_TO_STRING_PRETTY);
	char p[4200];
	snprintf(p, sizeof(p), "%s/functions.json", sb->dir);
	write_file_atomic(p, s, strlen(s), 0600);
	json_object_put(a);
}

/* MODEL_<ID>_PATH for every model of the sandbox, from what provisioning
 * recorded (provisioned.json's model handles), and the same as one JSON
 * object for get_model_path. */
static void model_env(struct sandbox *sb, char ***env, size_t *n, struct sbuf *models)
{
	char p[4200], *txt = NULL;
	snprintf(p, sizeof(p), "%s/provisioned.json", sb->dir);
	struct json_object *m = json_object_new_object();
	struct json_object *o = read_file(p, 16 << 20, &txt, NULL) == 0 ? json_tokener_parse(txt) : NULL;
	free(txt);
	struct json_object *h;
	if (o && json_object_object_get_ex(o, "model_handles", &h) && json_object_is_type(h, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(h); i++) {
			struct json_object *e = json_object_array_get_idx(h, i), *nm, *vp;
			if (!json_object_object_get_ex(e, "name", &nm) || !json_object_object_get_ex(e, "volume_path", &vp))
				continue;
			const char *id = json_object_get_string(nm), *path = json_object_get_string(vp);
			json_object_object_add(m, id, json_object_new_string(path));
			struct sbuf b = {0};
			sbuf_printf(&b, "MODEL_");
			for (const char *c = id; *c; c++) {
				char u = isalnum((unsigned char)*c) ? (char)toupper((unsigned char)*c) : '_';
				sbuf_append(&b, &u, 1);
			}
			sbuf_printf(&b, "_PATH=%s", path);
			*env = realloc(*env, (*n + 2) * sizeof(**env));
			if (!*env)
				abort();
			(*env)[(*n)++] = b.data;
			(*env)[*n] = NULL;
		}
	}
	json_object_put(o);
	sbuf_printf(models, "SEERFS_MODELS=%s", json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN));
	json_object_put(m);
}

static char *jdup(struct json_object *o, const char *k, int as_json)
{
	struct json_object *v;
	if (!json_object_object_get_ex(o, k, &v))
		return xstrdup(as_json ? "{}" : "");
	return xstrdup(as_json ? json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
			       : json_object_get_string(v));
}

/* Waits for the server's first line: ready, or why not. */
static int await_ready(struct sandbox *sb, struct job *j, struct json_object **out, char *err, size_t n)
{
	char p[4200];
	snprintf(p, sizeof(p), "%s/stdout", job_dir(j));
	double t0 = mono_s();
	for (;;) {
		int finished = job_finished(j);
		char *txt = NULL;
		size_t len = 0;
		if (read_file(p, 64 << 20, &txt, &len) == 0) {
			char *nl = memchr(txt, '\n', len);
			if (nl) {
				*nl = '\0';
				*out = json_tokener_parse(txt);
				free(txt);
				if (!*out) {
					snprintf(err, n, "the server's first line is not JSON");
					return -EIO;
				}
				return 0;
			}
		}
		free(txt);
		if (finished) {
			char *ex = job_exit_text(j), *se = NULL;
			ex[strcspn(ex, "\n")] = '\0';
			snprintf(p, sizeof(p), "%s/stderr", job_dir(j));
			read_file(p, 4096, &se, NULL);
			snprintf(err, n, "the server ended before it was ready (exit %s): %s", ex, se ? se : "");
			free(ex);
			free(se);
			return -EIO;
		}
		if (sb->cancel) {
			snprintf(err, n, "cancelled");
			return -ECANCELED;
		}
		if (mono_s() - t0 > SERVE_TIMEOUT_S) {
			snprintf(err, n, "the interface file did not finish loading in %d s", SERVE_TIMEOUT_S);
			return -ETIMEDOUT;
		}
		job_wait_output(j, job_length(j, JS_OUTPUT), 200000);
	}
}

static int serve(struct sandbox *sb, const char *file, const char *name, int provisioning, char *err, size_t n)
{
	struct fntab *t = sb->functions;
	char **env = NULL;
	size_t ne = 0;
	struct sbuf models = {0}, e1 = {0}, e2 = {0}, e3 = {0}, txt = {0};
	model_env(sb, &env, &ne, &models);
	sbuf_printf(&e1, "SEERFS_SERVE_FILE=%s", file);
	sbuf_printf(&e2, "SEERFS_SERVE_NAME=%s", name);
	sbuf_printf(&e3, "SEERFS_SERVE=%s", seer_serve_py);
	char *extra[] = {models.data, e1.data, e2.data, e3.data};
	for (size_t i = 0; i < 4; i++) {
		env = realloc(env, (ne + 2) * sizeof(*env));
		if (!env)
			abort();
		env[ne++] = extra[i];
		env[ne] = NULL;
	}
	sbuf_printf(&txt, "seerfs server of %s: %s", name, file);
	char *argv[] = {"/bin/sh", "-c", "exec python3 -c \"$SEERFS_SERVE\"", "seerfs-serve", NULL};
	struct job_spawn_opts o = {.argv = argv, .env = env, .no_timeout = 1, .provisioning = provisioning};
	struct job *j = NULL;
	int r = jobs_start_opts(sb, txt.data, txt.len, &o, 0, &j);
	for (size_t i = 0; i < ne; i++)
		free(env[i]);
	free(env);
	sbuf_free(&txt);
	if (r < 0) {
		snprintf(err, n, "the server could not start (%s)", strerror(-r));
		return r;
	}
	struct json_object *ready = NULL;
	r = await_ready(sb, j, &ready, err, n);
	struct json_object *v;
	if (r == 0 && (!json_object_object_get_ex(ready, "ready", &v) || !json_object_get_boolean(v))) {
		char *e = jdup(ready, "error", 0), *tb = jdup(ready, "traceback", 0);
		snprintf(err, n, "%s\n%s", e, tb);
		free(e);
		free(tb);
		r = -EINVAL;
	}
	if (r < 0) {
		if (job_state(j) == JOB_RUNNING)
			job_ctl(j, "kill", 4);
		json_object_put(ready);
		job_put(j);
		return r;
	}
	struct fset *f = xcalloc(1, sizeof(*f));
	pthread_mutex_init(&f->mu, NULL);
	snprintf(f->name, sizeof(f->name), "%s", name);
	f->file = xstrdup(file);
	f->kjob = job_number(j);
	char p[4200];
	snprintf(p, sizeof(p), "%s/stdout", job_dir(j));
	f->out_fd = open(p, O_RDONLY | O_CLOEXEC);
	struct json_object *fa;
	if (json_object_object_get_ex(ready, "functions", &fa) && json_object_is_type(fa, json_type_array)) {
		size_t k = json_object_array_length(fa);
		f->fns = xcalloc(k + 1, sizeof(*f->fns));
		for (size_t i = 0; i < k; i++) {
			struct json_object *d = json_object_array_get_idx(fa, i);
			f->fns[i] = (struct fn){jdup(d, "name", 0), jdup(d, "signature", 0), jdup(d, "doc", 0),
						jdup(d, "schema", 1), jdup(d, "returns", 1)};
			f->nfn++;
		}
	}
	/* The first line (ready) is not an answer. */
	char *all = NULL;
	size_t len = 0;
	if (read_file(p, 64 << 20, &all, &len) == 0) {
		char *nl = memchr(all, '\n', len);
		f->parsed = nl ? (uint64_t)(nl - all + 1) : 0;
	}
	free(all);
	json_object_put(ready);
	job_put(j);
	pthread_mutex_lock(&t->lock);
	for (struct fset *o2 = t->list; o2; o2 = o2->next) {
		if (!o2->removed && !strcmp(o2->name, name)) {
			o2->removed = 1;
			struct job *old = jobs_find(sb, o2->kjob);
			if (old && job_state(old) == JOB_RUNNING)
				job_ctl(old, "kill", 4);
			job_put(old);
		}
	}
	f->id = t->next_id++;
	f->next = t->list;
	t->list = f;
	pthread_mutex_unlock(&t->lock);
	persist(sb);
	sandbox_log(sb, "serving %s as %s (server: job %u; %zu functions)", file, name, f->kjob, f->nfn);
	sandbox_changed(sb);
	return 0;
}

int functions_provision(struct sandbox *sb, int restart, char *err, size_t errlen)
{
	struct fntab *t = sb->functions;
	char p[4200];
	snprintf(p, sizeof(p), "%s/functions.json", sb->dir);
	struct json_object *list = json_object_new_array();
	if (restart) {
		char *txt = NULL;
		struct json_object *o = read_file(p, 1 << 20, &txt, NULL) == 0 ? json_tokener_parse(txt) : NULL;
		free(txt);
		if (o && json_object_is_type(o, json_type_array)) {
			json_object_put(list);
			list = o;
		} else {
			json_object_put(o);
		}
	} else {
		unlink(p);
		pthread_mutex_lock(&sb->lock);
		for (size_t i = 0; i < sb->cfg.n_serve; i++) {
			struct json_object *o = json_object_new_object();
			json_object_object_add(o, "file", json_object_new_string(sb->cfg.serve[i].file));
			json_object_object_add(o, "name", json_object_new_string(sb->cfg.serve[i].name));
			json_object_array_add(list, o);
		}
		pthread_mutex_unlock(&sb->lock);
	}
	/* Whatever was served before this start is gone with its processes. */
	pthread_mutex_lock(&t->lock);
	for (struct fset *f = t->list; f; f = f->next)
		f->removed = 1;
	pthread_mutex_unlock(&t->lock);
	int r = 0;
	pthread_mutex_lock(&t->serving);
	for (size_t i = 0; r == 0 && i < json_object_array_length(list); i++) {
		struct json_object *e = json_object_array_get_idx(list, i), *f, *nm;
		if (!json_object_object_get_ex(e, "file", &f) || !json_object_object_get_ex(e, "name", &nm))
			continue;
		char why[8192];
		sandbox_set_progress(sb, "serving %s as %s", json_object_get_string(f), json_object_get_string(nm));
		r = serve(sb, json_object_get_string(f), json_object_get_string(nm), 1, why, sizeof(why));
		if (r < 0)
			snprintf(err, errlen, "sandbox %s: serve %s as %s failed: %s", sb->name, json_object_get_string(f),
				 json_object_get_string(nm), why);
	}
	pthread_mutex_unlock(&t->serving);
	json_object_put(list);
	return r;
}

int functions_ctl_word(const char *text, size_t len)
{
	return len > 6 && !memcmp(text, "serve ", 6);
}

int functions_ctl(struct sandbox *sb, const char *text, size_t len)
{
	while (len && (text[len - 1] == '\n' || text[len - 1] == ' '))
		len--;
	char line[4200], file[4096], name[80], extra[2];
	if (len >= sizeof(line) || memchr(text, '\0', len))
		return -EINVAL;
	memcpy(line, text, len);
	line[len] = '\0';
	int k = sscanf(line, "serve %4095s as %79s %1s", file, name, extra);
	int ok = k == 2 && file[0] == '/' && name[0] && !isdigit((unsigned char)name[0]) && strlen(name) <= 64;
	for (const char *c = name; ok && *c; c++)
		ok = isalnum((unsigned char)*c) || *c == '_';
	if (!ok) {
		sandbox_set_error(sb, "sandbox %s: ctl: write \"serve /ABSOLUTE/PATH.py as NAME\" (NAME: letters, digits, _)",
				  sb->name);
		return -EINVAL;
	}
	pthread_mutex_lock(&sb->lock);
	int running = sb->state == SB_RUNNING && !sb->busy_op;
	pthread_mutex_unlock(&sb->lock);
	if (!running) {
		sandbox_set_error(sb, "sandbox %s: ctl: serve: the sandbox is not running", sb->name);
		return -ENOTCONN;
	}
	char why[8192];
	pthread_mutex_lock(&sb->functions->serving);
	int r = serve(sb, file, name, 0, why, sizeof(why));
	pthread_mutex_unlock(&sb->functions->serving);
	if (r < 0)
		sandbox_set_error(sb, "sandbox %s: serve %s as %s failed: %s", sb->name, file, name, why);
	return r < 0 ? (r == -EINVAL ? -EINVAL : r) : 0;
}

/* ---- lookups ------------------------------------------------------------------------------- */

size_t functions_sets(struct sandbox *sb, uint32_t **ids, char ***names)
{
	struct fntab *t = sb->functions;
	*ids = NULL;
	*names = NULL;
	if (!t)
		return 0;
	size_t n = 0;
	pthread_mutex_lock(&t->lock);
	for (struct fset *f = t->list; f; f = f->next)
		n += !f->removed;
	*ids = xcalloc(n + 1, sizeof(**ids));
	*names = xcalloc(n + 1, sizeof(**names));
	size_t i = 0;
	for (struct fset *f = t->list; f; f = f->next) {
		if (f->removed)
			continue;
		(*ids)[i] = f->id;
		(*names)[i++] = xstrdup(f->name);
	}
	pthread_mutex_unlock(&t->lock);
	return n;
}

uint32_t functions_set_find(struct sandbox *sb, const char *name)
{
	struct fset *f = find(sb, 0, name);
	return f ? f->id : 0;
}

int functions_set_name(struct sandbox *sb, uint32_t set, char *buf, size_t len)
{
	struct fset *f = find(sb, set, NULL);
	if (!f)
		return -ENOENT;
	snprintf(buf, len, "%s", f->name);
	return 0;
}

size_t functions_fn_names(struct sandbox *sb, uint32_t set, char ***names)
{
	struct fset *f = find(sb, set, NULL);
	*names = NULL;
	if (!f)
		return 0;
	*names = xcalloc(f->nfn + 1, sizeof(**names));
	for (size_t i = 0; i < f->nfn; i++)
		(*names)[i] = xstrdup(f->fns[i].name);
	return f->nfn;
}

uint32_t functions_fn_find(struct sandbox *sb, uint32_t set, const char *fn)
{
	struct fset *f = find(sb, set, NULL);
	for (size_t i = 0; f && i < f->nfn; i++)
		if (!strcmp(f->fns[i].name, fn))
			return (uint32_t)i + 1;
	return 0;
}

char *functions_json(struct sandbox *sb, uint32_t set)
{
	struct fset *f = find(sb, set, NULL);
	if (!f)
		return NULL;
	struct json_object *a = json_object_new_array();
	for (size_t i = 0; i < f->nfn; i++) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(f->fns[i].name));
		json_object_object_add(o, "signature", json_object_new_string(f->fns[i].signature));
		json_object_object_add(o, "doc", json_object_new_string(f->fns[i].doc));
		struct json_object *sc = json_tokener_parse(f->fns[i].schema), *rt = json_tokener_parse(f->fns[i].returns);
		json_object_object_add(o, "schema", sc ? sc : json_object_new_object());
		json_object_object_add(o, "returns", rt ? rt : json_object_new_object());
		json_object_array_add(a, o);
	}
	struct sbuf b = {0};
	sbuf_printf(&b, "%s\n", json_object_to_json_string_ext(a, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(a);
	return b.data;
}

char *functions_readme(struct sandbox *sb, uint32_t set)
{
	struct fset *f = find(sb, set, NULL);
	if (!f)
		return NULL;
	struct sbuf b = {0};
	sbuf_printf(&b, "%s: functions served from %s in sandbox %s\n\n", f->name, f->file, sb->name);
	sbuf_printf(&b, "Call one: open its file read-write, write a JSON object of arguments\n"
			"({\"text\": \"hi\"}; a JSON array gives positional ones), then read the\n"
			"answer to EOF: {\"ok\": true, \"result\": ...} or {\"ok\": false, \"error\": ...,\n"
			"\"traceback\": ...}. Closing the file before the answer interrupts the call.\n"
			"Calls run one at a time, in the order they arrive. functions.json has\n"
			"the same as below for programs.\n"
			"From Python: sys.path.insert(0, \"THIS_DIRECTORY/..\"); import %s.\n\n", f->name);
	for (size_t i = 0; i < f->nfn; i++) {
		sbuf_printf(&b, "## %s\n\n    %s\n\n", f->fns[i].name, f->fns[i].signature);
		if (f->fns[i].doc[0])
			sbuf_printf(&b, "%s\n\n", f->fns[i].doc);
		sbuf_printf(&b, "arguments (JSON schema): %s\n", f->fns[i].schema);
		if (strcmp(f->fns[i].returns, "{}"))
			sbuf_printf(&b, "returns (JSON schema): %s\n", f->fns[i].returns);
		sbuf_printf(&b, "\n");
	}
	return b.data;
}

/* A Python string literal for any text (JSON's escapes are Python's). */
static void py_str(struct sbuf *b, const char *s)
{
	struct json_object *o = json_object_new_string(s);
	sbuf_printf(b, "%s", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

char *functions_client(struct sandbox *sb, uint32_t set)
{
	struct fset *f = find(sb, set, NULL);
	if (!f)
		return NULL;
	struct sbuf b = {0};
	sbuf_printf(&b, "\"\"\"%s: the functions sandbox %s serves from %s (generated by seerfs).\n\n"
			"Each call goes through the file %s/NAME beside this module: the\n"
			"arguments are written as JSON, the answer read back. A failed call raises\n"
			"RemoteError with the sandbox's traceback.\n\"\"\"\n",
		    f->name, sb->name, f->file, f->name);
	sbuf_printf(&b, "import json as _json\nimport os as _os\n\n"
			"_DIR = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), ");
	py_str(&b, f->name);
	sbuf_printf(&b, ")\n\n\nclass RemoteError(Exception):\n"
			"    \"\"\"A served function failed; .remote_traceback is the sandbox's.\"\"\"\n\n"
			"    def __init__(self, error, traceback=\"\"):\n"
			"        super().__init__(error + (\"\\n\\nRemote traceback:\\n\" + traceback if traceback else \"\"))\n"
			"        self.error = error\n        self.remote_traceback = traceback\n\n\n"
			"def _call(name, args, kwargs):\n"
			"    req = _json.dumps(list(args) if args and not kwargs else\n"
			"                      ({\"args\": list(args), \"kwargs\": kwargs} if args else kwargs))\n"
			"    fd = _os.open(_os.path.join(_DIR, name), _os.O_RDWR)\n"
			"    try:\n"
			"        _os.write(fd, req.encode())\n"
			"        chunks = []\n"
			"        while True:\n"
			"            b = _os.read(fd, 1 << 20)\n"
			"            if not b:\n"
			"                break\n"
			"            chunks.append(b)\n"
			"    finally:\n"
			"        _os.close(fd)\n"
			"    ans = _json.loads(b\"\".join(chunks))\n"
			"    if not ans.get(\"ok\"):\n"
			"        raise RemoteError(ans.get(\"error\", \"failed\"), ans.get(\"traceback\", \"\"))\n"
			"    return ans.get(\"result\")\n\n\n"
			"__all__ = [\"RemoteError\"");
	for (size_t i = 0; i < f->nfn; i++) {
		sbuf_printf(&b, ", ");
		py_str(&b, f->fns[i].name);
	}
	sbuf_printf(&b, "]\n");
	for (size_t i = 0; i < f->nfn; i++) {
		int ident = isalpha((unsigned char)f->fns[i].name[0]) || f->fns[i].name[0] == '_';
		for (const char *c = f->fns[i].name; ident && *c; c++)
			ident = isalnum((unsigned char)*c) || *c == '_';
		if (!ident)
			continue;
		struct sbuf doc = {0};
		sbuf_printf(&doc, "%s\n\n%s", f->fns[i].signature, f->fns[i].doc);
		sbuf_printf(&b, "\n\ndef %s(*args, **kwargs):\n    return _call(", f->fns[i].name);
		py_str(&b, f->fns[i].name);
		sbuf_printf(&b, ", args, kwargs)\n\n\n%s.__doc__ = ", f->fns[i].name);
		py_str(&b, doc.data);
		sbuf_printf(&b, "\n");
		sbuf_free(&doc);
	}
	return b.data;
}

/* ---- calls --------------------------------------------------------------------------------- */

static void add_answer(struct fset *f, uint64_t id, char *text)
{
	for (struct answer **pp = &f->answers; *pp; pp = &(*pp)->next) {
		if ((*pp)->id == id && !(*pp)->text) {   /* dropped earlier: nobody waits */
			struct answer *d = *pp;
			*pp = d->next;
			free(d);
			free(text);
			return;
		}
	}
	struct answer *a = xcalloc(1, sizeof(*a));
	a->id = id;
	a->text = text;
	a->next = f->answers;
	f->answers = a;
}

static char *error_answer(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *error_answer(const char *fmt, ...)
{
	struct sbuf m = {0};
	va_list ap;
	va_start(ap, fmt);
	sbuf_vprintf(&m, fmt, ap);
	va_end(ap);
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "ok", json_object_new_boolean(0));
	json_object_object_add(o, "error", json_object_new_string(m.data ? m.data : ""));
	json_object_object_add(o, "traceback", json_object_new_string(""));
	char *s = xstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	sbuf_free(&m);
	return s;
}

int functions_call_start(struct sandbox *sb, uint32_t set, uint32_t fn, const char *json, size_t len, uint64_t *call)
{
	struct fset *f = find(sb, set, NULL);
	if (!f || !fn || fn > f->nfn)
		return -ENOENT;
	pthread_mutex_lock(&f->mu);
	uint64_t id = ++f->next_call;
	*call = id;
	struct json_tokener *tok = json_tokener_new();
	struct json_object *args = json_tokener_parse_ex(tok, json, (int)len);
	enum json_tokener_error je = json_tokener_get_error(tok);
	size_t used = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	while (used < len && isspace((unsigned char)json[used]))
		used++;
	struct json_object *pos = NULL, *kw = NULL;
	if (!args || je != json_tokener_success || used != len) {
		add_answer(f, id, error_answer("the arguments are not valid JSON (%s): write a JSON object of arguments",
					       args && used != len ? "text after the value" : json_tokener_error_desc(je)));
	} else if (json_object_is_type(args, json_type_array)) {
		pos = json_object_get(args);
	} else if (json_object_is_type(args, json_type_object)) {
		struct json_object *a = NULL, *k = NULL;
		int n = json_object_object_length(args);
		json_object_object_get_ex(args, "args", &a);
		json_object_object_get_ex(args, "kwargs", &k);
		/* {"args": [...], "kwargs": {...}} (the client module's form
		 * for mixed calls) when those are its only keys and types. */
		if (a && json_object_is_type(a, json_type_array) && (!k || json_object_is_type(k, json_type_object)) &&
		    n == 1 + (k != NULL)) {
			pos = json_object_get(a);
			kw = k ? json_object_get(k) : NULL;
		} else {
			kw = json_object_get(args);
		}
	} else {
		add_answer(f, id, error_answer("the arguments must be a JSON object (or an array of positional "
					       "arguments), not %s", json_type_to_name(json_object_get_type(args))));
	}
	json_object_put(args);
	int r = 0;
	if (pos || kw) {
		struct json_object *req = json_object_new_object();
		json_object_object_add(req, "id", json_object_new_int64((int64_t)id));
		json_object_object_add(req, "fn", json_object_new_string(f->fns[fn - 1].name));
		json_object_object_add(req, "args", pos ? pos : json_object_new_array());
		json_object_object_add(req, "kwargs", kw ? kw : json_object_new_object());
		struct sbuf line = {0};
		sbuf_printf(&line, "%s\n", json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN));
		json_object_put(req);
		struct job *j = jobs_find(sb, f->kjob);
		int w = j && job_state(j) == JOB_RUNNING ? job_stdin_write(j, line.data, line.len) : -EPIPE;
		job_put(j);
		sbuf_free(&line);
		if (w < 0)
			add_answer(f, id, error_answer("the server of %s is not running (job %u); serve it again "
						       "(echo \"serve %s as %s\" > ctl)", f->name, f->kjob, f->file, f->name));
	}
	pthread_mutex_unlock(&f->mu);
	return r;
}

/* Reads what the server answered since the last look; f->mu held. */
static void pump(struct fset *f)
{
	char buf[65536];
	for (;;) {
		ssize_t n = f->out_fd >= 0 ? pread(f->out_fd, buf, sizeof(buf), (off_t)f->parsed) : -1;
		if (n <= 0)
			break;
		f->parsed += (uint64_t)n;
		sbuf_append(&f->partial, buf, (size_t)n);
	}
	char *start = f->partial.data;
	size_t left = f->partial.len;
	char *nl;
	while (left && (nl = memchr(start, '\n', left))) {
		*nl = '\0';
		struct json_object *o = json_tokener_parse(start), *idv;
		if (o && json_object_object_get_ex(o, "id", &idv)) {
			uint64_t id = (uint64_t)json_object_get_int64(idv);
			json_object_object_del(o, "id");
			add_answer(f, id, xstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
										     JSON_C_TO_STRING_NOSLASHESCAPE)));
		}
		json_object_put(o);
		left -= (size_t)(nl + 1 - start);
		start = nl + 1;
	}
	if (f->partial.data) {
		memmove(f->partial.data, start, left);
		f->partial.data[left] = '\0';
	}
	f->partial.len = left;
}

int functions_call_answer(struct sandbox *sb, uint32_t set, uint64_t call, char **out)
{
	struct fset *f = find(sb, set, NULL);
	if (!f) {
		/* replaced or gone while the call waited */
		pthread_mutex_lock(&sb->functions->lock);
		for (f = sb->functions->list; f && f->id != set; f = f->next)
			;
		pthread_mutex_unlock(&sb->functions->lock);
		if (!f)
			return -ENOENT;
	}
	pthread_mutex_lock(&f->mu);
	int finished = 0;
	struct job *j = jobs_find(sb, f->kjob);
	finished = !j || job_finished(j);   /* before reading: no answer missed */
	char *ex = j && finished ? job_exit_text(j) : NULL;
	job_put(j);
	pump(f);
	int r = 0;
	for (struct answer **pp = &f->answers; *pp; pp = &(*pp)->next) {
		if ((*pp)->id == call && (*pp)->text) {
			struct answer *a = *pp;
			*pp = a->next;
			*out = a->text;
			free(a);
			r = 1;
			break;
		}
	}
	if (!r && finished) {
		if (ex)
			ex[strcspn(ex, "\n")] = '\0';
		*out = error_answer("the server of %s ended (job %u, exit %s) before it answered; its stderr is in "
				    "jobs/%u/stderr", f->name, f->kjob, ex ? ex : "lost", f->kjob);
		r = 1;
	}
	free(ex);
	pthread_mutex_unlock(&f->mu);
	return r;
}

void functions_call_drop(struct sandbox *sb, uint32_t set, uint64_t call)
{
	struct fset *f = find(sb, set, NULL);
	if (!f)
		return;
	pthread_mutex_lock(&f->mu);
	pump(f);
	int had = 0;
	for (struct answer **pp = &f->answers; *pp; pp = &(*pp)->next) {
		if ((*pp)->id == call) {
			struct answer *a = *pp;
			*pp = a->next;
			free(a->text);
			free(a);
			had = 1;
			break;
		}
	}
	if (!had) {
		/* still running or queued: the server interrupts or drops it,
		 * and its late answer is discarded */
		struct answer *a = xcalloc(1, sizeof(*a));
		a->id = call;
		a->next = f->answers;
		f->answers = a;
		struct sbuf line = {0};
		sbuf_printf(&line, "{\"cancel\": %llu}\n", (unsigned long long)call);
		struct job *j = jobs_find(sb, f->kjob);
		if (j && job_state(j) == JOB_RUNNING)
			job_stdin_write(j, line.data, line.len);
		job_put(j);
		sbuf_free(&line);
	}
	pthread_mutex_unlock(&f->mu);
}
