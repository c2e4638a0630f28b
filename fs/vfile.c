/*
 * vfile.c - what the virtual files' modules (ll.c, jobsfs.c, snapfs.c,
 * sessionsfs.c, functionsfs.c) answer with: their attributes and reads.
 */
#include "fs/vfile.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void fill_stat(struct seer_fs *fs, struct stat *st, fuse_ino_t ino, mode_t mode, off_t size, uint64_t mtime_ns)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = mode;
	st->st_nlink = S_ISDIR(mode) ? 2 : 1;
	st->st_uid = fs->ctx->uid;
	st->st_gid = fs->ctx->gid;
	st->st_size = size;
	st->st_blksize = 4096;
	st->st_blocks = (size + 511) / 512;
	st->st_mtim.tv_sec = st->st_ctim.tv_sec = st->st_atim.tv_sec = (time_t)(mtime_ns / 1000000000ull);
	st->st_mtim.tv_nsec = st->st_ctim.tv_nsec = st->st_atim.tv_nsec = (long)(mtime_ns % 1000000000ull);
}

void reply_pread(fuse_req_t req, int fd, size_t size, off_t off)
{
	if (fd < 0) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	char *buf = malloc(size ? size : 1);
	ssize_t n = buf ? pread(fd, buf, size, off) : -1;
	if (n < 0)
		fuse_reply_err(req, buf ? errno : ENOMEM);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

/* Answers a read with a copy of part of an open file's buffer. The copy
 * matters: once the kernel has the answer, the reader may close the file
 * and its release free the buffer while writev() is still returning. */
void reply_slice(fuse_req_t req, const struct sbuf *b, size_t size, off_t off)
{
	if ((size_t)off >= b->len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	size_t n = b->len - (size_t)off;
	if (n > size)
		n = size;
	char *copy = malloc(n);
	if (!copy) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	memcpy(copy, b->data + off, n);
	fuse_reply_buf(req, copy, n);
	free(copy);
}
