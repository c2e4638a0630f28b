/*
 * root.h - one slot per sandbox or snapshot that installs and drops its
 * root/: the backend (fs/root/pass.c over an fd, fs/root/sftpfs.c over an
 * SFTP client) is picked from the handle the provider gives
 * (core/root.h), made on first lookup, and dropped when the tree goes away.
 *
 * Slots are keyed by a 32-bit number: a sandbox's serial, or (snapfs.c)
 * 0x80000000 | a snapshot's id. They live in fs->roots under fs->lock.
 */
#ifndef SEER_FS_ROOT_H
#define SEER_FS_ROOT_H

#include "fs/fs.h"

struct seer_root;

/* Asks the provider for the tree's handle (fills *out): -errno when the
 * tree cannot be served now. */
typedef int (*root_open_fn)(void *arg, struct seer_root *out);

/* Fills e with root/'s entry for key. A backend already installed is used
 * while it lives and its SFTP client works; otherwise open(arg) is asked
 * for the handle and a new backend installed (of two threads racing, one
 * backend stays). sb: the sandbox (NULL for a snapshot). */
int root_entry(struct seer_fs *fs, uint32_t key, struct sandbox *sb, root_open_fn open, void *arg,
	       struct fuse_entry_param *e);
/* The tree's processes may have changed files behind our back (a job
 * started): drop what the kernel caches of key's root/. */
void root_invalidate(struct seer_fs *fs, uint32_t key);
/* The tree went away (stopped, removed, reconnected): later operations on
 * the old root/ fail with ENOTCONN, and the next lookup makes a new one. */
void root_drop(struct seer_fs *fs, uint32_t key);

#endif
