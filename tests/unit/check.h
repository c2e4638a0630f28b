/*
 * check.h - the few macros the C unit tests share: CHECK counts a result and
 * prints the failing expression with a message; check_done() prints
 * "N passed, N failed" and gives the exit status.
 */
#ifndef SEER_TEST_CHECK_H
#define SEER_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_passed, check_failed;

#define CHECK(cond, ...)                                                              \
	do {                                                                          \
		if (cond) {                                                           \
			check_passed++;                                               \
		} else {                                                              \
			check_failed++;                                               \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                                 \
			fputc('\n', stderr);                                          \
		}                                                                     \
	} while (0)

/* A check that fails today because of a known bug in the code under test
 * (named in reason). It counts as passed while the bug is there and fails
 * once the bug is fixed, so that it is turned into a plain CHECK then (the
 * same contract as pytest's xfail(strict=True)). */
#define KNOWN_BUG(cond, reason)                                                              \
	do {                                                                                 \
		if (cond) {                                                                  \
			check_failed++;                                                      \
			fprintf(stderr, "FIXED %s:%d: %s: known bug fixed (%s): make it a CHECK\n", \
				__FILE__, __LINE__, #cond, reason);                          \
		} else {                                                                     \
			check_passed++;                                                      \
			fprintf(stderr, "KNOWN BUG %s:%d: %s\n", __FILE__, __LINE__, reason);    \
		}                                                                            \
	} while (0)

/* Whether s holds sub (a NULL s holds nothing). */
static inline int has(const char *s, const char *sub)
{
	return s && strstr(s, sub) != NULL;
}

/* A string to print, even when there is none. */
static inline const char *nn(const char *s)
{
	return s ? s : "(null)";
}

static inline int check_done(const char *what)
{
	printf("%s: %d passed, %d failed\n", what, check_passed, check_failed);
	return check_failed ? 1 : 0;
}

#endif
