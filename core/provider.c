/*
 * provider.c - the table of providers; the core finds one by name here and
 * from then on only calls through its struct seer_provider.
 */
#include "core/provider.h"

#include <string.h>

static const struct seer_provider *const builtin[] = {&seer_provider_local, NULL};

const struct seer_provider *seer_provider_find(const char *name)
{
	for (int i = 0; builtin[i]; i++)
		if (!strcmp(builtin[i]->name, name))
			return builtin[i];
	return NULL;
}
