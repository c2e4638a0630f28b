/*
 * readme.h - the text of MOUNT/README, the newcomer's guide to the mount.
 */
#ifndef SEER_README_H
#define SEER_README_H
extern const char seerfs_readme[];
#endif
