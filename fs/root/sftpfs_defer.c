/*
 * sftpfs_defer.c - the held content of a deferred create (see
 * fs/root/sftpfs_defer.h): a buffer from offset 0 that grows with the
 * writes, zero-filled where a write skipped ahead, bounded by the caller.
 */
#include "fs/root/sftpfs_defer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct sdefer *sdefer_new(int flags, mode_t mode)
{
	struct sdefer *d = calloc(1, sizeof(*d));
	if (d) {
		d->flags = flags;
		d->mode = mode;
		d->uid = d->gid = (uint32_t)-1;
	}
	return d;
}

void sdefer_free(struct sdefer *d)
{
	if (!d)
		return;
	free(d->buf);
	free(d);
}

int sdefer_write(struct sdefer *d, uint64_t off, const void *buf, size_t size, size_t max)
{
	if (off > max || size > max - off)
		return -EFBIG;
	size_t end = (size_t)off + size;
	if (end > d->cap) {
		size_t cap = d->cap ? d->cap : 256;
		while (cap < end)
			cap *= 2;
		char *nb = realloc(d->buf, cap);
		if (!nb)
			return -ENOMEM;
		d->buf = nb;
		d->cap = cap;
	}
	if ((size_t)off > d->len)
		memset(d->buf + d->len, 0, (size_t)off - d->len);
	memcpy(d->buf + off, buf, size);
	if (end > d->len)
		d->len = end;
	return 0;
}

size_t sdefer_read(const struct sdefer *d, uint64_t off, void *out, size_t size)
{
	if (off >= d->len)
		return 0;
	size_t k = d->len - (size_t)off < size ? d->len - (size_t)off : size;
	memcpy(out, d->buf + off, k);
	return k;
}
