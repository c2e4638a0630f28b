/*
 * run.c - a command of an ssh sandbox: its exec channel, the script that carries its environment, its bubblewrap, the real wait status under bubblewrap, and the resident agent's glue.
 */
#include "core/providers/ssh/ssh_int.h"

void ssh_job_free(struct ssh_job *j)
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
void ssh_reap(struct ssh_sb *s, int all)
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
		ssh_job_free(j);
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
const char ssh_exit_wrap_perl[] =
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
	sbuf_shell_quote(b, ssh_exit_wrap_perl);
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
void ssh_job_output(void *ud, int stream, const void *data, size_t len)
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

void *ssh_job_main(void *arg)
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
		status = ssh_signal_number(st.signal);
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
void ssh_bwrap_command(struct ssh_sb *s, const char *cwd, int network, int pid1, const char *extra, const char *cmd,
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
void ssh_build_script(struct ssh_sb *s, const struct ssh_entry *e, const struct seer_spawn *req,
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
		ssh_bwrap_command(s, cwd, s->network, 0, "", NULL, b);
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
 * commands go through its agent (core/lib/agent_remote.c): one exec channel and
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

/* Waits until no file operation of root/ uses the agent (ssh_fileop):
 * then it may be closed. On a dead agent they end at once. */
static void agent_fileops_drain(struct ssh_sb *s)
{
	pthread_mutex_lock(&s->lock);
	while (s->fileops)
		pthread_cond_wait(&s->fileop_cv, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

/* The agent's stream: an exec channel on c that runs sh_lines, which end
 * in "exec ... bwrap ... -- /usr/bin/perl - ARGS" (the sandbox as its
 * commands see it), after a line with the pid of that shell (the
 * bubblewrap's, which a snapshot stops). */
struct agent_chan {
	struct ssh_conn *c;
	const char *sh_lines;
};

static int agent_chan_open(void *arg, const struct bytestream_cbs *cbs, void *ud, struct bytestream **out, char *err,
			   size_t n)
{
	const struct agent_chan *ac = arg;
	struct sbuf sh = {0}, cmd = {0};
	sbuf_printf(&sh, "[ -x /usr/bin/perl ] || { echo 'no /usr/bin/perl on this host' >&2; exit 125; }\n"
		       "printf '@@seer-pid %%s\\n' \"$$\"\n%s", ac->sh_lines);
	sbuf_printf(&cmd, "exec /bin/sh -c ");
	sbuf_shell_quote(&cmd, sh.data);
	sbuf_free(&sh);
	int r = bytestream_ssh_open(ac->c, "exec", cmd.data, cbs, ud, out, err, n);
	sbuf_free(&cmd);
	return r;
}

static int open_agent(struct ssh_conn *c, const char *sh_lines, int timeout_ms, agent_remote_exit_fn on_exit,
		      struct ssh_sb *s, struct agent_remote **out, char *err, size_t n)
{
	struct agent_chan ac = {c, sh_lines};
	return agent_remote_open(agent_chan_open, &ac, c, SIGHUP, "disconnected (the SSH connection or the sandbox's agent ended)",
				 timeout_ms, on_exit, s, out, err, n);
}

/* The running agent on the current link, started if need be: 0 with the
 * agent in *out and agent_lock held (so that no stop frees it meanwhile:
 * the caller unlocks); -ENOTSUP where commands go without it; else
 * -errno. */
int agent_acquire(struct sandbox *sb, struct ssh_sb *s, struct agent_remote **out, char *err, size_t n)
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
	if (s->agent && !agent_remote_alive(s->agent, c)) {
		agent_fileops_drain(s);
		agent_remote_close(s->agent);   /* the link or the agent ended */
		s->agent = NULL;
	}
	r = 0;
	if (!s->agent) {
		struct sbuf sh = {0}, cmd = {0};
		pthread_mutex_lock(&s->lock);
		/* perl reads the agent from its stdin; its arguments are
		 * prctl's number on this machine (PR_SET_DUMPABLE) and those
		 * of its file operations' system calls (ssh_fileop). */
		sbuf_printf(&cmd, "/usr/bin/perl - %s", s->agent_args);
		ssh_bwrap_command(s, "/", s->network, 1, "", cmd.data, &sh);
		int warned = s->agent_warned;
		pthread_mutex_unlock(&s->lock);
		sbuf_free(&cmd);
		char e2[SSH_ERRMSG_LEN + 400] = "";
		r = open_agent(c, sh.data, e->timeout_ms, agent_exit, s, &s->agent, e2, sizeof(e2));
		sbuf_free(&sh);
		if (r == 0 && agent_remote_warning(s->agent)[0] && !warned) {
			pthread_mutex_lock(&s->lock);
			s->agent_warned = 1;
			pthread_mutex_unlock(&s->lock);
			sandbox_log(sb, "sandbox %s: its agent on %s: %s", sb->name, e->host, agent_remote_warning(s->agent));
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
				    sb->name, e->host, agent_remote_host_pid(s->agent));
		}
	}
	if (r == 0)
		*out = s->agent;
	else
		pthread_mutex_unlock(&s->agent_lock);
	return r;
}

static void fagent_exit(void *ud, int pid, int status, const char *why)
{
	(void)ud;
	(void)pid;
	(void)status;
	(void)why;   /* it never runs a command */
}

/* root/'s owners' agent: chown to another owner needs CAP_CHOWN, which the
 * sandbox's agent, its commands and root/'s SFTP server never have. This is
 * a second agent (the same text, told "files": file operations only, never
 * a command or a signal) in a bubblewrap of its own with the sandbox's
 * binds, filter and masks, its own pid namespace (out of the sandbox's
 * processes' sight and reach), no network, and CAP_CHOWN, CAP_FOWNER and
 * CAP_FSETID (chmod of an entry the login does not own, keeping set-id
 * bits), plus CAP_SETUID and CAP_SETGID: root/'s callers' directory
 * operations (mkdir, mknod, symlink, link, unlink, rmdir, rename) are made
 * with the caller's fsuid, fsgid and groups, which takes every file
 * capability out of the effective set for a caller other than root; for
 * root (host root on a root seerfs) CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
 * and CAP_MKNOD make them as the local provider would. It walks paths
 * without following symlinks as the other does, and takes the sandbox's
 * ids only (0 to 65535). fs/root/sftpfs.c asks it only
 * under a root seerfs, where the caller is root or the kernel checked the
 * change (default_permissions). 0 with it in *out and agent_lock held (the caller
 * unlocks); -ENOTSUP where it cannot run (a login that is not root: bwrap
 * refuses --cap-add then). */
int fagent_acquire(struct sandbox *sb, struct ssh_sb *s, struct agent_remote **out)
{
	const struct ssh_entry *e = entry_of(sb);
	struct ssh_conn *c;
	char err[SSH_ERRMSG_LEN + 400];
	int r = host_acquire(sb, &c, NULL, NULL, err, sizeof(err));
	if (r < 0)
		return r;
	pthread_mutex_lock(&s->agent_lock);
	pthread_mutex_lock(&s->lock);
	int use = s->bwrap && s->running && !s->fagent_off && e->mode != SEER_SSH_DIRECT && !e->exec_channel;
	pthread_mutex_unlock(&s->lock);
	if (!use) {
		pthread_mutex_unlock(&s->agent_lock);
		return -ENOTSUP;
	}
	if (s->fagent && !agent_remote_alive(s->fagent, c)) {
		agent_fileops_drain(s);
		agent_remote_close(s->fagent);
		s->fagent = NULL;
	}
	r = 0;
	if (!s->fagent) {
		struct sbuf sh = {0}, cmd = {0};
		pthread_mutex_lock(&s->lock);
		sbuf_printf(&cmd, "/usr/bin/perl - %s files", s->agent_args);
		ssh_bwrap_command(s, "/", 0, 0, " --cap-add CAP_CHOWN --cap-add CAP_FOWNER --cap-add CAP_FSETID --cap-add CAP_DAC_OVERRIDE"
				  " --cap-add CAP_DAC_READ_SEARCH --cap-add CAP_MKNOD --cap-add CAP_SETUID --cap-add CAP_SETGID", cmd.data, &sh);
		pthread_mutex_unlock(&s->lock);
		sbuf_free(&cmd);
		char e2[SSH_ERRMSG_LEN + 400] = "";
		r = open_agent(c, sh.data, e->timeout_ms, fagent_exit, s, &s->fagent, e2, sizeof(e2));
		sbuf_free(&sh);
		if (r < 0 && ssh_conn_alive(c)) {
			s->fagent_off = 1;
			sandbox_log(sb, "sandbox %s: root/ cannot give files to other owners on %s (chown fails with EPERM there): its owners' agent did not start (%s); it needs a login that may give bubblewrap CAP_CHOWN (root)",
				    sb->name, e->host, e2);
			r = -ENOTSUP;
		} else if (r == 0) {
			sandbox_log(sb, "sandbox %s: root/ gives files to the sandbox's other owners on %s, and makes its callers' directory operations with their own ids, through an agent with CAP_CHOWN, CAP_FOWNER, CAP_FSETID, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_MKNOD, CAP_SETUID and CAP_SETGID alone (bubblewrap pid %d there)",
				    sb->name, e->host, agent_remote_host_pid(s->fagent));
		}
	}
	if (r == 0)
		*out = s->fagent;
	else
		pthread_mutex_unlock(&s->agent_lock);
	return r;
}

/* Stop: the agent ends and takes every process of the sandbox with it. */
void agent_stop(struct ssh_sb *s)
{
	pthread_mutex_lock(&s->agent_lock);
	struct agent_remote *a = s->agent, *fa = s->fagent;
	s->agent = NULL;
	s->fagent = NULL;
	s->agent_off = 0;   /* a new start tries again */
	s->fagent_off = 0;
	pthread_mutex_unlock(&s->agent_lock);
	agent_fileops_drain(s);
	agent_remote_close(a);
	agent_remote_close(fa);
}

/* A command over a channel of its own: in w the fixed wrapper the channel
 * runs, which reads the real script from stdin (byte-wise, so the job's own
 * stdin stays unread) up to a random marker line and evals it in that very
 * process; in script that script and the marker. */
void ssh_channel_command(struct ssh_sb *s, const struct ssh_entry *e, const struct seer_spawn *req,
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
	ssh_build_script(s, e, req, j->sigmark, script);
	pthread_mutex_unlock(&s->lock);
	sbuf_printf(script, "%s\n", marker);
}
