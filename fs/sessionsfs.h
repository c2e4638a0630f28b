/*
 * sessionsfs.h - MOUNT/NAME/sessions/: notebook sessions as the FUSE side
 * shows them (fs/sessionsfs.c; the sessions themselves: core/sessions/sessions.c).
 */
#ifndef SEER_SESSIONSFS_H
#define SEER_SESSIONSFS_H

#include "fs/jobsfs.h"
#include "fs/vfile.h"

/* Whether an inode kind is one of sessions/'s (sessions/ itself included). */
int sessionsfs_owns(enum vkind k);
int sessionsfs_stat(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t ino, struct stat *st);
int sessionsfs_lookup(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t parent, const char *name, fuse_ino_t *out);
void sessionsfs_list(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t dir, vdir_add_fn add, void *d);
int sessionsfs_mkdir(struct seer_fs *fs, struct sandbox *sb, const char *name, fuse_ino_t *out);
int sessionsfs_rmdir(struct seer_fs *fs, struct sandbox *sb, const char *name);
int sessionsfs_open(struct seer_fs *fs, struct sandbox *sb, fuse_ino_t ino, struct fuse_file_info *fi, struct vfh *h);
void sessionsfs_read(struct seer_fs *fs, fuse_req_t req, struct vfh *h, size_t size, off_t off);
int sessionsfs_write(struct seer_fs *fs, struct vfh *h, const char *data, size_t size, off_t off,
		     struct fuse_file_info *fi, pid_t caller);

#endif
