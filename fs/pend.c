/*
 * pend.c - reads parked until a sandbox changes (the `wait` file, a job's
 * exit, growing output): answered from whichever thread sees the change
 * (pend_kick, from core's `changed` hook), so a blocked reader never holds
 * a FUSE worker thread and never stalls `ls`; an interrupted reader gets
 * EINTR.
 */
#include "fs/vfile.h"

#include <errno.h>
#include <stdlib.h>

/* Takes the first parked read that `match` accepts off the list. */
static struct pend *pend_take(struct seer_fs *fs, int (*match)(const struct pend *, const void *), const void *key)
{
	struct pend *found = NULL;
	pthread_mutex_lock(&fs->lock);
	for (struct pend **pp = &fs->pends; *pp; pp = &(*pp)->next) {
		if (match(*pp, key)) {
			found = *pp;
			*pp = found->next;
			break;
		}
	}
	pthread_mutex_unlock(&fs->lock);
	return found;
}

static int match_req(const struct pend *p, const void *key)
{
	return p->req == (fuse_req_t)key;
}

static int match_fh(const struct pend *p, const void *key)
{
	return p->fh == key;
}

static int match_serial(const struct pend *p, const void *key)
{
	return p->serial == *(const uint32_t *)key;
}

static void pend_put_back(struct seer_fs *fs, struct pend *p)
{
	pthread_mutex_lock(&fs->lock);
	p->next = fs->pends;
	fs->pends = p;
	pthread_mutex_unlock(&fs->lock);
}

static void pend_interrupted(fuse_req_t req, void *data)
{
	struct seer_fs *fs = data;
	/* Look the request up instead of trusting a pointer: the change path may
	 * have answered and freed it already. Under pend_mu, so that a read
	 * being parked is either on the list already or sees the interrupt
	 * itself (pend_park). */
	pthread_mutex_lock(&fs->pend_mu);
	struct pend *found = pend_take(fs, match_req, req);
	pthread_mutex_unlock(&fs->pend_mu);
	if (found) {
		fuse_reply_err(req, EINTR);
		free(found);
	}
}

struct pend *pend_new(fuse_req_t req, struct vfh *h, size_t size, off_t off,
		      int (*try_answer)(struct seer_fs *fs, struct pend *p))
{
	struct pend *p = xcalloc(1, sizeof(*p));
	p->req = req;
	p->serial = h->sb->serial;
	p->fh = h;
	p->size = size;
	p->off = off;
	p->try_answer = try_answer;
	return p;
}

void pend_park(struct seer_fs *fs, struct pend *p)
{
	fuse_req_t req = p->req;
	uint32_t serial = p->serial;
	/* The interrupt hook goes in while the read is still ours alone: once
	 * it is on the list, a kick from another thread may answer it and free
	 * it and its request, so nothing below touches them after it is put
	 * back. (Registering after parking did, and crashed under ASan.) An
	 * interrupt that came before the hook, or before the read was on the
	 * list, found nothing to answer: the check under pend_mu catches it. */
	fuse_req_interrupt_func(req, pend_interrupted, fs);
	pthread_mutex_lock(&fs->pend_mu);
	int gone = fuse_req_interrupted(req);
	if (!gone)
		pend_put_back(fs, p);
	pthread_mutex_unlock(&fs->pend_mu);
	if (gone) {
		fuse_reply_err(req, EINTR);
		free(p);
		return;
	}
	/* The state may have changed between the caller's check and parking. */
	pend_kick(fs, serial);
}

void pend_kick(struct seer_fs *fs, uint32_t serial)
{
	/* One retry pass at a time, and never while a release frees the open
	 * file a parked read points to. Each parked read of the sandbox is taken
	 * off the list (then it is ours alone), tried once, and the ones not
	 * ready yet go back together afterwards, so the pass ends. */
	pthread_mutex_lock(&fs->pend_mu);
	struct pend *again = NULL, *p;
	while ((p = pend_take(fs, match_serial, &serial))) {
		if (p->try_answer(fs, p)) {
			free(p);
		} else {
			p->next = again;
			again = p;
		}
	}
	while (again) {
		p = again;
		again = p->next;
		pend_put_back(fs, p);
	}
	pthread_mutex_unlock(&fs->pend_mu);
}

/* Answers (EINTR) and drops the parked reads of an open file being released. */
void pend_purge(struct seer_fs *fs, struct vfh *h)
{
	pthread_mutex_lock(&fs->pend_mu);
	struct pend *p;
	while ((p = pend_take(fs, match_fh, h))) {
		fuse_reply_err(p->req, EINTR);
		free(p);
	}
	pthread_mutex_unlock(&fs->pend_mu);
}
