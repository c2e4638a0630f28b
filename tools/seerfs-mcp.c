/*
 * seerfs-mcp.c - an MCP server (JSON-RPC 2.0 over stdio, one message a line)
 * for a seerfs mount: a sandbox's served functions as MCP tools with their
 * JSON schemas (Seer's expose_as="mcp"), and the mount's own operations as
 * tools (create a sandbox, exec, read and write files, notebook cells,
 * snapshot, terminate). Everything goes through the mount's files, as any
 * other client of seerfs would.
 *
 * usage: seerfs-mcp [--sandbox NAME] [--scoped] MOUNT
 *   --sandbox NAME  offer NAME's served functions as tools (SET__FN when two
 *                   sets have a function of the same name, else FN)
 *   --scoped        offer only those (the mount's own tools are left out)
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <linux/openat2.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PROTOCOL "2025-06-18"
#define READ_MAX (4 << 20)

struct opts {
	const char *mount;
	const char *sandbox;
	int scoped;
};

static struct opts O;

/* ---- small helpers -------------------------------------------------------------------- */

static int name_ok(const char *s)
{
	if (!s || !*s || strlen(s) > 64 || !strcmp(s, ".") || !strcmp(s, ".."))
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
		      *s == '_' || *s == '.'))
			return 0;
	return 1;
}

static char *path_of(const char *sb, const char *rest)
{
	char *p = NULL;
	if (asprintf(&p, "%s/%s%s%s", O.mount, sb, rest ? "/" : "", rest ? rest : "") < 0)
		abort();
	return p;
}

/* Reads fd to EOF (at most READ_MAX); -errno. */
static int read_all(int fd, char **out, size_t *len)
{
	size_t cap = 65536, n = 0;
	char *b = malloc(cap + 1);
	if (!b)
		return -ENOMEM;
	for (;;) {
		if (n == cap) {
			if (cap >= READ_MAX) {
				free(b);
				return -EFBIG;
			}
			cap *= 2;
			char *nb = realloc(b, cap + 1);
			if (!nb) {
				free(b);
				return -ENOMEM;
			}
			b = nb;
		}
		ssize_t r = read(fd, b + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = -errno;
			free(b);
			return e;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	b[n] = '\0';
	*out = b;
	*len = n;
	return 0;
}

static int read_path(const char *path, char **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = read_all(fd, out, len);
	close(fd);
	return r;
}

static int write_path(const char *path, const char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t w = write(fd, data, len);
	int r = w < 0 ? -errno : 0;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	return r;
}

/* The exec transaction: open read-write, one write, read to EOF. */
static int transact(const char *path, const char *data, size_t len, char **out, size_t *outlen)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = 0;
	if (write(fd, data, len) < 0)
		r = -errno;
	if (r == 0)
		r = read_all(fd, out, outlen);
	close(fd);
	return r;
}

/* ---- results ---------------------------------------------------------------------------- */

static struct json_object *text_result(const char *text, int is_error)
{
	struct json_object *r = json_object_new_object(), *c = json_object_new_array(), *t = json_object_new_object();
	json_object_object_add(t, "type", json_object_new_string("text"));
	json_object_object_add(t, "text", json_object_new_string(text));
	json_object_array_add(c, t);
	json_object_object_add(r, "content", c);
	json_object_object_add(r, "isError", json_object_new_boolean(is_error));
	return r;
}

static struct json_object *errno_result(const char *what, int e)
{
	char *m = NULL;
	if (asprintf(&m, "%s: %s", what, strerror(e)) < 0)
		abort();
	struct json_object *r = text_result(m, 1);
	free(m);
	return r;
}

/* The sandbox's error file, when an operation on it failed. */
static struct json_object *sandbox_errno_result(const char *sb, const char *what, int e)
{
	char *p = path_of(sb, "error"), *txt = NULL;
	size_t n = 0;
	struct json_object *r;
	if (read_path(p, &txt, &n) == 0 && n) {
		char *m = NULL;
		if (asprintf(&m, "%s: %s\n%s", what, strerror(e), txt) < 0)
			abort();
		r = text_result(m, 1);
		free(m);
	} else {
		r = errno_result(what, e);
	}
	free(txt);
	free(p);
	return r;
}

static const char *sarg(struct json_object *args, const char *k)
{
	struct json_object *v;
	return args && json_object_object_get_ex(args, k, &v) && json_object_is_type(v, json_type_string)
		       ? json_object_get_string(v)
		       : NULL;
}

/* ---- the mount's own tools --------------------------------------------------------------- */

struct tool {
	const char *name, *desc, *schema;
	struct json_object *(*run)(struct json_object *args);
};

static struct json_object *t_list(struct json_object *a)
{
	(void)a;
	DIR *d = opendir(O.mount);
	if (!d)
		return errno_result(O.mount, errno);
	struct json_object *arr = json_object_new_array();
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' || !strcmp(e->d_name, "README") || !strcmp(e->d_name, "CONFIG") ||
		    !strcmp(e->d_name, "snapshots"))
			continue;
		json_object_array_add(arr, json_object_new_string(e->d_name));
	}
	closedir(d);
	struct json_object *r = text_result(json_object_to_json_string(arr), 0);
	json_object_put(arr);
	return r;
}

static struct json_object *t_create(struct json_object *a)
{
	const char *name = sarg(a, "name");
	struct json_object *cfg = NULL;
	if (!name_ok(name))
		return text_result("name: letters, digits, '-', '_', '.', at most 64", 1);
	json_object_object_get_ex(a, "config", &cfg);
	const char *text = cfg ? json_object_to_json_string_ext(cfg, JSON_C_TO_STRING_PLAIN) : "{}";
	char *dir = path_of(name, NULL), *cp = path_of(name, "config.json"), *wp = path_of(name, "wait");
	struct json_object *r;
	char *st = NULL;
	size_t n;
	if (mkdir(dir, 0755) < 0)
		r = errno_result(dir, errno);
	else if (write_path(cp, text, strlen(text)) < 0)
		r = sandbox_errno_result(name, "config.json", errno ? errno : EINVAL);
	else if (read_path(wp, &st, &n) < 0)
		r = errno_result(wp, errno);
	else
		r = text_result(st, strncmp(st, "running", 7) != 0);
	free(st);
	free(dir);
	free(cp);
	free(wp);
	return r;
}

/* Output of the caller's newest job and its exit, as one text. */
static struct json_object *job_result(const char *sb, int r, char *out, size_t n)
{
	if (r < 0) {
		free(out);
		return sandbox_errno_result(sb, "exec", -r);
	}
	char *ep = path_of(sb, "jobs/mine/exit"), *ex = NULL;
	size_t el;
	if (read_path(ep, &ex, &el) < 0)
		ex = strdup("?\n");
	char *m = NULL;
	if (asprintf(&m, "%.*s%s[exit: %.*s]", (int)n, out ? out : "", n && out[n - 1] != '\n' ? "\n" : "",
		     (int)strcspn(ex, "\n"), ex) < 0)
		abort();
	struct json_object *res = text_result(m, strcmp(ex, "0\n") != 0);
	free(m);
	free(ex);
	free(ep);
	free(out);
	return res;
}

static struct json_object *t_exec(struct json_object *a)
{
	const char *sb = sarg(a, "sandbox"), *cmd = sarg(a, "command");
	if (!name_ok(sb) || !cmd || !*cmd)
		return text_result("sandbox and command are required", 1);
	char *p = path_of(sb, "exec"), *out = NULL;
	size_t n = 0;
	int r = transact(p, cmd, strlen(cmd), &out, &n);
	free(p);
	return job_result(sb, r, out, n);
}

static struct json_object *t_cell(struct json_object *a)
{
	const char *sb = sarg(a, "sandbox"), *s = sarg(a, "session"), *code = sarg(a, "code");
	if (!name_ok(sb) || !name_ok(s) || s[0] == '.' || !code)
		return text_result("sandbox, session and code are required", 1);
	char rest[128];
	snprintf(rest, sizeof(rest), "sessions/%s", s);
	char *d = path_of(sb, rest);
	if (mkdir(d, 0755) < 0 && errno != EEXIST) {
		struct json_object *r = sandbox_errno_result(sb, "sessions", errno);
		free(d);
		return r;
	}
	free(d);
	snprintf(rest, sizeof(rest), "sessions/%s/exec", s);
	char *p = path_of(sb, rest), *out = NULL;
	size_t n = 0;
	int r = transact(p, *code ? code : "\n", *code ? strlen(code) : 1, &out, &n);
	free(p);
	return job_result(sb, r, out, n);
}

static struct json_object *t_notebook(struct json_object *a)
{
	const char *sb = sarg(a, "sandbox"), *s = sarg(a, "session");
	if (!name_ok(sb) || !name_ok(s))
		return text_result("sandbox and session are required", 1);
	char rest[128];
	snprintf(rest, sizeof(rest), "sessions/%s/notebook.ipynb", s);
	char *p = path_of(sb, rest), *txt = NULL;
	size_t n;
	int r = read_path(p, &txt, &n);
	struct json_object *res = r < 0 ? errno_result(p, -r) : text_result(txt, 0);
	free(txt);
	free(p);
	return res;
}

/* A path in the sandbox, resolved under its root/ as if that were "/":
 * symlinks planted there cannot lead out of it. */
static int open_in_root(const char *sb, const char *path, int flags, mode_t mode)
{
	char *rp = path_of(sb, "root");
	int dfd = open(rp, O_PATH | O_DIRECTORY | O_CLOEXEC);
	free(rp);
	if (dfd < 0)
		return -errno;
	while (*path == '/')
		path++;
	struct open_how how = {.flags = (uint64_t)flags | O_CLOEXEC, .mode = flags & O_CREAT ? mode : 0,
			       .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
	int fd = (int)syscall(SYS_openat2, dfd, *path ? path : ".", &how, sizeof(how));
	int e = errno;
	close(dfd);
	return fd < 0 ? -e : fd;
}

static struct json_object *t_read(struct json_object *a)
{
	const char *sb = sarg(a, "sandbox"), *path = sarg(a, "path");
	if (!name_ok(sb) || !path)
		return text_result("sandbox and path are required", 1);
	int fd = open_in_root(sb, path, O_RDONLY, 0);
	if (fd < 0)
		return sandbox_errno_result(sb, path, -fd);
	char *txt = NULL;
	size_t n = 0;
	int r = read_all(fd, &txt, &n);
	close(fd);
	if (r < 0)
		return errno_result(path, -r);
	struct json_object *res = memchr(txt, '\0', n) ? text_result("the file is binary; use exec (base64 FILE)", 1)
						       : text_result(txt, 0);
	free(txt);
	return res;
}

static struct json_object *t_write(struct json_object *a)
{
	const char *sb = sarg(a, "sandbox"), *path = sarg(a, "path"), *content = sarg(a, "content");
	if (!name_ok(sb) || !path || !content)
		return text_result("sandbox, path and content are required", 1);
	int fd = open_in_root(sb, path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return sandbox_errno_result(sb, path, -fd);
	size_t len = strlen(content), done = 0;
	while (done < len) {
		ssize_t w = write(fd, content + done, len - done);
		if (w < 0) {
			int e = errno;
			close(fd);
			return errno_result(path, e);
		}
		done += (size_t)w;
	}
	if (close(fd) < 0)
		return errno_result(path, errno);
	return text_result("written", 0);
}

static struct json_object *ctl_tool(struct json_object *a, const char *word, int with_name)
{
	const char *sb = sarg(a, "sandbox"), *name = sarg(a, "name");
	if (!name_ok(sb) || (with_name && !name_ok(name)))
		return text_result(with_name ? "sandbox and name are required" : "sandbox is required", 1);
	char line[160];
	snprintf(line, sizeof(line), "%s%s%s\n", word, with_name ? " " : "", with_name ? name : "");
	char *p = path_of(sb, "ctl");
	int r = write_path(p, line, strlen(line));
	free(p);
	if (r < 0)
		return sandbox_errno_result(sb, word, -r);
	return text_result("done", 0);
}

static struct json_object *t_snapshot(struct json_object *a)
{
	return ctl_tool(a, "snapshot", 1);
}

static struct json_object *t_terminate(struct json_object *a)
{
	return ctl_tool(a, "terminate", 0);
}

static struct json_object *t_status(struct json_object *a)
{
	const char *sb = sarg(a, "sandbox");
	if (!name_ok(sb))
		return text_result("sandbox is required", 1);
	char *p = path_of(sb, "status"), *txt = NULL;
	size_t n;
	int r = read_path(p, &txt, &n);
	struct json_object *res = r < 0 ? errno_result(p, -r) : text_result(txt, 0);
	free(txt);
	free(p);
	return res;
}

#define S_SB "\"sandbox\": {\"type\": \"string\", \"description\": \"the sandbox's name\"}"
static const struct tool mount_tools[] = {
	{"seerfs_list_sandboxes", "The sandboxes of the mount (names).", "{\"type\": \"object\", \"properties\": {}}",
	 t_list},
	{"seerfs_create_sandbox",
	 "Creates a sandbox from a config (Seer's SandboxConfig fields: gpu, models, python_packages, env, "
	 "timeout, serve, scoped...) and waits until it runs or fails; returns its status.",
	 "{\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\"}, \"config\": {\"type\": \"object\"}}, "
	 "\"required\": [\"name\"]}",
	 t_create},
	{"seerfs_exec", "Runs a shell command in the sandbox; returns its output and exit status.",
	 "{\"type\": \"object\", \"properties\": {" S_SB ", \"command\": {\"type\": \"string\"}}, "
	 "\"required\": [\"sandbox\", \"command\"]}",
	 t_exec},
	{"seerfs_run_cell",
	 "Runs Python code as the next cell of a notebook session (a persistent kernel: variables and loaded "
	 "models stay between cells; the session starts on first use); returns the cell's output and exit.",
	 "{\"type\": \"object\", \"properties\": {" S_SB ", \"session\": {\"type\": \"string\"}, \"code\": {\"type\": "
	 "\"string\"}}, \"required\": [\"sandbox\", \"session\", \"code\"]}",
	 t_cell},
	{"seerfs_notebook", "The session's notebook (.ipynb, nbformat 4) with every cell and its outputs.",
	 "{\"type\": \"object\", \"properties\": {" S_SB ", \"session\": {\"type\": \"string\"}}, \"required\": "
	 "[\"sandbox\", \"session\"]}",
	 t_notebook},
	{"seerfs_read_file", "Reads a text file of the sandbox (a path as the sandbox sees it).",
	 "{\"type\": \"object\", \"properties\": {" S_SB ", \"path\": {\"type\": \"string\"}}, \"required\": "
	 "[\"sandbox\", \"path\"]}",
	 t_read},
	{"seerfs_write_file", "Writes a text file in the sandbox (created or replaced).",
	 "{\"type\": \"object\", \"properties\": {" S_SB ", \"path\": {\"type\": \"string\"}, \"content\": {\"type\": "
	 "\"string\"}}, \"required\": [\"sandbox\", \"path\", \"content\"]}",
	 t_write},
	{"seerfs_snapshot", "Snapshots the sandbox's files under a name (MOUNT/snapshots/NAME).",
	 "{\"type\": \"object\", \"properties\": {" S_SB ", \"name\": {\"type\": \"string\"}}, \"required\": "
	 "[\"sandbox\", \"name\"]}",
	 t_snapshot},
	{"seerfs_terminate", "Terminates the sandbox (its files stay until it is removed).",
	 "{\"type\": \"object\", \"properties\": {" S_SB "}, \"required\": [\"sandbox\"]}", t_terminate},
	{"seerfs_status", "The sandbox's status.",
	 "{\"type\": \"object\", \"properties\": {" S_SB "}, \"required\": [\"sandbox\"]}", t_status},
};

/* ---- served functions as tools ---------------------------------------------------------- */

struct served {
	char *tool, *set, *fn;
	struct json_object *info;   /* the entry of functions.json */
};

/* Every served function of O.sandbox; frees with served_free. */
static size_t served_list(struct served **out)
{
	*out = NULL;
	if (!O.sandbox)
		return 0;
	char *fd = path_of(O.sandbox, "functions");
	DIR *d = opendir(fd);
	free(fd);
	if (!d)
		return 0;
	size_t n = 0;
	struct served *v = NULL;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' || strchr(e->d_name, '.'))
			continue;
		char rest[300], *txt = NULL;
		size_t len;
		snprintf(rest, sizeof(rest), "functions/%s/functions.json", e->d_name);
		char *p = path_of(O.sandbox, rest);
		int r = read_path(p, &txt, &len);
		free(p);
		struct json_object *arr = r == 0 ? json_tokener_parse(txt) : NULL;
		free(txt);
		for (size_t i = 0; arr && i < json_object_array_length(arr); i++) {
			struct json_object *f = json_object_array_get_idx(arr, i), *nm;
			if (!json_object_object_get_ex(f, "name", &nm))
				continue;
			v = realloc(v, (n + 1) * sizeof(*v));
			if (!v)
				abort();
			v[n].set = strdup(e->d_name);
			v[n].fn = strdup(json_object_get_string(nm));
			v[n].info = json_object_get(f);
			v[n].tool = NULL;
			n++;
		}
		json_object_put(arr);
	}
	closedir(d);
	for (size_t i = 0; i < n; i++) {
		int dup = 0;
		for (size_t k = 0; k < n; k++)
			dup |= k != i && !strcmp(v[k].fn, v[i].fn);
		if (dup) {
			if (asprintf(&v[i].tool, "%s__%s", v[i].set, v[i].fn) < 0)
				abort();
		} else {
			v[i].tool = strdup(v[i].fn);
		}
	}
	*out = v;
	return n;
}

static void served_free(struct served *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].tool);
		free(v[i].set);
		free(v[i].fn);
		json_object_put(v[i].info);
	}
	free(v);
}

static struct json_object *call_served(const struct served *s, struct json_object *args)
{
	char rest[300];
	snprintf(rest, sizeof(rest), "functions/%s/%s", s->set, s->fn);
	char *p = path_of(O.sandbox, rest), *out = NULL;
	size_t n = 0;
	const char *req = args ? json_object_to_json_string_ext(args, JSON_C_TO_STRING_PLAIN) : "{}";
	int r = transact(p, req, strlen(req), &out, &n);
	free(p);
	if (r < 0)
		return errno_result(s->fn, -r);
	struct json_object *ans = json_tokener_parse(out), *ok, *v;
	free(out);
	struct json_object *res;
	if (ans && json_object_object_get_ex(ans, "ok", &ok) && json_object_get_boolean(ok)) {
		json_object_object_get_ex(ans, "result", &v);
		res = text_result(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE),
				  0);
	} else {
		struct json_object *e = NULL, *tb = NULL;
		if (ans) {
			json_object_object_get_ex(ans, "error", &e);
			json_object_object_get_ex(ans, "traceback", &tb);
		}
		char *m = NULL;
		if (asprintf(&m, "%s%s%s", e ? json_object_get_string(e) : "no answer",
			     tb && *json_object_get_string(tb) ? "\n" : "", tb ? json_object_get_string(tb) : "") < 0)
			abort();
		res = text_result(m, 1);
		free(m);
	}
	json_object_put(ans);
	return res;
}

/* ---- JSON-RPC ------------------------------------------------------------------------------- */

static struct json_object *tools_list(void)
{
	struct json_object *arr = json_object_new_array();
	struct served *sv;
	size_t n = served_list(&sv);
	for (size_t i = 0; i < n; i++) {
		struct json_object *t = json_object_new_object(), *v;
		json_object_object_add(t, "name", json_object_new_string(sv[i].tool));
		const char *doc = json_object_object_get_ex(sv[i].info, "doc", &v) ? json_object_get_string(v) : "";
		const char *sig = json_object_object_get_ex(sv[i].info, "signature", &v) ? json_object_get_string(v) : "";
		char *desc = NULL;
		if (asprintf(&desc, "%s%s%s", sig, *doc ? "\n\n" : "", doc) < 0)
			abort();
		json_object_object_add(t, "description", json_object_new_string(desc));
		free(desc);
		json_object_object_add(t, "inputSchema", json_object_object_get_ex(sv[i].info, "schema", &v)
								 ? json_object_get(v)
								 : json_tokener_parse("{\"type\": \"object\"}"));
		json_object_array_add(arr, t);
	}
	served_free(sv, n);
	for (size_t i = 0; !O.scoped && i < sizeof(mount_tools) / sizeof(mount_tools[0]); i++) {
		struct json_object *t = json_object_new_object();
		json_object_object_add(t, "name", json_object_new_string(mount_tools[i].name));
		json_object_object_add(t, "description", json_object_new_string(mount_tools[i].desc));
		json_object_object_add(t, "inputSchema", json_tokener_parse(mount_tools[i].schema));
		json_object_array_add(arr, t);
	}
	struct json_object *r = json_object_new_object();
	json_object_object_add(r, "tools", arr);
	return r;
}

static struct json_object *tools_call(struct json_object *params, int *code, const char **msg)
{
	const char *name = sarg(params, "name");
	struct json_object *args = NULL;
	if (params)
		json_object_object_get_ex(params, "arguments", &args);
	if (!name) {
		*code = -32602;
		*msg = "params.name is required";
		return NULL;
	}
	struct served *sv;
	size_t n = served_list(&sv);
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(sv[i].tool, name)) {
			struct json_object *r = call_served(&sv[i], args);
			served_free(sv, n);
			return r;
		}
	}
	served_free(sv, n);
	for (size_t i = 0; !O.scoped && i < sizeof(mount_tools) / sizeof(mount_tools[0]); i++)
		if (!strcmp(mount_tools[i].name, name))
			return mount_tools[i].run(args);
	*code = -32602;
	*msg = "unknown tool";
	return NULL;
}

static void send_obj(struct json_object *o)
{
	fputs(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE), stdout);
	fputc('\n', stdout);
	fflush(stdout);
}

static void reply(struct json_object *id, struct json_object *result, int code, const char *msg)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "jsonrpc", json_object_new_string("2.0"));
	json_object_object_add(o, "id", id ? json_object_get(id) : NULL);
	if (result) {
		json_object_object_add(o, "result", result);
	} else {
		struct json_object *e = json_object_new_object();
		json_object_object_add(e, "code", json_object_new_int(code));
		json_object_object_add(e, "message", json_object_new_string(msg));
		json_object_object_add(o, "error", e);
	}
	send_obj(o);
	json_object_put(o);
}

static void handle(struct json_object *m)
{
	struct json_object *id = NULL, *params = NULL;
	int has_id = json_object_object_get_ex(m, "id", &id);
	const char *method = sarg(m, "method");
	json_object_object_get_ex(m, "params", &params);
	if (!method) {
		if (has_id && !json_object_object_get_ex(m, "result", NULL) && !json_object_object_get_ex(m, "error", NULL))
			reply(id, NULL, -32600, "invalid request: no method");
		return;   /* a response to us (we send no requests) */
	}
	if (!has_id)
		return;   /* notifications: initialized, cancelled... */
	if (!strcmp(method, "initialize")) {
		struct json_object *r = json_object_new_object(), *caps = json_object_new_object(),
				   *tools = json_object_new_object(), *info = json_object_new_object();
		const char *pv = params ? sarg(params, "protocolVersion") : NULL;
		json_object_object_add(r, "protocolVersion", json_object_new_string(pv ? pv : PROTOCOL));
		json_object_object_add(tools, "listChanged", json_object_new_boolean(0));
		json_object_object_add(caps, "tools", tools);
		json_object_object_add(r, "capabilities", caps);
		json_object_object_add(info, "name", json_object_new_string("seerfs-mcp"));
		json_object_object_add(info, "version", json_object_new_string(SEERFS_VERSION));
		json_object_object_add(r, "serverInfo", info);
		reply(id, r, 0, NULL);
	} else if (!strcmp(method, "ping")) {
		reply(id, json_object_new_object(), 0, NULL);
	} else if (!strcmp(method, "tools/list")) {
		reply(id, tools_list(), 0, NULL);
	} else if (!strcmp(method, "tools/call")) {
		int code = 0;
		const char *msg = NULL;
		struct json_object *r = tools_call(params, &code, &msg);
		reply(id, r, code, msg);
	} else {
		reply(id, NULL, -32601, "method not found");
	}
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--sandbox") && i + 1 < argc)
			O.sandbox = argv[++i];
		else if (!strcmp(argv[i], "--scoped"))
			O.scoped = 1;
		else if (argv[i][0] != '-' && !O.mount)
			O.mount = argv[i];
		else {
			fprintf(stderr, "usage: seerfs-mcp [--sandbox NAME] [--scoped] MOUNT\n");
			return 2;
		}
	}
	if (!O.mount || (O.sandbox && !name_ok(O.sandbox))) {
		fprintf(stderr, "usage: seerfs-mcp [--sandbox NAME] [--scoped] MOUNT\n");
		return 2;
	}
	if (O.scoped && !O.sandbox) {
		fprintf(stderr, "seerfs-mcp: --scoped offers a sandbox's functions only: name it with --sandbox\n");
		return 2;
	}
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	while ((n = getline(&line, &cap, stdin)) >= 0) {
		while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (!n)
			continue;
		struct json_tokener *tok = json_tokener_new();
		struct json_object *m = json_tokener_parse_ex(tok, line, (int)n);
		int bad = json_tokener_get_error(tok) != json_tokener_success;
		json_tokener_free(tok);
		if (bad || !m) {
			reply(NULL, NULL, -32700, "parse error");
		} else if (!json_object_is_type(m, json_type_object)) {
			reply(NULL, NULL, -32600, "invalid request: send one JSON object a line");
		} else {
			handle(m);
		}
		json_object_put(m);
	}
	free(line);
	return 0;
}
