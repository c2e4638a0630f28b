/*
 * gpu.h - NVIDIA GPUs for local sandboxes: is the asked type here, and which
 * device nodes and driver files a sandbox needs to use them.
 */
#ifndef SEER_GPU_H
#define SEER_GPU_H

#include <stddef.h>

/* 0 when the host has at least `count` GPUs whose name contains `type`
 * (case-insensitive); else -ENODEV with the reason. */
int gpu_check(const char *type, int count, const char *sandbox, char *err, size_t errlen);

/* Adds bubblewrap arguments giving the sandbox the first `count` GPUs. */
void gpu_bwrap_args(int count, void (*add)(void *arg, const char *s), void *arg);

#endif
