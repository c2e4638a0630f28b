/*
 * snapshot.c - snapshots of a sandbox's writable tree (not built yet: every
 * entry point refuses with a message that says so).
 */
#include "core/snapshot.h"
#include "core/sandbox.h"

#include <errno.h>
#include <stdio.h>

int snapshot_take(struct sandbox *sb, const char *name, char *err, size_t n)
{
	snprintf(err, n, "snapshots are not supported yet by this seerfs build (sandbox %s, snapshot %s)", sb->name, name);
	return -ENOTSUP;
}

int snapshot_lowerdirs(struct sandbox *sb, struct sbuf *out, char *err, size_t n)
{
	if (sb->cfg.snapshot) {
		snprintf(err, n, "sandbox %s: config field snapshot is not supported yet by this seerfs build; remove it", sb->name);
		return -ENOTSUP;
	}
	return 0;
}
