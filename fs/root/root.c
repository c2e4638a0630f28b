/*
 * root.c - the root/ slots (see root.h): one place that installs, serves
 * and drops a sandbox's or a snapshot's root/, whichever backend serves it.
 */
#include "fs/root/root.h"
#include "core/root.h"
#include "core/lib/sftp.h"
#include "core/lib/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct root_slot {
	struct root_slot *next;    /* fs->roots */
	uint32_t key;
	struct pass_fs *pass;      /* fd backend, or */
	struct sftpfs *remote;     /* SFTP backend ... */
	struct sftp_client *cli;   /* ... and our reference on its client */
};

/* fs->lock held. */
static struct root_slot **find(struct seer_fs *fs, uint32_t key)
{
	struct root_slot **pp = &fs->roots;
	while (*pp && (*pp)->key != key)
		pp = &(*pp)->next;
	return pp;
}

/* Ends what a slot served (no lock held: kills wait for requests). */
static void slot_free(struct root_slot *s)
{
	if (!s)
		return;
	if (s->pass)
		pass_kill(s->pass);
	if (s->remote)
		sftpfs_kill(s->remote);
	sftp_client_unref(s->cli);   /* after the kill: the backend no longer uses it */
	free(s);
}

/* The installed backend's entry; -ENOENT when there is none that can
 * serve (a dead one, or a client that failed: a reconnect made another).
 * fs->lock held. */
static int slot_entry(struct root_slot *s, struct fuse_entry_param *e)
{
	if (!s)
		return -ENOENT;
	if (s->pass)
		return pass_root_entry(s->pass, e);
	if (s->remote && sftp_client_error(s->cli, NULL, 0) == 0)
		return sftpfs_root_entry(s->remote, e);
	return -ENOENT;
}

/* A backend for the handle h (whose fd or reference it takes). */
static struct root_slot *slot_new(struct seer_fs *fs, uint32_t key, struct sandbox *sb, struct seer_root *h)
{
	struct root_slot *s = xcalloc(1, sizeof(*s));
	s->key = key;
	if (h->fd >= 0) {
		s->pass = pass_new(fs, sb, h->fd);
		h->fd = -1;
		if (!s->pass) {
			free(s);
			return NULL;
		}
		if (h->host_ids)
			pass_host_ids(s->pass);
		else if (h->ids.count > 0)
			pass_set_ids(s->pass, &h->ids);
		return s;
	}
	s->cli = h->sftp;
	h->sftp = NULL;
	s->remote = s->cli ? sftpfs_new(fs, sb, s->cli, h->path) : NULL;
	if (!s->remote) {
		sftp_client_unref(s->cli);
		free(s);
		return NULL;
	}
	if (h->readonly)
		sftpfs_set_readonly(s->remote);
	return s;
}

int root_entry(struct seer_fs *fs, uint32_t key, struct sandbox *sb, root_open_fn open, void *arg,
	       struct fuse_entry_param *e)
{
	pthread_mutex_lock(&fs->lock);
	int r = slot_entry(*find(fs, key), e);
	pthread_mutex_unlock(&fs->lock);
	if (r == 0)
		return 0;
	struct seer_root h = {.fd = -1};
	if ((r = open(arg, &h)) < 0)
		return r;
	int remote = h.fd < 0;
	struct root_slot *ns = slot_new(fs, key, sb, &h);
	if (!ns) {
		if (remote && !sb)
			fprintf(stderr, "seerfs: snapshot root/: %s cannot be read over SFTP\n", h.path);
		return !remote ? -ENOMEM : sb ? -ENOTSUP : -EIO;
	}
	struct root_slot *old;
	pthread_mutex_lock(&fs->lock);
	struct root_slot **pp = find(fs, key);
	if (slot_entry(*pp, e) == 0) {
		old = ns;   /* lost a race: the other thread's stays */
		r = 0;
	} else {
		old = *pp;  /* none, or one that cannot serve any more */
		ns->next = old ? old->next : NULL;
		*pp = ns;
		r = slot_entry(ns, e);
	}
	pthread_mutex_unlock(&fs->lock);
	slot_free(old);
	return r;
}

void root_invalidate(struct seer_fs *fs, uint32_t key)
{
	pthread_mutex_lock(&fs->lock);
	struct root_slot *s = *find(fs, key);
	struct pass_fs *pass = s ? s->pass : NULL;
	struct sftpfs *remote = s ? s->remote : NULL;
	if (pass)
		pass_ref(pass);   /* root/ may go away meanwhile (root_drop) */
	pthread_mutex_unlock(&fs->lock);
	/* The job may change any file: nothing cached while the sandbox was idle
	 * may outlive this moment. */
	if (pass) {
		pass_invalidate(pass);
		pass_unref(pass);
	}
	if (remote)
		sftpfs_invalidate(remote);
}

void root_drop(struct seer_fs *fs, uint32_t key)
{
	pthread_mutex_lock(&fs->lock);
	struct root_slot **pp = find(fs, key), *s = *pp;
	if (s)
		*pp = s->next;
	pthread_mutex_unlock(&fs->lock);
	slot_free(s);
}
