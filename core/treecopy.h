/*
 * treecopy.h - one walk of a host directory tree for every copy of
 * local_dirs: into a local sandbox through directory fds (provision.c) or
 * into a remote one over SFTP (upload.c). The walk decides what is copied
 * (directories, regular files, symlinks as links; never sockets, FIFOs or
 * devices) and how deep; a sink says how each kind lands at its destination.
 */
#ifndef SEERFS_TREECOPY_H
#define SEERFS_TREECOPY_H

#include <stddef.h>
#include <sys/stat.h>

/* `at` is the sink's handle for a destination directory (an fd, a path). */
struct tree_sink {
	/* Makes (or accepts an existing) directory name in at; *child is the
	 * handle the walk descends with and gives back to dir_done. */
	int (*dir)(void *ud, void *at, const char *name, const struct stat *st, void **child);
	void (*dir_done)(void *ud, void *child);
	/* Copies the host file open as sfd to name in at. */
	int (*file)(void *ud, void *at, const char *name, int sfd, const struct stat *st);
	/* Makes name in at a symlink to target (replacing an older link). */
	int (*link)(void *ud, void *at, const char *name, const char *target);
	void *ud;
};

/* Copies what host directory srcfd holds into `at`. 0 or -errno; on
 * failure the entry that failed is named in bad. */
int tree_copy(int srcfd, const struct tree_sink *k, void *at, char *bad, size_t badn);

#endif /* SEERFS_TREECOPY_H */
