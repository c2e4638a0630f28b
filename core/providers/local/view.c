/*
 * view.c - the local provider's snap_root: a snapshot's files, read-only,
 * for MOUNT/snapshots/NAME/root/.
 *
 * The view is the merged overlay of the snapshot's layer stack. Mounting an
 * overlay needs a mount namespace we own, so a short-lived child makes a
 * user+mount namespace (under root, whose sandboxes own their files as a
 * range of ids, a mount namespace only), mounts the layers read-only (no
 * upper dir, nosuid, nodev) and waits; seerfs opens the mount's root
 * through /proc/CHILD/root and lets the child exit. The open fd keeps the
 * (now detached) mount alive, like a lazy umount, and fs/root/pass.c
 * serves root/ from it; writes fail with EROFS because the mount is
 * read-only. When the fd is closed (snapshot deleted) or seerfs exits, the
 * mount goes away with it: no helper process lingers and nothing needs
 * killing.
 */
#include "core/providers/local/view.h"
#include "core/ctx.h"
#include "core/root.h"
#include "core/lib/util.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

struct view_args {
	const char *opts, *target;
	char uidmap[64], gidmap[64];
	int no_userns;         /* root with a range: a mount namespace only */
	int ready_w, hold_r;
	int ready_r, hold_w;   /* the parent's ends: the child closes them */
};

static int put_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t k = write(fd, s, strlen(s));
	close(fd);
	return k == (ssize_t)strlen(s) ? 0 : -1;
}

/* The child: only async-signal-safe calls (the parent has threads). */
static void view_child(const struct view_args *a)
{
	int e = 0;
	/* fork copied the parent's end of the hold pipe: without closing it
	 * the read below would never see EOF. */
	close(a->ready_r);
	close(a->hold_w);
	if (unshare(a->no_userns ? CLONE_NEWNS : CLONE_NEWUSER | CLONE_NEWNS) < 0)
		e = errno;
	else if (!a->no_userns &&
		 (put_str("/proc/self/setgroups", "deny") < 0 || put_str("/proc/self/uid_map", a->uidmap) < 0 ||
		  put_str("/proc/self/gid_map", a->gidmap) < 0))
		e = errno ? errno : EPERM;
	else if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		e = errno;
	else if (mount("overlay", a->target, "overlay", MS_RDONLY | MS_NOSUID | MS_NODEV, a->opts) < 0)
		e = errno;
	if (write(a->ready_w, &e, sizeof(e)) != sizeof(e))
		_exit(1);
	char c;
	/* Hold the namespace until seerfs has opened the mount. */
	while (read(a->hold_r, &c, 1) < 0 && errno == EINTR)
		;
	_exit(e ? 1 : 0);
}

/* An O_PATH fd on the merged, read-only view of snapshot name, whose
 * layers are lower (':' separated, newest first). */
static int open_view(struct seer_ctx *ctx, const char *name, const char *lower, char *err, size_t n)
{
	struct sbuf opts = {0};
	int r = 0;
	/* Overlay needs two lower dirs when there is no upper: the empty
	 * directory is the bottom layer, which changes nothing. */
	char target[4096];
	snprintf(target, sizeof(target), "%s/empty", ctx->state_dir);
	sbuf_printf(&opts, "lowerdir=%s:%s,userxattr", lower, target);
	/* Under root the layers belong to the sandboxes' range, which a
	 * namespace mapping only root would not let the overlay read (its
	 * mounter's rights count, and they stop at ids the namespace does not
	 * map: a 0600 file of the sandbox's would be EACCES). Root mounts it
	 * in a mount namespace of its own, as local.c mounts a restored sandbox's
	 * overlay; read-only, nosuid, nodev either way. */
	struct view_args a = {.opts = opts.data, .target = target, .no_userns = ctx->ids.count > 1};
	snprintf(a.uidmap, sizeof(a.uidmap), "0 %u 1\n", (unsigned)ctx->uid);
	snprintf(a.gidmap, sizeof(a.gidmap), "0 %u 1\n", (unsigned)ctx->gid);
	int ready[2] = {-1, -1}, hold[2] = {-1, -1};
	if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(hold, O_CLOEXEC) < 0) {
		r = -errno;
		snprintf(err, n, "snapshot %s: root/: pipe: %s", name, strerror(-r));
		goto out;
	}
	a.ready_w = ready[1];
	a.hold_r = hold[0];
	a.ready_r = ready[0];
	a.hold_w = hold[1];
	pid_t pid = fork();
	if (pid < 0) {
		r = -errno;
		snprintf(err, n, "snapshot %s: root/: fork: %s", name, strerror(-r));
		goto out;
	}
	if (pid == 0)
		view_child(&a);
	close(ready[1]);
	ready[1] = -1;
	close(hold[0]);
	hold[0] = -1;
	int ce = 0;
	ssize_t k;
	do
		k = read(ready[0], &ce, sizeof(ce));
	while (k < 0 && errno == EINTR);
	int fd = -1;
	if (k != sizeof(ce)) {
		r = -ECHILD;
		snprintf(err, n, "snapshot %s: root/: the mount helper died", name);
	} else if (ce) {
		r = -ce;
		snprintf(err, n, "snapshot %s: root/: cannot mount its %s layers read-only: %s (user namespaces or overlayfs unavailable?)",
			 name, "overlay", strerror(ce));
	} else {
		char p[4200];
		snprintf(p, sizeof(p), "/proc/%d/root%s", (int)pid, target);
		fd = open(p, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0) {
			r = -errno;
			snprintf(err, n, "snapshot %s: root/: cannot open the view at %s: %s", name, p, strerror(-r));
		}
	}
	close(hold[1]);   /* the child exits; the mount lives on through fd */
	hold[1] = -1;
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	if (fd >= 0)
		r = fd;
out:
	for (int i = 0; i < 2; i++) {
		if (ready[i] >= 0)
			close(ready[i]);
		if (hold[i] >= 0)
			close(hold[i]);
	}
	sbuf_free(&opts);
	return r;
}

int local_snap_root(struct seer_ctx *ctx, const void *settings, const struct seer_snap_ref *snap,
		    struct seer_root *out, char *err, size_t n)
{
	(void)settings;
	int fd = open_view(ctx, snap->name, snap->layers, err, n);
	if (fd < 0)
		return fd;
	out->fd = fd;
	out->sftp = NULL;
	out->path[0] = '\0';
	out->readonly = 1;   /* the mount is */
	return 0;
}
