/*
 * freezer.c - a sandbox's cgroup and its freezer (see freezer.h).
 *
 * Looked for in this order: a pure cgroup v2 hierarchy at /sys/fs/cgroup,
 * the v2 hierarchy of a hybrid host at /sys/fs/cgroup/unified (the freezer
 * is part of every v2 cgroup, no controller needed), v1's freezer
 * controller at /sys/fs/cgroup/freezer. The cgroup is
 * BASE/seerfs-PID/NAME; the forked child moves itself in before it execs
 * bubblewrap, so every process of the sandbox is born inside.
 */
#include "core/providers/local/freezer.h"
#include "core/lib/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const struct {
	const char *base, *probe;
	int v2;
} kinds[] = {
	{"/sys/fs/cgroup", "/sys/fs/cgroup/cgroup.controllers", 1},
	{"/sys/fs/cgroup/unified", "/sys/fs/cgroup/unified/cgroup.procs", 1},
	{"/sys/fs/cgroup/freezer", "/sys/fs/cgroup/freezer/cgroup.procs", 0},
};

static int write_text(const char *dir, const char *file, const char *text)
{
	char p[4096];
	snprintf(p, sizeof(p), "%s/%s", dir, file);
	int fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = write_all(fd, text, strlen(text));
	close(fd);
	return r;
}

int freezer_create(struct seer_freezer *f, int owner, const char *name)
{
	f->dir = NULL;
	for (size_t i = 0; i < ARRAY_SIZE(kinds); i++) {
		if (access(kinds[i].probe, W_OK) < 0)
			continue;
		struct sbuf d = {0};
		sbuf_printf(&d, "%s/seerfs-%d", kinds[i].base, owner);
		if (mkdir(d.data, 0755) < 0 && errno != EEXIST) {
			sbuf_free(&d);
			continue;
		}
		sbuf_printf(&d, "/%s", name);
		if (mkdir(d.data, 0755) < 0 && errno != EEXIST) {
			sbuf_free(&d);
			continue;
		}
		f->dir = d.data;
		f->v2 = kinds[i].v2;
		return 0;
	}
	return -ENOENT;
}

/* Whether every task is frozen: v2's cgroup.events "frozen 1", v1's
 * freezer.state "FROZEN" (it says FREEZING while some are not). */
static int is_frozen(const struct seer_freezer *f)
{
	char p[4096], *t = NULL;
	snprintf(p, sizeof(p), "%s/%s", f->dir, f->v2 ? "cgroup.events" : "freezer.state");
	if (read_file(p, 4096, &t, NULL) < 0)
		return 0;
	int frozen = f->v2 ? strstr(t, "frozen 1") != NULL : !strncmp(t, "FROZEN", 6);
	free(t);
	return frozen;
}

int freezer_set(const struct seer_freezer *f, int frozen, double timeout_s)
{
	const char *file = f->v2 ? "cgroup.freeze" : "freezer.state";
	int r = write_text(f->dir, file, frozen ? (f->v2 ? "1" : "FROZEN") : (f->v2 ? "0" : "THAWED"));
	if (r < 0 || !frozen)
		return r;
	double end = mono_s() + timeout_s;
	while (!is_frozen(f)) {
		if (mono_s() > end) {
			write_text(f->dir, file, f->v2 ? "0" : "THAWED");
			return -ETIMEDOUT;
		}
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	return 0;
}

void freezer_remove(struct seer_freezer *f)
{
	if (!f->dir)
		return;
	/* A cgroup is removable once its last task has been reaped. */
	for (int i = 0; i < 100 && rmdir(f->dir) < 0 && errno == EBUSY; i++) {
		struct timespec ts = {0, 10000000};
		nanosleep(&ts, NULL);
	}
	char *slash = strrchr(f->dir, '/');
	*slash = '\0';
	rmdir(f->dir);   /* the daemon's, once its last sandbox's is gone */
	free(f->dir);
	f->dir = NULL;
}

/* Whether pid is a live seerfs (a reused pid of another program is not). */
static int seerfs_alive(long pid)
{
	char p[64], *comm = NULL;
	snprintf(p, sizeof(p), "/proc/%ld/comm", pid);
	if (read_file(p, 64, &comm, NULL) < 0)
		return 0;
	int alive = !strncmp(comm, "seerfs", 6);
	free(comm);
	return alive;
}

/* Kills every task of one stale sandbox cgroup, thaws it (a frozen task
 * dies only once thawed, on v1) and removes it. */
static void reap_one(const char *dir, int v2)
{
	struct sbuf p = {0};
	char *procs = NULL;
	sbuf_printf(&p, "%s/cgroup.procs", dir);
	for (int round = 0; round < 100; round++) {
		if (read_file(p.data, 1 << 20, &procs, NULL) < 0)
			break;
		int any = 0;
		for (char *q = procs, *end; *q; q = end) {
			long pid = strtol(q, &end, 10);
			if (end == q)
				break;   /* not a pid list: leave it */
			if (pid > 0 && kill((pid_t)pid, SIGKILL) == 0)
				any = 1;
			while (*end == '\n')
				end++;
		}
		free(procs);
		procs = NULL;
		struct seer_freezer f = {.dir = (char *)dir, .v2 = v2};
		freezer_set(&f, 0, 0);
		if (!any && rmdir(dir) == 0)
			break;
		struct timespec ts = {0, 10000000};
		nanosleep(&ts, NULL);
	}
	rmdir(dir);
	sbuf_free(&p);
}

void freezer_reap_stale(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(kinds); i++) {
		DIR *d = opendir(kinds[i].base);
		if (!d)
			continue;
		struct dirent *e;
		while ((e = readdir(d))) {
			long pid;
			char *end;
			if (strncmp(e->d_name, "seerfs-", 7))
				continue;
			pid = strtol(e->d_name + 7, &end, 10);
			if (*end || pid <= 0 || seerfs_alive(pid))
				continue;
			struct sbuf top = {0};
			sbuf_printf(&top, "%s/%s", kinds[i].base, e->d_name);
			DIR *sd = opendir(top.data);
			struct dirent *se;
			while (sd && (se = readdir(sd))) {
				if (se->d_type != DT_DIR || se->d_name[0] == '.')
					continue;
				struct sbuf sub = {0};
				sbuf_printf(&sub, "%s/%s", top.data, se->d_name);
				reap_one(sub.data, kinds[i].v2);
				sbuf_free(&sub);
			}
			if (sd)
				closedir(sd);
			rmdir(top.data);
			sbuf_free(&top);
		}
		closedir(d);
	}
}
