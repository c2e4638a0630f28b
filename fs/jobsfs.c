/*
 * jobsfs.c - placeholder until the exec issue lands: exec refuses with a
 * clear error, jobs/ is empty.
 */
#include "fs/jobsfs.h"

#include <errno.h>
#include <string.h>

int jobsfs_stat(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t ino, struct stat *st)
{
	(void)fs; (void)sb;
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	enum vkind k = vino_kind(ino);
	if (k == K_JOBSDIR) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
		return 0;
	}
	return -ENOENT;
}

int jobsfs_lookup(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t parent, const char *name, fuse_ino_t *out)
{
	(void)fs; (void)sb; (void)parent; (void)name; (void)out;
	return -ENOENT;
}

void jobsfs_list(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t dir, vdir_add_fn add, void *d)
{
	(void)fs; (void)sb; (void)dir; (void)add; (void)d;
}

int jobsfs_rmdir(struct seer_fs *fs, struct sandbox *sb, const char *name)
{
	(void)fs; (void)sb; (void)name;
	return -ENOENT;
}

int jobsfs_open(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t ino, struct fuse_file_info *fi, struct vfh *h)
{
	(void)fs; (void)ino; (void)fi; (void)h;
	sandbox_set_error(sb, "sandbox %s: exec is not supported yet by this seerfs build", sb->name);
	return -ENOTSUP;
}

void jobsfs_read(struct seer_fs *fs, fuse_req_t req, struct vfh *h, size_t size, off_t off)
{
	(void)fs; (void)h; (void)size; (void)off;
	fuse_reply_err(req, EBADF);
}

int jobsfs_write(struct seer_fs *fs, struct vfh *h, const char *data, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)fs; (void)h; (void)data; (void)size; (void)off; (void)fi;
	return -EBADF;
}

int jobsfs_flush(struct seer_fs *fs, struct vfh *h) { (void)fs; (void)h; return 0; }
void jobsfs_release(struct seer_fs *fs, struct vfh *h) { (void)fs; (void)h; }
void jobsfs_fh_free(struct vfh *h) { (void)h; }
int jobsfs_latest(struct sandbox *sb, char *buf, size_t len) { (void)sb; (void)buf; (void)len; return -ENOENT; }
