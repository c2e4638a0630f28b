/*
 * bytes.h - big-endian 32-bit numbers in wire formats: SFTP packets
 * (core/lib/sftp.c) and the frames of a sandbox's agent (core/lib/agent_remote.c).
 */
#ifndef SEER_BYTES_H
#define SEER_BYTES_H

#include <stdint.h>

static inline void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static inline uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

#endif
