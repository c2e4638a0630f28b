/*
 * fsx.c - random-operation file consistency checker for seerfs.
 *
 * In the spirit of the classic fsx (BSD / xfstests), written from scratch.
 * It keeps an in-memory model of one file's contents and hammers the real
 * file (living on the filesystem under test) with a reproducible random
 * sequence of operations:
 *
 *   - pwrite at random offsets, including past EOF (creating holes)
 *   - pread, compared byte-for-byte against the model (also checks the
 *     short-read length at EOF)
 *   - ftruncate up and down
 *   - mmap reads, compared against the model; when the mapping covers the
 *     page holding EOF, the bytes after EOF in that page must read as zero
 *   - shared writable mmap writes followed by msync(MS_SYNC)
 *   - fsync / fdatasync
 *   - close and reopen, then a full read-back of the file (data must
 *     survive; close() errors are checked because FUSE reports deferred
 *     write errors from flush)
 *   - st_size (fstat) against the model size after every operation
 *   - a final close, reopen and full read-back comparison
 *
 * Usage: fsx [-N numops] [-S seed] [-l maxlen] [-m] [-q] FILE
 *
 * The seed is always printed on the first line so any failure can be
 * replayed exactly: the PRNG is our own xorshift64*, so the same seed gives
 * the same operation sequence on every machine and libc.
 *
 * Exit status: 0 all operations matched, 1 mismatch or failed system call,
 * 2 usage error.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FSX_DEFAULT_NUMOPS 100000ULL
#define FSX_DEFAULT_MAXLEN (256u * 1024u)
/* Cap a single transfer so one op does not rewrite the whole file. */
#define FSX_MAX_OPLEN (64u * 1024u)
/* Upper bound for -l: the model (plus owner map) lives in memory. */
#define FSX_MAXLEN_LIMIT (1024ULL * 1024 * 1024)
#define FSX_HISTORY 20
#define FSX_PROGRESS_EVERY 10000ULL
#define FSX_DUMP_ROWS 4
#define FSX_ROW 16

enum fsx_op {
	OP_WRITE,
	OP_READ,
	OP_TRUNCATE,
	OP_MAPREAD,
	OP_MAPWRITE,
	OP_FSYNC,
	OP_FDATASYNC,
	OP_REOPEN,
	OP_COUNT
};

static const char *const fsx_op_names[OP_COUNT] = {
	[OP_WRITE] = "WRITE",         [OP_READ] = "READ",
	[OP_TRUNCATE] = "TRUNCATE",   [OP_MAPREAD] = "MAPREAD",
	[OP_MAPWRITE] = "MAPWRITE",   [OP_FSYNC] = "FSYNC",
	[OP_FDATASYNC] = "FDATASYNC", [OP_REOPEN] = "REOPEN",
};

/*
 * Relative frequencies. Data-moving ops dominate; syncs and reopens are
 * rarer because they are slow and mostly matter as "now and then" events
 * between writes.
 */
static const unsigned fsx_default_weights[OP_COUNT] = {
	[OP_WRITE] = 30,   [OP_READ] = 25,     [OP_TRUNCATE] = 8,
	[OP_MAPREAD] = 10, [OP_MAPWRITE] = 10, [OP_FSYNC] = 3,
	[OP_FDATASYNC] = 3, [OP_REOPEN] = 3,
};

/* One remembered operation, for the history dump on failure. */
struct fsx_logent {
	uint64_t opnum;
	enum fsx_op op;
	size_t off;
	size_t len;
	size_t size_before;
	size_t size_after;
	bool done; /* false if the op failed before completing */
};

/* The single piece of run state; lives on main()'s stack. */
struct fsx_ctx {
	const char *path;
	int fd;
	uint64_t seed;
	uint64_t rng;
	uint64_t numops;
	uint64_t opnum; /* 1-based number of the op in progress */
	size_t maxlen;
	size_t maxoplen;
	size_t pagesize;
	bool quiet;
	unsigned weights[OP_COUNT];
	unsigned weight_total;

	unsigned char *model; /* maxlen bytes; always zero at and past size */
	/*
	 * For each byte of the model, the op number that last stored it
	 * (0 = never written since it became a hole / was truncated away).
	 * Lets a mismatch report say which op the expected data came from.
	 */
	uint32_t *owner;
	unsigned char *buf;   /* scratch, maxlen + 1 bytes */
	unsigned char *zeros; /* pagesize zero bytes, for EOF-tail checks */
	size_t size;          /* model file size */

	struct fsx_logent log[FSX_HISTORY];
	uint64_t log_count;
	uint64_t op_counts[OP_COUNT];
};

/* ---- PRNG: splitmix64 seeding + xorshift64* ------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

static void rng_seed(struct fsx_ctx *c, uint64_t seed)
{
	uint64_t s = seed;

	/* xorshift must never have an all-zero state; splitmix spreads
	 * small or zero seeds into a well-mixed state first. */
	c->rng = splitmix64(&s);
	if (c->rng == 0)
		c->rng = 0x2545F4914F6CDD1DULL;
}

static uint64_t rng_next(struct fsx_ctx *c)
{
	uint64_t x = c->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	c->rng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform-ish value in [0, n); the modulo bias is irrelevant here. */
static uint64_t rng_below(struct fsx_ctx *c, uint64_t n)
{
	return n ? rng_next(c) % n : 0;
}

static void rng_fill(struct fsx_ctx *c, unsigned char *p, size_t len)
{
	while (len > 0) {
		uint64_t r = rng_next(c);
		size_t n = len < sizeof(r) ? len : sizeof(r);

		memcpy(p, &r, n);
		p += n;
		len -= n;
	}
}

/* ---- small helpers --------------------------------------------------- */

static size_t min_sz(size_t a, size_t b)
{
	return a < b ? a : b;
}

static size_t round_up(size_t v, size_t align)
{
	return (v + align - 1) / align * align;
}

/* pwrite the whole buffer, retrying short writes and EINTR. */
static int write_full(int fd, const unsigned char *p, size_t len, size_t off)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO; /* no progress: treat as an I/O error */
		p += n;
		off += (size_t)n;
		len -= (size_t)n;
	}
	return 0;
}

/* pread up to len bytes, stopping at EOF; returns bytes read or -errno. */
static ssize_t read_full(int fd, unsigned char *p, size_t len, size_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, p + done, len - done, (off_t)(off + done));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

/* ---- history and failure reporting ---------------------------------- */

static struct fsx_logent *log_begin(struct fsx_ctx *c, enum fsx_op op,
				    size_t off, size_t len)
{
	struct fsx_logent *e = &c->log[c->log_count % FSX_HISTORY];

	c->log_count++;
	e->opnum = c->opnum;
	e->op = op;
	e->off = off;
	e->len = len;
	e->size_before = c->size;
	e->size_after = c->size;
	e->done = false;
	return e;
}

static void log_end(struct fsx_ctx *c, struct fsx_logent *e)
{
	e->size_after = c->size;
	e->done = true;
}

static void print_history(const struct fsx_ctx *c)
{
	uint64_t n = c->log_count < FSX_HISTORY ? c->log_count : FSX_HISTORY;

	fprintf(stderr, "fsx: last %" PRIu64 " operations (oldest first):\n", n);
	for (uint64_t i = c->log_count - n; i < c->log_count; i++) {
		const struct fsx_logent *e = &c->log[i % FSX_HISTORY];

		fprintf(stderr, "  %8" PRIu64 " %-9s", e->opnum,
			fsx_op_names[e->op]);
		switch (e->op) {
		case OP_WRITE:
		case OP_READ:
		case OP_MAPREAD:
		case OP_MAPWRITE:
			fprintf(stderr, " off 0x%06zx len 0x%05zx end 0x%06zx",
				e->off, e->len, e->off + e->len);
			break;
		case OP_TRUNCATE:
			fprintf(stderr, " to  0x%06zx%25s", e->off, "");
			break;
		default:
			fprintf(stderr, "%38s", "");
			break;
		}
		fprintf(stderr, "  size 0x%06zx", e->size_before);
		if (e->size_after != e->size_before)
			fprintf(stderr, " -> 0x%06zx", e->size_after);
		if (!e->done)
			fprintf(stderr, "  <-- FAILED");
		fputc('\n', stderr);
	}
}

/* Final words on any failure: history plus an exact replay command. */
static int fail(const struct fsx_ctx *c)
{
	fflush(stdout);
	print_history(c);
	fprintf(stderr,
		"fsx: FAILED at op %" PRIu64 " (seed %" PRIu64 ")\n"
		"fsx: replay with: fsx -S %" PRIu64 " -N %" PRIu64
		" -l %zu%s FILE\n",
		c->opnum, c->seed, c->seed, c->numops, c->maxlen,
		c->weights[OP_MAPREAD] ? "" : " -m");
	return 1;
}

static int sys_fail(const struct fsx_ctx *c, const char *call, int err,
		    size_t off, size_t len)
{
	fflush(stdout);
	fprintf(stderr,
		"fsx: op %" PRIu64 ": %s(off 0x%zx, len 0x%zx) failed: %s\n",
		c->opnum, call, off, len, strerror(-err));
	return err;
}

static void dump_row(const char *tag, size_t row_off, const unsigned char *p,
		     size_t base, size_t len)
{
	fprintf(stderr, "    %s 0x%08zx:", tag, row_off);
	for (size_t i = 0; i < FSX_ROW; i++) {
		size_t at = row_off + i;

		if (at >= base && at < base + len)
			fprintf(stderr, " %02x", p[at - base]);
		else
			fprintf(stderr, "   ");
	}
	fputc('\n', stderr);
}

/*
 * Compare len bytes read back from file offset 'off' (got) against what the
 * model says they must be (exp). On mismatch print where, how many bytes
 * differ, which op wrote the expected data, and a hex dump of expected vs
 * actual around the first difference with the differing bytes marked.
 */
static int check_bytes(const struct fsx_ctx *c, const char *what, size_t off,
		       const unsigned char *exp, const unsigned char *got,
		       size_t len)
{
	size_t first = len, last = 0, ndiff = 0;

	if (memcmp(exp, got, len) == 0)
		return 0;
	for (size_t i = 0; i < len; i++) {
		if (exp[i] != got[i]) {
			if (first == len)
				first = i;
			last = i;
			ndiff++;
		}
	}

	fflush(stdout);
	fprintf(stderr,
		"fsx: MISMATCH in %s at op %" PRIu64 " (range off 0x%zx len 0x%zx)\n"
		"fsx: first differing file offset 0x%zx: expected 0x%02x, got 0x%02x\n"
		"fsx: %zu byte(s) differ, last at file offset 0x%zx\n",
		what, c->opnum, off, len, off + first, exp[first], got[first],
		ndiff, off + last);
	/* Only bytes inside the model have a recorded writer. */
	if (exp == c->model + off && off + first < c->maxlen) {
		uint32_t w = c->owner[off + first];

		if (w)
			fprintf(stderr,
				"fsx: expected byte was written by op %" PRIu32 "\n",
				w);
		else
			fprintf(stderr,
				"fsx: expected byte is a hole / truncated region (zero)\n");
	}

	/* Rows aligned to 16 bytes of file offset, one before the diff. */
	size_t start = (off + first) / FSX_ROW * FSX_ROW;

	if (start >= FSX_ROW && start - FSX_ROW >= off / FSX_ROW * FSX_ROW)
		start -= FSX_ROW;
	for (int r = 0; r < FSX_DUMP_ROWS; r++) {
		size_t row = start + (size_t)r * FSX_ROW;

		if (row >= off + len)
			break;
		char marks[FSX_ROW * 3 + 1];
		bool any = false;

		for (size_t i = 0; i < FSX_ROW; i++) {
			size_t at = row + i;
			bool d = at >= off && at < off + len &&
				 exp[at - off] != got[at - off];

			memcpy(marks + i * 3, d ? " ^^" : "   ", 3);
			any |= d;
		}
		marks[FSX_ROW * 3] = '\0';
		dump_row("expected", row, exp, off, len);
		dump_row("actual  ", row, got, off, len);
		if (any) /* mark differing bytes, trimming trailing blanks */
			fprintf(stderr, "%24s%.*s\n", "",
				(int)(strrchr(marks, '^') - marks + 1), marks);
	}
	return -EIO;
}

/* st_size must always agree with the model. */
static int check_size(const struct fsx_ctx *c, const char *what)
{
	struct stat st;

	if (fstat(c->fd, &st) < 0)
		return sys_fail(c, "fstat", -errno, 0, 0);
	if ((uint64_t)st.st_size != c->size) {
		fflush(stdout);
		fprintf(stderr,
			"fsx: SIZE MISMATCH in %s at op %" PRIu64
			": expected 0x%zx (%zu), st_size 0x%jx (%jd)\n",
			what, c->opnum, c->size, c->size, (intmax_t)st.st_size,
			(intmax_t)st.st_size);
		return -EIO;
	}
	return 0;
}

/* ---- model maintenance ---------------------------------------------- */

static void model_store(struct fsx_ctx *c, size_t off, const unsigned char *p,
			size_t len)
{
	memcpy(c->model + off, p, len);
	for (size_t i = 0; i < len; i++)
		c->owner[off + i] = (uint32_t)c->opnum;
	if (off + len > c->size)
		c->size = off + len;
}

static void model_resize(struct fsx_ctx *c, size_t newsize)
{
	/* Keep the invariant "model is zero past size", so growing the
	 * file later (truncate up, write past EOF) expects zeros there. */
	if (newsize < c->size) {
		memset(c->model + newsize, 0, c->size - newsize);
		memset(c->owner + newsize, 0,
		       (c->size - newsize) * sizeof(*c->owner));
	}
	c->size = newsize;
}

/* ---- choosing offsets and lengths ----------------------------------- */

/*
 * Pick an offset in [0, limit). Mostly uniform, but bias some picks to the
 * current EOF neighbourhood and to page boundaries, where filesystems
 * (partial pages, hole/EOF zeroing) tend to get things wrong.
 */
static size_t pick_off(struct fsx_ctx *c, size_t limit)
{
	uint64_t kind = rng_below(c, 8);
	int64_t v;

	if (limit <= 1)
		return 0;
	if (kind == 0) {
		int64_t pg = (int64_t)c->pagesize;

		v = (int64_t)c->size + (int64_t)rng_below(c, 2 * (uint64_t)pg + 1) - pg;
	} else if (kind == 1) {
		v = (int64_t)(rng_below(c, limit) / c->pagesize * c->pagesize);
	} else {
		v = (int64_t)rng_below(c, limit);
	}
	if (v < 0)
		v = 0;
	if ((uint64_t)v >= limit)
		v = (int64_t)limit - 1;
	return (size_t)v;
}

/* Pick a length in [1, max]; a quarter of the time keep it tiny. */
static size_t pick_len(struct fsx_ctx *c, size_t max)
{
	if (max <= 1)
		return 1;
	if (rng_below(c, 4) == 0)
		return 1 + (size_t)rng_below(c, min_sz(max, 16));
	return 1 + (size_t)rng_below(c, max);
}

/* ---- operations: each returns 0 or a negative errno ----------------- */

static int op_write(struct fsx_ctx *c)
{
	size_t off = pick_off(c, c->maxlen);
	size_t len = pick_len(c, min_sz(c->maxoplen, c->maxlen - off));
	struct fsx_logent *e = log_begin(c, OP_WRITE, off, len);
	int r;

	rng_fill(c, c->buf, len);
	r = write_full(c->fd, c->buf, len, off);
	if (r)
		return sys_fail(c, "pwrite", r, off, len);
	model_store(c, off, c->buf, len);
	log_end(c, e);
	return 0;
}

static int op_read(struct fsx_ctx *c)
{
	/* Allow reads that start or run past EOF: the short count matters. */
	size_t limit = min_sz(c->size + c->pagesize, c->maxlen);
	size_t off = pick_off(c, limit);
	size_t len = pick_len(c, c->maxoplen);
	size_t expect = off < c->size ? min_sz(len, c->size - off) : 0;
	struct fsx_logent *e = log_begin(c, OP_READ, off, len);
	ssize_t n;
	int r;

	n = read_full(c->fd, c->buf, len, off);
	if (n < 0)
		return sys_fail(c, "pread", (int)n, off, len);
	if ((size_t)n != expect) {
		fflush(stdout);
		fprintf(stderr,
			"fsx: SHORT/LONG READ at op %" PRIu64
			": pread(off 0x%zx, len 0x%zx) returned 0x%zx, expected 0x%zx (model size 0x%zx)\n",
			c->opnum, off, len, (size_t)n, expect, c->size);
		r = check_bytes(c, "pread", off, c->model + off, c->buf,
				min_sz((size_t)n, expect));
		(void)r;
		return -EIO;
	}
	r = check_bytes(c, "pread", off, c->model + off, c->buf, expect);
	if (r)
		return r;
	log_end(c, e);
	return 0;
}

static int op_truncate(struct fsx_ctx *c)
{
	size_t newsize;
	struct fsx_logent *e;

	/* Same EOF/page bias as offsets, plus the occasional truncate to 0. */
	if (rng_below(c, 16) == 0)
		newsize = 0;
	else
		newsize = pick_off(c, c->maxlen + 1);
	e = log_begin(c, OP_TRUNCATE, newsize, 0);
	if (ftruncate(c->fd, (off_t)newsize) < 0)
		return sys_fail(c, "ftruncate", -errno, newsize, 0);
	model_resize(c, newsize);
	log_end(c, e);
	return 0;
}

static int op_mapread(struct fsx_ctx *c)
{
	size_t off, len, pg_off, map_len, eof_page_end = 0;
	struct fsx_logent *e;
	unsigned char *p;
	int r;

	off = pick_off(c, c->size);
	len = pick_len(c, min_sz(c->maxoplen, c->size - off));
	e = log_begin(c, OP_MAPREAD, off, len);

	pg_off = off / c->pagesize * c->pagesize;
	map_len = off + len - pg_off;
	/*
	 * If the range ends in the page holding EOF, map the whole page: the
	 * kernel must present the bytes past EOF as zeros, and a filesystem
	 * that returns stale data past EOF in its read path shows up here.
	 */
	if (c->size % c->pagesize &&
	    (off + len - 1) / c->pagesize == (c->size - 1) / c->pagesize) {
		eof_page_end = round_up(c->size, c->pagesize);
		map_len = eof_page_end - pg_off;
	}

	p = mmap(NULL, map_len, PROT_READ, MAP_SHARED, c->fd, (off_t)pg_off);
	if (p == MAP_FAILED)
		return sys_fail(c, "mmap(PROT_READ)", -errno, pg_off, map_len);
	r = check_bytes(c, "mmap read", off, c->model + off, p + (off - pg_off),
			len);
	if (!r && eof_page_end)
		r = check_bytes(c, "mmap read past EOF (must be zero)", c->size,
				c->zeros, p + (c->size - pg_off),
				eof_page_end - c->size);
	if (munmap(p, map_len) < 0 && !r)
		r = sys_fail(c, "munmap", -errno, pg_off, map_len);
	if (r)
		return r;
	log_end(c, e);
	return 0;
}

static int op_mapwrite(struct fsx_ctx *c)
{
	size_t off = pick_off(c, c->maxlen);
	size_t len = pick_len(c, min_sz(c->maxoplen, c->maxlen - off));
	struct fsx_logent *e = log_begin(c, OP_MAPWRITE, off, len);
	size_t pg_off, map_len;
	unsigned char *p;
	int r = 0;

	/* Stores past EOF through a mapping would SIGBUS (or be dropped),
	 * so extend the file first, as a real application must. */
	if (off + len > c->size) {
		if (ftruncate(c->fd, (off_t)(off + len)) < 0)
			return sys_fail(c, "ftruncate (mapwrite extend)",
					-errno, off + len, 0);
		model_resize(c, off + len);
	}

	pg_off = off / c->pagesize * c->pagesize;
	map_len = off + len - pg_off;
	p = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd,
		 (off_t)pg_off);
	if (p == MAP_FAILED)
		return sys_fail(c, "mmap(PROT_WRITE)", -errno, pg_off, map_len);
	rng_fill(c, c->buf, len);
	memcpy(p + (off - pg_off), c->buf, len);
	if (msync(p, map_len, MS_SYNC) < 0)
		r = sys_fail(c, "msync", -errno, pg_off, map_len);
	if (munmap(p, map_len) < 0 && !r)
		r = sys_fail(c, "munmap", -errno, pg_off, map_len);
	if (r)
		return r;
	model_store(c, off, c->buf, len);
	log_end(c, e);
	return 0;
}

static int op_sync(struct fsx_ctx *c, enum fsx_op op)
{
	struct fsx_logent *e = log_begin(c, op, 0, 0);
	int r = op == OP_FSYNC ? fsync(c->fd) : fdatasync(c->fd);

	if (r < 0)
		return sys_fail(c, fsx_op_names[op], -errno, 0, 0);
	log_end(c, e);
	return 0;
}

/* Close (checking for deferred write errors) and open the file again. */
static int reopen_file(struct fsx_ctx *c)
{
	int fd = c->fd;

	c->fd = -1;
	if (close(fd) < 0)
		return sys_fail(c, "close", -errno, 0, 0);
	fd = open(c->path, O_RDWR);
	if (fd < 0)
		return sys_fail(c, "open", -errno, 0, 0);
	c->fd = fd;
	return 0;
}

/*
 * Read the whole file back and compare it with the model, asking for one
 * byte more than the model holds so trailing garbage is caught too.
 */
static int verify_file(struct fsx_ctx *c, const char *what)
{
	ssize_t n = read_full(c->fd, c->buf, c->size + 1, 0);

	if (n < 0)
		return sys_fail(c, "pread (whole file)", (int)n, 0, c->size + 1);
	if ((size_t)n != c->size) {
		fflush(stdout);
		fprintf(stderr,
			"fsx: %s at op %" PRIu64 ": whole-file read returned 0x%zx bytes, expected 0x%zx\n",
			what, c->opnum, (size_t)n, c->size);
		return -EIO;
	}
	return check_bytes(c, what, 0, c->model, c->buf, c->size);
}

/*
 * Reopen, then verify the entire file: this is the point where data must
 * have survived close (and, on FUSE without keep_cache, open drops the
 * page cache, so the read really goes back to the filesystem).
 */
static int op_reopen(struct fsx_ctx *c)
{
	struct fsx_logent *e = log_begin(c, OP_REOPEN, 0, 0);
	int r = reopen_file(c);

	if (r)
		return r;
	r = verify_file(c, "read-back after reopen");
	if (r)
		return r;
	log_end(c, e);
	return 0;
}

static enum fsx_op pick_op(struct fsx_ctx *c)
{
	uint64_t v = rng_below(c, c->weight_total);

	for (int i = 0; i < OP_COUNT; i++) {
		if (v < c->weights[i])
			return (enum fsx_op)i;
		v -= c->weights[i];
	}
	return OP_READ; /* not reached */
}

static int run_op(struct fsx_ctx *c, enum fsx_op op)
{
	switch (op) {
	case OP_WRITE:
		return op_write(c);
	case OP_READ:
		return op_read(c);
	case OP_TRUNCATE:
		return op_truncate(c);
	case OP_MAPREAD:
		return op_mapread(c);
	case OP_MAPWRITE:
		return op_mapwrite(c);
	case OP_FSYNC:
	case OP_FDATASYNC:
		return op_sync(c, op);
	case OP_REOPEN:
		return op_reopen(c);
	case OP_COUNT:
		break;
	}
	return -EINVAL;
}

static int do_op(struct fsx_ctx *c)
{
	enum fsx_op op = pick_op(c);
	int r;

	/* A mapping of an empty file is meaningless; read instead. */
	if (op == OP_MAPREAD && c->size == 0)
		op = OP_READ;
	c->op_counts[op]++;
	r = run_op(c, op);
	if (r)
		return r;
	/*
	 * Check st_size after every op, not only on reads: a wrong size
	 * after a write/truncate is otherwise easily "healed" by the next
	 * size-changing op before anything looks at it. On FUSE this also
	 * exercises GETATTR after each kind of modification.
	 */
	r = check_size(c, fsx_op_names[op]);
	if (r)
		c->log[(c->log_count - 1) % FSX_HISTORY].done = false;
	return r;
}

/* After the random ops: close, reopen and compare the whole file. */
static int final_check(struct fsx_ctx *c)
{
	struct fsx_logent *e;
	int r;

	c->opnum = c->numops + 1;
	e = log_begin(c, OP_REOPEN, 0, 0);
	r = reopen_file(c);
	if (r)
		return r;
	r = check_size(c, "final check");
	if (r)
		return r;
	r = verify_file(c, "final read-back");
	if (r)
		return r;
	log_end(c, e);
	return 0;
}

/* ---- setup and command line ----------------------------------------- */

static void usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s [-N numops] [-S seed] [-l maxlen] [-m] [-q] FILE\n"
		"  -N numops  number of random operations (default %llu)\n"
		"  -S seed    PRNG seed (default: derived from the clock)\n"
		"  -l maxlen  maximum file length, suffix k/m allowed (default %u)\n"
		"  -m         no mmap operations (filesystems without mmap)\n"
		"  -q         quiet: no progress output\n",
		prog, FSX_DEFAULT_NUMOPS, FSX_DEFAULT_MAXLEN);
}

/* Parse an unsigned decimal/hex number with optional k/m/g suffix. */
static int parse_u64(const char *s, bool suffix_ok, uint64_t *out)
{
	char *end;
	unsigned long long v;
	uint64_t mult = 1;

	while (*s == ' ')
		s++;
	if (*s == '-' || *s == '\0')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno)
		return -errno;
	if (suffix_ok && *end) {
		switch (*end) {
		case 'k': case 'K': mult = 1ULL << 10; break;
		case 'm': case 'M': mult = 1ULL << 20; break;
		case 'g': case 'G': mult = 1ULL << 30; break;
		default: return -EINVAL;
		}
		end++;
	}
	if (*end)
		return -EINVAL;
	if (v > UINT64_MAX / mult)
		return -ERANGE;
	*out = (uint64_t)v * mult;
	return 0;
}

static uint64_t clock_seed(void)
{
	struct timespec ts;
	uint64_t s;

	clock_gettime(CLOCK_REALTIME, &ts);
	s = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
	s ^= (uint64_t)getpid() << 32;
	/* Keep seeds short enough to retype comfortably. */
	return s % 1000000000000ULL;
}

static int ctx_init(struct fsx_ctx *c)
{
	long pg = sysconf(_SC_PAGESIZE);

	c->pagesize = pg > 0 ? (size_t)pg : 4096;
	c->maxoplen = min_sz(FSX_MAX_OPLEN, c->maxlen);
	c->model = calloc(c->maxlen, 1);
	c->owner = calloc(c->maxlen, sizeof(*c->owner));
	c->buf = malloc(c->maxlen + 1);
	c->zeros = calloc(c->pagesize, 1);
	if (!c->model || !c->owner || !c->buf || !c->zeros)
		return -ENOMEM;
	c->weight_total = 0;
	for (int i = 0; i < OP_COUNT; i++)
		c->weight_total += c->weights[i];
	rng_seed(c, c->seed);

	/* Start from an empty file so the all-zero model is correct. */
	c->fd = open(c->path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (c->fd < 0)
		return -errno;
	return 0;
}

static void ctx_free(struct fsx_ctx *c)
{
	if (c->fd >= 0)
		close(c->fd);
	free(c->model);
	free(c->owner);
	free(c->buf);
	free(c->zeros);
}

static void print_stats(const struct fsx_ctx *c)
{
	printf("fsx: op counts:");
	for (int i = 0; i < OP_COUNT; i++)
		printf(" %s=%" PRIu64, fsx_op_names[i], c->op_counts[i]);
	printf("\n");
}

int main(int argc, char **argv)
{
	struct fsx_ctx ctx;
	bool have_seed = false, nommap = false;
	uint64_t v;
	int opt, r, rc = 1;

	memset(&ctx, 0, sizeof(ctx));
	ctx.fd = -1;
	ctx.numops = FSX_DEFAULT_NUMOPS;
	ctx.maxlen = FSX_DEFAULT_MAXLEN;

	while ((opt = getopt(argc, argv, "N:S:l:mqh")) != -1) {
		switch (opt) {
		case 'N':
			if (parse_u64(optarg, true, &ctx.numops)) {
				fprintf(stderr, "fsx: bad -N '%s'\n", optarg);
				return 2;
			}
			break;
		case 'S':
			if (parse_u64(optarg, false, &ctx.seed)) {
				fprintf(stderr, "fsx: bad -S '%s'\n", optarg);
				return 2;
			}
			have_seed = true;
			break;
		case 'l':
			if (parse_u64(optarg, true, &v) || v == 0 ||
			    v > FSX_MAXLEN_LIMIT) {
				fprintf(stderr,
					"fsx: bad -l '%s' (1..%llu)\n", optarg,
					FSX_MAXLEN_LIMIT);
				return 2;
			}
			ctx.maxlen = (size_t)v;
			break;
		case 'm':
			nommap = true;
			break;
		case 'q':
			ctx.quiet = true;
			break;
		case 'h':
			usage(argv[0]);
			return 0;
		default:
			usage(argv[0]);
			return 2;
		}
	}
	if (optind != argc - 1) {
		usage(argv[0]);
		return 2;
	}
	ctx.path = argv[optind];
	if (!have_seed)
		ctx.seed = clock_seed();
	memcpy(ctx.weights, fsx_default_weights, sizeof(ctx.weights));
	if (nommap) {
		ctx.weights[OP_MAPREAD] = 0;
		ctx.weights[OP_MAPWRITE] = 0;
	}

	/* First line, always: the one thing needed to replay a failure. */
	printf("fsx: seed %" PRIu64 "\n", ctx.seed);
	fflush(stdout);

	r = ctx_init(&ctx);
	if (r) {
		fprintf(stderr, "fsx: setup of %s failed: %s\n", ctx.path,
			strerror(-r));
		goto out;
	}
	if (!ctx.quiet)
		printf("fsx: file %s, %" PRIu64 " ops, maxlen %zu, mmap %s\n",
		       ctx.path, ctx.numops, ctx.maxlen, nommap ? "off" : "on");

	for (ctx.opnum = 1; ctx.opnum <= ctx.numops; ctx.opnum++) {
		if (do_op(&ctx)) {
			rc = fail(&ctx);
			goto out;
		}
		if (!ctx.quiet && ctx.opnum % FSX_PROGRESS_EVERY == 0) {
			printf("fsx: %" PRIu64 " ops, size 0x%zx\n", ctx.opnum,
			       ctx.size);
			fflush(stdout);
		}
	}
	if (final_check(&ctx)) {
		rc = fail(&ctx);
		goto out;
	}
	if (!ctx.quiet)
		print_stats(&ctx);
	printf("fsx: %" PRIu64 " operations ok\n", ctx.numops);
	rc = 0;
out:
	ctx_free(&ctx);
	return rc;
}
