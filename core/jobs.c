/*
 * jobs.c - placeholder until the exec issue lands.
 */
#include "core/jobs.h"
#include "core/sandbox.h"

void jobs_load(struct sandbox *sb) { (void)sb; }
void jobs_free(struct sandbox *sb) { (void)sb; }
void jobs_close_all(struct sandbox *sb) { (void)sb; }
void jobs_sandbox_stopping(struct sandbox *sb) { (void)sb; }
void jobs_status_lines(struct sandbox *sb, struct sbuf *b) { (void)sb; (void)b; }
void jobs_on_exit(struct sandbox *sb, const struct seer_exit *e) { (void)sb; (void)e; }
void jobs_shutdown(struct sandbox *sb) { (void)sb; }
