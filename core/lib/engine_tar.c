/*
 * engine_tar.c - tar archives for the Engine API's archive endpoint
 * (engine.h), with libarchive: an in-memory pax tar of a host file or tree
 * walked by fd (walk.h), and a safe extraction of a tar a container made
 * into a directory fd (no absolute names, no "..", no link followed).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <archive.h>
#include <archive_entry.h>

#include "core/lib/engine.h"
#include "core/lib/util.h"
#include "core/lib/walk.h"

#define TAR_CHUNK (256u << 10)

/* ------------------------------------------------------------------ */
/* building                                                            */

struct tarw {
	struct archive *a;
	struct sbuf out;
	const char *dest;
	unsigned uid, gid;
	char *buf;		/* a file's chunk */
};

static la_ssize_t tarw_write(struct archive *a, void *ud, const void *p, size_t n)
{
	struct tarw *t = ud;
	if (sbuf_append(&t->out, p, n) < 0) {
		archive_set_error(a, ENOMEM, "out of memory");
		return -1;
	}
	return (la_ssize_t)n;
}

static int tar_err(struct tarw *t)
{
	int e = archive_errno(t->a);
	return e > 0 ? -e : -EIO;
}

/* One header; for a regular file its data from fd. */
static int tar_add(struct tarw *t, const char *rel, const struct stat *st, const char *target, int fd)
{
	struct archive_entry *en = archive_entry_new();
	if (!en)
		return -ENOMEM;
	struct sbuf name = { 0 };
	if (rel && *rel)
		sbuf_printf(&name, "%s/%s", t->dest, rel);
	else
		sbuf_printf(&name, "%s", t->dest);
	if (!name.data) {
		archive_entry_free(en);
		return -ENOMEM;
	}
	archive_entry_set_pathname(en, name.data);
	archive_entry_set_mode(en, st->st_mode);
	archive_entry_set_uid(en, t->uid);
	archive_entry_set_gid(en, t->gid);
	archive_entry_set_mtime(en, st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
	archive_entry_set_size(en, S_ISREG(st->st_mode) ? st->st_size : 0);
	if (target)
		archive_entry_set_symlink(en, target);
	int r = archive_write_header(t->a, en) == ARCHIVE_OK ? 0 : tar_err(t);
	archive_entry_free(en);
	sbuf_free(&name);
	if (r < 0 || !S_ISREG(st->st_mode))
		return r;
	/* Exactly st_size bytes: a file that grew is cut, one that shrank padded
	 * (the header already promised the size). */
	off_t left = st->st_size, off = 0;
	while (left > 0) {
		size_t want = left < (off_t)TAR_CHUNK ? (size_t)left : TAR_CHUNK;
		ssize_t n = pread(fd, t->buf, want, off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0) {
			memset(t->buf, 0, want);
			n = (ssize_t)want;
		}
		if (archive_write_data(t->a, t->buf, (size_t)n) < 0)
			return tar_err(t);
		left -= n;
		off += n;
	}
	return 0;
}

static int tw_dir(void *ud, void *at, const struct walk_ent *e, void **child)
{
	*child = NULL;
	return tar_add(ud, e->path, &e->st, NULL, -1);
}

static int tw_dir_done(void *ud, void *at, const struct walk_ent *e, void *child, int r)
{
	return r;
}

static int tw_file(void *ud, void *at, const struct walk_ent *e)
{
	return tar_add(ud, e->path, &e->st, NULL, e->fd);
}

static int tw_link(void *ud, void *at, const struct walk_ent *e)
{
	return tar_add(ud, e->path, &e->st, e->target, -1);
}

static int dest_ok(const char *d)
{
	return d && *d && !strchr(d, '/') && strcmp(d, ".") && strcmp(d, "..") && strlen(d) < 256;
}

int engine_tar_from_fd(int fd, const char *dest_name, unsigned uid, unsigned gid, void **tar, size_t *len, char *err,
		       size_t errlen)
{
	*tar = NULL;
	*len = 0;
	struct stat st;
	if (!dest_ok(dest_name)) {
		snprintf(err, errlen, "tar: the destination name \"%s\" must be one path component", dest_name ? dest_name : "");
		return -EINVAL;
	}
	if (fstat(fd, &st) < 0) {
		int r = -errno;
		snprintf(err, errlen, "tar of %s: %s", dest_name, strerror(errno));
		return r;
	}
	if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "tar of %s: only a regular file or a directory can be copied", dest_name);
		return -EINVAL;
	}
	struct tarw t = { .dest = dest_name, .uid = uid, .gid = gid };
	t.a = archive_write_new();
	t.buf = malloc(TAR_CHUNK);
	if (!t.a || !t.buf) {
		archive_write_free(t.a);
		free(t.buf);
		snprintf(err, errlen, "tar of %s: out of memory", dest_name);
		return -ENOMEM;
	}
	int r = 0;
	archive_write_set_format_pax_restricted(t.a);
	archive_write_set_bytes_per_block(t.a, 10240);
	if (archive_write_open(t.a, &t, NULL, tarw_write, NULL) != ARCHIVE_OK)
		r = tar_err(&t);
	char bad[512] = "";
	if (r == 0)
		r = tar_add(&t, NULL, &st, NULL, fd);
	if (r == 0 && S_ISDIR(st.st_mode)) {
		const struct walk_ops ops = { tw_dir, tw_dir_done, tw_file, tw_link, NULL, &t, 0, bad, sizeof(bad) };
		r = walk_tree(fd, &ops, NULL);
	}
	if (r == 0 && archive_write_close(t.a) != ARCHIVE_OK)
		r = tar_err(&t);
	if (r < 0) {
		if (r == -ESTALE)
			snprintf(err, errlen, "tar of %s: %s%s changed while it was read (swapped for another file or a link); "
				 "copy it again once it is still", dest_name, bad[0] ? "the entry " : "the tree", bad);
		else
			snprintf(err, errlen, "tar of %s%s%s: %s", dest_name, bad[0] ? ", at " : "", bad,
				 archive_error_string(t.a) && r == tar_err(&t) ? archive_error_string(t.a) : strerror(-r));
		archive_write_free(t.a);
		free(t.buf);
		sbuf_free(&t.out);
		return r;
	}
	archive_write_free(t.a);
	free(t.buf);
	*tar = t.out.data;
	*len = t.out.len;
	if (!*tar) {
		snprintf(err, errlen, "tar of %s: empty archive", dest_name);
		return -EIO;
	}
	return 0;
}

int engine_tar_from_path_owner(int dirfd, const char *src, const char *dest_name, unsigned uid, unsigned gid,
			       void **tar, size_t *len, char *err, size_t errlen)
{
	/* O_NONBLOCK: a fifo named here must not block the open (it is then refused). */
	int fd = openat(dirfd, src, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		int r = -errno;
		if (errno == ELOOP)
			snprintf(err, errlen, "cannot copy %s: it is a symbolic link; name what it points to", src);
		else
			snprintf(err, errlen, "cannot read %s on the host: %s", src, strerror(errno));
		*tar = NULL;
		*len = 0;
		return r;
	}
	int r = engine_tar_from_fd(fd, dest_name, uid, gid, tar, len, err, errlen);
	close(fd);
	return r;
}

int engine_tar_from_path(int dirfd, const char *src, const char *dest_name, void **tar, size_t *len, char *err,
			 size_t errlen)
{
	return engine_tar_from_path_owner(dirfd, src, dest_name, 0, 0, tar, len, err, errlen);
}

/* ------------------------------------------------------------------ */
/* extracting                                                          */

static int open_beneath(int dirfd, const char *name)
{
	struct open_how how = {
		.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	long fd = syscall(SYS_openat2, dirfd, name, &how, sizeof(how));
	return fd < 0 ? -errno : (int)fd;
}

/* Splits name into its checked components ("./" and empty ones dropped);
 * -EINVAL for an absolute name or "..". Returns the count. */
static int split_name(char *name, char **comp, int max)
{
	if (name[0] == '/')
		return -EINVAL;
	int n = 0;
	for (char *save = NULL, *c = strtok_r(name, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		if (!strcmp(c, "."))
			continue;
		if (!strcmp(c, ".."))
			return -EINVAL;
		if (n == max)
			return -ENAMETOOLONG;
		comp[n++] = c;
	}
	return n;
}

/* The directory holding the last of comp[0..n), beneath root: each parent
 * opened with openat2 beneath its own parent and never through a link;
 * missing ones made when mk. An fd or -errno. */
static int parent_of(int root, char **comp, int n, int mk)
{
	int cur = dup(root);
	if (cur < 0)
		return -errno;
	for (int i = 0; i < n - 1; i++) {
		int fd = open_beneath(cur, comp[i]);
		if (fd == -ENOENT && mk) {
			if (mkdirat(cur, comp[i], 0755) < 0 && errno != EEXIST) {
				fd = -errno;
			} else {
				fd = open_beneath(cur, comp[i]);
			}
		}
		close(cur);
		if (fd < 0)
			return fd;
		cur = fd;
	}
	return cur;
}

static int extract_file(struct archive *a, int pfd, const char *name, mode_t perm, la_int64_t total)
{
	int fd = openat(pfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	int r = 0;
	const void *buf;
	size_t size;
	la_int64_t off;
	for (;;) {
		int s = archive_read_data_block(a, &buf, &size, &off);
		if (s == ARCHIVE_EOF)
			break;
		if (s != ARCHIVE_OK) {
			r = archive_errno(a) > 0 ? -archive_errno(a) : -EIO;
			break;
		}
		if (pwrite(fd, buf, size, off) != (ssize_t)size) {
			r = errno ? -errno : -EIO;
			break;
		}
	}
	if (r == 0) {
		if (ftruncate(fd, total) < 0 || fchmod(fd, perm) < 0)
			r = -errno;
	}
	if (close(fd) < 0 && r == 0)
		r = -errno;
	return r;
}

int engine_tar_extract(int dirfd, const void *tar, size_t len, char *err, size_t errlen)
{
	struct archive *a = archive_read_new();
	if (!a) {
		snprintf(err, errlen, "tar: out of memory");
		return -ENOMEM;
	}
	archive_read_support_format_tar(a);
	archive_read_support_format_gnutar(a);
	int r = 0;
	if (archive_read_open_memory(a, tar, len) != ARCHIVE_OK) {
		snprintf(err, errlen, "tar: cannot read the archive: %s", archive_error_string(a));
		archive_read_free(a);
		return -EPROTO;
	}
	struct archive_entry *en;
	char *comp[WALK_MAX_DEPTH], *lcomp[WALK_MAX_DEPTH];
	for (;;) {
		int s = archive_read_next_header(a, &en);
		if (s == ARCHIVE_EOF)
			break;
		if (s != ARCHIVE_OK && s != ARCHIVE_WARN) {
			snprintf(err, errlen, "tar: a bad entry: %s", archive_error_string(a));
			r = -EPROTO;
			break;
		}
		const char *pn = archive_entry_pathname(en);
		char *name = strdup(pn ? pn : "");
		if (!name) {
			r = -ENOMEM;
			snprintf(err, errlen, "tar: out of memory");
			break;
		}
		int n = split_name(name, comp, WALK_MAX_DEPTH);
		if (n < 0) {
			r = n;
			snprintf(err, errlen, "tar: the entry %s is refused: %s", pn,
				 n == -EINVAL ? "an absolute name or one with '..' would land outside the destination"
					      : "too deep");
			free(name);
			break;
		}
		if (n == 0) {	/* "./": the destination itself */
			free(name);
			continue;
		}
		mode_t type = archive_entry_filetype(en), perm = archive_entry_perm(en) & 0777;
		const char *hl = archive_entry_hardlink(en);
		int pfd = parent_of(dirfd, comp, n, 1);
		const char *leaf = comp[n - 1];
		if (pfd < 0) {
			r = pfd;
		} else if (hl) {
			char *tn = strdup(hl);
			int m = tn ? split_name(tn, lcomp, WALK_MAX_DEPTH) : -ENOMEM;
			int tfd = m > 0 ? parent_of(dirfd, lcomp, m, 0) : m == 0 ? -EINVAL : m;
			if (tfd >= 0) {
				unlinkat(pfd, leaf, 0);
				r = linkat(tfd, lcomp[m - 1], pfd, leaf, 0) < 0 ? -errno : 0;
				close(tfd);
			} else {
				r = tfd;
			}
			free(tn);
		} else if (type == AE_IFDIR) {
			if (mkdirat(pfd, leaf, perm | 0700) < 0 && errno != EEXIST) {
				r = -errno;
			} else {
				int d = open_beneath(pfd, leaf);
				r = d < 0 ? d : fchmod(d, perm | 0700) < 0 ? -errno : 0;
				if (d >= 0)
					close(d);
			}
		} else if (type == AE_IFREG) {
			r = extract_file(a, pfd, leaf, perm, archive_entry_size(en));
		} else if (type == AE_IFLNK) {
			const char *target = archive_entry_symlink(en);
			unlinkat(pfd, leaf, 0);
			r = symlinkat(target ? target : "", pfd, leaf) < 0 ? -errno : 0;
		} else if (type == AE_IFIFO) {
			unlinkat(pfd, leaf, 0);
			r = mkfifoat(pfd, leaf, perm) < 0 ? -errno : 0;
		} else {
			r = -EPERM;
		}
		if (r == 0 && type != AE_IFDIR) {
			struct timespec ts[2] = { { 0, UTIME_OMIT },
						  { archive_entry_mtime(en), archive_entry_mtime_nsec(en) } };
			utimensat(pfd, leaf, ts, AT_SYMLINK_NOFOLLOW);
		}
		if (pfd >= 0)
			close(pfd);
		if (r < 0) {
			if (r == -EPERM)
				snprintf(err, errlen, "tar: the entry %s is a device: refused", pn);
			else if (r == -ELOOP || r == -EXDEV)
				snprintf(err, errlen, "tar: the entry %s lies through a symbolic link: refused", pn);
			else
				snprintf(err, errlen, "tar: cannot extract %s: %s", pn, strerror(-r));
			free(name);
			break;
		}
		free(name);
	}
	archive_read_free(a);
	return r;
}
