/*
 * agent_remote.h - the resident agent of a remote sandbox: one byte stream
 * (bytestream.h) that carries every command of the sandbox and root/'s
 * file operations beyond SFTP (core/lib/agent_remote.pl there, this file's
 * C side here). The ssh provider runs it over an SSH exec channel in the
 * sandbox's bubblewrap, the docker provider over an Engine API exec in a
 * container of a remote engine. See core/lib/agent_remote.c.
 *
 * Functions return 0 or a negative errno, with a message in err.
 */
#ifndef SEER_AGENT_REMOTE_H
#define SEER_AGENT_REMOTE_H

#include <stddef.h>

#include "core/provider.h"
#include "core/lib/bytestream.h"

struct agent_remote;

/* A command ended: pid as agent_remote_spawn gave it, status as from
 * waitpid(); why is NULL, or says why it ended without its own status
 * (the link died, the sandbox stopped). Runs on the agent's reader
 * thread, after the command's output pipes were closed. */
typedef void (*agent_remote_exit_fn)(void *ud, int pid, int status, const char *why);

/* Starts the agent over the stream that open(arg, ...) opens: a process
 * that ends in `perl - PRCTL_NR SYSCALL_NRS [files]` (agent_remote_args)
 * where the sandbox's commands run (perl reads the agent from its stdin,
 * which this sends). A line "@@seer-pid N" before the agent's own output
 * gives agent_remote_host_pid. link is what the caller opened it on
 * (agent_remote_alive compares it); when the stream dies, its commands
 * end as killed by lost_sig, for the reason lost_why. Waits up to timeout_ms for it to be ready. */
int agent_remote_open(bytestream_open_fn open, void *arg, const void *link, int lost_sig, const char *lost_why, int timeout_ms,
		      agent_remote_exit_fn on_exit, void *ud, struct agent_remote **out, char *err, size_t n);

/* The agent's arguments for a machine of `uname -m` machine (NULL: none
 * known, so no prctl and no file operations): prctl's system call number
 * and those of its file operations ("openat=257,statx=332,..."), into buf
 * as "NR CALLS". */
#define AGENT_ARGS_MAX 640   /* room for them on x86_64 and aarch64 */
void agent_remote_args(const char *machine, char *buf, size_t n);

/* The pid of a's bubblewrap on the host (0 if unknown): its process group
 * holds the agent and everything its commands started. */
int agent_remote_host_pid(struct agent_remote *a);

/* What the agent said it could not do at its start (e.g. make itself not
 * dumpable), or "". */
const char *agent_remote_warning(struct agent_remote *a);

/* Whether a still runs on link (as given to agent_remote_open). */
int agent_remote_alive(struct agent_remote *a, const void *link);

/* Starts a command; *pid is its pid inside the sandbox. */
int agent_remote_spawn(struct agent_remote *a, const struct seer_spawn *req, int *pid, char *err, size_t n);

/* Signals pid, or with tree its session and descendants. -ESRCH when
 * nothing was signalled. */
int agent_remote_signal(struct agent_remote *a, int pid, int sig, int tree, char *err, size_t n);

/* A file operation for root/ (the F frame of core/lib/agent_remote.pl:
 * "OP\0PATH\0ARGS..."): its answer ("ERRNO\0FIELDS...") in reply, cut to
 * cap bytes, its length in *rlen. -ENOTCONN, -ETIMEDOUT when the agent
 * did not answer. */
int agent_remote_fileop(struct agent_remote *a, const void *req, size_t len, char *reply, size_t cap, size_t *rlen);

/* Whether commands of a still run. */
int agent_remote_busy(struct agent_remote *a);

/* Ends the agent (it kills every process of the sandbox), reports the
 * commands still running as killed, and frees a. */
void agent_remote_close(struct agent_remote *a);

#endif
