/*
 * registry.c - the registry of providers: one line per provider type, and
 * the reading of the providers file, whose entries name a type of this
 * table. The core finds a provider here and from then on only calls
 * through its struct seer_provider (core/provider.h).
 */
#include "core/registry.h"
#include "core/ctx.h"
#include "core/lib/util.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct seer_provider_type {
	const char *type;             /* its name in configs ("provider") and in the providers file ("type") */
	seer_entry_parse_fn parse;    /* its providers-file entries; NULL: built in under its type name only */
	const struct seer_provider *ops;
};

/* The registry: `registry[]`, one row per provider, made from the list in
 * core/providers/meson.build. A new provider is its folder
 * core/providers/NAME/ (NAME.h declaring seer_provider_NAME) and one line
 * in that list. */
#include "core/providers/registry_table.h"

_Static_assert(ARRAY_SIZE(registry) <= SEER_PROVIDER_SLOTS, "raise SEER_PROVIDER_SLOTS (core/ctx.h)");

int seer_providers_init(struct seer_ctx *ctx, char *err, size_t n)
{
	for (size_t i = 0; i < ARRAY_SIZE(registry); i++) {
		ctx->prov_ops[i] = registry[i].ops;
		int r = registry[i].ops->init(ctx, &ctx->prov_state[i]);
		if (r < 0) {
			snprintf(err, n, "cannot set up the %s provider: %s", registry[i].type, strerror(-r));
			return r;
		}
	}
	return 0;
}

void seer_providers_cleanup(struct seer_ctx *ctx)
{
	for (size_t i = ARRAY_SIZE(registry); i-- > 0;) {
		if (ctx->prov_state[i])
			registry[i].ops->cleanup(ctx, ctx->prov_state[i]);
		ctx->prov_state[i] = NULL;
	}
}

/* "ssh" or "\"a\" or \"b\"": the types an entry may have. */
static void entry_types(struct sbuf *b)
{
	int k = 0;
	for (size_t i = 0; i < ARRAY_SIZE(registry); i++)
		if (registry[i].parse)
			sbuf_printf(b, "%s\"%s\"", k++ ? " or " : "", registry[i].type);
}

/* Entry `name` of the providers file: its type's ops and parsed settings. */
static int lookup_entry(struct seer_ctx *ctx, const char *name, const struct seer_provider **prov,
			const void **settings, char *err, size_t n)
{
	const char *file = ctx->providers_file ? ctx->providers_file : "(none)";
	char *text = NULL;
	size_t len = 0;
	int r = ctx->providers_file ? read_file(ctx->providers_file, 1 << 20, &text, &len) : -ENOENT;
	if (r < 0) {
		snprintf(err, n,
			 "no provider named \"%s\": the providers file %s cannot be read (%s); built in is only \"local\", others are named there (docs/ssh.md)",
			 name, file, strerror(-r));
		return -ENOENT;
	}
	struct json_tokener *tok = json_tokener_new();
	struct json_object *root = json_tokener_parse_ex(tok, text, (int)len);
	enum json_tokener_error je = json_tokener_get_error(tok);
	json_tokener_free(tok);
	free(text);
	if (!root || je != json_tokener_success || !json_object_is_type(root, json_type_object)) {
		snprintf(err, n, "providers file %s is not a JSON object%s%s; fix it", file,
			 je != json_tokener_success ? ": " : "", je != json_tokener_success ? json_tokener_error_desc(je) : "");
		json_object_put(root);
		return -EINVAL;
	}
	struct json_object *o, *t;
	if (!json_object_object_get_ex(root, name, &o)) {
		snprintf(err, n, "no provider named \"%s\" in the providers file %s (built in: local); add it there", name,
			 file);
		json_object_put(root);
		return -ENOENT;
	}
	if (!json_object_is_type(o, json_type_object)) {
		snprintf(err, n, "providers file %s: entry \"%s\" must be an object; fix the file", file, name);
		json_object_put(root);
		return -EINVAL;
	}
	const char *type = json_object_object_get_ex(o, "type", &t) && json_object_is_type(t, json_type_string)
				   ? json_object_get_string(t)
				   : NULL;
	const struct seer_provider_type *pt = NULL;
	for (size_t i = 0; type && i < ARRAY_SIZE(registry); i++)
		if (registry[i].parse && !strcmp(registry[i].type, type))
			pt = &registry[i];
	if (!pt) {
		struct sbuf types = {0};
		entry_types(&types);
		snprintf(err, n, "providers file %s: entry \"%s\": field \"type\" must be %s%s%s", file, name, types.data,
			 type ? ", not " : " (missing)", type ? type : "");
		sbuf_free(&types);
		json_object_put(root);
		return -EINVAL;
	}
	r = pt->parse(ctx, seer_provider_state(ctx, pt->ops), file, name, o, settings, err, n);
	json_object_put(root);
	if (r == 0)
		*prov = pt->ops;
	return r;
}

int seer_provider_resolve(struct seer_ctx *ctx, const char *name, const struct seer_provider **prov,
			  const void **settings, char *err, size_t errlen)
{
	*settings = NULL;
	for (size_t i = 0; i < ARRAY_SIZE(registry); i++) {
		if (!registry[i].parse && !strcmp(registry[i].type, name)) {
			*prov = registry[i].ops;
			return 0;
		}
	}
	return lookup_entry(ctx, name, prov, settings, err, errlen);
}
