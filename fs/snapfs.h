/*
 * snapfs.h - MOUNT/snapshots: one directory per snapshot with info.json,
 * error and a read-only root/ (the merged view of its layer stack).
 *
 * Inode numbers: vino(serial, id, kind) with id a 31-bit hash of the
 * snapshot's name (so nothing needs a table: the directory STATE/snapshots
 * is read on demand) and serial 0 for the snapshot's directory and
 * info.json, 1 for its error file.
 */
#ifndef SEER_SNAPFS_H
#define SEER_SNAPFS_H

#include "fs/vfile.h"

/* Whether ino is one of snapfs' (MOUNT/snapshots/NAME and below, not root/'s). */
int snapfs_owns(fuse_ino_t ino);
/* Lookup of name under MOUNT/snapshots or MOUNT/snapshots/NAME. */
int snapfs_lookup(struct seer_fs *fs, fuse_ino_t parent, const char *name, struct fuse_entry_param *e);
int snapfs_stat(struct seer_fs *fs, fuse_ino_t ino, struct stat *st);
/* Lists MOUNT/snapshots (K_SNAPDIR) or one snapshot's directory. */
int snapfs_list(struct seer_fs *fs, fuse_ino_t ino, void (*add)(void *d, const char *name, fuse_ino_t ino, mode_t mode),
		void *d);
/* The content of info.json or error into out. */
int snapfs_read(struct seer_fs *fs, fuse_ino_t ino, struct sbuf *out);
/* rmdir MOUNT/snapshots/NAME. */
int snapfs_rmdir(struct seer_fs *fs, const char *name);
/* 1 when ino is in a snapshot of a scoped sandbox. */
int snapfs_scoped(struct seer_fs *fs, fuse_ino_t ino);

#endif
