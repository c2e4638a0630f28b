/*
 * confined.c - root/ of a sandbox under bubblewrap: its own sftp-server inside the sandbox's bubblewrap.
 */
#include "core/providers/ssh/ssh_int.h"

/* ---- root/ confined: the sandbox's own SFTP server ---------------------------------- */

/*
 * In host mode under bubblewrap, root/ is not WORKDIR/NAME over the host's
 * "sftp" subsystem: that server resolves whole paths on the host, so a
 * directory the sandbox swaps for a symlink between the kernel's lookup and
 * the next operation below it would be followed outside the sandbox (SFTP v3
 * has no openat). Instead every sandbox gets one sftp-server of its own,
 * started over an exec channel inside the same bubblewrap as its commands
 * (ssh_bwrap_command): every path it resolves, symlinks in the middle included,
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
int confined_probe(struct sandbox *sb, struct ssh_sb *s, char *err, size_t n)
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
	int r = ssh_run_short(sb, SFTP_SERVER_PROBE, &out, &code, err, n);
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
void confined_command(struct ssh_sb *s, struct sbuf *cmd)
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
	ssh_bwrap_command(s, "/", 0, 0, extra.data, server.data, &sh);
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
	/* Compared on what the buffer holds: a longer message is kept cut,
	 * and compared cut, so it too is logged once. */
	pthread_mutex_lock(&s->lock);
	int fresh = strncmp(s->sftp_err, msg, sizeof(s->sftp_err) - 1) != 0;
	if (fresh) {
		size_t l = strnlen(msg, sizeof(s->sftp_err) - 1);
		memcpy(s->sftp_err, msg, l);
		s->sftp_err[l] = '\0';
	}
	pthread_mutex_unlock(&s->lock);
	if (fresh)
		sandbox_log(sb, "%s", msg);
}

/* The sandbox's SFTP client on the current link, started if need be. */
int confined_client(struct sandbox *sb, struct ssh_sb *s, struct sftp_client **out)
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
void confined_drop(struct ssh_sb *s)
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
void host_watch_confined(struct ssh_host *h)
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
