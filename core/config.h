/*
 * config.h - a sandbox's configuration: the fields of Seer's SandboxConfig,
 * parsed from config.json with json-c and checked field by field.
 *
 * Parsing never half-applies: seer_config_parse() either fills a complete
 * struct seer_config or returns -EINVAL with a message that names the field
 * (or the line and column of a JSON syntax error) and says why.
 */
#ifndef SEER_CONFIG_H
#define SEER_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define SEER_CONFIG_MAX (1024 * 1024)   /* bytes; larger configs get EFBIG */

struct seer_model {
	char *name;        /* "org/name" on the hub */
	char *var_name;    /* default "model" */
	char *revision;    /* default "main" */
	char *base_model;  /* required when is_peft */
	int hidden, is_peft;
};

struct seer_repo {
	char *url;         /* "org/repo", a URL, or a host path */
	char *dockerfile;
	char *install;
	char *branch;
};

struct seer_pair {         /* local_files / local_dirs entry */
	char *host, *sandbox;
};

struct seer_serve {        /* "serve" entry: an interface file and the name it is served as */
	char *file, *name;
};

struct seer_kv {
	char *key, *value;
};

enum seer_exec_mode { SEER_MODE_CLI, SEER_MODE_NOTEBOOK };
enum seer_on_timeout { SEER_TIMEOUT_TERMINATE, SEER_TIMEOUT_SNAPSHOT };

struct seer_config {
	char *provider;            /* default "local" */
	char *gpu;                 /* NULL: no GPU */
	int gpu_count;             /* default 1 */
	struct seer_model *models; size_t n_models;
	struct seer_repo *repos; size_t n_repos;
	char **python_packages; size_t n_python_packages;
	char **system_packages; size_t n_system_packages;
	char *python_version;
	char **secrets; size_t n_secrets;       /* names only; values never stored */
	struct seer_kv *env; size_t n_env;
	int64_t timeout;           /* seconds, default 3600 */
	int64_t exec_timeout;      /* seconds per job, 0 = none */
	struct seer_pair *local_files; size_t n_local_files;
	struct seer_pair *local_dirs; size_t n_local_dirs;
	int debug;
	enum seer_exec_mode execution_mode;
	int network;               /* default 1 */
	char *snapshot;            /* start from this snapshot */
	enum seer_on_timeout on_timeout;
	int64_t output_cap;        /* bytes per job stream, default 64 MiB */
	struct seer_serve *serve; size_t n_serve;   /* interface files served (core/sessions/functions.c) */
	int scoped;                /* other users reach only functions/ */
	char *image;               /* container image (docker provider); NULL: the provider entry's default */
	int64_t memory;            /* bytes, 0 = no limit (docker provider) */
	int64_t cpu_milli;         /* thousandths of a CPU, 0 = no limit (docker provider) */
};

/* Fills *c with defaults (an empty "{}" config). */
void seer_config_init(struct seer_config *c);
void seer_config_free(struct seer_config *c);

/* Parses len bytes of JSON. Returns 0, -EINVAL (message in err) or -EFBIG. */
int seer_config_parse(const char *text, size_t len, struct seer_config *c, char *err, size_t errlen);

/* Checks a text that may still be incomplete: 0 when it is valid or could
 * still become valid with more text, -EINVAL when it is already wrong. */
int seer_config_precheck(const char *text, size_t len, char *err, size_t errlen);

/* Which top-level fields differ between two valid config texts, as a
 * comma-separated list of names into buf ("" when equal). Used to decide
 * whether a running sandbox can take a new config live. */
void seer_config_diff(const char *a, const char *b, char *buf, size_t len);

/* The config of a sandbox started from a snapshot (a fork): `base` is the
 * source sandbox's config (the snapshot's info.json "config"), `over` the
 * new one. Every field of base is kept except local_files, local_dirs and
 * repos (what they made is in the snapshot's files already) and snapshot;
 * each field of over replaces base's, except env, which is merged key by
 * key (over's value wins). An unreadable base counts as {}. Returns the
 * merged text (malloc'd) in *out, or -EINVAL with a message when over is
 * not a JSON object. */
int seer_config_fork(const char *base, const char *over, size_t len, char **out, char *err, size_t errlen);

/* Fields that a running sandbox can take without restarting. */
int seer_config_live_field(const char *field);

#endif
