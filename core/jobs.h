/*
 * jobs.h - commands run in a sandbox through its exec file.
 *
 * Each command is a job with a number (1, 2, ... per sandbox) and a record
 * on disk under state/sandboxes/NAME/jobs/N/: cmd, stdout, stderr,
 * output.idx (output: both interleaved as produced, an index into the two)
 * and meta.json. One I/O thread per seerfs
 * moves every job's pipes into those files, so output can be read again
 * from any offset, during the job and after it, across restarts.
 */
#ifndef SEER_JOBS_H
#define SEER_JOBS_H

#include <stdint.h>
#include <sys/types.h>

#include "core/provider.h"
#include "core/lib/util.h"

struct sandbox;
struct job;

enum job_state { JOB_RUNNING, JOB_EXITED, JOB_KILLED, JOB_TIMED_OUT, JOB_LOST };
enum job_stream { JS_STDOUT, JS_STDERR, JS_OUTPUT };

/* Called from sandbox.c */
void jobs_load(struct sandbox *sb);              /* at start-up: records; running ones become lost */
void jobs_free(struct sandbox *sb);
void jobs_close_all(struct sandbox *sb);         /* rmdir: forget every job */
void jobs_sandbox_stopping(struct sandbox *sb);  /* processes are going: running jobs end as killed */
void jobs_shutdown(struct sandbox *sb);          /* seerfs stops: running jobs are recorded as lost */
void jobs_status_lines(struct sandbox *sb, struct sbuf *b);
/* Called by providers when a spawned process ends (cookie = its pid). */
void jobs_on_exit(struct sandbox *sb, const struct seer_exit *e);

/* Starts a job from text written to exec (python: exec_python). `caller` is
 * the pid of the process that wrote it (for jobs/mine). Returns a
 * referenced job. -ENOTCONN when the sandbox is not running, -EAGAIN while
 * it provisions; the reason is in the sandbox's error. */
int jobs_start(struct sandbox *sb, const char *text, size_t len, int python, pid_t caller, struct job **out);
/* The same with the process given: argv (NULL: the shell or python3 as
 * above) runs with the sandbox's environment plus env (NULL-terminated
 * "NAME=value" strings, or NULL); `text` is what jobs/N/cmd shows;
 * no_timeout exempts the job from the config's exec_timeout (a session's
 * kernel lives as long as its session). */
struct job_spawn_opts {
	char *const *argv;
	char *const *env;
	int python;
	int no_timeout;
	int provisioning;   /* started by provisioning itself: the sandbox need not be running yet */
	int no_cap;         /* output_cap does not apply (a kernel's record channel, which carries
			     * every cell's output: each cell is capped as its own job) */
	/* Called without locks whenever the job's stdout grew, its pipes
	 * closed or it ended (a session's kernel: its records move on into
	 * the cells' jobs at once). */
	void (*on_change)(struct job *j, void *arg);
	void *on_change_arg;
	/* A fed job: no process. The job is a record and a RUNNING job whose
	 * output arrives through job_feed and which ends with job_feed_end
	 * (a notebook cell, run by its session's kernel). fed_pid is shown as
	 * its pid (the process that runs it). kill, signal N and the timeout
	 * call fed_signal(j, signo, fed_arg) instead of signalling anything;
	 * kill has already marked the job killed then. fed_signal may call
	 * job_feed and job_feed_end; it is never called with a jobs lock held. */
	int fed;
	int fed_pid;
	int (*fed_signal)(struct job *j, int sig, void *arg);
	void *fed_arg;
};
int jobs_start_opts(struct sandbox *sb, const char *text, size_t len, const struct job_spawn_opts *o, pid_t caller,
		    struct job **out);
/* The job's record directory in the state directory (STATE/sandboxes/NAME/jobs/N). */
const char *job_dir(const struct job *j);
/* The process that started the job closed its exec file: it counts as a
 * writer of the job's stdin until then. */
void job_owner_closed(struct job *j);

struct job *jobs_find(struct sandbox *sb, uint32_t n);   /* referenced, or NULL */
void job_ref(struct job *j);
void job_put(struct job *j);
uint32_t job_number(const struct job *j);
/* Newest job, or newest started by `caller`; 0 when none. */
uint32_t jobs_latest(struct sandbox *sb, pid_t caller);
/* Numbers of all jobs, ascending; caller frees. */
size_t jobs_numbers(struct sandbox *sb, uint32_t **out);
/* rm -r jobs/N: -EBUSY while running. */
int jobs_remove(struct sandbox *sb, uint32_t n);

/* State for readers. */
enum job_state job_state(struct job *j);
int job_finished(struct job *j);                 /* ended and all output on disk */
uint64_t job_length(struct job *j, enum job_stream s);
/* Waits up to timeout_us for the output to pass `have` bytes or the job to
 * end; 1 when one of them happened, 0 on timeout. */
int job_wait_output(struct job *j, uint64_t have, unsigned timeout_us);
/* Reading stdout, stderr or output: output is an index into the other two
 * (see jobs.c), so a stretch of it can lie in several pieces of the two
 * stream files. A reader holds the files open and a reference on the job. */
struct job_reader;
struct job_piece {
	int fd;
	uint64_t pos;
	size_t len;
};
int job_reader_open(struct job *j, enum job_stream s, struct job_reader **out);
void job_reader_close(struct job_reader *r);
/* Fills up to `max` pieces holding [off, off + size) of the file, cut at its
 * current length; returns their number (0 at the end) or -errno. Their fds
 * belong to the reader. */
int job_reader_map(struct job_reader *r, uint64_t off, size_t size, struct job_piece *v, int max);
char *job_cmd(struct job *j);
char *job_status_text(struct job *j);
char *job_exit_text(struct job *j);              /* "0\n", "3\n", "signal 9\n" */
uint64_t job_mtime_ns(struct job *j);

/* stdin: writers are counted; the last one to close sends EOF. */
int job_stdin_open(struct job *j);
int job_stdin_write(struct job *j, const char *data, size_t len);
void job_stdin_close(struct job *j);

/* A fed job's output (see job_spawn_opts): len bytes appended to its
 * stdout or stderr and to its output, as the I/O thread stores a pipe's
 * (the cap applies), and readers woken. -ESRCH once the job has ended. */
int job_feed(struct job *j, enum job_stream s, const char *data, size_t len);
/* Ends a fed job with a wait status (exit code << 8, or a signal number);
 * its state is killed or timed-out when asked so, else exited. Nothing
 * when it has ended already. */
void job_feed_end(struct job *j, int wstatus);
/* The pid jobs/N/status shows (the provider's id of the process). */
int job_pid(struct job *j);

/* One line written to jobs/N/ctl: kill, signal N, timeout SECONDS, eof. */
int job_ctl(struct job *j, const char *text, size_t len);

#endif
