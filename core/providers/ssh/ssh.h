/*
 * ssh.h - the `ssh` provider (sandboxes on hosts reached over SSH), as the
 * registry (core/registry.c) names it: its ops and the parser of its
 * providers-file entries (core/providers/ssh/entry.h).
 */
#ifndef SEER_SSH_H
#define SEER_SSH_H

#include "core/provider.h"
#include "core/providers/ssh/entry.h"

extern const struct seer_provider seer_provider_ssh;

#endif
