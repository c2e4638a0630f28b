/*
 * fuzz_link.c - libFuzzer target for fs/root/link.c: link_confine on
 * arbitrary link texts and places.
 *
 * Input: byte 0 the depth (0..63), byte 1 flags (1: exact, 2: root_path
 * known), byte 2 the components of the link's directory (0..15, used when
 * the rule asks for it), byte 3 the output buffer (0: PATH_MAX, else 1..255
 * bytes), the rest the link's text (up to the first NUL).
 *
 * Invariants checked (a violation aborts, which libFuzzer reports):
 *   - the result is 0, -ENAMETOOLONG or -ENOMEM, or LINK_NEED_DIR only
 *     when no directory was given, and a success is a NUL-terminated
 *     string inside the buffer;
 *   - it never leaves the sandbox's root: an absolute result is root_path
 *     plus names with no ".." (and only with root_path, depth not exact);
 *     a relative one is at most depth ".." first and then names, with no
 *     ".." after a name (a name may be a symlink: "a/.." is not "");
 *   - with an exact depth, or as an absolute path, it names what the text
 *     names in the sandbox, read lexically with ".." at "/" staying there;
 *   - texts that only go down come back unchanged.
 *
 * Run:    build-fuzz/tests/fuzz_link tests/fuzz/corpus/link -max_total_time=20
 */
#include "fs/root/link.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUIRE(c)                                                                   \
	do {                                                                         \
		if (!(c)) {                                                          \
			fprintf(stderr, "fuzz_link: invariant failed: %s (line %d)\n", #c, __LINE__); \
			abort();                                                     \
		}                                                                    \
	} while (0)

#define ROOT_PATH "/mnt/seer/sb/root"
#define MAXC 4096

/* A path as components below the sandbox's "/". */
struct comps {
	const char *s[MAXC];
	size_t len[MAXC];
	int n;
};

/* Walks text from c (the components so far), ".." at the top staying
 * there; 0, or -1 when there are too many components to follow. */
static int walk(struct comps *c, const char *text)
{
	for (const char *s = text; *s;) {
		size_t l = strcspn(s, "/");
		if (l == 2 && s[0] == '.' && s[1] == '.') {
			if (c->n)
				c->n--;
		} else if (l && !(l == 1 && s[0] == '.')) {
			if (c->n == MAXC)
				return -1;
			c->s[c->n] = s;
			c->len[c->n++] = l;
		}
		s += l;
		s += *s == '/';
	}
	return 0;
}

static int same(const struct comps *a, const struct comps *b)
{
	if (a->n != b->n)
		return 0;
	for (int i = 0; i < a->n; i++)
		if (a->len[i] != b->len[i] || memcmp(a->s[i], b->s[i], a->len[i]))
			return 0;
	return 1;
}

/* Leading ".." of a relative result, or -1 when a ".." follows a name. */
static int leading_ups(const char *s)
{
	int ups = 0, named = 0;
	while (*s) {
		size_t l = strcspn(s, "/");
		if (l == 2 && s[0] == '.' && s[1] == '.') {
			if (named)
				return -1;
			ups++;
		} else if (l && !(l == 1 && s[0] == '.')) {
			named = 1;
		}
		s += l;
		s += *s == '/';
	}
	return ups;
}

static const char dirnames[] = "d0/d1/d2/d3/d4/d5/d6/d7/d8/d9/da/db/dc/dd/de/df/";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 4)
		return 0;
	int depth = data[0] & 63;
	int exact = data[1] & 1, has_root = data[1] & 2;
	int ndir = data[2] & 15;
	size_t outsz = data[3] ? data[3] : PATH_MAX;
	size_t tl = strnlen((const char *)data + 4, size - 4);
	char *text = malloc(tl + 1);
	memcpy(text, data + 4, tl);
	text[tl] = '\0';
	/* With an exact depth the directory has that many components. */
	char dir[sizeof(dirnames)];
	int dn = exact ? (depth < 16 ? depth : -1) : ndir;
	if (dn >= 0) {
		memcpy(dir, dirnames, (size_t)dn * 3);
		dir[dn * 3] = '\0';
	}

	char *out = malloc(outsz + 1);
	out[outsz] = 'Z';
	struct link_place pl = {.depth = depth, .exact = exact, .root_path = has_root ? ROOT_PATH : NULL};
	int r = link_confine(text, &pl, out, outsz);
	if (r == LINK_NEED_DIR) {
		REQUIRE(!exact && has_root && text[0] != '/');
		pl.dir = dir;
		r = link_confine(text, &pl, out, outsz);
		REQUIRE(r != LINK_NEED_DIR);
	}
	REQUIRE(r == 0 || r == -ENAMETOOLONG || r == -ENOMEM);
	REQUIRE(out[outsz] == 'Z');
	if (r == 0) {
		REQUIRE(memchr(out, '\0', outsz) != NULL);
		if (!link_needs_depth(text))
			REQUIRE(!strcmp(out, text));
		struct comps want = {0}, got = {0};
		int ok = walk(&want, text[0] == '/' || dn < 0 ? "" : dir) == 0 && walk(&want, text) == 0;
		if (out[0] == '/') {
			/* Only under root/, only where the depth is unsure. */
			size_t rl = strlen(ROOT_PATH);
			REQUIRE(has_root && !exact);
			REQUIRE(!strncmp(out, ROOT_PATH, rl) && (out[rl] == '\0' || out[rl] == '/'));
			REQUIRE(leading_ups(out + rl) == 0);
			if (ok && (text[0] == '/' || dn >= 0) && walk(&got, out + rl) == 0)
				REQUIRE(same(&want, &got));
		} else {
			int ups = leading_ups(out);
			/* Never above root/, never a ".." the kernel could
			 * resolve through a symlinked name, unless it is the
			 * text itself that goes down only. */
			REQUIRE(ups >= 0 && ups <= depth);
			if (exact && dn >= 0 && ok && walk(&got, dir) == 0 && walk(&got, out) == 0)
				REQUIRE(same(&want, &got));
		}
	}
	free(out);
	free(text);
	return 0;
}
