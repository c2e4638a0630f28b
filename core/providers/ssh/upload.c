/*
 * upload.c - copies files and trees of this machine into a sandbox on a
 * remote provider, over the provider's SFTP client: the local_files and
 * local_dirs of a config (core/provision.c) where the sandbox's "/" is not
 * a directory fd here (its root is an SFTP client: the provider's copy_in).
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
#include "core/providers/ssh/upload.h"
#include "core/lib/walk.h"

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
static int mkdir_p(struct sftp_client *c, const char *root, const char *rel)
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
		struct sftp_attrs a;
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

int upload_stream(struct sftp_client *c, const char *rpath, mode_t mode, sftp_source_fn source, void *ud,
		  uint64_t *total)
{
	struct sftp_attrs a = {.flags = SFTP_ATTR_PERMISSIONS, .perm = mode & 0777};
	struct sftp_handle *h = NULL;
	int r = sftp_open(c, rpath, sftp_flags_from_posix(O_WRONLY | O_CREAT | O_TRUNC), &a, &h);
	if (r < 0)
		return r;
	*total = 0;
	r = sftp_upload(c, h, 0, source, ud, 0, 0, total);
	int rc = sftp_close(c, h);
	if (r == 0)
		r = rc;
	if (r == 0) {
		/* The create mode went through the remote umask; set it. */
		struct sftp_attrs m = {.flags = SFTP_ATTR_PERMISSIONS, .perm = mode & 07777};
		r = sftp_setstat(c, rpath, &m);
	}
	return r;
}

static int upload_file(struct sftp_client *c, int sfd, const struct stat *st, const char *rpath)
{
	uint64_t total = 0;
	return upload_stream(c, rpath, st->st_mode, read_source, &sfd, &total);
}

/* The remote sink of walk_tree: a destination is its path on the remote
 * side (malloc'd for the directories the walk descends into). */
struct rsink {
	struct sftp_client *c;
};

/* An entry the walk is about to make: its remote path, and what is there
 * now (found 0 when nothing). */
struct child {
	struct sftp_client *c;
	char path[4096];
	struct sftp_attrs a;
	int found;
};

static int child_of(void *ud, const char *at, const char *name, struct child *ch)
{
	ch->c = ((struct rsink *)ud)->c;
	int r = join(ch->path, sizeof(ch->path), at, name);
	ch->found = r == 0 && sftp_lstat(ch->c, ch->path, &ch->a) == 0;
	return r;
}

static int remote_dir(void *ud, void *at, const struct walk_ent *e, void **child)
{
	struct child ch;
	int r = child_of(ud, at, e->name, &ch);
	if (r == 0 && !ch.found)
		r = sftp_mkdir(ch.c, ch.path, e->st.st_mode & 0777);
	else if (r == 0 && !S_ISDIR(ch.a.perm))
		r = -ENOTDIR;
	if (r == 0 && !(*child = strdup(ch.path)))
		r = -ENOMEM;
	return r;
}

static int remote_dir_done(void *ud, void *at, const struct walk_ent *e, void *child, int r)
{
	(void)ud, (void)at, (void)e;
	free(child);
	return r;
}

static int remote_file(void *ud, void *at, const struct walk_ent *e)
{
	struct child ch;
	int r = child_of(ud, at, e->name, &ch);
	if (r == 0 && ch.found && S_ISLNK(ch.a.perm))
		r = -ELOOP;   /* never write through a link the sandbox made */
	return r < 0 ? r : upload_file(ch.c, e->fd, &e->st, ch.path);
}

static int remote_link(void *ud, void *at, const struct walk_ent *e)
{
	struct child ch;
	int r = child_of(ud, at, e->name, &ch);
	if (r < 0)
		return r;
	if (ch.found && S_ISLNK(ch.a.perm))
		sftp_remove(ch.c, ch.path);
	return sftp_symlink(ch.c, e->target, ch.path);
}

int upload_in(struct sftp_client *c, const char *root, int sfd, const struct stat *st, const char *rel, char *bad,
	      size_t badn)
{
	char rpath[4096];
	int r = join(rpath, sizeof(rpath), root, rel);
	if (r < 0)
		return r;
	if (S_ISDIR(st->st_mode)) {
		r = mkdir_p(c, root, rel);
		struct rsink u = {c};
		const struct walk_ops k = {remote_dir, remote_dir_done, remote_file, remote_link, NULL, &u, 0, bad, badn};
		return r < 0 ? r : walk_tree(sfd, &k, rpath);
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
	struct sftp_attrs a;
	if (sftp_lstat(c, rpath, &a) == 0 && S_ISLNK(a.perm))
		return -ELOOP;   /* as the local copy: never write through a link */
	return upload_file(c, sfd, st, rpath);
}
