/*
 * test_engine.c - the pure parts of the Engine API client (core/lib/engine.c,
 * engine_tar.c), with no engine: endpoint parsing, API version negotiation,
 * query escaping, docker's stdout/stderr framing fed in every split, TLS
 * options checked before any connection, and the tar extraction's refusals
 * (absolute names, "..", a path through a planted symlink, devices) on
 * archives built here with libarchive, beside a tree's round trip through
 * engine_tar_from_path.
 */
#include "core/lib/engine.h"
#include "core/lib/util.h"
#include "core/lib/walk.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

static void test_endpoints(void)
{
	struct engine_addr a;
	char err[512];
	CHECK(engine_parse_endpoint("unix:///run/docker.sock", &a, err, sizeof(err)) == 0 && a.is_unix &&
		      !strcmp(a.path, "/run/docker.sock"), "%s", err);
	CHECK(engine_parse_endpoint("tcp://127.0.0.1:2376", &a, err, sizeof(err)) == 0 && !a.is_unix &&
		      !strcmp(a.host, "127.0.0.1") && a.port == 2376, "%s", err);
	CHECK(engine_parse_endpoint("tcp://gpu-box.example.org:2375", &a, err, sizeof(err)) == 0 &&
		      !strcmp(a.host, "gpu-box.example.org") && a.port == 2375, "%s", err);
	CHECK(engine_parse_endpoint("tcp://[::1]:2376", &a, err, sizeof(err)) == 0 && !strcmp(a.host, "::1") &&
		      a.port == 2376, "%s", err);
	static const char *bad[] = { "", "unix://run/docker.sock", "http://host:2375", "tcp://host", "tcp://:2375",
				     "tcp://host:0", "tcp://host:65536", "tcp://host:12ab", "tcp://host:", "tcp://::1:2376",
				     "tcp://[::1]2376", "tcp://ho st:1", "ssh://user@host", NULL };
	for (int i = 0; bad[i]; i++) {
		err[0] = '\0';
		int r = engine_parse_endpoint(bad[i], &a, err, sizeof(err));
		CHECK(r == -EINVAL && err[0], "%s accepted (%d)", bad[i], r);
		CHECK(!bad[i][0] || has(err, bad[i]), "message does not name %s: %s", bad[i], err);
	}
	char longp[200];
	snprintf(longp, sizeof(longp), "unix:///%0150d", 0);
	CHECK(engine_parse_endpoint(longp, &a, err, sizeof(err)) == -EINVAL, "a 150-byte socket path accepted");
}

static void test_negotiate(void)
{
	char v[16];
	CHECK(engine_negotiate_api("1.43", v, sizeof(v)) == 0 && !strcmp(v, ENGINE_API_MAX), "newer server: %s", v);
	CHECK(engine_negotiate_api("1.41", v, sizeof(v)) == 0 && !strcmp(v, "1.41"), "dockerd 20.10 / Podman 4.3: %s", v);
	CHECK(engine_negotiate_api("1.40", v, sizeof(v)) == 0 && !strcmp(v, "1.40"), "an older server's own: %s", v);
	CHECK(engine_negotiate_api("1.39", v, sizeof(v)) == -ENOTSUP, "older than the minimum");
	CHECK(engine_negotiate_api("2.0", v, sizeof(v)) == 0 && !strcmp(v, ENGINE_API_MAX), "a 2.x server");
	static const char *bad[] = { NULL, "", "1", "1.", "v1.41", "1.41.2", "1.x", NULL };
	for (int i = 1; bad[i]; i++)
		CHECK(engine_negotiate_api(bad[i], v, sizeof(v)) == -EINVAL, "%s accepted", bad[i]);
	CHECK(engine_negotiate_api(NULL, v, sizeof(v)) == -EINVAL, "NULL accepted");
}

static void test_escape(void)
{
	char b[64];
	CHECK(engine_escape("/tmp/a b", b, sizeof(b)) == 14 && !strcmp(b, "%2Ftmp%2Fa%20b"), "%s", b);
	CHECK(engine_escape("seerfs.state=x&y", b, sizeof(b)) > 0 && !strcmp(b, "seerfs.state%3Dx%26y"), "%s", b);
	CHECK(engine_escape("abcdefgh", b, 8) == -ENAMETOOLONG, "no room for the NUL");
}

struct got {
	struct sbuf s[3];
	int calls;
};

static void on_out(void *ud, int stream, const void *p, size_t n)
{
	struct got *g = ud;
	g->calls++;
	if (stream >= 0 && stream <= 2)
		sbuf_append(&g->s[stream], p, n);
}

static size_t frame(unsigned char *o, int stream, const char *s)
{
	size_t n = strlen(s);
	o[0] = (unsigned char)stream;
	o[1] = o[2] = o[3] = 0;
	o[4] = (unsigned char)(n >> 24);
	o[5] = (unsigned char)(n >> 16);
	o[6] = (unsigned char)(n >> 8);
	o[7] = (unsigned char)n;
	memcpy(o + 8, s, n);
	return n + 8;
}

static void test_demux(void)
{
	unsigned char buf[256];
	size_t len = 0;
	len += frame(buf + len, 1, "hello ");
	len += frame(buf + len, 2, "oops\n");
	len += frame(buf + len, 1, "");
	len += frame(buf + len, 1, "world\n");
	/* every split point, and byte by byte */
	for (size_t cut = 0; cut <= len; cut++) {
		struct engine_demux d;
		struct got g = { 0 };
		engine_demux_init(&d, 0);
		int r = engine_demux_feed(&d, buf, cut, on_out, &g);
		r = r ?: engine_demux_feed(&d, buf + cut, len - cut, on_out, &g);
		CHECK(r == 0 && g.s[1].data && !strcmp(g.s[1].data, "hello world\n") && g.s[2].data &&
			      !strcmp(g.s[2].data, "oops\n") && engine_demux_at_boundary(&d),
		      "split at %zu: %d [%s] [%s]", cut, r, nn(g.s[1].data), nn(g.s[2].data));
		for (int i = 0; i < 3; i++)
			sbuf_free(&g.s[i]);
	}
	struct engine_demux d;
	struct got g = { 0 };
	engine_demux_init(&d, 0);
	for (size_t i = 0; i < len; i++)
		CHECK(engine_demux_feed(&d, buf + i, 1, on_out, &g) == 0, "byte %zu", i);
	CHECK(g.s[1].data && !strcmp(g.s[1].data, "hello world\n"), "byte by byte: %s", nn(g.s[1].data));
	for (int i = 0; i < 3; i++)
		sbuf_free(&g.s[i]);
	/* truncated inside a frame: not at a boundary */
	engine_demux_init(&d, 0);
	memset(&g, 0, sizeof(g));
	engine_demux_feed(&d, buf, 10, on_out, &g);
	CHECK(!engine_demux_at_boundary(&d), "a cut frame reads as complete");
	for (int i = 0; i < 3; i++)
		sbuf_free(&g.s[i]);
	/* not docker's framing: refused, and stays refused */
	engine_demux_init(&d, 0);
	memset(&g, 0, sizeof(g));
	CHECK(engine_demux_feed(&d, "HTTP/1.1 200 OK\r\n", 17, on_out, &g) == -EPROTO, "text accepted as frames");
	CHECK(engine_demux_feed(&d, buf, len, on_out, &g) == -EPROTO && g.calls == 0, "a failed demux went on");
	/* a tty stream: raw */
	engine_demux_init(&d, 1);
	memset(&g, 0, sizeof(g));
	CHECK(engine_demux_feed(&d, "raw\x01\x02", 5, on_out, &g) == 0 && g.s[1].len == 5, "raw mode");
	sbuf_free(&g.s[1]);
}

static void test_open_refusals(void)
{
	struct engine *e = NULL;
	char err[1024] = "";
	struct engine_opts o = { .endpoint = "tcp://127.0.0.1:2376", .ca = "/nonexistent/ca.pem", .timeout_s = 2 };
	CHECK(engine_open(&o, &e, err, sizeof(err)) == -EINVAL && has(err, "together") && has(err, "tcp://127.0.0.1:2376"),
	      "ca alone: %s", err);
	o.cert = "/nonexistent/cert.pem";
	o.key = "/nonexistent/key.pem";
	CHECK(engine_open(&o, &e, err, sizeof(err)) == -ENOENT && has(err, "/nonexistent/ca.pem"), "unreadable ca: %s", err);
	struct engine_opts u = { .endpoint = "unix:///nonexistent/seerfs-test/docker.sock", .timeout_s = 2 };
	double t0 = mono_s();
	int r = engine_open(&u, &e, err, sizeof(err));
	CHECK(r == -ENOENT && has(err, "unix:///nonexistent/seerfs-test/docker.sock") && mono_s() - t0 < 2,
	      "missing socket: %d %s", r, err);
	u.ca = "/etc/hostname";
	u.cert = u.key = "/etc/hostname";
	CHECK(engine_open(&u, &e, err, sizeof(err)) == -EINVAL && has(err, "tcp://"), "TLS on a unix socket: %s", err);
}

/* ---- tar ---- */

static char base[256];

struct mk {
	const char *name;
	int type;            /* AE_IFREG, AE_IFDIR, AE_IFLNK, AE_IFCHR, 0: hard link */
	const char *data;    /* content, link target */
};

static void *make_tar(const struct mk *m, size_t *len)
{
	size_t cap = 1 << 20;
	void *buf = calloc(1, cap);
	struct archive *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	archive_write_open_memory(a, buf, cap, len);
	for (; m->name; m++) {
		struct archive_entry *en = archive_entry_new();
		archive_entry_set_pathname(en, m->name);
		if (m->type == 0) {
			archive_entry_set_filetype(en, AE_IFREG);
			archive_entry_set_hardlink(en, m->data);
		} else {
			archive_entry_set_filetype(en, (unsigned)m->type);
			if (m->type == AE_IFLNK)
				archive_entry_set_symlink(en, m->data);
			if (m->type == AE_IFREG)
				archive_entry_set_size(en, (la_int64_t)strlen(m->data));
		}
		archive_entry_set_perm(en, m->type == AE_IFDIR ? 0755 : 0644);
		archive_write_header(a, en);
		if (m->type == AE_IFREG)
			archive_write_data(a, m->data, strlen(m->data));
		archive_entry_free(en);
	}
	archive_write_close(a);
	archive_write_free(a);
	return buf;
}

static int extract(const char *sub, const struct mk *m, char *err, size_t errlen)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", base, sub);
	mkdir(p, 0755);
	int dfd = open(p, O_RDONLY | O_DIRECTORY);
	size_t len = 0;
	void *tar = make_tar(m, &len);
	int r = engine_tar_extract(dfd, tar, len, err, errlen);
	free(tar);
	close(dfd);
	return r;
}

static int exists(const char *rel)
{
	char p[512];
	struct stat st;
	snprintf(p, sizeof(p), "%s/%s", base, rel);
	return lstat(p, &st) == 0;
}

static void test_tar_extract(void)
{
	char err[1024], p[512];
	const struct mk good[] = {
		{ "./d/", AE_IFDIR, NULL }, { "d/f.txt", AE_IFREG, "hello" }, { "d/l", AE_IFLNK, "/etc/passwd" },
		{ "d/h", 0, "d/f.txt" }, { "e/deep/er.txt", AE_IFREG, "x" }, { NULL, 0, NULL },
	};
	int r = extract("good", good, err, sizeof(err));
	CHECK(r == 0, "good tar: %d %s", r, err);
	char *txt = NULL;
	size_t n = 0;
	snprintf(p, sizeof(p), "%s/good/d/h", base);
	CHECK(read_file(p, 100, &txt, &n) == 0 && n == 5 && !memcmp(txt, "hello", 5), "hard link content");
	free(txt);
	char tgt[64] = "";
	snprintf(p, sizeof(p), "%s/good/d/l", base);
	CHECK(readlink(p, tgt, sizeof(tgt) - 1) == 11 && !strcmp(tgt, "/etc/passwd"), "symlink kept as a link: %s", tgt);
	CHECK(exists("good/e/deep/er.txt"), "missing parents made");

	const struct mk abs[] = { { "/tmp/seerfs-engine-abs", AE_IFREG, "x" }, { NULL, 0, NULL } };
	CHECK(extract("abs", abs, err, sizeof(err)) == -EINVAL && has(err, "/tmp/seerfs-engine-abs") &&
		      access("/tmp/seerfs-engine-abs", F_OK) != 0, "absolute name: %s", err);
	const struct mk dots[] = { { "a/../../dots-escaped", AE_IFREG, "x" }, { NULL, 0, NULL } };
	CHECK(extract("dots", dots, err, sizeof(err)) == -EINVAL && !exists("dots-escaped"), "'..': %s", err);
	/* a link to outside, then a file through it */
	const struct mk through[] = { { "out", AE_IFLNK, ".." }, { "out/through-escaped", AE_IFREG, "x" }, { NULL, 0, NULL } };
	r = extract("through", through, err, sizeof(err));
	CHECK(r == -ELOOP && !exists("through-escaped") && has(err, "symbolic link"), "through a link: %d %s", r, err);
	const struct mk abslink[] = { { "etc", AE_IFLNK, "/etc" }, { "etc/seerfs-engine-escaped", AE_IFREG, "x" }, { NULL, 0, NULL } };
	r = extract("abslink", abslink, err, sizeof(err));
	CHECK(r < 0 && access("/etc/seerfs-engine-escaped", F_OK) != 0, "through an absolute link: %d %s", r, err);
	/* writing a file over a planted link never writes through it */
	const struct mk over[] = { { "victim", AE_IFLNK, "../good/d/f.txt" }, { "victim", AE_IFREG, "owned" }, { NULL, 0, NULL } };
	r = extract("over", over, err, sizeof(err));
	snprintf(p, sizeof(p), "%s/good/d/f.txt", base);
	txt = NULL;
	CHECK(r == -ELOOP && read_file(p, 100, &txt, &n) == 0 && n == 5 && !memcmp(txt, "hello", 5),
	      "a file over a link wrote through it: %d %s", r, err);
	free(txt);
	const struct mk hl[] = { { "h", 0, "../good/d/f.txt" }, { NULL, 0, NULL } };
	CHECK(extract("hl", hl, err, sizeof(err)) == -EINVAL, "a hard link to outside: %s", err);
	const struct mk dev[] = { { "null", AE_IFCHR, NULL }, { NULL, 0, NULL } };
	CHECK(extract("dev", dev, err, sizeof(err)) == -EPERM && has(err, "device"), "a device: %s", err);
}

static void test_tar_build(void)
{
	char p[512], err[1024];
	snprintf(p, sizeof(p), "%s/src", base);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/src/sub", base);
	mkdir(p, 0750);
	snprintf(p, sizeof(p), "%s/src/sub/a.txt", base);
	write_file_replace(p, "abc", 3, 0640);
	snprintf(p, sizeof(p), "%s/src/ln", base);
	symlink("sub/a.txt", p);
	snprintf(p, sizeof(p), "%s/src/fifo", base);
	mkfifo(p, 0600);
	snprintf(p, sizeof(p), "%s/srclink", base);
	symlink("src", p);

	void *tar = NULL;
	size_t len = 0;
	snprintf(p, sizeof(p), "%s/src", base);
	int r = engine_tar_from_path(AT_FDCWD, p, "copy", &tar, &len, err, sizeof(err));
	CHECK(r == 0 && len > 0 && len % 512 == 0, "tar of a tree: %d %s", r, err);
	snprintf(p, sizeof(p), "%s/back", base);
	mkdir(p, 0755);
	int dfd = open(p, O_RDONLY | O_DIRECTORY);
	r = engine_tar_extract(dfd, tar, len, err, sizeof(err));
	close(dfd);
	free(tar);
	CHECK(r == 0, "its extraction: %s", err);
	struct stat st;
	snprintf(p, sizeof(p), "%s/back/copy/sub/a.txt", base);
	CHECK(stat(p, &st) == 0 && st.st_size == 3 && (st.st_mode & 0777) == 0640, "a file's size and mode");
	snprintf(p, sizeof(p), "%s/back/copy/sub", base);
	CHECK(stat(p, &st) == 0 && (st.st_mode & 0777) == 0750, "a directory's mode %o", st.st_mode & 0777);
	char tgt[64] = "";
	snprintf(p, sizeof(p), "%s/back/copy/ln", base);
	CHECK(readlink(p, tgt, sizeof(tgt) - 1) > 0 && !strcmp(tgt, "sub/a.txt"), "a link as a link: %s", tgt);
	CHECK(!exists("back/copy/fifo"), "a fifo is skipped");

	snprintf(p, sizeof(p), "%s/srclink", base);
	r = engine_tar_from_path(AT_FDCWD, p, "copy", &tar, &len, err, sizeof(err));
	CHECK(r == -ELOOP && has(err, "symbolic link") && !tar, "a link as the source: %d %s", r, err);
	snprintf(p, sizeof(p), "%s/src/fifo", base);
	r = engine_tar_from_path(AT_FDCWD, p, "f", &tar, &len, err, sizeof(err));
	CHECK(r == -EINVAL, "a fifo as the source: %d %s", r, err);
	snprintf(p, sizeof(p), "%s/src", base);
	CHECK(engine_tar_from_path(AT_FDCWD, p, "a/b", &tar, &len, err, sizeof(err)) == -EINVAL, "a dest with '/'");
	CHECK(engine_tar_from_path(AT_FDCWD, p, "..", &tar, &len, err, sizeof(err)) == -EINVAL, "a dest '..'");
}

int main(void)
{
	snprintf(base, sizeof(base), "/tmp/seerfs-test-engine-XXXXXX");
	if (!mkdtemp(base)) {
		perror("mkdtemp");
		return 1;
	}
	test_endpoints();
	test_negotiate();
	test_escape();
	test_demux();
	test_open_refusals();
	test_tar_extract();
	test_tar_build();
	walk_rm(base);
	return check_done("engine");
}
