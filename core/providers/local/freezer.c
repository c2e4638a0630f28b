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

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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
	static const struct {
		const char *base, *probe;
		int v2;
	} kinds[] = {
		{"/sys/fs/cgroup", "/sys/fs/cgroup/cgroup.controllers", 1},
		{"/sys/fs/cgroup/unified", "/sys/fs/cgroup/unified/cgroup.procs", 1},
		{"/sys/fs/cgroup/freezer", "/sys/fs/cgroup/freezer/cgroup.procs", 0},
	};
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
