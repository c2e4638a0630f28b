/*
 * agentconn.h - seerfs's side of one connection to a seerfs-agent (the PID 1
 * of a local sandbox or of a docker container; the messages are in
 * agentproto.h): requests and their replies, and the reader that delivers
 * replies and passes EXIT events on. No knowledge of sandboxes: the owner
 * gives the socket, a callback for exits, and says what an end means.
 */
#ifndef SEER_AGENTCONN_H
#define SEER_AGENTCONN_H

#include "core/lib/agentproto.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define AGENT_RPC_TIMEOUT_S 20

struct agent_wait;

struct agent_conn {
	/* under the lock */
	int sock;                   /* to the agent; set before the reader starts */
	pthread_mutex_t lock;       /* sock writes, waits, seq */
	pthread_cond_t cond;
	uint32_t seq;
	struct agent_wait *waits;
	int dead;                   /* the agent went away */
	int stopping;               /* an end is expected (the owner is stopping the sandbox) */
	int paused;                 /* the agent cannot answer (frozen, paused): requests wait, then EBUSY */
	/* the owner's thread only */
	pthread_t reader;
	int reader_started;
	void *owner;                /* for the reader's body: whose connection (agentjobs.c: the sandbox) */
	const char *gone;           /* for the reader's body: what to say when the agent goes away */
};

/* No agent yet: sock -1, dead; the lock and cond made. */
void agentconn_init(struct agent_conn *c);
void agentconn_destroy(struct agent_conn *c);

/* Takes sock (it is the connection's from now on, closed by
 * agentconn_end), marks the connection live and not paused, and starts the
 * reader thread, body(c). 0 or -EAGAIN (no thread: sock is still kept). */
int agentconn_start(struct agent_conn *c, int sock, void *(*body)(void *));

/* An expected end: shuts the socket down (the agent kills its processes),
 * waits for the reader, closes the socket and marks the connection dead. */
void agentconn_end(struct agent_conn *c);

/* Sets paused and wakes the requests that wait on it. */
void agentconn_set_paused(struct agent_conn *c, int paused);

/* Sends one message with len bytes of payload and up to 3 fds (SCM_RIGHTS);
 * the caller holds the lock. 0 or -errno. */
int agentconn_send(struct agent_conn *c, struct agent_msg *m, const void *payload, size_t len, const int *fds,
		   int nfds);

/* Sends a request and waits (AGENT_RPC_TIMEOUT_S at most, a pause
 * included) for its reply, which the reader delivers into *out. 0, -EBUSY
 * (still paused), -ENOTCONN (no agent), -ETIMEDOUT or a send's -errno. */
int agentconn_rpc(struct agent_conn *c, struct agent_msg *m, const void *payload, size_t len, const int *fds,
		  int nfds, struct agent_msg *out);

/* The reader thread's body: reads messages until the socket ends, hands
 * AG_EXIT events to on_exit(arg, msg) and replies to their waiters; then
 * marks the connection dead and wakes every waiter. Returns 1 when the end
 * was expected (stopping was set), 0 when the agent went away. */
int agentconn_serve(struct agent_conn *c, void (*on_exit)(void *arg, const struct agent_msg *m), void *arg);

#endif
