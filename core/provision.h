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
struct seer_start;
struct json_object;

/* Before prov->start: checks the local_files / local_dirs sources and
 * downloads the models (recording where they are for provision_start_inputs).
 * Returns 0 or -errno with a message in err. */
int provision_prepare(struct sandbox *sb, const struct seer_config *cfg, char *err, size_t n);

/* After prov->start: copies the local files, checks the system packages,
 * builds the venv, clones the repos and starts the servers. */
int provision_run(struct sandbox *sb, const struct seer_config *cfg, char *err, size_t n);

/* Before prov->start: the models provision_prepare made ready and the
 * host directories to bind (pip's), for struct seer_start. */
void provision_start_inputs(struct sandbox *sb, struct seer_start *in);
/* Frees what a struct seer_start holds (snapshot_start_ref's part too). */
void provision_start_free(struct seer_start *in);

/* Sets model_handles, repo_handles, jupyter_url and code_server_url of an
 * info.json object from the recorded provisioning state. */
void provision_info(struct sandbox *sb, struct json_object *o);

#endif
