/*
 * local.h - the `local` provider (bubblewrap sandboxes on this machine), as
 * the registry (core/registry.c) names it.
 */
#ifndef SEER_LOCAL_H
#define SEER_LOCAL_H

#include "core/provider.h"

extern const struct seer_provider seer_provider_local;

#endif
