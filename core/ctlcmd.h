/*
 * ctlcmd.h - the text commands written to a sandbox's ctl file.
 *
 * One command per write: "terminate", "terminate snapshot=NAME", "retry",
 * "snapshot NAME". Parsing is separate from acting so it can be fuzzed.
 */
#ifndef SEER_CTLCMD_H
#define SEER_CTLCMD_H

#include <stddef.h>

enum ctl_op { CTL_TERMINATE, CTL_RETRY, CTL_SNAPSHOT };

struct ctl_cmd {
	enum ctl_op op;
	char name[72];   /* snapshot name, where the command takes one */
};

/* Returns 0, or -EINVAL with a message naming the problem. A trailing
 * newline (from echo) is allowed; anything else unexpected is refused. */
int ctl_parse(const char *text, size_t len, struct ctl_cmd *cmd, char *err, size_t errlen);

#endif
