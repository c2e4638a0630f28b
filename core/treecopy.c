/*
 * treecopy.c - walks a host directory tree for a copy into a sandbox
 * (see treecopy.h). Every entry is opened relative to its directory with
 * O_NOFOLLOW, so a symlink on the host is copied as a link and never
 * followed out of the tree being copied.
 */
#include "core/treecopy.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define TREE_MAX_DEPTH 64

static int walk(int srcfd, const struct tree_sink *k, void *at, char *bad, size_t badn, int depth)
{
	if (depth > TREE_MAX_DEPTH)
		return -ELOOP;
	int dfd = dup(srcfd);
	DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (!d) {
		if (dfd >= 0)
			close(dfd);
		return -errno;
	}
	int r = 0;
	struct dirent *de;
	while (r == 0 && (de = readdir(d))) {
		const char *name = de->d_name;
		if (!strcmp(name, ".") || !strcmp(name, ".."))
			continue;
		struct stat st;
		if (fstatat(srcfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = -errno;
		} else if (S_ISDIR(st.st_mode)) {
			void *child = NULL;
			r = k->dir(k->ud, at, name, &st, &child);
			if (r == 0) {
				int s2 = openat(srcfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
				r = s2 < 0 ? -errno : walk(s2, k, child, bad, badn, depth + 1);
				if (s2 >= 0)
					close(s2);
				k->dir_done(k->ud, child);
			}
		} else if (S_ISREG(st.st_mode)) {
			int s2 = openat(srcfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			r = s2 < 0 ? -errno : k->file(k->ud, at, name, s2, &st);
			if (s2 >= 0)
				close(s2);
		} else if (S_ISLNK(st.st_mode)) {
			char target[4096];
			ssize_t n = readlinkat(srcfd, name, target, sizeof(target) - 1);
			if (n < 0) {
				r = -errno;
			} else {
				target[n] = '\0';
				r = k->link(k->ud, at, name, target);
			}
		}
		/* sockets, fifos and devices are not copied */
		if (r < 0 && !bad[0])
			snprintf(bad, badn, "%s", name);
	}
	closedir(d);
	return r;
}

int tree_copy(int srcfd, const struct tree_sink *k, void *at, char *bad, size_t badn)
{
	return walk(srcfd, k, at, bad, badn, 0);
}
