/*
 * upload.h - host files and trees into a remote sandbox over SFTP
 * (local_files / local_dirs on providers without a local root; upload.c).
 */
#ifndef SEERFS_UPLOAD_H
#define SEERFS_UPLOAD_H

#include "core/sftp.h"

#include <sys/stat.h>

/* Copies the host file or directory open as sfd (st: its stat) to
 * ROOT/REL on the remote side, creating REL's missing parents. rel is a
 * checked sandbox path without its leading '/'. On failure *bad may name
 * the entry of a tree that failed. 0 or -errno. */
int upload_in(sftp_client *c, const char *root, int sfd, const struct stat *st, const char *rel, char *bad,
	      size_t badn);

#endif /* SEERFS_UPLOAD_H */
