/*
 * test_ctlcmd.c - unit tests of core/ctlcmd.c, the parser of what is
 * written to a sandbox's ctl file.
 */
#include "core/ctlcmd.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <string.h>

static char err[512];

static int parse_n(const char *text, size_t len, struct ctl_cmd *c)
{
	err[0] = '\0';
	return ctl_parse(text, len, c, err, sizeof(err));
}

static int parse(const char *text, struct ctl_cmd *c)
{
	return parse_n(text, strlen(text), c);
}

static void ok(int line, const char *text, enum ctl_op op, const char *name)
{
	struct ctl_cmd c;
	int r = parse(text, &c);
	CHECK(r == 0, "line %d: \"%s\": %d (%s)", line, text, r, err);
	CHECK(r != 0 || c.op == op, "line %d: \"%s\": op %d, want %d", line, text, c.op, op);
	CHECK(r != 0 || !strcmp(c.name, name), "line %d: \"%s\": name \"%s\", want \"%s\"", line, text, c.name, name);
}
#define OK(text, op, name) ok(__LINE__, text, op, name)

static void bad(int line, const char *text, size_t len, const char *w1, const char *w2)
{
	struct ctl_cmd c;
	int r = parse_n(text, len, &c);
	CHECK(r == -EINVAL, "line %d: \"%.*s\": %d", line, (int)len, text, r);
	CHECK(has(err, w1), "line %d: \"%.*s\": message \"%s\" lacks \"%s\"", line, (int)len, text, err, w1);
	if (w2)
		CHECK(has(err, w2), "line %d: \"%.*s\": message \"%s\" lacks \"%s\"", line, (int)len, text, err, w2);
}
#define BAD(text, w1, w2) bad(__LINE__, text, strlen(text), w1, w2)
#define BAD_N(text, len, w1, w2) bad(__LINE__, text, len, w1, w2)

#define NAME64 "a234567890123456789012345678901234567890123456789012345678901234"
#define NAME65 NAME64 "5"

static void test_good(void)
{
	OK("terminate", CTL_TERMINATE, "");
	OK("terminate\n", CTL_TERMINATE, "");
	OK("  terminate \r\n", CTL_TERMINATE, "");
	OK("\tterminate\t\n\n", CTL_TERMINATE, "");
	OK("terminate snapshot=s1", CTL_TERMINATE, "s1");
	OK("terminate   snapshot=run-2.final_x\n", CTL_TERMINATE, "run-2.final_x");
	OK("terminate snapshot=" NAME64, CTL_TERMINATE, NAME64);
	OK("retry", CTL_RETRY, "");
	OK("retry\n", CTL_RETRY, "");
	OK("snapshot s1", CTL_SNAPSHOT, "s1");
	OK("snapshot\ts1\n", CTL_SNAPSHOT, "s1");
	OK("snapshot " NAME64 "\n", CTL_SNAPSHOT, NAME64);
}

static void test_bad(void)
{
	static const char help[] = "known commands: terminate";
	BAD("", "empty command", help);
	BAD("\n", "empty command", help);
	BAD(" \t\r\n", "empty command", NULL);
	BAD("bogus", "unknown command \"bogus\"", help);
	BAD("bogus\n", "unknown command \"bogus\"", NULL);
	BAD("TERMINATE", "unknown command \"TERMINATE\"", NULL);
	BAD("terminat", "unknown command", NULL);
	BAD("terminatex", "unknown command", NULL);
	BAD("stop", "unknown command \"stop\"", "retry");
	BAD("terminate now", "usage: terminate [snapshot=NAME]", NULL);
	BAD("terminate snapshot", "usage: terminate", NULL);
	BAD("terminate snapshot=", "not a valid snapshot name", NULL);
	BAD("terminate snapshot=a/b", "\"a/b\" is not a valid snapshot name", NULL);
	BAD("terminate snapshot=..", "not a valid snapshot name", NULL);
	BAD("terminate snapshot=" NAME65, "not a valid snapshot name", NULL);
	BAD("terminate snapshot=a snapshot=b", "usage: terminate", NULL);
	BAD("retry now", "usage: retry", NULL);
	BAD("snapshot", "usage: snapshot NAME", NULL);
	BAD("snapshot a b", "usage: snapshot NAME", NULL);
	BAD("snapshot .", "not a valid snapshot name", NULL);
	BAD("snapshot ..", "not a valid snapshot name", NULL);
	BAD("snapshot a*b", "\"a*b\" is not a valid snapshot name", NULL);
	BAD("snapshot " NAME65, "not a valid snapshot name", NULL);
	BAD("a b c d e", "too many words", help);
	BAD("terminate\nretry", "one command per write", NULL);
	BAD("terminate\nterminate\n", "one command per write", NULL);
	BAD_N("terminate\0x", 11, "one command per write", NULL);
	BAD_N("\0", 1, "one command per write", NULL);

	/* Long input: refused whole, never overflowing. */
	char longcmd[1000];
	memset(longcmd, 'a', sizeof(longcmd) - 1);
	longcmd[sizeof(longcmd) - 1] = '\0';
	BAD(longcmd, "at most 255 bytes", NULL);
	memcpy(longcmd, "snapshot ", 9);
	longcmd[256] = '\0';
	BAD(longcmd, "at most 255 bytes", NULL);
	longcmd[255] = '\0';                     /* 255 bytes: parsed, then the name is too long */
	BAD(longcmd, "not a valid snapshot name", NULL);
	/* An unknown command's name is cut to a readable length. */
	memset(longcmd, 'z', 200);
	longcmd[200] = '\0';
	BAD(longcmd, "unknown command", NULL);
	CHECK(strlen(err) < 200, "the message repeats a 200-byte word in full: %zu bytes", strlen(err));
}

static void test_buffers(void)
{
	/* A small error buffer is filled and terminated, never overrun. */
	struct ctl_cmd c;
	char e[6];
	memset(e, 'x', sizeof(e));
	int r = ctl_parse("bogus", 5, &c, e, sizeof(e));
	CHECK(r == -EINVAL && strlen(e) == sizeof(e) - 1, "small buffer: %d", r);
	/* The text need not be NUL-terminated: only len bytes are read. */
	static const char text[] = "retryXXXX";
	r = parse_n(text, 5, &c);
	CHECK(r == 0 && c.op == CTL_RETRY, "length-limited text: %d %s", r, err);
	/* The command is zeroed first: a failed parse leaves no stale name. */
	memset(&c, 0x55, sizeof(c));
	r = parse("terminate", &c);
	CHECK(r == 0 && c.name[0] == '\0', "stale name after parse");
}

int main(void)
{
	test_good();
	test_bad();
	test_buffers();
	return check_done("test_ctlcmd");
}
