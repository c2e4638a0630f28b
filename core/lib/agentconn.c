/*
 * agentconn.c - seerfs's side of a connection to a seerfs-agent: requests
 * matched to their replies by sequence number, and the reader thread's
 * loop. Shared by the local and the docker providers.
 */
#include "core/lib/agentconn.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

struct agent_wait {
	uint32_t seq;
	int done;
	struct agent_msg reply;
	struct agent_wait *next;
};

int agentconn_send(struct agent_conn *c, struct agent_msg *m, const void *payload, size_t len, const int *fds,
		   int nfds)
{
	char cbuf[CMSG_SPACE(sizeof(int) * 3)];
	struct iovec iov[2] = {{m, sizeof(*m)}, {(void *)payload, len}};
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = len ? 2 : 1};
	if (nfds < 0 || nfds > 3)
		return -EINVAL;
	if (nfds) {
		memset(cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
	}
	m->len = (uint32_t)len;
	ssize_t r;
	do
		r = sendmsg(c->sock, &mh, MSG_NOSIGNAL);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : 0;
}

int agentconn_rpc(struct agent_conn *c, struct agent_msg *m, const void *payload, size_t len, const int *fds,
		  int nfds, struct agent_msg *out)
{
	struct agent_wait w = {0};
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += AGENT_RPC_TIMEOUT_S;
	pthread_mutex_lock(&c->lock);
	while (c->paused && !c->dead)
		if (pthread_cond_timedwait(&c->cond, &c->lock, &ts) == ETIMEDOUT)
			break;
	if (c->dead || c->sock < 0 || c->paused) {
		int r = c->paused ? -EBUSY : -ENOTCONN;
		pthread_mutex_unlock(&c->lock);
		return r;
	}
	w.seq = m->seq = ++c->seq ? c->seq : ++c->seq;
	w.next = c->waits;
	c->waits = &w;
	int r = agentconn_send(c, m, payload, len, fds, nfds);
	while (r == 0 && !w.done && !c->dead)
		if (pthread_cond_timedwait(&c->cond, &c->lock, &ts) == ETIMEDOUT)
			r = -ETIMEDOUT;
	if (r == 0 && !w.done)
		r = -ENOTCONN;
	for (struct agent_wait **pp = &c->waits; *pp; pp = &(*pp)->next) {
		if (*pp == &w) {
			*pp = w.next;
			break;
		}
	}
	pthread_mutex_unlock(&c->lock);
	if (r == 0)
		*out = w.reply;
	return r;
}

int agentconn_serve(struct agent_conn *c, void (*on_exit)(void *arg, const struct agent_msg *m), void *arg)
{
	for (;;) {
		struct agent_msg m;
		ssize_t k = recv(c->sock, &m, sizeof(m), 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < (ssize_t)sizeof(m))
			break;
		if (m.type == AG_EXIT) {
			on_exit(arg, &m);
			continue;
		}
		pthread_mutex_lock(&c->lock);
		for (struct agent_wait *w = c->waits; w; w = w->next) {
			if (w->seq == m.seq) {
				w->reply = m;
				w->done = 1;
			}
		}
		pthread_cond_broadcast(&c->cond);
		pthread_mutex_unlock(&c->lock);
	}
	pthread_mutex_lock(&c->lock);
	c->dead = 1;
	int expected = c->stopping;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	return expected;
}

void agentconn_init(struct agent_conn *c)
{
	c->sock = -1;
	c->dead = 1;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
}

void agentconn_destroy(struct agent_conn *c)
{
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
}

int agentconn_start(struct agent_conn *c, int sock, void *(*body)(void *))
{
	pthread_mutex_lock(&c->lock);
	c->sock = sock;
	c->dead = 0;
	c->stopping = 0;
	c->paused = 0;
	pthread_mutex_unlock(&c->lock);
	if (pthread_create(&c->reader, NULL, body, c) != 0)
		return -EAGAIN;
	c->reader_started = 1;
	return 0;
}

void agentconn_end(struct agent_conn *c)
{
	pthread_mutex_lock(&c->lock);
	c->stopping = 1;
	int sock = c->sock;
	pthread_mutex_unlock(&c->lock);
	if (sock >= 0)
		shutdown(sock, SHUT_RDWR);
	if (c->reader_started) {
		pthread_join(c->reader, NULL);
		c->reader_started = 0;
	}
	pthread_mutex_lock(&c->lock);
	if (c->sock >= 0)
		close(c->sock);
	c->sock = -1;
	c->dead = 1;
	pthread_mutex_unlock(&c->lock);
}

void agentconn_set_paused(struct agent_conn *c, int paused)
{
	pthread_mutex_lock(&c->lock);
	c->paused = paused;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}
