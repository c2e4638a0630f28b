/*
 * remote_exec.h - commands of a docker sandbox on a remote engine, where
 * no fd of this machine can be passed to the container. Where the image
 * has perl, through the sandbox's resident agent (core/lib/agent_remote.c)
 * over one Engine API exec stream that stays open, as on the ssh provider:
 * its commands, their signals and kills of trees, and root/'s file
 * operations beyond SFTP (dkr_fileop). Without perl, each command is an
 * Engine API exec over a hijacked stream (core/lib/bytestream_engine.c)
 * whose stdin, stdout and stderr this side pumps from and to the job's
 * fds. A one-line shell wrapper reports the command's pid in the
 * container before it execs the command, so signals (and kill of the
 * tree, through ps) reach it by an exec of kill.
 *
 * Functions return 0 (or a count) or a negative errno, with a message in
 * err that names the sandbox.
 */
#ifndef SEER_DOCKER_REMOTE_EXEC_H
#define SEER_DOCKER_REMOTE_EXEC_H

#include <stddef.h>

#include "core/provider.h"

struct engine;
struct dkr_jobs;

/* The jobs of one sandbox's container cid on eng. */
struct dkr_jobs *dkr_jobs_new(struct sandbox *sb, struct engine *eng, const char *cid, int timeout_ms);
/* Starts the agent in the container of image (its id; named: its name
 * for messages, or NULL). -ENOTSUP with what to log in err where it
 * cannot run (no perl): commands then go one exec each. */
int dkr_agent_start(struct dkr_jobs *j, const char *image, const char *named, char *err, size_t n);
/* A file operation for root/ through the agent (agent_remote_fileop);
 * -ENOTSUP without one. */
int dkr_fileop(struct dkr_jobs *j, const void *req, size_t len, char *reply, size_t cap, size_t *rlen);
/* Ends the agent, which kills its commands (reported killed); commands
 * of one exec each are left to dkr_jobs_free. */
void dkr_agent_stop(struct dkr_jobs *j);
/* Keeps j from being freed (dkr_jobs_free waits) until dkr_unhold: taken
 * under the lock that hands j out. */
void dkr_hold(struct dkr_jobs *j);
void dkr_unhold(struct dkr_jobs *j);
/* Starts req; *pid is the command's pid in the container. */
int dkr_spawn(struct dkr_jobs *j, const struct seer_spawn *req, int *pid, char *err, size_t n);
/* Signals pid (with tree, its descendants too): the number signalled,
 * -ESRCH for none. */
int dkr_signal(struct dkr_jobs *j, int pid, int sig, int tree);
/* Whether commands still run. */
int dkr_busy(struct dkr_jobs *j);
/* Waits up to wait_ms for the commands' streams to end (the container was
 * killed), reports those still open as killed, and frees j. */
void dkr_jobs_free(struct dkr_jobs *j, int wait_ms);

#endif
