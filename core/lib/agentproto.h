/*
 * agentproto.h - the messages between seerfs and seerfs-agent, the PID 1 of
 * every local sandbox and of every docker container (core/lib/agentconn.c
 * is seerfs's side).
 *
 * One SOCK_SEQPACKET socket carries them, so each message is one datagram:
 * a fixed header, then `len` bytes of payload; SPAWN also carries the
 * child's stdin, stdout and stderr as SCM_RIGHTS file descriptors.
 * Requests carry a sequence number that the reply repeats; EXIT events
 * carry seq 0.
 */
#ifndef SEER_AGENTPROTO_H
#define SEER_AGENTPROTO_H

#include <stdint.h>

enum agent_type {
	AG_PING = 1,     /* -> REPLY */
	AG_SPAWN,        /* payload: cwd\0 argc strings\0 envc strings\0; arg = argc, val1 = envc; -> REPLY pid */
	AG_SIGNAL,       /* pid, arg = signal, val1 = whole tree; -> REPLY (val1 = processes signalled) */
	AG_FREEZE,       /* arg = 1 stop every process, 0 resume; -> REPLY */
	AG_COUNT,        /* -> REPLY val1 = processes other than the agent */
	AG_REPLY,        /* seq of the request; pid or arg = -errno */
	AG_EXIT,         /* event: pid ended; arg = wait status; val1/val2 = user/sys CPU µs */
};

struct agent_msg {
	uint32_t type;
	uint32_t seq;
	int32_t pid;
	int32_t arg;
	int64_t val1;
	int64_t val2;
	uint32_t len;
	uint32_t pad;
};

#define AGENT_MAX_PAYLOAD (200 * 1024)
#define AGENT_FD 3      /* the socket's number in the agent */

#endif
