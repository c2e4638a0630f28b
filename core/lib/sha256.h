/*
 * sha256.h - small streaming SHA-256 and SHA-1, used by core/lib/hf.c to verify
 * files downloaded from the Hugging Face hub.
 *
 * SHA-256 checks LFS files (the hub publishes their sha256); SHA-1 checks
 * ordinary git files, whose published "oid" is the git blob id:
 * sha1("blob " SIZE "\0" CONTENT).  libcurl exports neither and the project
 * links no crypto library, so both live here (public-domain style code
 * written from FIPS 180-4).  Neither is meant for anything security critical
 * beyond comparing a download against a published digest.
 *
 * SHA-256 uses the x86 SHA extensions when the CPU has them (~10x faster,
 * which matters because hashing runs on the download loop's thread); define
 * SHA256_NO_ACCEL to force the portable code.
 */
#ifndef SEER_SHA256_H
#define SEER_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_DIGEST_LEN 32
#define SHA1_DIGEST_LEN 20

struct sha256_ctx {
	uint32_t h[8];
	uint64_t len;		/* bytes hashed so far */
	uint8_t buf[64];
	size_t n;		/* bytes waiting in buf */
	int accel;		/* use the x86 SHA extensions (probed at init) */
};

struct sha1_ctx {
	uint32_t h[5];
	uint64_t len;
	uint8_t buf[64];
	size_t n;
};

void sha256_init(struct sha256_ctx *c);
void sha256_update(struct sha256_ctx *c, const void *data, size_t len);
void sha256_final(struct sha256_ctx *c, uint8_t out[SHA256_DIGEST_LEN]);

void sha1_init(struct sha1_ctx *c);
void sha1_update(struct sha1_ctx *c, const void *data, size_t len);
void sha1_final(struct sha1_ctx *c, uint8_t out[SHA1_DIGEST_LEN]);

/* Writes 2*n lowercase hex digits and a NUL into out (2*n+1 bytes). */
void sha_hex(const uint8_t *digest, size_t n, char *out);

#endif
