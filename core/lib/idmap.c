/*
 * idmap.c - the host ids of a sandbox's ids (see idmap.h for why a root
 * seerfs uses a subordinate range).
 *
 * The range is read from /etc/subuid and /etc/subgid ("name:start:count",
 * or the uid in place of the name). A missing user is created as a system
 * user without a home or shell, and a missing range is the next free
 * 65536-aligned block above every range in either file (at least 100000):
 * the same choice Docker makes for its `dockremap` user.
 */
#include "core/lib/idmap.h"
#include "core/lib/util.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *const subid_files[2] = {"/etc/subuid", "/etc/subgid"};

/* Finds owner's first range of at least SEER_IDMAP_COUNT ids in path
 * (*start), and the end of the highest range of anyone (*top). */
static int scan_subids(const char *path, const char *owner, uid_t owner_uid, unsigned long *start,
		       unsigned long *top)
{
	FILE *f = fopen(path, "re");
	*start = 0;
	if (!f)
		return errno == ENOENT ? 0 : -errno;
	char line[512], num[32];
	snprintf(num, sizeof(num), "%u", (unsigned)owner_uid);
	while (fgets(line, sizeof(line), f)) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c1 = '\0';
		unsigned long s = strtoul(c1 + 1, NULL, 10), n = strtoul(c2 + 1, NULL, 10);
		if (s + n > *top)
			*top = s + n;
		if (!*start && n >= SEER_IDMAP_COUNT && (!strcmp(line, owner) || !strcmp(line, num)))
			*start = s;
	}
	fclose(f);
	return 0;
}

static int run_tool(char *const argv[], char *err, size_t n)
{
	int st = run_capture(argv, NULL, 0);
	if (st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	snprintf(err, n, "%s failed (%s %d): create the user and its ranges by hand, e.g. "
		 "useradd --system --no-create-home --shell /usr/sbin/nologin " SEER_IDMAP_USER
		 " && usermod --add-subuids 100000-165535 --add-subgids 100000-165535 " SEER_IDMAP_USER,
		 argv[0], st < 0 ? "error" : "status", st < 0 ? -st : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
	return -EIO;
}

/* Creates owner (a system user) and gives it a free range in both files. */
static int create_range(const char *owner, char *err, size_t n)
{
	if (!getpwnam(owner)) {
		char *ua[] = {"/usr/sbin/useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
			      "--shell", "/usr/sbin/nologin", (char *)owner, NULL};
		int r = run_tool(ua, err, n);
		if (r < 0)
			return r;
	}
	unsigned long top = 100000, s;
	for (int i = 0; i < 2; i++) {
		int r = scan_subids(subid_files[i], owner, (uid_t)-1, &s, &top);
		if (r < 0) {
			snprintf(err, n, "cannot read %s: %s", subid_files[i], strerror(-r));
			return r;
		}
	}
	top = (top + SEER_IDMAP_COUNT - 1) / SEER_IDMAP_COUNT * SEER_IDMAP_COUNT;
	char range[64];
	snprintf(range, sizeof(range), "%lu-%lu", top, top + SEER_IDMAP_COUNT - 1);
	char *um[] = {"/usr/sbin/usermod", "--add-subuids", range, "--add-subgids", range, (char *)owner, NULL};
	return run_tool(um, err, n);
}

static int find_range(const char *owner, unsigned long start[2], char *err, size_t n)
{
	struct passwd *pw = getpwnam(owner);
	uid_t ouid = pw ? pw->pw_uid : (uid_t)-1;
	for (int i = 0; i < 2; i++) {
		unsigned long top = 0;
		int r = scan_subids(subid_files[i], owner, ouid, &start[i], &top);
		if (r < 0) {
			snprintf(err, n, "cannot read %s: %s", subid_files[i], strerror(-r));
			return r;
		}
	}
	return 0;
}

int seer_idmap_init(struct seer_idmap *m, uid_t uid, gid_t gid, const char *owner, char *err, size_t n)
{
	if (uid != 0) {
		*m = (struct seer_idmap){.uid = uid, .gid = gid, .count = 1};
		return 0;
	}
	if (!owner)
		owner = SEER_IDMAP_USER;
	unsigned long start[2];
	int r = find_range(owner, start, err, n);
	if (r == 0 && (!start[0] || !start[1])) {
		if ((r = create_range(owner, err, n)) == 0)
			r = find_range(owner, start, err, n);
		if (r == 0 && (!start[0] || !start[1])) {
			snprintf(err, n, "user %s has no range of %u ids in /etc/subuid and /etc/subgid; add one "
				 "(usermod --add-subuids 100000-165535 --add-subgids 100000-165535 %s)",
				 owner, SEER_IDMAP_COUNT, owner);
			r = -ENOENT;
		}
	}
	if (r < 0)
		return r;
	*m = (struct seer_idmap){.uid = (uid_t)start[0], .gid = (gid_t)start[1], .count = SEER_IDMAP_COUNT};
	return 0;
}

uid_t seer_idmap_host_uid(const struct seer_idmap *m, uid_t inside)
{
	return inside < m->count ? m->uid + inside : (uid_t)-1;
}

gid_t seer_idmap_host_gid(const struct seer_idmap *m, gid_t inside)
{
	return inside < m->count ? m->gid + inside : (gid_t)-1;
}

uid_t seer_idmap_sb_uid(const struct seer_idmap *m, uid_t host)
{
	return host >= m->uid && host - m->uid < m->count ? host - m->uid : SEER_ID_NOBODY;
}

gid_t seer_idmap_sb_gid(const struct seer_idmap *m, gid_t host)
{
	return host >= m->gid && host - m->gid < m->count ? host - m->gid : SEER_ID_NOBODY;
}

void seer_idmap_text(const struct seer_idmap *m, int gid, char *buf, size_t len)
{
	snprintf(buf, len, "0 %u %u\n", gid ? (unsigned)m->gid : (unsigned)m->uid, (unsigned)m->count);
}
