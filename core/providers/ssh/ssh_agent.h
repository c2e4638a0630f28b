/*
 * ssh_agent.h - the resident agent of a sandbox on an SSH host: one exec
 * channel that carries every command of the sandbox (core/providers/ssh/ssh_agent.pl on
 * the host, this file's C side here). See core/providers/ssh/ssh_agent.c.
 *
 * Functions return 0 or a negative errno, with a message in err.
 */
#ifndef SEER_SSH_AGENT_H
#define SEER_SSH_AGENT_H

#include <stddef.h>

#include "core/provider.h"
#include "core/lib/sshexec.h"

struct ssh_agent;

/* A command ended: pid as ssh_agent_spawn gave it, status as from
 * waitpid(); why is NULL, or says why it ended without its own status
 * (the link died, the sandbox stopped). Runs on the agent's reader
 * thread, after the command's output pipes were closed. */
typedef void (*ssh_agent_exit_fn)(void *ud, int pid, int status, const char *why);

/* Starts the agent on c: sh_lines are shell lines that end in
 * "exec ... bwrap ... -- /usr/bin/perl - ARGS" (the sandbox as its commands
 * see it; perl reads the agent from its stdin). Waits up to timeout_ms for
 * it to be ready. */
int ssh_agent_open(struct ssh_conn *c, const char *sh_lines, int timeout_ms, ssh_agent_exit_fn on_exit, void *ud,
		   struct ssh_agent **out, char *err, size_t n);

/* The pid of a's bubblewrap on the host (0 if unknown): its process group
 * holds the agent and everything its commands started. */
int ssh_agent_host_pid(struct ssh_agent *a);

/* What the agent said it could not do at its start (e.g. make itself not
 * dumpable), or "". */
const char *ssh_agent_warning(struct ssh_agent *a);

/* Whether a still runs on the link c. */
int ssh_agent_alive(struct ssh_agent *a, struct ssh_conn *c);

/* Starts a command; *pid is its pid inside the sandbox. */
int ssh_agent_spawn(struct ssh_agent *a, const struct seer_spawn *req, int *pid, char *err, size_t n);

/* Signals pid, or with tree its session and descendants. -ESRCH when
 * nothing was signalled. */
int ssh_agent_signal(struct ssh_agent *a, int pid, int sig, int tree, char *err, size_t n);

/* A file operation for root/ (the F frame of core/providers/ssh/ssh_agent.pl:
 * "OP\0PATH\0ARGS..."): its answer ("ERRNO\0FIELDS...") in reply, cut to
 * cap bytes, its length in *rlen. -ENOTCONN, -ETIMEDOUT when the agent
 * did not answer. */
int ssh_agent_fileop(struct ssh_agent *a, const void *req, size_t len, char *reply, size_t cap, size_t *rlen);

/* Whether commands of a still run. */
int ssh_agent_busy(struct ssh_agent *a);

/* Ends the agent (it kills every process of the sandbox), reports the
 * commands still running as killed, and frees a. */
void ssh_agent_close(struct ssh_agent *a);

#endif
