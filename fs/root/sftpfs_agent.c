/*
 * sftpfs_agent.c - root/ of a remote sandbox beyond SFTP v3, through the
 * sandbox's resident agent (core/lib/agent_remote.pl, "file
 * operations"): the agent runs inside the sandbox's bubblewrap, in its
 * namespaces, as its commands do, so it sees the same "/" as root/'s own
 * SFTP server. SFTP v3 has no link counts, ctime, nanoseconds or times past
 * 2^32, no FIFOs or sockets, and answers most failures with a bare FAILURE;
 * the agent makes those calls itself (statx, mknodat, bind, utimensat,
 * fchownat, ftruncate) and answers with the kernel's errno.
 *
 * The request is "OP\0PATH\0ARGS..." and the answer "ERRNO\0FIELDS...";
 * the agent resolves PATH from "/" one name at a time by descriptor with
 * O_NOFOLLOW and acts on the last name with the *at call's no-follow flag,
 * so a directory the sandbox swaps for a symlink fails the operation
 * instead of redirecting it. Paths SFTP cannot carry (PATH_MAX and beyond)
 * and files its server may not open are opened by the agent, which keeps
 * the descriptor and answers a handle (sftpx_open, sftpx_h*); readlink and
 * listings of such paths too (sftpx_readlink, sftpx_list). The provider carries the text
 * (struct seer_provider: fileop); where it cannot (no agent there), every
 * function here answers -ENOTSUP and fs/root/sftpfs.c stays on SFTP.
 */
#include "fs/root/sftpfs_agent.h"

#include "core/provider.h"
#include "core/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PATH_MAX_SFTPX SFTPX_PATH_MAX
#define SFTPX_FIELDS 20

int sftpx_can(struct sandbox *sb)
{
	return sb && sb->prov && sb->prov->fileop;
}

/* ---- requests: NUL-separated strings, answered "ERRNO\0FIELDS..." ---- */

/* A request being built: NUL-separated strings; err once out of memory. */
struct xreq {
	char *b;
	size_t n, cap;
	int err;
};

static void xr_add(struct xreq *q, const void *s, size_t l, int sep)
{
	if (q->err)
		return;
	if (q->n + l + 2 > q->cap) {
		size_t c = (q->cap ? q->cap * 2 : 256) + l;
		char *nb = realloc(q->b, c);
		if (!nb) {
			q->err = -ENOMEM;
			return;
		}
		q->b = nb;
		q->cap = c;
	}
	if (sep && q->n)
		q->b[q->n++] = '\0';
	memcpy(q->b + q->n, s, l);
	q->n += l;
}

static void xr_str(struct xreq *q, const char *s)
{
	xr_add(q, s, strlen(s), 1);
}

static void xr_num(struct xreq *q, int64_t v)
{
	char t[32];
	xr_add(q, t, (size_t)snprintf(t, sizeof(t), "%" PRId64, v), 1);
}

/* "as UID GID GROUPS " for c (NULL: nothing, the sandbox's own agent). */
static void xr_as(struct xreq *q, const struct sftpx_caller *c)
{
	if (!c)
		return;
	xr_str(q, "as");
	xr_num(q, c->uid);
	xr_num(q, c->gid);
	char g[16];
	xr_add(q, "", 0, 1);   /* GROUPS: comma-separated, maybe empty */
	for (int i = 0; i < c->ngroups; i++) {
		int l = snprintf(g, sizeof(g), "%s%u", i ? "," : "", (unsigned)c->groups[i]);
		xr_add(q, g, (size_t)l, 0);
	}
}

/* Sends q (freed here); the answer's data after ERRNO in reply (its
 * length in *dl, from *data), or -ERRNO. */
static int xr_send(struct sandbox *sb, struct xreq *q, char *reply, size_t cap, char **data, size_t *dl)
{
	int rc = q->err;
	size_t rl = 0;
	if (rc == 0)
		rc = sb->prov->fileop(sb, q->b, q->n, reply, cap - 1, &rl);
	free(q->b);
	q->b = NULL;
	if (rc < 0)
		return rc;
	reply[rl] = '\0';
	long e = strtol(reply, NULL, 10);
	size_t el = strlen(reply);
	*data = reply + (el < rl ? el + 1 : rl);
	*dl = el < rl ? rl - el - 1 : 0;
	if (e < 0 || e > 4095)
		return -EIO;
	return -(int)e;
}

/* Splits NUL-separated data into up to max fields. */
static int split(char *data, size_t dl, char **f, int max)
{
	int k = 0;
	char *p = data, *end = data + dl;
	while (p < end && k < max) {
		f[k++] = p;
		p += strlen(p) + 1;
	}
	return k;
}

/* Sends q (freed here) and splits the answer's fields after ERRNO into f
 * (*nf of them; none on failure): 0 or -ERRNO. */
static int xr_fields(struct sandbox *sb, struct xreq *q, char *reply, size_t cap, char **f, int *nf)
{
	char *data;
	size_t dl;
	int rc = xr_send(sb, q, reply, cap, &data, &dl);
	*nf = rc == 0 ? split(data, dl, f, SFTPX_FIELDS) : 0;
	return rc;
}

/* Sends op on path with nargs numbers; the answer's fields after ERRNO in
 * f (up to SFTPX_FIELDS, NUL-terminated in reply). */
static int call(struct sandbox *sb, const char *op, const char *path, const int64_t *args, int nargs, char *reply,
		size_t cap, char **f, int *nf)
{
	if (!sftpx_can(sb))
		return -ENOTSUP;
	if (strlen(path) > PATH_MAX_SFTPX)
		return -ENAMETOOLONG;
	struct xreq q = {0};
	xr_str(&q, op);
	xr_str(&q, path);
	for (int i = 0; i < nargs; i++)
		xr_num(&q, args[i]);
	int k;
	int rc = xr_fields(sb, &q, reply, cap, f, &k);
	if (nf)
		*nf = k;
	return rc;
}

static int64_t num(const char *s)
{
	return strtoll(s, NULL, 10);
}

/* A stat answer's fields into a. */
static int stat_fields(char **f, int nf, struct sftp_attrs *a)
{
	if (nf < 13)
		return -EIO;
	/* nlink uid gid mode size blocks atime ans mtime mns ctime cns ino ... */
	memset(a, 0, sizeof(*a));
	a->flags = SFTP_ATTR_SIZE | SFTP_ATTR_UIDGID | SFTP_ATTR_PERMISSIONS | SFTP_ATTR_ACMODTIME;
	a->x = SFTPX_NLINK | SFTPX_TIMES;
	a->nlink = (uint32_t)num(f[0]);
	a->uid = (uint32_t)num(f[1]);
	a->gid = (uint32_t)num(f[2]);
	a->perm = (uint32_t)num(f[3]);
	a->size = a->xsize = (uint64_t)num(f[4]);
	a->blocks = (uint64_t)num(f[5]);
	a->xatime = num(f[6]);
	a->atime_ns = (uint32_t)num(f[7]);
	a->xmtime = num(f[8]);
	a->mtime_ns = (uint32_t)num(f[9]);
	a->xctime = num(f[10]);
	a->ctime_ns = (uint32_t)num(f[11]);
	a->atime = (uint32_t)a->xatime;
	a->mtime = (uint32_t)a->xmtime;
	if (nf >= 15 && (S_ISCHR(a->perm) || S_ISBLK(a->perm))) {
		a->rdev_major = (uint32_t)num(f[13]);
		a->rdev_minor = (uint32_t)num(f[14]);
	}
	return 0;
}

int sftpx_lstat(struct sandbox *sb, const char *path, struct sftp_attrs *a)
{
	char reply[512];
	char *f[SFTPX_FIELDS];
	int nf = 0;
	int rc = call(sb, "stat", path, NULL, 0, reply, sizeof(reply), f, &nf);
	return rc < 0 ? rc : stat_fields(f, nf, a);
}

int sftpx_as(struct sandbox *sb, const struct sftpx_caller *c, const char *op, const char *path, const char *str,
	     const int64_t *args, int nargs, struct sftp_attrs *a)
{
	if (!sftpx_can(sb))
		return -ENOTSUP;
	if (strlen(path) > PATH_MAX_SFTPX || (str && strlen(str) > PATH_MAX_SFTPX))
		return -ENAMETOOLONG;
	if (c->ngroups < 0 || c->ngroups > SFTPX_GROUPS_MAX)
		return -EINVAL;
	struct xreq q = {0};
	xr_as(&q, c);
	xr_str(&q, op);
	xr_str(&q, path);
	if (str)
		xr_str(&q, str);
	for (int i = 0; i < nargs; i++)
		xr_num(&q, args[i]);
	char reply[512];
	char *f[SFTPX_FIELDS];
	int k;
	int rc = xr_fields(sb, &q, reply, sizeof(reply), f, &k);
	if (rc < 0)
		return rc;
	return a ? stat_fields(f, k, a) : 0;
}

int sftpx_create(struct sandbox *sb, const char *path, int excl, int trunc, mode_t mode, int chmod_mode,
		 const struct timespec *ts, uint32_t uid, uint32_t gid, const void *data, size_t len, struct sftp_attrs *a,
		 int *chown_err)
{
	*chown_err = 0;
	if (!sftpx_can(sb))
		return -ENOTSUP;
	if (strlen(path) > PATH_MAX_SFTPX)
		return -ENAMETOOLONG;
	if (len > SFTPX_CREATE_MAX)
		return -EFBIG;
	int owner = uid != (uint32_t)-1 || gid != (uint32_t)-1;
	int64_t args[10] = {excl ? 1 : 0, trunc ? 1 : 0, (int64_t)(mode & 07777), chmod_mode < 0 ? -1 : (chmod_mode & 07777),
			    ts ? (int64_t)ts[0].tv_sec : -1, ts ? ts[0].tv_nsec : 0, ts ? (int64_t)ts[1].tv_sec : 0,
			    ts ? ts[1].tv_nsec : 0, uid == (uint32_t)-1 ? -1 : (int64_t)uid,
			    gid == (uint32_t)-1 ? -1 : (int64_t)gid};
	struct xreq q = {0};
	xr_str(&q, owner ? "pcreate" : "create");
	xr_str(&q, path);
	for (int i = 0; i < 10; i++)
		xr_num(&q, args[i]);
	xr_add(&q, len ? data : "", len, 1); /* an empty file's content may be NULL */
	char reply[512];
	char *f[SFTPX_FIELDS];
	int k;
	int rc = xr_fields(sb, &q, reply, sizeof(reply), f, &k);
	if (rc < 0)
		return rc;
	if (k > 15)   /* after stat's 15 fields */
		*chown_err = -(int)strtol(f[15], NULL, 10);
	return stat_fields(f, k, a);
}

int sftpx_chown(struct sandbox *sb, const char *path, uint32_t uid, uint32_t gid, int root)
{
	char reply[64];
	char *f[SFTPX_FIELDS];
	int64_t args[2] = {uid == (uint32_t)-1 ? -1 : (int64_t)uid, gid == (uint32_t)-1 ? -1 : (int64_t)gid};
	return call(sb, root ? "pchown" : "chown", path, args, 2, reply, sizeof(reply), f, NULL);
}

int sftpx_pchmod(struct sandbox *sb, const char *path, mode_t mode)
{
	char reply[64];
	char *f[SFTPX_FIELDS];
	int64_t args[1] = {(int64_t)(mode & 07777)};
	return call(sb, "pchmod", path, args, 1, reply, sizeof(reply), f, NULL);
}

int sftpx_mknod(struct sandbox *sb, const char *path, mode_t mode)
{
	char reply[64];
	char *f[SFTPX_FIELDS];
	int64_t args[1] = {(int64_t)mode};
	return call(sb, "mknod", path, args, 1, reply, sizeof(reply), f, NULL);
}

int sftpx_setattr(struct sandbox *sb, const char *path, int mode_set, mode_t mode, const struct timespec ts[2])
{
	char reply[64];
	char *f[SFTPX_FIELDS];
	int64_t args[5] = {(int64_t)ts[0].tv_sec, ts[0].tv_nsec, (int64_t)ts[1].tv_sec, ts[1].tv_nsec, (int64_t)(mode & 07777)};
	return call(sb, "utimens", path, args, mode_set ? 5 : 4, reply, sizeof(reply), f, NULL);
}

int sftpx_truncate(struct sandbox *sb, const char *path, uint64_t size)
{
	char reply[64];
	char *f[SFTPX_FIELDS];
	if (size > (uint64_t)INT64_MAX)
		return -EFBIG;
	int64_t args[1] = {(int64_t)size};
	return call(sb, "truncate", path, args, 1, reply, sizeof(reply), f, NULL);
}

void sftpx_longname_nlink(struct sftp_attrs *a, const char *l)
{
	static const char types[] = "-dlcbps";
	if (!l || strlen(l) < 12 || !strchr(types, l[0]) || l[0] == '\0' || !(a->flags & SFTP_ATTR_PERMISSIONS))
		return;
	for (int i = 1; i < 10; i++)
		if (!strchr("rwxsStT-", l[i]))
			return;
	const char *p = l + 10;
	if (*p == '+' || *p == '.' || *p == '@')
		p++;
	if (*p != ' ')
		return;
	while (*p == ' ')
		p++;
	char *end;
	unsigned long n = strtoul(p, &end, 10);
	if (end == p || *end != ' ' || n == 0 || n > UINT32_MAX)
		return;
	int dir = l[0] == 'd';
	if (dir != !!S_ISDIR(a->perm))
		return;
	a->nlink = (uint32_t)n;
	a->x |= SFTPX_NLINK;
}

int sftpx_link(struct sandbox *sb, const char *from, const char *to, struct sftp_attrs *a)
{
	if (!sftpx_can(sb))
		return -ENOTSUP;
	if (strlen(from) > PATH_MAX_SFTPX || strlen(to) > PATH_MAX_SFTPX)
		return -ENAMETOOLONG;
	struct xreq q = {0};
	xr_str(&q, "link");
	xr_str(&q, from);
	xr_str(&q, to);
	char reply[512], *f[SFTPX_FIELDS];
	int k;
	int rc = xr_fields(sb, &q, reply, sizeof(reply), f, &k);
	return rc < 0 ? rc : stat_fields(f, k, a);
}

int sftpx_open(struct sandbox *sb, const struct sftpx_caller *c, const char *path, int flags, mode_t mode,
	       struct sftpx_fh **out, struct sftp_attrs *a)
{
	*out = NULL;
	if (!sftpx_can(sb))
		return -ENOTSUP;
	if (strlen(path) > PATH_MAX_SFTPX)
		return -ENAMETOOLONG;
	if (c && (c->ngroups < 0 || c->ngroups > SFTPX_GROUPS_MAX))
		return -EINVAL;
	struct sftpx_fh *h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	struct xreq q = {0};
	xr_as(&q, c);
	xr_str(&q, "open");
	xr_str(&q, path);
	xr_num(&q, flags & (O_ACCMODE | O_CREAT | O_EXCL | O_TRUNC | O_APPEND));
	xr_num(&q, mode & 07777);
	char reply[512], *f[SFTPX_FIELDS];
	int k;
	int rc = xr_fields(sb, &q, reply, sizeof(reply), f, &k);
	if (rc == 0 && (k < 16 || strlen(f[15]) >= sizeof(h->id)))
		rc = -EIO;
	if (rc == 0)
		rc = stat_fields(f, k, a);
	if (rc < 0) {
		free(h);
		return rc;
	}
	snprintf(h->id, sizeof(h->id), "%s", f[15]);
	h->as = c != NULL;
	if (c) {
		h->uid = c->uid;
		h->gid = c->gid;
	}
	*out = h;
	return 0;
}

/* "[as UID GID] OP H" for h: a handle opened as a caller is used as the
 * same uid and gid (the agent then acts with the ids it opened it with). */
static void xr_handle(struct xreq *q, const struct sftpx_fh *h, const char *op)
{
	struct sftpx_caller c = {.uid = h->uid, .gid = h->gid, .ngroups = 0, .groups = NULL};
	xr_as(q, h->as ? &c : NULL);
	xr_str(q, op);
	xr_str(q, h->id);
}

/* A handle's operation op with its numbers. */
static int hcall(struct sandbox *sb, const struct sftpx_fh *h, const char *op, const int64_t *args, int nargs,
		 char *reply, size_t cap, char **out, size_t *ol)
{
	if (!sftpx_can(sb))
		return -ENOTSUP;
	struct xreq q = {0};
	xr_handle(&q, h, op);
	for (int i = 0; i < nargs; i++)
		xr_num(&q, args[i]);
	return xr_send(sb, &q, reply, cap, out, ol);
}

int sftpx_hread(struct sandbox *sb, const struct sftpx_fh *h, uint64_t off, void *buf, size_t len)
{
	if (len > SFTPX_XFER_MAX)
		len = SFTPX_XFER_MAX;
	if (off > (uint64_t)INT64_MAX)
		return -EINVAL;
	char *reply = malloc(len + 64), *data;
	if (!reply)
		return -ENOMEM;
	size_t dl;
	int64_t args[2] = {(int64_t)off, (int64_t)len};
	int rc = hcall(sb, h, "hread", args, 2, reply, len + 64, &data, &dl);
	if (rc == 0) {
		if (dl > len)
			dl = len;
		memcpy(buf, data, dl);
		rc = (int)dl;
	}
	free(reply);
	return rc;
}

int sftpx_hwrite(struct sandbox *sb, const struct sftpx_fh *h, uint64_t off, const void *buf, size_t len)
{
	if (len > SFTPX_XFER_MAX)
		len = SFTPX_XFER_MAX;
	if (off > (uint64_t)INT64_MAX)
		return -EFBIG;
	if (!sftpx_can(sb))
		return -ENOTSUP;
	char reply[64], *data;
	size_t dl;
	struct xreq q = {0};
	xr_handle(&q, h, "hwrite");
	xr_num(&q, (int64_t)off);
	xr_add(&q, buf, len, 1);   /* DATA: the rest of the request (agent_remote.pl: hwrite) */
	int rc = xr_send(sb, &q, reply, sizeof(reply), &data, &dl);
	if (rc == 0) {
		long long k = strtoll(data, NULL, 10);
		rc = k < 0 || (size_t)k > len ? -EIO : (int)k;
	}
	return rc;
}

int sftpx_htrunc(struct sandbox *sb, const struct sftpx_fh *h, uint64_t size)
{
	if (size > (uint64_t)INT64_MAX)
		return -EFBIG;
	char reply[64], *data;
	size_t dl;
	int64_t args[1] = {(int64_t)size};
	return hcall(sb, h, "htrunc", args, 1, reply, sizeof(reply), &data, &dl);
}

int sftpx_hstat(struct sandbox *sb, const struct sftpx_fh *h, struct sftp_attrs *a)
{
	char reply[512], *data, *f[SFTPX_FIELDS];
	size_t dl;
	int rc = hcall(sb, h, "hstat", NULL, 0, reply, sizeof(reply), &data, &dl);
	return rc < 0 ? rc : stat_fields(f, split(data, dl, f, SFTPX_FIELDS), a);
}

int sftpx_hsync(struct sandbox *sb, const struct sftpx_fh *h)
{
	char reply[64], *data;
	size_t dl;
	return hcall(sb, h, "hsync", NULL, 0, reply, sizeof(reply), &data, &dl);
}

int sftpx_hclose(struct sandbox *sb, struct sftpx_fh *h)
{
	if (!h)
		return 0;
	char reply[64], *data;
	size_t dl;
	int rc = hcall(sb, h, "hclose", NULL, 0, reply, sizeof(reply), &data, &dl);
	free(h);
	return rc;
}

int sftpx_op(struct sandbox *sb, const char *op, const char *path, const char *str, const int64_t *args, int nargs)
{
	if (!sftpx_can(sb))
		return -ENOTSUP;
	if (strlen(path) > PATH_MAX_SFTPX || (str && strlen(str) > PATH_MAX_SFTPX))
		return -ENAMETOOLONG;
	struct xreq q = {0};
	xr_str(&q, op);
	xr_str(&q, path);
	if (str)
		xr_str(&q, str);
	for (int i = 0; i < nargs; i++)
		xr_num(&q, args[i]);
	char reply[512], *data;
	size_t dl;
	return xr_send(sb, &q, reply, sizeof(reply), &data, &dl);
}

int sftpx_readlink(struct sandbox *sb, const char *path, char **out)
{
	*out = NULL;
	if (!sftpx_can(sb))
		return -ENOTSUP;
	if (strlen(path) > PATH_MAX_SFTPX)
		return -ENAMETOOLONG;
	struct xreq q = {0};
	xr_str(&q, "readlink");
	xr_str(&q, path);
	char reply[4200], *data;
	size_t dl;
	int rc = xr_send(sb, &q, reply, sizeof(reply), &data, &dl);
	if (rc == 0 && !(*out = strndup(data, dl)))
		rc = -ENOMEM;
	return rc;
}

int sftpx_list(struct sandbox *sb, const char *path, int (*fn)(void *ud, const char *name, const struct sftp_attrs *a),
	       void *ud)
{
	if (!sftpx_can(sb))
		return -ENOTSUP;
	if (strlen(path) > PATH_MAX_SFTPX)
		return -ENAMETOOLONG;
	struct xreq q = {0};
	xr_str(&q, "list");
	xr_str(&q, path);
	size_t cap = SFTPX_LIST_MAX + 8192;
	char *reply = malloc(cap), *data;
	if (!reply) {
		free(q.b);
		return -ENOMEM;
	}
	size_t dl;
	int rc = xr_send(sb, &q, reply, cap, &data, &dl);
	/* N, then per entry its name and stat's 15 fields */
	char *p = data, *end = data + dl;
	long n = rc == 0 ? strtol(p, NULL, 10) : 0;
	if (rc == 0)
		p += strlen(p) + 1;
	for (long i = 0; rc == 0 && i < n; i++) {
		char *f[16];
		int k = 0;
		while (p < end && k < 16) {
			f[k++] = p;
			p += strlen(p) + 1;
		}
		struct sftp_attrs a;
		rc = k == 16 ? stat_fields(f + 1, 15, &a) : -EIO;
		if (rc == 0)
			rc = fn(ud, f[0], &a);
	}
	free(reply);
	return rc;
}
