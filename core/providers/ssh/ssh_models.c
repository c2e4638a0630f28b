/*
 * ssh_models.c - hub models on the ssh provider (see ssh_models.h and
 * docs/ssh.md).
 *
 * provision_prepare has already downloaded each model into the local
 * cache (core/lib/hf.c verifies it there). Here, on the sandbox's start, each
 * snapshot is made present on the remote host once, as plain files (the
 * cache's links into blobs/ resolved), at
 * WORKDIR/.seerfs-models/ORG--NAME@COMMIT. A commit never changes, so a
 * directory under that name is complete forever and every later sandbox
 * on the host just uses it.
 *
 * Why it is safe against crashes and races: a copy is uploaded into a
 * temporary name next to the final one, checked there (sizes over SFTP,
 * sha256sum -c over an exec channel against sums taken while reading
 * here), made read-only and only then renamed into place; a rename onto a
 * directory that is already there fails, and the loser throws its copy
 * away. So that two sandboxes (of this seerfs or another) do not upload the
 * same model at once, the upload runs under flock(1) on the host, held by
 * an exec channel for as long as the upload lasts: if seerfs dies, sshd
 * ends that session and the lock goes with it. Whoever holds the lock also
 * removes temporary copies that a crash left behind. A host without flock
 * still gets correct results (the rename decides), only maybe two uploads.
 */
#include "core/providers/ssh/ssh_models.h"
#include "core/provider.h"
#include "core/sandbox.h"
#include "core/lib/sha256.h"
#include "core/lib/sshexec.h"
#include "core/providers/ssh/upload.h"
#include "core/lib/walk.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define MODELS_DIR ".seerfs-models"
#define PROGRESS_EVERY_S 0.25
#define WAIT_SLICE_MS 200
#define LOCKED_LINE "@@seer-locked"
#define SUMS_OK_LINE "@@seer-sha256-ok"
#define MIB (1024.0 * 1024.0)

/* One model being made present on the host. */
struct place {
	const struct ssh_models_host *h;
	const char *mount;
	char key[640];        /* ORG--NAME@COMMIT */
	char base[4096];      /* WORKDIR/.seerfs-models */
	char final[4800];
	char tmp[4900];       /* the copy while it is uploaded */
	uint64_t total, done, files;
	double t0, last;
	struct sbuf sums;     /* "SHA256  ./PATH" lines for sha256sum -c */
	char bad[1024];       /* the file an upload failed at */
};

/* CACHE/models--ORG--NAME + COMMIT -> "ORG--NAME@COMMIT". */
static int model_key(const char *dir, const char *commit, char *out, size_t n)
{
	const char *b = strrchr(dir, '/');
	b = b ? b + 1 : dir;
	if (!strncmp(b, "models--", 8))
		b += 8;
	int k = snprintf(out, n, "%s@%s", b, commit);
	if (k < 0 || (size_t)k >= n || !b[0] || strchr(commit, '/') || !strcmp(out, ".") || !strcmp(out, ".."))
		return -EINVAL;
	return 0;
}

/* ---- commands on the host ------------------------------------------------------------- */

static void collect_out(void *ud, int stream, const void *data, size_t len)
{
	(void)stream;
	struct sbuf *b = ud;
	if (b->len < 65536)
		sbuf_append(b, data, len);
}

/* Waits for e to end, a slice at a time so that terminate is noticed. */
static int wait_cancellable(const struct ssh_models_host *h, struct ssh_exec *e, struct ssh_exec_status *st)
{
	for (;;) {
		if (h->sb->cancel)
			return -ECANCELED;
		int r = ssh_exec_wait(e, WAIT_SLICE_MS, st);
		if (r != -ETIMEDOUT)
			return r;
	}
}

/* Runs cmd on the host with `in` on its stdin; stdout and stderr go to
 * *out, the exit code (128+N for a signal) to *code. No time limit but
 * terminate: a checksum over gigabytes takes what it takes. */
static int remote_run(const struct ssh_models_host *h, const char *cmd, const void *in, size_t inlen,
		      struct sbuf *out, int *code)
{
	struct ssh_exec *e = NULL;
	char e2[256];
	int r = ssh_exec_start(h->conn, cmd, collect_out, out, &e, e2, sizeof(e2));
	if (r < 0)
		return r;
	if (in && inlen)
		r = ssh_exec_write(e, in, inlen, h->timeout_ms);
	if (r == 0)
		r = ssh_exec_close_stdin(e);
	struct ssh_exec_status st;
	if (r == 0)
		r = wait_cancellable(h, e, &st);
	if (r == 0)
		*code = st.exited ? st.exit_code : 128;
	ssh_exec_free(e);
	return r;
}

/* rm -rf of the remote path `quoted` (already quoted, may end in a glob);
 * write bits first, since finished copies are read-only. Best effort. */
static void remote_remove(const struct ssh_models_host *h, const char *quoted)
{
	struct sbuf cmd = {0}, out = {0};
	sbuf_printf(&cmd, "for d in %s; do [ -e \"$d\" ] || continue; chmod -R u+w -- \"$d\" 2>/dev/null; rm -rf -- \"$d\"; done", quoted);
	int code = 0;
	remote_run(h, cmd.data, NULL, 0, &out, &code);
	sbuf_free(&cmd);
	sbuf_free(&out);
}

/* ---- the lock on the host --------------------------------------------------------------- */

struct lock {
	struct ssh_exec *e;
	struct sbuf out;
};

/*
 * Takes the host's lock for p's model: flock(1) on BASE/.KEY.lock, held by
 * a shell that waits for EOF on its stdin. *held is 0 when the host has no
 * flock (the rename alone then keeps the copy whole).
 */
static int lock_take(struct place *p, struct lock *lk, int *held, char *err, size_t n)
{
	const struct ssh_models_host *h = p->h;
	struct sbuf cmd = {0}, lockf = {0};
	sbuf_printf(&lockf, "%s/.%s.lock", p->base, p->key);
	sbuf_printf(&cmd, "command -v flock >/dev/null 2>&1 || exit 127; exec flock ");
	sbuf_shell_quote(&cmd, lockf.data);
	sbuf_printf(&cmd, " sh -c 'echo %s; exec cat >/dev/null'", LOCKED_LINE);
	sbuf_free(&lockf);
	memset(lk, 0, sizeof(*lk));
	*held = 0;
	char e2[256] = "";
	int r = ssh_exec_start(h->conn, cmd.data, collect_out, &lk->out, &lk->e, e2, sizeof(e2));
	sbuf_free(&cmd);
	if (r < 0) {
		snprintf(err, n, "sandbox %s: models: cannot start a command on %s: %s", h->sb->name, h->host,
			 e2[0] ? e2 : strerror(-r));
		return r;
	}
	int said_waiting = 0;
	double t0 = mono_s();
	for (;;) {
		if (lk->out.data && strstr(lk->out.data, LOCKED_LINE "\n")) {
			*held = 1;
			return 0;
		}
		if (h->sb->cancel) {
			r = -ECANCELED;
			break;
		}
		struct ssh_exec_status st;
		r = ssh_exec_wait(lk->e, WAIT_SLICE_MS, &st);
		if (r == -ETIMEDOUT) {
			if (!said_waiting && mono_s() - t0 > 1.0) {
				said_waiting = 1;
				sandbox_log(h->sb, "provision: models: %s: waiting for another upload of it to %s", p->mount,
					    h->host);
				sandbox_set_progress(h->sb, "models: waiting for another upload of %s to %s", p->mount,
						     h->host);
			}
			continue;
		}
		if (r == 0 && st.exited && st.exit_code == 127) {
			sandbox_log(h->sb, "provision: models: %s: no flock(1) on %s: uploading without a lock (an atomic rename still keeps the copy whole)",
				    p->mount, h->host);
			ssh_exec_free(lk->e);
			sbuf_free(&lk->out);
			memset(lk, 0, sizeof(*lk));
			return 0;
		}
		if (r == 0)
			r = -EIO;
		break;
	}
	if (r != -ECANCELED)
		snprintf(err, n, "sandbox %s: models: cannot take the upload lock of %s under %s on %s (%s%s%.200s); check that the remote user may write to the provider's workdir, then echo retry > %s/ctl",
			 h->sb->name, p->mount, p->base, h->host, strerror(-r), lk->out.len ? ": " : "",
			 lk->out.data ? lk->out.data : "", h->sb->name);
	ssh_exec_free(lk->e);
	sbuf_free(&lk->out);
	memset(lk, 0, sizeof(*lk));
	return r;
}

/* EOF on the holder's stdin: its cat ends, flock exits, the lock is free. */
static void lock_release(const struct ssh_models_host *h, struct lock *lk)
{
	if (!lk->e)
		return;
	ssh_exec_close_stdin(lk->e);
	struct ssh_exec_status st;
	ssh_exec_wait(lk->e, h->timeout_ms, &st);
	ssh_exec_free(lk->e);
	sbuf_free(&lk->out);
	memset(lk, 0, sizeof(*lk));
}

/* ---- the upload ------------------------------------------------------------------------ */

static void show_progress(struct place *p, int force)
{
	double now = mono_s();
	if (!force && now - p->last < PROGRESS_EVERY_S)
		return;
	p->last = now;
	double el = now - p->t0;
	sandbox_set_progress(p->h->sb, "models: uploading %s to %s: %.1f of %.1f MiB, %.1f MiB/s", p->mount, p->h->host,
			     p->done / MIB, p->total / MIB, el > 0 ? p->done / MIB / el : 0.0);
}

struct source {
	struct place *p;
	int fd;
	struct sha256_ctx sha;
};

static ssize_t source_read(void *ud, void *buf, size_t len)
{
	struct source *s = ud;
	if (s->p->h->sb->cancel)
		return -ECANCELED;
	ssize_t k;
	do
		k = read(s->fd, buf, len);
	while (k < 0 && errno == EINTR);
	if (k < 0)
		return -errno;
	sha256_update(&s->sha, buf, (size_t)k);
	s->p->done += (uint64_t)k;
	show_progress(s->p, 0);
	return k;
}

/* The snapshot is walked twice by core/lib/walk.c with WALK_FOLLOW: the hub
 * cache's snapshot is a tree of links into its blobs, followed on purpose
 * (the cache is the host user's own). First sizing, so that progress can
 * say "of N MiB". */
static int add_size(void *ud, void *at, const struct walk_ent *e)
{
	(void)at;
	((struct place *)ud)->total += (uint64_t)e->st.st_size;
	return 0;
}

/* Then the upload: each directory made in TMP before its entries
 * (make_dir), each file uploaded (upload_one). Uploads one file of the snapshot (open as e->fd) to TMP/PATH, read-only,
 * and checks its size there; its sha256 joins the sums sha256sum -c checks
 * later. */
static int upload_one(void *ud, void *at, const struct walk_ent *e)
{
	(void)at;
	struct place *p = ud;
	const char *rel = e->path;
	const struct stat *st = &e->st;
	struct sbuf rpath = {0};
	sbuf_printf(&rpath, "%s/%s", p->tmp, rel);
	struct source s = {.p = p, .fd = e->fd};
	int r = 0;
	uint64_t sent = 0;
	sha256_init(&s.sha);
	if (r == 0)
		r = upload_stream(p->h->sftp, rpath.data, 0444, source_read, &s, &sent);
	if (r == 0 && sent != (uint64_t)st->st_size)
		r = -EIO;   /* it changed while read: the cache is not what hf.c checked */
	struct sftp_attrs a;
	if (r == 0)
		r = sftp_stat(p->h->sftp, rpath.data, &a);
	if (r == 0 && (!(a.flags & SFTP_ATTR_SIZE) || a.size != sent))
		r = -EIO;
	sbuf_free(&rpath);
	if (r < 0)
		return r;
	uint8_t dg[SHA256_DIGEST_LEN];
	char hex[2 * SHA256_DIGEST_LEN + 1];
	sha256_final(&s.sha, dg);
	sha_hex(dg, sizeof(dg), hex);
	/* sha256sum escapes such names; their sizes were checked above. */
	if (!strpbrk(rel, "\\\n\r"))
		sbuf_printf(&p->sums, "%s  ./%s\n", hex, rel);
	p->files++;
	return 0;
}

/* Makes directory e in TMP. */
static int make_dir(void *ud, void *at, const struct walk_ent *e, void **child)
{
	(void)at, (void)child;
	struct place *p = ud;
	struct sbuf rpath = {0};
	sbuf_printf(&rpath, "%s/%s", p->tmp, e->path);
	int r = sftp_mkdir(p->h->sftp, rpath.data, 0755);
	sbuf_free(&rpath);
	return r;
}

/* sha256sum -c of the copy against the sums taken while reading, then the
 * copy is made read-only. *summed is 0 when the host has no sha256sum. */
static int verify_copy(struct place *p, int *summed, char *err, size_t n)
{
	const struct ssh_models_host *h = p->h;
	struct sbuf cmd = {0}, out = {0};
	sbuf_printf(&cmd, "cd ");
	sbuf_shell_quote(&cmd, p->tmp);
	sbuf_printf(&cmd, " || exit 90\nif command -v sha256sum >/dev/null 2>&1; then sha256sum -c --quiet - || exit 91; echo %s; else cat >/dev/null; fi\n"
			  "chmod -R a+rX,a-w . || exit 92\n", SUMS_OK_LINE);
	int code = -1;
	int r = remote_run(h, cmd.data, p->sums.data ? p->sums.data : "", p->sums.len, &out, &code);
	sbuf_free(&cmd);
	*summed = out.data && strstr(out.data, SUMS_OK_LINE) != NULL;
	if (r < 0 && r != -ECANCELED)
		snprintf(err, n, "sandbox %s: models: cannot check the copy of %s on %s: %s; it is not used (the next upload clears it): echo retry > %s/ctl",
			 h->sb->name, p->mount, h->host, strerror(-r), h->sb->name);
	if (r == 0 && code != 0) {
		char tail[400] = "";
		if (out.data) {
			size_t l = out.len > 300 ? out.len - 300 : 0;
			snprintf(tail, sizeof(tail), "%s", out.data + l);
			for (char *c = tail; *c; c++)
				if (*c == '\n')
					*c = ' ';
		}
		snprintf(err, n, "sandbox %s: models: the copy of %s on %s %s (%s); it was removed: echo retry > %s/ctl to upload it again",
			 h->sb->name, p->mount, h->host,
			 code == 91 ? "does not match the files on this machine (sha256sum -c)" : "could not be checked or made read-only",
			 tail, h->sb->name);
		r = code == 91 ? -EBADMSG : -EIO;
	}
	sbuf_free(&out);
	return r;
}

/* Uploads the snapshot into TMP, checks it and renames it to FINAL. */
static int upload_model(struct place *p, const char *snapdir, char *err, size_t n)
{
	const struct ssh_models_host *h = p->h;
	unsigned char rnd[6];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		memset(rnd, 0x3c, sizeof(rnd));
	snprintf(p->tmp, sizeof(p->tmp), "%s/.%s.tmp-%02x%02x%02x%02x%02x%02x", p->base, p->key, rnd[0], rnd[1], rnd[2],
		 rnd[3], rnd[4], rnd[5]);
	const struct walk_ops sizing = {.file = add_size, .ud = p, .flags = WALK_FOLLOW | WALK_NO_FILES,
					.bad = p->bad, .badn = sizeof(p->bad)};
	const struct walk_ops upload = {.dir = make_dir, .file = upload_one, .ud = p, .flags = WALK_FOLLOW,
					.bad = p->bad, .badn = sizeof(p->bad)};
	int dfd = open(snapdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = dfd < 0 ? -errno : walk_tree(dfd, &sizing, NULL);
	if (dfd >= 0)
		close(dfd);
	if (r < 0) {
		snprintf(err, n, "sandbox %s: models: cannot read %s's files in the local model cache (%s): %s; echo retry > %s/ctl to download it again",
			 h->sb->name, p->mount, snapdir, strerror(-r), h->sb->name);
		return r;
	}
	p->t0 = mono_s();
	show_progress(p, 1);
	r = sftp_mkdir(h->sftp, p->tmp, 0755);
	dfd = r < 0 ? -1 : open(snapdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (r == 0 && dfd < 0)
		r = -errno;
	if (r == 0)
		r = walk_tree(dfd, &upload, NULL);
	if (dfd >= 0)
		close(dfd);
	int summed = 0;
	if (r < 0 && r != -ECANCELED)
		snprintf(err, n, "sandbox %s: models: uploading %s to %s failed%s%s: %s; nothing was kept under %s (check the free space there: the copy needs %.1f MiB), then echo retry > %s/ctl",
			 h->sb->name, p->mount, h->host, p->bad[0] ? " at " : "", p->bad, strerror(-r), p->base,
			 p->total / MIB, h->sb->name);
	if (r == 0)
		r = verify_copy(p, &summed, err, n);
	if (r == 0) {
		r = sftp_rename(h->sftp, p->tmp, p->final);
		struct sftp_attrs a;
		if (r < 0 && sftp_lstat(h->sftp, p->final, &a) == 0 && S_ISDIR(a.perm)) {
			/* Another uploader (one without the lock) won: use its copy. */
			sandbox_log(h->sb, "provision: models: %s: another upload to %s finished first; using it", p->mount,
				    h->host);
			r = 1;
		} else if (r < 0) {
			snprintf(err, n, "sandbox %s: models: cannot rename the copy of %s into place under %s on %s: %s; echo retry > %s/ctl",
				 h->sb->name, p->mount, p->base, h->host, strerror(-r), h->sb->name);
		}
	}
	if (r != 0) {
		struct sbuf q = {0};
		sbuf_shell_quote(&q, p->tmp);
		remote_remove(h, q.data);
		sbuf_free(&q);
		return r < 0 ? r : 0;
	}
	double el = mono_s() - p->t0;
	show_progress(p, 1);
	sandbox_log(h->sb, "provision: models: %s: uploaded to %s (%llu files, %llu bytes, %s) in %.2f s", p->mount,
		    h->host, (unsigned long long)p->files, (unsigned long long)p->done,
		    summed ? "sha256 checked there" : "sizes checked there; no sha256sum on the host", el);
	return 0;
}

/* ---- per model ------------------------------------------------------------------------- */

static int is_dir_there(struct sftp_client *c, const char *path)
{
	struct sftp_attrs a;
	return sftp_lstat(c, path, &a) == 0 && S_ISDIR(a.perm);
}

/* Removes the temporary copies of p's model that a crash left (the lock
 * is held, so nobody is writing them). */
static void remove_stale(struct place *p)
{
	struct sbuf q = {0}, pat = {0};
	sbuf_printf(&pat, "%s/.%s.tmp-", p->base, p->key);
	sbuf_shell_quote(&q, pat.data);
	sbuf_printf(&q, "*");
	remote_remove(p->h, q.data);
	sbuf_free(&q);
	sbuf_free(&pat);
}

/* Makes one model present on the host as FINAL. */
static int place_one(const struct ssh_models_host *h, const struct seer_start_model *w, struct ssh_model_place *out, char *err,
		     size_t n)
{
	struct place p = {.h = h, .mount = w->mount};
	if (model_key(w->dir, w->commit, p.key, sizeof(p.key)) < 0) {
		snprintf(err, n, "sandbox %s: models: %s: unexpected cache directory %s; echo retry > %s/ctl", h->sb->name,
			 w->mount, w->dir, h->sb->name);
		return -EINVAL;
	}
	snprintf(p.base, sizeof(p.base), "%s/%s", h->workdir, MODELS_DIR);
	snprintf(p.final, sizeof(p.final), "%s/%s", p.base, p.key);
	out->remote = xstrdup(p.final);
	out->mount = xstrdup(w->mount);
	if (is_dir_there(h->sftp, p.final)) {
		sandbox_log(h->sb, "provision: models: %s: already on %s (uploaded before): not uploaded again", w->mount,
			    h->host);
		return 0;
	}
	int r = sftp_mkdir(h->sftp, p.base, 0755);
	if (r < 0 && !is_dir_there(h->sftp, p.base)) {
		snprintf(err, n, "sandbox %s: models: cannot create %s on %s: %s; check that the remote user may write to the provider's workdir, then echo retry > %s/ctl",
			 h->sb->name, p.base, h->host, strerror(r == -EEXIST ? ENOTDIR : -r), h->sb->name);
		return r == -EEXIST ? -ENOTDIR : r;
	}
	struct lock lk;
	int held = 0;
	r = lock_take(&p, &lk, &held, err, n);
	if (r < 0)
		return r;
	if (is_dir_there(h->sftp, p.final)) {
		sandbox_log(h->sb, "provision: models: %s: uploaded to %s meanwhile by another sandbox: not uploaded again",
			    w->mount, h->host);
	} else {
		if (held)
			remove_stale(&p);
		struct sbuf snap = {0};
		sbuf_printf(&snap, "%s/snapshots/%s", w->dir, w->commit);
		r = upload_model(&p, snap.data, err, n);
		sbuf_free(&snap);
	}
	lock_release(h, &lk);
	sbuf_free(&p.sums);
	return r;
}

/* Without bubblewrap there is no /models: ROOT/models/MOUNT links to the
 * copy instead (relative, so it never names the workdir). */
static int link_into_root(const struct ssh_models_host *h, const struct ssh_model_place *m, char *err, size_t n)
{
	struct sbuf dir = {0}, link = {0}, target = {0};
	sbuf_printf(&dir, "%s/models", h->root);
	sbuf_printf(&link, "%s/%s", dir.data, m->mount);
	const char *key = strrchr(m->remote, '/') + 1;
	sbuf_printf(&target, "../../%s/%s", MODELS_DIR, key);
	int r = sftp_mkdir(h->sftp, dir.data, 0755);
	if (r == -EEXIST || (r < 0 && is_dir_there(h->sftp, dir.data)))
		r = 0;
	struct sftp_attrs a;
	if (r == 0 && sftp_lstat(h->sftp, link.data, &a) == 0)
		r = S_ISLNK(a.perm) ? sftp_remove(h->sftp, link.data) : -EEXIST;
	if (r == 0)
		r = sftp_symlink(h->sftp, target.data, link.data);
	if (r < 0)
		snprintf(err, n, "sandbox %s: models: cannot link %s to %s's copy on %s: %s%s", h->sb->name, link.data,
			 m->mount, h->host, strerror(-r), r == -EEXIST ? " (something else is there: remove it)" : "");
	sbuf_free(&dir);
	sbuf_free(&link);
	sbuf_free(&target);
	return r;
}

int ssh_models_place(const struct ssh_models_host *h, struct ssh_models *out, char *err, size_t n)
{
	memset(out, 0, sizeof(*out));
	int r = 0;
	if (h->n_models)
		out->v = xcalloc(h->n_models, sizeof(*out->v));
	for (size_t i = 0; i < h->n_models && r == 0; i++) {
		r = place_one(h, &h->models[i], &out->v[out->n], err, n);
		out->n++;
		if (r == 0 && !h->bwrap)
			r = link_into_root(h, &out->v[out->n - 1], err, n);
	}
	if (r < 0)
		ssh_models_free(out);
	return r;
}

void ssh_models_bwrap_args(const struct ssh_models *m, struct sbuf *b)
{
	for (size_t i = 0; i < m->n; i++) {
		struct sbuf dst = {0};
		sbuf_printf(&dst, "/models/%s", m->v[i].mount);
		sbuf_printf(b, " --ro-bind ");
		sbuf_shell_quote(b, m->v[i].remote);
		sbuf_printf(b, " ");
		sbuf_shell_quote(b, dst.data);
		sbuf_free(&dst);
	}
}

void ssh_models_free(struct ssh_models *m)
{
	for (size_t i = 0; i < m->n; i++) {
		free(m->v[i].remote);
		free(m->v[i].mount);
	}
	free(m->v);
	memset(m, 0, sizeof(*m));
}
