/*
 * snapshot.h - point-in-time snapshots of a sandbox's writable tree.
 *
 * A snapshot is STATE/snapshots/NAME/ holding layer/ (a copy of the
 * sandbox's overlay upper dir, whiteouts and user.overlay.* xattrs
 * included) and info.json (source, time, size, config, parent, and the
 * full layer stack, newest first). A sandbox started from a snapshot mounts
 * those layers as its overlay's lower dirs, so restore costs nothing.
 * NAME.tmp is a snapshot being built; it is never shown and is removed once
 * no process holds its lock (the builder crashed). A provider that keeps
 * snapshots itself (provider.h's snap_take) stores the copy; NAME/ then
 * holds info.json only, naming the provider and "where". See
 * docs/snapshots.md.
 */
#ifndef SEER_SNAPSHOT_H
#define SEER_SNAPSHOT_H

#include <stddef.h>
#include "core/lib/util.h"

struct sandbox;
struct seer_ctx;
struct seer_root;
struct seer_snap_ref;

/* Takes snapshot NAME of a running sandbox; returns when it is durable.
 * -EEXIST name in use, -EBUSY provisioning/terminating, -ENOSPC passes
 * through (nothing is left behind and the sandbox keeps running). */
int snapshot_take(struct sandbox *sb, const char *name, char *err, size_t errlen);
/* The snapshot sb's config restores, for its provider's start: a
 * snapshot in the state directory with its layers, or one the provider
 * keeps with where (ref->name NULL when the config names none; the caller
 * frees the strings, provision_start_free). -ENOENT, or -EXDEV when it was
 * taken on another provider, with a message. */
int snapshot_start_ref(struct sandbox *sb, struct seer_snap_ref *ref, char *err, size_t errlen);
/* The provider snapshot NAME was taken on, and where that provider keeps
 * it ("" for a snapshot in the state directory); -ENOENT. */
int snapshot_info(struct seer_ctx *ctx, const char *name, char *prov, size_t plen, char *where, size_t wlen);

/* The files of snapshot NAME, read-only, from the provider that keeps
 * them (for MOUNT/snapshots/NAME/root/; core/root.h). -errno with a
 * message naming the snapshot. */
int snapshot_root(struct seer_ctx *ctx, const char *name, struct seer_root *out, char *err, size_t errlen);

/* The lowerdir list (colon separated, newest first) of snapshot NAME;
 * -EXDEV for a snapshot a provider keeps elsewhere. */
int snapshot_stack(struct seer_ctx *ctx, const char *name, struct sbuf *out, char *err, size_t errlen);
/* The config text of the sandbox snapshot NAME was taken of (its info.json
 * "config"); NULL when the snapshot or the field is missing. Caller frees. */
char *snapshot_config(struct seer_ctx *ctx, const char *name);
/* Whether STATE/snapshots/NAME is a complete snapshot (1) or not (0). */
int snapshot_exists(struct seer_ctx *ctx, const char *name);
/* Removes snapshot NAME: -ENOENT, or -EBUSY (err says who depends on it,
 * and the dependent sandbox's log says so too). */
int snapshot_remove(struct seer_ctx *ctx, const char *name, char *err, size_t errlen);
/* Removes NAME.tmp directories that no live snapshot_take holds (a crash
 * left them). Safe to call at any time; call it at start-up. */
void snapshot_recover(struct seer_ctx *ctx);
/* The same for use while seerfs runs: spares builds too young to hold
 * their lock yet. */
void snapshot_cleanup(struct seer_ctx *ctx);
/* Calls fn for every complete snapshot, in directory order. */
int snapshot_list(struct seer_ctx *ctx, void (*fn)(void *arg, const char *name), void *arg);
/* The last error of snapshot NAME ("" when none); the caller frees it. */
char *snapshot_error_text(struct seer_ctx *ctx, const char *name);

#endif
