/*
 * local.c - the `local` provider: sandboxes on this machine,
 * isolated by Linux namespaces through bubblewrap.
 *
 * Start-up of one sandbox:
 *   seerfs forks a child that makes a user and mount namespace of its own
 *   (the mounting user is root there). A sandbox restored from a snapshot
 *   gets its writable tree as an overlay (lower: the snapshot's layers;
 *   upper: state/sandboxes/NAME/fs/upper); a fresh one gets fs/upper itself,
 *   a plain directory, because an overlay over nothing only adds its own
 *   cost to every lookup and create. The child then execs bubblewrap, which
 *   builds the sandbox's root (host /usr and /etc read-only, the tree's
 *   workspace, root, tmp, var, opt, run writable), drops every capability and
 *   runs seerfs-agent as PID 1 of a new PID namespace. seerfs then reaches
 *   the sandbox's files through /proc/AGENT/root, exactly as its processes
 *   see them, and runs commands by asking the agent over a socket.
 */
#include "core/providers/local/local.h"
#include "core/providers/local/forker.h"
#include "core/providers/local/view.h"
#include "core/providers/local/snap.h"
#include "core/root.h"
#include "core/lib/walk.h"
#include "core/agentjobs.h"
#include "core/sandbox.h"
#include "core/providers/local/gpu.h"
#include "core/lib/seccomp_filter.h"
#include "core/providers/local/freezer.h"
#include "core/lib/walk.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct local_sb {
	pid_t holder;               /* our child: bubblewrap */
	pid_t agent;                /* the agent (PID 1 inside), host pid */
	struct agent_conn ac;       /* to the agent; paused while fz has it frozen */
	int rootfd;                 /* O_PATH on /proc/AGENT/root */
	struct seer_freezer fz;     /* its cgroup, where the host lets us make one */
};

static struct local_sb *priv_of(struct sandbox *sb)
{
	if (!sb->priv) {
		struct local_sb *l = xcalloc(1, sizeof(*l));
		l->rootfd = -1;
		agentconn_init(&l->ac);
		sb->priv = l;
	}
	return sb->priv;
}

static const char *find_bwrap(void)
{
	/* SEERFS_BWRAP names another bubblewrap (a machine without the package,
	 * a newer build); it is the mounting user's own choice, like PATH. */
	const char *env = getenv("SEERFS_BWRAP");
	if (env && *env && access(env, X_OK) == 0)
		return env;
	static const char *const cands[] = {"/usr/bin/bwrap", "/usr/local/bin/bwrap", "/bin/bwrap"};
	for (size_t i = 0; i < ARRAY_SIZE(cands); i++)
		if (access(cands[i], X_OK) == 0)
			return cands[i];
	return NULL;
}

static int local_check(struct sandbox *sb, const struct seer_config *cfg, char *err, size_t n)
{
	if (!find_bwrap()) {
		snprintf(err, n, "sandbox %s: bubblewrap is not installed on this host; install it (apt-get install bubblewrap) and write config.json again",
			 sb->name);
		return -ENOENT;
	}
	if (access(sb->ctx->agent_path, X_OK) != 0) {
		snprintf(err, n, "sandbox %s: the sandbox init %s is missing; reinstall seerfs (meson install)", sb->name,
			 sb->ctx->agent_path);
		return -ENOENT;
	}
	if (cfg->image || cfg->memory || cfg->cpu_milli) {
		snprintf(err, n, "sandbox %s: \"%s\" is for container providers (type \"docker\" in the providers file); the local provider runs the host's system without limits: remove it or set \"provider\"",
			 sb->name, cfg->image ? "image" : cfg->memory ? "memory" : "cpu");
		return -EINVAL;
	}
	if (cfg->gpu)
		return gpu_check(cfg->gpu, cfg->gpu_count, sb->name, err, n);
	return 0;
}

/* ---- the sandbox's tree ----------------------------------------------------- */

static const char *const writable_dirs[] = {"workspace", "root", "tmp", "var", "opt", "run", NULL};

/* /etc files that must never be readable inside (the sandbox's root is the
 * host's root when seerfs runs as root). */
static const char *const hidden_etc[] = {"/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-",
					 "/etc/sudoers", "/etc/ssh", "/etc/ssl/private", "/etc/security/opasswd",
					 "/etc/seerfs", NULL};

/* A tree written by a seerfs before the range, when root's sandboxes were
 * host uid 0, is shifted into the range once: ids below 65536 become the
 * range's (walk_shift_owner is idempotent; the mark only saves the walk).
 * Only under a range. */
static int shift_once(struct sandbox *sb, const char *tree, const char *mark, char *err, size_t n)
{
	if (sb->ctx->ids.count <= 1 || access(mark, F_OK) == 0)
		return 0;
	int fd = open(tree, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int r = fd < 0 ? (errno == ENOENT ? 0 : -errno) : walk_shift_owner(fd, &sb->ctx->ids);
	if (fd >= 0)
		close(fd);
	if (r == 0 && fd >= 0)
		r = write_file_atomic(mark, "", 0, 0600);
	if (r < 0)
		snprintf(err, n, "sandbox %s: cannot give %s to the sandbox's id range (%u and up): %s", sb->name, tree,
			 (unsigned)sb->ctx->ids.uid, strerror(-r));
	else if (fd >= 0)
		sandbox_log(sb, "%s: owners shifted into the id range %u-%u (made by an earlier seerfs)", tree,
			    (unsigned)sb->ctx->ids.uid, (unsigned)(sb->ctx->ids.uid + sb->ctx->ids.count - 1));
	return r;
}

/* Under a range (root's seerfs) bubblewrap runs as the range's root: the
 * directories it takes sources from are searchable by the range's group
 * only (root:GID 0710); the writable tree and the generated /etc files are
 * the sandbox root's (so /etc/passwd inside is root's, and a write to it
 * fails with EROFS as on every read-only bind, not EACCES). */
static int share_dirs(struct sandbox *sb, char *err, size_t n)
{
	const struct seer_idmap *ids = &sb->ctx->ids;
	static const struct {
		const char *sub;
		int own;       /* the sandbox root's, else root:GID 0710 */
		mode_t mode;   /* 0: leave the mode */
	} ents[] = {
		{"", 0, 0710}, {"/fs", 0, 0710}, {"/gen", 0, 0710}, {"/fs/upper", 1, 0755}, {"/gen/empty", 1, 0},
		{"/gen/passwd", 1, 0}, {"/gen/group", 1, 0}, {"/gen/hostname", 1, 0}, {"/gen/hosts", 1, 0},
		{"/gen/null", 1, 0},
	};
	char p[4096], mark[4096];
	snprintf(p, sizeof(p), "%s/fs/upper", sb->dir);
	snprintf(mark, sizeof(mark), "%s/fs/" SEER_IDMAP_MARK, sb->dir);
	int r = shift_once(sb, p, mark, err, n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < ARRAY_SIZE(ents); i++) {
		snprintf(p, sizeof(p), "%s%s", sb->dir, ents[i].sub);
		if (lchown(p, ents[i].own ? ids->uid : 0, ids->gid) < 0 || (ents[i].mode && chmod(p, ents[i].mode) < 0)) {
			int r = -errno;
			snprintf(err, n, "sandbox %s: cannot give %s to the sandbox's ids (%u:%u): %s", sb->name, p,
				 (unsigned)ids->uid, (unsigned)ids->gid, strerror(-r));
			return r;
		}
	}
	return 0;
}

static int prepare_dirs(struct sandbox *sb, char *err, size_t n)
{
	char p[4096];
	const char *sub[] = {"fs", "fs/upper", "fs/work", "fs/merged", "gen", NULL};
	for (int i = 0; sub[i]; i++) {
		snprintf(p, sizeof(p), "%s/%s", sb->dir, sub[i]);
		int r = mkdir_p(p, 0700);
		if (r < 0) {
			snprintf(err, n, "sandbox %s: cannot create %s: %s", sb->name, p, strerror(-r));
			return r;
		}
	}
	snprintf(p, sizeof(p), "%s/empty", sb->ctx->state_dir);
	mkdir_p(p, 0755);
	/* passwd and group with the sandbox's root user, so ls -l shows names. */
	struct sbuf b = {0};
	sbuf_printf(&b, "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
	snprintf(p, sizeof(p), "%s/gen/passwd", sb->dir);
	write_file_atomic(p, b.data, b.len, 0644);
	sbuf_free(&b);
	sbuf_printf(&b, "root:x:0:\nnogroup:x:65534:\n");
	snprintf(p, sizeof(p), "%s/gen/group", sb->dir);
	write_file_atomic(p, b.data, b.len, 0644);
	sbuf_free(&b);
	sbuf_printf(&b, "%s\n", sb->name);
	snprintf(p, sizeof(p), "%s/gen/hostname", sb->dir);
	write_file_atomic(p, b.data, b.len, 0644);
	sbuf_free(&b);
	sbuf_printf(&b, "127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n", sb->name);
	snprintf(p, sizeof(p), "%s/gen/hosts", sb->dir);
	write_file_atomic(p, b.data, b.len, 0644);
	sbuf_free(&b);
	snprintf(p, sizeof(p), "%s/gen/empty", sb->dir);
	mkdir_p(p, 0755);
	snprintf(p, sizeof(p), "%s/gen/null", sb->dir);
	write_file_atomic(p, "", 0, 0644);
	return sb->ctx->ids.count > 1 ? share_dirs(sb, err, n) : 0;
}

struct argv_b {
	char **v;
	size_t n, cap;
};

static void av_add(struct argv_b *a, const char *s)
{
	if (a->n + 2 > a->cap) {
		a->cap = a->cap ? a->cap * 2 : 64;
		a->v = realloc(a->v, a->cap * sizeof(char *));
		if (!a->v)
			abort();
	}
	a->v[a->n++] = xstrdup(s);
	a->v[a->n] = NULL;
}

static void av_addf(struct argv_b *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void av_addf(struct argv_b *a, const char *fmt, ...)
{
	struct sbuf b = {0};
	va_list ap;
	va_start(ap, fmt);
	sbuf_vprintf(&b, fmt, ap);
	va_end(ap);
	av_add(a, b.data);
	sbuf_free(&b);
}

/* The host's top-level entries that programs need, mirrored read-only:
 * merged-/usr symlinks stay symlinks. */
static void add_system(struct argv_b *a)
{
	static const char *const top[] = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", NULL};
	av_add(a, "--ro-bind");
	av_add(a, "/usr");
	av_add(a, "/usr");
	for (int i = 0; top[i]; i++) {
		char path[64], target[256];
		snprintf(path, sizeof(path), "/%s", top[i]);
		struct stat st;
		if (lstat(path, &st) < 0)
			continue;
		if (S_ISLNK(st.st_mode)) {
			ssize_t n = readlink(path, target, sizeof(target) - 1);
			if (n <= 0)
				continue;
			target[n] = '\0';
			av_add(a, "--symlink");
			av_add(a, target);
			av_add(a, path);
		} else if (S_ISDIR(st.st_mode)) {
			av_add(a, "--ro-bind");
			av_add(a, path);
			av_add(a, path);
		}
	}
}

/* The kernel's shared state under the sandbox's /proc, as Docker's default
 * masked and read-only paths (and the root-only tables of this kernel's
 * memory and timers): read-only binds of the host's own (sysctls answer for
 * the reader's namespaces, whichever procfs they are reached through), and
 * /dev/null or an empty directory over what must not be read at all. Only
 * what this host has: bubblewrap cannot create a missing /proc entry. */
static void add_proc_masks(struct sandbox *sb, struct argv_b *a)
{
	static const char *const ro[] = {"bus", "fs", "irq", "sys", "sysrq-trigger", NULL};
	static const char *const masked[] = {"acpi", "asound", "buddyinfo", "kcore", "keys", "key-users",
					     "kallsyms", "kmsg", "kpagecgroup", "kpagecount", "kpageflags",
					     "latency_stats", "pagetypeinfo", "sched_debug", "schedstat", "scsi",
					     "slabinfo", "timer_list", "timer_stats", "vmallocinfo", "zoneinfo",
					     "mtrr", "config.gz", NULL};
	char p[64];
	struct stat st;
	for (int i = 0; ro[i]; i++) {
		snprintf(p, sizeof(p), "/proc/%s", ro[i]);
		if (lstat(p, &st) < 0)
			continue;
		av_add(a, "--ro-bind");
		av_add(a, p);
		av_add(a, p);
	}
	for (int i = 0; masked[i]; i++) {
		snprintf(p, sizeof(p), "/proc/%s", masked[i]);
		if (lstat(p, &st) < 0)
			continue;
		av_add(a, "--ro-bind");
		if (S_ISDIR(st.st_mode))
			av_addf(a, "%s/gen/empty", sb->dir);
		else
			av_addf(a, "%s/gen/null", sb->dir);
		av_add(a, p);
	}
}

/* A hub model: the whole model directory is bound (the snapshot's files
 * are relative links into ../../blobs), and /models/NAME points at the
 * snapshot. */
static void add_model(struct argv_b *a, const struct seer_start_model *m)
{
	av_add(a, "--ro-bind");
	av_add(a, m->dir);
	av_addf(a, "/.seerfs/models/%s", m->mount);
	av_add(a, "--symlink");
	av_addf(a, "/.seerfs/models/%s/snapshots/%s", m->mount, m->commit);
	av_addf(a, "/models/%s", m->mount);
}

static void build_argv(struct sandbox *sb, const struct seer_config *cfg, const struct seer_start *in, const char *tree,
		       struct argv_b *a)
{
	const char *d = sb->dir;
	av_add(a, find_bwrap());
	av_add(a, "--unshare-pid");
	av_add(a, "--unshare-ipc");
	av_add(a, "--unshare-uts");
	av_add(a, "--unshare-cgroup-try");
	if (!cfg->network)
		av_add(a, "--unshare-net");
	av_add(a, "--hostname");
	av_add(a, sb->name);
	/* No --die-with-parent: it is tied to the thread that forked, and the
	 * provisioning thread ends right after. The agent ends the sandbox when
	 * its socket to seerfs closes, which covers seerfs dying. */
	av_add(a, "--as-pid-1");
	av_add(a, "--cap-drop");
	av_add(a, "ALL");
	av_add(a, "--info-fd");
	av_add(a, "4");
	av_add(a, "--seccomp");
	av_add(a, "5");
	add_system(a);
	av_add(a, "--ro-bind");
	av_add(a, "/etc");
	av_add(a, "/etc");
	for (int i = 0; hidden_etc[i]; i++) {
		struct stat st;
		if (lstat(hidden_etc[i], &st) < 0)
			continue;
		av_add(a, "--ro-bind");
		av_addf(a, "%s/gen/%s", d, S_ISDIR(st.st_mode) ? "empty" : "null");
		av_add(a, hidden_etc[i]);
	}
	static const char *const gen[] = {"passwd", "group", "hostname", "hosts", NULL};
	for (int i = 0; gen[i]; i++) {
		av_add(a, "--ro-bind");
		av_addf(a, "%s/gen/%s", d, gen[i]);
		av_addf(a, "/etc/%s", gen[i]);
	}
	av_add(a, "--proc");
	av_add(a, "/proc");
	add_proc_masks(sb, a);
	av_add(a, "--dev");
	av_add(a, "/dev");
	for (int i = 0; writable_dirs[i]; i++) {
		av_add(a, "--bind");
		av_addf(a, "%s/%s", tree, writable_dirs[i]);
		av_addf(a, "/%s", writable_dirs[i]);
	}
	if (cfg->gpu)
		gpu_bwrap_args(cfg->gpu_count, (void (*)(void *, const char *))av_add, a);
	/* Hub models, read-only at /models/ORG--NAME, and the host
	 * directories pip's settings name (core/provision.c prepared both). */
	for (size_t i = 0; i < in->n_models; i++)
		add_model(a, &in->models[i]);
	for (size_t i = 0; i < in->n_binds; i++) {
		av_add(a, "--ro-bind");
		av_add(a, in->binds[i].host);
		av_add(a, in->binds[i].inside);
	}
	av_add(a, "--ro-bind");
	av_add(a, sb->ctx->agent_path);
	av_add(a, "/.seerfs/agent");
	av_add(a, "--chdir");
	av_add(a, "/workspace");
	av_add(a, "--clearenv");
	av_add(a, "--setenv");
	av_add(a, "PATH");
	av_add(a, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
	av_add(a, "/.seerfs/agent");
}

/* The sandbox's writable tree is fs/upper itself for a fresh sandbox, or an
 * overlay of fs/upper over the layers of the snapshot it was restored from.
 * Sets *lower to the overlay's lowerdir option, or leaves it empty for the
 * plain tree. An upper dir that has been an overlay's over real layers may
 * hold whiteouts and opaque marks that only an overlay hides, so from then
 * on it stays an overlay (over an empty directory if need be): fs/layered
 * records that, and fs/work/work (which overlayfs makes) covers the trees
 * of seerfs versions that mounted an overlay for every sandbox. */
static int lower_dirs(struct sandbox *sb, const struct seer_start *in, struct sbuf *lower, char *err, size_t n)
{
	char mark[4096], work[4096];
	snprintf(mark, sizeof(mark), "%s/fs/layered", sb->dir);
	snprintf(work, sizeof(work), "%s/fs/work/work", sb->dir);
	int r = 0;
	if (in->snap.name && in->snap.layers)
		sbuf_printf(lower, "%s", in->snap.layers);
	/* Each layer is STATE/snapshots/NAME/layer (names hold no ':'). */
	for (char *l = lower->data; r == 0 && l && *l;) {
		char *end = strchr(l, ':');
		char layer[4096], lmark[4096];
		snprintf(layer, sizeof(layer), "%.*s", (int)(end ? end - l : (ptrdiff_t)strlen(l)), l);
		snprintf(lmark, sizeof(lmark), "%s", layer);
		char *slash = strrchr(lmark, '/');
		if (slash) {
			snprintf(slash, sizeof(lmark) - (size_t)(slash - lmark), "/" SEER_IDMAP_MARK);
			r = shift_once(sb, layer, lmark, err, n);
		}
		l = end ? end + 1 : NULL;
	}
	if (r < 0)
		return r;
	if (lower->len) {
		if (access(mark, F_OK) < 0 && (r = write_file_atomic(mark, "", 0, 0600)) < 0) {
			snprintf(err, n, "sandbox %s: cannot write %s: %s", sb->name, mark, strerror(-r));
			return r;
		}
	} else if (access(mark, F_OK) == 0 || access(work, F_OK) == 0) {
		sbuf_printf(lower, "%s/empty", sb->ctx->state_dir);
	}
	return 0;
}

static void child_fail(int fd, const char *stage, int e)
{
	char msg[160];
	int len = snprintf(msg, sizeof(msg), "ERR %s: %s", stage, strerror(e));
	if (write(fd, msg, (size_t)len) < 0) {
		/* the parent reports a start failure either way */
	}
	_exit(126);
}

static int write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, s, strlen(s));
	close(fd);
	return n == (ssize_t)strlen(s) ? 0 : -1;
}

/* The mount points of every FUSE file system in this mount namespace, into
 * out (NUL-separated, octal escapes undone), deepest last. Runs in the
 * forked child: read(2) and a caller's buffer, no allocation. */
static size_t fuse_mounts(char *out, size_t cap)
{
	static char buf[1 << 16];
	size_t used = 0, have = 0;
	int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	for (;;) {
		ssize_t k = read(fd, buf + have, sizeof(buf) - 1 - have);
		if (k > 0)
			have += (size_t)k;
		buf[have] = '\0';
		char *line = buf, *nl;
		while ((nl = strchr(line, '\n')) || (k <= 0 && *line)) {
			if (nl)
				*nl = '\0';
			/* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE ... */
			char *f = line, *mp = NULL;
			for (int i = 0; i < 4 && f; i++)
				f = strchr(f, ' ') ? strchr(f, ' ') + 1 : NULL;
			char *sep = f ? strstr(f, " - ") : NULL;
			if (f && sep && !strncmp(sep + 3, "fuse", 4)) {
				mp = f;
				*strchr(mp, ' ') = '\0';
				size_t o = used;
				for (char *c = mp; *c && o + 1 < cap; c++) {
					if (c[0] == '\\' && c[1] >= '0' && c[1] <= '3' && c[2] && c[3]) {
						out[o++] = (char)((c[1] - '0') * 64 + (c[2] - '0') * 8 + (c[3] - '0'));
						c += 3;
					} else {
						out[o++] = *c;
					}
				}
				if (o + 1 < cap) {
					out[o++] = '\0';
					used = o;
				}
			}
			if (!nl) {
				line += strlen(line);
				break;
			}
			line = nl + 1;
		}
		have = (size_t)(buf + have - line);
		memmove(buf, line, have);
		if (k <= 0 || have == sizeof(buf) - 1)
			break;
	}
	close(fd);
	return used;
}

/* Detaches every FUSE mount from the child's mount namespace, so that the
 * namespace bubblewrap's monitor stays in holds no other file system's
 * connection: a host whose mounts are private would otherwise keep every
 * FUSE daemon that was mounted when the sandbox started (another seerfs,
 * a user's sshfs) from ever seeing its unmount. */
static void detach_fuse_mounts(void)
{
	static char mps[1 << 16];
	size_t len = fuse_mounts(mps, sizeof(mps));
	const char *ends[1024];
	size_t n = 0;
	for (size_t o = 0; o < len && n < ARRAY_SIZE(ends); o += strlen(mps + o) + 1)
		ends[n++] = mps + o;
	while (n--)
		umount2(ends[n], MNT_DETACH);
}

struct fork_args {
	const char *errpath;
	int sv1, info1, errfd, seccomp;
	int sync[2];                /* the child's: read "go", write "ready" */
	int psync[2];               /* the parent's: read "ready", write "go" */
	int mapped;                 /* a range: the parent (root) writes the id maps */
	const char *uidmap, *gidmap, *tree, *opts; /* opts NULL: no overlay */
	const char *cgroup_procs;   /* the freezer cgroup's cgroup.procs, or NULL */
	uid_t root_uid;
	gid_t root_gid;
	char **wdirs, **argv, **envp;
	pid_t pid;
};

/* The writable tree's top directories (made in the overlay's merged tree
 * when there is one), owned by the sandbox's root. */
static void make_wdirs(struct fork_args *fa)
{
	for (size_t i = 0; writable_dirs[i]; i++) {
		/* mkdir's mode passes the umask: /tmp needs its chmod */
		if (mkdir(fa->wdirs[i], 0755) == 0 && i == 2)
			chmod(fa->wdirs[i], 01777);
		if (fa->mapped && lchown(fa->wdirs[i], fa->root_uid, fa->root_gid) < 0) {
			/* bubblewrap's bind then fails and names the directory */
		}
	}
}

/* In the child's own mount namespace: its mounts made slaves (not private:
 * on a host with shared mounts an unmount there reaches these copies), the
 * FUSE mounts detached (which fails, harmlessly, for the locked copies of a
 * user namespace's), the overlay mounted and its top directories made. */
static void mount_overlay(struct fork_args *fa)
{
	if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
		child_fail(4, "make mounts slaves", errno);
	detach_fuse_mounts();
	if (mount("overlay", fa->tree, "overlay", MS_NOSUID | MS_NODEV, fa->opts) < 0)
		child_fail(4, "mount the overlay", errno);
	make_wdirs(fa);
}

/* The child of fork_sandbox: fds 0 and 1 /dev/null, 2 bwrap.err, 3 the
 * agent's socket, 4 info, 5 the seccomp program, 6 and 7 the sync pipes.
 *
 * With a range (root's seerfs) the mount namespace, when an overlay needs
 * one, is made while still host root, so the copied mounts are not locked
 * and the FUSE ones can be detached; then the user namespace, whose maps
 * only a process privileged in the parent namespace may write (the
 * parent). Under a user, one unshare of both, and the child maps itself.
 * Without an overlay no mount namespace is made here at all: bubblewrap
 * makes the sandbox's own, and its monitor stays in the host's. */
static void child_main(struct fork_args *fa)
{
	/* Every source above the targets first, so no dup2 overwrites one. */
	int src[6] = {fa->sv1, fa->info1, fa->seccomp, fa->sync[0], fa->sync[1], fa->errfd};
	for (int i = 0; i < 6; i++)
		if (src[i] >= 0 && (src[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 8)) < 0)
			child_fail(fa->info1, "dup", errno);
	for (int i = 0; i < 5; i++)
		if (dup2(src[i], 3 + i) < 0)
			child_fail(src[1], "dup2", errno);
	int nul = open("/dev/null", O_RDWR);
	dup2(nul, 0);
	dup2(nul, 1);
	if (src[5] >= 0)
		dup2(src[5], 2);
	syscall(SYS_close_range, 8, ~0U, 0);
	if (fa->cgroup_procs && write_str(fa->cgroup_procs, "0") < 0)
		child_fail(4, "join the sandbox's freezer cgroup", errno);
	if (!fa->opts)
		make_wdirs(fa);
	int ns = fa->opts ? CLONE_NEWNS : 0;
	if (fa->mapped && ns) {
		if (unshare(CLONE_NEWNS) < 0)
			child_fail(4, "unshare(mount namespace)", errno);
		ns = 0;
		mount_overlay(fa);
	}
	if (unshare(CLONE_NEWUSER | ns) < 0)
		child_fail(4, "unshare(user namespace)", errno);
	if (fa->mapped) {
		char c = 'r';
		if (write(7, &c, 1) != 1 || read(6, &c, 1) != 1 || c != 'g')
			child_fail(4, "id maps (the parent did not write them)", EPROTO);
		/* Still host root, which the range does not map: become the
		 * range's root (raw calls: this is a forked child), so that
		 * bubblewrap's exec gives it its capabilities in the namespace. */
		if (syscall(SYS_setgroups, 0, NULL) < 0 || syscall(SYS_setresgid, 0, 0, 0) < 0 ||
		    syscall(SYS_setresuid, 0, 0, 0) < 0)
			child_fail(4, "become the sandbox's root", errno);
	} else if (write_str("/proc/self/setgroups", "deny") < 0 || write_str("/proc/self/uid_map", fa->uidmap) < 0 ||
		   write_str("/proc/self/gid_map", fa->gidmap) < 0) {
		child_fail(4, "uid_map", errno);
	}
	close(6);
	close(7);
	if (ns)
		mount_overlay(fa);
	execve(fa->argv[0], fa->argv, fa->envp);
	child_fail(4, "exec bwrap", errno);
}

/* Writes a mapped child's id maps once it has its user namespace. */
static int map_child(struct fork_args *fa, pid_t pid)
{
	char c, path[64];
	struct pollfd p = {fa->psync[0], POLLIN, 0};
	if (poll(&p, 1, 10000) <= 0 || read(fa->psync[0], &c, 1) != 1 || c != 'r')
		return -ECHILD;   /* it failed before: info says why */
	snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)pid);
	if (write_str(path, fa->uidmap) < 0)
		return -errno;
	snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)pid);
	if (write_str(path, fa->gidmap) < 0)
		return -errno;
	c = 'g';
	return write(fa->psync[1], &c, 1) == 1 ? 0 : -errno;
}

/* Forks the sandbox's first process (runs on the forker thread). Returns
 * the child's pid or -errno. */
static int fork_sandbox(void *p)
{
	struct fork_args *fa = p;
	fa->errfd = open(fa->errpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	pid_t pid = fork();
	if (pid == 0)
		child_main(fa);
	/* The child's ends: closed here, so that a child that dies early is
	 * seen as an end of file rather than a time-out. */
	close_fd(&fa->sync[0]);
	close_fd(&fa->sync[1]);
	if (pid < 0)
		return -errno;
	if (fa->mapped && map_child(fa, pid) < 0)
		kill(pid, SIGKILL);   /* the caller reaps it and reports bwrap.err / info */
	return pid;
}

/* What bubblewrap wrote to bwrap.err (its last line break dropped), or
 * NULL: a regular file only, since reading anything else could block. */
static char *bwrap_said(const char *errpath)
{
	struct stat st;
	char *why = NULL;
	if (lstat(errpath, &st) < 0 || !S_ISREG(st.st_mode) || read_file(errpath, 4096, &why, NULL) < 0)
		return NULL;
	char *nl = strrchr(why, '\n');
	if (nl && !nl[1])
		*nl = '\0';
	return why;
}

static int local_start(struct sandbox *sb, const struct seer_config *cfg, const struct seer_start *in, char *err,
		       size_t n)
{
	struct local_sb *l = priv_of(sb);
	int r = prepare_dirs(sb, err, n);
	if (r < 0)
		return r;
	struct sbuf lower = {0};
	if ((r = lower_dirs(sb, in, &lower, err, n)) < 0) {
		sbuf_free(&lower);
		return r;
	}
	/* Everything the child needs is built before fork: after fork in a
	 * threaded process only async-signal-safe calls are allowed. */
	char tree[4096], uidmap[64], gidmap[64], errpath[4096];
	struct sbuf opts = {0};
	snprintf(tree, sizeof(tree), "%s/fs/%s", sb->dir, lower.len ? "merged" : "upper");
	if (lower.len)
		sbuf_printf(&opts, "lowerdir=%s,upperdir=%s/fs/upper,workdir=%s/fs/work,userxattr", lower.data, sb->dir,
			    sb->dir);
	sbuf_free(&lower);
	const struct seer_idmap *ids = &sb->ctx->ids;
	seer_idmap_text(ids, 0, uidmap, sizeof(uidmap));
	seer_idmap_text(ids, 1, gidmap, sizeof(gidmap));
	snprintf(errpath, sizeof(errpath), "%s/bwrap.err", sb->dir);
	char *wdirs[ARRAY_SIZE(writable_dirs)];
	for (size_t i = 0; writable_dirs[i]; i++) {
		struct sbuf b = {0};
		sbuf_printf(&b, "%s/%s", tree, writable_dirs[i]);
		wdirs[i] = b.data;
	}
	struct argv_b av = {0};
	build_argv(sb, cfg, in, tree, &av);

	int sv[2] = {-1, -1}, info[2] = {-1, -1}, up[2] = {-1, -1}, down[2] = {-1, -1};
	int seccomp = seer_seccomp_fd(NULL, err, n);
	if (seccomp < 0) {
		r = seccomp;
		goto out;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0 || pipe2(info, O_CLOEXEC) < 0 ||
	    pipe2(up, O_CLOEXEC) < 0 || pipe2(down, O_CLOEXEC) < 0) {
		r = -errno;
		snprintf(err, n, "sandbox %s: cannot create the agent socket: %s", sb->name, strerror(-r));
		goto out;
	}
	int sndbuf = 1 << 20;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	struct fork_args fa = {.errpath = errpath, .sv1 = sv[1], .info1 = info[1], .seccomp = seccomp,
			       .sync = {down[0], up[1]}, .psync = {up[0], down[1]}, .mapped = ids->count > 1, .uidmap = uidmap, .gidmap = gidmap,
			       .root_uid = ids->uid, .root_gid = ids->gid, .tree = tree, .opts = opts.data,
			       .wdirs = wdirs, .argv = av.v, .envp = (char **)seer_clean_environ};
	struct sbuf procs = {0};
	if (!l->fz.dir && freezer_create(&l->fz, (int)getpid(), sb->name) == 0)
		sandbox_log(sb, "freezer: cgroup %s", l->fz.dir);
	if (l->fz.dir) {
		sbuf_printf(&procs, "%s/cgroup.procs", l->fz.dir);
		fa.cgroup_procs = procs.data;
	}
	pid_t pid = local_in_forker(seer_provider_state(sb->ctx, &seer_provider_local), fork_sandbox, &fa);
	up[1] = down[0] = -1;   /* fork_sandbox closed them */
	sbuf_free(&procs);
	int errfd = fa.errfd;
	if (pid < 0) {
		r = pid;
		snprintf(err, n, "sandbox %s: fork: %s", sb->name, strerror(-r));
		if (errfd >= 0)
			close(errfd);
		goto out;
	}
	if (errfd >= 0)
		close(errfd);
	close(sv[1]);
	sv[1] = -1;
	close(info[1]);
	info[1] = -1;

	/* bubblewrap writes its info JSON once the sandbox runs; the child
	 * writes "ERR ..." if it failed before that. */
	struct sbuf ib = {0};
	double deadline = mono_s() + 30;
	for (;;) {
		struct pollfd p = {info[0], POLLIN, 0};
		int left = (int)((deadline - mono_s()) * 1000);
		if (left <= 0) {
			r = -ETIMEDOUT;
			break;
		}
		if (poll(&p, 1, left) < 0 && errno != EINTR) {
			r = -errno;
			break;
		}
		char buf[1024];
		ssize_t k = read(info[0], buf, sizeof(buf));
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		sbuf_append(&ib, buf, (size_t)k);
		if (strchr(ib.data, '}'))
			break;
	}
	pid_t agent = 0;
	if (ib.data && strstr(ib.data, "child-pid")) {
		struct json_object *o = json_tokener_parse(ib.data), *v;
		if (o && json_object_object_get_ex(o, "child-pid", &v))
			agent = json_object_get_int(v);
		json_object_put(o);
	}
	if (!agent) {
		char *why = bwrap_said(errpath);
		snprintf(err, n, "sandbox %s: bubblewrap could not start the sandbox: %s%s%s", sb->name,
			 ib.data && !strncmp(ib.data, "ERR ", 4) ? ib.data + 4 : "",
			 why && *why ? " " : "", why && *why ? why : (r == -ETIMEDOUT ? "(timed out)" : ""));
		free(why);
		sbuf_free(&ib);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		if (r == 0)
			r = -EIO;
		goto out;
	}
	sbuf_free(&ib);
	pthread_mutex_lock(&l->ac.lock);
	l->holder = pid;
	l->agent = agent;
	pthread_mutex_unlock(&l->ac.lock);
	r = agentjobs_start(sb, &l->ac, sv[0], "the sandbox's init process ended unexpectedly; its processes are gone");
	sv[0] = -1;
	if (r < 0) {
		snprintf(err, n, "sandbox %s: cannot start the agent reader thread", sb->name);
		goto out;
	}
	struct agent_msg m = {.type = AG_PING}, rep;
	r = agentconn_rpc(&l->ac, &m, NULL, 0, NULL, 0, &rep);
	if (r < 0) {
		char *why = bwrap_said(errpath);
		snprintf(err, n, "sandbox %s: the sandbox's init did not answer: %s%s%s", sb->name, strerror(-r),
			 why && *why ? "; bubblewrap said: " : "", why && *why ? why : "");
		free(why);
		goto out;
	}
	char rp[64];
	snprintf(rp, sizeof(rp), "/proc/%d/root", (int)agent);
	int rfd = open(rp, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rfd < 0) {
		r = -errno;
		snprintf(err, n, "sandbox %s: cannot reach the sandbox's files at %s: %s", sb->name, rp, strerror(-r));
		goto out;
	}
	pthread_mutex_lock(&l->ac.lock);
	l->rootfd = rfd;
	pthread_mutex_unlock(&l->ac.lock);
	sandbox_log(sb, "sandbox started: bubblewrap pid %d, init pid %d", (int)pid, (int)agent);
	r = 0;
out:
	if (sv[0] >= 0)
		close(sv[0]);
	if (sv[1] >= 0)
		close(sv[1]);
	if (info[0] >= 0)
		close(info[0]);
	if (info[1] >= 0)
		close(info[1]);
	for (int i = 0; i < 2; i++) {
		close_fd(&up[i]);
		close_fd(&down[i]);
	}
	close_fd(&seccomp);
	sbuf_free(&opts);
	for (size_t i = 0; writable_dirs[i]; i++)
		free(wdirs[i]);
	for (size_t i = 0; i < av.n; i++)
		free(av.v[i]);
	free(av.v);
	return r;
}

static int local_stop(struct sandbox *sb)
{
	struct local_sb *l = priv_of(sb);
	pthread_mutex_lock(&l->ac.lock);
	l->ac.stopping = 1;
	if (l->ac.paused) {
		freezer_set(&l->fz, 0, 0);
		l->ac.paused = 0;
		pthread_cond_broadcast(&l->ac.cond);
	}
	pid_t holder = l->holder, agent = l->agent;
	int rootfd = l->rootfd;
	l->rootfd = -1;
	pthread_mutex_unlock(&l->ac.lock);
	agentconn_end(&l->ac);   /* the agent kills everything and exits */
	if (holder > 0) {
		for (int i = 0; i < 200; i++) {
			if (waitpid(holder, NULL, WNOHANG) == holder) {
				holder = 0;
				break;
			}
			struct timespec ts = {0, 10000000};
			nanosleep(&ts, NULL);
		}
		if (holder) {
			if (agent > 0)
				kill(agent, SIGKILL);
			kill(holder, SIGKILL);
			waitpid(holder, NULL, 0);
		}
	}
	pthread_mutex_lock(&l->ac.lock);
	l->holder = l->agent = 0;
	pthread_mutex_unlock(&l->ac.lock);
	if (rootfd >= 0)
		close(rootfd);
	freezer_remove(&l->fz);
	return 0;
}

static int local_destroy(struct sandbox *sb)
{
	char p[4096];
	snprintf(p, sizeof(p), "%s/fs", sb->dir);
	return walk_rm(p);
}

/* root/: an O_PATH fd on /proc/AGENT/root, the sandbox's "/" as its
 * processes see it. */
static int local_root(struct sandbox *sb, struct seer_root *out)
{
	struct local_sb *l = priv_of(sb);
	return agentjobs_root(&l->ac, &l->rootfd, out);
}

/* Its roots are fds: the core copies into them itself. */
static int local_copy_in(struct sandbox *sb, const struct seer_root *root, int sfd, const struct stat *st,
			 const char *rel, char *bad, size_t badn)
{
	return -ENOTSUP;
}

/* Its snapshots are layers in the state directory, which the catalog
 * (core/snapshot.c) removes: nothing is kept anywhere else. */
static int local_snap_remove(struct seer_ctx *ctx, const void *settings, const char *snap, const char *where,
			     char *err, size_t n)
{
	return 0;
}

static int local_spawn(struct sandbox *sb, const struct seer_spawn *req, int *pid, char *err, size_t n)
{
	return agentjobs_spawn(sb, &priv_of(sb)->ac, "its init", req, pid, err, n);
}

static int local_signal(struct sandbox *sb, int pid, int sig, int tree)
{
	return agentjobs_signal(&priv_of(sb)->ac, pid, sig, tree);
}

/* By the cgroup freezer where there is one, else by the agent's SIGSTOP
 * to every process. Either way -ETIMEDOUT when not every process stopped:
 * a snapshot then fails rather than copy a tree that is still moving. */
static int local_freeze(struct sandbox *sb, int freeze)
{
	struct local_sb *l = priv_of(sb);
	if (l->fz.dir) {
		pthread_mutex_lock(&l->ac.lock);
		int r = l->ac.dead ? -ENOTCONN : freezer_set(&l->fz, freeze, 10.0);
		if (r == 0)
			l->ac.paused = freeze;
		pthread_cond_broadcast(&l->ac.cond);
		pthread_mutex_unlock(&l->ac.lock);
		return r;
	}
	struct agent_msg m = {.type = AG_FREEZE, .arg = freeze}, rep;
	int r = agentconn_rpc(&l->ac, &m, NULL, 0, NULL, 0, &rep);
	return r < 0 ? r : rep.arg;
}

static int local_busy(struct sandbox *sb)
{
	if (priv_of(sb)->ac.paused)
		return 1;   /* nothing runs, but a snapshot is under way: cache nothing */
	return agentjobs_busy(&priv_of(sb)->ac);
}

static void local_release(struct sandbox *sb)
{
	struct local_sb *l = sb->priv;
	if (!l)
		return;
	if (l->ac.sock >= 0 || l->holder > 0)
		local_stop(sb);
	agentconn_destroy(&l->ac);
	free(l);
	sb->priv = NULL;
}

static void local_isolation(struct sandbox *sb, char *buf, size_t len)
{
	int network = sandbox_network(sb);
	const struct seer_idmap *ids = &sb->ctx->ids;
	if (ids->count > 1)
		snprintf(buf, len, "bubblewrap (user namespace: ids 0-%u are host ids %u-%u; mount, pid, ipc, uts namespaces%s; "
			 "no capabilities; system call filter)", ids->count - 1, (unsigned)ids->uid,
			 (unsigned)ids->uid + ids->count - 1, network ? "" : ", no network");
	else
		snprintf(buf, len, "bubblewrap (user namespace: root is host uid %u; mount, pid, ipc, uts namespaces%s; "
			 "no capabilities; system call filter)", (unsigned)ids->uid, network ? "" : ", no network");
}

const struct seer_provider seer_provider_local = {
	.name = "local",
	.init = local_state_init,
	.cleanup = local_state_cleanup,
	.check = local_check,
	.start = local_start,
	.stop = local_stop,
	.destroy = local_destroy,
	.root = local_root,
	.copy_in = local_copy_in,
	.spawn = local_spawn,
	.signal = local_signal,
	.freeze = local_freeze,
	.snap_take = local_snap_take,
	.snap_remove = local_snap_remove,
	.snap_root = local_snap_root,
	.busy = local_busy,
	.release = local_release,
	.isolation = local_isolation,
	.host_binds = 1,
};
