/*
 * link.h - the confinement rule for symlinks under root/, as one pure
 * function that both root/ backends (pass.c, sftpfs.c) call.
 *
 * The kernel resolves the text readlink returns relative to the reader's
 * own root and to the dentry chain it found the link in, not relative to
 * the sandbox: "/etc/passwd" planted in a sandbox would reach the host's
 * file, and "../../.." climbs out of root/ and of the mount. link_confine()
 * turns a sandbox's link text into one that stays inside root/ whatever the
 * components it names turn out to be (a symlinked directory included).
 * See docs/rootfs.md.
 *
 * No FUSE, no I/O, no locks: what the backend knows about where the link
 * stands is handed in (struct link_place), so the rule can be unit-tested
 * (tests/unit/test_link.c) and fuzzed (tests/fuzz/fuzz_link.c) alone.
 */
#ifndef SEER_LINK_H
#define SEER_LINK_H

#include <stddef.h>

/* Where a link stands, as far as its backend knows. */
struct link_place {
	/* Directories between the link's own directory and root/, as the
	 * kernel's dentry chain has them: exact, or a lower bound. */
	int depth;
	/* depth is the kernel's for sure (not only a lower bound). */
	int exact;
	/* root/ as an absolute path on the host (MOUNT/NAME/root), or NULL:
	 * where depth is not exact, an absolute path under it does not
	 * depend on the kernel's chain at all. */
	const char *root_path;
	/* The link's directory below root/ ("", "a/b" or "a/b/"); read only
	 * when link_confine() asked for it (LINK_NEED_DIR). */
	const char *dir;
};

/* link_confine() needs place->dir and it was NULL: fill it, call again. */
#define LINK_NEED_DIR 1

/* Whether the result of link_confine() for text can depend on
 * place->depth: 0 for texts that only go down (relative, no ".."
 * component), which are returned unchanged, so a backend for which the
 * depth is costly can skip finding it. */
int link_needs_depth(const char *text);

/* Writes into out (outsz bytes) the text readlink shows for a link whose
 * text is text:
 *  - relative texts that never climb above the sandbox's "/" and have no
 *    ".." after a name: unchanged;
 *  - otherwise, normalised lexically ("a/../b" -> "b", ".." at "/" stays
 *    at "/"), either as "../" once per level up to at most root/ plus the
 *    path below the sandbox's "/", or, where depth is not exact and
 *    root_path is known, as root_path plus the path inside.
 * A trailing "/" of text is kept. Returns 0, LINK_NEED_DIR (see above),
 * -ENAMETOOLONG when the result does not fit, or -ENOMEM. */
int link_confine(const char *text, const struct link_place *place, char *out, size_t outsz);

#endif
