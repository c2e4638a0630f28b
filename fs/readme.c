/*
 * readme.c - the texts at the mount's root: MOUNT/README (everything a
 * person or an AI agent needs to drive sandboxes with file operations) and
 * MOUNT/CONFIG (every config.json field with its type, default and an
 * example). They are written in fs/mount_readme.txt and fs/mount_config.txt
 * and embedded at build time; tests/integration/test_newcomer.py runs the
 * examples they show, so the text and the behaviour cannot drift apart.
 */
#include "fs/readme.h"
#include "mount_readme_txt.h"
#include "mount_config_txt.h"

const char *const seerfs_readme = mount_readme_txt;
const char *const seerfs_config_ref = mount_config_txt;
