/*
 * main.c - the seerfs command: options, the state directory, the FUSE
 * session and its multithreaded loop.
 *
 *   seerfs [SOURCE] MOUNTPOINT [-f] [-d] [-o OPTIONS]
 *
 * SOURCE is optional ("local"): mount(8) and /etc/fstab pass one, as they do
 * for every FUSE filesystem.
 */
#include "fs/fs.h"
#include "core/ctx.h"
#include "core/lifecycle.h"
#include "core/lib/util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern const struct fuse_lowlevel_ops seer_ll_ops;
void ll_install_hooks(struct seer_fs *fs);

struct options {
	char *state;
	char *agent;
	char *providers;
	char *model_cache;
	char *idmap_user;
	double pass_timeout;
	int writeback;
	int no_splice;
	int splice_read;
	int xattr;
	int show_help;
	int show_version;
	int foreground;
	int debug;
	int clone_fd;
	unsigned max_threads;
	char *source;
	char *mountpoint;
};

#define OPT(t, p) {t, offsetof(struct options, p), 1}
static const struct fuse_opt opt_spec[] = {
	OPT("state=%s", state),
	OPT("agent=%s", agent),
	OPT("providers=%s", providers),
	OPT("model_cache=%s", model_cache),
	OPT("idmap_user=%s", idmap_user),
	OPT("pass_timeout=%lf", pass_timeout),
	OPT("writeback", writeback),
	OPT("no_splice", no_splice),
	OPT("splice_read", splice_read),
	OPT("xattr", xattr),
	OPT("max_threads=%u", max_threads),
	OPT("--help", show_help),
	OPT("-h", show_help),
	OPT("--version", show_version),
	OPT("-V", show_version),
	OPT("-f", foreground),
	OPT("-d", debug),
	OPT("debug", debug),
	FUSE_OPT_END};

enum { KEY_FG_DEBUG };

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct options *o = data;
	if (key == FUSE_OPT_KEY_NONOPT) {
		if (!o->mountpoint) {
			o->mountpoint = strdup(arg);
			return 0;
		}
		if (!o->source) {
			/* Two positional words: the first was the source. */
			o->source = o->mountpoint;
			o->mountpoint = strdup(arg);
			return 0;
		}
		fprintf(stderr, "seerfs: unexpected argument '%s'\n", arg);
		return -1;
	}
	/* Options mount(8) passes that mean nothing to us. */
	if (!strcmp(arg, "rw") || !strcmp(arg, "noauto") || !strcmp(arg, "user") || !strcmp(arg, "users") ||
	    !strcmp(arg, "_netdev") || !strcmp(arg, "nofail") || !strcmp(arg, "auto") || !strncmp(arg, "x-", 2) ||
	    !strncmp(arg, "comment=", 8))
		return 0;
	(void)outargs;
	return 1;
}

static void usage(const char *prog)
{
	printf("usage: %s [local] MOUNTPOINT [options]\n\n"
	       "A FUSE filesystem that turns sandboxes into directories. After mounting,\n"
	       "read MOUNTPOINT/README.\n\n"
	       "seerfs options:\n"
	       "    -o state=DIR           state directory (default $XDG_DATA_HOME/seerfs,\n"
	       "                           ~/.local/share/seerfs, or /var/lib/seerfs for root)\n"
	       "    -o providers=FILE      named providers (default $XDG_CONFIG_HOME/seerfs/providers.json)\n"
	       "    -o model_cache=DIR     shared cache of hub models (default STATE/models)\n"
	       "    -o idmap_user=NAME     as root: the user whose subordinate ids (/etc/subuid,\n"
	       "                           /etc/subgid) the sandboxes' ids map to (default\n"
	       "                           seerfs, created with a free range when missing)\n"
	       "    -o pass_timeout=SECS   how long the kernel may cache root/ entries and\n"
	       "                           attributes while a sandbox runs nothing (default 30;\n"
	       "                           0: never, every access asks the sandbox's tree)\n"
	       "    -o writeback           kernel writeback cache for root/ (off: it can lose data)\n"
	       "    -o no_splice           no splice for root/ data\n"
	       "    -o splice_read         receive requests by splice: large writes use less\n"
	       "                           CPU, every other request one more system call\n"
	       "    -o xattr               user.* extended attributes in root/ (off: every\n"
	       "                           xattr call fails with ENOTSUP, and writes are faster)\n"
	       "    -o max_threads=N       FUSE worker threads (default 64)\n"
	       "    -f                     stay in the foreground\n"
	       "    -d, -o debug           foreground with FUSE debug output\n"
	       "    -V, --version          print the version\n\n"
	       "FUSE options:\n", prog);
	fuse_lowlevel_help();
	printf("    -o allow_other         let other users in (needs user_allow_other in /etc/fuse.conf)\n");
}

static char *abs_path(const char *p)
{
	char *r = realpath(p, NULL);
	return r ? r : xstrdup(p);
}

static char *default_state_dir(void)
{
	struct sbuf b = {0};
	const char *x = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
	if (getuid() == 0 && !x)
		sbuf_printf(&b, "/var/lib/seerfs");
	else if (x && *x)
		sbuf_printf(&b, "%s/seerfs", x);
	else
		sbuf_printf(&b, "%s/.local/share/seerfs", home ? home : "/tmp");
	return b.data;
}

static char *default_providers(void)
{
	struct sbuf b = {0};
	const char *x = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	if (x && *x)
		sbuf_printf(&b, "%s/seerfs/providers.json", x);
	else
		sbuf_printf(&b, "%s/.config/seerfs/providers.json", home ? home : "/");
	return b.data;
}

/* The agent binary: beside us (build tree: ../core/), else the libexec dir. */
static char *find_agent(void)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			const char *cands[] = {"seerfs-agent", "../core/providers/local/seerfs-agent", NULL};
			for (int i = 0; cands[i]; i++) {
				struct sbuf b = {0};
				sbuf_printf(&b, "%s/%s", self, cands[i]);
				if (access(b.data, X_OK) == 0) {
					char *r = abs_path(b.data);
					sbuf_free(&b);
					return r;
				}
				sbuf_free(&b);
			}
		}
	}
	return xstrdup(SEERFS_LIBEXECDIR "/seerfs-agent");
}

/* Whether our mountpoint is still mounted in our namespace. */
static int still_mounted(const char *mp)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return 1;
	char line[8192];
	int found = 0;
	while (!found && fgets(line, sizeof(line), f)) {
		char path[4096];
		/* id parent major:minor root mountpoint ... - fstype source */
		if (sscanf(line, "%*s %*s %*s %*s %4095s", path) == 1 && !strcmp(path, mp) && strstr(line, " - fuse.seerfs "))
			found = 1;
	}
	fclose(f);
	return found;
}

/* Every sandbox's mount namespace holds a copy of our FUSE mount (it was
 * made after we mounted), so after `fusermount3 -u` the kernel keeps the
 * connection open and we would never hear of it. This thread notices the
 * unmount (mountinfo polls POLLPRI on changes), stops the sandboxes, which
 * drops those copies, and so the FUSE loop ends. */
static void *mount_watcher(void *arg)
{
	struct seer_fs *fs = arg;
	int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	for (;;) {
		struct pollfd p = {fd, POLLPRI, 0};
		int r = poll(&p, 1, 1000);
		if (r < 0 && errno != EINTR)
			break;
		if (!still_mounted(fs->ctx->mountpoint)) {
			/* Not cancellable from here on: main cancels this thread
			 * once the loop ends, and a cancel inside a provider's stop
			 * (in a condition wait) would leave a lock of its link held
			 * by a dead thread, and main's own stop waiting on it. */
			pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
			fuse_session_exit(fs->se);
			seer_ctx_stop_processes(fs->ctx);
			break;
		}
	}
	close(fd);
	return NULL;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct options o = {.pass_timeout = 30.0, .max_threads = 64, .clone_fd = 1};
	int ret = 1;

	if (fuse_opt_parse(&args, &o, opt_spec, opt_proc) == -1)
		return 1;
	if (o.show_help || o.show_version) {
		if (o.show_help) {
			usage(argv[0]);
		} else {
			printf("seerfs %s\nFUSE library version %s\n", SEERFS_VERSION, fuse_pkgversion());
			fuse_lowlevel_version();
		}
		free(o.mountpoint);
		free(o.source);
		free(o.state);
		free(o.agent);
		free(o.providers);
		free(o.model_cache);
		fuse_opt_free_args(&args);
		return 0;
	}
	if (!(o.pass_timeout >= 0)) {
		fprintf(stderr, "seerfs: -o pass_timeout=%g: give a number of seconds, 0 or more "
				"(0 turns root/'s caching off)\n", o.pass_timeout);
		fuse_opt_free_args(&args);
		return 1;
	}
	if (!o.mountpoint) {
		fprintf(stderr, "usage: %s [local] MOUNTPOINT [options]  (--help for more)\n", argv[0]);
		return 2;
	}
	if (o.source && strcmp(o.source, "local") && strcmp(o.source, "seerfs")) {
		fprintf(stderr, "seerfs: unknown source '%s': use 'local' (other providers are named in a sandbox's config)\n",
			o.source);
		return 2;
	}
	if (o.debug) {
		o.foreground = 1;
		fuse_opt_add_arg(&args, "-odebug");
	}
	/* Without allow_other only the mounting user (the daemon's own uid)
	 * gets in, so the daemon's own checks on the real files are the
	 * caller's, and the kernel need not check again: default_permissions
	 * would refetch a directory's attributes after every create or unlink
	 * in it, one round trip more per file. With allow_other other users
	 * reach files as the daemon, so the kernel must check for them. */
	int allow_other = 0;
	for (int i = 1; i < args.argc; i++)
		if (strstr(args.argv[i], "allow_other"))
			allow_other = 1;
	if (allow_other)
		fuse_opt_add_arg(&args, "-odefault_permissions");
	fuse_opt_add_arg(&args, "-ofsname=seerfs");
	fuse_opt_add_arg(&args, "-osubtype=seerfs");

	struct seer_ctx ctx;
	memset(&ctx, 0, sizeof(ctx));
	ctx.lock_fd = -1;
	ctx.uid = getuid();
	ctx.gid = getgid();
	ctx.idmap_user = o.idmap_user;
	ctx.mountpoint = abs_path(o.mountpoint);
	ctx.state_dir = o.state ? xstrdup(o.state) : default_state_dir();
	mkdir_p(ctx.state_dir, 0700);
	char *sd = abs_path(ctx.state_dir);
	free(ctx.state_dir);
	ctx.state_dir = sd;
	char cwd[PATH_MAX];
	ctx.start_cwd = xstrdup(getcwd(cwd, sizeof(cwd)) ? cwd : "/");
	ctx.agent_path = o.agent ? abs_path(o.agent) : find_agent();
	ctx.providers_file = o.providers ? abs_path(o.providers) : default_providers();
	if (o.model_cache) {
		ctx.model_cache = abs_path(o.model_cache);
	} else {
		struct sbuf b = {0};
		sbuf_printf(&b, "%s/models", ctx.state_dir);
		ctx.model_cache = b.data;
	}

	char err[1024];
	int r = seer_ctx_open(&ctx, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "seerfs: %s\n", err);
		return 1;
	}

	struct seer_fs fs;
	memset(&fs, 0, sizeof(fs));
	fs.ctx = &ctx;
	fs.debug = o.debug;
	fs.pass_timeout = o.pass_timeout;
	fs.writeback = o.writeback;
	fs.no_splice = o.no_splice;
	fs.splice_read = o.splice_read;
	fs.xattr = o.xattr;
	pthread_mutex_init(&fs.lock, NULL);
	pthread_mutex_init(&fs.pend_mu, NULL);
	ll_install_hooks(&fs);

	struct fuse_session *se = fuse_session_new(&args, &seer_ll_ops, sizeof(seer_ll_ops), &fs);
	if (!se)
		goto out_ctx;
	fs.se = se;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_session;
	if (fuse_session_mount(se, ctx.mountpoint) != 0)
		goto out_signals;
	if (fuse_daemonize(o.foreground) != 0)
		goto out_unmount;
	{
		/* After daemonizing: threads do not survive fork, and the lock file
		 * should name the process that really holds it. */
		char who[4200];
		int len = snprintf(who, sizeof(who), "pid %d, mounted at %s\n", (int)getpid(), ctx.mountpoint);
		if (ftruncate(ctx.lock_fd, 0) < 0 || pwrite(ctx.lock_fd, who, (size_t)len, 0) < 0) {
			/* informational only */
		}
	}
	signal(SIGPIPE, SIG_IGN);
	if (seer_ctx_start(&ctx) < 0) {
		fprintf(stderr, "seerfs: cannot start the timer thread\n");
		goto out_unmount;
	}
	struct fuse_loop_config *lc = fuse_loop_cfg_create();
	fuse_loop_cfg_set_clone_fd(lc, (unsigned)o.clone_fd);
	fuse_loop_cfg_set_max_threads(lc, o.max_threads);
	fuse_loop_cfg_set_idle_threads(lc, 8);
	pthread_t watcher;
	int watching = pthread_create(&watcher, NULL, mount_watcher, &fs) == 0;
	ret = fuse_session_loop_mt(se, lc);
	/* libfuse returns the signal that ended the loop (SIGTERM from a
	 * service manager, Ctrl-C in the foreground): a normal end. */
	if (ret == SIGTERM || ret == SIGINT || ret == SIGHUP || fuse_session_exited(se))
		ret = 0;
	fuse_loop_cfg_destroy(lc);
	if (watching) {
		pthread_cancel(watcher);
		pthread_join(watcher, NULL);
	}
	seer_ctx_close(&ctx);
out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out_ctx:
	free(ctx.mountpoint);
	free(ctx.state_dir);
	free(ctx.start_cwd);
	free(ctx.agent_path);
	free(ctx.providers_file);
	free(ctx.model_cache);
	free(o.state);
	free(o.agent);
	free(o.providers);
	free(o.model_cache);
	free(o.idmap_user);
	free(o.source);
	free(o.mountpoint);
	fuse_opt_free_args(&args);
	/* Not exit(): the ssh provider's per-host threads live as long as the
	 * process, and exit's handlers (OpenSSL's cleanup under libssh2) would
	 * free what such a thread may be using at that moment (a crash at exit
	 * was seen). Everything of ours is stopped and written by now. */
	fflush(NULL);
	_exit(ret ? 1 : 0);
}
