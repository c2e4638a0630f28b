/*
 * functions.h - served functions (Seer's ScopedSandbox.serve): an interface
 * file runs once in a persistent Python in the sandbox (core/sessions/seer_serve.py,
 * a job there), and its @expose functions are called through files:
 * MOUNT/NAME/functions/SET/FN (write a JSON object of arguments, read
 * {"ok": true, "result": ...} or {"ok": false, "error": ..., "traceback": ...}).
 *
 * Requests go to the server job's stdin, answers come back on its stdout
 * (one JSON line each), which jobs.c already stores and announces; calls
 * are answered one at a time, in the order they arrive.
 *
 * State on disk: STATE/sandboxes/NAME/functions.json lists what is served
 * (file, name), so a restarted seerfs serves it again.
 */
#ifndef SEER_FUNCTIONS_H
#define SEER_FUNCTIONS_H

#include <stddef.h>
#include <stdint.h>

struct sandbox;

void functions_load(struct sandbox *sb);
void functions_free(struct sandbox *sb);

/* Provisioning (restart: seerfs restarted): serves the config's "serve"
 * entries, or after a restart everything served before. Blocking; on
 * failure err says which file failed and why (the traceback). */
int functions_provision(struct sandbox *sb, int restart, char *err, size_t errlen);
/* "serve FILE as NAME" written to ctl. */
int functions_ctl(struct sandbox *sb, const char *text, size_t len);
/* Whether a ctl line is one functions_ctl takes. */
int functions_ctl_word(const char *text, size_t len);

/* Sets (served names) and their functions, by 1-based ids. */
size_t functions_sets(struct sandbox *sb, uint32_t **ids, char ***names);
uint32_t functions_set_find(struct sandbox *sb, const char *name);
int functions_set_name(struct sandbox *sb, uint32_t set, char *buf, size_t len);
size_t functions_fn_names(struct sandbox *sb, uint32_t set, char ***names);
uint32_t functions_fn_find(struct sandbox *sb, uint32_t set, const char *fn);
/* The README and the generated client (functions/SET.py); caller frees. */
char *functions_readme(struct sandbox *sb, uint32_t set);
char *functions_client(struct sandbox *sb, uint32_t set);
/* functions/SET/functions.json: [{name, signature, doc, schema, returns}]. */
char *functions_json(struct sandbox *sb, uint32_t set);

/* A call: its arguments (a JSON object, or an array of positional
 * arguments) are sent at once; *call names it. Bad JSON is answered
 * without a round trip. */
int functions_call_start(struct sandbox *sb, uint32_t set, uint32_t fn, const char *json, size_t len, uint64_t *call);
/* 1 and the answer (a JSON line, caller frees) when it is there, else 0. */
int functions_call_answer(struct sandbox *sb, uint32_t set, uint64_t call, char **out);
/* The caller went away: a running call is interrupted, a queued one dropped. */
void functions_call_drop(struct sandbox *sb, uint32_t set, uint64_t call);

#endif
