/*
 * docker.h - the `docker` provider (sandboxes in containers of a Docker
 * Engine API: dockerd, Podman's compatible service), as the registry
 * (core/registry.c) names it, and its providers-file entry parser
 * (entry.h).
 */
#ifndef SEER_DOCKER_H
#define SEER_DOCKER_H

#include "core/provider.h"
#include "core/providers/docker/entry.h"

extern const struct seer_provider seer_provider_docker;

#endif
