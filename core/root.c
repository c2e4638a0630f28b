/*
 * root.c - releasing a root handle (core/root.h).
 */
#include "core/root.h"
#include "core/lib/sftp.h"

#include <unistd.h>

void seer_root_release(struct seer_root *r)
{
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
	sftp_client_unref(r->sftp);
	r->sftp = NULL;
}
