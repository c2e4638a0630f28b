/*
 * link.c - the shared connection of a provider entry: one SSH link per entry, its reconnect thread, and what a new link probes and places on the host (bubblewrap, the system call filter).
 */
#include "core/providers/ssh/ssh_int.h"
#include "core/providers/ssh/ssh.h"

/* ---- small helpers ---------------------------------------------------------------- */

int ssh_signal_number(const char *name)
{
	static const struct {
		const char *n;
		int s;
	} t[] = {{"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"ILL", SIGILL},   {"TRAP", SIGTRAP},
		 {"ABRT", SIGABRT}, {"BUS", SIGBUS},   {"FPE", SIGFPE},   {"KILL", SIGKILL}, {"USR1", SIGUSR1},
		 {"SEGV", SIGSEGV}, {"USR2", SIGUSR2}, {"PIPE", SIGPIPE}, {"ALRM", SIGALRM}, {"TERM", SIGTERM},
		 {"XCPU", SIGXCPU}, {"XFSZ", SIGXFSZ}, {"SYS", SIGSYS}};
	for (size_t i = 0; i < ARRAY_SIZE(t); i++)
		if (!strcmp(name, t[i].n))
			return t[i].s;
	return SIGKILL;
}

void ssh_describe(const struct ssh_entry *e, char *buf, size_t n)
{
	snprintf(buf, n, "%s@%s:%d (provider %s)", e->user, e->host, e->port, e->name);
}

/* ---- the shared connection ---------------------------------------------------------- */

/* A log line in every sandbox on h; with gone, root/ of each is dropped
 * too (fs/ then asks for the root again and gets the new link's client). */
void host_log_all(struct ssh_host *h, const char *msg, int gone)
{
	pthread_mutex_lock(&h->sbs_lock);
	for (struct ssh_sb *s = h->sbs; s; s = s->next) {
		sandbox_log(s->sb, "sandbox %s: %s", s->sb->name, msg);
		struct seer_ctx *ctx = s->sb->ctx;
		if (gone && ctx->hooks.root_gone)
			ctx->hooks.root_gone(ctx->hooks.arg, s->sb);
	}
	pthread_mutex_unlock(&h->sbs_lock);
}

/* An exec callback that collects stdout into the sbuf ud (if any). */
static void collect(void *ud, int stream, const void *data, size_t len)
{
	if (stream == SSH_EXEC_STDOUT && ud)
		sbuf_append(ud, data, len);
}

/* mkdir -p over SFTP (existing directories are fine). */
int ssh_sftp_mkdir_p(struct sftp_client *s, const char *path, uint32_t mode)
{
	char p[2048];
	if ((size_t)snprintf(p, sizeof(p), "%s", path) >= sizeof(p))
		return -ENAMETOOLONG;   /* never a cut path: that would make another directory */
	for (char *q = p + 1;; q++) {
		if (*q == '/' || !*q) {
			char c = *q;
			*q = '\0';
			int r = sftp_mkdir(s, p, mode);
			if (r < 0 && r != -EEXIST) {
				struct sftp_attrs a;
				if (sftp_stat(s, p, &a) < 0)
					return r;
			}
			*q = c;
			if (!c)
				break;
		}
	}
	return 0;
}

/* The provider's work directory on the host, absolute (a relative one is
 * under the remote user's home, where SFTP starts), made if missing. */
int ssh_workdir_abs(struct sftp_client *cli, const struct ssh_entry *e, char *out, size_t n)
{
	char *wd = NULL;
	int r;
	if (e->workdir[0] != '/') {
		r = ssh_sftp_mkdir_p(cli, e->workdir, 0700);
		if (r == 0)
			r = sftp_realpath(cli, e->workdir, &wd);
	} else {
		r = ssh_sftp_mkdir_p(cli, e->workdir, 0755);
		wd = xstrdup(e->workdir);
	}
	if (r == 0 && snprintf(out, n, "%s", wd) >= (int)n)
		r = -ENAMETOOLONG;
	free(wd);
	return r;
}

/* Writes data to DIR/NAME whole or not at all: a fresh temporary name
 * (O_EXCL) with mode, then a rename over NAME, so that a bwrap starting
 * meanwhile reads the old file or the new one, never half of one. */
static int sftp_put_atomic(struct sftp_client *cli, const char *dir, const char *name, const void *data, size_t len,
			   uint32_t mode)
{
	unsigned char rnd[6];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		memset(rnd, 0x5a, sizeof(rnd));
	char tmp[2300], final[2300];
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp-%02x%02x%02x%02x%02x%02x", dir, name, rnd[0], rnd[1], rnd[2], rnd[3],
		 rnd[4], rnd[5]);
	snprintf(final, sizeof(final), "%s/%s", dir, name);
	struct sftp_attrs a = {.flags = SFTP_ATTR_PERMISSIONS, .perm = mode};
	struct sftp_handle *fh = NULL;
	int r = sftp_open(cli, tmp, sftp_flags_from_posix(O_WRONLY | O_CREAT | O_EXCL), &a, &fh);
	if (r < 0)
		return r;
	if (len)
		r = sftp_pwrite_range(cli, fh, 0, data, len, 0, 0);
	if (r == 0)   /* the server's umask may have taken bits; none may be added */
		r = sftp_fsetstat(cli, fh, &a);
	int rc = sftp_close(cli, fh);
	if (r == 0)
		r = rc;
	if (r == 0) {
		r = sftp_posix_rename(cli, tmp, final);
		if (r == -ENOTSUP || r == -EOPNOTSUPP || r == -ENOSYS) {   /* no posix-rename: SFTP's own fails over a file */
			sftp_remove(cli, final);
			r = sftp_rename(cli, tmp, final);
		}
	}
	if (r < 0)
		sftp_remove(cli, tmp);
	return r;
}

/* With a bwrap on the host: the system call filter compiled for its
 * machine type, and an empty file and directory for the /proc masks, put
 * in WORKDIR/ISO_DIR (0700, the files 0600, all the remote user's) once per
 * link. What cannot be done is recorded in p->iso_err, and every sandbox
 * that would run there unfiltered is refused with it (ssh_start). */
static void iso_place(struct sftp_client *cli, const struct ssh_entry *e, struct host_probe *p)
{
	char ferr[256] = "";
	int fd = p->machine[0] ? seer_seccomp_fd(p->machine, ferr, sizeof(ferr)) : -ENOTSUP;
	if (fd < 0) {
		p->iso_errno = fd == -ENOMEM ? fd : -ENOTSUP;
		snprintf(p->iso_err, sizeof(p->iso_err),
			 "%s has bubblewrap, but %s: sandboxes there would run without a system call filter, so none is started; use a host of a machine type seerfs knows",
			 e->host, p->machine[0] ? ferr : "its machine type is unknown (`uname -m` printed nothing there)");
		return;
	}
	struct sbuf bpf = {0};
	char mp[64];
	snprintf(mp, sizeof(mp), "/proc/self/fd/%d", fd);   /* the memfd: a few KiB of BPF */
	int r = read_file(mp, 1 << 20, &bpf.data, &bpf.len);
	close(fd);
	char wd[1900], dir[sizeof(p->iso_dir)];
	const char *what = "its work directory";
	if (r == 0)
		r = ssh_workdir_abs(cli, e, wd, sizeof(wd));
	if (r == 0) {
		snprintf(dir, sizeof(dir), "%s/%s", wd, ISO_DIR);
		what = dir;
		r = sftp_mkdir(cli, dir, 0700);
		struct sftp_attrs a;
		if (r == -EEXIST || r == 0)   /* ours: a directory, never a link to elsewhere */
			r = sftp_lstat(cli, dir, &a) < 0 ? -EIO : !S_ISDIR(a.perm) ? -ENOTDIR : 0;
	}
	if (r == 0)
		r = sftp_put_atomic(cli, dir, ISO_FILTER, bpf.data, bpf.len, 0600);
	if (r == 0) {
		char f[2300];
		struct sftp_attrs a;
		snprintf(f, sizeof(f), "%s/%s", dir, ISO_EMPTY_FILE);
		if (sftp_lstat(cli, f, &a) < 0 || !S_ISREG(a.perm) || a.size)
			r = sftp_put_atomic(cli, dir, ISO_EMPTY_FILE, "", 0, 0600);
		snprintf(f, sizeof(f), "%s/%s", dir, ISO_EMPTY_DIR);
		if (r == 0 && (r = sftp_mkdir(cli, f, 0700)) == -EEXIST)
			r = sftp_lstat(cli, f, &a) < 0 ? -EIO : !S_ISDIR(a.perm) ? -ENOTDIR : 0;
	}
	sbuf_free(&bpf);
	if (r < 0) {
		p->iso_errno = r;
		snprintf(p->iso_err, sizeof(p->iso_err),
			 "cannot place the system call filter for the sandboxes in %.200s on %s: %s; check that %s may write there (workdir %.200s)",
			 what, e->host, strerror(-r), e->user, e->workdir);
		return;
	}
	snprintf(p->iso_dir, sizeof(p->iso_dir), "%s", dir);
}

/* What the host offers, in one command: its machine type, whether bwrap
 * is there *and* starts (user namespaces may be off), and whether it takes
 * --as-pid-1 (tried first: one bwrap where it does). Marked lines, since a
 * chatty login may print more. */
#define PROBE_MARK "@@seer-probe "
#define HOST_PROBE                                                                                          \
	"echo \"" PROBE_MARK "machine $(uname -m)\"; command -v bwrap >/dev/null 2>&1 || exit 0; "              \
	"if bwrap --unshare-pid --as-pid-1 --ro-bind / / --dev /dev true >/dev/null 2>&1; "                   \
	"then echo '" PROBE_MARK "bwrap'; echo '" PROBE_MARK "pid1'; "                                          \
	"elif bwrap --ro-bind / / --dev /dev true >/dev/null 2>&1; then echo '" PROBE_MARK "bwrap'; fi; exit 0"

static void probe_parse(const struct sbuf *out, struct host_probe *p)
{
	const char *d = out->data ? out->data : "";
	for (const char *q = strstr(d, PROBE_MARK); q; q = strstr(q, PROBE_MARK)) {
		q += strlen(PROBE_MARK);
		size_t k = strcspn(q, "\r\n");
		if (k == 5 && !strncmp(q, "bwrap", 5)) {
			p->bwrap = 1;
		} else if (k == 4 && !strncmp(q, "pid1", 4)) {
			p->pid1 = 1;
		} else if (k > 8 && k - 8 < sizeof(p->machine) && !strncmp(q, "machine ", 8)) {
			memcpy(p->machine, q + 8, k - 8);
			p->machine[k - 8] = '\0';
			/* a name, as `uname -m` prints them: nothing else is used */
			if (strspn(p->machine, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") != k - 8)
				p->machine[0] = '\0';
		}
	}
}

/* One attempt: connect, verify, authenticate, open SFTP, probe the host
 * and place the filter there. Runs on the reconnect thread without h->lock. */
static int host_try(struct ssh_host *h, struct ssh_conn **oc, struct sftp_client **os, struct host_probe *p, char *err, size_t n)
{
	const struct ssh_entry *e = h->ent;
	struct ssh_conn_opts o = {.host = e->host, .port = e->port, .user = e->user, .identity_file = e->identity_file,
			   .use_agent = e->use_agent, .known_hosts = e->known_hosts, .timeout_ms = e->timeout_ms};
	struct ssh_conn *c = NULL;
	int r = ssh_conn_open(&o, &c, err, n);
	if (r < 0)
		return r;
	struct sftp_client *s = NULL;
	r = sftp_client_open(c, &s, err, n);
	if (r < 0) {
		ssh_conn_close(c);
		return r;
	}
	memset(p, 0, sizeof(*p));
	if (e->mode == SEER_SSH_HOST) {
		struct ssh_exec_status st;
		char e2[SSH_ERRMSG_LEN];
		struct sbuf out = {0};
		int k = ssh_exec_run(c, HOST_PROBE, NULL, 0, collect, &out, e->timeout_ms, &st, e2, sizeof(e2));
		if (k == 0 && st.exited && st.exit_code == 0)
			probe_parse(&out, p);
		sbuf_free(&out);
		if (p->bwrap)
			iso_place(s, e, p);
	}
	*oc = c;
	*os = s;
	return 0;
}

void *host_main(void *arg)
{
	struct ssh_host *h = arg;
	char who[512];
	ssh_describe(h->ent, who, sizeof(who));
	pthread_mutex_lock(&h->lock);
	for (;;) {
		int alive = h->conn && ssh_conn_alive(h->conn) && sftp_client_error(h->sftp, NULL, 0) == 0;
		if (alive) {
			h->kick = 0;
			ssh_cond_wait_until(&h->cond, &h->lock, ssh_now_ms() + POLL_ALIVE_MS);
			pthread_mutex_unlock(&h->lock);
			host_watch_confined(h);
			pthread_mutex_lock(&h->lock);
			continue;
		}
		if (h->conn) {
			/* The link died: park it (see the header) and say so. */
			char why[SSH_ERRMSG_LEN] = "";
			int e = ssh_conn_error(h->conn, why, sizeof(why));
			if (!e)
				e = sftp_client_error(h->sftp, why, sizeof(why));
			struct dead_link *d = xcalloc(1, sizeof(*d));
			d->conn = h->conn;
			d->sftp = h->sftp;
			d->next = h->graveyard;
			h->graveyard = d;
			h->conn = NULL;
			h->sftp = NULL;
			h->last_errno = e ? e : -ENOTCONN;
			snprintf(h->last_err, sizeof(h->last_err), "%s", why[0] ? why : "connection lost");
			h->next_try_ms = ssh_now_ms();
			h->backoff_ms = RECONNECT_MIN_MS;
			h->down_logged = 1;
			pthread_cond_broadcast(&h->cond);
			pthread_mutex_unlock(&h->lock);
			char msg[2048];
			snprintf(msg, sizeof(msg), "disconnected from %s: %s; reconnecting in the background", who, why);
			host_log_all(h, msg, 1);
			pthread_mutex_lock(&h->lock);
			continue;
		}
		int64_t now = ssh_now_ms();
		if (h->kick && h->next_try_ms > now + RECONNECT_MIN_MS)
			h->next_try_ms = now + RECONNECT_MIN_MS;
		if (now < h->next_try_ms) {
			ssh_cond_wait_until(&h->cond, &h->lock, h->next_try_ms);
			continue;
		}
		if (!h->kick && !h->ever) {
			/* Nobody needs this host yet. */
			ssh_cond_wait_until(&h->cond, &h->lock, -1);
			continue;
		}
		h->kick = 0;
		pthread_mutex_unlock(&h->lock);
		struct ssh_conn *c = NULL;
		struct sftp_client *s = NULL;
		struct host_probe probe;
		char err[SSH_ERRMSG_LEN] = "";
		int r = host_try(h, &c, &s, &probe, err, sizeof(err));
		pthread_mutex_lock(&h->lock);
		h->attempts++;
		if (r == 0) {
			h->conn = c;
			h->sftp = s;
			h->probe = probe;
			int was_down = h->down_logged;
			h->ever = 1;
			h->down_logged = 0;
			h->last_errno = 0;
			h->last_err[0] = '\0';
			h->backoff_ms = RECONNECT_MIN_MS;
			pthread_cond_broadcast(&h->cond);
			if (was_down) {
				pthread_mutex_unlock(&h->lock);
				char msg[1024];
				snprintf(msg, sizeof(msg), "reconnected to %s (host key %s)", who, ssh_conn_fingerprint(c));
				host_log_all(h, msg, 0);
				pthread_mutex_lock(&h->lock);
			}
		} else {
			h->last_errno = r;
			snprintf(h->last_err, sizeof(h->last_err), "%s", err[0] ? err : strerror(-r));
			h->backoff_ms = h->backoff_ms ? h->backoff_ms * 2 : RECONNECT_MIN_MS;
			if (h->backoff_ms > RECONNECT_MAX_MS)
				h->backoff_ms = RECONNECT_MAX_MS;
			h->next_try_ms = ssh_now_ms() + h->backoff_ms;
			pthread_cond_broadcast(&h->cond);
		}
	}
	return NULL;
}

/* The connection of an entry (created on first use). */
struct ssh_host *host_get(struct seer_ctx *ctx, const struct ssh_entry *ce)
{
	struct ssh_state *rc = seer_provider_state(ctx, &seer_provider_ssh);
	/* The entry is interned and immortal; its conn field is ours and set
	 * once under the entry set's lock (the provider state's). */
	struct ssh_entry *e = (struct ssh_entry *)ce;
	pthread_mutex_lock(&rc->entries.lock);
	if (!e->conn) {
		struct ssh_host *h = xcalloc(1, sizeof(*h));
		h->ent = e;
		pthread_mutex_init(&h->lock, NULL);
		pthread_mutex_init(&h->sbs_lock, NULL);
		ssh_cond_init(&h->cond);
		h->backoff_ms = RECONNECT_MIN_MS;
		pthread_attr_t a;
		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		h->thread_started = pthread_create(&(pthread_t){0}, &a, host_main, h) == 0;
		pthread_attr_destroy(&a);
		e->conn = h;
	}
	struct ssh_host *h = e->conn;
	pthread_mutex_unlock(&rc->entries.lock);
	return h;
}

/* The connection of sb's entry. */
struct ssh_host *host_of(struct sandbox *sb)
{
	return host_get(sb->ctx, entry_of(sb));
}

/*
 * A live link for sb, waiting up to the entry's timeout for the background
 * thread to (re)connect. A first connection that fails, and a host key or
 * login that is refused, fail at once with the client's message; otherwise
 * the wait ends with -ENOTCONN (or -ETIMEDOUT) and "disconnected".
 */
int host_acquire_h(struct ssh_host *h, const char *label, struct ssh_conn **oc, struct sftp_client **os,
			  struct host_probe *probe, char *err, size_t n)
{
	char who[512];
	ssh_describe(h->ent, who, sizeof(who));
	if (!h->thread_started) {
		snprintf(err, n, "%s: cannot start the connection thread for %s", label, who);
		return -EAGAIN;
	}
	int64_t deadline = ssh_now_ms() + h->ent->timeout_ms;
	pthread_mutex_lock(&h->lock);
	unsigned seq0 = h->attempts;
	for (;;) {
		if (h->conn && ssh_conn_alive(h->conn) && sftp_client_error(h->sftp, NULL, 0) == 0) {
			if (oc)
				*oc = h->conn;
			if (os)
				*os = h->sftp;
			if (probe)
				*probe = h->probe;
			pthread_mutex_unlock(&h->lock);
			return 0;
		}
		if (h->attempts != seq0 && h->last_errno &&
		    (!h->ever || h->last_errno == -EKEYREJECTED || h->last_errno == -EACCES)) {
			int r = h->last_errno;
			snprintf(err, n, "%s: cannot connect to %s: %s", label, who, h->last_err);
			pthread_mutex_unlock(&h->lock);
			return r;
		}
		if (ssh_now_ms() >= deadline) {
			int r = h->last_errno == -ETIMEDOUT ? -ETIMEDOUT : -ENOTCONN;
			snprintf(err, n,
				 "%s: disconnected from %s (%s); seerfs keeps reconnecting in the background: try again later, or check the host",
				 label, who, h->last_err[0] ? h->last_err : "no connection yet");
			pthread_mutex_unlock(&h->lock);
			return r;
		}
		if (!h->kick) {
			h->kick = 1;
			pthread_cond_broadcast(&h->cond);
		}
		ssh_cond_wait_until(&h->cond, &h->lock, deadline);
	}
}

/* host_acquire_h for sb, whose name the messages carry. */
int host_acquire(struct sandbox *sb, struct ssh_conn **oc, struct sftp_client **os, struct host_probe *probe, char *err,
			size_t n)
{
	char label[128];
	snprintf(label, sizeof(label), "sandbox %s", sb->name);
	return host_acquire_h(host_of(sb), label, oc, os, probe, err, n);
}

/* Runs a short command on sb's host; its stdout (if out) is collected. */
int ssh_run_short(struct sandbox *sb, const char *cmd, struct sbuf *out, int *code, char *err, size_t n)
{
	struct ssh_conn *c;
	int r = host_acquire(sb, &c, NULL, NULL, err, n);
	if (r < 0)
		return r;
	struct ssh_exec_status st;
	char e2[SSH_ERRMSG_LEN];
	r = ssh_exec_run(c, cmd, NULL, 0, collect, out, entry_of(sb)->timeout_ms, &st, e2, sizeof(e2));
	if (r < 0) {
		snprintf(err, n, "sandbox %s: on %s: %s", sb->name, entry_of(sb)->host, e2[0] ? e2 : strerror(-r));
		return r;
	}
	*code = st.exited ? st.exit_code : 128 + ssh_signal_number(st.signal);
	return 0;
}
