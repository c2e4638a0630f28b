/*
 * snap.h - the local provider's snapshots: a copy of the sandbox's
 * writable tree into a layer of the state directory (snap.c).
 */
#ifndef SEER_LOCAL_SNAP_H
#define SEER_LOCAL_SNAP_H

#include "core/provider.h"

int local_snap_take(struct sandbox *sb, const char *snap, const char *layer, struct seer_snap_taken *out, char *err,
		    size_t errlen);

#endif
