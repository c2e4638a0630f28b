/*
 * upload.h - host files and trees into a remote sandbox over SFTP
 * (local_files / local_dirs on providers without a local root; upload.c).
 */
#ifndef SEER_UPLOAD_H
#define SEER_UPLOAD_H

#include "core/lib/sftp.h"

#include <sys/stat.h>

/* Copies the host file or directory open as sfd (st: its stat) to
 * ROOT/REL on the remote side, creating REL's missing parents. rel is a
 * checked sandbox path without its leading '/'. On failure *bad may name
 * the entry of a tree that failed. 0 or -errno. */
int upload_in(struct sftp_client *c, const char *root, int sfd, const struct stat *st, const char *rel, char *bad,
	      size_t badn);

/* Writes what source yields (sftp_upload's pipelined writes) to the
 * remote file rpath, created or truncated, then sets its mode (the create
 * mode went through the remote umask). *total gets the bytes written.
 * 0 or -errno; a source error aborts with that error. */
int upload_stream(struct sftp_client *c, const char *rpath, mode_t mode, sftp_source_fn source, void *ud,
		  uint64_t *total);

#endif /* SEER_UPLOAD_H */
