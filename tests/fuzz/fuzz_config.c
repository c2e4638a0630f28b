/*
 * fuzz_config.c - libFuzzer target for core/config.c: seer_config_parse,
 * seer_config_precheck and seer_config_diff on arbitrary bytes.
 *
 * Invariants checked (a violation aborts, which libFuzzer reports):
 *   - parse returns 0, -EINVAL or -EFBIG, with a NUL-terminated message on
 *     failure; a success has sane defaults-or-values (provider set, ranges);
 *   - precheck never refuses a text that parse accepts;
 *   - diff of a text with itself is empty, and always NUL-terminated.
 *
 * Build:  CC=clang meson setup build-fuzz -Dfuzz=true && ninja -C build-fuzz
 * Run:    build-fuzz/tests/fuzz_config tests/fuzz/corpus/config -max_total_time=20
 */
#include "core/config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUIRE(c)                                                                   \
	do {                                                                         \
		if (!(c)) {                                                          \
			fprintf(stderr, "fuzz_config: invariant failed: %s (line %d)\n", #c, __LINE__); \
			abort();                                                     \
		}                                                                    \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	struct seer_config c;
	memset(err, 'x', sizeof(err));
	int r = seer_config_parse((const char *)data, size, &c, err, sizeof(err));
	REQUIRE(r == 0 || r == -EINVAL || r == -EFBIG || r == -ENOMEM);
	if (r == 0) {
		REQUIRE(c.provider && *c.provider);
		REQUIRE(c.timeout >= 1 && c.gpu_count >= 1 && c.gpu_count <= 64);
		REQUIRE(c.exec_timeout >= 0 && c.output_cap >= 4096);
		REQUIRE(c.network == 0 || c.network == 1);
		for (size_t i = 0; i < c.n_models; i++)
			REQUIRE(c.models[i].name && c.models[i].var_name && c.models[i].revision);
		for (size_t i = 0; i < c.n_local_dirs; i++)
			REQUIRE(c.local_dirs[i].sandbox[0] == '/');
		seer_config_free(&c);
	} else {
		REQUIRE(memchr(err, '\0', sizeof(err)) != NULL);
		REQUIRE(err[0] != '\0');
	}

	int p = seer_config_precheck((const char *)data, size, err, sizeof(err));
	REQUIRE(p == 0 || p == -EINVAL || p == -EFBIG || p == -ENOMEM);
	if (r == 0)
		REQUIRE(p == 0);

	/* diff wants NUL-terminated texts. */
	if (size <= 65536) {
		char *t = malloc(size + 1);
		if (!t)
			return 0;
		memcpy(t, data, size);
		t[size] = '\0';
		char buf[64];
		seer_config_diff(t, t, buf, sizeof(buf));
		REQUIRE(memchr(buf, '\0', sizeof(buf)) != NULL);
		if (r == 0)
			REQUIRE(buf[0] == '\0');
		seer_config_diff("{}", t, buf, sizeof(buf));
		REQUIRE(memchr(buf, '\0', sizeof(buf)) != NULL);
		char one[1];
		seer_config_diff(t, "{\"timeout\": 5}", one, sizeof(one));
		REQUIRE(one[0] == '\0');
		free(t);
	}
	return 0;
}
