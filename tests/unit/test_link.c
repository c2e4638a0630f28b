/*
 * test_link.c - the symlink confinement rule of root/ (fs/root/link.c):
 * texts that stay below the sandbox's "/" come back unchanged, absolute
 * ones and ones that climb too far are rewritten to stay inside root/, a
 * ".." after a name is never left to the kernel, an unsure depth gives an
 * absolute path under root/, and long texts fail cleanly.
 */
#include "fs/root/link.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>

/* The text readlink shows for t at an exact depth ("" and the error in
 * *r when it fails). */
static const char *at(const char *t, int depth, int *r)
{
	static char out[PATH_MAX];
	struct link_place pl = {.depth = depth, .exact = 1};
	*r = link_confine(t, &pl, out, sizeof(out));
	return *r ? "" : out;
}

#define SAME(t, depth, want)                                                              \
	do {                                                                              \
		int r_;                                                                   \
		const char *got_ = at(t, depth, &r_);                                    \
		CHECK(r_ == 0 && !strcmp(got_, want), "%s at depth %d: got \"%s\" (%d), want \"%s\"", \
		      t, depth, got_, r_, want);                                          \
	} while (0)

static void unchanged(void)
{
	SAME("a/b/c", 0, "a/b/c");
	SAME("./a//b/", 0, "./a//b/");
	SAME("", 0, "");
	SAME("../x", 1, "../x");
	SAME("../../x/./y", 2, "../../x/./y");
	SAME("../../..", 5, "../../..");
	/* The depth is not needed for texts that only go down. */
	CHECK(!link_needs_depth("a/b/.../..c/c.."), "names that only look like ..");
	CHECK(link_needs_depth("a/.."), "an inner ..");
	CHECK(link_needs_depth("/a"), "an absolute text");
}

static void absolute(void)
{
	SAME("/etc/passwd", 0, "etc/passwd");
	SAME("/etc/passwd", 3, "../../../etc/passwd");
	SAME("/", 0, ".");
	SAME("/", 2, "../..");
	SAME("/usr/lib/", 1, "../usr/lib/");
	SAME("//etc/./x/../passwd", 1, "../etc/passwd");
	/* ".." at "/" stays at "/", as in the sandbox. */
	SAME("/../../../../etc/shadow", 2, "../../etc/shadow");
	SAME("/..", 1, "..");
}

static void climbing(void)
{
	SAME("../../../../../../etc/passwd", 2, "../../etc/passwd");
	SAME("..", 0, ".");
	SAME("../", 0, "./");
	SAME("../..", 1, "..");
	SAME("../../", 1, "../");
	/* A ".." after a name: "a" may be a link to "." or deeper, so the
	 * kernel must not see "a/..", even where it reads as staying below. */
	SAME("a/../b", 0, "b");
	SAME("a/../../x", 2, "../x");
	SAME("a/a/a/../../../../x", 1, "../x");
	SAME("a/a/a/../../../../../../x", 1, "../x");
	SAME("../a/b/../../../x", 3, "../../x");
	SAME("a/..", 0, ".");
	SAME("x/../../..", 3, "../..");
}

static void deep(void)
{
	/* 300 levels up from depth 250: 250 "../", then the name. */
	char t[1024] = "", want[1024] = "";
	for (int i = 0; i < 300; i++)
		strcat(t, "../");
	strcat(t, "etc");
	for (int i = 0; i < 250; i++)
		strcat(want, "../");
	strcat(want, "etc");
	SAME(t, 250, want);
	/* A chain of 1000 names and 1000 ".." folds to nothing. */
	char *chain = malloc(1000 * 2 + 1001 * 3 + 8);
	chain[0] = '\0';
	for (int i = 0; i < 1000; i++)
		strcat(chain, "d/");
	for (int i = 0; i < 1001; i++)
		strcat(chain, "../");
	strcat(chain, "z");
	SAME(chain, 1, "../z");
	SAME(chain, 0, "z");
	free(chain);
}

static void long_paths(void)
{
	char out[16];
	struct link_place pl = {.depth = 1, .exact = 1};
	CHECK(link_confine("abcdefghijklmnopqrstuvwxyz", &pl, out, sizeof(out)) == -ENAMETOOLONG,
	      "an unchanged text longer than the buffer");
	CHECK(link_confine("abcdefghijklmno", &pl, out, sizeof(out)) == 0 && !strcmp(out, "abcdefghijklmno"),
	      "15 bytes fit in 16");
	CHECK(link_confine("/abcdefghijklmnop", &pl, out, sizeof(out)) == -ENAMETOOLONG,
	      "a rewritten text longer than the buffer");
	pl.depth = 100;
	CHECK(link_confine("/x", &pl, out, sizeof(out)) == -ENAMETOOLONG, "too many levels for the buffer");
	/* A text far longer than PATH_MAX that folds to a short one. */
	char *t = malloc(3 * PATH_MAX);
	t[0] = '\0';
	while (strlen(t) < 2 * PATH_MAX)
		strcat(t, "/aaaaaaa/..");
	strcat(t, "/ok");
	char big[PATH_MAX];
	pl.depth = 2;
	CHECK(link_confine(t, &pl, big, sizeof(big)) == 0 && !strcmp(big, "../../ok"), "got %s", big);
	free(t);
}

static void unsure_depth(void)
{
	char out[PATH_MAX];
	struct link_place pl = {.depth = 1, .exact = 0, .root_path = "/mnt/seer/sb/root"};
	CHECK(link_confine("/etc/passwd", &pl, out, sizeof(out)) == 0 && !strcmp(out, "/mnt/seer/sb/root/etc/passwd"),
	      "absolute under root_path: %s", out);
	CHECK(link_confine("/", &pl, out, sizeof(out)) == 0 && !strcmp(out, "/mnt/seer/sb/root"), "/: %s", out);
	/* Unchanged while it stays within the lower bound. */
	CHECK(link_confine("../x", &pl, out, sizeof(out)) == 0 && !strcmp(out, "../x"), "../x: %s", out);
	/* A relative text that needs rewriting wants the link's directory. */
	CHECK(link_confine("../../x", &pl, out, sizeof(out)) == LINK_NEED_DIR, "asks for dir");
	pl.dir = "a/b/c/";
	CHECK(link_confine("../../x/", &pl, out, sizeof(out)) == 0 && !strcmp(out, "/mnt/seer/sb/root/a/x/"),
	      "folded onto dir: %s", out);
	pl.dir = "a";
	CHECK(link_confine("../../../../etc", &pl, out, sizeof(out)) == 0 && !strcmp(out, "/mnt/seer/sb/root/etc"),
	      "clamped at root/: %s", out);
	pl.dir = "";
	CHECK(link_confine("q/../../x", &pl, out, sizeof(out)) == 0 && !strcmp(out, "/mnt/seer/sb/root/x"),
	      "a lost chain counts from root/: %s", out);
	/* Without root_path an unsure depth gives relative text bounded by
	 * the lower bound. */
	pl.root_path = NULL;
	pl.dir = NULL;
	CHECK(link_confine("../../x", &pl, out, sizeof(out)) == 0 && !strcmp(out, "../x"), "no root_path: %s", out);
	pl.depth = -3;
	CHECK(link_confine("../x", &pl, out, sizeof(out)) == 0 && !strcmp(out, "x"), "negative depth is 0: %s", out);
}

int main(void)
{
	unchanged();
	absolute();
	climbing();
	deep();
	long_paths();
	unsure_depth();
	return check_done("test_link");
}
