/*
 * sshexec.h - run a command on the remote host over an exec channel of an
 * ssh_conn (sshconn.h): stream its stdout/stderr to a callback, feed its
 * stdin, close stdin to signal EOF, and collect its exit status or the
 * signal that killed it.
 *
 * Output is buffered by the connection's I/O thread and handed to the
 * callback on the caller's thread, inside ssh_exec_write / ssh_exec_pump /
 * ssh_exec_wait; a slow callback therefore never stalls other channels, and
 * once 1 MiB is buffered reading pauses so SSH flow control slows the
 * remote command down instead of memory growing.
 *
 * Functions return 0 or a negative errno (-ETIMEDOUT when the deadline
 * passed, -ENOTCONN when the link died, -EPIPE writing after the command
 * closed its channel).
 */
#ifndef SEER_SSHEXEC_H
#define SEER_SSHEXEC_H

#include <stddef.h>
#include <sys/types.h>

#include "core/lib/sshconn.h"

struct ssh_exec;


#define SSH_EXEC_STDOUT 1
#define SSH_EXEC_STDERR 2

/* stream is SSH_EXEC_STDOUT or SSH_EXEC_STDERR.  Runs on the thread that
 * called ssh_exec_write/pump/wait. */
typedef void (*ssh_exec_output_fn)(void *ud, int stream, const void *data,
								   size_t len);

struct ssh_exec_status {
	int exited;      /* 1: exit_code is valid */
	int exit_code;
	char signal[32]; /* set instead when a signal killed it, e.g. "KILL" */
};

/* Starts `command` (run by the remote user's shell). */
int ssh_exec_start(struct ssh_conn *c, const char *command, ssh_exec_output_fn out,
				   void *ud, struct ssh_exec **e, char *err, size_t errlen);

/* Writes all of buf to the command's stdin, delivering output meanwhile so
 * a command that echoes cannot deadlock us.  timeout_ms bounds a stall
 * (no progress), not the whole write; 0: the connection's timeout; < 0: no
 * limit (link death still ends the wait). */
int ssh_exec_write(struct ssh_exec *e, const void *buf, size_t len, int timeout_ms);

/* From now on ssh_exec_write only writes: output reaches the callback
 * through ssh_exec_pump / ssh_exec_wait_event alone, on the one thread
 * that reads (core/lib/agent_remote.c, whose many writers must not deliver out
 * of order). */
void ssh_exec_reader_only(struct ssh_exec *e);

/* EOF on stdin once everything written before has been sent. */
int ssh_exec_close_stdin(struct ssh_exec *e);

/* Delivers buffered output without waiting.  Returns 1 once the command has
 * finished and all output was delivered, else 0 (or a negative errno). */
int ssh_exec_pump(struct ssh_exec *e);

/* Waits until something happens (output, drained input, the end) or
 * timeout_ms pass, delivering output; then as ssh_exec_pump, or
 * -ETIMEDOUT. */
int ssh_exec_wait_event(struct ssh_exec *e, int timeout_ms);

/* An fd (eventfd, owned by e) that turns readable whenever something
 * happens, for callers that also poll other fds; read it to re-arm, then
 * call ssh_exec_pump.  Negative errno when none can be made. */
int ssh_exec_event_fd(struct ssh_exec *e);

/* Waits for the command to finish, delivering output; fills st. */
int ssh_exec_wait(struct ssh_exec *e, int timeout_ms, struct ssh_exec_status *st);

/* Closes the channel if the command still runs (the remote sshd then sends
 * it SIGHUP) and frees e. */
void ssh_exec_free(struct ssh_exec *e);

/* Convenience: start, write `in` (may be NULL), close stdin, wait. */
int ssh_exec_run(struct ssh_conn *c, const char *command, const void *in,
				 size_t inlen, ssh_exec_output_fn out, void *ud,
				 int timeout_ms, struct ssh_exec_status *st, char *err,
				 size_t errlen);

#endif /* SEER_SSHEXEC_H */
