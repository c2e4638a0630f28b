/*
 * ssh_int.h - what the ssh provider's files (ssh.c, link.c, run.c,
 * confined.c, snap.c) share: the connection of an entry, a sandbox's
 * private data, a running command, and the functions one file gives the
 * others. Nothing outside core/providers/ssh/ includes it.
 */
#ifndef SEER_SSH_INT_H
#define SEER_SSH_INT_H

#include "core/provider.h"
#include "core/providers/ssh/entry.h"
#include "core/root.h"
#include "core/jobs.h"
#include "core/sandbox.h"
#include "core/lib/seccomp_filter.h"
#include "core/lib/sftp.h"
#include "core/lib/sshconn.h"
#include "core/lib/sshexec.h"
#include "core/providers/ssh/ssh_models.h"
#include "core/lib/agent_remote.h"
#include "core/providers/ssh/upload.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define RECONNECT_MIN_MS 250
#define RECONNECT_MAX_MS 5000
#define POLL_ALIVE_MS 500
#define PID_MARK "@@seer-pid "
/* WORKDIR/ISO_DIR on the host: the system call filter and the empty file
 * and directory that the /proc masks bind (iso_place). */
#define ISO_DIR ".seerfs-isolation"
#define ISO_FILTER "seccomp.bpf"
#define ISO_EMPTY_FILE "empty-file"
#define ISO_EMPTY_DIR "empty-dir"
/* The tag of the wait-status wrapper (run.c), by which ssh_signal (ssh.c)
 * passes over it to the command. */
#define EXIT_WRAP_TAG "seerfs-exit-wrap"

struct dead_link {
	struct dead_link *next;
	struct ssh_conn *conn;
	struct sftp_client *sftp;
};

struct ssh_sb;

/* What a new link found on the host (host_try). */
struct host_probe {
	int bwrap;                   /* a bwrap that works there */
	int pid1;                    /* and takes --as-pid-1 (0.8): the agent can be its namespace's init */
	char machine[64];            /* `uname -m` there */
	char iso_dir[2048];          /* WORKDIR/ISO_DIR, where the filter was placed (with a bwrap) */
	int iso_errno;               /* with a bwrap: why there is no filter (its sandboxes are refused) */
	char iso_err[512];
};

/* One per provider entry: the shared connection and its reconnect thread. */
struct ssh_host {
	const struct ssh_entry *ent;
	pthread_mutex_t lock;        /* everything below but sbs */
	pthread_cond_t cond;         /* CLOCK_MONOTONIC (ssh_cond_init) */
	struct ssh_conn *conn;              /* current link, possibly dead */
	struct sftp_client *sftp;
	struct host_probe probe;     /* probed on every new link */
	unsigned attempts;           /* finished connection attempts */
	int ever;                    /* connected at least once */
	int down_logged;             /* "disconnected" said for the current outage */
	int last_errno;
	char last_err[SSH_ERRMSG_LEN];
	int64_t next_try_ms;
	int backoff_ms;
	int kick;
	int thread_started;
	struct dead_link *graveyard;
	pthread_mutex_t sbs_lock;    /* the sandboxes on this host (for log lines) */
	struct ssh_sb *sbs;
};

struct ssh_job {
	struct ssh_job *next;
	struct ssh_sb *s;
	struct ssh_exec *e;
	int pid;
	int fd_in, fd_out, fd_err;
	int got_pid;
	struct sbuf head;            /* stdout before the pid line */
	char sigmark[48];            /* under bubblewrap: the wait-status line's prefix (exit_wrap_*) */
	struct sbuf errtail;         /* stderr held back: maybe the start of that line */
	int sig_seen;                /* the signal that line reported, or 0 */
	pthread_t th;
	int started;                 /* th exists */
	volatile int done;           /* th finished: join and free */
	volatile int abort;
};

/* The provider's private data of one sandbox (sb->priv). */
struct ssh_sb {
	struct ssh_sb *next;         /* ssh_host.sbs */
	struct sandbox *sb;
	struct ssh_host *h;
	pthread_mutex_t lock;        /* jobs, root, running */
	struct ssh_job *jobs;
	char root[2048];             /* WORKDIR/NAME, or "/" in direct mode */
	int bwrap;                   /* commands run under bubblewrap */
	char iso[2048];              /* with it: WORKDIR/ISO_DIR on the host (filter, empty mask files) */
	char machine[64];            /* the host's `uname -m` */
	int pid1;                    /* its bwrap takes --as-pid-1 */
	char agent_args[AGENT_ARGS_MAX];        /* the agent's arguments there (agent_remote_args): prctl's and its file operations' system call numbers */
	int agent_warned;            /* the agent's warning was logged */
	int network;
	int gpu;
	int running;
	int registered;
	struct ssh_models models;    /* hub models bound at /models (ssh_models.c) */
	/* root/ through the sandbox's own SFTP server (confined_*). */
	int confined;                /* root/ is the sandbox's "/" over sftp_server */
	char sftp_server[512];       /* the server binary's path on the host */
	struct sftp_client *sftp;           /* the running one, or NULL */
	struct ssh_conn *sftp_conn;         /* the link it runs on */
	int sftp_gone;               /* its end was logged */
	char sftp_err[256];          /* the last failure to start it that was logged */
	pthread_mutex_t sftp_lock;   /* one start at a time (lock order: sftp_lock, lock) */
	/* The resident agent that starts commands (agent_*). */
	pthread_mutex_t agent_lock;  /* agent and agent_off (lock order: agent_lock, lock) */
	struct agent_remote *agent;     /* or NULL */
	int agent_off;               /* it cannot run there: one bubblewrap per command */
	int fileops;                 /* root/'s file operations on agent or fagent in flight (under lock) */
	struct agent_remote *fagent;    /* root/'s owners' agent (fagent_acquire), or NULL; under agent_lock */
	int fagent_off;              /* it cannot run there: chown to another owner is EPERM */
	pthread_cond_t fileop_cv;    /* fileops dropped to 0 */
};

static inline const struct ssh_entry *entry_of(struct sandbox *sb)
{
	return sb->prov_settings;
}

/* link.c */
void ssh_describe(const struct ssh_entry *e, char *buf, size_t n);
int host_acquire(struct sandbox *sb, struct ssh_conn **oc, struct sftp_client **os, struct host_probe *probe, char *err,
			size_t n);
int host_acquire_h(struct ssh_host *h, const char *label, struct ssh_conn **oc, struct sftp_client **os,
			  struct host_probe *probe, char *err, size_t n);
struct ssh_host *host_get(struct seer_ctx *ctx, const struct ssh_entry *ce);
void host_log_all(struct ssh_host *h, const char *msg, int gone);
void *host_main(void *arg);
struct ssh_host *host_of(struct sandbox *sb);
int ssh_run_short(struct sandbox *sb, const char *cmd, struct sbuf *out, int *code, char *err, size_t n);
int ssh_sftp_mkdir_p(struct sftp_client *s, const char *path, uint32_t mode);
int ssh_signal_number(const char *name);
int ssh_workdir_abs(struct sftp_client *cli, const struct ssh_entry *e, char *out, size_t n);

/* run.c */
int agent_acquire(struct sandbox *sb, struct ssh_sb *s, struct agent_remote **out, char *err, size_t n);
void agent_stop(struct ssh_sb *s);
int fagent_acquire(struct sandbox *sb, struct ssh_sb *s, struct agent_remote **out);
void ssh_build_script(struct ssh_sb *s, const struct ssh_entry *e, const struct seer_spawn *req,
			 const char *sigmark, struct sbuf *b);
void ssh_bwrap_command(struct ssh_sb *s, const char *cwd, int network, int pid1, const char *extra, const char *cmd,
			  struct sbuf *b);
void ssh_channel_command(struct ssh_sb *s, const struct ssh_entry *e, const struct seer_spawn *req,
			    struct ssh_job *j, struct sbuf *w, struct sbuf *script);
extern const char ssh_exit_wrap_perl[];
void ssh_job_free(struct ssh_job *j);
void *ssh_job_main(void *arg);
void ssh_job_output(void *ud, int stream, const void *data, size_t len);
void ssh_reap(struct ssh_sb *s, int all);

/* confined.c */
int confined_client(struct sandbox *sb, struct ssh_sb *s, struct sftp_client **out);
void confined_command(struct ssh_sb *s, struct sbuf *cmd);
void confined_drop(struct ssh_sb *s);
int confined_probe(struct sandbox *sb, struct ssh_sb *s, char *err, size_t n);
void host_watch_confined(struct ssh_host *h);

/* snap.c */
int snap_prepare_root(struct sandbox *sb, const struct seer_start *in, const char *root, char *err, size_t n);
int ssh_snap_remove(struct seer_ctx *ctx, const void *settings, const char *snap, const char *where, char *err,
			   size_t n);
int ssh_snap_root(struct seer_ctx *ctx, const void *settings, const struct seer_snap_ref *snap,
			 struct seer_root *out, char *err, size_t n);
int ssh_snap_take(struct sandbox *sb, const char *snap, const char *layer, struct seer_snap_taken *out, char *err,
			 size_t n);

/* ssh.c */
struct ssh_sb *ssh_priv_of(struct sandbox *sb);
int ssh_signal(struct sandbox *sb, int pid, int sig, int tree);
int ssh_start(struct sandbox *sb, const struct seer_config *cfg, const struct seer_start *in, char *err,
		     size_t n);

#endif
