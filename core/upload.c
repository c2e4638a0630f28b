/*
 * upload.c - copies files and trees of this machine into a sandbox on a
 * remote provider, over the provider's SFTP client: the local_files and
 * local_dirs of a config (core/provision.c) where the sandbox's "/" is not
 * a directory fd here (provider->root_remote instead of root_fd).
 *
 * What is copied matches the local copy in provision.c: regular files with
 * their permission bits, directories, symlinks as links (they resolve
 * inside the sandbox, like the local copy's); sockets, FIFOs and devices
 * are left out. Files go through sftp_upload, which keeps several WRITE
 * requests in flight, so a large file moves at the link's speed rather
 * than one round trip per 32 KiB.
 *
 * The caller checks the sandbox path (absolute, no "..", see
 * check_sandbox_path); remote paths are ROOT/REL joined here.
 */
#include "core/upload.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static ssize_t read_source(void *ud, void *buf, size_t len)
{
	int fd = *(int *)ud;
	for (;;) {
		ssize_t k = read(fd, buf, len);
		if (k >= 0)
			return k;
		if (errno != EINTR)
			return -errno;
	}
}

static int join(char *out, size_t n, const char *a, const char *b)
{
	int k = snprintf(out, n, "%s%s%s", a, a[0] && a[strlen(a) - 1] != '/' ? "/" : "", b);
	return k < 0 || (size_t)k >= n ? -ENAMETOOLONG : 0;
}

/* Creates every missing directory of rel under root; an existing one that
 * is not a directory is -ENOTDIR. */
static int mkdir_p(sftp_client *c, const char *root, const char *rel)
{
	char path[4096], part[4096];
	if (snprintf(part, sizeof(part), "%s", rel) >= (int)sizeof(part))
		return -ENAMETOOLONG;
	snprintf(path, sizeof(path), "%s", root);
	for (char *save = NULL, *comp = strtok_r(part, "/", &save); comp; comp = strtok_r(NULL, "/", &save)) {
		char next[4096];
		int r = join(next, sizeof(next), path, comp);
		if (r < 0)
			return r;
		snprintf(path, sizeof(path), "%s", next);
		sftp_attrs a;
		r = sftp_lstat(c, path, &a);
		if (r == 0) {
			if (!S_ISDIR(a.perm))
				return -ENOTDIR;
			continue;
		}
		if (r != -ENOENT)
			return r;
		r = sftp_mkdir(c, path, 0755);
		if (r < 0 && (sftp_lstat(c, path, &a) < 0 || !S_ISDIR(a.perm)))
			return r;
	}
	return 0;
}

static int upload_file(sftp_client *c, int sfd, const struct stat *st, const char *rpath)
{
	sftp_attrs a = {.flags = SFTP_ATTR_PERMISSIONS, .perm = st->st_mode & 0777};
	sftp_handle *h = NULL;
	int r = sftp_open(c, rpath, sftp_flags_from_posix(O_WRONLY | O_CREAT | O_TRUNC), &a, &h);
	if (r < 0)
		return r;
	uint64_t total = 0;
	r = sftp_upload(c, h, 0, read_source, &sfd, 0, 0, &total);
	int rc = sftp_close(c, h);
	if (r == 0)
		r = rc;
	if (r == 0) {
		/* The create mode went through the remote umask; set it. */
		sftp_attrs m = {.flags = SFTP_ATTR_PERMISSIONS, .perm = st->st_mode & 07777};
		r = sftp_setstat(c, rpath, &m);
	}
	return r;
}

static int upload_tree(sftp_client *c, int srcfd, const char *rpath, char *bad, size_t badn, int depth)
{
	if (depth > 64)
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
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		char child[4096];
		struct stat st;
		r = join(child, sizeof(child), rpath, de->d_name);
		if (r == 0 && fstatat(srcfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			r = -errno;
		if (r < 0)
			break;
		if (S_ISDIR(st.st_mode)) {
			sftp_attrs a;
			if (sftp_lstat(c, child, &a) < 0)
				r = sftp_mkdir(c, child, st.st_mode & 0777);
			else if (!S_ISDIR(a.perm))
				r = -ENOTDIR;
			int s2 = r < 0 ? -1 : openat(srcfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (r == 0 && s2 < 0)
				r = -errno;
			if (r == 0)
				r = upload_tree(c, s2, child, bad, badn, depth + 1);
			if (s2 >= 0)
				close(s2);
		} else if (S_ISREG(st.st_mode)) {
			int s2 = openat(srcfd, de->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			r = s2 < 0 ? -errno : upload_file(c, s2, &st, child);
			if (s2 >= 0)
				close(s2);
		} else if (S_ISLNK(st.st_mode)) {
			char target[4096];
			ssize_t k = readlinkat(srcfd, de->d_name, target, sizeof(target) - 1);
			if (k < 0) {
				r = -errno;
			} else {
				target[k] = '\0';
				sftp_attrs a;
				if (sftp_lstat(c, child, &a) == 0 && S_ISLNK(a.perm))
					sftp_remove(c, child);
				r = sftp_symlink(c, target, child);
			}
		}
		/* sockets, fifos and devices are not copied */
		if (r < 0 && !bad[0])
			snprintf(bad, badn, "%s", de->d_name);
	}
	closedir(d);
	return r;
}

int upload_in(sftp_client *c, const char *root, int sfd, const struct stat *st, const char *rel, char *bad,
	      size_t badn)
{
	char rpath[4096];
	int r = join(rpath, sizeof(rpath), root, rel);
	if (r < 0)
		return r;
	if (S_ISDIR(st->st_mode)) {
		r = mkdir_p(c, root, rel);
		return r < 0 ? r : upload_tree(c, sfd, rpath, bad, badn, 0);
	}
	char parent[4096];
	snprintf(parent, sizeof(parent), "%s", rel);
	char *slash = strrchr(parent, '/');
	if (slash) {
		*slash = '\0';
		r = mkdir_p(c, root, parent);
		if (r < 0)
			return r;
	}
	sftp_attrs a;
	if (sftp_lstat(c, rpath, &a) == 0 && S_ISLNK(a.perm))
		return -ELOOP;   /* as the local copy: never write through a link */
	return upload_file(c, sfd, st, rpath);
}
