/*
 * entryfield.c - helpers the providers' entry parsers share (see
 * entryfield.h).
 */
#include "core/providers/entryfield.h"
#include "core/lib/util.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *entry_str(struct json_object *o, const char *k)
{
	struct json_object *v;
	if (!json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

int entry_same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

const char *entry_home(uid_t uid)
{
	struct passwd *pw = getpwuid(uid);
	if (pw && pw->pw_dir)
		return pw->pw_dir;
	const char *h = getenv("HOME");
	return h ? h : "/";
}

char *entry_local_path(uid_t uid, const char *p)
{
	if (!p)
		return NULL;
	if (p[0] == '~' && (p[1] == '/' || !p[1])) {
		struct sbuf b = {0};
		sbuf_printf(&b, "%s%s", entry_home(uid), p + 1);
		return b.data;
	}
	return xstrdup(p);
}

int entry_check_fields(struct json_object *o, const char *const *known, const char *file, const char *name,
		       char *err, size_t n)
{
	if (!json_object_is_type(o, json_type_object)) {
		snprintf(err, n, "providers file %s: entry \"%s\" must be an object; fix the file", file, name);
		return -EINVAL;
	}
	json_object_object_foreach(o, key, val) {
		(void)val;
		int ok = 0;
		for (int i = 0; known[i]; i++)
			ok |= !strcmp(key, known[i]);
		if (!ok) {
			snprintf(err, n, "providers file %s: entry \"%s\": unknown field \"%s\"; fix the file", file, name, key);
			return -EINVAL;
		}
	}
	return 0;
}

int entry_timeout(struct json_object *o, const char *file, const char *name, int *ms, char *err, size_t n)
{
	struct json_object *v;
	if (!json_object_object_get_ex(o, "timeout", &v))
		return 0;
	double t = json_object_get_double(v);
	if ((!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double)) || t <= 0 || t > 3600) {
		snprintf(err, n, "providers file %s: entry \"%s\": field \"timeout\" must be seconds (0 < t <= 3600)", file,
			 name);
		return -EINVAL;
	}
	*ms = (int)(t * 1000);
	return 0;
}

void entry_set_init(struct entry_set *s)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
}

void *entry_set_intern(struct entry_set *s, void *e, int (*same)(const void *a, const void *b),
		       void (*drop)(void *e))
{
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->n; i++) {
		if (same(s->v[i], e)) {
			void *x = s->v[i];
			pthread_mutex_unlock(&s->lock);
			drop(e);
			return x;
		}
	}
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 4;
		void **v = realloc(s->v, s->cap * sizeof(*v));
		if (!v)
			abort();   /* as xcalloc: bookkeeping of a few entries */
		s->v = v;
	}
	s->v[s->n++] = e;
	pthread_mutex_unlock(&s->lock);
	return e;
}

void entry_set_cleanup(struct entry_set *s, void (*drop)(void *e))
{
	for (size_t i = 0; i < s->n; i++)
		drop(s->v[i]);
	free(s->v);
	pthread_mutex_destroy(&s->lock);
	memset(s, 0, sizeof(*s));
}
