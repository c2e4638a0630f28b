/*
 * ssh.c - the `ssh` provider: sandboxes on another machine, reached
 * over one SSH connection per provider entry (core/lib/sshconn.c), with files
 * over SFTP (core/lib/sftp.c, served by fs/root/sftpfs.c through the root op) and
 * commands over exec channels (core/lib/sshexec.c). See docs/ssh.md.
 *
 * This file holds the provider's operations; the rest is in its folder:
 * link.c (the shared connection and its reconnect thread), run.c (a
 * command: its script, bubblewrap, wait status, the agent's glue),
 * confined.c (root/'s own sftp-server), snap.c (snapshots), entry.c (its
 * providers-file entries), ssh_models.c
 * (models on the host), upload.c (local files copied in).
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
 * over one channel to its resident agent (core/lib/agent_remote.c, agent_* here),
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
#include "core/providers/ssh/ssh_int.h"
#include "core/providers/ssh/ssh.h"

/* ---- provider operations ---------------------------------------------------------------- */

struct ssh_sb *ssh_priv_of(struct sandbox *sb)
{
	if (!sb->priv) {
		struct ssh_sb *s = xcalloc(1, sizeof(*s));
		s->sb = sb;
		pthread_mutex_init(&s->lock, NULL);
		pthread_mutex_init(&s->sftp_lock, NULL);
		pthread_mutex_init(&s->agent_lock, NULL);
		pthread_cond_init(&s->fileop_cv, NULL);
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
	if (cfg->image || cfg->memory || cfg->cpu_milli) {
		snprintf(err, n, "sandbox %s: \"%s\" is for container providers (type \"docker\" in the providers file); provider %s runs the ssh host's system: remove it or name a docker provider",
			 sb->name, cfg->image ? "image" : cfg->memory ? "memory" : "cpu", e->name);
		return -EINVAL;
	}
	int r = check_models(sb, cfg, err, n);
	if (r < 0)
		return r;
	if (!cfg->gpu)
		return 0;
	struct sbuf out = {0};
	int code = -1;
	r = ssh_run_short(sb, "nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null", &out, &code, err, n);
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
	struct ssh_sb *s = ssh_priv_of(sb);
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

int ssh_start(struct sandbox *sb, const struct seer_config *cfg, const struct seer_start *in, char *err,
		     size_t n)
{
	const struct ssh_entry *e = entry_of(sb);
	struct ssh_sb *s = ssh_priv_of(sb);
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
	ssh_describe(e, who, sizeof(who));
	char root[2048], wdabs[2048] = "";
	if (e->mode == SEER_SSH_DIRECT) {
		snprintf(root, sizeof(root), "/");
		bwrap = 0;
		r = snap_prepare_root(sb, in, root, err, n);
	} else {
		r = ssh_workdir_abs(cli, e, wdabs, sizeof(wdabs));
		if (r == 0)
			snprintf(root, sizeof(root), "%s/%s", wdabs, sb->name);
		if (r == 0 && (r = snap_prepare_root(sb, in, root, err, n)) < 0)
			goto out;
		static const char *const sub[] = {"", "/workspace", "/tmp", "/root", NULL};
		for (int i = 0; r == 0 && sub[i]; i++) {
			char p[2100];
			snprintf(p, sizeof(p), "%s%s", root, sub[i]);
			r = ssh_sftp_mkdir_p(cli, p, i == 2 ? 01777 : 0755);
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
	/* prctl's number and those of the agent's file operations there */
	agent_remote_args(bwrap ? hp->machine : NULL, s->agent_args, sizeof(s->agent_args));
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

static int ssh_spawn(struct sandbox *sb, const struct seer_spawn *req, int *pid, char *err, size_t n)
{
	struct ssh_sb *s = ssh_priv_of(sb);
	const struct ssh_entry *e = entry_of(sb);
	ssh_reap(s, 0);
	pthread_mutex_lock(&s->lock);
	int running = s->running;
	pthread_mutex_unlock(&s->lock);
	if (!running) {
		snprintf(err, n, "sandbox %s: not started on %s", sb->name, e->host);
		return -ENOTCONN;
	}
	struct agent_remote *a;
	int r = agent_acquire(sb, s, &a, err, n);
	if (r == 0) {
		char e2[SSH_ERRMSG_LEN];
		r = agent_remote_spawn(a, req, pid, e2, sizeof(e2));
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
	ssh_channel_command(s, e, req, j, &w, &script);

	j->fd_in = fcntl(req->fd_in, F_DUPFD_CLOEXEC, 3);
	j->fd_out = fcntl(req->fd_out, F_DUPFD_CLOEXEC, 3);
	j->fd_err = fcntl(req->fd_err, F_DUPFD_CLOEXEC, 3);
	if (j->fd_in < 0 || j->fd_out < 0 || j->fd_err < 0) {
		r = -errno;
		snprintf(err, n, "sandbox %s: cannot duplicate the job's pipes: %s", sb->name, strerror(-r));
		goto fail;
	}
	char e2[SSH_ERRMSG_LEN] = "";
	r = ssh_exec_start(c, w.data, ssh_job_output, j, &j->e, e2, sizeof(e2));
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
	j->started = pthread_create(&j->th, NULL, ssh_job_main, j) == 0;
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
	ssh_job_free(j);
	return r;
}

int ssh_signal(struct sandbox *sb, int pid, int sig, int tree)
{
	if (pid <= 1 || sig < 0 || sig > 64)
		return -EINVAL;
	struct ssh_sb *s = ssh_priv_of(sb);
	pthread_mutex_lock(&s->lock);
	int bwrap = s->bwrap;
	pthread_mutex_unlock(&s->lock);
	char cmd[640], err[SSH_ERRMSG_LEN];
	pthread_mutex_lock(&s->agent_lock);
	if (s->agent) {
		/* The sandbox's own pid: its agent signals it (the command
		 * itself, or its session and descendants as one tree). */
		int r = agent_remote_signal(s->agent, pid, sig, tree, err, sizeof(err));
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
		 * the wait-status wrapper (ssh_exit_wrap_perl) to its child, so
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
	int r = ssh_run_short(sb, cmd, NULL, &code, err, sizeof(err));
	if (r < 0) {
		sandbox_log(sb, "%s", err);
		return r;
	}
	return code == 0 ? 0 : -ESRCH;
}

static int ssh_stop(struct sandbox *sb)
{
	struct ssh_sb *s = ssh_priv_of(sb);
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
		if (ssh_run_short(sb, cmd.data, NULL, &code, err, sizeof(err)) < 0)
			sandbox_log(sb, "%s; its remote processes may still run", err);
	}
	sbuf_free(&cmd);
	pthread_mutex_lock(&s->lock);
	for (struct ssh_job *j = s->jobs; j; j = j->next)
		j->abort = 1;
	pthread_mutex_unlock(&s->lock);
	ssh_reap(s, 1);
	if (s->h)
		confined_drop(s);
	return 0;
}

static int ssh_destroy(struct sandbox *sb)
{
	const struct ssh_entry *e = entry_of(sb);
	struct ssh_sb *s = ssh_priv_of(sb);
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
	int r = ssh_run_short(sb, cmd.data, NULL, &code, err, sizeof(err));
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
	struct ssh_sb *s = ssh_priv_of(sb);
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

/* root/'s file operations that SFTP v3 cannot make (fs/root/sftpfs_agent.c),
 * through the sandbox's agent, which runs in the sandbox's namespaces as
 * its commands do; -ENOTSUP where the agent cannot run (no bubblewrap or
 * perl there, "exec": "channel", mode direct), so root/ stays on SFTP. */
static int ssh_fileop(struct sandbox *sb, const void *req, size_t len, char *reply, size_t cap, size_t *rlen)
{
	struct ssh_sb *s = ssh_priv_of(sb);
	pthread_mutex_lock(&s->lock);
	int running = s->running;
	pthread_mutex_unlock(&s->lock);
	if (!running)
		return -ENOTCONN;
	struct agent_remote *a;
	char err[SSH_ERRMSG_LEN + 400];
	/* chown and chmod the kernel allowed (a root seerfs: the caller is root,
	 * or -o allow_other's default_permissions checked it), and root's
	 * deferred create given to root (pcreate): the owners' agent
	 * (fagent_acquire); where it cannot run, the sandbox's own (the kernel
	 * then says EPERM). */
	int owners = len > 7 && (!memcmp(req, "pchown", 7) || !memcmp(req, "pchmod", 7) ||
				 (len > 8 && !memcmp(req, "pcreate", 8)));
	/* "as UID GID GROUPS OP ...": a directory operation of root/'s caller,
	 * made with the caller's credentials by the owners' agent alone
	 * (agent_remote.pl: as_caller); where it cannot run, -ENOTSUP and root/
	 * makes it over SFTP. */
	int as = len > 3 && !memcmp(req, "as", 3);
	int r = owners || as ? fagent_acquire(sb, s, &a) : -ENOTSUP;
	if (r == -ENOTSUP && !as)
		r = agent_acquire(sb, s, &a, err, sizeof(err));
	if (r < 0)
		return r;
	/* Not under agent_lock (file operations in flight together, and
	 * beside spawns): the count keeps a from being closed meanwhile. */
	pthread_mutex_lock(&s->lock);
	s->fileops++;
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_unlock(&s->agent_lock);
	r = agent_remote_fileop(a, req, len, reply, cap, rlen);
	pthread_mutex_lock(&s->lock);
	if (--s->fileops == 0)
		pthread_cond_broadcast(&s->fileop_cv);
	pthread_mutex_unlock(&s->lock);
	return r;
}

static int ssh_busy(struct sandbox *sb)
{
	struct ssh_sb *s = ssh_priv_of(sb);
	int busy = 0;
	pthread_mutex_lock(&s->lock);
	for (struct ssh_job *j = s->jobs; j; j = j->next)
		busy |= !j->done;
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_lock(&s->agent_lock);
	busy |= s->agent && agent_remote_busy(s->agent);
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
	pthread_cond_destroy(&s->fileop_cv);
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
	.fileop = ssh_fileop,
	.release = ssh_release,
	.isolation = ssh_isolation,
	.host_binds = 0,       /* models and pip's directories are copied there */
};
