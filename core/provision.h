/*
 * provision.h - what a sandbox holds: local files and directories, hub
 * models, system packages, a Python venv with packages, git repositories and
 * the notebook / code-server processes, set up in a fixed order with every
 * step logged and timed.
 *
 * Steps (docs/provisioning.md): secrets (sandbox.c) -> local_files and
 * local_dirs (sources checked before the sandbox starts, copied after) ->
 * models (downloaded before the sandbox starts, because they are bound into
 * it by bubblewrap) -> system_packages -> python venv + python_packages ->
 * repos -> notebook / debug servers.
 *
 * Completed steps are recorded in STATE/sandboxes/NAME/provisioned.json with
 * a fingerprint of the config they were made from, so `retry` (and a seerfs
 * restart) resumes from the step that failed. Secret values never reach
 * that file, the log, status or info.json.
 */
#ifndef SEER_PROVISION_H
#define SEER_PROVISION_H

#include <stddef.h>

struct sandbox;
struct seer_config;
struct json_object;

/* Before prov->start: checks the local_files / local_dirs sources and
 * downloads the models (recording where they are for provision_bwrap_args).
 * Returns 0 or -errno with a message in err. */
int provision_prepare(struct sandbox *sb, const struct seer_config *cfg, char *err, size_t n);

/* After prov->start: copies the local files, checks the system packages,
 * builds the venv, clones the repos and starts the servers. */
int provision_run(struct sandbox *sb, const struct seer_config *cfg, char *err, size_t n);

/* Adds the bubblewrap arguments that show the prepared models read-only at
 * /models/ORG--NAME (called by the local provider while building argv). */
void provision_bwrap_args(struct sandbox *sb, void (*add)(void *arg, const char *s), void *arg);

/* Calls fn for every model provisioning prepared for sb (in the order of
 * models, bases after their PEFT model): its directory in the local model
 * cache (CACHE/models--ORG--NAME), the commit of its snapshot there
 * (snapshots/COMMIT) and its name under /models. Providers that are not on
 * this machine copy the snapshot to their host (core/providers/ssh/ssh_models.c). */
typedef void (*provision_model_fn)(void *arg, const char *dir, const char *commit, const char *mount);
void provision_models_each(struct sandbox *sb, provision_model_fn fn, void *arg);

/* Sets model_handles, repo_handles, jupyter_url and code_server_url of an
 * info.json object from the recorded provisioning state. */
void provision_info(struct sandbox *sb, struct json_object *o);

/* Whether /opt/venv was built by provisioning (PATH then starts with it). */
int provision_venv_ready(struct sandbox *sb);

#endif
