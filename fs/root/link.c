/*
 * link.c - the confinement rule for symlinks under root/ (see link.h and
 * docs/rootfs.md): a pure function of a link's text and of where the link
 * stands, shared by the fd backend (pass.c) and the SFTP backend
 * (sftpfs.c).
 *
 * Why a ".." after a name is always rewritten, even when lexically it stays
 * below "/": the kernel resolves "a/.." as the parent of whatever a turns
 * out to be, and a may itself be a symlink (to ".", to a deeper directory),
 * so "a/../../x" can climb one level more than it reads. The rewritten text
 * is some ".." first, never more than the levels known to lie between the
 * link and root/, and then names only, each of which is a lookup through
 * the backend, where a symlink among them is confined in turn.
 */
#include "fs/root/link.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int is_dotdot(const char *s, size_t len)
{
	return len == 2 && s[0] == '.' && s[1] == '.';
}

int link_needs_depth(const char *t)
{
	if (t[0] == '/')
		return 1;
	for (const char *s = t; *s;) {
		size_t len = strcspn(s, "/");
		if (is_dotdot(s, len))
			return 1;
		s += len;
		s += *s == '/';
	}
	return 0;
}

/* Splits t on '/' into comp (in place), dropping "" and "."; folds
 * "name/.." pairs. Returns the number kept; *ups: ".." left over at the
 * front (never with clamp: ".." at the top stays there), *inner: a ".."
 * followed a name. comp holds at least strlen(t) / 2 + 1 entries. */
static int fold_path(char *t, const char **comp, int clamp, int *ups, int *inner)
{
	int nc = 0, seen_name = 0;
	*ups = 0;
	*inner = 0;
	for (char *s = t, *save = NULL, *c; (c = strtok_r(s, "/", &save)); s = NULL) {
		if (!strcmp(c, "."))
			continue;
		if (!strcmp(c, "..")) {
			if (seen_name)
				*inner = 1;
			if (nc > 0)
				nc--;
			else if (!clamp)
				(*ups)++;
			continue;
		}
		seen_name = 1;
		comp[nc++] = c;
	}
	return nc;
}

/* Appends comp to the o bytes already in out; "." for an empty result. */
static int join_path(char *out, size_t outsz, size_t o, const char **comp, int nc, int trailing)
{
	for (int i = 0; i < nc; i++) {
		size_t l = strlen(comp[i]);
		if (o + l + 2 >= outsz)
			return -ENAMETOOLONG;
		if (o && out[o - 1] != '/')
			out[o++] = '/';
		memcpy(out + o, comp[i], l);
		o += l;
	}
	if (!o) {
		if (outsz < 2)
			return -ENAMETOOLONG;
		out[o++] = '.';
	}
	if (trailing && out[o - 1] != '/' && o + 1 < outsz)
		out[o++] = '/';
	out[o] = '\0';
	return 0;
}

static int copy_text(const char *t, char *out, size_t outsz)
{
	size_t tl = strlen(t);
	if (tl >= outsz)
		return -ENAMETOOLONG;
	memcpy(out, t, tl + 1);
	return 0;
}

/* root_path plus the text folded onto dir (the sandbox's "/" for absolute
 * texts), ".." at the top staying at the top. */
static int under_root_path(const char *t, const struct link_place *pl, int trailing, char *out, size_t outsz)
{
	int abs = t[0] == '/';
	const char *dir = abs ? "" : pl->dir;
	size_t fl = strlen(dir) + strlen(t) + 2;
	char *full = malloc(fl);
	const char **fc = full ? calloc(fl / 2 + 2, sizeof(*fc)) : NULL;
	int r = -ENOMEM;
	if (fc) {
		snprintf(full, fl, "%s/%s", dir, t);
		int u, in;
		int fn = fold_path(full, fc, 1, &u, &in);
		size_t w = strlen(pl->root_path);
		if (w >= outsz) {
			r = -ENAMETOOLONG;
		} else {
			memcpy(out, pl->root_path, w + 1);
			r = join_path(out, outsz, w, fc, fn, trailing);
		}
	}
	free(fc);
	free(full);
	return r;
}

int link_confine(const char *t, const struct link_place *pl, char *out, size_t outsz)
{
	int abs = t[0] == '/';
	size_t tl = strlen(t);
	int trailing = tl > 1 && t[tl - 1] == '/';
	int depth = pl->depth > 0 ? pl->depth : 0;
	if (!link_needs_depth(t))
		return copy_text(t, out, outsz);     /* goes down only: every step a lookup through us */

	char *copy = strdup(t);
	const char **comp = calloc(tl / 2 + 2, sizeof(*comp));
	int r = -ENOMEM;
	if (!copy || !comp)
		goto done;
	int ups, inner;
	int nc = fold_path(copy, comp, abs, &ups, &inner);
	if (!abs && !inner && ups <= depth) {
		r = copy_text(t, out, outsz);
		goto done;
	}
	if (!pl->exact && pl->root_path) {
		/* Where the link is seen from does not matter then. */
		if (!abs && !pl->dir)
			r = LINK_NEED_DIR;
		else
			r = under_root_path(t, pl, trailing, out, outsz);
		goto done;
	}
	int up = abs ? depth : (ups < depth ? ups : depth);
	size_t o = 0;
	for (int i = 0; i < up; i++) {
		if (o + 4 >= outsz) {
			r = -ENAMETOOLONG;
			goto done;
		}
		memcpy(out + o, "../", 3);
		o += 3;
	}
	if (o && !nc)
		o--;    /* ".." rather than "../" */
	r = join_path(out, outsz, o, comp, nc, trailing);
done:
	free(copy);
	free(comp);
	return r;
}
