/*
 * snapview.c - a snapshot's viewer container (snapview.h): created from
 * the snapshot's image with the sandboxes' isolation (every capability
 * dropped, no-new-privileges, not privileged, the entry's user namespace
 * choice) plus a read-only root and no network, labelled seerfs.state,
 * seerfs.snapshot and seerfs.helper=snapview (and seerfs.sandbox emptied:
 * the committed image carries its source's label); found again by name,
 * adopted when this state directory made it for the same image; and, on a
 * remote engine, its "/" over SFTP (an sftp-server started in it by an
 * exec stream, core/lib/bytestream_engine.c).
 */
#include "core/providers/docker/snapview.h"
#include "core/providers/docker/api.h"
#include "core/providers/docker/entry.h"
#include "core/ctx.h"
#include "core/lib/bytestream.h"
#include "core/lib/sftp.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

static int view_inspect(struct docker_entry *e, const char *name, struct json_object **out, char *err, size_t n)
{
	char p[512];
	snprintf(p, sizeof(p), "/containers/%s/json", name);
	return dk_call(e, "GET", p, NULL, 0, NULL, out, err, n);
}

static const char *str_at(struct json_object *o, const char *path)
{
	struct json_object *v = dk_get(o, path);
	return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static struct json_object *str_array(const char *const *v)
{
	struct json_object *a = json_object_new_array();
	for (int i = 0; v && v[i]; i++)
		json_object_array_add(a, json_object_new_string(v[i]));
	return a;
}

/* 1: container ci is this state directory's viewer of v's image (adopt
 * it); 0: this state directory's, of another image (make it again); -EBUSY:
 * someone else's container under that name (left alone; the lookup of
 * root/ fails with it). */
static int view_ours(struct seer_ctx *ctx, struct docker_entry *e, const struct dk_view *v, struct json_object *ci,
		     char *err, size_t n)
{
	struct json_object *labels = dk_get(ci, "Config.Labels"), *x;
	const char *st = labels && json_object_object_get_ex(labels, "seerfs.state", &x) ? json_object_get_string(x) : NULL;
	const char *sn = labels && json_object_object_get_ex(labels, "seerfs.snapshot", &x) ? json_object_get_string(x) : NULL;
	if (!st || strcmp(st, ctx->state_dir) || !sn || strcmp(sn, v->snap)) {
		snprintf(err, n,
			 "snapshot %s: engine %s has a container named %s that is not this mount's viewer of it (its labels seerfs.state and seerfs.snapshot differ); remove it (docker rm -f %s) and try again",
			 v->snap, e->endpoint, v->name, v->name);
		return -EBUSY;
	}
	char p[512], e2[256];
	struct json_object *img = NULL;
	snprintf(p, sizeof(p), "/images/%s/json", v->image);
	int r = dk_call(e, "GET", p, NULL, 0, NULL, &img, e2, sizeof(e2));
	const char *want = r == 0 ? str_at(img, "Id") : NULL, *has = str_at(ci, "Image");
	int same = want && has && !strcmp(want, has);
	json_object_put(img);
	return same;
}

static struct json_object *view_labels(struct seer_ctx *ctx, const struct dk_view *v)
{
	struct json_object *l = json_object_new_object();
	json_object_object_add(l, "seerfs.state", json_object_new_string(ctx->state_dir));
	json_object_object_add(l, "seerfs.snapshot", json_object_new_string(v->snap));
	json_object_object_add(l, "seerfs.helper", json_object_new_string("snapview"));
	json_object_object_add(l, "seerfs.sandbox", json_object_new_string(""));
	return l;
}

static int view_create(struct seer_ctx *ctx, struct docker_entry *e, const struct dk_view *v, char *err, size_t n)
{
	struct json_object *req = json_object_new_object(), *hc = json_object_new_object();
	json_object_object_add(req, "Image", json_object_new_string(v->image));
	json_object_object_add(req, "Entrypoint", str_array(v->entrypoint));
	json_object_object_add(req, "Cmd", json_object_new_array());
	json_object_object_add(req, "Labels", view_labels(ctx, v));
	const char *binds[] = {v->bind, NULL};
	json_object_object_add(hc, "Binds", str_array(binds));
	json_object_object_add(hc, "ReadonlyRootfs", json_object_new_boolean(1));
	json_object_object_add(hc, "NetworkMode", json_object_new_string("none"));
	static const char *const drop[] = {"ALL", NULL};
	json_object_object_add(hc, "CapDrop", str_array(drop));
	static const char *const sec[] = {"no-new-privileges", NULL};
	json_object_object_add(hc, "SecurityOpt", str_array(sec));
	json_object_object_add(hc, "Privileged", json_object_new_boolean(0));
	dk_userns_mode(e, hc, 0);   /* as the sandboxes' containers */
	json_object_object_add(req, "HostConfig", hc);
	char p[512];
	snprintf(p, sizeof(p), "/containers/create?name=%s", v->name);
	int r = dk_call(e, "POST", p, json_object_to_json_string(req), 0, NULL, NULL, err, n);
	json_object_put(req);
	return r;
}

static int view_fail(struct docker_entry *e, const struct dk_view *v, int r, const char *why, char *err, size_t n)
{
	snprintf(err, n, "snapshot %s: cannot run a viewer (container %s) of image %s on %s: %s", v->snap, v->name,
		 v->image, e->endpoint, why);
	return r;
}

/* Its container there (adopted, made again or created); *ci its inspect.
 * A second lookup may make it meanwhile: the create's conflict (409) then
 * looks again, once. */
static int view_ensure(struct seer_ctx *ctx, struct docker_entry *e, const struct dk_view *v, struct json_object **ci,
		       char *err, size_t n)
{
	char e2[1024];
	for (int tries = 0;; tries++) {
		int r = view_inspect(e, v->name, ci, e2, sizeof(e2));
		if (r == 0) {
			int ours = view_ours(ctx, e, v, *ci, err, n);
			if (ours > 0)
				return 0;
			json_object_put(*ci);
			*ci = NULL;
			if (ours < 0)
				return ours;
			r = dk_view_remove(e, v->name, e2, sizeof(e2));
		} else if (r == -ENOENT) {
			r = 0;   /* none: made below (dk_call left *ci NULL) */
		}
		if (r == 0)
			r = view_create(ctx, e, v, e2, sizeof(e2));
		if (r == -EEXIST && tries == 0)
			continue;
		if (r == 0)
			r = view_inspect(e, v->name, ci, e2, sizeof(e2));
		return r < 0 ? view_fail(e, v, r, e2, err, n) : 0;
	}
}

int dk_view_run(struct seer_ctx *ctx, struct docker_entry *e, const struct dk_view *v, pid_t *pid, char *err,
		size_t n)
{
	char e2[1024], p[512];
	struct json_object *ci = NULL;
	int r = view_ensure(ctx, e, v, &ci, err, n);
	if (r < 0)
		return r;
	struct json_object *running = dk_get(ci, "State.Running"), *paused = dk_get(ci, "State.Paused");
	const char *what = paused && json_object_get_boolean(paused) ? "unpause"
			   : running && json_object_get_boolean(running) ? NULL : "start";
	if (what) {
		json_object_put(ci);
		ci = NULL;
		snprintf(p, sizeof(p), "/containers/%s/%s", v->name, what);
		long st = 0;
		r = dk_call(e, "POST", p, NULL, 0, &st, NULL, e2, sizeof(e2));
		if (r == 0 || st == 304)   /* 304: started or unpaused meanwhile */
			r = view_inspect(e, v->name, &ci, e2, sizeof(e2));
	}
	struct json_object *jp = dk_get(ci, "State.Pid");
	*pid = r == 0 && jp ? (pid_t)json_object_get_int(jp) : 0;
	json_object_put(ci);
	if (r == 0 && *pid <= 0) {
		snprintf(e2, sizeof(e2), "its init has no pid: it did not stay running");
		r = -ESRCH;
	}
	return r < 0 ? view_fail(e, v, r, e2, err, n) : 0;
}

struct view_exec {
	struct engine *eng;
	const char *name;
	const char *server;
	int timeout_ms;
};

static int open_server(void *arg, const struct bytestream_cbs *cbs, void *ud, struct bytestream **out, char *err,
		       size_t n)
{
	const struct view_exec *a = arg;
	const char *const argv[] = {a->server, NULL};
	return bytestream_engine_open(a->eng, a->name, argv, NULL, NULL, a->timeout_ms, cbs, ud, out, err, n);
}

int dk_view_sftp(struct docker_entry *e, const struct dk_view *v, const char *server, struct sftp_client **out,
		 char *err, size_t n)
{
	char e2[768];
	struct engine *eng = dk_engine(e, e2, sizeof(e2));
	if (!eng) {
		snprintf(err, n, "snapshot %s: %s", v->snap, e2);
		return -EHOSTUNREACH;
	}
	struct view_exec a = {eng, v->name, server, e->timeout_ms};
	int r = sftp_client_open_stream(open_server, &a, out, e2, sizeof(e2));
	if (r < 0)
		snprintf(err, n,
			 "snapshot %s: cannot start %s in its viewer (container %s of image %s) on %s: %s; the image needs it (Debian: the openssh-sftp-server package)",
			 v->snap, server, v->name, v->image, e->endpoint, e2);
	return r;
}

int dk_view_remove(struct docker_entry *e, const char *name, char *err, size_t n)
{
	char p[512], e2[512];
	snprintf(p, sizeof(p), "/containers/%s?force=1&v=1", name);
	int r = dk_call(e, "DELETE", p, NULL, 0, NULL, NULL, e2, sizeof(e2));
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		snprintf(err, n, "cannot remove the viewer container %s on %s: %s", name, e->endpoint, e2);
	return r;
}
