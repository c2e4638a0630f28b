/*
 * ssh_models.h - hub models for sandboxes of the ssh provider: the model
 * is downloaded once on this machine into the local model cache
 * (provision_prepare, core/lib/hf.c), then copied once per remote host to
 * WORKDIR/.seerfs-models/ORG--NAME@COMMIT over SFTP and shown read-only
 * at /models/MOUNT inside every sandbox there that names it (ssh_models.c,
 * docs/ssh.md).
 */
#ifndef SEER_SSH_MODELS_H
#define SEER_SSH_MODELS_H

#include "core/lib/sftp.h"
#include "core/lib/sshconn.h"
#include "core/lib/util.h"

#include <stddef.h>

struct sandbox;
struct seer_start_model;

/* Where each model of one sandbox is on its host. */
struct ssh_model_place {
	char *remote;   /* WORKDIR/.seerfs-models/KEY, absolute */
	char *mount;    /* its name under /models */
};

struct ssh_models {
	struct ssh_model_place *v;
	size_t n;
};

/* The remote side of one sandbox, as ssh_start knows it. */
struct ssh_models_host {
	struct sandbox *sb;
	struct ssh_conn *conn;
	struct sftp_client *sftp;
	const char *host;      /* the entry's host name, for messages */
	const char *workdir;   /* absolute WORKDIR on the host */
	const char *root;      /* WORKDIR/NAME */
	int bwrap;             /* commands run under bubblewrap there */
	int timeout_ms;        /* the entry's timeout, for short commands */
	const struct seer_start_model *models;   /* what provisioning prepared (struct seer_start) */
	size_t n_models;
};

/* Makes every model of h->models present on the host
 * (uploading what is not there yet, under a lock on the host so that two
 * sandboxes never upload one model at once) and fills *out. Without
 * bubblewrap, also links ROOT/models/MOUNT to each. 0 or -errno with a
 * message in err; a failed upload leaves no copy under the final name. */
int ssh_models_place(const struct ssh_models_host *h, struct ssh_models *out, char *err, size_t n);

/* Appends " --ro-bind REMOTE /models/MOUNT" for each model, quoted for the
 * remote shell. */
void ssh_models_bwrap_args(const struct ssh_models *m, struct sbuf *b);

void ssh_models_free(struct ssh_models *m);

#endif /* SEER_SSH_MODELS_H */
