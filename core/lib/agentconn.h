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

/* The members, under the lock unless said otherwise. */
#define AGENT_CONN_MEMBERS                                                                                   \
	int sock;                   /* to the agent; set before the reader starts */                        \
	pthread_mutex_t lock;       /* sock writes, waits, seq */                                           \
	pthread_cond_t cond;                                                                                \
	uint32_t seq;                                                                                       \
	struct agent_wait *waits;                                                                           \
	int dead;                   /* the agent went away */                                               \
	int stopping;               /* an end is expected (the owner is stopping the sandbox) */            \
	int paused;                 /* the agent cannot answer (frozen, paused): requests wait, then EBUSY */

struct agent_conn {
	AGENT_CONN_MEMBERS
};

/* The members in a provider's own struct, named directly there (d->sock)
 * and handed to the functions below as one (&d->NAME): a union of the same
 * members as an anonymous struct and as struct agent_conn. */
#define AGENT_CONN_GROUP(NAME)                                                                               \
	union {                                                                                             \
		struct {                                                                                    \
			AGENT_CONN_MEMBERS                                                                  \
		};                                                                                          \
		struct agent_conn NAME;                                                                     \
	}

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
