/*
 * provision.c - provisioning what a sandbox holds (see provision.h and
 * docs/provisioning.md for the order of the steps and their rules).
 *
 * Everything here runs on the sandbox's provisioning thread with no lock
 * held. Commands inside the sandbox go straight through the provider's
 * spawn with a pipe (jobs_start refuses while the sandbox provisions); the
 * exit code comes back as a marker line with a random nonce, because the
 * provider reports exits only to the jobs table. Files are written into the
 * sandbox through its root fd with openat2(RESOLVE_IN_ROOT), so a symlink
 * planted inside can never redirect a write onto the host.
 */
#include "core/provision.h"
#include "core/config.h"
#include "core/lib/hf.h"
#include "core/provider.h"
#include "core/root.h"
#include "core/sandbox.h"
#include "core/lib/util.h"
#include "core/lib/walk.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <linux/openat2.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define OUT_CAP (256 * 1024)     /* bytes of a command's output kept */
#define CMD_TIMEOUT_S 3600.0     /* one provisioning command at most */
#define VENV "/opt/venv"

/* ---- provisioned.json ------------------------------------------------------ */

static void state_path(struct sandbox *sb, char *buf, size_t len)
{
	snprintf(buf, len, "%s/provisioned.json", sb->dir);
}

static struct json_object *state_load(struct sandbox *sb)
{
	return sandbox_provisioned(sb);
}

static int state_save(struct sandbox *sb, struct json_object *o)
{
	char p[4096];
	state_path(sb, p, sizeof(p));
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
	return write_file_atomic(p, s, strlen(s), 0600);
}

static struct json_object *obj_get(struct json_object *o, const char *k)
{
	struct json_object *v = NULL;
	return json_object_object_get_ex(o, k, &v) ? v : NULL;
}

/* Whether step `name` completed from a config with this fingerprint. */
static int step_done(struct json_object *st, const char *name, const char *fp)
{
	struct json_object *v = obj_get(obj_get(st, "steps"), name);
	return v && !strcmp(json_object_get_string(v), fp);
}

static void step_mark(struct sandbox *sb, struct json_object *st, const char *name, const char *fp)
{
	json_object_object_add(obj_get(st, "steps"), name, json_object_new_string(fp));
	state_save(sb, st);
}

static void step_forget(struct json_object *st, const char *name)
{
	json_object_object_del(obj_get(st, "steps"), name);
}

/* ---- small helpers ------------------------------------------------------------ */

/* Replaces every secret value (and the HF token) in s with "***", so that
 * command output and hub messages can be logged. */
static void redact(const struct seer_config *cfg, char *s)
{
	const char *vals[64];
	size_t nv = 0;
	for (size_t i = 0; i < cfg->n_secrets && nv < 63; i++)
		vals[nv++] = getenv(cfg->secrets[i]);
	vals[nv++] = getenv("HF_TOKEN");
	for (size_t i = 0; i < nv; i++) {
		const char *v = vals[i];
		size_t vl = v ? strlen(v) : 0;
		if (vl < 3)   /* too short to be a credential; masking would garble text */
			continue;
		char *p;
		while ((p = strstr(s, v))) {
			memcpy(p, "***", 3);
			memmove(p + 3, p + vl, strlen(p + vl) + 1);
		}
	}
}

/* Replaces every occurrence of `what` in s (capacity n) with `with`. */
static void replace_all(char *s, size_t n, const char *what, const char *with)
{
	size_t wl = strlen(what), rl = strlen(with);
	if (!wl)
		return;
	char *p = s;
	while ((p = strstr(p, what))) {
		size_t tail = strlen(p + wl);
		if ((size_t)(p - s) + rl + tail + 1 > n)
			break;
		memmove(p + rl, p + wl, tail + 1);
		memcpy(p, with, rl);
		p += rl;
	}
}

static void random_hex(char *buf, size_t nbytes)
{
	unsigned char r[32];
	if (nbytes > sizeof(r))
		nbytes = sizeof(r);
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || read(fd, r, nbytes) != (ssize_t)nbytes) {
		uint64_t t = now_ns() ^ (uint64_t)getpid();
		for (size_t i = 0; i < nbytes; i++)
			r[i] = (unsigned char)(t >> ((i % 8) * 8)) ^ (unsigned char)i;
	}
	if (fd >= 0)
		close(fd);
	for (size_t i = 0; i < nbytes; i++)
		sprintf(buf + 2 * i, "%02x", r[i]);
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Logs the last lines of a command's output, redacted, one log line each. */
static void log_output(struct sandbox *sb, const struct seer_config *cfg, const char *what, const struct sbuf *out)
{
	if (!out->data || !out->len)
		return;
	size_t start = out->len > 8192 ? out->len - 8192 : 0;
	char *copy = xstrdup(out->data + start);
	redact(cfg, copy);
	char *save = NULL;
	for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
		sandbox_log(sb, "  %s | %s", what, l);
	free(copy);
}

/* The last ~400 bytes of output on one line, redacted, for an error text. */
static void output_tail(const struct seer_config *cfg, const struct sbuf *out, char *buf, size_t n)
{
	buf[0] = '\0';
	if (!out->data)
		return;
	size_t len = out->len;
	while (len && (out->data[len - 1] == '\n' || out->data[len - 1] == ' '))
		len--;
	size_t start = len > 400 ? len - 400 : 0;
	snprintf(buf, n, "%s%.*s", start ? "..." : "", (int)(len - start), out->data + start);
	redact(cfg, buf);
	for (char *p = buf; *p; p++)
		if (*p == '\n')
			*p = ' ';
}

/* ---- running a command inside the sandbox -------------------------------------- */

static char **env_with(struct sandbox *sb, char *const *extra)
{
	char **v = sandbox_environ(sb);
	size_t n = 0;
	while (v[n])
		n++;
	for (size_t i = 0; extra && extra[i]; i++) {
		const char *eq = strchr(extra[i], '=');
		size_t kl = eq ? (size_t)(eq - extra[i]) : strlen(extra[i]);
		size_t j;
		for (j = 0; j < n; j++)
			if (!strncmp(v[j], extra[i], kl) && v[j][kl] == '=')
				break;
		if (j < n) {
			free(v[j]);
			v[j] = xstrdup(extra[i]);
			continue;
		}
		char **nv = realloc(v, (n + 2) * sizeof(char *));
		if (!nv)
			abort();
		v = nv;
		v[n++] = xstrdup(extra[i]);
		v[n] = NULL;
	}
	return v;
}

/*
 * Runs `script` with /bin/sh -c in the sandbox (cwd, environment plus
 * `extra`), stdout and stderr into *out (the last OUT_CAP bytes). *code gets
 * the exit status (128+N for a signal). Returns 0, -ECANCELED (terminate),
 * -ETIMEDOUT or another -errno when it could not run.
 */
static int sb_exec(struct sandbox *sb, const char *script, const char *cwd, char *const *extra, int *code,
		   struct sbuf *out, char *err, size_t n)
{
	char nonce[33], marker[64];
	random_hex(nonce, 16);
	snprintf(marker, sizeof(marker), "@@seer-exit-%s:", nonce);
	struct sbuf full = {0};
	/* A subshell, so `exit` in the script still reaches the marker echo. */
	sbuf_printf(&full, "(\n%s\n) </dev/null 2>&1; echo \"\n%s$?\"", script, marker);
	char *argv[] = {"/bin/sh", "-c", full.data, NULL};
	char **envp = env_with(sb, extra);
	int p[2] = {-1, -1};
	int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
	int r;
	if (nul < 0 || pipe2(p, O_CLOEXEC) < 0) {
		r = -errno;
		snprintf(err, n, "sandbox %s: cannot create a pipe: %s", sb->name, strerror(-r));
		goto out;
	}
	struct seer_spawn req = {.argv = argv, .envp = envp, .cwd = cwd ? cwd : "/workspace",
				 .fd_in = nul, .fd_out = p[1], .fd_err = p[1]};
	int pid = 0;
	r = sb->prov->spawn(sb, &req, &pid, err, n);
	close(p[1]);
	p[1] = -1;
	if (r < 0)
		goto out;
	double deadline = mono_s() + CMD_TIMEOUT_S;
	int found = 0;
	*code = -1;
	for (;;) {
		if (sb->cancel || mono_s() > deadline) {
			sb->prov->signal(sb, pid, SIGKILL, 1);
			r = sb->cancel ? -ECANCELED : -ETIMEDOUT;
			if (r == -ETIMEDOUT)
				snprintf(err, n, "sandbox %s: a provisioning command ran over %.0f s and was killed", sb->name,
					 CMD_TIMEOUT_S);
			goto out;
		}
		struct pollfd pf = {p[0], POLLIN, 0};
		int k = poll(&pf, 1, 200);
		if (k < 0 && errno != EINTR) {
			r = -errno;
			break;
		}
		if (k <= 0)
			continue;
		char buf[16384];
		ssize_t got = read(p[0], buf, sizeof(buf));
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		sbuf_append(out, buf, (size_t)got);
		if (out->len > OUT_CAP) {
			size_t drop = out->len - OUT_CAP / 2;
			memmove(out->data, out->data + drop, out->len - drop + 1);
			out->len -= drop;
		}
		char *m = strstr(out->data, marker);
		/* The marker line ends the command; background children that kept
		 * the pipe open (a server) do not hold us up. */
		if (m && strchr(m, '\n')) {
			*code = atoi(m + strlen(marker));
			if (m > out->data && m[-1] == '\n')
				m--;
			out->len = (size_t)(m - out->data);
			out->data[out->len] = '\0';
			found = 1;
			break;
		}
	}
	if (!found && r == 0) {
		r = -EIO;
		snprintf(err, n, "sandbox %s: a provisioning command ended without reporting its exit (the sandbox stopped?)",
			 sb->name);
	}
out:
	if (p[0] >= 0)
		close(p[0]);
	if (p[1] >= 0)
		close(p[1]);
	if (nul >= 0)
		close(nul);
	strv_free(envp);
	sbuf_free(&full);
	return r;
}

/* Runs a command that must succeed; on failure logs its output and writes
 * an error naming `what` and the tail of the output. */
static int must_exec(struct sandbox *sb, const struct seer_config *cfg, const char *what, const char *script,
		     const char *cwd, char *const *extra, struct sbuf *outp, char *err, size_t n)
{
	struct sbuf out = {0};
	int code = -1;
	int r = sb_exec(sb, script, cwd, extra, &code, &out, err, n);
	if (r == 0 && code != 0) {
		log_output(sb, cfg, what, &out);
		char tail[512];
		output_tail(cfg, &out, tail, sizeof(tail));
		snprintf(err, n, "sandbox %s: %s failed with exit %d (full output in the log): %s", sb->name, what, code, tail);
		r = -EIO;
	}
	if (outp)
		*outp = out;
	else
		sbuf_free(&out);
	return r;
}

/* ---- writing into the sandbox through its root fd ----------------------------------- */

static int open_in_root(int rootfd, const char *rel, int flags, mode_t mode)
{
	struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC), .mode = mode,
			       .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
	long fd = syscall(SYS_openat2, rootfd, rel, &how, sizeof(how));
	return fd < 0 ? -errno : (int)fd;
}

/* Whom what seerfs writes into a sandbox belongs to: the sandbox's root,
 * host ids ctx->ids.uid/gid. Under a user those are the user's own, and
 * set is 0; a root seerfs gives each new entry away with fchown. */
struct owner {
	uid_t uid;
	gid_t gid;
	int set;
};

static struct owner sandbox_owner(struct sandbox *sb)
{
	const struct seer_idmap *ids = &sb->ctx->ids;
	return (struct owner){ids->uid, ids->gid, ids->uid != geteuid() || ids->gid != getegid()};
}

/* Gives the entry at fd (any kind, O_PATH included) or name in it (a link:
 * never followed) to the sandbox's root. */
static int own_at(const struct owner *o, int fd, const char *name)
{
	if (!o->set)
		return 0;
	if (fchownat(fd, name, o->uid, o->gid, name[0] ? AT_SYMLINK_NOFOLLOW : AT_EMPTY_PATH) < 0)
		return -errno;
	return 0;
}

/* Opens (creating as needed) directory `rel` ("workspace/a/b") inside the
 * sandbox; every component resolves inside the sandbox's root. */
static int mkdir_in_root(int rootfd, const char *rel, const struct owner *o)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s", rel);
	int fd = open_in_root(rootfd, path, O_PATH | O_DIRECTORY, 0);
	if (fd >= 0 || fd != -ENOENT)
		return fd;
	char *slash = strrchr(path, '/');
	int parent;
	const char *base;
	if (slash) {
		*slash = '\0';
		parent = mkdir_in_root(rootfd, path, o);
		base = slash + 1;
	} else {
		parent = fcntl(rootfd, F_DUPFD_CLOEXEC, 3);
		base = path;
	}
	if (parent < 0)
		return parent;
	int made = mkdirat(parent, base, 0755) == 0;
	if (!made && errno != EEXIST) {
		int e = -errno;
		close(parent);
		return e;
	}
	fd = openat(parent, base, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int e = fd < 0 ? -errno : made ? own_at(o, fd, "") : 0;
	close(parent);
	if (fd >= 0 && e < 0)
		close(fd);
	return e < 0 ? e : fd;
}

static int copy_fd(int in, int out)
{
	char buf[65536];
	for (;;) {
		ssize_t k = read(in, buf, sizeof(buf));
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return 0;
		for (ssize_t off = 0; off < k;) {
			ssize_t w = write(out, buf + off, (size_t)(k - off));
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0)
				return -errno;
			off += w;
		}
	}
}

/* Copies host file srcfd into dirfd/name; never follows a symlink there.
 * The copy is the sandbox root's (before the mode: chown clears setuid). */
static int copy_file_into(int srcfd, const struct stat *st, int dirfd, const char *name, const struct owner *o)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, st->st_mode & 0777);
	if (fd < 0)
		return -errno;
	int r = copy_fd(srcfd, fd);
	if (r == 0 && o->set && fchown(fd, o->uid, o->gid) < 0)
		r = -errno;
	if (r == 0 && fchmod(fd, st->st_mode & 07777) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	return r;
}

/* The local sink of walk_tree: `at` is a directory fd inside the sandbox,
 * entries are made relative to it without following links, and given to
 * the sandbox's root (ud: the struct owner). */
static int local_dir(void *ud, void *at, const struct walk_ent *e, void **child)
{
	int dstfd = (int)(intptr_t)at;
	int made = mkdirat(dstfd, e->name, e->st.st_mode & 0777) == 0;
	if (!made && errno != EEXIST)
		return -errno;
	int d2 = openat(dstfd, e->name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (d2 < 0)
		return -errno;
	int r = made ? own_at(ud, d2, "") : 0;
	if (r < 0) {
		close(d2);
		return r;
	}
	*child = (void *)(intptr_t)d2;
	return 0;
}

static int local_dir_done(void *ud, void *at, const struct walk_ent *e, void *child, int r)
{
	(void)ud, (void)at, (void)e;
	close((int)(intptr_t)child);
	return r;
}

static int local_file(void *ud, void *at, const struct walk_ent *e)
{
	return copy_file_into(e->fd, &e->st, (int)(intptr_t)at, e->name, ud);
}

/* Copied as a link: inside the sandbox it resolves there. */
static int local_link(void *ud, void *at, const struct walk_ent *e)
{
	int dstfd = (int)(intptr_t)at;
	struct stat old;
	if (fstatat(dstfd, e->name, &old, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(old.st_mode))
		unlinkat(dstfd, e->name, 0);
	if (symlinkat(e->target, dstfd, e->name) < 0)
		return errno == EEXIST ? 0 : -errno;
	return own_at(ud, dstfd, e->name);
}

static const char *const writable_top[] = {"workspace", "root", "tmp", "opt", "var", NULL};

/* Checks a sandbox path of local_files/local_dirs: absolute, no "..", in a
 * writable directory. Writes the path relative to "/" into rel. */
static int check_sandbox_path(struct sandbox *sb, const char *field, const char *p, char *rel, size_t reln,
			      char *err, size_t n)
{
	if (p[0] != '/' || strstr(p, "/../") || str_endswith(p, "/..")) {
		snprintf(err, n, "sandbox %s: %s: sandbox path \"%s\" must be absolute without \"..\" (e.g. /workspace/data)",
			 sb->name, field, p);
		return -EINVAL;
	}
	while (*p == '/')
		p++;
	snprintf(rel, reln, "%s", p);
	size_t l = strlen(rel);
	while (l && rel[l - 1] == '/')
		rel[--l] = '\0';
	size_t top = strcspn(rel, "/");
	for (int i = 0; writable_top[i]; i++)
		if (top == strlen(writable_top[i]) && !strncmp(rel, writable_top[i], top) && (rel[top] == '/' || l > top || field[6] == 'd'))
			return 0;
	snprintf(err, n,
		 "sandbox %s: %s: sandbox path \"/%s\" is not in a writable part of the sandbox; use a path under /workspace, /root, /tmp, /opt or /var",
		 sb->name, field, rel);
	return -EROFS;
}

static void host_path(struct sandbox *sb, const char *p, char *out, size_t n)
{
	if (p[0] == '/')
		snprintf(out, n, "%s", p);
	else
		snprintf(out, n, "%s/%s", sb->ctx->start_cwd ? sb->ctx->start_cwd : ".", p);
}

/* Copies host path `src` (file or directory) to sandbox path `rel`. */
/* Where local_files/local_dirs go: the sandbox's "/" as a directory fd
 * here, or (remote providers) its path on the far side of an SFTP client. */
struct dest {
	struct seer_root root;   /* an fd (copied into here) or another (the provider's copy_in) */
	struct owner own;        /* of what lands under root.fd */
};

static int copy_in(struct sandbox *sb, const struct dest *dst, const char *src, const char *rel, int want_dir,
		   char *err, size_t n)
{
	int rootfd = dst->root.fd;
	struct stat st;
	int sfd = open(src, O_RDONLY | O_CLOEXEC);
	if (sfd < 0 || fstat(sfd, &st) < 0) {
		int e = -errno;
		if (sfd >= 0)
			close(sfd);
		snprintf(err, n, "sandbox %s: cannot read %s on the host: %s", sb->name, src, strerror(-e));
		return e;
	}
	int r;
	char bad[256] = "";
	if (want_dir) {
		if (!S_ISDIR(st.st_mode)) {
			close(sfd);
			snprintf(err, n, "sandbox %s: local_dirs: %s on the host is not a directory; list it in local_files instead",
				 sb->name, src);
			return -ENOTDIR;
		}
		if (rootfd < 0) {
			r = sb->prov->copy_in(sb, &dst->root, sfd, &st, rel, bad, sizeof(bad));
		} else {
			/* The host tree is the user's, but may change while it
			 * is copied: walked by fd, links copied as links. */
			const struct walk_ops ops = {local_dir, local_dir_done, local_file, local_link, NULL,
						     (void *)&dst->own, 0, bad, sizeof(bad)};
			int dfd = mkdir_in_root(rootfd, rel, &dst->own);
			r = dfd < 0 ? dfd : walk_tree(sfd, &ops, (void *)(intptr_t)dfd);
			if (dfd >= 0)
				close(dfd);
		}
	} else if (rootfd < 0) {
		if (!S_ISREG(st.st_mode)) {
			close(sfd);
			snprintf(err, n, "sandbox %s: local_files: %s on the host is not a regular file; list directories in local_dirs",
				 sb->name, src);
			return -EISDIR;
		}
		r = sb->prov->copy_in(sb, &dst->root, sfd, &st, rel, bad, sizeof(bad));
	} else {
		if (!S_ISREG(st.st_mode)) {
			close(sfd);
			snprintf(err, n, "sandbox %s: local_files: %s on the host is not a regular file; list directories in local_dirs",
				 sb->name, src);
			return -EISDIR;
		}
		char parent[4096];
		snprintf(parent, sizeof(parent), "%s", rel);
		char *slash = strrchr(parent, '/');
		const char *base = slash ? slash + 1 : parent;
		if (slash)
			*slash = '\0';
		int dfd = mkdir_in_root(rootfd, parent, &dst->own);
		r = dfd < 0 ? dfd : copy_file_into(sfd, &st, dfd, base, &dst->own);
		if (dfd >= 0)
			close(dfd);
	}
	close(sfd);
	if (r < 0)
		snprintf(err, n, "sandbox %s: cannot copy %s to /%s%s%s in the sandbox: %s%s", sb->name, src, rel,
			 bad[0] ? " (at " : "", bad[0] ? bad : "", strerror(-r),
			 r == -ELOOP ? " (a symlink in the sandbox path is not followed; remove it)"
			 : r == -ESTALE ? " (a directory there was replaced while it was copied; nothing was followed, echo retry > ctl to copy again)"
			 : "");
	return r;
}

/* ---- step: local files and directories -------------------------------------------- */

static void fp_pairs(struct sbuf *b, const struct seer_pair *v, size_t nv)
{
	for (size_t i = 0; i < nv; i++)
		sbuf_printf(b, "%s>%s;", v[i].host, v[i].sandbox);
}

static int check_local_sources(struct sandbox *sb, const struct seer_config *cfg, char *err, size_t n)
{
	for (int dirs = 0; dirs < 2; dirs++) {
		const struct seer_pair *v = dirs ? cfg->local_dirs : cfg->local_files;
		size_t nv = dirs ? cfg->n_local_dirs : cfg->n_local_files;
		const char *field = dirs ? "local_dirs" : "local_files";
		for (size_t i = 0; i < nv; i++) {
			char src[4096], rel[4096];
			host_path(sb, v[i].host, src, sizeof(src));
			struct stat st;
			if (stat(src, &st) < 0) {
				int e = -errno;
				snprintf(err, n, "sandbox %s: %s: %s does not exist on the host (%s); create it, then echo retry > %s/ctl",
					 sb->name, field, src, strerror(-e), sb->name);
				return e;
			}
			int r = check_sandbox_path(sb, field, v[i].sandbox, rel, sizeof(rel), err, n);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

/* Where copies into the running sandbox go: the provider's root handle
 * (core/root.h). Undo with dest_close. */
static int dest_open(struct sandbox *sb, struct dest *dst, char *err, size_t n)
{
	memset(dst, 0, sizeof(*dst));
	dst->root.fd = -1;
	dst->own = sandbox_owner(sb);
	int r = sb->prov->root(sb, &dst->root);
	if (r < 0) {
		snprintf(err, n, "sandbox %s: cannot reach the sandbox's files: %s", sb->name, strerror(-r));
		return r;
	}
	if (dst->root.host_ids)   /* its root is host root: copies stay the daemon's */
		dst->own = (struct owner){geteuid(), getegid(), 0};
	else if (dst->root.ids.count > 0)   /* the container's own user namespace: its root's */
		dst->own = (struct owner){dst->root.ids.uid, dst->root.ids.gid,
					  dst->root.ids.uid != geteuid() || dst->root.ids.gid != getegid()};
	return 0;
}

static void dest_close(struct dest *dst)
{
	seer_root_release(&dst->root);
}

static int step_local(struct sandbox *sb, const struct seer_config *cfg, char *err, size_t n)
{
	struct dest dst;
	int r = dest_open(sb, &dst, err, n);
	if (r < 0)
		return r;
	for (int dirs = 0; dirs < 2 && r == 0; dirs++) {
		const struct seer_pair *v = dirs ? cfg->local_dirs : cfg->local_files;
		size_t nv = dirs ? cfg->n_local_dirs : cfg->n_local_files;
		const char *field = dirs ? "local_dirs" : "local_files";
		for (size_t i = 0; i < nv && r == 0; i++) {
			char src[4096], rel[4096];
			host_path(sb, v[i].host, src, sizeof(src));
			r = check_sandbox_path(sb, field, v[i].sandbox, rel, sizeof(rel), err, n);
			if (r == 0 && !dirs && v[i].sandbox[strlen(v[i].sandbox) - 1] == '/') {
				/* "/workspace/" means "into that directory". */
				const char *b = strrchr(src, '/');
				size_t l = strlen(rel);
				const char *bn = b ? b + 1 : src;
				if (l + 1 + strlen(bn) < sizeof(rel)) {
					rel[l] = '/';
					memcpy(rel + l + 1, bn, strlen(bn) + 1);
				}
			}
			if (r == 0)
				r = copy_in(sb, &dst, src, rel, dirs, err, n);
			if (r == 0)
				sandbox_log(sb, "provision: %s: copied %s to /%s", field, src, rel);
		}
	}
	dest_close(&dst);
	return r;
}

/* ---- step: models ------------------------------------------------------------------ */

struct dl_ctx {
	struct sandbox *sb;
	const char *id;       /* the real name */
	const char *shown;    /* what status and log may show */
	double last;
};

static void dl_progress(void *arg, const struct hf_progress *p)
{
	struct dl_ctx *d = arg;
	if (p->file) {
		if (p->done == p->total)
			sandbox_log(d->sb, "provision: models: %s: %s ready (%llu bytes)", d->shown,
				    strcmp(d->id, d->shown) ? "a file" : p->file, (unsigned long long)p->total);
		return;
	}
	double now = mono_s();
	if (now - d->last < 0.25 && p->done != p->total)
		return;
	d->last = now;
	char eta[32] = "unknown";
	if (p->eta_s >= 0)
		snprintf(eta, sizeof(eta), "%.0f s", p->eta_s);
	sandbox_set_progress(d->sb, "models: %s %.1f of %.1f MiB, %.1f MiB/s, ETA %s", d->shown, p->done / 1048576.0,
			     p->total / 1048576.0, p->rate_bps / 1048576.0, eta);
}

static void dl_log(void *arg, const char *line)
{
	struct dl_ctx *d = arg;
	char buf[1024];
	snprintf(buf, sizeof(buf), "%s", line);
	if (strcmp(d->id, d->shown)) {
		char dashed[512];
		snprintf(dashed, sizeof(dashed), "%s", d->id);
		for (char *p = dashed; *p; p++)
			if (*p == '/')
				*p = '-';
		replace_all(buf, sizeof(buf), d->id, d->shown);
		replace_all(buf, sizeof(buf), dashed, d->shown);
		const char *slash = strchr(d->id, '/');
		if (slash && strlen(slash + 1) >= 3)
			replace_all(buf, sizeof(buf), slash + 1, d->shown);
	}
	sandbox_log(d->sb, "provision: models: %s", buf);
}

/* "org/name" -> "org--name" */
static void mount_name(const char *id, char *out, size_t n)
{
	snprintf(out, n, "%s", id);
	char tmp[512];
	snprintf(tmp, sizeof(tmp), "%s", out);
	replace_all(tmp, sizeof(tmp), "/", "--");
	snprintf(out, n, "%s", tmp);
}

/* Downloads one model; adds {dir, snapshot, mount} to mounts. */
static int fetch_one(struct sandbox *sb, const struct seer_config *cfg, const char *id, const char *rev,
		     const char *shown, const char *mname, struct json_object *mounts, char *err, size_t n)
{
	(void)cfg;
	struct dl_ctx d = {.sb = sb, .id = id, .shown = shown};
	struct hf_opts o = {.endpoint = getenv("HF_ENDPOINT"), .token = getenv("HF_TOKEN"),
			    .cache_dir = sb->ctx->model_cache, .progress = dl_progress, .log = dl_log, .arg = &d,
			    .cancel = (volatile int *)&sb->cancel};
	char snap[4096], herr[1024] = "";
	double t0 = mono_s();
	int r = hf_fetch(&o, id, rev, snap, sizeof(snap), herr, sizeof(herr));
	if (r < 0) {
		if (strcmp(id, shown))
			replace_all(herr, sizeof(herr), id, shown);
		if (r == -ECANCELED)
			return r;
		snprintf(err, n, "sandbox %s: model %s could not be downloaded: %s%s", sb->name, shown, herr,
			 r == -EACCES && !getenv("HF_TOKEN")
				 ? " (set HF_TOKEN in seerfs's environment, or name a secret HF_TOKEN, then echo retry > ctl)"
				 : "");
		return r;
	}
	sandbox_log(sb, "provision: models: %s ready in %.2f s", shown, mono_s() - t0);
	/* snap = CACHE/models--org--name/snapshots/COMMIT: bind the repo
	 * directory, because the snapshot's files are relative symlinks into
	 * ../../blobs, and point /models/NAME at the snapshot inside it. */
	char *s1 = strrchr(snap, '/');
	if (!s1)
		return -EPROTO;
	*s1 = '\0';
	char *s0 = strrchr(snap, '/');
	if (!s0)
		return -EPROTO;
	*s0 = '\0';
	struct json_object *m = json_object_new_object();
	json_object_object_add(m, "dir", json_object_new_string(snap));
	json_object_object_add(m, "commit", json_object_new_string(s1 + 1));
	json_object_object_add(m, "mount", json_object_new_string(mname));
	json_object_array_add(mounts, m);
	return 0;
}

static int step_models(struct sandbox *sb, const struct seer_config *cfg, struct json_object *st, char *err, size_t n)
{
	struct json_object *mounts = json_object_new_array(), *handles = json_object_new_array();
	int r = 0;
	for (size_t i = 0; i < cfg->n_models && r == 0; i++) {
		const struct seer_model *m = &cfg->models[i];
		char shown[64], mname[512], base_shown[80], base_mname[512];
		if (m->hidden) {
			snprintf(shown, sizeof(shown), "model-%zu", i + 1);
			snprintf(mname, sizeof(mname), "%s", shown);
			snprintf(base_shown, sizeof(base_shown), "model-%zu-base", i + 1);
			snprintf(base_mname, sizeof(base_mname), "%s", base_shown);
		} else {
			mount_name(m->name, mname, sizeof(mname));
			snprintf(shown, sizeof(shown), "%.63s", m->name);
			if (m->base_model) {
				snprintf(base_shown, sizeof(base_shown), "%.79s", m->base_model);
				mount_name(m->base_model, base_mname, sizeof(base_mname));
			}
		}
		const char *disp = m->hidden ? shown : m->name;
		r = fetch_one(sb, cfg, m->name, m->revision, disp, mname, mounts, err, n);
		if (r == 0 && m->is_peft && m->base_model)
			r = fetch_one(sb, cfg, m->base_model, NULL, m->hidden ? base_shown : m->base_model, base_mname,
				      mounts, err, n);
		if (r < 0)
			break;
		struct json_object *h = json_object_new_object();
		char path[600];
		json_object_object_add(h, "name", json_object_new_string(disp));
		snprintf(path, sizeof(path), "/models/%s", mname);
		json_object_object_add(h, "volume_path", json_object_new_string(path));
		json_object_object_add(h, "var_name", json_object_new_string(m->var_name ? m->var_name : "model"));
		json_object_object_add(h, "hidden", json_object_new_boolean(m->hidden));
		json_object_object_add(h, "is_peft", json_object_new_boolean(m->is_peft));
		if (m->is_peft && m->base_model) {
			snprintf(path, sizeof(path), "/models/%s", base_mname);
			json_object_object_add(h, "base_model",
					       json_object_new_string(m->hidden ? base_shown : m->base_model));
			json_object_object_add(h, "base_model_path", json_object_new_string(path));
		} else {
			json_object_object_add(h, "base_model", NULL);
			json_object_object_add(h, "base_model_path", NULL);
		}
		json_object_array_add(handles, h);
	}
	if (r < 0) {
		json_object_put(mounts);
		json_object_put(handles);
		return r;
	}
	json_object_object_add(st, "model_mounts", mounts);
	json_object_object_add(st, "model_handles", handles);
	state_save(sb, st);
	return 0;
}

/* ---- step: system packages ---------------------------------------------------------- */

/* Runs dpkg-query on the host: 1 installed, 0 not, -errno. */
static int dpkg_installed(const char *pkg)
{
	char *argv[] = {"dpkg-query", "-W", "-f=${Status}", (char *)pkg, NULL};
	struct sbuf out = {0};
	int r = run_capture(argv, &out, 4096);
	int installed = r >= 0 && out.data && strstr(out.data, "install ok installed");
	sbuf_free(&out);
	return r < 0 ? r : installed;
}

static int step_system(struct sandbox *sb, const struct seer_config *cfg, char *err, size_t n)
{
	struct sbuf missing = {0};
	for (size_t i = 0; i < cfg->n_system_packages; i++) {
		const char *p = cfg->system_packages[i];
		/* Debian package names: [a-z0-9][a-z0-9+.-]+, optionally :arch. */
		int ok = p[0] && p[0] != '-' && strlen(p) < 128;
		for (const char *c = p; ok && *c; c++)
			ok = (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || strchr("+.-:", *c);
		if (!ok) {
			snprintf(err, n, "sandbox %s: system_packages: \"%s\" is not a Debian package name", sb->name, p);
			sbuf_free(&missing);
			return -EINVAL;
		}
		int r = dpkg_installed(p);
		if (r < 0) {
			snprintf(err, n, "sandbox %s: system_packages: cannot run dpkg-query on the host: %s", sb->name,
				 strerror(-r));
			sbuf_free(&missing);
			return r;
		}
		if (!r)
			sbuf_printf(&missing, " %s", p);
	}
	if (missing.len) {
		snprintf(err, n,
			 "sandbox %s: system_packages not installed on the host (the local provider's system is the host's, read-only):%s; install them on the host with: apt-get install -y%s ; then echo retry > %s/ctl",
			 sb->name, missing.data, missing.data, sb->name);
		sbuf_free(&missing);
		return -ENOENT;
	}
	return 0;
}

/* ---- step: python venv and packages ---------------------------------------------------- */

static void python_versions(struct sbuf *b)
{
	DIR *d = opendir("/usr/bin");
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		const char *s = de->d_name;
		if (strncmp(s, "python", 6) || !strchr(s + 6, '.'))
			continue;
		int ok = 1;
		for (const char *c = s + 6; *c; c++)
			ok &= (*c >= '0' && *c <= '9') || *c == '.';
		if (ok)
			sbuf_printf(b, "%s%s", b->len ? ", " : "", s + 6);
	}
	closedir(d);
}

/* ---- the host's pip settings ------------------------------------------------------------ */

/*
 * pip on the host may be told to look for packages in host directories:
 * find-links and file:// indexes, named by PIP_FIND_LINKS, PIP_INDEX_URL,
 * PIP_EXTRA_INDEX_URL in seerfs's environment or by the same keys of a
 * pip.conf. So that `python_packages: ["pkg"]` installs as it would on the
 * host, each such directory is shown to the sandbox read-only at the path
 * the setting names (the local provider binds it, see provision_start_inputs;
 * a remote provider gets a copy and the pip step gets the settings with the
 * copy's path). Only the directories a setting names are shown; each is
 * resolved with realpath and must be a directory that holds neither the
 * state directory nor the mount.
 */

#define PIP_COPIES "/tmp/.seerfs-pip"

static const char *const pip_vars[] = {"PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", NULL};
static const char *const pip_keys[] = {"find-links", "index-url", "extra-index-url", NULL};

struct pip_dir {
	char named[4096];   /* the path the setting names: where the sandbox sees it */
	char real[4096];    /* realpath on the host */
};

struct pip_dirs {
	struct pip_dir *v;
	size_t n;
	char *conf[3];      /* per pip_keys: the value the user's pip.conf gives (NULL: none) */
};

static void pip_dirs_free(struct pip_dirs *d)
{
	free(d->v);
	for (int i = 0; i < 3; i++)
		free(d->conf[i]);
	memset(d, 0, sizeof(*d));
}

/* The user's home as pip sees it: $HOME, else the mounting user's entry. */
static const char *user_home(struct sandbox *sb)
{
	const char *h = getenv("HOME");
	if (h && h[0] == '/')
		return h;
	struct passwd *pw = getpwuid(sb->ctx->uid);
	return pw && pw->pw_dir ? pw->pw_dir : NULL;
}

/* The user's pip.conf files pip on the host reads, with where each goes in
 * the sandbox (whose HOME is /root). */
static int user_pip_confs(struct sandbox *sb, char src[2][4096], const char *dst[2])
{
	const char *home = user_home(sb), *xdg = getenv("XDG_CONFIG_HOME");
	int k = 0;
	if (xdg && xdg[0] == '/')
		snprintf(src[k], 4096, "%s/pip/pip.conf", xdg);
	else if (home)
		snprintf(src[k], 4096, "%s/.config/pip/pip.conf", home);
	else
		src[k][0] = '\0';
	dst[k++] = "root/.config/pip/pip.conf";
	if (home)
		snprintf(src[k], 4096, "%s/.pip/pip.conf", home);
	else
		src[k][0] = '\0';
	dst[k++] = "root/.pip/pip.conf";
	return k;
}

static int path_inside(const char *p, const char *top)
{
	size_t l = strlen(top);
	return top[0] && !strncmp(p, top, l) && (p[l] == '/' || p[l] == '\0' || (l == 1 && top[0] == '/'));
}

/* One word of a pip setting: a local directory (a path or a file:// URL)
 * is checked and added; a URL of another scheme is pip's business. */
/* Whether a sandbox path is, holds or lies in a destination of the
 * config's local_files / local_dirs: then the config fills it itself. */
static int shipped_in(const struct seer_config *cfg, const char *p)
{
	for (int dirs = 0; dirs < 2; dirs++) {
		const struct seer_pair *v = dirs ? cfg->local_dirs : cfg->local_files;
		size_t nv = dirs ? cfg->n_local_dirs : cfg->n_local_files;
		for (size_t i = 0; i < nv; i++) {
			char dst[4096];
			snprintf(dst, sizeof(dst), "%s", v[i].sandbox);
			size_t l = strlen(dst);
			while (l > 1 && dst[l - 1] == '/')
				dst[--l] = '\0';
			if (path_inside(p, dst) || path_inside(dst, p))
				return 1;
		}
	}
	return 0;
}

static int pip_word(struct sandbox *sb, const struct seer_config *cfg, const char *what, const char *w,
		    struct pip_dirs *d, char *err, size_t n)
{
	const char *path = w;
	if (!strncmp(w, "file://", 7)) {
		path = w + 7;
		if (!strncmp(path, "localhost/", 10))
			path += 9;
	} else if (strstr(w, "://")) {
		return 0;
	}
	if (path[0] != '/' || strstr(path, "/./") || strstr(path, "/../") || str_endswith(path, "/..") ||
	    str_endswith(path, "/.") || strchr(path, '%')) {
		snprintf(err, n,
			 "sandbox %s: python_packages: %s names \"%s\": give pip's host directories as absolute paths without \".\", \"..\" or %%-escapes, so the sandbox can be shown them at the same path",
			 sb->name, what, w);
		return -EINVAL;
	}
	struct pip_dir pd;
	snprintf(pd.named, sizeof(pd.named), "%s", path);
	size_t l = strlen(pd.named);
	while (l > 1 && pd.named[l - 1] == '/')
		pd.named[--l] = '\0';
	if (shipped_in(cfg, pd.named)) {
		sandbox_log(sb, "provision: python: %s names %s, which local_files/local_dirs fill: left to the sandbox",
			    what, pd.named);
		return 0;
	}
	struct stat st;
	if (!realpath(path, pd.real) || stat(pd.real, &st) < 0) {
		int e = errno;
		if (e == ENOENT) {
			/* Not on the host: a path the sandbox itself holds (local_dirs). */
			sandbox_log(sb, "provision: python: %s names %s, which is not on the host: left to the sandbox", what, path);
			return 0;
		}
		snprintf(err, n, "sandbox %s: python_packages: %s names %s, which cannot be read on the host: %s; fix the setting, then echo retry > %s/ctl",
			 sb->name, what, path, strerror(e), sb->name);
		return -e;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, n,
			 "sandbox %s: python_packages: %s names %s, which is not a directory: only directories of wheels (find-links) and file:// index directories are shown to the sandbox; copy a single file in with local_files",
			 sb->name, what, path);
		return -ENOTDIR;
	}
	/* /etc: a bind there would undo the hiding of the host's secrets in it. */
	static const char *const never[] = {"/proc", "/dev", "/sys", "/etc", "/.seerfs", NULL};
	int bad = !strcmp(pd.real, "/") || !strcmp(pd.named, "/");
	for (int i = 0; never[i]; i++)
		bad |= path_inside(pd.named, never[i]) || path_inside(pd.real, never[i]);
	const char *own[] = {sb->ctx->state_dir, sb->ctx->mountpoint, NULL};
	for (int i = 0; own[i]; i++)
		bad |= path_inside(pd.real, own[i]) || path_inside(own[i], pd.real);
	/* A wheel directory may lie in the home, never hold it (~/.ssh...). */
	char home[4096];
	const char *h = user_home(sb);
	if (h && realpath(h, home))
		bad |= path_inside(home, pd.real);
	if (bad) {
		snprintf(err, n,
			 "sandbox %s: python_packages: %s names %s (%s on the host), which is, or holds, a place no sandbox may see (/, /etc, /proc, /dev, /sys, your home, seerfs's state directory or its mount); point pip at a directory holding only packages",
			 sb->name, what, path, pd.real);
		return -EPERM;
	}
	for (size_t i = 0; i < d->n; i++)
		if (!strcmp(d->v[i].named, pd.named))
			return 0;
	struct pip_dir *nv = realloc(d->v, (d->n + 1) * sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	d->v = nv;
	d->v[d->n++] = pd;
	return 0;
}

static int pip_value(struct sandbox *sb, const struct seer_config *cfg, const char *what, const char *value,
		     struct pip_dirs *d, char *err, size_t n)
{
	char *copy = xstrdup(value), *save = NULL;
	int r = 0;
	for (char *w = strtok_r(copy, " \t\r\n", &save); w && r == 0; w = strtok_r(NULL, " \t\r\n", &save))
		r = pip_word(sb, cfg, what, w, d, err, n);
	free(copy);
	return r;
}

/* The find-links / index-url / extra-index-url values of one pip.conf (any
 * section; a later one wins, as in pip). conf[i] gets each value when
 * keep is set. Continuation lines (indented) extend a value. */
static int pip_conf_scan(struct sandbox *sb, const struct seer_config *cfg, const char *path, struct pip_dirs *d,
			 int keep, char *err, size_t n)
{
	char *text = NULL;
	if (read_file(path, 1 << 20, &text, NULL) < 0)
		return 0;
	char *vals[3] = {NULL, NULL, NULL};
	int cur = -1, r = 0;
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		int indented = line[0] == ' ' || line[0] == '\t';
		while (*line == ' ' || *line == '\t')
			line++;
		if (!*line || *line == '#' || *line == ';')
			continue;
		if (indented && cur >= 0) {
			struct sbuf b = {0};
			sbuf_printf(&b, "%s %s", vals[cur] ? vals[cur] : "", line);
			free(vals[cur]);
			vals[cur] = b.data;
			continue;
		}
		cur = -1;
		char *eq = strpbrk(line, "=:");
		if (*line == '[' || !eq)
			continue;
		char key[64];
		size_t kl = 0;
		for (char *c = line; c < eq && kl + 1 < sizeof(key); c++)
			if (*c != ' ' && *c != '\t')   /* configparser: any case, _ or - */
				key[kl++] = *c == '_' ? '-' : (char)tolower((unsigned char)*c);
		key[kl] = '\0';
		for (int i = 0; pip_keys[i]; i++) {
			if (strcmp(key, pip_keys[i]))
				continue;
			cur = i;
			free(vals[i]);
			vals[i] = xstrdup(eq + 1);
		}
	}
	for (int i = 0; pip_keys[i]; i++) {
		if (!vals[i])
			continue;
		char what[4200];
		snprintf(what, sizeof(what), "%s in %s", pip_keys[i], path);
		if (r == 0)
			r = pip_value(sb, cfg, what, vals[i], d, err, n);
		if (keep) {
			free(d->conf[i]);
			d->conf[i] = vals[i];
		} else {
			free(vals[i]);
		}
	}
	free(text);
	return r;
}

/* Every host directory pip's settings name, for a sandbox with python_packages. */
static int pip_host_dirs(struct sandbox *sb, const struct seer_config *cfg, struct pip_dirs *d, char *err, size_t n)
{
	memset(d, 0, sizeof(*d));
	int r = 0;
	/* The system files are in the sandbox's /etc already (local provider). */
	static const char *const sys[] = {"/etc/xdg/pip/pip.conf", "/etc/pip.conf", NULL};
	for (int i = 0; sys[i] && r == 0; i++)
		if (sb->prov->host_binds)
			r = pip_conf_scan(sb, cfg, sys[i], d, 0, err, n);
	char src[2][4096];
	const char *dst[2];
	int k = user_pip_confs(sb, src, dst);
	for (int i = 0; i < k && r == 0; i++)
		if (src[i][0])
			r = pip_conf_scan(sb, cfg, src[i], d, 1, err, n);
	for (int i = 0; pip_vars[i] && r == 0; i++) {
		const char *v = getenv(pip_vars[i]);
		if (v)
			r = pip_value(sb, cfg, pip_vars[i], v, d, err, n);
	}
	if (r < 0)
		pip_dirs_free(d);
	return r;
}

/* A setting's value with each host directory replaced by its copy in a
 * remote sandbox (PIP_COPIES/N). */
static char *pip_rewrite(const struct pip_dirs *d, const char *value)
{
	struct sbuf b = {0};
	char *copy = xstrdup(value), *save = NULL;
	sbuf_append(&b, "", 0);
	for (char *w = strtok_r(copy, " \t\r\n", &save); w; w = strtok_r(NULL, " \t\r\n", &save)) {
		int file = !strncmp(w, "file://", 7);
		const char *path = file ? w + 7 : w;
		if (file && !strncmp(path, "localhost/", 10))
			path += 9;
		size_t i = d->n;
		if (path[0] == '/')
			for (i = 0; i < d->n; i++)
				if (!strncmp(d->v[i].named, path, strlen(d->v[i].named)) &&
				    (path[strlen(d->v[i].named)] == '\0' || !strcmp(path + strlen(d->v[i].named), "/")))
					break;
		if (b.len)
			sbuf_append(&b, " ", 1);
		if (i < d->n)
			sbuf_printf(&b, "%s" PIP_COPIES "/%zu", file ? "file://" : "", i);
		else
			sbuf_printf(&b, "%s", w);
	}
	free(copy);
	return b.data;
}

/* The mounting user's pip.conf files go to /root inside (the host's
 * /etc/pip.conf is already visible through /etc). */
static int copy_pip_conf(struct sandbox *sb, char *err, size_t n)
{
	char src[2][4096];
	const char *dst[2];
	int k = user_pip_confs(sb, src, dst);
	for (int i = 0; i < k; i++) {
		if (!src[i][0] || access(src[i], R_OK) != 0)
			continue;
		struct dest dd;
		int r = dest_open(sb, &dd, err, n);
		if (r < 0)
			return r;
		r = copy_in(sb, &dd, src[i], dst[i], 0, err, n);
		dest_close(&dd);
		if (r < 0)
			return r;
		sandbox_log(sb, "provision: python: copied %s into the sandbox (/%s)", src[i], dst[i]);
	}
	return 0;
}

/* A remote sandbox gets a copy of each host directory pip's settings name,
 * and *extra the settings rewritten to the copies (for the pip step only). */
static int pip_copy_remote(struct sandbox *sb, const struct seer_config *cfg, char **extra, size_t *ne, char *err,
			   size_t n)
{
	struct pip_dirs d;
	int r = pip_host_dirs(sb, cfg, &d, err, n);
	if (r < 0 || d.n == 0) {
		pip_dirs_free(&d);
		return r;
	}
	struct dest dd;
	r = dest_open(sb, &dd, err, n);
	int opened = r == 0;
	for (size_t i = 0; i < d.n && r == 0; i++) {
		char rel[64];
		snprintf(rel, sizeof(rel), "%s/%zu", &PIP_COPIES[1], i);
		r = copy_in(sb, &dd, d.v[i].real, rel, 1, err, n);
		if (r == 0)
			sandbox_log(sb, "provision: python: copied pip's host directory %s to /%s", d.v[i].named, rel);
	}
	if (opened)
		dest_close(&dd);
	for (int i = 0; pip_vars[i] && r == 0; i++) {
		const char *v = getenv(pip_vars[i]) ? getenv(pip_vars[i]) : d.conf[i];
		if (!v)
			continue;
		char *nv = pip_rewrite(&d, v);
		struct sbuf b = {0};
		sbuf_printf(&b, "%s=%s", pip_vars[i], nv);
		free(nv);
		for (size_t j = 0; j < *ne; j++) {
			if (!strncmp(extra[j], pip_vars[i], strlen(pip_vars[i])) && extra[j][strlen(pip_vars[i])] == '=') {
				free(extra[j]);
				extra[j] = extra[--*ne];
				extra[*ne] = NULL;
				break;
			}
		}
		extra[(*ne)++] = b.data;
		extra[*ne] = NULL;
	}
	pip_dirs_free(&d);
	return r;
}

static int step_python(struct sandbox *sb, const struct seer_config *cfg, char *err, size_t n)
{
	char py[128] = "/usr/bin/python3";
	if (cfg->python_version) {
		const char *v = cfg->python_version;
		int ok = python_version_valid(v);
		snprintf(py, sizeof(py), "/usr/bin/python%s", v);
		if (!ok || access(py, X_OK) != 0) {
			struct sbuf b = {0};
			python_versions(&b);
			snprintf(err, n,
				 "sandbox %s: python_version \"%s\": %s does not exist (the local provider uses the host's Python); versions present: %s",
				 sb->name, v, py, b.data ? b.data : "none");
			sbuf_free(&b);
			return -ENOENT;
		}
	}
	int r = copy_pip_conf(sb, err, n);
	if (r < 0)
		return r;
	struct sbuf s = {0};
	sbuf_printf(&s, "if [ -x " VENV "/bin/python ] && " VENV "/bin/python -c 'import sys; print(sys.version)' >/dev/null; then echo 'venv exists'; else ");
	sbuf_shell_quote(&s, py);
	sbuf_printf(&s, " -m venv " VENV "; fi");
	double t0 = mono_s();
	sandbox_set_progress(sb, "python: creating " VENV);
	r = must_exec(sb, cfg, "python -m venv " VENV, s.data, "/", NULL, NULL, err, n);
	sbuf_free(&s);
	if (r < 0)
		return r;
	sandbox_log(sb, "provision: python: " VENV " ready (%s) in %.2f s", py, mono_s() - t0);
	if (!cfg->n_python_packages)
		return 0;
	/* pip's settings from seerfs's environment reach this one command,
	 * not the sandbox's jobs. */
	char *extra[8] = {0};
	size_t ne = pip_env(extra);
	if (!sb->prov->host_binds && (r = pip_copy_remote(sb, cfg, extra, &ne, err, n)) < 0) {
		for (size_t i = 0; i < ne; i++)
			free(extra[i]);
		return r;
	}
	sbuf_printf(&s, VENV "/bin/pip install --disable-pip-version-check --no-input");
	for (size_t i = 0; i < cfg->n_python_packages; i++) {
		sbuf_append(&s, " ", 1);
		sbuf_shell_quote(&s, cfg->python_packages[i]);
	}
	sandbox_set_progress(sb, "python: pip install of %zu package(s)", cfg->n_python_packages);
	t0 = mono_s();
	struct sbuf out = {0};
	r = must_exec(sb, cfg, "pip install", s.data, "/workspace", extra, &out, err, n);
	if (r == 0) {
		/* pip's last line names what it installed. */
		char *last = out.data ? strstr(out.data, "Successfully installed") : NULL;
		if (last) {
			char *nl = strchr(last, '\n');
			if (nl)
				*nl = '\0';
		}
		sandbox_log(sb, "provision: python: pip install done in %.2f s%s%s", mono_s() - t0, last ? ": " : "",
			    last ? last : "");
	}
	sbuf_free(&out);
	sbuf_free(&s);
	for (size_t i = 0; i < ne; i++)
		free(extra[i]);
	return r;
}

/* ---- step: repos ------------------------------------------------------------------------- */

static int is_host_path(const char *u)
{
	return u[0] == '/' || !strncmp(u, "./", 2) || !strncmp(u, "../", 3) || !strncmp(u, "file://", 7);
}

static void repo_name(const char *url, char *out, size_t n)
{
	char tmp[1024];
	snprintf(tmp, sizeof(tmp), "%s", url);
	size_t l = strlen(tmp);
	while (l && tmp[l - 1] == '/')
		tmp[--l] = '\0';
	const char *b = strrchr(tmp, '/');
	const char *c = strrchr(tmp, ':');
	if (c && (!b || c > b))
		b = c;
	b = b ? b + 1 : tmp;
	snprintf(out, n, "%s", b);
	if (str_endswith(out, ".git"))
		out[strlen(out) - 4] = '\0';
	if (!out[0] || !strcmp(out, ".") || !strcmp(out, ".."))
		snprintf(out, n, "repo");
}

/* Where a host repository is copied for git to clone from, below the
 * sandbox's "/". */
#define REPO_COPY_DIR "tmp/.seerfs-repo"

/* Removes the host copy of repository `name` (and its directory when that
 * is empty) after a failed copy or clone: a failed provisioning leaves no
 * host file behind. Local sandboxes by fd from their root (the walk never
 * follows what the sandbox planted there), remote ones with rm inside. */
static void remove_repo_copy(struct sandbox *sb, const char *name)
{
	struct dest dst;
	char e2[512];
	if (dest_open(sb, &dst, e2, sizeof(e2)) < 0)
		return;
	int r;
	if (dst.root.fd >= 0) {
		int fd = open_in_root(dst.root.fd, REPO_COPY_DIR, O_PATH | O_DIRECTORY | O_NOFOLLOW, 0);
		r = fd < 0 ? (fd == -ENOENT ? 0 : fd) : walk_rm_at(fd, name);
		if (fd >= 0)
			close(fd);
		fd = open_in_root(dst.root.fd, "tmp", O_PATH | O_DIRECTORY | O_NOFOLLOW, 0);
		if (fd >= 0) {
			unlinkat(fd, &REPO_COPY_DIR[4], AT_REMOVEDIR);   /* only when empty */
			close(fd);
		}
	} else {
		struct sbuf s = {0}, out = {0};
		int code = -1;
		sbuf_printf(&s, "rm -rf /%s/", REPO_COPY_DIR);
		sbuf_shell_quote(&s, name);
		sbuf_printf(&s, "; rmdir /%s 2>/dev/null; exit 0", REPO_COPY_DIR);
		r = sb_exec(sb, s.data, "/", NULL, &code, &out, e2, sizeof(e2));
		if (r == 0 && code != 0)
			r = -EIO;
		sbuf_free(&s);
		sbuf_free(&out);
	}
	dest_close(&dst);
	if (r < 0)
		sandbox_log(sb, "provision: repos: the copy of %s at /%s/%s could not be removed: %s; remove it by hand",
			    name, REPO_COPY_DIR, name, strerror(-r));
}

static int step_repo(struct sandbox *sb, const struct seer_config *cfg, size_t i, struct json_object *handle,
		     char *err, size_t n)
{
	const struct seer_repo *rp = &cfg->repos[i];
	char name[256], dest[512], src[4096];
	repo_name(rp->url, name, sizeof(name));
	snprintf(dest, sizeof(dest), "/workspace/%s", name);
	const char *clone_from = rp->url;
	struct sbuf u = {0};
	int r;
	if (is_host_path(rp->url)) {
		/* A host repository is copied read-only-in-spirit into /tmp of the
		 * sandbox and cloned from there, so git runs inside the sandbox and
		 * never writes to the host's repository. */
		host_path(sb, !strncmp(rp->url, "file://", 7) ? rp->url + 7 : rp->url, src, sizeof(src));
		struct stat st;
		if (stat(src, &st) < 0 || !S_ISDIR(st.st_mode)) {
			snprintf(err, n, "sandbox %s: repos: %s is not a directory on the host", sb->name, src);
			return -ENOENT;
		}
		struct dest dst;
		r = dest_open(sb, &dst, err, n);
		if (r < 0)
			return r;
		char rel[600];
		snprintf(rel, sizeof(rel), "%s/%s", REPO_COPY_DIR, name);
		r = copy_in(sb, &dst, src, rel, 1, err, n);
		dest_close(&dst);
		if (r < 0) {
			remove_repo_copy(sb, name);
			return r;
		}
		sbuf_printf(&u, "/%s", rel);
		clone_from = u.data;
	} else if (!strstr(rp->url, "://") && !strchr(rp->url, '@') && strchr(rp->url, '/') &&
		   strchr(rp->url, '/') == strrchr(rp->url, '/')) {
		sbuf_printf(&u, "https://github.com/%s", rp->url);
		clone_from = u.data;
	}
	struct sbuf s = {0};
	sbuf_printf(&s, "set -e\nif [ -d ");
	sbuf_shell_quote(&s, dest);
	sbuf_printf(&s, "/.git ]; then echo 'already cloned'; else git clone --quiet");
	if (rp->branch) {
		sbuf_printf(&s, " --branch ");
		sbuf_shell_quote(&s, rp->branch);
	}
	sbuf_printf(&s, " -- ");
	sbuf_shell_quote(&s, clone_from);
	sbuf_append(&s, " ", 1);
	sbuf_shell_quote(&s, dest);
	sbuf_printf(&s, "; fi\n");
	if (is_host_path(rp->url))
		sbuf_printf(&s, "rm -rf /%s\n", REPO_COPY_DIR);
	sbuf_printf(&s, "git -C ");
	sbuf_shell_quote(&s, dest);
	sbuf_printf(&s, " rev-parse HEAD");
	char what[400];
	snprintf(what, sizeof(what), "git clone of repos[%zu] (%s)", i, name);
	sandbox_set_progress(sb, "repos: cloning %s", name);
	double t0 = mono_s();
	struct sbuf out = {0};
	r = must_exec(sb, cfg, what, s.data, "/workspace", NULL, &out, err, n);
	sbuf_free(&s);
	if (r < 0) {
		if (is_host_path(rp->url))
			remove_repo_copy(sb, name);
		sbuf_free(&u);
		sbuf_free(&out);
		return r;
	}
	char commit[64] = "";
	if (out.data) {
		size_t l = out.len;
		while (l && (out.data[l - 1] == '\n' || out.data[l - 1] == '\r'))
			l--;
		size_t st = l;
		while (st && out.data[st - 1] != '\n')
			st--;
		if (l - st == 40)
			snprintf(commit, sizeof(commit), "%.40s", out.data + st);
	}
	sbuf_free(&out);
	sandbox_log(sb, "provision: repos: %s cloned to %s at %s in %.2f s", name, dest, commit[0] ? commit : "?",
		    mono_s() - t0);
	json_object_object_add(handle, "url", json_object_new_string(rp->url));
	json_object_object_add(handle, "path", json_object_new_string(dest));
	json_object_object_add(handle, "branch", rp->branch ? json_object_new_string(rp->branch) : NULL);
	json_object_object_add(handle, "commit", commit[0] ? json_object_new_string(commit) : NULL);
	sbuf_free(&u);
	if (rp->install) {
		snprintf(what, sizeof(what), "install of repos[%zu] (%s)", i, name);
		sandbox_set_progress(sb, "repos: installing %s", name);
		t0 = mono_s();
		r = must_exec(sb, cfg, what, rp->install, dest, NULL, NULL, err, n);
		if (r == 0)
			sandbox_log(sb, "provision: repos: install of %s done in %.2f s", name, mono_s() - t0);
	}
	return r;
}

/* ---- step: notebook / code-server --------------------------------------------------------- */

static int free_port(void)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	int port = -EADDRNOTAVAIL;
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) == 0 && getsockname(s, (struct sockaddr *)&a, &al) == 0)
		port = ntohs(a.sin_port);
	close(s);
	return port;
}

/* Starts a server in the background, its output to STATE/.../NAME.log.
 * `which` is a shell test that prints the program's path. */
static int start_server(struct sandbox *sb, const struct seer_config *cfg, struct json_object *st, const char *key,
			const char *prog_names, const char *missing_msg, const char *fmt_cmd, const char *fmt_url,
			char *err, size_t n)
{
	struct sbuf s = {0}, out = {0};
	sbuf_printf(&s, "for p in %s; do command -v \"$p\" && exit 0; done; exit 1", prog_names);
	int code = -1;
	int r = sb_exec(sb, s.data, "/workspace", NULL, &code, &out, err, n);
	sbuf_free(&s);
	if (r < 0) {
		sbuf_free(&out);
		return r;
	}
	if (code != 0) {
		sbuf_free(&out);
		snprintf(err, n, "sandbox %s: %s", sb->name, missing_msg);
		return -ENOENT;
	}
	char prog[1024] = "";
	if (out.data) {
		char *nl = strchr(out.data, '\n');
		if (nl)
			*nl = '\0';
		snprintf(prog, sizeof(prog), "%s", out.data);
	}
	sbuf_free(&out);
	int port = free_port();
	if (port < 0) {
		snprintf(err, n, "sandbox %s: no free port for %s", sb->name, key);
		return port;
	}
	char token[65];
	random_hex(token, 24);
	char lp[4096];
	snprintf(lp, sizeof(lp), "%s/%s.log", sb->dir, key);
	int logfd = open(lp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
	struct sbuf cmd = {0};
	sbuf_printf(&cmd, fmt_cmd, port);
	char tokvar[128], pwvar[128];
	snprintf(tokvar, sizeof(tokvar), "JUPYTER_TOKEN=%s", token);
	snprintf(pwvar, sizeof(pwvar), "PASSWORD=%s", token);
	char *extra[] = {tokvar, pwvar, NULL};
	char **envp = env_with(sb, extra);
	/* setsid: the server outlives nothing of ours and gets its own group. */
	char *argv[] = {"/bin/sh", "-c", cmd.data, NULL};
	struct seer_spawn req = {.argv = argv, .envp = envp, .cwd = "/workspace", .fd_in = nul, .fd_out = logfd,
				 .fd_err = logfd};
	int pid = 0;
	r = logfd < 0 || nul < 0 ? -errno : sb->prov->spawn(sb, &req, &pid, err, n);
	strv_free(envp);
	sbuf_free(&cmd);
	if (logfd >= 0)
		close(logfd);
	if (nul >= 0)
		close(nul);
	if (r < 0)
		return r;
	/* Wait until it listens (the network namespace is the host's when
	 * network is true; without a network nothing outside can reach it). */
	int up = 0;
	for (int i = 0; i < 600 && !sb->cancel && cfg->network; i++) {
		int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
					.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		up = c >= 0 && connect(c, (struct sockaddr *)&a, sizeof(a)) == 0;
		if (c >= 0)
			close(c);
		if (up)
			break;
		sleep_ms(100);
	}
	if (sb->cancel)
		return -ECANCELED;
	char url[256];
	snprintf(url, sizeof(url), fmt_url, port, token);
	json_object_object_add(st, key, json_object_new_string(url));
	state_save(sb, st);
	sandbox_log(sb, "provision: %s: %s started on port %d%s (pid %d; its output: %s)", key, prog, port,
		    up ? "" : (cfg->network ? ", not answering yet" : ", inside the sandbox's own network"), pid, lp);
	return 0;
}

/* ---- the steps in order ---------------------------------------------------------------- */

#define RUN_STEP(label, call)                                                                 \
	do {                                                                                  \
		double t0_ = mono_s();                                                        \
		sandbox_set_progress(sb, "%s", label);                                         \
		r = (call);                                                                   \
		sandbox_step_time(sb, label, mono_s() - t0_);                                 \
		if (r < 0) {                                                                  \
			sandbox_log(sb, "provision: step %s failed after %.0f ms", label,     \
				    (mono_s() - t0_) * 1000);                                 \
			goto out;                                                             \
		}                                                                             \
		sandbox_log(sb, "provision: step %s done in %.0f ms", label, (mono_s() - t0_) * 1000); \
	} while (0)

static void fp_models(struct sbuf *b, const struct seer_config *cfg)
{
	for (size_t i = 0; i < cfg->n_models; i++) {
		const struct seer_model *m = &cfg->models[i];
		sbuf_printf(b, "%s@%s:%d:%d:%s:%s;", m->name, m->revision ? m->revision : "main", m->hidden, m->is_peft,
			    m->base_model ? m->base_model : "", m->var_name ? m->var_name : "");
	}
}

/* Records the host directories pip's settings name, for the local
 * provider to bind (provision_start_inputs). */
static int pip_binds(struct sandbox *sb, const struct seer_config *cfg, struct json_object *st, char *err, size_t n)
{
	struct pip_dirs d;
	int r = pip_host_dirs(sb, cfg, &d, err, n);
	if (r < 0)
		return r;
	struct json_object *arr = json_object_new_array();
	for (size_t i = 0; i < d.n; i++) {
		struct json_object *b = json_object_new_object();
		json_object_object_add(b, "named", json_object_new_string(d.v[i].named));
		json_object_object_add(b, "real", json_object_new_string(d.v[i].real));
		json_object_array_add(arr, b);
		sandbox_log(sb, "provision: python: pip's host directory %s shown read-only at the same path in the sandbox",
			    d.v[i].named);
	}
	json_object_object_add(st, "pip_binds", arr);
	pip_dirs_free(&d);
	return 0;
}

int provision_prepare(struct sandbox *sb, const struct seer_config *cfg, char *err, size_t n)
{
	struct json_object *st = state_load(sb);
	int r = 0;
	/* Servers and their URLs do not survive a stop: forget them now. */
	json_object_object_del(st, "jupyter_url");
	json_object_object_del(st, "code_server_url");
	if (cfg->n_local_files || cfg->n_local_dirs)
		RUN_STEP("local_sources", check_local_sources(sb, cfg, err, n));
	json_object_object_del(st, "pip_binds");
	if (cfg->n_python_packages && sb->prov->host_binds)
		RUN_STEP("pip_settings", pip_binds(sb, cfg, st, err, n));
	if (cfg->n_models) {
		struct sbuf fp = {0};
		fp_models(&fp, cfg);
		/* Always asked again (one metadata request when cached), so a
		 * restart binds exactly what the cache holds now. */
		RUN_STEP("models", step_models(sb, cfg, st, err, n));
		step_mark(sb, st, "models", fp.data);
		sbuf_free(&fp);
	} else {
		json_object_object_del(st, "model_mounts");
		json_object_object_del(st, "model_handles");
		step_forget(st, "models");
	}
out:
	if (sb->cancel && r < 0)
		r = -ECANCELED;
	state_save(sb, st);
	json_object_put(st);
	return r;
}

int provision_run(struct sandbox *sb, const struct seer_config *cfg, char *err, size_t n)
{
	struct json_object *st = state_load(sb);
	int r = 0;
	struct sbuf fp = {0};

	if (cfg->n_local_files || cfg->n_local_dirs) {
		fp_pairs(&fp, cfg->local_files, cfg->n_local_files);
		sbuf_append(&fp, "|", 1);
		fp_pairs(&fp, cfg->local_dirs, cfg->n_local_dirs);
		if (step_done(st, "local_files", fp.data)) {
			sandbox_log(sb, "provision: step local_files already done");
		} else {
			RUN_STEP("local_files", step_local(sb, cfg, err, n));
			step_mark(sb, st, "local_files", fp.data);
		}
		sbuf_free(&fp);
	}
	if (sb->cancel)
		goto out;
	if (cfg->n_system_packages && !sb->prov->builds_packages)   /* a check only: always asked again, it is quick */
		RUN_STEP("system_packages", step_system(sb, cfg, err, n));
	if (cfg->n_python_packages || cfg->python_version) {
		sbuf_printf(&fp, "%s|", cfg->python_version ? cfg->python_version : "");
		for (size_t i = 0; i < cfg->n_python_packages; i++)
			sbuf_printf(&fp, "%s;", cfg->python_packages[i]);
		if (sb->prov->builds_packages) {
			/* the provider's start built /opt/venv into the image */
			step_mark(sb, st, "python", fp.data);
		} else if (step_done(st, "python", fp.data)) {
			sandbox_log(sb, "provision: step python already done");
		} else {
			step_forget(st, "python");
			state_save(sb, st);
			RUN_STEP("python", step_python(sb, cfg, err, n));
			step_mark(sb, st, "python", fp.data);
		}
		sbuf_free(&fp);
	}
	if (sb->cancel)
		goto out;
	if (cfg->n_repos) {
		struct json_object *handles = obj_get(st, "repo_handles");
		if (!handles || !json_object_is_type(handles, json_type_array)) {
			handles = json_object_new_array();
			json_object_object_add(st, "repo_handles", handles);
		}
		for (size_t i = 0; i < cfg->n_repos; i++) {
			const struct seer_repo *rp = &cfg->repos[i];
			char key[32];
			snprintf(key, sizeof(key), "repo:%zu", i);
			sbuf_printf(&fp, "%s|%s|%s", rp->url, rp->branch ? rp->branch : "", rp->install ? rp->install : "");
			if (step_done(st, key, fp.data) && json_object_array_get_idx(handles, i)) {
				sandbox_log(sb, "provision: step repos[%zu] already done", i);
			} else {
				struct json_object *h = json_object_new_object();
				char label[64];
				snprintf(label, sizeof(label), "repos[%zu]", i);
				r = 0;
				RUN_STEP(label, step_repo(sb, cfg, i, h, err, n));
				if (json_object_array_length(handles) > i)
					json_object_array_put_idx(handles, i, h);
				else
					json_object_array_add(handles, h);
				step_mark(sb, st, key, fp.data);
			}
			sbuf_free(&fp);
			if (sb->cancel)
				goto out;
		}
		while (json_object_array_length(handles) > cfg->n_repos)
			json_object_array_del_idx(handles, cfg->n_repos, 1);
		state_save(sb, st);
	} else {
		json_object_object_del(st, "repo_handles");
	}
	if (cfg->execution_mode == SEER_MODE_NOTEBOOK)
		RUN_STEP("notebook",
			 start_server(sb, cfg, st, "jupyter_url", "jupyter-lab jupyter-notebook",
				      "execution_mode notebook needs Jupyter in the sandbox: add \"jupyterlab\" to python_packages",
				      "exec \"$(command -v jupyter-lab || command -v jupyter-notebook)\" --no-browser --allow-root --ip=127.0.0.1 --port=%d --ServerApp.root_dir=/workspace",
				      "http://127.0.0.1:%d/?token=%s", err, n));
	if (cfg->debug)
		RUN_STEP("debug",
			 start_server(sb, cfg, st, "code_server_url", "code-server",
				      "debug needs code-server in the sandbox: install code-server on the host (its /usr is the sandbox's) or turn debug off",
				      "exec code-server --auth password --bind-addr 127.0.0.1:%d /workspace",
				      "http://127.0.0.1:%d/ (password %s)", err, n));
out:
	sbuf_free(&fp);
	if (sb->cancel && r <= 0)
		r = -ECANCELED;
	state_save(sb, st);
	json_object_put(st);
	return r;
}

/* ---- what others ask ------------------------------------------------------------------ */

/* The models prepared (provision_prepare recorded them), still in the cache. */
static void start_models(struct json_object *st, struct seer_start *in)
{
	struct json_object *mounts = obj_get(st, "model_mounts");
	size_t nm = mounts && json_object_is_type(mounts, json_type_array) ? json_object_array_length(mounts) : 0;
	if (nm)
		in->models = xcalloc(nm, sizeof(*in->models));
	for (size_t i = 0; i < nm; i++) {
		struct json_object *m = json_object_array_get_idx(mounts, i);
		const char *dir = json_object_get_string(obj_get(m, "dir"));
		const char *commit = json_object_get_string(obj_get(m, "commit"));
		const char *mount = json_object_get_string(obj_get(m, "mount"));
		if (!dir || !commit || !mount || strchr(mount, '/') || strchr(commit, '/') || access(dir, R_OK) != 0)
			continue;
		in->models[in->n_models++] = (struct seer_start_model){xstrdup(dir), xstrdup(commit), xstrdup(mount)};
	}
}

/* The host directories pip's settings name, read-only where they name
 * them (pip_binds); checked again, as the host may have changed. */
static void start_binds(struct json_object *st, struct seer_start *in)
{
	struct json_object *binds = obj_get(st, "pip_binds");
	size_t nb = binds && json_object_is_type(binds, json_type_array) ? json_object_array_length(binds) : 0;
	if (nb)
		in->binds = xcalloc(nb, sizeof(*in->binds));
	for (size_t i = 0; i < nb; i++) {
		struct json_object *b = json_object_array_get_idx(binds, i);
		const char *real = json_object_get_string(obj_get(b, "real"));
		const char *named = json_object_get_string(obj_get(b, "named"));
		char now[4096];
		struct stat sst;
		if (!real || !named || named[0] != '/' || !realpath(real, now) || strcmp(now, real) || stat(now, &sst) < 0 ||
		    !S_ISDIR(sst.st_mode))
			continue;
		in->binds[in->n_binds++] = (struct seer_bind){xstrdup(real), xstrdup(named)};
	}
}

void provision_start_inputs(struct sandbox *sb, struct seer_start *in)
{
	struct json_object *st = state_load(sb);
	start_models(st, in);
	start_binds(st, in);
	json_object_put(st);
}

void provision_start_free(struct seer_start *in)
{
	for (size_t i = 0; i < in->n_models; i++) {
		free(in->models[i].dir);
		free(in->models[i].commit);
		free(in->models[i].mount);
	}
	for (size_t i = 0; i < in->n_binds; i++) {
		free(in->binds[i].host);
		free(in->binds[i].inside);
	}
	free(in->models);
	free(in->binds);
	free((char *)in->snap.name);
	free((char *)in->snap.where);
	free((char *)in->snap.layers);
	memset(in, 0, sizeof(*in));
}

void provision_info(struct sandbox *sb, struct json_object *o)
{
	struct json_object *st = state_load(sb);
	static const char *const arrays[] = {"model_handles", "repo_handles", NULL};
	for (int i = 0; arrays[i]; i++) {
		struct json_object *v = obj_get(st, arrays[i]);
		if (v && json_object_is_type(v, json_type_array))
			json_object_object_add(o, arrays[i], json_object_get(v));
	}
	static const char *const urls[] = {"jupyter_url", "code_server_url", NULL};
	for (int i = 0; urls[i]; i++) {
		struct json_object *v = obj_get(st, urls[i]);
		if (v)
			json_object_object_add(o, urls[i], json_object_get(v));
	}
	json_object_put(st);
}
