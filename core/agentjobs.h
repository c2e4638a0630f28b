/*
 * agentjobs.h - a sandbox's connection to its seerfs-agent (core/lib/agentconn.h)
 * tied to the sandbox's jobs: the reader thread that hands the agent's EXIT
 * events to jobs_on_exit, and the requests that start and signal commands.
 * Shared by the local and the docker providers (a local engine).
 */
#ifndef SEER_AGENTJOBS_H
#define SEER_AGENTJOBS_H

#include "core/lib/agentconn.h"
#include "core/provider.h"
#include "core/root.h"

#include <stddef.h>

struct sandbox;

/* Starts the reader of sb's connection c over sock (agentconn_start): the
 * exits of commands go to the sandbox's jobs; when the agent goes away
 * unexpectedly, the sandbox's log says gone (the provider's own words: what
 * went and what happens next) and its running jobs end as killed. 0 or
 * -EAGAIN. */
int agentjobs_start(struct sandbox *sb, struct agent_conn *c, int sock, const char *gone);

/* Asks the agent to run req (its cwd, argv and envp as one payload, its
 * three fds passed along); *pid is the agent's id of the command. who
 * names the agent in messages ("its init"). 0 or -errno, with err said. */
int agentjobs_spawn(struct sandbox *sb, struct agent_conn *c, const char *who, const struct seer_spawn *req,
		    int *pid, char *err, size_t n);

/* Signals pid (its process tree with tree): the agent's answer, or -errno. */
int agentjobs_signal(struct agent_conn *c, int pid, int sig, int tree);

/* root/ of a sandbox whose "/" is the O_PATH fd *rootfd (read under c's
 * lock), there while the agent is: a duplicate of it in out (no SFTP,
 * writable; the other fields left as they are). 0, -ENOTCONN or -errno. */
int agentjobs_root(struct agent_conn *c, const int *rootfd, struct seer_root *out);

/* 1 when the agent runs commands, 0 when none, or -errno. */
int agentjobs_busy(struct agent_conn *c);

#endif
