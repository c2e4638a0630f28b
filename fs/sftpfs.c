/*
 * sftpfs.c - root/ of a remote sandbox over SFTP (not built yet: a remote
 * sandbox's root/ is refused with ENOTSUP until it is).
 */
#include "fs/fs.h"

#include <errno.h>

struct sftpfs *sftpfs_new(struct seer_fs *fs, struct sandbox *sb, struct sftp_client *cli, const char *root)
{
	(void)fs; (void)sb; (void)cli; (void)root;
	return NULL;
}
void sftpfs_kill(struct sftpfs *r) { (void)r; }
int sftpfs_root_entry(struct sftpfs *r, struct fuse_entry_param *e) { (void)r; (void)e; return -ENOTSUP; }
void sftpfs_invalidate(struct sftpfs *r) { (void)r; }
void sftpfs_forget_one(fuse_ino_t ino, uint64_t nlookup) { (void)ino; (void)nlookup; }
const struct fuse_lowlevel_ops sftpfs_ops;
