/*
 * test_walk.c - the fd-based tree walk (core/lib/walk.c) on temporary trees:
 * a directory swapped for a link is never followed (by the walk, by rm -rf
 * even while a thread keeps swapping), and walk_shift_owner moves a tree's
 * low ids into a range, keeping setuid bits and never touching what a link
 * points to.
 */
#include "core/lib/walk.h"
#include "core/lib/util.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char base[256];

static void path_of(char *out, size_t n, const char *rel)
{
	snprintf(out, n, "%s/%s", base, rel);
}

static void mk(const char *rel, mode_t mode)
{
	char p[512];
	path_of(p, sizeof(p), rel);
	CHECK(mkdir(p, mode) == 0, "mkdir %s: %s", p, strerror(errno));
}

static void put(const char *rel, const char *text)
{
	char p[512];
	path_of(p, sizeof(p), rel);
	CHECK(write_file_replace(p, text, strlen(text), 0644) == 0, "write %s", p);
}

static int exists(const char *rel)
{
	char p[512];
	struct stat st;
	path_of(p, sizeof(p), rel);
	return lstat(p, &st) == 0;
}

static void ln(const char *target, const char *rel)
{
	char p[512];
	path_of(p, sizeof(p), rel);
	CHECK(symlink(target, p) == 0, "symlink %s: %s", p, strerror(errno));
}

/* ---- a walk that records what it saw ---- */

struct seen {
	int files, links, dirs, outside;
};

static int saw_dir(void *ud, void *at, const struct walk_ent *e, void **child)
{
	(void)at, (void)child;
	((struct seen *)ud)->dirs++;
	return 0;
}

static int saw_file(void *ud, void *at, const struct walk_ent *e)
{
	(void)at;
	struct seen *s = ud;
	s->files++;
	char buf[64] = "";
	if (e->fd >= 0 && pread(e->fd, buf, sizeof(buf) - 1, 0) > 0 && has(buf, "MARKER"))
		s->outside++;
	return 0;
}

static int saw_link(void *ud, void *at, const struct walk_ent *e)
{
	(void)at;
	struct seen *s = ud;
	s->links++;
	CHECK(e->target && !strcmp(e->target, "../outside"), "link target %s", nn(e->target));
	return 0;
}

static void test_links_not_followed(void)
{
	mk("outside", 0755);
	put("outside/secret", "MARKER");
	mk("tree", 0755);
	mk("tree/d", 0755);
	put("tree/d/f", "data");
	ln("../outside", "tree/l");
	char p[512];
	path_of(p, sizeof(p), "tree");
	int fd = open(p, O_RDONLY | O_DIRECTORY);
	struct seen s = {0};
	struct walk_ops o = {.dir = saw_dir, .file = saw_file, .link = saw_link, .ud = &s};
	CHECK(walk_tree(fd, &o, NULL) == 0, "walk");
	CHECK(s.files == 1 && s.links == 1 && s.dirs == 1 && s.outside == 0, "saw %d files %d links %d dirs, %d outside",
	      s.files, s.links, s.dirs, s.outside);
	/* With WALK_FOLLOW (the model cache) the link is a directory. */
	memset(&s, 0, sizeof(s));
	o.flags = WALK_FOLLOW;
	CHECK(walk_tree(fd, &o, NULL) == 0, "walk follow");
	CHECK(s.files == 2 && s.links == 0 && s.dirs == 2 && s.outside == 1, "follow: %d files %d links %d dirs", s.files,
	      s.links, s.dirs);
	close(fd);
	CHECK(walk_rm(p) == 0 && !exists("tree"), "rm tree");
	CHECK(exists("outside/secret"), "the link's target survives rm");
}

/* The open after the lstat sees the swap, whichever way it went. */
static void test_swap_detected(void)
{
	mk("t", 0755);
	mk("t/d", 0755);
	mk("t/other", 0755);
	char p[512];
	path_of(p, sizeof(p), "t");
	int fd = open(p, O_RDONLY | O_DIRECTORY);
	struct stat st;
	CHECK(fstatat(fd, "d", &st, AT_SYMLINK_NOFOLLOW) == 0, "lstat d");
	int d = walk_open_dir(fd, "d", 0, &st);
	CHECK(d >= 0, "unchanged: %d", d);
	if (d >= 0)
		close(d);
	/* a link to / in its place */
	CHECK(renameat(fd, "d", fd, "d.away") == 0 && symlinkat("/", fd, "d") == 0, "swap for a link");
	CHECK(walk_open_dir(fd, "d", 0, &st) == -ESTALE, "a link where the directory was is a swap");
	CHECK(walk_open_dir(fd, "d", WALK_ONE_FS, NULL) == -ESTALE, "a link is never opened");
	/* another directory in its place */
	CHECK(unlinkat(fd, "d", 0) == 0 && renameat(fd, "other", fd, "d") == 0, "swap for a directory");
	CHECK(walk_open_dir(fd, "d", 0, &st) == -ESTALE, "another directory is a swap");
	close(fd);
	CHECK(walk_rm(p) == 0 && !exists("t"), "rm t");
}

/* rm -rf of unreadable and unwritable directories. */
static void test_rm_modes(void)
{
	mk("m", 0755);
	mk("m/a", 0755);
	put("m/a/f", "x");
	mk("m/a/b", 0755);
	put("m/a/b/g", "y");
	char p[512];
	path_of(p, sizeof(p), "m/a/b");
	chmod(p, 0);
	path_of(p, sizeof(p), "m/a");
	chmod(p, 0500);
	path_of(p, sizeof(p), "m");
	CHECK(walk_rm(p) == 0, "rm m");
	CHECK(!exists("m"), "m is gone");
	CHECK(walk_rm(p) == 0, "rm of nothing is 0");
}

/* ---- rm -rf while a thread keeps swapping a directory for links ---- */

struct swapper {
	int dfd;
	atomic_int stop;
	char target[512];
};

static void *swap_loop(void *arg)
{
	struct swapper *s = arg;
	while (!atomic_load(&s->stop)) {
		mkdirat(s->dfd, "x", 0755);
		renameat(s->dfd, "x", s->dfd, "x.old");
		symlinkat(s->target, s->dfd, "x");
		unlinkat(s->dfd, "x", 0);
		symlinkat("/", s->dfd, "x");
		unlinkat(s->dfd, "x", 0);
		renameat(s->dfd, "x.old", s->dfd, "x");
	}
	return NULL;
}

static void test_rm_race(void)
{
	mk("victim", 0755);
	put("victim/keep", "MARKER");
	int lost = 0, rounds = 200;
	for (int i = 0; i < rounds && !lost; i++) {
		mk("r", 0755);
		for (int j = 0; j < 20; j++) {
			char rel[64];
			snprintf(rel, sizeof(rel), "r/s%d", j);
			mk(rel, 0755);
			snprintf(rel, sizeof(rel), "r/s%d/f", j);
			put(rel, "z");
		}
		mk("r/x", 0755);
		put("r/x/f", "z");
		char p[512];
		path_of(p, sizeof(p), "r");
		struct swapper s = {.dfd = open(p, O_RDONLY | O_DIRECTORY)};
		path_of(s.target, sizeof(s.target), "victim");
		pthread_t t;
		pthread_create(&t, NULL, swap_loop, &s);
		walk_rm(p);   /* may fail while the swapper runs */
		atomic_store(&s.stop, 1);
		pthread_join(t, NULL);
		close(s.dfd);
		lost = !exists("victim/keep");
		walk_rm(p);
	}
	CHECK(!lost, "rm -rf followed a link a thread swapped in and deleted outside the tree");
	CHECK(!exists("r"), "the raced tree is gone in the end");
}

/* ---- walk_shift_owner ---- */

static void owner_is(const char *rel, uid_t u, gid_t g, mode_t mode)
{
	char p[512];
	struct stat st;
	path_of(p, sizeof(p), rel);
	CHECK(lstat(p, &st) == 0, "lstat %s", p);
	CHECK(st.st_uid == u && st.st_gid == g, "%s: owner %u:%u, want %u:%u", rel, (unsigned)st.st_uid,
	      (unsigned)st.st_gid, (unsigned)u, (unsigned)g);
	if (mode)
		CHECK((st.st_mode & 07777) == mode, "%s: mode %o, want %o", rel, st.st_mode & 07777, mode);
}

static void test_shift_owner(void)
{
	struct seer_idmap one = {1000, 1000, 1}, ids = {200000, 300000, SEER_IDMAP_COUNT};
	char p[512], q[512];
	mk("s", 0755);
	path_of(p, sizeof(p), "s");
	int fd = open(p, O_RDONLY | O_DIRECTORY);
	CHECK(walk_shift_owner(fd, &one) == -EINVAL, "a one-id map is refused");
	if (geteuid() != 0) {
		printf("test_walk: walk_shift_owner's chowns skipped: they need root (run as %u)\n", (unsigned)geteuid());
		close(fd);
		walk_rm(p);
		return;
	}
	mk("s/d", 02775);
	path_of(q, sizeof(q), "s/d");
	chmod(q, 02775);
	put("s/d/suid", "#!/bin/sh\n");
	path_of(q, sizeof(q), "s/d/suid");
	chmod(q, 06755);
	put("s/low", "x");
	path_of(q, sizeof(q), "s/low");
	chown(q, 5, 7);
	put("s/high", "x");
	path_of(q, sizeof(q), "s/high");
	chown(q, 70000, 70001);
	put("outside-file", "MARKER");
	path_of(q, sizeof(q), "outside-file");
	chown(q, 0, 0);
	ln("../outside-file", "s/link");
	path_of(q, sizeof(q), "s/fifo");
	mkfifo(q, 04644);
	chmod(q, 04644);
	CHECK(walk_shift_owner(fd, &ids) == 0, "shift");
	owner_is("s", 200000, 300000, 0755);
	owner_is("s/d", 200000, 300000, 02775);
	owner_is("s/d/suid", 200000, 300000, 06755);
	owner_is("s/low", 200005, 300007, 0);
	owner_is("s/high", 70000, 70001, 0);
	owner_is("s/link", 200000, 300000, 0);
	owner_is("s/fifo", 200000, 300000, 04644);
	owner_is("outside-file", 0, 0, 0644);
	/* Shifted ids are above the range: a second pass changes nothing. */
	CHECK(walk_shift_owner(fd, &ids) == 0, "shift again");
	owner_is("s/low", 200005, 300007, 0);
	owner_is("s/d/suid", 200000, 300000, 06755);
	close(fd);
	CHECK(walk_rm(p) == 0, "rm s");
}

int main(void)
{
	snprintf(base, sizeof(base), "%s/seerfs-test-walk-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(base)) {
		perror("mkdtemp");
		return 1;
	}
	test_links_not_followed();
	test_swap_detected();
	test_rm_modes();
	test_rm_race();
	test_shift_owner();
	CHECK(walk_rm(base) == 0, "rm base");
	return check_done("test_walk");
}
