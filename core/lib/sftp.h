/*
 * sftp.h - SFTP version 3 client (draft-ietf-secsh-filexfer-02) with the
 * OpenSSH extensions posix-rename, hardlink, fsync, statvfs/fstatvfs,
 * lsetstat and limits, running over a byte stream (bytestream.h): one
 * "sftp" subsystem channel of an ssh_conn (sshconn.h), an exec channel
 * that runs an SFTP server, or an exec of an SFTP server in a container of
 * a Docker Engine API (bytestream_engine_open).
 *
 * Why our own client: libssh2 1.10's SFTP layer lacks the OpenSSH
 * extensions above and serialises requests, while a filesystem needs many
 * requests in flight from many threads.  Here every call is thread-safe;
 * requests carry an id and replies are matched to the waiting caller by the
 * connection's I/O thread, so any number of calls can be outstanding.  The
 * range helpers keep N reads or writes in flight (e.g. 32 x 64 KiB) the way
 * sshfs does, which is what makes bulk transfers fast on latency.
 *
 * All functions return 0 (or a count where stated) or a negative errno:
 *   SSH_FX_NO_SUCH_FILE -> -ENOENT, SSH_FX_PERMISSION_DENIED -> -EACCES,
 *   SSH_FX_FAILURE -> a per-operation guess (-EEXIST for mkdir, -ENOTEMPTY
 *   for rmdir, ...) or -EIO, SSH_FX_OP_UNSUPPORTED -> -ENOTSUP,
 *   SSH_FX_BAD_MESSAGE -> -EINVAL (OpenSSH sends it for EINVAL);
 *   link loss -> -ENOTCONN, a request past its deadline -> -ETIMEDOUT,
 *   an extension the server does not offer -> -ENOTSUP (no round trip).
 * Once the channel or connection is dead every call fails fast with
 * -ENOTCONN; sftp_client_error() says why.
 */
#ifndef SEER_SFTP_H
#define SEER_SFTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/lib/sshconn.h"
#include "core/lib/bytestream.h"

/* SSH_FILEXFER_ATTR_* */
#define SFTP_ATTR_SIZE 0x00000001u
#define SFTP_ATTR_UIDGID 0x00000002u
#define SFTP_ATTR_PERMISSIONS 0x00000004u
#define SFTP_ATTR_ACMODTIME 0x00000008u

/* SSH_FXF_* open flags */
#define SFTP_READ 0x01u
#define SFTP_WRITE 0x02u
#define SFTP_APPEND 0x04u
#define SFTP_CREAT 0x08u
#define SFTP_TRUNC 0x10u
#define SFTP_EXCL 0x20u

/* Extensions the server offered (sftp_extensions()). */
#define SFTP_EXT_POSIX_RENAME 0x01u
#define SFTP_EXT_STATVFS 0x02u
#define SFTP_EXT_FSTATVFS 0x04u
#define SFTP_EXT_HARDLINK 0x08u
#define SFTP_EXT_FSYNC 0x10u
#define SFTP_EXT_LSETSTAT 0x20u
#define SFTP_EXT_LIMITS 0x40u

/* Defaults of the range helpers: as sshfs, 32 requests of 64 KiB. */
#define SFTP_DEFAULT_DEPTH 32u
#define SFTP_DEFAULT_CHUNK (64u * 1024u)

struct sftp_client;
struct sftp_handle; /* an open file or directory */


struct sftp_attrs {
	uint32_t flags; /* which fields are valid, SFTP_ATTR_* */
	uint64_t size;
	uint32_t uid, gid;
	uint32_t perm;  /* st_mode bits, file type included */
	uint32_t atime, mtime;
	/* Beyond SFTP v3 (never sent or read by this client): what root/
	 * learned from the sandbox's agent (fs/root/sftpfs_agent.c), valid
	 * when x is set; whole 64-bit seconds, whose low 32 bits are atime
	 * and mtime above while nothing changed them since. */
	int x;
	uint32_t nlink;
	int64_t xatime, xmtime, xctime;
	uint32_t atime_ns, mtime_ns, ctime_ns;
	uint64_t xsize, blocks;   /* st_blocks, while size is still xsize */
	uint32_t rdev_major, rdev_minor;   /* a device node's (SFTPX_TIMES) */
};

struct sftp_dirent {
	char *name;
	char *longname; /* "ls -l" style line from the server */
	struct sftp_attrs attrs;
};

struct sftp_vfsinfo {
	uint64_t bsize, frsize, blocks, bfree, bavail, files, ffree, favail;
	uint64_t fsid, flag, namemax;
};

/* Opens the "sftp" subsystem on c and negotiates version 3. */
int sftp_client_open(struct ssh_conn *c, struct sftp_client **out, char *err,
					 size_t errlen);
/* The same over an exec channel running `command`, which must start an
 * SFTP server on its stdin/stdout (e.g. /usr/lib/openssh/sftp-server, or
 * that binary inside a sandbox). Its stderr tail ends up in the messages.
 * command is visible in the remote process list: no secrets in it. */
int sftp_client_open_exec(struct ssh_conn *c, const char *command,
						  struct sftp_client **out, char *err, size_t errlen);
/* The same over any byte stream: opener(arg, ...) starts it with the
 * client's callbacks (bytestream.h), e.g. bytestream_engine_open of
 * /usr/lib/openssh/sftp-server in a container. The request timeout is the
 * stream's. */
int sftp_client_open_stream(bytestream_open_fn opener, void *arg,
							struct sftp_client **out, char *err, size_t errlen);
/* Ends the session without freeing s: everything in flight and every later
 * call fails with -ENOTCONN (sftp_client_error gives why), and the server
 * gets end of input, so it exits. For a client others may still hold. */
void sftp_client_shutdown(struct sftp_client *s, const char *why);
/* Fails what is in flight with -ENOTCONN and closes the channel.  Handles
 * still open are not closed on the server (the channel close does that). */
void sftp_client_close(struct sftp_client *s);
/* References for clients with several holders (a provider and the root/
 * it handed out): the opener holds one; the last unref closes. */
void sftp_client_ref(struct sftp_client *s);
void sftp_client_unref(struct sftp_client *s);

uint32_t sftp_extensions(const struct sftp_client *s);
/* Server limits (limits@openssh.com) or conservative defaults. */
size_t sftp_max_read(const struct sftp_client *s);
size_t sftp_max_write(const struct sftp_client *s);
/* Per-request timeout; defaults to the connection's. */
void sftp_set_timeout(struct sftp_client *s, int timeout_ms);
/* 0 while usable, else the errno it died with; copies the reason. */
int sftp_client_error(struct sftp_client *s, char *buf, size_t len);

/* open(2) O_* flags to SFTP_* flags. */
uint32_t sftp_flags_from_posix(int oflags);

int sftp_open(struct sftp_client *s, const char *path, uint32_t pflags,
			  const struct sftp_attrs *attrs, struct sftp_handle **out);
/* open, then lstat of the same path, in one round trip (for creates). */
int sftp_open_lstat(struct sftp_client *s, const char *path, uint32_t pflags,
					const struct sftp_attrs *attrs, struct sftp_handle **out,
					struct sftp_attrs *a);
/* Always frees h, even when the server reports an error. */
int sftp_close(struct sftp_client *s, struct sftp_handle *h);
/* Sends CLOSE and frees h without waiting: for handles whose close has
 * nothing left to report (every write already acknowledged). */
void sftp_close_nowait(struct sftp_client *s, struct sftp_handle *h);

/* One READ request: *got is 0 at end of file; it can be short. */
int sftp_read(struct sftp_client *s, struct sftp_handle *h, uint64_t off, void *buf,
			  size_t len, size_t *got);
/* One WRITE request (len <= sftp_max_write). */
int sftp_write(struct sftp_client *s, struct sftp_handle *h, uint64_t off,
			   const void *buf, size_t len);

int sftp_stat(struct sftp_client *s, const char *path, struct sftp_attrs *a);
int sftp_lstat(struct sftp_client *s, const char *path, struct sftp_attrs *a);
int sftp_fstat(struct sftp_client *s, struct sftp_handle *h, struct sftp_attrs *a);
int sftp_setstat(struct sftp_client *s, const char *path, const struct sftp_attrs *a);
/* Does not follow symlinks; -ENOTSUP without lsetstat@openssh.com. */
int sftp_lsetstat(struct sftp_client *s, const char *path, const struct sftp_attrs *a);
int sftp_fsetstat(struct sftp_client *s, struct sftp_handle *h, const struct sftp_attrs *a);

int sftp_opendir(struct sftp_client *s, const char *path, struct sftp_handle **out);
/* One batch of entries; *n == 0 at the end.  Free with sftp_dirents_free. */
int sftp_readdir(struct sftp_client *s, struct sftp_handle *h, struct sftp_dirent **ents,
				 size_t *n);
void sftp_dirents_free(struct sftp_dirent *ents, size_t n);

/* Whole listings of k directories in two round trips for small ones:
 * every OPENDIR sent at once, then two READDIRs per handle at once (more
 * rounds for directories not at their end yet), then every CLOSE sent
 * without waiting for its answer.  Per directory: ls[i].path in, rc (0 or
 * -errno), ents and n out (free with sftp_dirents_free).  Returns 0, or
 * -ENOMEM before anything was sent. */
struct sftp_listing {
	const char *path;
	int rc;
	struct sftp_dirent *ents;
	size_t n;
};
int sftp_list_dirs(struct sftp_client *s, struct sftp_listing *ls, size_t k);

/* Small files read whole, k of them in two round trips: every OPEN
 * (read-only) at once, then one READ of `want` bytes (<= sftp_max_read)
 * per handle at once, each followed by its CLOSE, not waited for.  Per
 * file: path and want in; rc (0 or -errno), data (malloc'd, NULL on
 * error) and got (bytes read; fewer than want at end of file) out.
 * Returns 0, or -ENOMEM before anything was sent. */
struct sftp_fileread {
	const char *path;
	size_t want;
	int rc;
	unsigned char *data;
	size_t got;
};
int sftp_read_files(struct sftp_client *s, struct sftp_fileread *fr, size_t k);

int sftp_mkdir(struct sftp_client *s, const char *path, uint32_t mode);
/* The same, with an LSTAT of the new name in the same round trip: *a and
 * *lrc (0 or -errno) are the LSTAT's; on failure it shows what was in the
 * way. sftpfs needs the attributes of everything it makes. */
int sftp_mkdir_lstat(struct sftp_client *s, const char *path, uint32_t mode,
					 struct sftp_attrs *a, int *lrc);
int sftp_rmdir(struct sftp_client *s, const char *path);
int sftp_remove(struct sftp_client *s, const char *path);
/* REMOVE, MKDIR or SETSTAT sent now, its answer taken later, by any
 * thread, with sftp_later_wait (which frees *out; 0 or -errno, as
 * sftp_remove's, sftp_mkdir's, sftp_setstat's); sftp_later_done says,
 * without waiting, whether it has come. Requests sent after it on the same
 * client are handled after it by the server. */
struct sftp_later;
int sftp_remove_later(struct sftp_client *s, const char *path, struct sftp_later **out);
int sftp_mkdir_later(struct sftp_client *s, const char *path, uint32_t mode, struct sftp_later **out);
int sftp_setstat_later(struct sftp_client *s, const char *path, const struct sftp_attrs *a, struct sftp_later **out);
int sftp_later_done(struct sftp_client *s, struct sftp_later *l);
int sftp_later_wait(struct sftp_client *s, struct sftp_later *l);
/* Plain SFTP rename: fails if newpath exists (on OpenSSH). */
int sftp_rename(struct sftp_client *s, const char *oldpath, const char *newpath);
/* rename(2) semantics, replacing newpath (posix-rename@openssh.com). */
int sftp_posix_rename(struct sftp_client *s, const char *oldpath,
					  const char *newpath);
/* Creates linkpath pointing to target. */
int sftp_symlink(struct sftp_client *s, const char *target, const char *linkpath);
/* *out is malloc'd. */
int sftp_readlink(struct sftp_client *s, const char *path, char **out);
int sftp_realpath(struct sftp_client *s, const char *path, char **out);
int sftp_hardlink(struct sftp_client *s, const char *oldpath, const char *newpath);
/* symlink and hardlink followed by an LSTAT of the new name (as mkdir). */
int sftp_symlink_lstat(struct sftp_client *s, const char *target,
					   const char *linkpath, struct sftp_attrs *a, int *lrc);
int sftp_hardlink_lstat(struct sftp_client *s, const char *oldpath,
						const char *newpath, struct sftp_attrs *a, int *lrc);
int sftp_fsync(struct sftp_client *s, struct sftp_handle *h);
int sftp_statvfs(struct sftp_client *s, const char *path, struct sftp_vfsinfo *st);
int sftp_fstatvfs(struct sftp_client *s, struct sftp_handle *h, struct sftp_vfsinfo *st);

/*
 * Pipelined transfers.  depth requests of chunk bytes are kept in flight
 * (0 selects SFTP_DEFAULT_DEPTH / SFTP_DEFAULT_CHUNK; chunk is capped by the
 * server's limits).  Short replies are re-requested, so the result is exact.
 */

/* Reads up to len bytes at off into buf; *got < len only at end of file. */
int sftp_pread_range(struct sftp_client *s, struct sftp_handle *h, uint64_t off, void *buf,
					 size_t len, size_t *got, unsigned depth, size_t chunk);
/* The same, for a file known to end at eof_at: a short reply that reaches
 * it is the end of file (no READ more to learn it). */
int sftp_pread_range_eof(struct sftp_client *s, struct sftp_handle *h, uint64_t off,
						 void *buf, size_t len, size_t *got, unsigned depth,
						 size_t chunk, uint64_t eof_at);
/* Writes all of buf at off. */
int sftp_pwrite_range(struct sftp_client *s, struct sftp_handle *h, uint64_t off,
					  const void *buf, size_t len, unsigned depth,
					  size_t chunk);
/* The same, calling sent(ud) once every WRITE of buf was handed to the
 * channel (before the replies are waited for; not called when the range
 * failed before that): a request sent after that call is handled by the
 * server after all of them. */
int sftp_pwrite_range_notify(struct sftp_client *s, struct sftp_handle *h,
							 uint64_t off, const void *buf, size_t len,
							 unsigned depth, size_t chunk,
							 void (*sent)(void *), void *ud);

/* Streaming forms for files larger than memory.  The sink gets the data in
 * file order; the source fills buf and returns a count, 0 at its end, or a
 * negative errno.  Either callback returning < 0 aborts the transfer with
 * that value.  `limit` bounds the download (UINT64_MAX: to end of file). */
typedef int (*sftp_sink_fn)(void *ud, const void *buf, size_t len);
typedef ssize_t (*sftp_source_fn)(void *ud, void *buf, size_t len);
int sftp_download(struct sftp_client *s, struct sftp_handle *h, uint64_t off,
				  uint64_t limit, sftp_sink_fn sink, void *ud,
				  unsigned depth, size_t chunk, uint64_t *total);
int sftp_upload(struct sftp_client *s, struct sftp_handle *h, uint64_t off,
				sftp_source_fn source, void *ud, unsigned depth,
				size_t chunk, uint64_t *total);

#endif /* SEER_SFTP_H */
