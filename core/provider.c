/*
 * provider.c - the table of providers; the core finds one by name here and
 * from then on only calls through its struct seer_provider.
 */
#include "core/provider.h"
#include "core/providers.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const struct seer_provider *const builtin[] = {&seer_provider_local, NULL};

const struct seer_provider *seer_provider_find(const char *name)
{
	for (int i = 0; builtin[i]; i++)
		if (!strcmp(builtin[i]->name, name))
			return builtin[i];
	return NULL;
}

int seer_provider_resolve(struct seer_ctx *ctx, const char *name, const struct seer_provider **prov,
			  const void **settings, char *err, size_t errlen)
{
	*settings = NULL;
	if ((*prov = seer_provider_find(name)))
		return 0;
	const struct seer_provider_entry *e = NULL;
	int r = seer_providers_lookup(ctx, name, &e, err, errlen);
	if (r < 0)
		return r;
	if (!strcmp(e->type, "ssh")) {
		*prov = &seer_provider_ssh;
		*settings = e;
		return 0;
	}
	snprintf(err, errlen, "provider \"%s\" has type \"%s\", which this seerfs does not know", name, e->type);
	return -EINVAL;
}
