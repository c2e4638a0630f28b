/*
 * vfile.h - virtual inodes of the mount (everything that is not root/):
 * how their numbers are built, the open-file state they share, and the
 * parked reads that wait for a sandbox to change.
 */
#ifndef SEER_VFILE_H
#define SEER_VFILE_H

#include "fs/fs.h"
#include "core/sandbox.h"
#include "core/lib/util.h"

enum vkind {
	K_NONE = 0,
	K_TOP,          /* the mount's root */
	K_README,
	K_SNAPDIR,      /* MOUNT/snapshots */
	K_SBDIR,        /* MOUNT/NAME */
	K_CONFIG,
	K_STATUS,
	K_WAIT,
	K_LOG,
	K_ERROR,
	K_INFO,
	K_CTL,
	K_ROOT_EMPTY,   /* root/ of a sandbox that is not running */
	K_SCRATCH,      /* an editor's temporary file in MOUNT/NAME (sub = id) */
	K_EXEC,
	K_EXEC_PY,
	K_JOBSDIR,
	K_JOBDIR,       /* sub = job number */
	K_JOB_CMD,
	K_JOB_STDOUT,
	K_JOB_STDERR,
	K_JOB_OUTPUT,
	K_JOB_STDIN,
	K_JOB_EXIT,
	K_JOB_STATUS,
	K_JOB_CTL,
	K_JOBS_MINE,    /* symlink to the newest job the reader's process started */
	K_JOBS_LATEST,  /* symlink to the newest job */
	K_SNAPSHOT,     /* MOUNT/snapshots/NAME (sub = snapshot id) */
	K_SNAP_INFO,
	K_SNAP_ROOT,
	K_CONFIG_REF,   /* MOUNT/CONFIG: the config field reference */
	K_SESSDIR,      /* MOUNT/NAME/sessions (fs/sessionsfs.c) */
	K_SESS,         /* sessions/S (sub = session id) */
	K_SESS_EXEC,
	K_SESS_CTL,
	K_SESS_LOG,
	K_SESS_NB,      /* notebook.ipynb */
	K_JOB_FIG,      /* jobs/N/fig-K.png (sub = K << 24 | N) */
	K_FNDIR,        /* MOUNT/NAME/functions (fs/functionsfs.c) */
	K_FNSET,        /* functions/SET (sub = set id) */
	K_FN_README,    /* functions/SET/README */
	K_FN_CLIENT,    /* functions/SET.py */
	K_FN_CALL,      /* functions/SET/FN (sub = set << 16 | fn) */
	K_FN_JSON,      /* functions/SET/functions.json */
};

static inline fuse_ino_t vino(uint32_t serial, uint32_t sub, enum vkind k)
{
	return VINO_FLAG | ((uint64_t)(serial & 0x7fffff) << 40) | ((uint64_t)sub << 8) | (uint64_t)k;
}
static inline uint32_t vino_serial(fuse_ino_t ino) { return (uint32_t)((ino >> 40) & 0x7fffff); }
static inline uint32_t vino_sub(fuse_ino_t ino) { return (uint32_t)((ino >> 8) & 0xffffffffu); }
static inline enum vkind vino_kind(fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? K_TOP : (enum vkind)(ino & 0xff);
}

/* Open state of a virtual file. */
struct vfh {
	enum vkind kind;
	struct sandbox *sb;        /* referenced; NULL for top-level files */
	uint32_t sub;
	struct sbuf buf;           /* content snapshot (reads) or what is written */
	int have_content;          /* buf holds the read snapshot */
	int dirty;                 /* written or truncated: apply on flush */
	int written;               /* a write came: the next flush applies */
	int too_big;               /* a write passed the size limit: nothing applies */
	int fd;                    /* a real file behind it (log, job output), else -1 */
	void *priv;                /* kind-specific (jobs) */
};

/* A read parked until the sandbox changes (wait, exit, growing output). */
struct pend {
	struct pend *next;
	fuse_req_t req;
	uint32_t serial;
	struct vfh *fh;
	size_t size;
	off_t off;
	/* Answers and returns 1 when the read can complete now, else 0. */
	int (*try_answer)(struct seer_fs *fs, struct pend *p);
};

/* A read of h to park (or to try at once), answered by try_answer. */
struct pend *pend_new(fuse_req_t req, struct vfh *h, size_t size, off_t off,
		      int (*try_answer)(struct seer_fs *fs, struct pend *p));
/* Parks a read; it is retried whenever its sandbox changes and answered
 * with EINTR if the reader is interrupted. */
void pend_park(struct seer_fs *fs, struct pend *p);
/* Retries the parked reads of one sandbox. */
void pend_kick(struct seer_fs *fs, uint32_t serial);
/* Answers every read parked on h with EINTR (h is being released). */
void pend_purge(struct seer_fs *fs, struct vfh *h);

/* Per-sandbox state of fs/: scratch files (root/ is fs/root/root.c's). */
struct scratch {
	struct scratch *next;
	uint32_t id;
	char name[256];
	struct sbuf data;
	mode_t mode;
	struct timespec mtime;
};

struct fs_sb {
	struct fs_sb *next;
	uint32_t serial;
	struct scratch *scratch;
	uint32_t next_scratch;
};

/* Attributes of a virtual inode: owned by the mounting user, times from
 * mtime_ns. */
void fill_stat(struct seer_fs *fs, struct stat *st, fuse_ino_t ino, mode_t mode, off_t size, uint64_t mtime_ns);

/* Answers a read from part of a buffer (copied first). */
/* A fixed file of a virtual directory: its name, kind and mode. */
struct vdesc {
	const char *name;
	enum vkind kind;
	mode_t mode;
};

void reply_slice(fuse_req_t req, const struct sbuf *b, size_t size, off_t off);
/* Answers a read with what pread gives on fd (-1: an empty answer). */
void reply_pread(fuse_req_t req, int fd, size_t size, off_t off);

/* Finds (creating) fs/'s data of a sandbox; fs->lock must be held. */
struct fs_sb *fs_sb_get(struct seer_fs *fs, uint32_t serial, int create);

#endif
