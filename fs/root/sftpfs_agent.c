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
 * instead of redirecting it. The provider carries the text
 * (struct seer_provider: fileop); where it cannot (no agent there), every
 * function here answers -ENOTSUP and fs/root/sftpfs.c stays on SFTP.
 */
#include "fs/root/sftpfs_agent.h"

#include "core/provider.h"
#include "core/sandbox.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SFTPX_REQ_MAX (PATH_MAX_SFTPX + 256)
#define PATH_MAX_SFTPX 16384
#define SFTPX_FIELDS 20

int sftpx_can(struct sandbox *sb)
{
	return sb && sb->prov && sb->prov->fileop;
}

/* Sends req (n bytes) and splits the answer: 0 and its fields after ERRNO
 * in f (*nf of them when nf is not NULL, NUL-terminated in reply), or
 * -ERRNO. */
static int exchange(struct sandbox *sb, const char *req, size_t n, char *reply, size_t cap, char **f, int *nf)
{
	size_t rl = 0;
	int rc = sb->prov->fileop(sb, req, n, reply, cap - 1, &rl);
	if (rc < 0)
		return rc;
	reply[rl] = '\0';
	int k = 0;
	char *p = reply, *end = reply + rl;
	long e = strtol(p, NULL, 10);
	p += strlen(p) + 1;
	while (p < end && k < SFTPX_FIELDS) {
		f[k++] = p;
		p += strlen(p) + 1;
	}
	if (nf)
		*nf = k;
	if (e < 0 || e > 4095)
		return -EIO;
	return -(int)e;
}

/* Sends op on path with nargs numbers; the answer's fields after ERRNO in
 * f (up to SFTPX_FIELDS, NUL-terminated in reply). */
static int call(struct sandbox *sb, const char *op, const char *path, const int64_t *args, int nargs, char *reply,
		size_t cap, char **f, int *nf)
{
	if (!sftpx_can(sb))
		return -ENOTSUP;
	size_t pl = strlen(path);
	if (pl > PATH_MAX_SFTPX)
		return -ENAMETOOLONG;
	char req[SFTPX_REQ_MAX];
	size_t n = (size_t)snprintf(req, sizeof(req), "%s", op) + 1;
	memcpy(req + n, path, pl);
	n += pl;
	for (int i = 0; i < nargs; i++)
		n += (size_t)snprintf(req + n, sizeof(req) - n, "%c%" PRId64, '\0', args[i]);
	return exchange(sb, req, n, reply, cap, f, nf);
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
	size_t pl = strlen(path), sl = str ? strlen(str) : 0;
	if (pl > PATH_MAX_SFTPX || sl > PATH_MAX_SFTPX)
		return -ENAMETOOLONG;
	if (c->ngroups < 0 || c->ngroups > SFTPX_GROUPS_MAX)
		return -EINVAL;
	size_t cap = 64 + (size_t)c->ngroups * 12 + strlen(op) + pl + sl + (size_t)nargs * 24;
	char *req = malloc(cap);
	if (!req)
		return -ENOMEM;
	size_t n = (size_t)snprintf(req, cap, "as%c%u%c%u%c", '\0', c->uid, '\0', c->gid, '\0');
	for (int i = 0; i < c->ngroups; i++)
		n += (size_t)snprintf(req + n, cap - n, "%s%u", i ? "," : "", (unsigned)c->groups[i]);
	n += (size_t)snprintf(req + n, cap - n, "%c%s%c", '\0', op, '\0');
	memcpy(req + n, path, pl);
	n += pl;
	if (str) {
		req[n++] = '\0';
		memcpy(req + n, str, sl);
		n += sl;
	}
	for (int i = 0; i < nargs; i++)
		n += (size_t)snprintf(req + n, cap - n, "%c%" PRId64, '\0', args[i]);
	char reply[512];
	char *f[SFTPX_FIELDS];
	int k = 0;
	int rc = exchange(sb, req, n, reply, sizeof(reply), f, &k);
	free(req);
	if (rc < 0)
		return rc;
	return a ? stat_fields(f, k, a) : 0;
}

int sftpx_link(struct sandbox *sb, const char *from, const char *to, struct sftp_attrs *a)
{
	if (!sftpx_can(sb))
		return -ENOTSUP;
	size_t fl = strlen(from), tl = strlen(to);
	if (fl > PATH_MAX_SFTPX || tl > PATH_MAX_SFTPX)
		return -ENAMETOOLONG;
	char *req = malloc(fl + tl + 7);
	if (!req)
		return -ENOMEM;
	memcpy(req, "link", 5);
	memcpy(req + 5, from, fl + 1);
	memcpy(req + 6 + fl, to, tl);
	char reply[512];
	char *f[SFTPX_FIELDS];
	int k = 0;
	int rc = exchange(sb, req, fl + tl + 6, reply, sizeof(reply), f, &k);
	free(req);
	return rc < 0 ? rc : stat_fields(f, k, a);
}

int sftpx_create(struct sandbox *sb, const char *path, int excl, int trunc, mode_t mode, int chmod_mode,
		 const struct timespec *ts, uint32_t uid, uint32_t gid, const void *data, size_t len, struct sftp_attrs *a,
		 int *chown_err)
{
	*chown_err = 0;
	if (!sftpx_can(sb))
		return -ENOTSUP;
	size_t pl = strlen(path);
	if (pl > PATH_MAX_SFTPX)
		return -ENAMETOOLONG;
	if (len > SFTPX_CREATE_MAX)
		return -EFBIG;
	size_t cap = pl + 256 + len;
	char *req = malloc(cap);
	if (!req)
		return -ENOMEM;
	int owner = uid != (uint32_t)-1 || gid != (uint32_t)-1;
	size_t n = (size_t)snprintf(req, cap, "%s", owner ? "pcreate" : "create") + 1;
	memcpy(req + n, path, pl);
	n += pl;
	int64_t args[10] = {excl ? 1 : 0, trunc ? 1 : 0, (int64_t)(mode & 07777), chmod_mode < 0 ? -1 : (chmod_mode & 07777),
			    ts ? (int64_t)ts[0].tv_sec : -1, ts ? ts[0].tv_nsec : 0, ts ? (int64_t)ts[1].tv_sec : 0,
			    ts ? ts[1].tv_nsec : 0, uid == (uint32_t)-1 ? -1 : (int64_t)uid,
			    gid == (uint32_t)-1 ? -1 : (int64_t)gid};
	for (int i = 0; i < 10; i++)
		n += (size_t)snprintf(req + n, cap - n, "%c%" PRId64, '\0', args[i]);
	req[n++] = '\0';
	if (len) /* an empty file's content may be NULL */
		memcpy(req + n, data, len);
	n += len;
	char reply[512];
	char *f[SFTPX_FIELDS];
	int k = 0;
	int rc = exchange(sb, req, n, reply, sizeof(reply), f, &k);
	free(req);
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
