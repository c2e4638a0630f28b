/*
 * readme.h - the texts at the mount's root: MOUNT/README, the newcomer's
 * guide, and MOUNT/CONFIG, the config field reference.
 */
#ifndef SEER_README_H
#define SEER_README_H
extern const char *const seerfs_readme;
extern const char *const seerfs_config_ref;
#endif
