/*
 * ssh.c - the `ssh` provider: sandboxes on another machine, reached
 * over one SSH connection per provider entry (core/lib/sshconn.c), with files
 * over SFTP (core/lib/sftp.c, served by fs/root/sftpfs.c through the root op) and
 * commands over exec channels (core/lib/sshexec.c). See docs/ssh.md.
 *
 * Modes (entry.h): "host" makes each sandbox a directory WORKDIR/NAME on
 * the remote host, with workspace/, tmp/ and root/ inside, and runs its
 * commands under bubblewrap there when the host has a working one (else as
 * the remote user in that directory, and the log says so); "direct" takes
 * the SSH endpoint itself as the sandbox: root/ is its "/". In host mode
 * under bubblewrap root/ is the sandbox's own "/", served by a sftp-server
 * of its own inside the same bubblewrap as its commands (confined_*), so
 * no path SFTP resolves can leave the sandbox; otherwise root/ is
 * WORKDIR/NAME over the connection's "sftp" subsystem.
 *
 * Commands: in host mode under bubblewrap, all of a sandbox's commands go
 * over one channel to its resident agent (core/providers/ssh/ssh_agent.c, agent_* here),
 * which forks each inside one bubblewrap. Otherwise (or with "exec":
 * "channel" in the entry):
 * one command = one exec channel. The channel runs a tiny fixed wrapper
 * that reads the real script from stdin up to a marker line, so the
 * sandbox's environment (secrets included) travels inside the encrypted
 * channel and never appears on a remote command line or in a log. The
 * script prints "@@seer-pid PID" first; OpenSSH's sshd puts every session
 * in a session (and process group) of its own, so PID is also the process
 * group that kill/timeout signal as a tree. A pump thread per job moves
 * the job's stdin pipe to the channel and the channel's output to the job's
 * pipes, and reports the exit to jobs_on_exit with the PID as cookie.
 *
 * Connections: a background thread per entry connects, notices a dead link
 * (keepalives, EOF) and reconnects with backoff. Callers wait at most the
 * entry's timeout for a live link, then fail with -ENOTCONN and a message
 * that says "disconnected". Dead connections and their SFTP clients are
 * never freed while seerfs runs (they are parked in a graveyard and fail
 * fast with -ENOTCONN): the graveyard keeps the opener's reference, so a
 * client handed out (with a reference of its own) or used by a caller
 * without one never dangles, at the cost of a few kilobytes per reconnect.
 *
 * Snapshots (host mode): a copy of WORKDIR/NAME at
 * WORKDIR/.seerfs-snapshots/SNAP made by one remote script that stops the
 * sandbox's processes for the copy; see the "snapshots" section below.
 */
#include "core/providers/ssh/ssh.h"
#include "core/root.h"
#include "core/jobs.h"
#include "core/sandbox.h"
#include "core/lib/seccomp_filter.h"
#include "core/lib/sftp.h"
#include "core/lib/sshconn.h"
#include "core/lib/sshexec.h"
#include "core/providers/ssh/ssh_models.h"
#include "core/providers/ssh/ssh_agent.h"
#include "core/providers/ssh/upload.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define RECONNECT_MIN_MS 250
#define RECONNECT_MAX_MS 5000
#define POLL_ALIVE_MS 500
#define PID_MARK "@@seer-pid "
/* WORKDIR/ISO_DIR on the host: the system call filter and the empty file
 * and directory that the /proc masks bind (iso_place). */
#define ISO_DIR ".seerfs-isolation"
#define ISO_FILTER "seccomp.bpf"
#define ISO_EMPTY_FILE "empty-file"
#define ISO_EMPTY_DIR "empty-dir"

struct dead_link {
	struct dead_link *next;
	struct ssh_conn *conn;
	struct sftp_client *sftp;
};

struct ssh_sb;

/* What a new link found on the host (host_try). */
struct host_probe {
	int bwrap;                   /* a bwrap that works there */
	int pid1;                    /* and takes --as-pid-1 (0.8): the agent can be its namespace's init */
	char machine[64];            /* `uname -m` there */
	char iso_dir[2048];          /* WORKDIR/ISO_DIR, where the filter was placed (with a bwrap) */
	int iso_errno;               /* with a bwrap: why there is no filter (its sandboxes are refused) */
	char iso_err[512];
};

/* One per provider entry: the shared connection and its reconnect thread. */
struct ssh_host {
	const struct ssh_entry *ent;
	pthread_mutex_t lock;        /* everything below but sbs */
	pthread_cond_t cond;         /* CLOCK_MONOTONIC (ssh_cond_init) */
	struct ssh_conn *conn;              /* current link, possibly dead */
	struct sftp_client *sftp;
	struct host_probe probe;     /* probed on every new link */
	unsigned attempts;           /* finished connection attempts */
	int ever;                    /* connected at least once */
	int down_logged;             /* "disconnected" said for the current outage */
	int last_errno;
	char last_err[SSH_ERRMSG_LEN];
	int64_t next_try_ms;
	int backoff_ms;
	int kick;
	int thread_started;
	struct dead_link *graveyard;
	pthread_mutex_t sbs_lock;    /* the sandboxes on this host (for log lines) */
	struct ssh_sb *sbs;
};

struct ssh_job {
	struct ssh_job *next;
	struct ssh_sb *s;
	struct ssh_exec *e;
	int pid;
	int fd_in, fd_out, fd_err;
	int got_pid;
	struct sbuf head;            /* stdout before the pid line */
	char sigmark[48];            /* under bubblewrap: the wait-status line's prefix (exit_wrap_*) */
	struct sbuf errtail;         /* stderr held back: maybe the start of that line */
	int sig_seen;                /* the signal that line reported, or 0 */
	pthread_t th;
	int started;                 /* th exists */
	volatile int done;           /* th finished: join and free */
	volatile int abort;
};

/* The provider's private data of one sandbox (sb->priv). */
struct ssh_sb {
	struct ssh_sb *next;         /* ssh_host.sbs */
	struct sandbox *sb;
	struct ssh_host *h;
	pthread_mutex_t lock;        /* jobs, root, running */
	struct ssh_job *jobs;
	char root[2048];             /* WORKDIR/NAME, or "/" in direct mode */
	int bwrap;                   /* commands run under bubblewrap */
	char iso[2048];              /* with it: WORKDIR/ISO_DIR on the host (filter, empty mask files) */
	char machine[64];            /* the host's `uname -m` */
	int pid1;                    /* its bwrap takes --as-pid-1 */
	int prctl_nr;                /* prctl's number there, for the agent's PR_SET_DUMPABLE (or -1) */
	int agent_warned;            /* the agent's warning was logged */
	int network;
	int gpu;
	int running;
	int registered;
	struct ssh_models models;    /* hub models bound at /models (ssh_models.c) */
	/* root/ through the sandbox's own SFTP server (confined_*). */
	int confined;                /* root/ is the sandbox's "/" over sftp_server */
	char sftp_server[512];       /* the server binary's path on the host */
	struct sftp_client *sftp;           /* the running one, or NULL */
	struct ssh_conn *sftp_conn;         /* the link it runs on */
	int sftp_gone;               /* its end was logged */
	char sftp_err[256];          /* the last failure to start it that was logged */
	pthread_mutex_t sftp_lock;   /* one start at a time (lock order: sftp_lock, lock) */
	/* The resident agent that starts commands (agent_*). */
	pthread_mutex_t agent_lock;  /* agent and agent_off (lock order: agent_lock, lock) */
	struct ssh_agent *agent;     /* or NULL */
	int agent_off;               /* it cannot run there: one bubblewrap per command */
};

static void host_watch_confined(struct ssh_host *h);
static int confined_probe(struct sandbox *sb, struct ssh_sb *s, char *err, size_t n);
static void confined_drop(struct ssh_sb *s);
static int snap_prepare_root(struct sandbox *sb, const struct seer_start *in, const char *root, char *err, size_t n);

static const struct ssh_entry *entry_of(struct sandbox *sb)
{
	return sb->prov_settings;
}

/* ---- small helpers ---------------------------------------------------------------- */

static int signal_number(const char *name)
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

static void describe(const struct ssh_entry *e, char *buf, size_t n)
{
	snprintf(buf, n, "%s@%s:%d (provider %s)", e->user, e->host, e->port, e->name);
}

/* ---- the shared connection ---------------------------------------------------------- */

/* A log line in every sandbox on h; with gone, root/ of each is dropped
 * too (fs/ then asks for the root again and gets the new link's client). */
static void host_log_all(struct ssh_host *h, const char *msg, int gone)
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
static int sftp_mkdir_p(struct sftp_client *s, const char *path, uint32_t mode)
{
	char p[2048];
	snprintf(p, sizeof(p), "%s", path);
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
static int workdir_abs(struct sftp_client *cli, const struct ssh_entry *e, char *out, size_t n)
{
	char *wd = NULL;
	int r;
	if (e->workdir[0] != '/') {
		r = sftp_mkdir_p(cli, e->workdir, 0700);
		if (r == 0)
			r = sftp_realpath(cli, e->workdir, &wd);
	} else {
		r = sftp_mkdir_p(cli, e->workdir, 0755);
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
		r = workdir_abs(cli, e, wd, sizeof(wd));
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

static void *host_main(void *arg)
{
	struct ssh_host *h = arg;
	char who[512];
	describe(h->ent, who, sizeof(who));
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
static struct ssh_host *host_get(struct seer_ctx *ctx, const struct ssh_entry *ce)
{
	struct ssh_state *rc = seer_provider_state(ctx, &seer_provider_ssh);
	/* The entry is interned and immortal; its conn field is ours and set
	 * once under the remote context's lock. */
	struct ssh_entry *e = (struct ssh_entry *)ce;
	pthread_mutex_lock(&rc->lock);
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
	pthread_mutex_unlock(&rc->lock);
	return h;
}

/* The connection of sb's entry. */
static struct ssh_host *host_of(struct sandbox *sb)
{
	return host_get(sb->ctx, entry_of(sb));
}

/*
 * A live link for sb, waiting up to the entry's timeout for the background
 * thread to (re)connect. A first connection that fails, and a host key or
 * login that is refused, fail at once with the client's message; otherwise
 * the wait ends with -ENOTCONN (or -ETIMEDOUT) and "disconnected".
 */
static int host_acquire_h(struct ssh_host *h, const char *label, struct ssh_conn **oc, struct sftp_client **os,
			  struct host_probe *probe, char *err, size_t n)
{
	char who[512];
	describe(h->ent, who, sizeof(who));
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
static int host_acquire(struct sandbox *sb, struct ssh_conn **oc, struct sftp_client **os, struct host_probe *probe, char *err,
			size_t n)
{
	char label[128];
	snprintf(label, sizeof(label), "sandbox %s", sb->name);
	return host_acquire_h(host_of(sb), label, oc, os, probe, err, n);
}

/* Runs a short command on sb's host; its stdout (if out) is collected. */
static int run_short(struct sandbox *sb, const char *cmd, struct sbuf *out, int *code, char *err, size_t n)
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
	*code = st.exited ? st.exit_code : 128 + signal_number(st.signal);
	return 0;
}

/* ---- provider operations ---------------------------------------------------------------- */

static struct ssh_sb *priv_of(struct sandbox *sb)
{
	if (!sb->priv) {
		struct ssh_sb *s = xcalloc(1, sizeof(*s));
		s->sb = sb;
		pthread_mutex_init(&s->lock, NULL);
		pthread_mutex_init(&s->sftp_lock, NULL);
		pthread_mutex_init(&s->agent_lock, NULL);
		sb->priv = s;
	}
	return sb->priv;
}

/* local_files, local_dirs and repos from a path here go over SFTP
 * (core/providers/ssh/upload.c); models are copied to the host (core/providers/ssh/ssh_models.c) and
 * need a place for /models, which only host mode has. */
static int check_models(struct sandbox *sb, const struct seer_config *cfg, char *err, size_t n)
{
	const struct ssh_entry *e = entry_of(sb);
	if (!cfg->n_models || e->mode != SEER_SSH_DIRECT)
		return 0;
	snprintf(err, n,
		 "sandbox %s: models need mode \"host\" on the ssh provider %s (%s): in mode direct the endpoint's / is not seerfs's to bind /models into; use a provider entry with \"mode\": \"host\", or copy the model in through %s/root/ once the sandbox runs",
		 sb->name, e->name, e->host, sb->name);
	return -ENOTSUP;
}

static int ssh_check(struct sandbox *sb, const struct seer_config *cfg, char *err, size_t n)
{
	const struct ssh_entry *e = entry_of(sb);
	if (!e) {
		snprintf(err, n, "sandbox %s: provider \"%s\" has no settings; write config.json again", sb->name,
			 cfg->provider);
		return -EINVAL;
	}
	int r = check_models(sb, cfg, err, n);
	if (r < 0)
		return r;
	if (!cfg->gpu)
		return 0;
	struct sbuf out = {0};
	int code = -1;
	r = run_short(sb, "nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null", &out, &code, err, n);
	if (r < 0) {
		sbuf_free(&out);
		return r;
	}
	int match = 0, total = 0;
	for (char *save = NULL, *l = out.data ? strtok_r(out.data, "\r\n", &save) : NULL; l;
	     l = strtok_r(NULL, "\r\n", &save)) {
		total++;
		if (strcasestr(l, cfg->gpu) || !strcasecmp(cfg->gpu, "any"))
			match++;
	}
	sbuf_free(&out);
	if (code != 0 || total == 0) {
		snprintf(err, n,
			 "sandbox %s: gpu \"%s\" asked for, but %s (provider %s) has no NVIDIA GPU (nvidia-smi failed there); set \"gpu\": null or use a provider whose host has one",
			 sb->name, cfg->gpu, e->host, e->name);
		return -ENODEV;
	}
	if (match < cfg->gpu_count) {
		snprintf(err, n,
			 "sandbox %s: gpu \"%s\" x%d asked for, but %s (provider %s) has %d such of %d GPU(s); change \"gpu\" or use another provider",
			 sb->name, cfg->gpu, cfg->gpu_count, e->host, e->name, match, total);
		return -ENODEV;
	}
	return 0;
}

static void host_register(struct ssh_sb *s)
{
	if (s->registered)
		return;
	pthread_mutex_lock(&s->h->sbs_lock);
	s->next = s->h->sbs;
	s->h->sbs = s;
	s->registered = 1;
	pthread_mutex_unlock(&s->h->sbs_lock);
}

static void host_unregister(struct ssh_sb *s)
{
	if (!s->registered)
		return;
	pthread_mutex_lock(&s->h->sbs_lock);
	for (struct ssh_sb **pp = &s->h->sbs; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	s->registered = 0;
	pthread_mutex_unlock(&s->h->sbs_lock);
}

/* Host mode: the models provisioning prepared, copied to the host once
 * and recorded for build_script's binds. */
static int start_models(struct sandbox *sb, const struct seer_start *in, struct ssh_conn *c, struct sftp_client *cli,
			const char *workdir, const char *root, int bwrap, char *err, size_t n)
{
	struct ssh_sb *s = priv_of(sb);
	const struct ssh_entry *e = entry_of(sb);
	struct ssh_models_host mh = {.sb = sb, .conn = c, .sftp = cli, .host = e->host, .workdir = workdir,
				     .root = root, .bwrap = bwrap, .timeout_ms = e->timeout_ms,
				     .models = in->models, .n_models = in->n_models};
	struct ssh_models m = {0};
	int r = ssh_models_place(&mh, &m, err, n);
	if (r < 0)
		return r;
	pthread_mutex_lock(&s->lock);
	struct ssh_models old = s->models;
	s->models = m;
	pthread_mutex_unlock(&s->lock);
	ssh_models_free(&old);
	if (m.n)
		sandbox_set_progress(sb, "starting the sandbox");
	return 0;
}

static int ssh_start(struct sandbox *sb, const struct seer_config *cfg, const struct seer_start *in, char *err,
		     size_t n)
{
	const struct ssh_entry *e = entry_of(sb);
	struct ssh_sb *s = priv_of(sb);
	struct ssh_host *h = host_of(sb);
	if (s->h != h) {   /* a new config may name another entry */
		if (s->h)
			host_unregister(s);
		s->h = h;
	}
	host_register(s);
	struct ssh_conn *c;
	struct sftp_client *cli;
	struct host_probe *hp = xcalloc(1, sizeof(*hp));
	int r = host_acquire(sb, &c, &cli, hp, err, n);
	int bwrap = hp->bwrap;
	if (r == 0 && bwrap && e->mode != SEER_SSH_DIRECT && hp->iso_errno) {
		/* Never a bubblewrap without the filter: refused, and why. */
		snprintf(err, n, "sandbox %s: %s", sb->name, hp->iso_err);
		r = hp->iso_errno;
	}
	if (r < 0) {
		free(hp);
		return r;
	}
	char who[512];
	describe(e, who, sizeof(who));
	char root[2048], wdabs[2048] = "";
	if (e->mode == SEER_SSH_DIRECT) {
		snprintf(root, sizeof(root), "/");
		bwrap = 0;
		r = snap_prepare_root(sb, in, root, err, n);
	} else {
		r = workdir_abs(cli, e, wdabs, sizeof(wdabs));
		if (r == 0)
			snprintf(root, sizeof(root), "%s/%s", wdabs, sb->name);
		if (r == 0 && (r = snap_prepare_root(sb, in, root, err, n)) < 0)
			goto out;
		static const char *const sub[] = {"", "/workspace", "/tmp", "/root", NULL};
		for (int i = 0; r == 0 && sub[i]; i++) {
			char p[2100];
			snprintf(p, sizeof(p), "%s%s", root, sub[i]);
			r = sftp_mkdir_p(cli, p, i == 2 ? 01777 : 0755);
		}
		if (r < 0) {
			snprintf(err, n, "sandbox %s: cannot create its directory under %s on %s: %s; check that the remote user may write there",
				 sb->name, e->workdir, who, strerror(-r));
			goto out;
		}
		r = start_models(sb, in, c, cli, wdabs, root, bwrap, err, n);
	}
	if (r < 0)
		goto out;
	pthread_mutex_lock(&s->lock);
	snprintf(s->root, sizeof(s->root), "%s", root);
	s->bwrap = bwrap;
	snprintf(s->iso, sizeof(s->iso), "%s", bwrap ? hp->iso_dir : "");
	snprintf(s->machine, sizeof(s->machine), "%s", hp->machine);
	s->pid1 = hp->pid1;
	s->prctl_nr = bwrap ? seer_syscall_nr(hp->machine, "prctl") : -1;
	s->network = cfg->network;
	s->gpu = cfg->gpu != NULL;
	s->running = 1;
	pthread_mutex_unlock(&s->lock);
	if (e->mode == SEER_SSH_DIRECT)
		sandbox_log(sb, "sandbox %s: on %s, host key %s; mode direct: the SSH endpoint is the sandbox (root/ is its /); isolation: none beyond the endpoint itself",
			    sb->name, who, ssh_conn_fingerprint(c));
	else if (bwrap)
		sandbox_log(sb, "sandbox %s: on %s, host key %s, in %s; isolation: bubblewrap on %s (%s: system call filter, /proc's kernel state masked)",
			    sb->name, who, ssh_conn_fingerprint(c), root, e->host, hp->machine);
	else
		sandbox_log(sb, "sandbox %s: on %s, host key %s, in %s; isolation: NONE (no working bwrap on %s): commands run as %s in that directory; install bubblewrap there for isolation",
			    sb->name, who, ssh_conn_fingerprint(c), root, e->host, e->user);
	free(hp);
	return confined_probe(sb, s, err, n);
out:
	free(hp);
	return r;
}

static void job_free(struct ssh_job *j)
{
	if (j->e)
		ssh_exec_free(j->e);
	close_fd(&j->fd_in);
	close_fd(&j->fd_out);
	close_fd(&j->fd_err);
	sbuf_free(&j->head);
	sbuf_free(&j->errtail);
	free(j);
}

/* Joins and frees finished jobs; with all, waits for every job. */
static void reap(struct ssh_sb *s, int all)
{
	for (;;) {
		struct ssh_job *j = NULL;
		pthread_mutex_lock(&s->lock);
		for (struct ssh_job **pp = &s->jobs; *pp; pp = &(*pp)->next) {
			if ((*pp)->done || all) {
				j = *pp;
				*pp = j->next;
				break;
			}
		}
		pthread_mutex_unlock(&s->lock);
		if (!j)
			return;
		if (j->started)
			pthread_join(j->th, NULL);
		job_free(j);
	}
}

/* ---- the real wait status of a command under bubblewrap ------------------------------- */

/*
 * bwrap (and its pid namespace's init) turn a child's death by signal N into
 * exit code 128+N, so the channel alone cannot tell `kill -9 $$` from
 * `exit 137`. Where the host has perl (/usr/bin/perl, bound into the
 * sandbox with /usr), the command runs under this wrapper inside bwrap: it
 * forks, execs the command, and when the command died of signal N it writes
 * "MARK N" on stderr before it exits with 128+N. job_output takes that line
 * out of stderr; job_main then reports signal N, but only if the exit code
 * is 128+N too. MARK is random per job; a command that forged it could only
 * misreport its own exit. The wrapper is tagged so that ssh_signal passes
 * over it to the command. It survives the signals a command sends to its
 * own group (kill 0) with empty handlers, installed after the fork so the
 * command keeps default dispositions, and forwards nothing, so the command
 * gets each signal once; its stdin and stdout it closes, so that a command
 * that closes its stdin is seen doing so. Errors are compared as numbers
 * (ENOENT 2, EINTR 4 on every Linux): perl's %! loads the Errno module,
 * 1.3 ms of every command's start.
 */
#define EXIT_WRAP_TAG "seerfs-exit-wrap"
static const char exit_wrap_perl[] =
	"#" EXIT_WRAP_TAG "\n"
	"my $m = shift; my $p = fork;\n"
	"if (!defined $p) { print STDERR \"seerfs: cannot fork: $!\\n\"; exit 126 }\n"
	"if (!$p) { exec { $ARGV[0] } @ARGV; print STDERR \"$ARGV[0]: $!\\n\"; exit($! == 2 ? 127 : 126) }\n"
	"$SIG{$_} = sub { } for qw(HUP INT QUIT USR1 USR2 ALRM TERM TSTP TTIN TTOU PIPE);\n"
	"close STDIN; close STDOUT;\n"
	"my $r; do { $r = waitpid($p, 0) } while ($r == -1 && $! == 4);\n"
	"my $s = $?;\n"
	"if ($s & 127) { syswrite STDERR, $m . ($s & 127) . \"\\n\"; exit(128 + ($s & 127)) }\n"
	"exit($s >> 8);\n";

/* A fresh mark: a byte no text uses, then a random name. */
static void exit_wrap_mark(char *mark, size_t n)
{
	unsigned char rnd[12];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		memset(rnd, 0x3c, sizeof(rnd));
	snprintf(mark, n, "\x1e@@seer-sig-");
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(mark + strlen(mark), n - strlen(mark), "%02x", rnd[i]);
	snprintf(mark + strlen(mark), n - strlen(mark), " ");
}

/* Shell lines that put the wrapper in front of "$@" where perl exists. */
static void exit_wrap_args(const char *mark, struct sbuf *b)
{
	sbuf_printf(b, "[ -x /usr/bin/perl ] && set -- /usr/bin/perl -e ");
	sbuf_shell_quote(b, exit_wrap_perl);
	sbuf_printf(b, " ");
	sbuf_shell_quote(b, mark);
	sbuf_printf(b, " \"$@\"\n");
}

/* Length of the longest end of buf that is a beginning of mark. */
static size_t mark_prefix_at_end(const char *buf, size_t len, const char *mark)
{
	size_t ml = strlen(mark);
	for (size_t k = len < ml - 1 ? len : ml - 1; k > 0; k--)
		if (!memcmp(buf + len - k, mark, k))
			return k;
	return 0;
}

/* Job stderr: everything but the wrapper's line, which is noted. A piece
 * that may be the start of that line waits for the next data (or the end). */
static void exit_wrap_stderr(struct ssh_job *j, const char *data, size_t len)
{
	if (!j->sigmark[0]) {
		write_all(j->fd_err, data, len);
		return;
	}
	sbuf_append(&j->errtail, data, len);
	size_t ml = strlen(j->sigmark);
	for (;;) {
		char *b = j->errtail.data;
		size_t l = j->errtail.len;
		char *m = l ? memmem(b, l, j->sigmark, ml) : NULL;
		if (!m) {
			size_t keep = mark_prefix_at_end(b, l, j->sigmark);
			write_all(j->fd_err, b, l - keep);
			memmove(b, b + l - keep, keep);
			j->errtail.len = keep;
			return;
		}
		size_t at = (size_t)(m - b), rest = l - at - ml;
		char *nl = memchr(m + ml, '\n', rest);
		if (!nl && rest < 4) {   /* "N\n": the rest is still on its way */
			write_all(j->fd_err, b, at);
			memmove(b, m, l - at);
			j->errtail.len = l - at;
			return;
		}
		write_all(j->fd_err, b, at);
		size_t end = at + ml;
		if (nl) {
			j->sig_seen = atoi(m + ml);
			end = (size_t)(nl + 1 - b);
		}
		memmove(b, b + end, l - end);
		j->errtail.len = l - end;
	}
}

/* The channel ended: what was held back is the command's after all. */
static void exit_wrap_flush(struct ssh_job *j)
{
	if (j->errtail.len)
		write_all(j->fd_err, j->errtail.data, j->errtail.len);
	j->errtail.len = 0;
}

/* Output of a job's channel: stdout up to the pid line is the wrapper's
 * (and login noise such as a chatty .bashrc), the rest the job's. */
static void job_output(void *ud, int stream, const void *data, size_t len)
{
	struct ssh_job *j = ud;
	if (stream == SSH_EXEC_STDERR) {
		exit_wrap_stderr(j, data, len);
		return;
	}
	if (j->got_pid) {
		write_all(j->fd_out, data, len);
		return;
	}
	sbuf_append(&j->head, data, len);
	char *m = j->head.data ? strstr(j->head.data, PID_MARK) : NULL;
	char *nl = m ? strchr(m, '\n') : NULL;
	if (!nl) {
		if (j->head.len > (1 << 20)) /* no marker in 1 MiB: give up */
			j->got_pid = -1;
		return;
	}
	j->pid = atoi(m + strlen(PID_MARK));
	j->got_pid = j->pid > 0 ? 1 : -1;
	size_t rest = j->head.len - (size_t)(nl + 1 - j->head.data);
	if (rest && j->got_pid > 0)
		write_all(j->fd_out, nl + 1, rest);
}

static void *job_main(void *arg)
{
	struct ssh_job *j = arg;
	struct sandbox *sb = j->s->sb;
	int stdin_open = j->fd_in >= 0;
	struct ssh_exec_status st;
	memset(&st, 0, sizeof(st));
	int r;
	char buf[65536];
	for (;;) {
		if (j->abort) {
			r = -ECANCELED;
			break;
		}
		if (!stdin_open) {
			r = ssh_exec_wait(j->e, 200, &st);
			if (r == -ETIMEDOUT)
				continue;
			break;
		}
		/* Input to forward, or output and the end to deliver: both wake
		 * this thread at once (no polling clock between them). */
		struct pollfd p[2] = {{j->fd_in, POLLIN, 0}, {ssh_exec_event_fd(j->e), POLLIN, 0}};
		int np = p[1].fd >= 0 ? 2 : 1;
		if (poll(p, (nfds_t)np, np == 2 ? 200 : 20) > 0 && np == 2 && (p[1].revents & POLLIN)) {
			uint64_t v;
			ssize_t rd = read(p[1].fd, &v, sizeof(v));
			(void)rd;
		}
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t k = read(j->fd_in, buf, sizeof(buf));
			if (k > 0) {
				r = ssh_exec_write(j->e, buf, (size_t)k, -1);
				if (r == -EPIPE) {
					stdin_open = 0;   /* the command is gone or closed stdin */
				} else if (r < 0) {
					break;
				}
			} else if (k == 0 || (errno != EINTR && errno != EAGAIN)) {
				ssh_exec_close_stdin(j->e);
				stdin_open = 0;
			}
		}
		r = ssh_exec_pump(j->e);
		if (r < 0)
			break;
		if (r == 1)
			stdin_open = 0;
	}
	exit_wrap_flush(j);
	int status;
	if (r == 0 && st.exited && j->sig_seen > 0 && st.exit_code == 128 + j->sig_seen) {
		status = j->sig_seen;   /* bwrap's 128+N was a death by signal N */
	} else if (r == 0 && st.exited) {
		status = (st.exit_code & 0xff) << 8;
	} else if (r == 0 && st.signal[0]) {
		status = signal_number(st.signal);
	} else if (r == 0) {
		status = 255 << 8;   /* closed without a status: sshd died mid-way */
	} else {
		/* The link died (or stop gave up on it): the job counts as hung up. */
		status = SIGHUP;
		sandbox_log(sb, "sandbox %s: job pid %d on %s: %s; it ends as killed by SIGHUP", sb->name, j->pid,
			    entry_of(sb)->host,
			    r == -ENOTCONN ? "disconnected (the SSH connection was lost)" : strerror(-r));
	}
	/* Output first, so readers see EOF no later than the exit. */
	close(j->fd_out);
	close(j->fd_err);
	j->fd_out = j->fd_err = -1;
	jobs_on_exit(sb, &(struct seer_exit){.cookie = (uint64_t)j->pid, .status = status});
	j->done = 1;
	return NULL;
}

/* Maps a path as the sandbox sees it to the remote host's (no bwrap). */
static void host_path(struct ssh_sb *s, const char *p, struct sbuf *out)
{
	static const char *const mapped[] = {"/workspace", "/tmp", "/root", "/models", NULL};
	for (int i = 0; mapped[i]; i++) {
		size_t l = strlen(mapped[i]);
		if (!strncmp(p, mapped[i], l) && (p[l] == '/' || !p[l])) {
			sbuf_printf(out, "%s%s", s->root, p);
			return;
		}
	}
	sbuf_printf(out, "%s", p);
}

/* The kernel's shared state under each bwrap's /proc, as the local
 * provider masks it (core/providers/local/local.c, add_proc_masks): read-only binds of
 * the host's own, and an empty file or directory over what must not be
 * read at all. Only what the host has: bwrap cannot make a /proc entry. */
static const char proc_ro[] = "bus fs irq sys sysrq-trigger";
static const char proc_masked[] = "acpi asound buddyinfo kcore keys key-users kallsyms kmsg kpagecgroup kpagecount "
				  "kpageflags latency_stats pagetypeinfo sched_debug schedstat scsi slabinfo timer_list "
				  "timer_stats vmallocinfo zoneinfo mtrr config.gz";

/*
 * Shell lines that build bwrap's arguments in "$@" and end in
 * "exec 9<FILTER bwrap ... --chdir CWD -- COMMAND": the sandbox as its
 * commands see it. The one place for its binds, namespaces, filter and
 * masks: the commands, the agent and root/'s SFTP server
 * (confined_command) all start here, so root/ shows exactly the commands'
 * "/". cmd: the command's words, already quoted, or NULL for the "$@" the
 * lines before set. pid1: the command is its pid namespace's init
 * (--as-pid-1; the agent). extra: more bwrap arguments before --chdir,
 * already quoted. s->lock held.
 *
 * The arguments that depend on what the host has (a /proc entry, /etc/ssh,
 * GPUs) are prepended to "$@" from the last to the first, never split out
 * of a string, so that no path (the work directory's neither) is word-split
 * or globbed. The system call filter is bwrap's fd 9 (it closes it before
 * the command runs); a sandbox that would run without it is refused
 * earlier (ssh_start).
 */
static void bwrap_command(struct ssh_sb *s, const char *cwd, int network, int pid1, const char *extra, const char *cmd,
			  struct sbuf *b)
{
	if (cmd)
		sbuf_printf(b, "set -- %s\n", cmd);
	sbuf_printf(b, "set --");
	static const char *const dirs[] = {"workspace", "tmp", "root", NULL};
	for (int i = 0; dirs[i]; i++) {
		struct sbuf p = {0};
		sbuf_printf(&p, "%s/%s", s->root, dirs[i]);
		sbuf_printf(b, " --bind ");
		sbuf_shell_quote(b, p.data);
		sbuf_printf(b, " /%s", dirs[i]);
		sbuf_free(&p);
	}
	/* Hub models, read-only at /models (ssh_models.c): the commands and
	 * the sandbox's SFTP server see the same tree. */
	ssh_models_bwrap_args(&s->models, b);
	sbuf_printf(b, "%s --chdir ", extra);
	sbuf_shell_quote(b, cwd);
	sbuf_printf(b, " -- \"$@\"\n");
	if (s->gpu)
		sbuf_printf(b, "for seer_f in /dev/nvidia*; do [ -e \"$seer_f\" ] && set -- --dev-bind \"$seer_f\" \"$seer_f\" \"$@\"; done\n");
	sbuf_printf(b, "set -- --dev /dev \"$@\"\nseer_e=");
	sbuf_shell_quote(b, s->iso);
	sbuf_printf(b, "\nfor seer_f in %s; do if [ -d \"/proc/$seer_f\" ]; then set -- --ro-bind \"$seer_e/" ISO_EMPTY_DIR
		       "\" \"/proc/$seer_f\" \"$@\"; elif [ -e \"/proc/$seer_f\" ]; then set -- --ro-bind \"$seer_e/" ISO_EMPTY_FILE
		       "\" \"/proc/$seer_f\" \"$@\"; fi; done\n",
		    proc_masked);
	sbuf_printf(b, "for seer_f in %s; do [ -e \"/proc/$seer_f\" ] && set -- --ro-bind \"/proc/$seer_f\" \"/proc/$seer_f\" \"$@\"; done\n",
		    proc_ro);
	/* Host secrets stay hidden: shadow files and sshd's keys. */
	sbuf_printf(b, "set -- --proc /proc \"$@\"\n"
		       "[ -d /etc/ssh ] && set -- --tmpfs /etc/ssh \"$@\"\n"
		       "[ -e /etc/gshadow ] && set -- --ro-bind /dev/null /etc/gshadow \"$@\"\n"
		       "[ -e /etc/shadow ] && set -- --ro-bind /dev/null /etc/shadow \"$@\"\n");
	/* Own pid namespace: when kill, a timeout or stop SIGKILLs the
	 * job's group (this bwrap leads it), --die-with-parent takes
	 * the namespace's init with it and the kernel kills everything
	 * left inside, setsid'd processes too. Without it those
	 * survived, kept the channel open, and the job never ended.
	 * Own session (--new-session): a command that signals its own
	 * group (kill 0) signals what runs inside, not bwrap outside,
	 * which died of it; tree kills still reach bwrap's group. */
	sbuf_printf(b, "exec 9<");
	struct sbuf f = {0};
	sbuf_printf(&f, "%s/" ISO_FILTER, s->iso);
	sbuf_shell_quote(b, f.data);
	sbuf_free(&f);
	sbuf_printf(b, " bwrap --die-with-parent --new-session --unshare-pid%s --unshare-ipc --unshare-uts --hostname ",
		    pid1 ? " --as-pid-1" : "");
	sbuf_shell_quote(b, s->sb->name);
	if (!network)
		sbuf_printf(b, " --unshare-net");
	sbuf_printf(b, " --cap-drop ALL --seccomp 9 --ro-bind /usr /usr --ro-bind-try /bin /bin --ro-bind-try /sbin /sbin"
		       " --ro-bind-try /lib /lib --ro-bind-try /lib64 /lib64 --ro-bind-try /lib32 /lib32"
		       " --ro-bind /etc /etc \"$@\"\n");
}

/* Whether an environment entry KEY=VALUE has a name a shell can export. */
static int env_name_ok(const char *kv)
{
	const char *eq = strchr(kv, '=');
	if (!eq || eq == kv)
		return 0;
	for (const char *k = kv; k < eq; k++)
		if (!(*k == '_' || (*k >= 'A' && *k <= 'Z') || (*k >= 'a' && *k <= 'z') || (k > kv && *k >= '0' && *k <= '9')))
			return 0;
	return 1;
}

/* The script the wrapper evals: pid line, cwd, environment, exec. */
static void build_script(struct ssh_sb *s, const struct ssh_entry *e, const struct seer_spawn *req,
			 const char *sigmark, struct sbuf *b)
{
	const char *cwd = req->cwd ? req->cwd : "/workspace";
	int direct = e->mode == SEER_SSH_DIRECT;
	sbuf_printf(b, "printf '%s%%s\\n' \"$$\"\n", PID_MARK);
	struct sbuf d = {0};
	if (direct)
		sbuf_printf(&d, "%s", cwd);
	else
		host_path(s, cwd, &d);
	sbuf_printf(b, "cd ");
	sbuf_shell_quote(b, d.data);
	if (direct)
		sbuf_printf(b, " 2>/dev/null || cd || exit 126\n");
	else
		sbuf_printf(b, " || exit 126\n");
	sbuf_free(&d);
	for (size_t i = 0; req->envp && req->envp[i]; i++) {
		const char *kv = req->envp[i], *eq = strchr(kv, '=');
		if (!env_name_ok(kv))
			continue;
		size_t kl = (size_t)(eq - kv);
		/* In direct mode the remote login's identity stands. */
		static const char *const own[] = {"HOME", "USER", "LOGNAME", "SHELL", NULL};
		int skip = 0;
		for (int k = 0; direct && own[k]; k++)
			skip |= kl == strlen(own[k]) && !strncmp(kv, own[k], kl);
		if (skip)
			continue;
		sbuf_printf(b, "export %.*s=", (int)kl, kv);
		if (!direct && !s->bwrap && kl == 4 && !strncmp(kv, "HOME", 4)) {
			struct sbuf hp = {0};
			host_path(s, eq + 1, &hp);
			sbuf_shell_quote(b, hp.data);
			sbuf_free(&hp);
		} else {
			sbuf_shell_quote(b, eq + 1);
		}
		sbuf_printf(b, "\n");
	}
	if (!direct && !s->bwrap) {
		sbuf_printf(b, "export TMPDIR=");
		struct sbuf t = {0};
		sbuf_printf(&t, "%s/tmp", s->root);
		sbuf_shell_quote(b, t.data);
		sbuf_free(&t);
		sbuf_printf(b, "\n");
	}
	if (s->bwrap) {
		/* The command as "$@", behind the wait-status wrapper where
		 * the host has one. */
		sbuf_printf(b, "set --");
		for (size_t i = 0; req->argv[i]; i++) {
			sbuf_printf(b, " ");
			sbuf_shell_quote(b, req->argv[i]);
		}
		sbuf_printf(b, "\n");
		exit_wrap_args(sigmark, b);
		bwrap_command(s, cwd, s->network, 0, "", NULL, b);
		return;
	}
	sbuf_printf(b, "exec");
	for (size_t i = 0; req->argv[i]; i++) {
		sbuf_printf(b, " ");
		sbuf_shell_quote(b, req->argv[i]);
	}
	sbuf_printf(b, "\n");
}

/* ---- the resident agent: commands without a bubblewrap each ---------------------------- */

/*
 * In host mode under bubblewrap, with perl on the host, a sandbox's
 * commands go through its agent (core/providers/ssh/ssh_agent.c): one exec channel and
 * one bubblewrap for all of them, started by the first command and again
 * after the link or the agent ended. Pids are then the sandbox's own, and
 * signals go through the agent. As on the local provider, a process a
 * command leaves behind runs on until it ends, is killed as part of a tree,
 * or the sandbox stops. Where the agent cannot start, the log says why
 * once, and each command gets a bubblewrap of its own as before.
 */

/* A command of the agent ended. */
static void agent_exit(void *ud, int pid, int status, const char *why)
{
	struct ssh_sb *s = ud;
	struct sandbox *sb = s->sb;
	if (why && status == SIGHUP)
		sandbox_log(sb, "sandbox %s: job pid %d on %s: %s; it ends as killed by SIGHUP", sb->name, pid,
			    entry_of(sb)->host, why);
	jobs_on_exit(sb, &(struct seer_exit){.cookie = (uint64_t)pid, .status = status});
}

/* The running agent on the current link, started if need be: 0 with the
 * agent in *out and agent_lock held (so that no stop frees it meanwhile:
 * the caller unlocks); -ENOTSUP where commands go without it; else
 * -errno. */
static int agent_acquire(struct sandbox *sb, struct ssh_sb *s, struct ssh_agent **out, char *err, size_t n)
{
	const struct ssh_entry *e = entry_of(sb);
	struct ssh_conn *c;
	int r = host_acquire(sb, &c, NULL, NULL, err, n);
	if (r < 0)
		return r;
	pthread_mutex_lock(&s->agent_lock);
	pthread_mutex_lock(&s->lock);
	int use = s->bwrap && s->running && !s->agent_off && e->mode != SEER_SSH_DIRECT && !e->exec_channel;
	int pid1 = s->pid1;
	pthread_mutex_unlock(&s->lock);
	if (use && !pid1) {
		/* As pid 2 under bwrap's init, any command could kill or stop
		 * it; only as init itself are signals from inside dropped. */
		s->agent_off = 1;
		sandbox_log(sb, "sandbox %s: commands on %s start one bubblewrap each (about 10 ms more per command): its bwrap lacks --as-pid-1 (bubblewrap 0.8), without which the sandbox's agent would be in reach of the sandbox's processes; a newer bubblewrap there lets it run",
			    sb->name, e->host);
		use = 0;
	}
	if (!use) {
		pthread_mutex_unlock(&s->agent_lock);
		return -ENOTSUP;
	}
	if (s->agent && !ssh_agent_alive(s->agent, c)) {
		ssh_agent_close(s->agent);   /* the link or the agent ended */
		s->agent = NULL;
	}
	r = 0;
	if (!s->agent) {
		struct sbuf sh = {0}, cmd = {0};
		pthread_mutex_lock(&s->lock);
		/* perl reads the agent from its stdin; its one argument is
		 * prctl's number on this machine (PR_SET_DUMPABLE). */
		sbuf_printf(&cmd, "/usr/bin/perl - %d", s->prctl_nr);
		bwrap_command(s, "/", s->network, 1, "", cmd.data, &sh);
		int warned = s->agent_warned;
		pthread_mutex_unlock(&s->lock);
		sbuf_free(&cmd);
		char e2[SSH_ERRMSG_LEN + 400] = "";
		r = ssh_agent_open(c, sh.data, e->timeout_ms, agent_exit, s, &s->agent, e2, sizeof(e2));
		sbuf_free(&sh);
		if (r == 0 && ssh_agent_warning(s->agent)[0] && !warned) {
			pthread_mutex_lock(&s->lock);
			s->agent_warned = 1;
			pthread_mutex_unlock(&s->lock);
			sandbox_log(sb, "sandbox %s: its agent on %s: %s", sb->name, e->host, ssh_agent_warning(s->agent));
		}
		if (r < 0 && ssh_conn_alive(c)) {
			/* The host cannot run it: every command gets a bubblewrap
			 * of its own from now on, as without the agent. */
			s->agent_off = 1;
			sandbox_log(sb, "sandbox %s: commands on %s start one bubblewrap each (about 10 ms more per command): the sandbox's agent did not start (%s); perl at /usr/bin/perl on %s lets it run",
				    sb->name, e->host, e2, e->host);
			r = -ENOTSUP;
		} else if (r < 0) {
			snprintf(err, n, "sandbox %s: cannot start its agent on %s: %s%s", sb->name, e->host, e2,
				 r == -ENOTCONN ? " (disconnected; seerfs reconnects in the background: try again)" : "");
		} else {
			sandbox_log(sb, "sandbox %s: commands start through its agent on %s (bubblewrap pid %d there)",
				    sb->name, e->host, ssh_agent_host_pid(s->agent));
		}
	}
	if (r == 0)
		*out = s->agent;
	else
		pthread_mutex_unlock(&s->agent_lock);
	return r;
}

/* Stop: the agent ends and takes every process of the sandbox with it. */
static void agent_stop(struct ssh_sb *s)
{
	pthread_mutex_lock(&s->agent_lock);
	struct ssh_agent *a = s->agent;
	s->agent = NULL;
	s->agent_off = 0;   /* a new start tries again */
	pthread_mutex_unlock(&s->agent_lock);
	ssh_agent_close(a);
}

/* ---- root/ confined: the sandbox's own SFTP server ---------------------------------- */

/*
 * In host mode under bubblewrap, root/ is not WORKDIR/NAME over the host's
 * "sftp" subsystem: that server resolves whole paths on the host, so a
 * directory the sandbox swaps for a symlink between the kernel's lookup and
 * the next operation below it would be followed outside the sandbox (SFTP v3
 * has no openat). Instead every sandbox gets one sftp-server of its own,
 * started over an exec channel inside the same bubblewrap as its commands
 * (bwrap_command): every path it resolves, symlinks in the middle included,
 * is resolved in the sandbox's own mount namespace, so root/ is the
 * sandbox's "/" as its commands see it, as on the local provider. The
 * command line holds paths and the sandbox's name only, never its
 * environment. One server per sandbox; a new one after a reconnect or when
 * it ended (host_watch_confined drops root/, the next access starts it).
 */

/* Prints the path of the host's sftp-server binary, if there is one. */
#define SFTP_SERVER_PROBE                                                                                    \
	"for p in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server /usr/lib/ssh/sftp-server "  \
	"/usr/libexec/sftp-server; do [ -x \"$p\" ] && { echo \"$p\"; exit 0; }; done; "                     \
	"p=$( { sshd -T || /usr/sbin/sshd -T; } 2>/dev/null | awk '$1 == \"subsystem\" && $2 == \"sftp\" "  \
	"{ print $3; exit }'); case $p in /*) [ -x \"$p\" ] && echo \"$p\";; esac; exit 0"

/* The first line of out if it is an absolute path without odd bytes. */
static void probe_path(const struct sbuf *out, char *path, size_t n)
{
	path[0] = '\0';
	if (!out->data || out->data[0] != '/')
		return;
	size_t l = strcspn(out->data, "\r\n");
	if (l >= n)
		return;
	for (size_t i = 0; i < l; i++)
		if ((unsigned char)out->data[i] < 0x20)
			return;
	memcpy(path, out->data, l);
	path[l] = '\0';
}

/* At start: root/ is confined where commands run under bubblewrap and the
 * host has an sftp-server binary; otherwise it stays WORKDIR/NAME over the
 * subsystem (and the log says so). */
static int confined_probe(struct sandbox *sb, struct ssh_sb *s, char *err, size_t n)
{
	const struct ssh_entry *e = entry_of(sb);
	pthread_mutex_lock(&s->lock);
	int bwrap = s->bwrap;
	s->confined = 0;
	s->sftp_server[0] = '\0';
	s->sftp_err[0] = '\0';
	char root[sizeof(s->root)];
	snprintf(root, sizeof(root), "%s", s->root);
	pthread_mutex_unlock(&s->lock);
	if (!bwrap)
		return 0;   /* commands are not confined either: ssh_start's log says so */
	struct sbuf out = {0};
	int code = -1;
	int r = run_short(sb, SFTP_SERVER_PROBE, &out, &code, err, n);
	if (r < 0) {
		sbuf_free(&out);
		return r;
	}
	char path[sizeof(s->sftp_server)];
	probe_path(&out, path, sizeof(path));
	sbuf_free(&out);
	if (!path[0]) {
		sandbox_log(sb, "sandbox %s: root/ shows %s on %s through its sftp subsystem, NOT confined to the sandbox (a symlink swapped in there can be followed on the host): no sftp-server binary found on %s; install OpenSSH's sftp-server there (e.g. openssh-sftp-server) and start the sandbox again",
			    sb->name, root, e->host, e->host);
		return 0;
	}
	pthread_mutex_lock(&s->lock);
	snprintf(s->sftp_server, sizeof(s->sftp_server), "%s", path);
	s->confined = 1;
	pthread_mutex_unlock(&s->lock);
	sandbox_log(sb, "sandbox %s: root/ is the sandbox's own / as its commands see it, served by %s on %s inside its bubblewrap",
		    sb->name, path, e->host);
	return 0;
}

/* The exec command of the sandbox's SFTP server. s->lock held. */
static void confined_command(struct ssh_sb *s, struct sbuf *cmd)
{
	static const char *const bound[] = {"/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/", "/lib32/", NULL};
	int visible = 0;
	for (int i = 0; bound[i]; i++)
		visible |= !strncmp(s->sftp_server, bound[i], strlen(bound[i]));
	struct sbuf extra = {0}, sh = {0};
	/* "/" itself is bwrap's tmpfs, private to each bwrap: what root/
	 * wrote there (root/opt/x) no command would see, so it is read-only
	 * (EROFS); the binds below keep their own modes. */
	sbuf_printf(&extra, " --remount-ro /");
	if (!visible) {   /* e.g. /opt/openssh/libexec/sftp-server */
		sbuf_printf(&extra, " --ro-bind ");
		sbuf_shell_quote(&extra, s->sftp_server);
		sbuf_printf(&extra, " ");
		sbuf_shell_quote(&extra, s->sftp_server);
	}
	/* No network for the file server, whatever the config says; its
	 * errors on stderr (-e): the client keeps the tail for messages. */
	struct sbuf server = {0};
	sbuf_shell_quote(&server, s->sftp_server);
	sbuf_printf(&server, " -e");
	bwrap_command(s, "/", 0, 0, extra.data, server.data, &sh);
	sbuf_free(&server);
	sbuf_printf(cmd, "exec /bin/sh -c ");
	sbuf_shell_quote(cmd, sh.data);
	sbuf_free(&extra);
	sbuf_free(&sh);
}

/* Ends a client others may still hold (fs/root/sftpfs.c) and parks it, as dead
 * links are parked: it fails fast from now on and is never freed. */
static void host_park_sftp(struct ssh_host *h, struct sftp_client *cli, const char *why)
{
	sftp_client_shutdown(cli, why);
	struct dead_link *d = xcalloc(1, sizeof(*d));
	d->sftp = cli;
	pthread_mutex_lock(&h->lock);
	d->next = h->graveyard;
	h->graveyard = d;
	pthread_mutex_unlock(&h->lock);
}

/* Logs a failure to start the server, once per distinct message. */
static void confined_log_failure(struct sandbox *sb, struct ssh_sb *s, const char *msg)
{
	pthread_mutex_lock(&s->lock);
	int fresh = strcmp(s->sftp_err, msg) != 0;
	if (fresh)
		snprintf(s->sftp_err, sizeof(s->sftp_err), "%s", msg);
	pthread_mutex_unlock(&s->lock);
	if (fresh)
		sandbox_log(sb, "%s", msg);
}

/* The sandbox's SFTP client on the current link, started if need be. */
static int confined_client(struct sandbox *sb, struct ssh_sb *s, struct sftp_client **out)
{
	const struct ssh_entry *e = entry_of(sb);
	char err[SSH_ERRMSG_LEN];
	struct ssh_conn *c;
	int r = host_acquire(sb, &c, NULL, NULL, err, sizeof(err));
	if (r < 0) {
		confined_log_failure(sb, s, err);
		return r;
	}
	pthread_mutex_lock(&s->sftp_lock);
	pthread_mutex_lock(&s->lock);
	int running = s->running;
	struct sftp_client *cur = s->sftp;
	int usable = cur && s->sftp_conn == c && sftp_client_error(cur, NULL, 0) == 0;
	if (cur && !usable)
		s->sftp = NULL;
	struct sbuf cmd = {0};
	if (running && !usable)
		confined_command(s, &cmd);
	pthread_mutex_unlock(&s->lock);
	if (cur && !usable)
		host_park_sftp(s->h, cur, "replaced by a new SFTP server");
	if (!running) {
		r = -ENOTCONN;
	} else if (usable) {
		*out = cur;
	} else {
		struct sftp_client *cli = NULL;
		char e2[SSH_ERRMSG_LEN] = "";
		r = sftp_client_open_exec(c, cmd.data, &cli, e2, sizeof(e2));
		if (r == 0) {
			pthread_mutex_lock(&s->lock);
			s->sftp = cli;
			s->sftp_conn = c;
			s->sftp_gone = 0;
			s->sftp_err[0] = '\0';
			pthread_mutex_unlock(&s->lock);
			*out = cli;
		} else {
			char msg[SSH_ERRMSG_LEN + 512];
			snprintf(msg, sizeof(msg),
				 "sandbox %s: cannot start root/'s SFTP server (sftp-server inside the sandbox's bubblewrap) on %s: %s; root/ fails until it starts: check bwrap and sftp-server there",
				 sb->name, e->host, e2[0] ? e2 : strerror(-r));
			confined_log_failure(sb, s, msg);
		}
	}
	pthread_mutex_unlock(&s->sftp_lock);
	sbuf_free(&cmd);
	return r;
}

/* Stop or release: the server ends, root/'s client fails fast. */
static void confined_drop(struct ssh_sb *s)
{
	pthread_mutex_lock(&s->sftp_lock);
	pthread_mutex_lock(&s->lock);
	struct sftp_client *cli = s->sftp;
	s->sftp = NULL;
	pthread_mutex_unlock(&s->lock);
	if (cli)
		host_park_sftp(s->h, cli, "the sandbox stopped");
	pthread_mutex_unlock(&s->sftp_lock);
}

/* A sandbox's SFTP server that ended while the link lives (killed,
 * crashed): root/ is dropped so that the next access starts a new one.
 * A dead link is host_main's to report (host_log_all). */
static void host_watch_confined(struct ssh_host *h)
{
	pthread_mutex_lock(&h->sbs_lock);
	for (struct ssh_sb *s = h->sbs; s; s = s->next) {
		char why[SSH_ERRMSG_LEN] = "";
		pthread_mutex_lock(&s->lock);
		int ended = s->sftp && !s->sftp_gone && ssh_conn_alive(s->sftp_conn) &&
			    sftp_client_error(s->sftp, why, sizeof(why)) != 0;
		if (ended)
			s->sftp_gone = 1;
		pthread_mutex_unlock(&s->lock);
		if (!ended)
			continue;
		sandbox_log(s->sb, "sandbox %s: root/'s SFTP server on %s ended (%s); the next access to root/ starts a new one",
			    s->sb->name, h->ent->host, why);
		struct seer_ctx *ctx = s->sb->ctx;
		if (ctx->hooks.root_gone)
			ctx->hooks.root_gone(ctx->hooks.arg, s->sb);
	}
	pthread_mutex_unlock(&h->sbs_lock);
}

/* A command over a channel of its own: in w the fixed wrapper the channel
 * runs, which reads the real script from stdin (byte-wise, so the job's own
 * stdin stays unread) up to a random marker line and evals it in that very
 * process; in script that script and the marker. */
static void channel_command(struct ssh_sb *s, const struct ssh_entry *e, const struct seer_spawn *req,
			    struct ssh_job *j, struct sbuf *w, struct sbuf *script)
{
	unsigned char rnd[12];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		memset(rnd, 0x5a, sizeof(rnd));
	char marker[64] = "@@seer-end-";
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(marker + strlen(marker), 3, "%02x", rnd[i]);
	struct sbuf inner = {0};
	sbuf_printf(&inner, "s=; while IFS= read -r l; do [ \"$l\" = %s ] && break; s=\"$s$l\n\"; done; eval \"$s\"", marker);
	sbuf_printf(w, "exec /bin/sh -c ");
	sbuf_shell_quote(w, inner.data);
	sbuf_free(&inner);
	pthread_mutex_lock(&s->lock);
	if (s->bwrap)
		exit_wrap_mark(j->sigmark, sizeof(j->sigmark));
	build_script(s, e, req, j->sigmark, script);
	pthread_mutex_unlock(&s->lock);
	sbuf_printf(script, "%s\n", marker);
}

static int ssh_spawn(struct sandbox *sb, const struct seer_spawn *req, int *pid, char *err, size_t n)
{
	struct ssh_sb *s = priv_of(sb);
	const struct ssh_entry *e = entry_of(sb);
	reap(s, 0);
	pthread_mutex_lock(&s->lock);
	int running = s->running;
	pthread_mutex_unlock(&s->lock);
	if (!running) {
		snprintf(err, n, "sandbox %s: not started on %s", sb->name, e->host);
		return -ENOTCONN;
	}
	struct ssh_agent *a;
	int r = agent_acquire(sb, s, &a, err, n);
	if (r == 0) {
		char e2[SSH_ERRMSG_LEN];
		r = ssh_agent_spawn(a, req, pid, e2, sizeof(e2));
		pthread_mutex_unlock(&s->agent_lock);
		if (r < 0)
			snprintf(err, n, "sandbox %s: on %s: %s%s", sb->name, e->host, e2,
				 r == -ENOTCONN ? " (disconnected; seerfs reconnects in the background: try again)" : "");
		return r;
	}
	struct ssh_conn *c;
	if (r == -ENOTSUP)
		r = host_acquire(sb, &c, NULL, NULL, err, n);
	if (r < 0)
		return r;
	struct sbuf w = {0}, script = {0};
	struct ssh_job *j = xcalloc(1, sizeof(*j));
	j->s = s;
	channel_command(s, e, req, j, &w, &script);

	j->fd_in = fcntl(req->fd_in, F_DUPFD_CLOEXEC, 3);
	j->fd_out = fcntl(req->fd_out, F_DUPFD_CLOEXEC, 3);
	j->fd_err = fcntl(req->fd_err, F_DUPFD_CLOEXEC, 3);
	if (j->fd_in < 0 || j->fd_out < 0 || j->fd_err < 0) {
		r = -errno;
		snprintf(err, n, "sandbox %s: cannot duplicate the job's pipes: %s", sb->name, strerror(-r));
		goto fail;
	}
	char e2[SSH_ERRMSG_LEN] = "";
	r = ssh_exec_start(c, w.data, job_output, j, &j->e, e2, sizeof(e2));
	if (r < 0) {
		snprintf(err, n, "sandbox %s: cannot start a command on %s: %s%s", sb->name, e->host, e2[0] ? e2 : strerror(-r),
			 r == -ENOTCONN ? " (disconnected; seerfs reconnects in the background: try again)" : "");
		goto fail;
	}
	r = ssh_exec_write(j->e, script.data, script.len, e->timeout_ms);
	int64_t deadline = ssh_now_ms() + e->timeout_ms;
	/* Woken by each piece of output, not by a clock: the pid line ends
	 * the wait as soon as it arrives. */
	while (r == 0 && !j->got_pid) {
		int64_t left = deadline - ssh_now_ms();
		r = left > 0 ? ssh_exec_wait_event(j->e, (int)left) : -ETIMEDOUT;
		if (r == 1 && !j->got_pid)
			r = -EIO;   /* ended without starting */
		else if (r == 1)
			r = 0;
	}
	if (r < 0 || j->got_pid < 0) {
		if (r == 0)
			r = -EIO;
		snprintf(err, n, "sandbox %s: the remote shell on %s did not start the command: %s%s", sb->name, e->host,
			 strerror(-r), r == -ENOTCONN ? " (disconnected; seerfs reconnects in the background: try again)" : "");
		goto fail;
	}
	*pid = j->pid;
	pthread_mutex_lock(&s->lock);
	j->next = s->jobs;
	s->jobs = j;
	j->started = pthread_create(&j->th, NULL, job_main, j) == 0;
	if (!j->started)
		j->done = 1;
	pthread_mutex_unlock(&s->lock);
	sbuf_free(&w);
	sbuf_free(&script);
	if (!j->started) {
		/* No pump: end the remote command and report it gone. */
		jobs_on_exit(sb, &(struct seer_exit){.cookie = (uint64_t)*pid, .status = SIGKILL});
	}
	return 0;
fail:
	sbuf_free(&w);
	sbuf_free(&script);
	job_free(j);
	return r;
}

static int ssh_signal(struct sandbox *sb, int pid, int sig, int tree)
{
	if (pid <= 1 || sig < 0 || sig > 64)
		return -EINVAL;
	struct ssh_sb *s = priv_of(sb);
	pthread_mutex_lock(&s->lock);
	int bwrap = s->bwrap;
	pthread_mutex_unlock(&s->lock);
	char cmd[640], err[SSH_ERRMSG_LEN];
	pthread_mutex_lock(&s->agent_lock);
	if (s->agent) {
		/* The sandbox's own pid: its agent signals it (the command
		 * itself, or its session and descendants as one tree). */
		int r = ssh_agent_signal(s->agent, pid, sig, tree, err, sizeof(err));
		pthread_mutex_unlock(&s->agent_lock);
		if (r < 0 && r != -ESRCH)
			sandbox_log(sb, "sandbox %s: signal %d to pid %d: %s", sb->name, sig, pid, err);
		return r;
	}
	pthread_mutex_unlock(&s->agent_lock);
	if (tree)
		snprintf(cmd, sizeof(cmd), "kill -%d -- -%d", sig, pid);
	else if (bwrap)
		/* pid is bwrap's; its child is the pid namespace's init, whose
		 * first child is the command. Signalled directly, bwrap would
		 * die of the signal and the command, which may handle it
		 * (trap), would only get --die-with-parent's SIGKILL. Kernels
		 * without /proc/PID/task/TID/children get the old way. Past
		 * the wait-status wrapper (exit_wrap_perl) to its child, so
		 * that even SIGKILL reaches the command and is reported as
		 * such; without a child yet, the wrapper forwards it. */
		snprintf(cmd, sizeof(cmd),
			 "i=$(cut -d' ' -f1 /proc/%d/task/%d/children 2>/dev/null) && [ -n \"$i\" ] && "
			 "c=$(cut -d' ' -f1 /proc/$i/task/$i/children 2>/dev/null) && [ -n \"$c\" ] && "
			 "{ if grep -q " EXIT_WRAP_TAG " /proc/$c/cmdline 2>/dev/null; then "
			 "g=$(cut -d' ' -f1 /proc/$c/task/$c/children 2>/dev/null); [ -z \"$g\" ] || c=$g; fi; "
			 "kill -%d $c; } || kill -%d %d",
			 pid, pid, sig, sig, pid);
	else
		snprintf(cmd, sizeof(cmd), "kill -%d %d", sig, pid);
	int code = -1;
	int r = run_short(sb, cmd, NULL, &code, err, sizeof(err));
	if (r < 0) {
		sandbox_log(sb, "%s", err);
		return r;
	}
	return code == 0 ? 0 : -ESRCH;
}

static int ssh_stop(struct sandbox *sb)
{
	struct ssh_sb *s = priv_of(sb);
	struct sbuf cmd = {0};
	pthread_mutex_lock(&s->lock);
	s->running = 0;
	for (struct ssh_job *j = s->jobs; j; j = j->next)
		if (!j->done && j->pid > 1)
			sbuf_printf(&cmd, "%skill -9 -- -%d 2>/dev/null", cmd.len ? "; " : "", j->pid);
	pthread_mutex_unlock(&s->lock);
	agent_stop(s);   /* and with it everything in the sandbox */
	if (cmd.len && s->h) {
		sbuf_printf(&cmd, "; true");
		char err[SSH_ERRMSG_LEN];
		int code;
		if (run_short(sb, cmd.data, NULL, &code, err, sizeof(err)) < 0)
			sandbox_log(sb, "%s; its remote processes may still run", err);
	}
	sbuf_free(&cmd);
	pthread_mutex_lock(&s->lock);
	for (struct ssh_job *j = s->jobs; j; j = j->next)
		j->abort = 1;
	pthread_mutex_unlock(&s->lock);
	reap(s, 1);
	if (s->h)
		confined_drop(s);
	return 0;
}

static int ssh_destroy(struct sandbox *sb)
{
	const struct ssh_entry *e = entry_of(sb);
	struct ssh_sb *s = priv_of(sb);
	if (!e || e->mode == SEER_SSH_DIRECT || !s->h)
		return 0;   /* the endpoint is not ours to delete */
	char root[2048];
	pthread_mutex_lock(&s->lock);
	snprintf(root, sizeof(root), "%s", s->root);
	pthread_mutex_unlock(&s->lock);
	if (!root[0] || !strcmp(root, "/"))
		return 0;
	struct sbuf cmd = {0};
	sbuf_printf(&cmd, "rm -rf -- ");
	sbuf_shell_quote(&cmd, root);
	char err[SSH_ERRMSG_LEN];
	int code = -1;
	int r = run_short(sb, cmd.data, NULL, &code, err, sizeof(err));
	sbuf_free(&cmd);
	if (r < 0 || code != 0) {
		sandbox_log(sb, "sandbox %s: could not remove %s on %s (%s); remove it by hand", sb->name, root, e->host,
			    r < 0 ? err : "rm failed");
		return r < 0 ? r : -EIO;
	}
	sandbox_log(sb, "sandbox %s: removed %s on %s", sb->name, root, e->host);
	return 0;
}

/* root/ over SFTP: the sandbox's own sftp-server when confined, else the
 * link's, at the sandbox's directory (or "/" in direct mode). The client
 * stays ours (parked, never freed, when replaced); the handle holds a
 * reference of its own. */
static int ssh_root(struct sandbox *sb, struct seer_root *out)
{
	struct ssh_sb *s = priv_of(sb);
	pthread_mutex_lock(&s->lock);
	int running = s->running;
	snprintf(out->path, sizeof(out->path), "%s", s->root);
	pthread_mutex_unlock(&s->lock);
	if (!running || !s->h)
		return -ENOTCONN;
	pthread_mutex_lock(&s->lock);
	int confined = s->confined;
	pthread_mutex_unlock(&s->lock);
	struct sftp_client *c = NULL;
	int r;
	if (confined) {
		snprintf(out->path, sizeof(out->path), "/");
		r = confined_client(sb, s, &c);
	} else {
		char err[SSH_ERRMSG_LEN];
		r = host_acquire(sb, NULL, &c, NULL, err, sizeof(err));
	}
	if (r < 0)
		return r;
	sftp_client_ref(c);
	out->fd = -1;
	out->sftp = c;
	out->readonly = 0;
	return 0;
}

/* local_files and local_dirs go over the root's SFTP client (upload.c). */
static int ssh_copy_in(struct sandbox *sb, const struct seer_root *root, int sfd, const struct stat *st,
		       const char *rel, char *bad, size_t badn)
{
	if (!root->sftp)
		return -ENOTSUP;
	return upload_in(root->sftp, root->path, sfd, st, rel, bad, badn);
}

static int ssh_freeze(struct sandbox *sb, int freeze)
{
	(void)sb;
	(void)freeze;
	/* Snapshots stop the processes inside their own remote script
	 * (ssh_snap_take), so no stop outlives a lost link. */
	return -ENOTSUP;
}

/* ---- snapshots (host mode) -----------------------------------------------------------
 *
 * A snapshot is a copy of the sandbox's directory WORKDIR/NAME (workspace,
 * tmp, root) at WORKDIR/.seerfs-snapshots/SNAP on the remote host, made by
 * one remote script: stop the sandbox's processes, cp -a --reflink=auto
 * into SNAP@tmp, resume them (a trap does it on every way out, signals
 * included), sync, rename to SNAP. A lost link does not stop the script:
 * sshd leaves a session's command running, so it resumes the processes
 * itself. Temporary names hold '@', which
 * no sandbox or snapshot name can, so they never collide with a real one.
 * The core keeps info.json in the state directory with "where" = the
 * remote path (core/snapshot.c). Direct mode is refused: the endpoint's
 * "/" is not ours to copy or to delete. See docs/ssh.md.
 */

#define SNAP_STORE ".seerfs-snapshots"
#define SNAP_MARK "@@seer-snap "

/* Output of a snapshot script: stdout and the end of stderr. */
struct snap_out {
	struct sbuf out, err;
};

static void snap_collect(void *ud, int stream, const void *data, size_t len)
{
	struct snap_out *o = ud;
	struct sbuf *b = stream == SSH_EXEC_STDOUT ? &o->out : &o->err;
	if (b->len < (64u << 10))   /* a cp that fails on every file says a lot */
		sbuf_append(b, data, len);
}

/* The last non-empty line of text, for messages ("" when none). */
static void last_line(const struct sbuf *b, char *out, size_t n)
{
	out[0] = '\0';
	if (!b->data)
		return;
	const char *end = b->data + b->len;
	while (end > b->data && (end[-1] == '\n' || end[-1] == '\r'))
		end--;
	const char *start = end;
	while (start > b->data && start[-1] != '\n')
		start--;
	snprintf(out, n, "%.*s", (int)(end - start), start);
}

/* Runs a snapshot script on h without a time limit (a copy takes what it
 * takes; a lost link ends it with its SIGHUP). *code is its exit status. */
static int snap_run(struct ssh_host *h, const char *label, const char *script, struct snap_out *o, int *code, char *err,
		    size_t n)
{
	struct ssh_conn *c;
	int r = host_acquire_h(h, label, &c, NULL, NULL, err, n);
	if (r < 0)
		return r;
	struct ssh_exec_status st;
	char e2[SSH_ERRMSG_LEN];
	struct sbuf cmd = {0};
	sbuf_printf(&cmd, "/bin/sh -c ");
	sbuf_shell_quote(&cmd, script);
	r = ssh_exec_run(c, cmd.data, NULL, 0, snap_collect, o, -1, &st, e2, sizeof(e2));
	sbuf_free(&cmd);
	if (r < 0) {
		snprintf(err, n, "%s: on %s: %s%s", label, h->ent->host, strerror(-r),
			 r == -ENOTCONN ? " (disconnected; the remote side removes its partial copy; try again)" : "");
		return r;
	}
	*code = st.exited ? st.exit_code : 128 + signal_number(st.signal);
	return 0;
}

/* An errno for a failed remote cp/mv from what it printed. */
static int snap_errno(const struct snap_out *o)
{
	const char *e = o->err.data ? o->err.data : "";
	if (strstr(e, "No space left on device"))
		return -ENOSPC;
	if (strstr(e, "Disk quota exceeded"))
		return -EDQUOT;
	if (strstr(e, "Permission denied"))
		return -EACCES;
	return -EIO;
}

/* Whether where is SNAP's place in a store (so rm -rf of it can only ever
 * delete a snapshot, whatever info.json says). */
static int snap_where_ok(const char *where, const char *snap)
{
	size_t lw = strlen(where), ls = snap ? strlen(snap) : 0;
	const char *mid = "/" SNAP_STORE "/";
	size_t lm = strlen(mid);
	if (where[0] != '/' || strstr(where, "/../") || strstr(where, "/./"))
		return 0;
	if (snap)
		return lw > lm + ls && !strcmp(where + lw - ls, snap) && !strncmp(where + lw - ls - lm, mid, lm);
	const char *slash = strrchr(where, '/');
	return slash && slash - where >= (ptrdiff_t)(lm - 1) && !strncmp(slash - (lm - 1), mid, lm) && name_valid(slash + 1);
}

/* The shell functions that stop and resume a sandbox's processes: its jobs'
 * process groups (sshd makes each job a group; under bubblewrap the job is
 * bwrap, whose pid namespace holds everything the job started), then every
 * descendant found through /proc/PID/task/TID/children, again until no new
 * one appears (a stopped process cannot fork). Then wait, bounded, until
 * each shows state T: a process deep in a system call stops when it
 * returns; if some do not within 2 s (a vfork parent waiting on a stopped
 * child never shows T), go on and say so, as the local provider does. */
static void snap_freeze_fns(struct sbuf *b, const char *pids)
{
	sbuf_printf(b, "fz_pids='%s'\nfz_stopped=\n", pids);
	sbuf_printf(b, "kids() { local fz_q fz_c; for fz_q in \"$@\"; do echo \"$fz_q\"; for fz_c in /proc/\"$fz_q\"/task/*/children; do "
		       "[ -r \"$fz_c\" ] && kids $(cat \"$fz_c\" 2>/dev/null); done; done; }\n");
	sbuf_printf(b, "freeze() {\n"
		       " for fz_p in $fz_pids; do kill -STOP -- \"-$fz_p\" 2>/dev/null; done\n"
		       " fz_i=0; while [ $fz_i -lt 10 ]; do fz_new=\n"
		       "  for fz_p in $(kids $fz_pids); do case \" $fz_stopped \" in *\" $fz_p \"*) continue;; esac\n"
		       "   kill -STOP \"$fz_p\" 2>/dev/null && { fz_stopped=\"$fz_stopped $fz_p\"; fz_new=1; }; done\n"
		       "  [ -z \"$fz_new\" ] && break; fz_i=$((fz_i+1)); done\n"
		       " fz_i=0; while [ $fz_i -lt 40 ]; do fz_busy=\n"
		       "  for fz_p in $fz_stopped; do fz_s=$(sed 's/.*) //' /proc/$fz_p/stat 2>/dev/null | cut -c1)\n"
		       "   case \"$fz_s\" in ''|T|t|Z|X) ;; *) fz_busy=1;; esac; done\n"
		       "  [ -z \"$fz_busy\" ] && break; sleep 0.05; fz_i=$((fz_i+1)); done\n"
		       " [ -n \"$fz_busy\" ] && echo '@@seer-snap-busy'\n"
		       " return 0\n}\n");
	sbuf_printf(b, "thaw() { for fz_p in $fz_pids; do kill -CONT -- \"-$fz_p\" 2>/dev/null; done; "
		       "[ -n \"$fz_stopped\" ] && kill -CONT $fz_stopped 2>/dev/null; fz_stopped=; return 0; }\n");
}

/* The script that takes snapshot snap of the directory src into store dir d. */
static void snap_take_script(struct sbuf *b, const char *src, const char *d, const char *snap, const char *pids)
{
	sbuf_printf(b, "sn_src=");
	sbuf_shell_quote(b, src);
	sbuf_printf(b, "\nsn_d=");
	sbuf_shell_quote(b, d);
	sbuf_printf(b, "\nsn_s=");
	sbuf_shell_quote(b, snap);
	sbuf_printf(b, "\nsn_t=\"$sn_d/$sn_s@tmp\"\n");
	snap_freeze_fns(b, pids);
	/* The traps: resume and drop the partial copy on every way out. */
	sbuf_printf(b, "cleanup() { thaw; [ -n \"$sn_t\" ] && rm -rf -- \"$sn_t\"; }\n"
		       "trap cleanup EXIT\ntrap 'exit 129' HUP INT TERM PIPE\n"
		       "[ -d \"$sn_src\" ] || { echo \"$sn_src is missing\" >&2; exit 3; }\n"
		       "mkdir -p -- \"$sn_d\" || exit 4\n"
		       /* Leftovers of a build that died, and a copy whose record
			* the state directory lost: the name is free there. */
		       "rm -rf -- \"$sn_t\" \"$sn_d/$sn_s\" || exit 4\n"
		       "sn_t0=$(date +%%s%%N)\nfreeze\n"
		       "cp -a --reflink=auto -- \"$sn_src\" \"$sn_t\" || exit 5\n"
		       "thaw\nsn_t1=$(date +%%s%%N)\n"
		       "sync -f \"$sn_t\" 2>/dev/null || sync\n"
		       "mv -T -- \"$sn_t\" \"$sn_d/$sn_s\" || exit 6\n"
		       "sn_t=\nsync -f \"$sn_d\" 2>/dev/null || sync\n"
		       "sn_b=$(find \"$sn_d/$sn_s\" -type f -printf '%%s\\n' | awk '{n+=$1} END {printf \"%%d\", n}')\n"
		       "sn_e=$(find \"$sn_d/$sn_s\" -mindepth 1 | wc -l)\n"
		       "echo \"" SNAP_MARK "$(( (sn_t1 - sn_t0) / 1000 )) $sn_b $sn_e\"\n");
}

/* The job pids of s (their process groups), space separated. */
static void snap_pids(struct ssh_sb *s, char *out, size_t n)
{
	size_t k = 0;
	out[0] = '\0';
	pthread_mutex_lock(&s->lock);
	for (struct ssh_job *j = s->jobs; j && k + 16 < n; j = j->next)
		if (!j->done && j->pid > 1)
			k += (size_t)snprintf(out + k, n - k, "%s%d", k ? " " : "", j->pid);
	pthread_mutex_unlock(&s->lock);
	/* The agent's bubblewrap leads the group that holds the agent and,
	 * as descendants, every process its commands started. */
	pthread_mutex_lock(&s->agent_lock);
	int apid = s->agent ? ssh_agent_host_pid(s->agent) : 0;
	if (apid > 1 && k + 16 < n)
		k += (size_t)snprintf(out + k, n - k, "%s%d", k ? " " : "", apid);
	pthread_mutex_unlock(&s->agent_lock);
}

/* The store directory next to a sandbox directory WORKDIR/NAME. */
static void snap_store_of(const char *root, char *out, size_t n)
{
	const char *slash = strrchr(root, '/');
	snprintf(out, n, "%.*s/%s", slash ? (int)(slash - root) : 0, root, SNAP_STORE);
}

static int ssh_snap_take(struct sandbox *sb, const char *snap, const char *layer, struct seer_snap_taken *out, char *err,
			 size_t n)
{
	const struct ssh_entry *e = entry_of(sb);
	struct ssh_sb *s = priv_of(sb);
	if (!e || e->mode == SEER_SSH_DIRECT) {
		snprintf(err, n, "sandbox %s: snapshot %s: provider %s is in mode direct, where the SSH endpoint itself is the sandbox; seerfs neither copies nor deletes anything there, so it takes no snapshots: use mode host for snapshots",
			 sb->name, snap, e ? e->name : "?");
		return -ENOTSUP;
	}
	char root[2048], d[2100], pids[4096];
	pthread_mutex_lock(&s->lock);
	int running = s->running;
	snprintf(root, sizeof(root), "%s", s->root);
	pthread_mutex_unlock(&s->lock);
	if (!running || !s->h || root[0] != '/') {
		snprintf(err, n, "sandbox %s: snapshot %s: not started on %s", sb->name, snap, e->host);
		return -ENOTCONN;
	}
	snap_store_of(root, d, sizeof(d));
	snap_pids(s, pids, sizeof(pids));
	struct sbuf script = {0};
	snap_take_script(&script, root, d, snap, pids);
	struct snap_out o = {{0}, {0}};
	char label[200];
	snprintf(label, sizeof(label), "sandbox %s: snapshot %s", sb->name, snap);
	int code = -1;
	int r = snap_run(s->h, label, script.data, &o, &code, err, n);
	sbuf_free(&script);
	const char *m = o.out.data ? strstr(o.out.data, SNAP_MARK) : NULL;
	if (r == 0 && (code != 0 || !m)) {
		char why[512];
		last_line(&o.err, why, sizeof(why));
		r = code == 5 || code == 6 ? snap_errno(&o) : -EIO;
		/* The advice first: cp's line holds long paths. */
		snprintf(err, n, "sandbox %s: snapshot %s: %s on %s (nothing was kept, the sandbox runs on): %s (exit %d)",
			 sb->name, snap,
			 r == -ENOSPC || r == -EDQUOT ? "out of disk space: free space there and try again"
						      : "the copy failed",
			 e->host, why[0] ? why : "no message", code);
	}
	if (r == 0) {
		unsigned long long us = 0, bytes = 0, entries = 0;
		sscanf(m + strlen(SNAP_MARK), "%llu %llu %llu", &us, &bytes, &entries);
		snprintf(out->where, sizeof(out->where), "%.1900s/%.64s", d, snap);
		out->bytes = bytes;
		out->entries = entries;
		out->frozen_s = (double)us / 1e6;
		if (strstr(o.out.data, "@@seer-snap-busy"))
			sandbox_log(sb, "snapshot %s: some processes of the sandbox on %s did not show as stopped within 2 s (a vfork parent waiting on a stopped child, or a long system call); they cannot run, copied anyway",
				    snap, e->host);
	}
	sbuf_free(&o.out);
	sbuf_free(&o.err);
	return r;
}

static int ssh_snap_remove(struct seer_ctx *ctx, const void *settings, const char *snap, const char *where, char *err,
			   size_t n)
{
	const struct ssh_entry *e = settings;
	if (!e || !snap_where_ok(where, snap)) {
		snprintf(err, n, "%s is not a snapshot's place in a %s directory; the snapshot's info.json is damaged, remove the copy by hand",
			 where, SNAP_STORE);
		return -EINVAL;
	}
	/* Out of sight first, so a restore never copies half a snapshot. */
	struct sbuf script = {0};
	sbuf_printf(&script, "w=");
	sbuf_shell_quote(&script, where);
	sbuf_printf(&script, "\nif [ -e \"$w\" ]; then mv -T -- \"$w\" \"$w@del\" || exit 5; fi\n"
			     "rm -rf -- \"$w@del\" || exit 6\n");
	struct snap_out o = {{0}, {0}};
	char label[200];
	snprintf(label, sizeof(label), "snapshot %s", snap);
	int code = -1;
	int r = snap_run(host_get(ctx, e), label, script.data, &o, &code, err, n);
	sbuf_free(&script);
	if (r == 0 && code != 0) {
		char why[512];
		last_line(&o.err, why, sizeof(why));
		snprintf(err, n, "rm of %s on %s failed (exit %d): %s", where, e->host, code, why[0] ? why : "no message");
		r = snap_errno(&o);
	}
	sbuf_free(&o.out);
	sbuf_free(&o.err);
	return r;
}

static int ssh_snap_root(struct seer_ctx *ctx, const void *settings, const struct seer_snap_ref *snap,
			 struct seer_root *out, char *err, size_t n)
{
	const struct ssh_entry *e = settings;
	const char *where = snap->where;
	if (!e || !snap_where_ok(where, NULL)) {
		snprintf(err, n, "%s is not a snapshot's place in a %s directory; the snapshot's info.json is damaged", where,
			 SNAP_STORE);
		return -EINVAL;
	}
	char label[2200];
	snprintf(label, sizeof(label), "snapshot at %s", where);
	struct sftp_client *c = NULL;
	int r = host_acquire_h(host_get(ctx, e), label, NULL, &c, NULL, err, n);
	if (r < 0)
		return r;
	sftp_client_ref(c);
	out->fd = -1;
	out->sftp = c;
	out->readonly = 1;
	snprintf(out->path, sizeof(out->path), "%s", where);
	return 0;
}

/* Before a sandbox's directory root is made: refuse a snapshot in direct
 * mode and the store's name in host mode, and fill root from the snapshot
 * the config names. Only when root
 * does not exist yet: a restart keeps the sandbox's own files (as the
 * local provider keeps its upper dir). */
static int snap_prepare_root(struct sandbox *sb, const struct seer_start *in, const char *root, char *err, size_t n)
{
	const struct ssh_entry *e = entry_of(sb);
	if (e->mode == SEER_SSH_DIRECT && sb->cfg.snapshot) {
		snprintf(err, n, "sandbox %s: config field \"snapshot\": provider %s is in mode direct, where the SSH endpoint itself is the sandbox; seerfs copies nothing onto it, so it cannot start from snapshot %s: use a provider in mode host",
			 sb->name, e->name, sb->cfg.snapshot);
		return -ENOTSUP;
	}
	if (e->mode == SEER_SSH_DIRECT)
		return 0;
	if (!strcmp(sb->name, SNAP_STORE)) {
		snprintf(err, n, "sandbox %s: the name %s is where provider %s keeps its snapshots on %s; pick another name",
			 sb->name, SNAP_STORE, e->name, e->host);
		return -EINVAL;
	}
	if (!strcmp(sb->name, ISO_DIR)) {
		snprintf(err, n, "sandbox %s: the name %s is where provider %s keeps the sandboxes' system call filter on %s; pick another name",
			 sb->name, ISO_DIR, e->name, e->host);
		return -EINVAL;
	}
	/* The core checked that this provider took it (snapshot_start_ref). */
	const char *where = in->snap.name && in->snap.where ? in->snap.where : "";
	int r;
	if (!where[0])
		return 0;
	if (!snap_where_ok(where, sb->cfg.snapshot)) {
		snprintf(err, n, "sandbox %s: snapshot %s: its info.json names %s, not a place in a %s directory; the snapshot is damaged, delete it",
			 sb->name, sb->cfg.snapshot, where, SNAP_STORE);
		return -EINVAL;
	}
	struct sbuf script = {0};
	sbuf_printf(&script, "w=");
	sbuf_shell_quote(&script, where);
	sbuf_printf(&script, "\ndst=");
	sbuf_shell_quote(&script, root);
	sbuf_printf(&script, "\nt=\"$dst@restore\"\n"
			     "[ -e \"$dst\" ] && exit 0\n"
			     "[ -d \"$w\" ] || { echo \"$w is missing\" >&2; exit 3; }\n"
			     "trap '[ -n \"$t\" ] && rm -rf -- \"$t\"' EXIT\ntrap 'exit 129' HUP INT TERM PIPE\n"
			     "rm -rf -- \"$t\" || exit 4\n"
			     "cp -a --reflink=auto -- \"$w\" \"$t\" || exit 5\n"
			     "sync -f \"$t\" 2>/dev/null || sync\n"
			     "mv -T -- \"$t\" \"$dst\" || exit 6\nt=\n");
	struct snap_out o = {{0}, {0}};
	char label[200];
	snprintf(label, sizeof(label), "sandbox %s", sb->name);
	int code = -1;
	r = snap_run(host_of(sb), label, script.data, &o, &code, err, n);
	sbuf_free(&script);
	if (r == 0 && code != 0) {
		char why[512];
		last_line(&o.err, why, sizeof(why));
		r = code == 3 ? -ENOENT : snap_errno(&o);
		snprintf(err, n, "sandbox %s: starting from snapshot %s: copying %s to %s on %s failed (exit %d): %s%s", sb->name,
			 sb->cfg.snapshot, where, root, e->host, code, why[0] ? why : "no message",
			 code == 3 ? "; the snapshot's copy is gone: delete the snapshot (rmdir MOUNT/snapshots/NAME)"
				   : "; free space on the remote host if it is full, then retry (echo retry > ctl)");
	}
	if (r == 0 && code == 0)
		sandbox_log(sb, "sandbox %s: started from snapshot %s (a copy of %s on %s)", sb->name, sb->cfg.snapshot, where,
			    e->host);
	sbuf_free(&o.out);
	sbuf_free(&o.err);
	return r;
}

static int ssh_busy(struct sandbox *sb)
{
	struct ssh_sb *s = priv_of(sb);
	int busy = 0;
	pthread_mutex_lock(&s->lock);
	for (struct ssh_job *j = s->jobs; j; j = j->next)
		busy |= !j->done;
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_lock(&s->agent_lock);
	busy |= s->agent && ssh_agent_busy(s->agent);
	pthread_mutex_unlock(&s->agent_lock);
	return busy;
}

static void ssh_release(struct sandbox *sb)
{
	struct ssh_sb *s = sb->priv;
	if (!s)
		return;
	if (s->jobs)
		ssh_stop(sb);
	if (s->h) {
		agent_stop(s);
		confined_drop(s);
		host_unregister(s);
	}
	ssh_models_free(&s->models);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->sftp_lock);
	pthread_mutex_destroy(&s->agent_lock);
	free(s);
	sb->priv = NULL;
}

/* What start logged, for status: the truth about a remote sandbox's walls. */
static void ssh_isolation(struct sandbox *sb, char *buf, size_t len)
{
	const struct ssh_entry *e = entry_of(sb);
	struct ssh_sb *s = sb->priv;   /* not priv_of: status must not create it */
	if (!e || !s) {
		snprintf(buf, len, "unknown (not started)");
		return;
	}
	pthread_mutex_lock(&s->lock);
	int running = s->running, bwrap = s->bwrap, network = s->network;
	pthread_mutex_unlock(&s->lock);
	if (!running)
		snprintf(buf, len, "unknown (not started on %s yet)", e->host);
	else if (e->mode == SEER_SSH_DIRECT)
		snprintf(buf, len, "none beyond the SSH endpoint %s itself (mode direct)", e->host);
	else if (bwrap)
		snprintf(buf, len, "bubblewrap on %s (mount, pid, ipc, uts namespaces, no capabilities, system call filter, /proc's kernel state masked%s)",
			 e->host, network ? "" : ", no network");
	else
		snprintf(buf, len, "NONE: no working bubblewrap on %s; commands run as %s in the sandbox's directory",
			 e->host, e->user);
}

const struct seer_provider seer_provider_ssh = {
	.name = "ssh",
	.init = ssh_state_init,
	.cleanup = ssh_state_cleanup,
	.check = ssh_check,
	.start = ssh_start,
	.stop = ssh_stop,
	.destroy = ssh_destroy,
	.root = ssh_root,
	.copy_in = ssh_copy_in,
	.spawn = ssh_spawn,
	.signal = ssh_signal,
	.freeze = ssh_freeze,
	.snap_take = ssh_snap_take,
	.snap_remove = ssh_snap_remove,
	.snap_root = ssh_snap_root,
	.busy = ssh_busy,
	.release = ssh_release,
	.isolation = ssh_isolation,
	.cell_client = NULL,   /* the Python client */
	.host_binds = 0,       /* models and pip's directories are copied there */
};
