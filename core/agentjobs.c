/*
 * agentjobs.c - a sandbox's agent connection tied to its jobs: the reader
 * thread's body and the command requests that the local and the docker
 * providers share (see agentjobs.h).
 */
#include "core/agentjobs.h"
#include "core/jobs.h"
#include "core/sandbox.h"
#include "core/lib/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

static void agent_exited(void *arg, const struct agent_msg *m)
{
	struct seer_exit e = {.cookie = (uint64_t)m->pid, .status = m->arg, .utime_us = (uint64_t)m->val1,
			      .stime_us = (uint64_t)m->val2};
	jobs_on_exit(arg, &e);
}

static void *reader_main(void *arg)
{
	struct agent_conn *c = arg;
	struct sandbox *sb = c->owner;
	if (!agentconn_serve(c, agent_exited, sb)) {
		sandbox_log(sb, "%s", c->gone);
		jobs_sandbox_stopping(sb);
	}
	return NULL;
}

int agentjobs_start(struct sandbox *sb, struct agent_conn *c, int sock, const char *gone)
{
	c->owner = sb;
	c->gone = gone;
	return agentconn_start(c, sock, reader_main);
}

int agentjobs_spawn(struct sandbox *sb, struct agent_conn *c, const char *who, const struct seer_spawn *req,
		    int *pid, char *err, size_t n)
{
	struct sbuf p = {0};
	int argc = 0, envc = 0;
	const char *cwd = req->cwd ? req->cwd : "/workspace";
	sbuf_append(&p, cwd, strlen(cwd) + 1);
	for (; req->argv[argc]; argc++)
		sbuf_append(&p, req->argv[argc], strlen(req->argv[argc]) + 1);
	for (; req->envp && req->envp[envc]; envc++)
		sbuf_append(&p, req->envp[envc], strlen(req->envp[envc]) + 1);
	if (p.len > AGENT_MAX_PAYLOAD) {
		snprintf(err, n, "sandbox %s: the command and its environment are %zu bytes, over the limit of %d", sb->name,
			 p.len, AGENT_MAX_PAYLOAD);
		sbuf_free(&p);
		return -E2BIG;
	}
	int fds[3] = {req->fd_in, req->fd_out, req->fd_err};
	struct agent_msg m = {.type = AG_SPAWN, .arg = argc, .val1 = envc}, rep;
	int r = agentconn_rpc(c, &m, p.data, p.len, fds, 3, &rep);
	sbuf_free(&p);
	if (r < 0) {
		snprintf(err, n, "sandbox %s: %s did not take the command: %s", sb->name, who, strerror(-r));
		return r;
	}
	if (rep.pid < 0) {
		snprintf(err, n, "sandbox %s: cannot start %s: %s", sb->name, req->argv[0], strerror(-rep.pid));
		return rep.pid;
	}
	*pid = rep.pid;
	return 0;
}

int agentjobs_signal(struct agent_conn *c, int pid, int sig, int tree)
{
	struct agent_msg m = {.type = AG_SIGNAL, .pid = pid, .arg = sig, .val1 = tree}, rep;
	int r = agentconn_rpc(c, &m, NULL, 0, NULL, 0, &rep);
	return r < 0 ? r : rep.arg;
}

int agentjobs_busy(struct agent_conn *c)
{
	struct agent_msg m = {.type = AG_COUNT}, rep;
	int r = agentconn_rpc(c, &m, NULL, 0, NULL, 0, &rep);
	return r < 0 ? r : rep.val1 > 0;
}

int agentjobs_root(struct agent_conn *c, const int *rootfd, struct seer_root *out)
{
	pthread_mutex_lock(&c->lock);
	int ok = *rootfd >= 0 && !c->dead;
	int fd = ok ? fcntl(*rootfd, F_DUPFD_CLOEXEC, 3) : -1;
	int e = ok ? -errno : -ENOTCONN;
	pthread_mutex_unlock(&c->lock);
	if (fd < 0)
		return e;
	out->fd = fd;
	out->sftp = NULL;
	out->path[0] = '\0';
	out->readonly = 0;
	return 0;
}
