/*
 * lifecycle.h - what a sandbox goes through, and the context's own life
 * (lifecycle.c).
 *
 * States: new -> provisioning -> running | failed; running -> terminating ->
 * terminated; failed or terminated -> provisioning again on a new config
 * (or `retry`). Every change is written to state.json before it is shown,
 * so a restarted seerfs shows the same states.
 */
#ifndef SEER_LIFECYCLE_H
#define SEER_LIFECYCLE_H

#include <stddef.h>

#include "core/ctx.h"

struct sandbox;

/* Opens (creating) the state directory, takes its lock and loads every
 * sandbox. -EBUSY with a message naming the holder when another seerfs has it. */
int seer_ctx_open(struct seer_ctx *ctx, char *err, size_t errlen);
/* Starts sandboxes that were running before and the timeout timer. */
int seer_ctx_start(struct seer_ctx *ctx);
/* Ends every sandbox's processes (states stay): used when the mount went
 * away under us. */
void seer_ctx_stop_processes(struct seer_ctx *ctx);
/* Stops the timer and every sandbox's processes; the state stays on disk. */
void seer_ctx_close(struct seer_ctx *ctx);

/* mkdir: -EINVAL bad name, -EEXIST. Returns a referenced sandbox. */
int sandbox_create(struct seer_ctx *ctx, const char *name, struct sandbox **out);
/* rmdir: -EBUSY while provisioning, running or terminating. */
int sandbox_remove(struct sandbox *sb);
/* Loads every sandbox of the state directory (at start-up). */
int sandbox_load_all(struct seer_ctx *ctx);
/* Settles what a crash interrupted (at start-up). */
void sandbox_recover_all(struct seer_ctx *ctx);

/* A complete config landed (close of config.json or rename over it).
 * Validates, stores and starts provisioning: -EINVAL/-EFBIG (error set),
 * -EBUSY when the state forbids it. On success the state is already
 * `provisioning` (or the live change applied) when this returns. */
int sandbox_apply_config(struct sandbox *sb, const char *text, size_t len);

/* One line written to ctl: terminate, retry, snapshot NAME, ... */
int sandbox_ctl(struct sandbox *sb, const char *text, size_t len);

/* The status and info.json texts; the caller frees them. */
char *sandbox_status_text(struct sandbox *sb);
char *sandbox_info_json(struct sandbox *sb);

/* The timeout timer: terminates sandboxes past their deadline. */
void *sandbox_timer_main(void *arg);

#endif
