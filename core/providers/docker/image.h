/*
 * image.h - the images a docker sandbox runs: its base image (present on
 * the engine, or pulled), and the layers that system_packages and
 * python_version/python_packages add, each committed as an image tagged
 * seerfs-layer:HASH, HASH a digest of what it was made from (the image it
 * was built on and the list). A second sandbox with the same image and lists
 * finds the tag and installs nothing.
 */
#ifndef SEER_DOCKER_IMAGE_H
#define SEER_DOCKER_IMAGE_H

#include <stddef.h>

struct sandbox;
struct seer_config;
struct seer_start;
struct docker_entry;

/* The id (sha256:...) of image ref on the engine, pulling it when absent. */
int dk_image_id(struct sandbox *sb, struct docker_entry *e, const char *ref, char *id, size_t idlen, char *err,
		size_t n);

/* The image the sandbox runs: base (an id) with cfg's package layers on
 * top, built where missing. *out gets its id. */
int dk_image_layers(struct sandbox *sb, struct docker_entry *e, const struct seer_config *cfg,
		    const struct seer_start *in, const char *base, char *out, size_t outlen, char *err, size_t n);

#endif
