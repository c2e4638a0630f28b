/*
 * sftpfs_defer.h - the content of a file whose create root/ answered
 * without the server (fs/root/sftpfs.c: deferred create): the open flags
 * and mode it was created with and the bytes written to it so far, held
 * until its close sends them with the create in one request to the
 * sandbox's agent (sftpx_create). See fs/root/sftpfs_defer.c.
 */
#ifndef SEER_SFTPFS_DEFER_H
#define SEER_SFTPFS_DEFER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct sdefer {
	int flags;            /* open(2)'s flags of the create */
	mode_t mode;          /* its mode */
	uint32_t uid, gid;    /* the owner to give it ((uint32_t)-1: the login's) */
	char *buf;            /* the file's content from offset 0 */
	size_t len, cap;
};

/* A new one for a create with flags and mode; NULL without memory. */
struct sdefer *sdefer_new(int flags, mode_t mode);
void sdefer_free(struct sdefer *d);

/* Writes size bytes of buf at off (a hole before it reads as zeros): 0, or
 * -EFBIG past max bytes in all (the file then goes to the server), or
 * -ENOMEM. */
int sdefer_write(struct sdefer *d, uint64_t off, const void *buf, size_t size, size_t max);

/* Up to size bytes at off into out; how many. */
size_t sdefer_read(const struct sdefer *d, uint64_t off, void *out, size_t size);

#endif
