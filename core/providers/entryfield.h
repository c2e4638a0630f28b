/*
 * entryfield.h - what every provider's providers-file entry parser does the
 * same way (core/providers/ssh/entry.c, core/providers/docker/entry.c):
 * string fields, the object's field names, the "timeout" field, paths
 * with "~" for the mounting user's home. Messages name the file and the
 * entry: "providers file FILE: entry "NAME": ...".
 */
#ifndef SEER_ENTRYFIELD_H
#define SEER_ENTRYFIELD_H

#include <json-c/json.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/types.h>

/* The string value of field k, or NULL (absent or not a string). */
const char *entry_str(struct json_object *o, const char *k);

/* Both NULL or both the same string. */
int entry_same_str(const char *a, const char *b);

/* The home of uid (the passwd entry, else $HOME, else "/"). */
const char *entry_home(uid_t uid);

/* A copy of p with a leading "~" or "~/" as uid's home (the files an entry
 * names are files of this machine); NULL for NULL. */
char *entry_local_path(uid_t uid, const char *p);

/* o is an object whose fields are all in known (NULL-ended); else -EINVAL
 * with a message. */
int entry_check_fields(struct json_object *o, const char *const *known, const char *file, const char *name,
		       char *err, size_t n);

/* The optional field "timeout", seconds (0 < t <= 3600), into *ms; left as
 * it is when absent. 0 or -EINVAL with a message. */
int entry_timeout(struct json_object *o, const char *file, const char *name, int *ms, char *err, size_t n);

/* A provider's interned entries: an entry written again (a providers file
 * reread, two files naming the same host) is the one already parsed, so
 * its connection and engine client are shared. */
struct entry_set {
	pthread_mutex_t lock;
	void **v;
	size_t n, cap;
};

void entry_set_init(struct entry_set *s);

/* The entry of s that same() finds equal to e (e is then freed with drop),
 * or e, now in s. */
void *entry_set_intern(struct entry_set *s, void *e, int (*same)(const void *a, const void *b),
		       void (*drop)(void *e));

/* Frees every entry with drop, then s's own storage. */
void entry_set_cleanup(struct entry_set *s, void (*drop)(void *e));

#endif
