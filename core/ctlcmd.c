/*
 * ctlcmd.c - parse the text commands written to a sandbox's ctl file.
 */
#include "core/ctlcmd.h"
#include "core/lib/util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define CTL_HELP "known commands: terminate, terminate snapshot=NAME, snapshot NAME, retry"

int ctl_parse(const char *text, size_t len, struct ctl_cmd *cmd, char *err, size_t errlen)
{
	char buf[256];
	memset(cmd, 0, sizeof(*cmd));
	while (len && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' ' || text[len - 1] == '\t'))
		len--;
	while (len && (*text == ' ' || *text == '\t')) {
		text++;
		len--;
	}
	if (len == 0) {
		snprintf(err, errlen, "empty command; %s", CTL_HELP);
		return -EINVAL;
	}
	if (len >= sizeof(buf) || memchr(text, '\0', len) || memchr(text, '\n', len)) {
		snprintf(err, errlen, "one command per write, at most %zu bytes; %s", sizeof(buf) - 1, CTL_HELP);
		return -EINVAL;
	}
	memcpy(buf, text, len);
	buf[len] = '\0';

	char *words[4] = {0};
	int n = 0;
	char *save = NULL;
	for (char *w = strtok_r(buf, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
		if (n == (int)ARRAY_SIZE(words)) {
			snprintf(err, errlen, "too many words; %s", CTL_HELP);
			return -EINVAL;
		}
		words[n++] = w;
	}
	if (!strcmp(words[0], "terminate")) {
		cmd->op = CTL_TERMINATE;
		if (n == 1)
			return 0;
		if (n == 2 && !strncmp(words[1], "snapshot=", 9)) {
			const char *name = words[1] + 9;
			if (!name_valid(name)) {
				snprintf(err, errlen, "\"%s\" is not a valid snapshot name (letters, digits, '-', '_', '.', at most 64)", name);
				return -EINVAL;
			}
			snprintf(cmd->name, sizeof(cmd->name), "%s", name);
			return 0;
		}
		snprintf(err, errlen, "usage: terminate [snapshot=NAME]");
		return -EINVAL;
	}
	if (!strcmp(words[0], "retry")) {
		cmd->op = CTL_RETRY;
		if (n == 1)
			return 0;
		snprintf(err, errlen, "usage: retry (it takes no arguments)");
		return -EINVAL;
	}
	if (!strcmp(words[0], "snapshot")) {
		cmd->op = CTL_SNAPSHOT;
		if (n != 2) {
			snprintf(err, errlen, "usage: snapshot NAME");
			return -EINVAL;
		}
		if (!name_valid(words[1])) {
			snprintf(err, errlen, "\"%s\" is not a valid snapshot name (letters, digits, '-', '_', '.', at most 64)", words[1]);
			return -EINVAL;
		}
		snprintf(cmd->name, sizeof(cmd->name), "%s", words[1]);
		return 0;
	}
	snprintf(err, errlen, "unknown command \"%.60s\"; %s", words[0], CTL_HELP);
	return -EINVAL;
}
