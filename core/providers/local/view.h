/*
 * view.h - a snapshot's files, read-only, as the local provider shows them
 * (its snap_root; view.c).
 */
#ifndef SEER_LOCAL_VIEW_H
#define SEER_LOCAL_VIEW_H

#include "core/provider.h"

int local_snap_root(struct seer_ctx *ctx, const void *settings, const struct seer_snap_ref *snap,
		    struct seer_root *out, char *err, size_t errlen);

#endif
