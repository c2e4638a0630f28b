/*
 * ctx.c - open the state directory (one daemon at a time), load the
 * sandboxes, start the timeout timer; and shut all of it down again.
 */
#include "core/ctx.h"
#include "core/sandbox.h"
#include "core/provider.h"
#include "core/jobs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

void sandbox_recover_all(struct seer_ctx *ctx);

/* Under root the sandboxes' ids are an unprivileged range (core/lib/idmap.h),
 * and bubblewrap, running as that range's root, must reach its sources in
 * the state directory: the directories on the way are made searchable by
 * the range's group only (root:GID 0710, as Docker's remapped root is), and
 * every parent above them, and above the model cache, must be searchable by
 * others (as /var/lib/docker's must be for userns-remap). */
static int share_state_dirs(struct seer_ctx *ctx, char *err, size_t n)
{
	char p[4096];
	const char *sub[] = {"", "/sandboxes", "/empty", "/models", NULL};
	for (int i = 0; sub[i]; i++) {
		snprintf(p, sizeof(p), "%s%s", ctx->state_dir, sub[i]);
		if (chown(p, 0, ctx->ids.gid) < 0 || chmod(p, 0710) < 0) {
			int r = -errno;
			snprintf(err, n, "cannot give %s to the sandboxes' group %u: %s", p, (unsigned)ctx->ids.gid,
				 strerror(-r));
			return r;
		}
	}
	/* The agent may be anywhere (a build tree under a 0700 home): the
	 * sandboxes get a copy of it in the state directory. */
	char *agent = NULL;
	size_t alen = 0;
	snprintf(p, sizeof(p), "%s/agent", ctx->state_dir);
	int r = ctx->agent_path ? read_file(ctx->agent_path, 256u << 20, &agent, &alen) : -ENOENT;
	if (r == 0)
		r = write_file_atomic(p, agent, alen, 0755);
	free(agent);
	if (r < 0 && r != -ENOENT) {
		snprintf(err, n, "cannot copy the sandbox init %s to %s: %s", ctx->agent_path, p, strerror(-r));
		return r;
	}
	if (r == 0) {   /* else local_check says the agent is missing */
		free(ctx->agent_path);
		ctx->agent_path = xstrdup(p);
	}
	const char *dirs[] = {ctx->state_dir, ctx->model_cache, NULL};
	for (int d = 0; dirs[d]; d++) {
		snprintf(p, sizeof(p), "%s", dirs[d]);
		for (char *slash = strrchr(p, '/'); slash && slash != p; slash = strrchr(p, '/')) {
			*slash = '\0';
			struct stat st;
			if (stat(p, &st) == 0 && !(st.st_mode & S_IXOTH) &&
			    !(st.st_gid == ctx->ids.gid && (st.st_mode & S_IXGRP))) {
				snprintf(err, n, "%s is under %s, which only its owner may enter (mode %04o), so the "
					 "sandboxes (host ids %u and up) cannot reach it; chmod o+x %s, or use a path "
					 "others may enter (the default state directory /var/lib/seerfs)",
					 dirs[d], p, (unsigned)(st.st_mode & 07777), (unsigned)ctx->ids.uid, p);
				return -EACCES;
			}
		}
	}
	return 0;
}

int seer_ctx_open(struct seer_ctx *ctx, char *err, size_t n)
{
	char p[4096];
	int r = mkdir_p(ctx->state_dir, 0700);
	if (r < 0) {
		snprintf(err, n, "cannot create the state directory %s: %s", ctx->state_dir, strerror(-r));
		return r;
	}
	snprintf(p, sizeof(p), "%s/lock", ctx->state_dir);
	ctx->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (ctx->lock_fd < 0) {
		r = -errno;
		snprintf(err, n, "cannot open %s: %s", p, strerror(-r));
		return r;
	}
	if (flock(ctx->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		r = -errno;
		char *holder = NULL;
		read_file(p, 4096, &holder, NULL);
		if (holder)
			holder[strcspn(holder, "\n")] = '\0';
		snprintf(err, n, "the state directory %s is in use by another seerfs (%s); unmount that one first, or pick another with -o state=DIR",
			 ctx->state_dir, holder && *holder ? holder : "pid unknown");
		free(holder);
		close(ctx->lock_fd);
		ctx->lock_fd = -1;
		return r == -EWOULDBLOCK ? -EBUSY : r;
	}
	char who[4200];
	int len = snprintf(who, sizeof(who), "pid %d, mounted at %s\n", (int)getpid(), ctx->mountpoint);
	if (ftruncate(ctx->lock_fd, 0) < 0 || pwrite(ctx->lock_fd, who, (size_t)len, 0) < 0) {
		/* the lock itself is what counts; the text only helps people */
	}
	const char *sub[] = {"sandboxes", "snapshots", "models", "empty", NULL};
	for (int i = 0; sub[i]; i++) {
		snprintf(p, sizeof(p), "%s/%s", ctx->state_dir, sub[i]);
		if ((r = mkdir_p(p, 0700)) < 0) {
			snprintf(err, n, "cannot create %s: %s", p, strerror(-r));
			return r;
		}
	}
	if ((r = seer_idmap_init(&ctx->ids, ctx->uid, ctx->gid, ctx->idmap_user, p, sizeof(p))) < 0) {
		snprintf(err, n, "cannot map the sandboxes' ids: %s", p);
		return r;
	}
	if (ctx->ids.count > 1 && (r = share_state_dirs(ctx, err, n)) < 0)
		return r;
	pthread_mutex_init(&ctx->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_cond_init(&ctx->timer_cond, &ca);
	pthread_condattr_destroy(&ca);
	if ((r = seer_providers_init(ctx, err, n)) < 0)
		return r;
	r = sandbox_load_all(ctx);
	if (r < 0) {
		snprintf(err, n, "cannot read the sandboxes in %s: %s", ctx->state_dir, strerror(-r));
		return r;
	}
	return 0;
}

int seer_ctx_start(struct seer_ctx *ctx)
{
	sandbox_recover_all(ctx);
	return -pthread_create(&ctx->timer, NULL, sandbox_timer_main, ctx);
}

void seer_ctx_stop_processes(struct seer_ctx *ctx)
{
	pthread_mutex_lock(&ctx->lock);
	size_t n = 0;
	for (struct sandbox *sb = ctx->sandboxes; sb; sb = sb->next)
		n++;
	struct sandbox **all = calloc(n + 1, sizeof(*all));
	n = 0;
	for (struct sandbox *sb = ctx->sandboxes; all && sb; sb = sb->next) {
		all[n++] = sb;
		sb->refs++;
	}
	pthread_mutex_unlock(&ctx->lock);
	for (size_t i = 0; i < n; i++) {
		if (all[i]->prov)
			all[i]->prov->stop(all[i]);
		sandbox_put(all[i]);
	}
	free(all);
}

void seer_ctx_close(struct seer_ctx *ctx)
{
	pthread_mutex_lock(&ctx->lock);
	ctx->stopping = 1;
	pthread_cond_broadcast(&ctx->timer_cond);
	pthread_mutex_unlock(&ctx->lock);
	pthread_join(ctx->timer, NULL);
	/* Stop every sandbox's processes; states stay as they are on disk so
	 * that a remount brings running sandboxes back. */
	for (;;) {
		pthread_mutex_lock(&ctx->lock);
		struct sandbox *sb = ctx->sandboxes;
		if (sb)
			ctx->sandboxes = sb->next;
		pthread_mutex_unlock(&ctx->lock);
		if (!sb)
			break;
		jobs_shutdown(sb);
		if (sb->prov)
			sb->prov->stop(sb);
		jobs_close_all(sb);   /* jobs reference their sandbox */
		sandbox_put(sb);
	}
	seer_providers_cleanup(ctx);
	if (ctx->lock_fd >= 0)
		close(ctx->lock_fd);
}
