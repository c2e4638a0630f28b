/*
 * snap.c - the ssh provider's snapshots (host mode): copies of WORKDIR/NAME on the remote host.
 */
#include "core/providers/ssh/ssh_int.h"

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
	*code = st.exited ? st.exit_code : 128 + ssh_signal_number(st.signal);
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
	int apid = s->agent ? agent_remote_host_pid(s->agent) : 0;
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

int ssh_snap_take(struct sandbox *sb, const char *snap, const char *layer, struct seer_snap_taken *out, char *err,
			 size_t n)
{
	const struct ssh_entry *e = entry_of(sb);
	struct ssh_sb *s = ssh_priv_of(sb);
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

int ssh_snap_remove(struct seer_ctx *ctx, const void *settings, const char *snap, const char *where, char *err,
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

int ssh_snap_root(struct seer_ctx *ctx, const void *settings, const struct seer_snap_ref *snap,
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
int snap_prepare_root(struct sandbox *sb, const struct seer_start *in, const char *root, char *err, size_t n)
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
