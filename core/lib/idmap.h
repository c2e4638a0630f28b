/*
 * idmap.h - which host ids a sandbox's ids are.
 *
 * Under an ordinary user a sandbox maps exactly one id: its root is the
 * mounting user. Under root that would make the sandbox's root the host's
 * root (core_pattern, sysctls and keyrings test the global uid 0, whatever
 * the capabilities), so a root seerfs maps the sandbox's ids 0..65535 onto a
 * subordinate range of the dedicated user `seerfs` (/etc/subuid and
 * /etc/subgid), as podman and Docker's userns-remap do. The user and its
 * range are created at mount time when missing (useradd, usermod).
 */
#ifndef SEER_IDMAP_H
#define SEER_IDMAP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SEER_IDMAP_USER "seerfs"
#define SEER_IDMAP_COUNT 65536u
#define SEER_ID_NOBODY 65534u
/* A tree's mark (beside it) that its owners are in the range already. */
#define SEER_IDMAP_MARK "idmapped"

struct seer_idmap {
	uid_t uid;       /* host uid of the sandbox's uid 0 */
	gid_t gid;       /* host gid of the sandbox's gid 0 */
	uint32_t count;  /* ids mapped, from 0: 1 under a user, 65536 under root */
};

/* Fills m for a seerfs run by (uid, gid): the identity map of that one id
 * for a user; for root the range of user `owner` (SEER_IDMAP_USER when
 * NULL), creating the user and a free range when missing. */
int seer_idmap_init(struct seer_idmap *m, uid_t uid, gid_t gid, const char *owner, char *err, size_t n);

/* The host id of a sandbox id; (uid_t)-1 when the sandbox has no such id. */
uid_t seer_idmap_host_uid(const struct seer_idmap *m, uid_t inside);
gid_t seer_idmap_host_gid(const struct seer_idmap *m, gid_t inside);
/* The sandbox's view of a host id: SEER_ID_NOBODY when it is not mapped. */
uid_t seer_idmap_sb_uid(const struct seer_idmap *m, uid_t host);
gid_t seer_idmap_sb_gid(const struct seer_idmap *m, gid_t host);
/* The /proc/PID/uid_map and gid_map texts ("0 HOST COUNT\n"). */
void seer_idmap_text(const struct seer_idmap *m, int gid, char *buf, size_t len);

#endif
