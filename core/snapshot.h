/*
 * snapshot.h - point-in-time snapshots of a sandbox's writable tree.
 */
#ifndef SEER_SNAPSHOT_H
#define SEER_SNAPSHOT_H

#include <stddef.h>
#include "core/util.h"

struct sandbox;

/* Takes snapshot NAME of a running sandbox; returns when it is durable. */
int snapshot_take(struct sandbox *sb, const char *name, char *err, size_t errlen);
/* The overlay lowerdir list for a sandbox started from a snapshot (empty
 * when the config names none). */
int snapshot_lowerdirs(struct sandbox *sb, struct sbuf *out, char *err, size_t errlen);

#endif
