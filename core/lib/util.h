/*
 * util.h - small helpers shared by core/ and fs/: files, paths, time, text.
 *
 * Everything here returns 0 (or a length) on success and a negative errno on
 * failure, so callers can pass errors straight up to the FUSE reply.
 */
#ifndef SEER_UTIL_H
#define SEER_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <sys/types.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* A growable byte buffer; the data is always NUL terminated. */
struct sbuf {
	char *data;
	size_t len, cap;
};
int sbuf_append(struct sbuf *b, const void *data, size_t len);
int sbuf_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int sbuf_vprintf(struct sbuf *b, const char *fmt, va_list ap);
void sbuf_free(struct sbuf *b);
/* Appends s as one single-quoted /bin/sh word. */
void sbuf_shell_quote(struct sbuf *b, const char *s);

/* Reads a whole file (at most max bytes, else -EFBIG) into a new buffer. */
int read_file(const char *path, size_t max, char **out, size_t *outlen);
/* Closes *fd if it is open and marks it closed (-1). */
void close_fd(int *fd);
/* All of buf to fd (EINTR retried; a pipe's reader gone is -EPIPE). */
int write_all(int fd, const void *buf, size_t len);
int read_file_at(int dirfd, const char *path, size_t max, char **out, size_t *outlen);
/* Writes a file so that readers see the old or the new content, never a mix:
 * temporary file, fsync, rename, fsync of the directory. */
int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode);
/* The same without the fsyncs: readers see the old or the new content,
 * never a mix, and a crash of seerfs loses nothing, but a crash of the
 * machine may (for records whose data is not fsynced either). */
int write_file_replace(const char *path, const void *data, size_t len, mode_t mode);
int mkdir_p(const char *path, mode_t mode);
int fsync_dir(const char *path);
/* syncfs(2) of the filesystem holding the directory path. */
int syncfs_dir(const char *path);

/* Wall clock in nanoseconds, and monotonic seconds. */
uint64_t now_ns(void);
double mono_s(void);
/* "2026-11-26T09:40:00.123Z" into buf (at least 32 bytes). */
void fmt_time_iso(uint64_t ns, char *buf, size_t len);

/* Sandbox and snapshot names: letters, digits, '-', '_', '.', 1..64, not "." or "..". */
int name_valid(const char *name);

/* The offset of the first byte of s[0..len) that is not well-formed UTF-8
 * (overlong forms, surrogates and code points past U+10FFFF included), or
 * (size_t)-1 when all of it is. */
size_t utf8_invalid_at(const char *s, size_t len);

/* The whole environment of the host helpers seerfs runs (bubblewrap,
 * dpkg-query): PATH alone. seerfs's own environment may hold the values of
 * every sandbox's secrets, which only that sandbox's processes may get. */
extern char *const seer_clean_environ[];

/* Runs argv[0] (searched in PATH) with seer_clean_environ, stdin and
 * stderr /dev/null, and its stdout into out (at most max bytes kept; out
 * may be NULL). Returns its wait status, or -errno when it could not run. */
int run_capture(char *const argv[], struct sbuf *out, size_t max);

/* True when s ends in the given suffix. */
int str_endswith(const char *s, const char *suffix);
/* strdup that aborts on out-of-memory (used for small bookkeeping strings). */
char *xstrdup(const char *s);
void *xcalloc(size_t n, size_t sz);

/* pip's settings in seerfs's environment (PIP_INDEX_URL, PIP_FIND_LINKS,
 * PIP_NO_INDEX, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST) as malloc'd
 * "NAME=VALUE" strings into out, which has room for PIP_ENV_MAX + 1; a NULL
 * follows the last. Returns how many; the caller frees them. */
#define PIP_ENV_MAX 5
size_t pip_env(char **out);

/* A python_version as seerfs takes it: digits and dots, under 16 bytes
 * ("3.11"), so "python" followed by it names a program. 1 or 0. */
int python_version_valid(const char *v);

#endif
