/*
 * jobsfs.h - the exec files and the jobs/ directory of a sandbox, as the
 * FUSE side shows them (the jobs themselves live in core/jobs.c).
 */
#ifndef SEER_JOBSFS_H
#define SEER_JOBSFS_H

#include "fs/vfile.h"

typedef void (*vdir_add_fn)(void *d, const char *name, fuse_ino_t ino, mode_t mode);

int jobsfs_stat(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t ino, struct stat *st);
int jobsfs_lookup(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t parent, const char *name, fuse_ino_t *out);
void jobsfs_list(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t dir, vdir_add_fn add, void *d);
int jobsfs_rmdir(struct seer_fs *fs, struct sandbox *sb, const char *name);
int jobsfs_open(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t ino, struct fuse_file_info *fi, struct vfh *h);
void jobsfs_read(struct seer_fs *fs, fuse_req_t req, struct vfh *h, size_t size, off_t off);
int jobsfs_write(struct seer_fs *fs, struct vfh *h, const char *data, size_t size, off_t off, struct fuse_file_info *fi,
		 pid_t caller);
int jobsfs_unlink(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t parent, const char *name);
int jobsfs_flush(struct seer_fs *fs, struct vfh *h);
void jobsfs_release(struct seer_fs *fs, struct vfh *h);
void jobsfs_fh_free(struct vfh *h);
/* The most bytes an answer made of n file pieces can carry and still go by
 * splice. libfuse splices an answer only when the header, the data and a
 * page per piece fit its pipe, whose size it may raise up to pipe-max-size
 * (1 MiB by default) without CAP_SYS_RESOURCE; a bigger answer is read into
 * memory and written, two copies instead of one. */
size_t jobsfs_splice_limit(int n);
int jobsfs_readlink(struct sandbox *sb, fuse_ino_t ino, pid_t caller, char *buf, size_t len);

#endif
