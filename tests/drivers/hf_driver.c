/*
 * hf_driver.c - command-line driver for core/lib/hf.c, run by
 * tests/integration/test_hf_unit.py against tests/integration/hf_server.py
 * (or by hand against any hub endpoint).
 *
 *   hf_driver --selftest                    SHA-256 / SHA-1 known answers
 *   hf_driver --endpoint URL --cache DIR [--id ORG/NAME] [--rev REV]
 *             [--token T] [--parallel N] [--retries N] [--threads N]
 *             [--cancel-after BYTES]
 *
 * Options fall back to HF_TEST_ENDPOINT, HF_TEST_CACHE, HF_TEST_ID,
 * HF_TEST_TOKEN.  An unset endpoint leaves hf.c's own default
 * ($HF_ENDPOINT, then huggingface.co) in force.
 *
 * stdout gets one line per fetch: "OK <snapshot path>" or
 * "ERR <rc> <errno name> <message>"; stderr gets "LOG <line>" for every log
 * line, "FILEDONE <path> <bytes>" for every finished-file progress call and
 * "PROGRESS calls=<n> last=<done>/<total>" at the end.  The driver also checks
 * the progress contract itself (done never above total; final overall call
 * has done == total) and reports a breach as an error.
 * Exit status: 0 all fetches OK, 1 a fetch failed, 2 usage, 3 self-test failed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "core/lib/hf.h"
#include "core/lib/sha256.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Per-fetch observations from the callbacks. */
struct run {
	struct hf_opts o;
	const char *id, *rev;
	uint64_t cancel_after;
	volatile int cancel;
	unsigned long calls;
	uint64_t last_done, last_total;
	int breach;			/* progress contract broken */
	char breach_msg[256];
	int rc;
	char path[4096], err[2048];
};

/* Serialises output lines from concurrent fetches. */
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void on_log(void *arg, const char *line)
{
	(void)arg;
	pthread_mutex_lock(&out_lock);
	fprintf(stderr, "LOG %s\n", line);
	pthread_mutex_unlock(&out_lock);
}

static void on_progress(void *arg, const struct hf_progress *p)
{
	struct run *r = arg;
	if (p->done > p->total && !r->breach) {
		r->breach = 1;
		snprintf(r->breach_msg, sizeof(r->breach_msg), "progress done %" PRIu64 " > total %" PRIu64 " for %s",
			 p->done, p->total, p->file ? p->file : "(overall)");
	}
	if (p->file) {
		if (p->done == p->total) {
			pthread_mutex_lock(&out_lock);
			fprintf(stderr, "FILEDONE %s %" PRIu64 "\n", p->file, p->total);
			pthread_mutex_unlock(&out_lock);
		}
		return;
	}
	r->calls++;
	r->last_done = p->done;
	r->last_total = p->total;
	if (r->cancel_after && p->done >= r->cancel_after)
		r->cancel = 1;
}

static void *run_fetch(void *arg)
{
	struct run *r = arg;
	r->rc = hf_fetch(&r->o, r->id, r->rev, r->path, sizeof(r->path), r->err, sizeof(r->err));
	if (r->rc == 0 && !r->breach && r->calls && r->last_done != r->last_total) {
		r->breach = 1;
		snprintf(r->breach_msg, sizeof(r->breach_msg), "final progress %" PRIu64 "/%" PRIu64 " is not complete",
			 r->last_done, r->last_total);
	}
	return NULL;
}

/* ---- SHA self-test ---- */

static int check(const char *name, const char *got, const char *want)
{
	if (strcmp(got, want)) {
		fprintf(stderr, "selftest %s: got %s want %s\n", name, got, want);
		return 1;
	}
	return 0;
}

static void s256(const void *p, size_t n, size_t step, char out[65])
{
	struct sha256_ctx c;
	uint8_t d[32];
	sha256_init(&c);
	/* Feed in uneven pieces: exercises the partial-block path. */
	for (size_t off = 0; off < n; off += step)
		sha256_update(&c, (const char *)p + off, n - off < step ? n - off : step);
	sha256_final(&c, d);
	sha_hex(d, 32, out);
}

static void s1(const void *p, size_t n, size_t step, char out[41])
{
	struct sha1_ctx c;
	uint8_t d[20];
	sha1_init(&c);
	for (size_t off = 0; off < n; off += step)
		sha1_update(&c, (const char *)p + off, n - off < step ? n - off : step);
	sha1_final(&c, d);
	sha_hex(d, 20, out);
}

static int selftest(void)
{
	char h[65];
	int bad = 0;
	const char *abc56 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	char *mil = malloc(1000000);
	if (!mil)
		return 1;
	memset(mil, 'a', 1000000);

	s256("", 0, 1, h);
	bad |= check("sha256 empty", h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	s256("abc", 3, 1, h);
	bad |= check("sha256 abc", h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	for (size_t step = 1; step <= 64; step += 7) {
		s256(abc56, strlen(abc56), step, h);
		bad |= check("sha256 448-bit", h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	}
	s256(mil, 1000000, 4093, h);
	bad |= check("sha256 million a", h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

	s1("", 0, 1, h);
	bad |= check("sha1 empty", h, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
	s1("abc", 3, 1, h);
	bad |= check("sha1 abc", h, "a9993e364706816aba3e25717850c26c9cd0d89d");
	for (size_t step = 1; step <= 64; step += 9) {
		s1(abc56, strlen(abc56), step, h);
		bad |= check("sha1 448-bit", h, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
	}
	s1(mil, 1000000, 999, h);
	bad |= check("sha1 million a", h, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
	/* git's id of the empty blob: sha1("blob 0\0") */
	s1("blob 0", 7, 3, h);
	bad |= check("git empty blob", h, "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
	free(mil);
	printf(bad ? "SELFTEST FAIL\n" : "SELFTEST OK\n");
	return bad ? 3 : 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: hf_driver --selftest\n"
			"       hf_driver --endpoint URL --cache DIR [--id ORG/NAME] [--rev REV] [--token T]\n"
			"                 [--parallel N] [--retries N] [--threads N] [--cancel-after BYTES]\n");
}

static const char *env_or(const char *name, const char *dflt)
{
	const char *v = getenv(name);
	return v && *v ? v : dflt;
}

int main(int argc, char **argv)
{
	const char *endpoint = env_or("HF_TEST_ENDPOINT", NULL), *cache = env_or("HF_TEST_CACHE", NULL);
	const char *id = env_or("HF_TEST_ID", "seer/tiny-model"), *rev = NULL;
	const char *token = env_or("HF_TEST_TOKEN", NULL);
	int parallel = 0, retries = 0, threads = 1;
	uint64_t cancel_after = 0;

	for (int i = 1; i < argc; i += 2) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--selftest"))
			return selftest();
		if (!v) {
			usage();
			return 2;
		}
		if (!strcmp(a, "--endpoint"))
			endpoint = v;
		else if (!strcmp(a, "--cache"))
			cache = v;
		else if (!strcmp(a, "--id"))
			id = v;
		else if (!strcmp(a, "--rev"))
			rev = v;
		else if (!strcmp(a, "--token"))
			token = v;
		else if (!strcmp(a, "--parallel"))
			parallel = atoi(v);
		else if (!strcmp(a, "--retries"))
			retries = atoi(v);
		else if (!strcmp(a, "--threads"))
			threads = atoi(v);
		else if (!strcmp(a, "--cancel-after"))
			cancel_after = strtoull(v, NULL, 10);
		else {
			usage();
			return 2;
		}
	}
	if (!cache || threads < 1 || threads > 64) {
		usage();
		return 2;
	}

	struct run *runs = calloc((size_t)threads, sizeof(*runs));
	pthread_t *tids = calloc((size_t)threads, sizeof(*tids));
	if (!runs || !tids)
		return 1;
	for (int t = 0; t < threads; t++) {
		struct run *r = &runs[t];
		r->o = (struct hf_opts){
			.endpoint = endpoint,
			.token = token,
			.cache_dir = cache,
			.parallel = parallel,
			.max_retries = retries,
			.progress = on_progress,
			.log = on_log,
			.arg = r,
			.cancel = &r->cancel,
		};
		r->id = id;
		r->rev = rev;
		r->cancel_after = cancel_after;
	}
	if (threads == 1) {
		run_fetch(&runs[0]);
	} else {
		for (int t = 0; t < threads; t++)
			if (pthread_create(&tids[t], NULL, run_fetch, &runs[t]))
				return 1;
		for (int t = 0; t < threads; t++)
			pthread_join(tids[t], NULL);
	}

	int status = 0;
	for (int t = 0; t < threads; t++) {
		struct run *r = &runs[t];
		if (r->rc == 0 && r->breach) {
			printf("ERR -1 EPROTO progress contract: %s\n", r->breach_msg);
			status = 1;
		} else if (r->rc == 0) {
			printf("OK %s\n", r->path);
			if (t > 0 && strcmp(r->path, runs[0].path)) {
				printf("ERR -1 EPROTO threads disagree on the snapshot path\n");
				status = 1;
			}
		} else {
			printf("ERR %d %s %s\n", r->rc, strerrorname_np(-r->rc) ? strerrorname_np(-r->rc) : "?", r->err);
			status = 1;
		}
		fprintf(stderr, "PROGRESS calls=%lu last=%" PRIu64 "/%" PRIu64 "\n", r->calls, r->last_done,
			r->last_total);
	}
	free(runs);
	free(tids);
	return status;
}
