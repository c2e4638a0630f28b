/*
 * sessions.h - notebook sessions: a persistent Python (the kernel) in a
 * sandbox, whose cells run one after another in the same namespace.
 *
 * The kernel is a job of the sandbox (core/sessions/seer_kernel.py, started with
 * jobs_start_opts), and each cell is a job too, a fed one (core/jobs.h): no
 * process of its own. seerfs writes the cell's code to the kernel job's
 * stdin and moves the kernel's frames from that job's stdout into the
 * cell's job as they come, so a cell's stdout, stderr, output and exit are
 * a job's, and `kill` on it interrupts the cell. The kernel's end record
 * of each cell (its result, error and figures) is saved beside the cell's
 * job record: seerfs builds notebook.ipynb from those, so nothing of it
 * lives only in the sandbox or in memory.
 *
 * State on disk: STATE/sandboxes/NAME/sessions/S.json (the cells, the
 * kernel generation) and S.log; a cell's record is jobs/N/cell.json and
 * its figures jobs/N/fig-K.png.
 */
#ifndef SEER_SESSIONS_H
#define SEER_SESSIONS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct sandbox;
struct job;

/* Called from sandbox.c. */
void sessions_load(struct sandbox *sb);
void sessions_free(struct sandbox *sb);

/* mkdir sessions/NAME: starts the kernel when the sandbox runs. -EEXIST,
 * -EINVAL (bad name), -ENOTCONN/-EAGAIN (not running; error says why). */
int sessions_create(struct sandbox *sb, const char *name);
/* rmdir sessions/NAME: ends the kernel and its running cell; the cells'
 * job records stay. */
int sessions_remove(struct sandbox *sb, const char *name);
/* Id (> 0) of a session by name, or 0. */
uint32_t sessions_find(struct sandbox *sb, const char *name);
/* Name of a session by id into buf; -ENOENT. */
int sessions_name(struct sandbox *sb, uint32_t id, char *buf, size_t len);
/* Ids and names of every session; caller frees both arrays (and names). */
size_t sessions_list(struct sandbox *sb, uint32_t **ids, char ***names);

/* The largest cell, in bytes (a trailing newline aside). */
#define SESSIONS_CELL_MAX (16 << 20)
/* A cell refused for its size: sets the sandbox's error; -EFBIG. */
int sessions_cell_too_big(struct sandbox *sb, uint32_t id);
/* A write to sessions/NAME/exec: runs the code as the session's next cell;
 * returns the cell's job, referenced. Starts a fresh kernel when the last
 * one ended (the cell's stderr and the notebook say the state was lost). */
int sessions_cell_start(struct sandbox *sb, uint32_t id, const char *code, size_t len, pid_t caller,
			struct job **out);
/* One line written to sessions/NAME/ctl: restart, interrupt. */
int sessions_ctl(struct sandbox *sb, uint32_t id, const char *text, size_t len);
/* notebook.ipynb (nbformat 4) as it is now; caller frees. */
char *sessions_notebook(struct sandbox *sb, uint32_t id);
/* The session's log file path. */
int sessions_log_path(struct sandbox *sb, uint32_t id, char *buf, size_t len);
/* Number of figures of job n (0 unless it is a cell that made some), after
 * saving those its kernel reported as jobs/N/fig-K.png. */
unsigned sessions_job_figures(struct sandbox *sb, uint32_t n);

#endif
