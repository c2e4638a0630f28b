/*
 * fuzz_ctlcmd.c - libFuzzer target for core/ctlcmd.c: ctl_parse on
 * arbitrary bytes.
 *
 * Invariants checked (a violation aborts, which libFuzzer reports):
 *   - the result is 0 or -EINVAL; a failure leaves a NUL-terminated message;
 *   - a success has a known op, and a NUL-terminated name that is a valid
 *     snapshot name when the command takes one (snapshot, terminate
 *     snapshot=) and empty when it takes none (retry, plain terminate);
 *   - parsing is a pure function: the same bytes give the same answer.
 *
 * Run:    build-fuzz/tests/fuzz_ctlcmd tests/fuzz/corpus/ctlcmd -max_total_time=20
 */
#include "core/ctlcmd.h"
#include "core/lib/util.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUIRE(c)                                                                   \
	do {                                                                         \
		if (!(c)) {                                                          \
			fprintf(stderr, "fuzz_ctlcmd: invariant failed: %s (line %d)\n", #c, __LINE__); \
			abort();                                                     \
		}                                                                    \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctl_cmd c, again;
	char err[128], err2[128];
	memset(err, 'x', sizeof(err));
	int r = ctl_parse((const char *)data, size, &c, err, sizeof(err));
	REQUIRE(r == 0 || r == -EINVAL);
	if (r < 0) {
		REQUIRE(memchr(err, '\0', sizeof(err)) != NULL && err[0]);
	} else {
		REQUIRE(c.op == CTL_TERMINATE || c.op == CTL_RETRY || c.op == CTL_SNAPSHOT);
		REQUIRE(memchr(c.name, '\0', sizeof(c.name)) != NULL);
		if (c.op == CTL_SNAPSHOT)
			REQUIRE(name_valid(c.name));
		if (c.op == CTL_RETRY)
			REQUIRE(c.name[0] == '\0');
		if (c.op == CTL_TERMINATE)
			REQUIRE(c.name[0] == '\0' || name_valid(c.name));
	}
	int r2 = ctl_parse((const char *)data, size, &again, err2, sizeof(err2));
	REQUIRE(r2 == r);
	if (r == 0)
		REQUIRE(again.op == c.op && !strcmp(again.name, c.name));
	else
		REQUIRE(!strcmp(err, err2));
	/* A tiny message buffer is never overrun. */
	char tiny[2];
	ctl_parse((const char *)data, size, &again, tiny, sizeof(tiny));
	return 0;
}
