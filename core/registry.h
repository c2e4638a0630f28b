/*
 * registry.h - finding a provider: built in by its type name, or an entry
 * of the providers file (registry.c). Only the core's top level asks here;
 * providers see core/provider.h alone.
 */
#ifndef SEER_REGISTRY_H
#define SEER_REGISTRY_H

#include "core/provider.h"

/* Makes (init) and frees (cleanup) every provider's per-context state. */
int seer_providers_init(struct seer_ctx *ctx, char *err, size_t errlen);
void seer_providers_cleanup(struct seer_ctx *ctx);

/* Built-in name ("local"), or an entry of the providers file
 * (-o providers=FILE, read again on every call so that an edit applies to
 * the next sandbox): *prov and its *settings (NULL for built-ins).
 * -ENOENT/-EINVAL with a message in err (no sandbox name in it: the caller
 * adds it). */
int seer_provider_resolve(struct seer_ctx *ctx, const char *name, const struct seer_provider **prov,
			  const void **settings, char *err, size_t errlen);

#endif
