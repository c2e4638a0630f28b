/*
 * functionsfs.h - MOUNT/NAME/functions/: served functions as the FUSE side
 * shows them (fs/functionsfs.c; the serving itself: core/sessions/functions.c).
 */
#ifndef SEER_FUNCTIONSFS_H
#define SEER_FUNCTIONSFS_H

#include "fs/jobsfs.h"
#include "fs/vfile.h"

/* Whether an inode kind is one of functions/'s (functions/ itself included). */
int functionsfs_owns(enum vkind k);
int functionsfs_stat(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t ino, struct stat *st);
int functionsfs_lookup(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t parent, const char *name, fuse_ino_t *out);
void functionsfs_list(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t dir, vdir_add_fn add, void *d);
int functionsfs_open(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t ino, struct fuse_file_info *fi, struct vfh *h);
void functionsfs_read(struct seer_fs *fs, fuse_req_t req, struct vfh *h, size_t size, off_t off);
int functionsfs_write(struct seer_fs *fs, struct vfh *h, const char *data, size_t size, off_t off);
/* Frees a call file's state (a call still unanswered is dropped). */
void functionsfs_fh_free(struct vfh *h);

#endif
