/*
 * jobs.h - commands run in a sandbox through its exec file: each is a job
 * with a directory of files (cmd, stdout, stderr, output, stdin, exit,
 * status, ctl), kept on disk under the state directory.
 */
#ifndef SEER_JOBS_H
#define SEER_JOBS_H

#include <stdint.h>
#include <sys/types.h>

#include "core/provider.h"
#include "core/util.h"

struct sandbox;

/* Called from sandbox.c */
void jobs_load(struct sandbox *sb);              /* at start-up: records; running ones become lost */
void jobs_free(struct sandbox *sb);
void jobs_close_all(struct sandbox *sb);         /* rmdir: forget every job */
void jobs_sandbox_stopping(struct sandbox *sb);  /* processes are going: running jobs end as killed */
void jobs_shutdown(struct sandbox *sb);          /* seerfs stops: running jobs are recorded as lost */
void jobs_status_lines(struct sandbox *sb, struct sbuf *b);
/* Called by providers when a spawned process ends (cookie = its pid). */
void jobs_on_exit(struct sandbox *sb, const struct seer_exit *e);

#endif
