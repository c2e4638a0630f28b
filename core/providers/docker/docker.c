/*
 * docker.c - the `docker` provider: sandboxes in containers of a Docker
 * Engine API (dockerd, Podman's compatible service).
 *
 * Start-up of one sandbox (a local engine: unix://, or tcp:// to this
 * machine):
 *   the image is the config's "image" (else the entry's), with cached layers
 *   for system_packages and python (image.c), or a snapshot's image. The
 *   container runs seerfs-agent (a static build, embedded in seerfs and
 *   written to STATE/docker/agent) as its PID 1, bound read-only, with
 *   every capability dropped, no-new-privileges, the engine's seccomp
 *   profile, no network or the host's, the memory/cpu limits and GPU device
 *   requests. The agent connects to a socket seerfs listens on in
 *   STATE/sandboxes/NAME/docker/ (bound read-only at /.seerfs/run), and from
 *   then on commands run exactly as in a local sandbox: seerfs sends the
 *   argv, environment and the job's three fds over the socket (SCM_RIGHTS),
 *   so env and secrets reach the job only, never the container's config.
 *   seerfs accepts only the container's init (SO_PEERCRED against the
 *   engine's State.Pid), and root/ is /proc/PID/root of that init, an fd,
 *   through the same backend as the local provider.
 *
 * On a remote engine (not on this machine: the entry's "local" is false)
 * nothing of this machine is bound in: the container's init is a waiting
 * shell of the image, root/ is SFTP to the image's sftp-server started by
 * an exec stream (core/lib/bytestream_engine.c), commands are execs
 * (remote_exec.c), local_files go through the archive endpoint and models
 * are engine volumes filled once per engine (model_volume).
 *
 * Snapshots are commits; snapshots/NAME/root/ is a viewer container of the
 * committed image (snapview.c), through an fd on a local engine and SFTP
 * on a remote one, read-only either way.
 *
 * Containers carry the labels seerfs.state and seerfs.sandbox; a remount
 * finds its container by name, checks those labels and adopts it (the
 * agent reconnects within 100 ms). An unmount leaves containers running
 * (their jobs end with the connection, as on the local provider), terminate
 * kills the container, rmdir removes it.
 */
#include "core/providers/docker/docker.h"
#include "core/providers/docker/api.h"
#include "core/providers/docker/image.h"
#include "core/providers/docker/remote_exec.h"
#include "core/providers/docker/snapview.h"
#include "core/agentjobs.h"
#include "core/config.h"
#include "core/lib/bytestream.h"
#include "core/lib/engine.h"
#include "core/lib/sftp.h"
#include "core/lib/sha256.h"
#include "core/lib/util.h"
#include "core/root.h"
#include "core/sandbox.h"
#include "docker_agent_bin.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/syscall.h>
#include <linux/openat2.h>
#include <time.h>
#include <unistd.h>

struct docker_sb {
	char id[80];                /* the container's id */
	char image[160];            /* the image id it runs */
	pid_t pid;                  /* its init (the agent), host pid */
	struct agent_conn ac;       /* to the agent; paused by the engine (snapshot's commit) */
	int rootfd;                 /* O_PATH on /proc/PID/root */
	struct seer_idmap ids;      /* count > 0: its user namespace's range (userns-remap); 0: host ids */
	int no_commit;              /* in Podman's user namespace ("userns": "auto"): no snapshot */
	pthread_mutex_t revive_lock; /* one revive at a time */
	int terminated;             /* stop ran: no revive until the next start */
	int remote;                 /* on a remote engine: root/ is sftp, no agent socket */
	struct sftp_client *sftp;   /* remote: sftp-server in the container, over an exec stream */
	struct dkr_jobs *rjobs;     /* remote: the commands, each an exec stream (remote_exec.c) */
};

/* On a remote engine nothing of this machine can be bound into the
 * container: its init is a shell that waits (and reaps), and root/ is
 * this SFTP server in the container, started over an exec stream. */
#define REMOTE_INIT "trap 'exit 0' TERM INT; while :; do sleep 86400 & wait $!; done"
#define REMOTE_SFTP_SERVER "/usr/lib/openssh/sftp-server"

static struct docker_sb *priv_of(struct sandbox *sb)
{
	if (!sb->priv) {
		struct docker_sb *d = xcalloc(1, sizeof(*d));
		d->rootfd = -1;
		agentconn_init(&d->ac);
		pthread_mutex_init(&d->revive_lock, NULL);
		sb->priv = d;
	}
	return sb->priv;
}

static struct docker_entry *entry_of(struct sandbox *sb)
{
	return (struct docker_entry *)sb->prov_settings;
}

/* seerfs-<8 hex of the state dir>-NAME: one state dir's containers never
 * meet another's. */
static void container_name(struct seer_ctx *ctx, const char *name, char *out, size_t n)
{
	struct sha256_ctx c;
	uint8_t d[SHA256_DIGEST_LEN];
	char hex[2 * SHA256_DIGEST_LEN + 1];
	sha256_init(&c);
	sha256_update(&c, ctx->state_dir, strlen(ctx->state_dir));
	sha256_final(&c, d);
	sha_hex(d, SHA256_DIGEST_LEN, hex);
	snprintf(out, n, "seerfs-%.8s-%s", hex, name);
}

static int docker_check(struct sandbox *sb, const struct seer_config *cfg, char *err, size_t n)
{
	struct docker_entry *e = entry_of(sb);
	if (!e) {
		snprintf(err, n, "sandbox %s: provider \"%s\" has no settings; write config.json again", sb->name,
			 cfg->provider);
		return -EINVAL;
	}
	return 0;
}

/* ---- the agent ---------------------------------------------------------------------------- */

static int write_agent(struct seer_ctx *ctx, char *err, size_t n)
{
	struct docker_state *st = seer_provider_state(ctx, &seer_provider_docker);
	pthread_mutex_lock(&st->agent_lock);
	struct stat s;
	int r = 0;
	if (stat(st->agent_path, &s) < 0 || (size_t)s.st_size != docker_agent_bin_len) {
		char dir[4096];
		snprintf(dir, sizeof(dir), "%s/docker", ctx->state_dir);
		r = mkdir_p(dir, 0755);
		if (r == 0)
			r = write_file_atomic(st->agent_path, docker_agent_bin, docker_agent_bin_len, 0755);
		if (r < 0)
			snprintf(err, n, "cannot write the containers' init %s: %s", st->agent_path, strerror(-r));
	}
	pthread_mutex_unlock(&st->agent_lock);
	return r;
}

#define AGENT_GONE                                                                                             \
	"the container's init (the agent) went away: its processes are gone (was the container stopped, or the engine restarted?); the next command starts the container again"

/* The listening socket STATE/sandboxes/NAME/docker/agent.sock, bound
 * through its directory's fd (the path may be longer than sun_path). */
static int listen_agent(struct sandbox *sb, char *err, size_t n)
{
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s/docker", sb->dir);
	int r = mkdir_p(dir, 0755);
	if (r == 0 && chmod(dir, 0755) < 0)
		r = -errno;
	int dfd = r == 0 ? open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
	if (dfd < 0) {
		r = r < 0 ? r : -errno;
		snprintf(err, n, "sandbox %s: cannot make %s: %s", sb->name, dir, strerror(-r));
		return r;
	}
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/agent.sock", dfd);
	unlinkat(dfd, "agent.sock", 0);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0 ||
	    fchmodat(dfd, "agent.sock", 0666, 0) < 0) {
		r = -errno;
		snprintf(err, n, "sandbox %s: cannot listen on %s/agent.sock: %s", sb->name, dir, strerror(-r));
		if (fd >= 0)
			close(fd);
		close(dfd);
		return r;
	}
	close(dfd);
	return fd;
}

/* Waits for the container's init to connect: only a peer whose host pid is
 * pid counts (a process of the sandbox could connect as well). */
static int accept_agent(struct sandbox *sb, int lfd, pid_t pid, int timeout_ms, char *err, size_t n)
{
	double deadline = mono_s() + timeout_ms / 1000.0;
	for (;;) {
		int left = (int)((deadline - mono_s()) * 1000);
		struct pollfd p = {lfd, POLLIN, 0};
		if (left <= 0 || poll(&p, 1, left) == 0) {
			snprintf(err, n, "sandbox %s: the container's init (pid %d) did not connect to seerfs within %d ms; see `docker logs` of the container",
				 sb->name, (int)pid, timeout_ms);
			return -ETIMEDOUT;
		}
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			int r = -errno;
			snprintf(err, n, "sandbox %s: accept: %s", sb->name, strerror(-r));
			return r;
		}
		struct ucred uc;
		socklen_t ul = sizeof(uc);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &ul) == 0 && uc.pid == pid)
			return fd;
		sandbox_log(sb, "docker: a connection to the agent socket from pid %d, not the container's init %d: refused",
			    (int)uc.pid, (int)pid);
		close(fd);
	}
}

/* ---- the container ------------------------------------------------------------------------ */

static int inspect(struct docker_entry *e, const char *ref, struct json_object **out, char *err, size_t n)
{
	char p[512];
	snprintf(p, sizeof(p), "/containers/%s/json", ref);
	return dk_call(e, "GET", p, NULL, 0, NULL, out, err, n);
}

static const char *jstr(struct json_object *o, const char *path)
{
	struct json_object *v = dk_get(o, path);
	return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static struct json_object *strarr(const char *const *v)
{
	struct json_object *a = json_object_new_array();
	for (int i = 0; v[i]; i++)
		json_object_array_add(a, json_object_new_string(v[i]));
	return a;
}

/* ---- models on a remote engine: a volume per model and commit ------------------------------ */

/* seerfs-model-HASH: HASH of the model's name and commit, so one engine
 * holds one copy of each, whatever state directory asks. */
static void model_volume_name(const struct seer_start_model *m, char *out, size_t n)
{
	struct sha256_ctx c;
	uint8_t d[SHA256_DIGEST_LEN];
	char hex[2 * SHA256_DIGEST_LEN + 1];
	sha256_init(&c);
	sha256_update(&c, m->mount, strlen(m->mount) + 1);
	sha256_update(&c, m->commit, strlen(m->commit) + 1);
	sha256_final(&c, d);
	sha_hex(d, SHA256_DIGEST_LEN, hex);
	snprintf(out, n, "seerfs-model-%.24s", hex);
}

#define MODEL_DONE ".seerfs-complete"

/* PUTs a tar (made by engine_tar_from_fd of fd, under name) at dir of
 * container hid. */
static int put_fd(struct docker_entry *e, struct engine *eng, const char *hid, const char *dir, int fd, const char *name,
		  char *err, size_t n)
{
	void *tar = NULL;
	size_t len = 0;
	int r = engine_tar_from_fd(fd, name, 0, 0, &tar, &len, err, n);
	if (r < 0)
		return r;
	char q[3 * 4096], p[3 * 4096 + 128];
	if (engine_escape(dir, q, sizeof(q)) < 0) {
		free(tar);
		return -ENAMETOOLONG;
	}
	snprintf(p, sizeof(p), "/containers/%s/archive?path=%s", hid, q);
	int st = engine_put_raw(eng, "PUT", p, "application/x-tar", tar, len, NULL, err, n);
	free(tar);
	(void)e;
	return st < 0 ? st : st >= 300 ? -EIO : 0;
}

/* The model's snapshot directory (its entries are links into ../../blobs:
 * followed, so the volume holds the files) into dir of container hid. */
static int put_model_dir(struct docker_entry *e, struct engine *eng, const char *hid, int dfd, const char *dir,
			 char *err, size_t n)
{
	int r = 0, dup = fcntl(dfd, F_DUPFD_CLOEXEC, 3);
	DIR *dh = dup >= 0 ? fdopendir(dup) : NULL;
	if (!dh) {
		snprintf(err, n, "cannot list %s of the model: %s", dir, strerror(errno));
		if (dup >= 0)
			close(dup);
		return -errno;
	}
	struct dirent *de;
	while (r == 0 && (de = readdir(dh))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		int fd = openat(dfd, de->d_name, O_RDONLY | O_CLOEXEC);
		struct stat st;
		if (fd < 0 || fstat(fd, &st) < 0) {
			r = -errno;
			snprintf(err, n, "cannot read %s/%s of the model: %s", dir, de->d_name, strerror(-r));
		} else if (S_ISREG(st.st_mode)) {
			r = put_fd(e, eng, hid, dir, fd, de->d_name, err, n);
		} else if (S_ISDIR(st.st_mode)) {
			/* the directory itself first (a tar of an empty one), then its files */
			char tmpl[] = "/tmp/seerfs-model-XXXXXX", sub[4096];
			if (!mkdtemp(tmpl)) {
				r = -errno;
			} else {
				int tfd = open(tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
				r = tfd < 0 ? -errno : put_fd(e, eng, hid, dir, tfd, de->d_name, err, n);
				if (tfd >= 0)
					close(tfd);
				rmdir(tmpl);
			}
			snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name);
			if (r == 0)
				r = put_model_dir(e, eng, hid, fd, sub, err, n);
		}
		if (fd >= 0)
			close(fd);
	}
	closedir(dh);
	return r;
}

/* The volume of model m on the engine, filled once: a helper container
 * (the sandbox's image, never started, no network) mounts it, the model's
 * files go in through the archive endpoint, then the marker MODEL_DONE; a
 * volume with the marker is used as it is. */
static int model_volume(struct sandbox *sb, struct docker_entry *e, const char *image, const struct seer_start_model *m,
			char *err, size_t n)
{
	char vol[96], e2[768], p[512];
	model_volume_name(m, vol, sizeof(vol));
	struct engine *eng = dk_engine(e, err, n);
	if (!eng)
		return -EHOSTUNREACH;
	char model[256];
	snprintf(model, sizeof(model), "%s", m->mount);
	char *dd = strstr(model, "--");
	if (dd) {   /* ORG--NAME -> ORG/NAME */
		*dd = '/';
		memmove(dd + 1, dd + 2, strlen(dd + 2) + 1);
	}
	struct json_object *req = json_object_new_object(), *labels = json_object_new_object();
	json_object_object_add(req, "Name", json_object_new_string(vol));
	json_object_object_add(labels, "seerfs.model", json_object_new_string(model));
	json_object_object_add(labels, "seerfs.model.commit", json_object_new_string(m->commit));
	json_object_object_add(req, "Labels", labels);
	int r = dk_call(e, "POST", "/volumes/create", json_object_to_json_string(req), 0, NULL, NULL, e2, sizeof(e2));
	json_object_put(req);
	if (r < 0) {
		snprintf(err, n, "sandbox %s: model %s: cannot make volume %s on %s: %s", sb->name, model, vol, e->endpoint, e2);
		return r;
	}
	req = json_object_new_object();
	struct json_object *hc = json_object_new_object(), *binds = json_object_new_array();
	json_object_object_add(req, "Image", json_object_new_string(image));
	static const char *const ep[] = {"/bin/true", NULL};
	json_object_object_add(req, "Entrypoint", strarr(ep));
	json_object_object_add(req, "Cmd", json_object_new_array());
	labels = json_object_new_object();
	json_object_object_add(labels, "seerfs.state", json_object_new_string(sb->ctx->state_dir));
	json_object_object_add(labels, "seerfs.helper", json_object_new_string("model"));
	json_object_object_add(req, "Labels", labels);
	snprintf(p, sizeof(p), "%s:/m", vol);
	json_object_array_add(binds, json_object_new_string(p));
	json_object_object_add(hc, "Binds", binds);
	json_object_object_add(hc, "NetworkMode", json_object_new_string("none"));
	json_object_object_add(req, "HostConfig", hc);
	struct json_object *res = NULL;
	r = dk_call(e, "POST", "/containers/create", json_object_to_json_string(req), 0, NULL, &res, e2, sizeof(e2));
	json_object_put(req);
	char hid[80] = "";
	if (r == 0 && jstr(res, "Id"))
		snprintf(hid, sizeof(hid), "%s", jstr(res, "Id"));
	json_object_put(res);
	if (!hid[0]) {
		snprintf(err, n, "sandbox %s: model %s: cannot make the helper container that fills volume %s: %s", sb->name,
			 model, vol, e2);
		return r < 0 ? r : -EPROTO;
	}
	char *raw = NULL;
	size_t rawlen = 0;
	long st = 0;
	snprintf(p, sizeof(p), "/containers/%s/archive?path=/m/" MODEL_DONE, hid);
	r = dk_call_raw(e, "GET", p, NULL, 0, &st, &raw, &rawlen, e2, sizeof(e2));
	free(raw);
	if (r == 0) {
		sandbox_log(sb, "docker: model %s: volume %s on %s is filled already", model, vol, e->endpoint);
	} else {
		sandbox_set_progress(sb, "model %s: filling volume %s on %s", model, vol, e->endpoint);
		double t0 = mono_s();
		char sp[4096];
		snprintf(sp, sizeof(sp), "%s/snapshots/%s", m->dir, m->commit);
		int dfd = open(sp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		r = dfd < 0 ? -errno : put_model_dir(e, eng, hid, dfd, "/m", e2, sizeof(e2));
		if (dfd < 0)
			snprintf(e2, sizeof(e2), "cannot open %.600s: %s", sp, strerror(-r));
		else
			close(dfd);
		if (r == 0) {
			int mfd = memfd_create("seerfs-model-done", MFD_CLOEXEC);
			if (mfd < 0 || write(mfd, m->commit, strlen(m->commit)) < 0)
				r = -errno;
			else
				r = put_fd(e, eng, hid, "/m", mfd, MODEL_DONE, e2, sizeof(e2));
			if (mfd >= 0)
				close(mfd);
		}
		if (r == 0)
			sandbox_log(sb, "docker: model %s: volume %s on %s filled in %.2f s", model, vol, e->endpoint,
				    mono_s() - t0);
		else
			snprintf(err, n, "sandbox %s: model %s: cannot fill volume %s on %s: %s", sb->name, model, vol,
				 e->endpoint, e2);
	}
	snprintf(p, sizeof(p), "/containers/%s?force=1", hid);
	dk_call(e, "DELETE", p, NULL, 0, NULL, NULL, e2, sizeof(e2));
	return r;
}

static int create_container(struct sandbox *sb, struct docker_entry *e, const struct seer_config *cfg,
			    const struct seer_start *in, const char *cname, const char *image, const char *binds_key,
			    char *id, size_t idlen, char *err, size_t n)
{
	struct docker_state *st = seer_provider_state(sb->ctx, &seer_provider_docker);
	struct json_object *req = json_object_new_object(), *hc = json_object_new_object();
	json_object_object_add(req, "Image", json_object_new_string(image));
	json_object_object_add(req, "Hostname", json_object_new_string(sb->name));
	json_object_object_add(req, "WorkingDir", json_object_new_string("/workspace"));
	static const char *const ep[] = {"/.seerfs/agent", "--connect", "/.seerfs/run/agent.sock", NULL};
	static const char *const ep_remote[] = {"/bin/sh", "-c", REMOTE_INIT, NULL};
	json_object_object_add(req, "Entrypoint", strarr(e->local ? ep : ep_remote));
	json_object_object_add(req, "Cmd", json_object_new_array());
	static const char *const env[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", NULL};
	json_object_object_add(req, "Env", strarr(env));
	struct json_object *labels = json_object_new_object();
	json_object_object_add(labels, "seerfs.state", json_object_new_string(sb->ctx->state_dir));
	json_object_object_add(labels, "seerfs.sandbox", json_object_new_string(sb->name));
	json_object_object_add(labels, "seerfs.image", json_object_new_string(image));
	json_object_object_add(labels, "seerfs.binds", json_object_new_string(binds_key));
	json_object_object_add(req, "Labels", labels);
	struct json_object *binds = json_object_new_array();
	/* hub models: the cache's model directory read-only (its snapshot's
	 * files are links into ../../blobs); /models/NAME points at the
	 * snapshot (model_links, after start). */
	for (size_t i = 0; i < in->n_models; i++) {
		struct sbuf mb = {0};
		if (e->local) {
			sbuf_printf(&mb, "%s:/.seerfs/models/%s:ro", in->models[i].dir, in->models[i].mount);
		} else {   /* a volume of the engine's, filled once (model_volume) */
			char vol[96];
			model_volume_name(&in->models[i], vol, sizeof(vol));
			sbuf_printf(&mb, "%s:/models/%s:ro", vol, in->models[i].mount);
		}
		json_object_array_add(binds, json_object_new_string(mb.data));
		sbuf_free(&mb);
	}
	struct sbuf b = {0};
	if (e->local) {   /* a remote engine's binds would be of its machine's paths: none */
		sbuf_printf(&b, "%s:/.seerfs/agent:ro", st->agent_path);
		json_object_array_add(binds, json_object_new_string(b.data));
		sbuf_free(&b);
		sbuf_printf(&b, "%s/docker:/.seerfs/run:ro", sb->dir);
		json_object_array_add(binds, json_object_new_string(b.data));
		sbuf_free(&b);
	}
	json_object_object_add(hc, "Binds", binds);
	int own_ns = dk_userns_mode(e, hc, 0);
	const char *net = !cfg->network ? "none" : own_ns ? "default" : "host";
	json_object_object_add(hc, "NetworkMode", json_object_new_string(net));
	static const char *const drop[] = {"ALL", NULL};
	json_object_object_add(hc, "CapDrop", strarr(drop));
	static const char *const sec[] = {"no-new-privileges", NULL};
	json_object_object_add(hc, "SecurityOpt", strarr(sec));
	json_object_object_add(hc, "Privileged", json_object_new_boolean(0));
	if (cfg->memory) {
		json_object_object_add(hc, "Memory", json_object_new_int64(cfg->memory));
		json_object_object_add(hc, "MemorySwap", json_object_new_int64(cfg->memory));
	}
	if (cfg->cpu_milli)
		json_object_object_add(hc, "NanoCpus", json_object_new_int64(cfg->cpu_milli * 1000000));
	if (cfg->gpu) {
		struct json_object *dr = json_object_new_object(), *caps = json_object_new_array();
		static const char *const gpu[] = {"gpu", NULL};
		json_object_array_add(caps, strarr(gpu));
		json_object_object_add(dr, "Driver", json_object_new_string("nvidia"));
		json_object_object_add(dr, "Count", json_object_new_int(cfg->gpu_count));
		json_object_object_add(dr, "Capabilities", caps);
		struct json_object *drs = json_object_new_array();
		json_object_array_add(drs, dr);
		json_object_object_add(hc, "DeviceRequests", drs);
	}
	json_object_object_add(req, "HostConfig", hc);
	struct sbuf path = {0};
	sbuf_printf(&path, "/containers/create?name=%s", cname);
	struct json_object *res = NULL;
	int r = dk_call(e, "POST", path.data, json_object_to_json_string(req), 0, NULL, &res, err, n);
	sbuf_free(&path);
	json_object_put(req);
	if (r < 0 && e->userns_auto && dk_podman(e) && strstr(err, "available IDs")) {
		size_t l = strlen(err);
		snprintf(err + l, n - l,
			 "; Podman's user namespaces (\"userns\": \"auto\") take their ids from user containers's range: add a line such as containers:2147483647:2147483648 to /etc/subuid and /etc/subgid, or set \"userns\": \"host\" in the provider's entry");
	}
	if (r == 0) {
		const char *cid = jstr(res, "Id");
		if (cid)
			snprintf(id, idlen, "%s", cid);
		else
			r = -EPROTO;
	}
	json_object_put(res);
	return r;
}

static int container_post(struct docker_entry *e, const char *id, const char *what, char *err, size_t n)
{
	char p[512];
	snprintf(p, sizeof(p), "/containers/%s/%s", id, what);
	long st = 0;
	int r = dk_call(e, "POST", p, NULL, 0, &st, NULL, err, n);
	return r;
}

/* What the container's binds depend on besides the image (the models),
 * as a label: a container made with others is made again. */
/* Starts container id where it is not running, and unpauses it where it is
 * paused (a seerfs that ended mid-snapshot). 0 or -errno, err said. */
static int container_run(struct docker_entry *e, const char *id, char *err, size_t n)
{
	struct json_object *ci = NULL;
	int r = inspect(e, id, &ci, err, n);
	struct json_object *running = dk_get(ci, "State.Running");
	int is_running = r == 0 && running && json_object_get_boolean(running);
	struct json_object *paused = dk_get(ci, "State.Paused");
	if (r == 0 && paused && json_object_get_boolean(paused))
		container_post(e, id, "unpause", err, n);
	json_object_put(ci);
	if (r == 0 && !is_running)
		r = container_post(e, id, "start", err, n);
	return r;
}

static void binds_key(const struct docker_entry *e, const struct seer_start *in, char *out, size_t n)
{
	struct sha256_ctx c;
	uint8_t d[SHA256_DIGEST_LEN];
	char hex[2 * SHA256_DIGEST_LEN + 1];
	sha256_init(&c);
	for (size_t i = 0; i < in->n_models; i++) {
		sha256_update(&c, in->models[i].dir, strlen(in->models[i].dir) + 1);
		sha256_update(&c, in->models[i].mount, strlen(in->models[i].mount) + 1);
		if (!e->local)   /* a volume per commit */
			sha256_update(&c, in->models[i].commit, strlen(in->models[i].commit) + 1);
	}
	sha256_final(&c, d);
	sha_hex(d, SHA256_DIGEST_LEN, hex);
	snprintf(out, n, "%.16s", hex);
}

/* /models/NAME -> /.seerfs/models/NAME/snapshots/COMMIT in the container,
 * made through its root fd: /models is opened inside it (RESOLVE_IN_ROOT),
 * so a link the image holds there cannot lead out. In a user namespace
 * (ids->count > 0) what is made becomes the container root's. */
static int model_links(struct sandbox *sb, int rootfd, const struct seer_start *in, const struct seer_idmap *ids,
		       char *err, size_t n)
{
	if (!in->n_models)
		return 0;
	struct open_how how = {.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
			       .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS};
	long mfd = syscall(SYS_openat2, rootfd, "models", &how, sizeof(how));
	if (mfd < 0 && errno == ENOENT) {
		if (mkdirat(rootfd, "models", 0755) < 0 && errno != EEXIST)
			mfd = -1;
		else
			mfd = syscall(SYS_openat2, rootfd, "models", &how, sizeof(how));
		if (mfd >= 0 && ids->count > 0 && fchownat((int)mfd, "", ids->uid, ids->gid, AT_EMPTY_PATH) < 0) {
			close((int)mfd);
			mfd = -1;
		}
	}
	if (mfd < 0) {
		int r = -errno;
		snprintf(err, n, "sandbox %s: cannot make /models in the container: %s", sb->name, strerror(-r));
		return r;
	}
	int r = 0;
	for (size_t i = 0; i < in->n_models && r == 0; i++) {
		const struct seer_start_model *m = &in->models[i];
		struct sbuf t = {0};
		sbuf_printf(&t, "/.seerfs/models/%s/snapshots/%s", m->mount, m->commit);
		struct stat st;
		if (fstatat((int)mfd, m->mount, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
			unlinkat((int)mfd, m->mount, 0);
		if (symlinkat(t.data, (int)mfd, m->mount) < 0 ||
		    (ids->count > 0 && fchownat((int)mfd, m->mount, ids->uid, ids->gid, AT_SYMLINK_NOFOLLOW) < 0)) {
			r = -errno;
			snprintf(err, n, "sandbox %s: cannot link /models/%s in the container: %s", sb->name, m->mount,
				 strerror(-r));
		}
		sbuf_free(&t);
	}
	close((int)mfd);
	return r;
}

/* One of /proc/PID/uid_map, gid_map: 1 for the host's own ids (no user
 * namespace of the engine's), 0 with *base and *count for the single range
 * "0 BASE COUNT" of a user namespace (dockerd's userns-remap), -EOPNOTSUPP
 * for any other map (several ranges, or one that does not start at 0). */
static int read_map(pid_t pid, const char *which, unsigned long *base, unsigned long *count)
{
	char p[64], buf[512];
	snprintf(p, sizeof(p), "/proc/%d/%s", (int)pid, which);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t k = read(fd, buf, sizeof(buf) - 1);
	int e = errno;
	close(fd);
	if (k < 0)
		return -e;
	buf[k > 0 ? k : 0] = '\0';
	unsigned long in, out, cnt;
	const char *nl = strchr(buf, '\n');
	if (sscanf(buf, "%lu %lu %lu", &in, &out, &cnt) != 3 || in != 0 || (nl && strchr(nl + 1, ' ')))
		return -EOPNOTSUPP;
	if (out == 0 && cnt == 4294967295UL)
		return 1;
	if (cnt == 0 || cnt > SEER_IDMAP_COUNT * 256ul || out + cnt > 4294967295UL)
		return -EOPNOTSUPP;
	*base = out;
	*count = cnt;
	return 0;
}

/* The ids of the container's init in *m: count 0 when they are the
 * host's one to one (no user namespace: root/ and the copies leave owners
 * as they are), else the user namespace's range (dockerd's userns-remap,
 * Podman's userns auto: one range from 0 for uids and one for gids; root/
 * then shows the container's ids and gives new entries its mapped ones).
 * 0, or a negative errno with err filled. */
static int ids_of(const char *kind, const char *name, pid_t pid, struct seer_idmap *m, char *err, size_t n)
{
	unsigned long ub = 0, uc = 0, gb = 0, gc = 0;
	int ru = read_map(pid, "uid_map", &ub, &uc);
	int rg = ru < 0 ? ru : read_map(pid, "gid_map", &gb, &gc);
	*m = (struct seer_idmap){0};
	if (ru == 1 && rg == 1)
		return 0;
	if (ru < 0 || rg < 0 || ru != rg) {
		int r = ru < 0 ? ru : rg < 0 ? rg : -EOPNOTSUPP;
		snprintf(err, n,
			 "%s %s: cannot use the user namespace of container process %d (/proc/%d/uid_map, gid_map): %s; seerfs's root/ understands the host's ids or one range from 0 (dockerd's userns-remap)",
			 kind, name, (int)pid, (int)pid, strerror(-r));
		return r;
	}
	*m = (struct seer_idmap){.uid = (uid_t)ub, .gid = (gid_t)gb, .count = (uint32_t)(uc < gc ? uc : gc)};
	return 0;
}

/* Podman ("userns": "auto") makes the container's working directory and
 * the mount points of its binds (/.seerfs, /.seerfs/agent, /.seerfs/run)
 * in its writable layer as host root, an id the container's user namespace
 * does not map: a commit (snapshot) of that layer then fails ("needs a
 * user namespace with size ... bigger than the maximum"). Those entries of
 * the layer (GraphDriver.Data.UpperDir on this machine, walked by fd,
 * beneath it, no link followed) become the container root's. */
static int own_mount_points(struct sandbox *sb, struct docker_entry *e, const char *id, const struct seer_idmap *m,
			    char *err, size_t n)
{
	struct json_object *ci = NULL;
	char e2[512];
	int r = inspect(e, id, &ci, e2, sizeof(e2));
	const char *upper = r == 0 ? jstr(ci, "GraphDriver.Data.UpperDir") : NULL;
	int dfd = upper && upper[0] == '/' ? open(upper, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
	json_object_put(ci);
	if (dfd < 0)
		return 0;   /* no overlay layer on this machine: nothing to fix */
	static const char *const names[] = {"workspace", ".seerfs", ".seerfs/agent", ".seerfs/run", NULL};
	r = 0;
	for (int i = 0; names[i] && r == 0; i++) {
		struct open_how how = {.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC,
				       .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
		long fd = syscall(SYS_openat2, dfd, names[i], &how, sizeof(how));
		if (fd < 0)
			continue;   /* not in this layer */
		struct stat st;
		if (fstat((int)fd, &st) == 0 && st.st_uid == 0 && st.st_gid == 0 &&
		    fchownat((int)fd, "", m->uid, m->gid, AT_EMPTY_PATH) < 0) {
			r = -errno;
			snprintf(err, n, "sandbox %s: cannot give %s/%s to the container's root (host uid %u): %s", sb->name,
				 upper, names[i], (unsigned)m->uid, strerror(-r));
		}
		close((int)fd);
	}
	close(dfd);
	return r;
}

/* ---- a remote engine: root/ over SFTP in the container ------------------------------------- */

struct exec_open_arg {
	struct engine *eng;
	const char *id;
	int timeout_ms;
};

static int open_sftp_exec(void *arg, const struct bytestream_cbs *cbs, void *ud, struct bytestream **out, char *err,
			  size_t n)
{
	const struct exec_open_arg *a = arg;
	static const char *const argv[] = {REMOTE_SFTP_SERVER, NULL};
	return bytestream_engine_open(a->eng, a->id, argv, NULL, NULL, a->timeout_ms, cbs, ud, out, err, n);
}

/* sftp-server in container id, over an exec stream: the paths it serves
 * resolve inside the container (its own mount namespace and root). */
static int open_remote_sftp(struct sandbox *sb, struct docker_entry *e, const char *id, const char *image,
			    const char *named, struct sftp_client **out, char *err, size_t n)
{
	char e2[512];
	struct engine *eng = dk_engine(e, err, n);
	if (!eng)
		return -EHOSTUNREACH;
	struct exec_open_arg a = {eng, id, e->timeout_ms};
	int r = sftp_client_open_stream(open_sftp_exec, &a, out, e2, sizeof(e2));
	if (r == 0)
		return 0;
	/* Say why plainly when the image lacks the server. */
	char p[256], *raw = NULL;
	size_t rawlen = 0;
	long st = 0;
	char e3[256];
	snprintf(p, sizeof(p), "/containers/%s/archive?path=%s", id, REMOTE_SFTP_SERVER);
	if (dk_call_raw(e, "GET", p, NULL, 0, &st, &raw, &rawlen, e3, sizeof(e3)) == -ENOENT) {
		snprintf(err, n,
			 "sandbox %s: image %s (%.19s) has no %s, which root/ on a remote engine (%s) needs; use an image with it (Debian: the openssh-sftp-server package), such as seerfs-base:bookworm",
			 sb->name, named ? named : image, image, REMOTE_SFTP_SERVER, e->endpoint);
		r = -ENOENT;
	} else {
		snprintf(err, n, "sandbox %s: cannot start %s in its container on %s: %s", sb->name, REMOTE_SFTP_SERVER,
			 e->endpoint, e2);
	}
	free(raw);
	return r;
}

/* The container running (started again when it stopped) and its SFTP
 * server connected: d's remote state. */
static int remote_connect(struct sandbox *sb, struct docker_entry *e, const char *id, const char *image,
			  const char *named, char *err, size_t n)
{
	struct docker_sb *d = priv_of(sb);
	char e2[512];
	int r = container_run(e, id, e2, sizeof(e2));
	if (r < 0) {
		snprintf(err, n, "sandbox %s: cannot start its container %.12s on %s: %s", sb->name, id, e->endpoint, e2);
		return r;
	}
	struct sftp_client *c = NULL;
	if ((r = open_remote_sftp(sb, e, id, image, named, &c, err, n)) < 0)
		return r;
	struct engine *eng = dk_engine(e, err, n);
	if (!eng) {
		sftp_client_unref(c);
		return -EHOSTUNREACH;
	}
	struct dkr_jobs *rj = dkr_jobs_new(sb, eng, id, e->timeout_ms);
	char e3[1024];
	if (dkr_agent_start(rj, image, named, e3, sizeof(e3)) < 0)
		sandbox_log(sb, "docker: %s", e3);
	pthread_mutex_lock(&d->ac.lock);
	struct sftp_client *old = d->sftp;
	struct dkr_jobs *oldj = d->rjobs;
	d->rjobs = rj;
	snprintf(d->id, sizeof(d->id), "%s", id);
	snprintf(d->image, sizeof(d->image), "%s", image);
	d->remote = 1;
	d->sftp = c;
	d->pid = 0;
	d->ac.dead = 0;
	d->ac.stopping = 0;
	d->ac.paused = 0;
	d->terminated = 0;
	pthread_mutex_unlock(&d->ac.lock);
	if (old) {
		sftp_client_shutdown(old, "replaced by a new SFTP session");
		sftp_client_unref(old);
	}
	dkr_jobs_free(oldj, 0);
	return 0;
}

/* Host files into the container through the archive endpoint: a tar of
 * the host tree (walked by fd, engine_tar_from_fd) extracted by the engine
 * at "/" under the name rel, which resolves inside the container. */
static int remote_copy_in(struct sandbox *sb, struct sftp_client *c, int sfd, const char *rel, char *bad, size_t badn)
{
	struct docker_entry *e = entry_of(sb);
	struct docker_sb *d = priv_of(sb);
	char e2[512], parent[4096];
	void *tar = NULL;
	size_t len = 0;
	/* REL's missing parents, made by the container's SFTP server (so
	 * they resolve inside it); then a tar of one name extracted there. */
	snprintf(parent, sizeof(parent), "/%s", rel);
	char *base = strrchr(parent, '/');
	*base++ = '\0';
	for (char *p = parent + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		int m = sftp_mkdir(c, parent, 0755);
		*p = '/';
		if (m < 0 && m != -EEXIST) {
			snprintf(bad, badn, "%.200s", parent);
			return m;
		}
	}
	if (parent[0]) {
		int m = sftp_mkdir(c, parent, 0755);
		if (m < 0 && m != -EEXIST) {
			snprintf(bad, badn, "%.200s", parent);
			return m;
		}
	}
	int r = engine_tar_from_fd(sfd, base, 0, 0, &tar, &len, e2, sizeof(e2));
	if (r < 0) {
		snprintf(bad, badn, "%.200s", e2);
		return r;
	}
	struct engine *eng = dk_engine(e, e2, sizeof(e2));
	if (!eng) {
		free(tar);
		snprintf(bad, badn, "%.200s", e2);
		return -EHOSTUNREACH;
	}
	char p[256 + 3 * sizeof(parent)], q[3 * sizeof(parent)];
	if (engine_escape(parent[0] ? parent : "/", q, sizeof(q)) < 0) {
		free(tar);
		return -ENAMETOOLONG;
	}
	snprintf(p, sizeof(p), "/containers/%s/archive?path=%s", d->id, q);
	int st = engine_put_raw(eng, "PUT", p, "application/x-tar", tar, len, NULL, e2, sizeof(e2));
	free(tar);
	if (st < 0 || st >= 300) {
		sandbox_log(sb, "docker: copying to /%s through the archive endpoint of %s: %s", rel, e->endpoint, e2);
		snprintf(bad, badn, "%.200s", e2);
		return st < 0 ? st : st == 404 ? -ENOENT : -EIO;
	}
	return 0;
}

static int docker_start(struct sandbox *sb, const struct seer_config *cfg, const struct seer_start *in, char *err,
			size_t n)
{
	struct docker_entry *e = entry_of(sb);
	struct docker_sb *d = priv_of(sb);
	char e2[1024];
	d->remote = !e->local;
	int r = e->local ? write_agent(sb->ctx, err, n) : 0;
	if (r < 0)
		return r;
	char cname[160];
	container_name(sb->ctx, sb->name, cname, sizeof(cname));
	double t0 = mono_s();

	/* The image: a snapshot's, or the base with its package layers. */
	char img[160];
	if (in->snap.name) {
		r = dk_image_id(sb, e, in->snap.where, img, sizeof(img), e2, sizeof(e2));
		if (r < 0) {
			snprintf(err, n, "sandbox %s: snapshot %s: its image %s: %s", sb->name, in->snap.name, in->snap.where, e2);
			return r;
		}
	} else {
		const char *base = cfg->image ? cfg->image : e->image;
		sandbox_set_progress(sb, "image: %s on %s", base, e->endpoint);
		char bid[160];
		if ((r = dk_image_id(sb, e, base, bid, sizeof(bid), err, n)) < 0)
			return r;
		if ((r = dk_image_layers(sb, e, cfg, in, bid, img, sizeof(img), err, n)) < 0)
			return r;
	}

	/* Adopt the container this state dir made for this sandbox, when it runs
	 * the same image with the same binds; any other one of that name is in
	 * the way. */
	char bkey[32];
	binds_key(e, in, bkey, sizeof(bkey));
	struct json_object *ci = NULL;
	char id[80] = "";
	r = inspect(e, cname, &ci, e2, sizeof(e2));
	if (r == 0) {
		struct json_object *labels = dk_get(ci, "Config.Labels"), *v;
		const char *ls = labels && json_object_object_get_ex(labels, "seerfs.state", &v) ? json_object_get_string(v) : NULL;
		const char *li = labels && json_object_object_get_ex(labels, "seerfs.image", &v) ? json_object_get_string(v) : NULL;
		const char *cid = jstr(ci, "Id");
		if (!ls || strcmp(ls, sb->ctx->state_dir)) {
			snprintf(err, n, "sandbox %s: engine %s has a container %s that is not this seerfs's (label seerfs.state %s); remove or rename it",
				 sb->name, e->endpoint, cname, ls ? ls : "missing");
			json_object_put(ci);
			return -EEXIST;
		}
		const char *lb = labels && json_object_object_get_ex(labels, "seerfs.binds", &v) ? json_object_get_string(v) : NULL;
		if (cid && li && !strcmp(li, img) && lb && !strcmp(lb, bkey)) {
			snprintf(id, sizeof(id), "%s", cid);
			sandbox_log(sb, "docker: adopting container %s (%.12s)", cname, cid);
		} else if (cid) {
			char p[256];
			snprintf(p, sizeof(p), "/containers/%s?force=1&v=1", cid);
			dk_call(e, "DELETE", p, NULL, 0, NULL, NULL, e2, sizeof(e2));
			sandbox_log(sb, "docker: container %s ran another image or other models: removed", cname);
		}
	} else if (r != -ENOENT) {
		snprintf(err, n, "sandbox %s: %s", sb->name, e2);
		return r;
	}
	json_object_put(ci);
	ci = NULL;

	if (!e->local) {
		for (size_t i = 0; i < in->n_models; i++)
			if ((r = model_volume(sb, e, img, &in->models[i], err, n)) < 0)
				return r;
		if (!id[0]) {
			sandbox_set_progress(sb, "container: creating %s", cname);
			if ((r = create_container(sb, e, cfg, in, cname, img, bkey, id, sizeof(id), e2, sizeof(e2))) < 0) {
				snprintf(err, n, "sandbox %s: cannot create container %s: %s", sb->name, cname, e2);
				return r;
			}
		}
		if ((r = remote_connect(sb, e, id, img, in->snap.name ? in->snap.where : cfg->image ? cfg->image : e->image, err, n)) < 0)
			return r;
		sandbox_log(sb, "docker: container %s (%.12s) running on remote engine %s, root/ over SFTP in it, in %.2f s",
			    cname, id, e->endpoint, mono_s() - t0);
		return 0;
	}

	int lfd = listen_agent(sb, err, n);
	if (lfd < 0)
		return lfd;
	if (!id[0]) {
		sandbox_set_progress(sb, "container: creating %s", cname);
		if ((r = create_container(sb, e, cfg, in, cname, img, bkey, id, sizeof(id), e2, sizeof(e2))) < 0) {
			snprintf(err, n, "sandbox %s: cannot create container %s: %s", sb->name, cname, e2);
			close(lfd);
			return r;
		}
	}
	r = container_run(e, id, e2, sizeof(e2));
	if (r == 0)
		r = inspect(e, id, &ci, e2, sizeof(e2));
	pid_t pid = r == 0 && dk_get(ci, "State.Pid") ? (pid_t)json_object_get_int(dk_get(ci, "State.Pid")) : 0;
	json_object_put(ci);
	if (r < 0 || pid <= 0) {
		snprintf(err, n, "sandbox %s: cannot start container %s: %s", sb->name, cname,
			 r < 0 ? e2 : "the engine gives no pid for it (not running)");
		close(lfd);
		return r < 0 ? r : -ESRCH;
	}
	int sock = accept_agent(sb, lfd, pid, e->timeout_ms, err, n);
	close(lfd);
	char rp[64];
	snprintf(rp, sizeof(rp), "/proc/%d/root", (int)pid);
	int rfd = sock < 0 ? -1 : open(rp, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sock >= 0 && rfd < 0) {
		r = -errno;
		snprintf(err, n, "sandbox %s: cannot reach the container's files at %s: %s", sb->name, rp, strerror(-r));
		close(sock);
		return r;
	}
	if (sock < 0)
		return sock;
	struct seer_idmap ids = {0};
	if ((r = ids_of("sandbox", sb->name, pid, &ids, err, n)) < 0 ||
	    (ids.count > 0 && (r = own_mount_points(sb, e, id, &ids, err, n)) < 0)) {
		close(sock);
		close(rfd);
		return r;
	}
	if ((r = model_links(sb, rfd, in, &ids, err, n)) < 0) {
		close(sock);
		close(rfd);
		return r;
	}
	pthread_mutex_lock(&d->ac.lock);
	snprintf(d->id, sizeof(d->id), "%s", id);
	snprintf(d->image, sizeof(d->image), "%s", img);
	d->pid = pid;
	d->rootfd = rfd;
	d->ids = ids;
	d->no_commit = ids.count > 0 && e->userns_auto && dk_podman(e);
	d->terminated = 0;
	pthread_mutex_unlock(&d->ac.lock);
	if (agentjobs_start(sb, &d->ac, sock, AGENT_GONE) < 0) {
		snprintf(err, n, "sandbox %s: cannot start the agent reader thread", sb->name);
		return -EAGAIN;
	}
	struct agent_msg m = {.type = AG_PING}, rep;
	r = agentconn_rpc(&d->ac, &m, NULL, 0, NULL, 0, &rep);
	if (r < 0) {
		snprintf(err, n, "sandbox %s: the container's init did not answer: %s", sb->name, strerror(-r));
		return r;
	}
	sandbox_log(sb, "docker: container %s (%.12s) running on %s, init pid %d, in %.2f s", cname, id, e->endpoint,
		    (int)pid, mono_s() - t0);
	return 0;
}

/* Ends the connection: the agent kills the container's processes and waits
 * for the next seerfs. */
static void drop_agent(struct docker_sb *d)
{
	pthread_mutex_lock(&d->ac.lock);
	d->ac.stopping = 1;
	int rootfd = d->rootfd;
	struct sftp_client *c = d->sftp;
	struct dkr_jobs *rj = d->rjobs;
	d->rootfd = -1;
	d->sftp = NULL;
	d->rjobs = NULL;
	pthread_mutex_unlock(&d->ac.lock);
	dkr_jobs_free(rj, 0);
	if (c) {
		sftp_client_shutdown(c, "the sandbox stopped");
		sftp_client_unref(c);
	}
	agentconn_end(&d->ac);
	if (rootfd >= 0)
		close(rootfd);
}

static int docker_stop(struct sandbox *sb)
{
	struct docker_sb *d = priv_of(sb);
	struct docker_entry *e = entry_of(sb);
	pthread_mutex_lock(&sb->ctx->lock);
	int unmounting = sb->ctx->stopping;
	pthread_mutex_unlock(&sb->ctx->lock);
	if (d->ac.paused && e && d->id[0]) {
		char e2[256];
		container_post(e, d->id, "unpause", e2, sizeof(e2));
		d->ac.paused = 0;
	}
	pthread_mutex_lock(&d->ac.lock);
	d->terminated = 1;
	struct dkr_jobs *rj = NULL;
	if (d->remote && !unmounting && e && d->id[0]) {
		/* the container's end ends the commands' streams: their exits
		 * come with the status the engine gives */
		rj = d->rjobs;
		d->rjobs = NULL;
	}
	pthread_mutex_unlock(&d->ac.lock);
	if (rj) {
		char e2[512];
		dkr_agent_stop(rj);   /* it kills its commands: they end as killed */
		int r = container_post(e, d->id, "kill", e2, sizeof(e2));
		if (r < 0 && r != -EEXIST && r != -ENOENT)
			sandbox_log(sb, "docker: cannot stop container %.12s: %s", d->id, e2);
		dkr_jobs_free(rj, 3000);
	}
	drop_agent(d);
	/* An unmount leaves the container to the next seerfs (its files,
	 * installed packages); terminate stops it. */
	if (!unmounting && e && d->id[0]) {
		char e2[512];
		int r = container_post(e, d->id, "kill", e2, sizeof(e2));
		if (r < 0 && r != -EEXIST && r != -ENOENT)
			sandbox_log(sb, "docker: cannot stop container %.12s: %s", d->id, e2);
	}
	d->pid = 0;
	return 0;
}

static int docker_destroy(struct sandbox *sb)
{
	struct docker_entry *e = entry_of(sb);
	struct docker_sb *d = priv_of(sb);
	char cname[160], p[512], e2[512];
	container_name(sb->ctx, sb->name, cname, sizeof(cname));
	int r = 0;
	if (e) {
		struct json_object *ci = NULL;
		if (inspect(e, cname, &ci, e2, sizeof(e2)) == 0) {
			struct json_object *labels = dk_get(ci, "Config.Labels"), *v;
			const char *ls = labels && json_object_object_get_ex(labels, "seerfs.state", &v) ? json_object_get_string(v) : NULL;
			if (ls && !strcmp(ls, sb->ctx->state_dir)) {
				snprintf(p, sizeof(p), "/containers/%s?force=1&v=1", cname);
				r = dk_call(e, "DELETE", p, NULL, 0, NULL, NULL, e2, sizeof(e2));
				if (r < 0 && r != -ENOENT)
					sandbox_log(sb, "docker: cannot remove container %s: %s", cname, e2);
				else
					r = 0;
			}
		}
		json_object_put(ci);
	}
	d->id[0] = '\0';
	snprintf(p, sizeof(p), "%s/docker/agent.sock", sb->dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/docker", sb->dir);
	rmdir(p);
	return r;
}

static int revive(struct sandbox *sb, char *err, size_t n);

/* A remote engine's SFTP session that failed marks the connection dead:
 * the next revive connects again. */
static void sftp_check(struct docker_sb *d)
{
	pthread_mutex_lock(&d->ac.lock);
	if (d->sftp && sftp_client_error(d->sftp, NULL, 0) != 0)
		d->ac.dead = 1;   /* the engine or the container went away: connect again */
	pthread_mutex_unlock(&d->ac.lock);
}

/* A remote engine's commands (remote_exec.c), held for the caller
 * (dkr_unhold), or NULL where there are none; with live, NULL too while the
 * connection is dead. */
static struct dkr_jobs *hold_rjobs(struct docker_sb *d, int live)
{
	pthread_mutex_lock(&d->ac.lock);
	struct dkr_jobs *rj = live && d->ac.dead ? NULL : d->rjobs;
	if (rj)
		dkr_hold(rj);
	pthread_mutex_unlock(&d->ac.lock);
	return rj;
}

static int docker_root(struct sandbox *sb, struct seer_root *out)
{
	struct docker_sb *d = priv_of(sb);
	if (d->remote) {
		char err[512];
		sftp_check(d);
		int r = revive(sb, err, sizeof(err));
		if (r < 0) {
			sandbox_log(sb, "%s", err);
			return -ENOTCONN;
		}
		pthread_mutex_lock(&d->ac.lock);
		struct sftp_client *c = d->ac.dead ? NULL : d->sftp;
		if (c)
			sftp_client_ref(c);
		pthread_mutex_unlock(&d->ac.lock);
		if (!c)
			return -ENOTCONN;
		out->fd = -1;
		out->sftp = c;
		snprintf(out->path, sizeof(out->path), "/");
		out->readonly = 0;
		out->host_ids = 0;
		return 0;
	}
	int r = agentjobs_root(&d->ac, &d->rootfd, out);
	if (r < 0)
		return r;
	pthread_mutex_lock(&d->ac.lock);
	struct seer_idmap ids = d->ids;   /* the container's for good: a revive keeps them */
	pthread_mutex_unlock(&d->ac.lock);
	/* No user namespace: the container's root is host root; in one
	 * (userns-remap), its range. */
	out->host_ids = ids.count == 0;
	out->ids = ids;
	return 0;
}

static int docker_copy_in(struct sandbox *sb, const struct seer_root *root, int sfd, const struct stat *st,
			  const char *rel, char *bad, size_t badn)
{
	(void)st;
	if (!root->sftp)
		return -ENOTSUP;   /* a local engine's roots are fds: the core copies itself */
	return remote_copy_in(sb, root->sftp, sfd, rel, bad, badn);
}

/* The agent went away (the engine restarted, the container was stopped
 * from outside): start the container again and reconnect. */
static int revive_locked(struct sandbox *sb, char *err, size_t n);

static int revive(struct sandbox *sb, char *err, size_t n)
{
	struct docker_sb *d = priv_of(sb);
	pthread_mutex_lock(&d->revive_lock);
	pthread_mutex_lock(&d->ac.lock);
	int need = d->ac.dead && d->id[0] && !d->terminated;
	pthread_mutex_unlock(&d->ac.lock);
	int r = need ? revive_locked(sb, err, n) : 0;
	pthread_mutex_unlock(&d->revive_lock);
	return r;
}

static int revive_locked(struct sandbox *sb, char *err, size_t n)
{
	struct docker_sb *d = priv_of(sb);
	drop_agent(d);
	struct docker_entry *e = entry_of(sb);
	if (d->remote) {
		char id[80], img[160];
		snprintf(id, sizeof(id), "%s", d->id);
		snprintf(img, sizeof(img), "%s", d->image);
		int r = remote_connect(sb, e, id, img, NULL, err, n);
		if (r == 0)
			sandbox_log(sb, "docker: container %.12s on %s reached again", id, e->endpoint);
		return r;
	}
	char e2[512];
	int lfd = listen_agent(sb, err, n);
	if (lfd < 0)
		return lfd;
	struct json_object *ci = NULL;
	int r = inspect(e, d->id, &ci, e2, sizeof(e2));
	struct json_object *running = dk_get(ci, "State.Running");
	int is_running = r == 0 && running && json_object_get_boolean(running);
	json_object_put(ci);
	ci = NULL;
	if (r == 0 && !is_running)
		r = container_post(e, d->id, "start", e2, sizeof(e2));
	if (r == 0)
		r = inspect(e, d->id, &ci, e2, sizeof(e2));
	pid_t pid = r == 0 && dk_get(ci, "State.Pid") ? (pid_t)json_object_get_int(dk_get(ci, "State.Pid")) : 0;
	json_object_put(ci);
	if (r < 0 || pid <= 0) {
		close(lfd);
		snprintf(err, n, "sandbox %s: its container is gone and cannot be started again: %s", sb->name,
			 r < 0 ? e2 : "no pid");
		return r < 0 ? r : -ESRCH;
	}
	int sock = accept_agent(sb, lfd, pid, e->timeout_ms, err, n);
	close(lfd);
	if (sock < 0)
		return sock;
	char rp[64];
	snprintf(rp, sizeof(rp), "/proc/%d/root", (int)pid);
	int rfd = open(rp, O_PATH | O_DIRECTORY | O_CLOEXEC);
	struct seer_idmap ids = {0};
	char e3[512];
	if (ids_of("sandbox", sb->name, pid, &ids, e3, sizeof(e3)) < 0) {
		snprintf(err, n, "%s", e3);
		if (rfd >= 0)
			close(rfd);
		close(sock);
		return -EOPNOTSUPP;
	}
	pthread_mutex_lock(&d->ac.lock);
	d->pid = pid;
	d->rootfd = rfd;
	d->ids = ids;
	pthread_mutex_unlock(&d->ac.lock);
	if (agentjobs_start(sb, &d->ac, sock, AGENT_GONE) < 0)
		return -EAGAIN;
	sandbox_log(sb, "docker: container %.12s started again, init pid %d", d->id, (int)pid);
	return 0;
}

static int docker_spawn(struct sandbox *sb, const struct seer_spawn *req, int *pid, char *err, size_t n)
{
	struct docker_sb *d = priv_of(sb);
	if (d->remote)
		sftp_check(d);
	int r = revive(sb, err, n);
	if (r < 0)
		return r;
	if (d->remote) {
		struct dkr_jobs *rj = hold_rjobs(d, 1);
		if (!rj) {
			snprintf(err, n, "sandbox %s: its container is not reachable", sb->name);
			return -ENOTCONN;
		}
		r = dkr_spawn(rj, req, pid, err, n);
		dkr_unhold(rj);
		return r;
	}
	return agentjobs_spawn(sb, &d->ac, "its container's init", req, pid, err, n);
}

static int docker_signal(struct sandbox *sb, int pid, int sig, int tree)
{
	struct docker_sb *d = priv_of(sb);
	if (d->remote) {
		struct dkr_jobs *rj = hold_rjobs(d, 0);
		if (!rj)
			return -ENOTCONN;
		int r = dkr_signal(rj, pid, sig, tree);
		dkr_unhold(rj);
		return r;
	}
	return agentjobs_signal(&d->ac, pid, sig, tree);
}

/* The engine's pause (the cgroup freezer): the agent stops with the rest,
 * so RPCs wait until it resumes. */
static int docker_freeze(struct sandbox *sb, int freeze)
{
	struct docker_sb *d = priv_of(sb);
	struct docker_entry *e = entry_of(sb);
	char e2[512];
	if (!d->id[0] || d->ac.dead)
		return -ENOTCONN;
	int r = container_post(e, d->id, freeze ? "pause" : "unpause", e2, sizeof(e2));
	if (r == 0)
		agentconn_set_paused(&d->ac, freeze);
	else
		sandbox_log(sb, "docker: %s: %s", freeze ? "pause" : "unpause", e2);
	return r;
}

/* ---- snapshots: committed images ----------------------------------------------------------- */

static void snap_ref(struct seer_ctx *ctx, const char *snap, char *out, size_t n)
{
	char cname[160];
	container_name(ctx, snap, cname, sizeof(cname));
	/* seerfs-HASH-SNAP -> seerfs-snap:HASH-SNAP (tags allow [\w.-], 128) */
	snprintf(out, n, "seerfs-snap:%.120s", cname + 7);
}

static int docker_snap_take(struct sandbox *sb, const char *snap, const char *layer, struct seer_snap_taken *out,
			    char *err, size_t n)
{
	(void)layer;
	struct docker_sb *d = priv_of(sb);
	struct docker_entry *e = entry_of(sb);
	if (!d->id[0] || d->ac.dead) {
		snprintf(err, n, "sandbox %s: its container is not running: no snapshot", sb->name);
		return -ENOTCONN;
	}
	if (d->no_commit) {
		snprintf(err, n,
			 "sandbox %s: snapshot %s: its container runs in Podman's user namespace (\"userns\": \"auto\"), whose commits Podman 4.3 cannot start again (it keeps the host ids in the layer); remove \"userns\" from the provider's entry for sandboxes that take snapshots",
			 sb->name, snap);
		return -EOPNOTSUPP;
	}
	char ref[200], p[512], e2[1024];
	snap_ref(sb->ctx, snap, ref, sizeof(ref));
	const char *colon = strchr(ref, ':');
	snprintf(p, sizeof(p), "/commit?container=%s&repo=%.*s&tag=%s&pause=1", d->id, (int)(colon - ref), ref, colon + 1);
	double t0 = mono_s();
	/* the engine pauses the container for the commit (its freezer) */
	int r = dk_call(e, "POST", p, "{}", 60 * 60 * 1000, NULL, NULL, e2, sizeof(e2));
	double dt = mono_s() - t0;
	if (r < 0) {
		snprintf(err, n, "sandbox %s: snapshot %s: commit of container %.12s failed: %s", sb->name, snap, d->id, e2);
		return r;
	}
	struct json_object *o = NULL;
	snprintf(p, sizeof(p), "/images/%s/json", ref);
	if (dk_call(e, "GET", p, NULL, 0, NULL, &o, e2, sizeof(e2)) == 0 && dk_get(o, "Size"))
		out->bytes = (uint64_t)json_object_get_int64(dk_get(o, "Size"));
	json_object_put(o);
	snprintf(out->where, sizeof(out->where), "%s", ref);
	out->entries = 0;
	out->frozen_s = dt;
	return 0;
}

/* The viewer of a snapshot (snapview.c): a container of its image with a
 * read-only root whose init only waits. */
static void view_name(struct seer_ctx *ctx, const char *snap, char *out, size_t n)
{
	char cname[160];
	container_name(ctx, snap, cname, sizeof(cname));
	snprintf(out, n, "%s-snapview", cname);
}

static int docker_snap_remove(struct seer_ctx *ctx, const void *settings, const char *snap, const char *where,
			      char *err, size_t n)
{
	struct docker_entry *e = (struct docker_entry *)settings;
	if (!e || !where || !*where)
		return 0;
	char p[512], vname[200], e2[512];
	view_name(ctx, snap, vname, sizeof(vname));
	int r = dk_view_remove(e, vname, e2, sizeof(e2));
	if (r < 0) {
		snprintf(err, n, "snapshot %s: %s", snap, e2);
		return r;
	}
	snprintf(p, sizeof(p), "/images/%s?force=1", where);
	r = dk_call(e, "DELETE", p, NULL, 0, NULL, NULL, e2, sizeof(e2));
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		snprintf(err, n, "snapshot %s: cannot remove image %s: %s", snap, where, e2);
	return r;
}

/* A local engine's viewer: /proc/PID/root of its init, an fd. */
static int view_root_fd(const char *snap, pid_t pid, struct seer_root *out, char *err, size_t n)
{
	char rp[64];
	snprintf(rp, sizeof(rp), "/proc/%d/root", (int)pid);
	int fd = open(rp, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		int r = -errno;
		snprintf(err, n, "snapshot %s: cannot open %s: %s", snap, rp, strerror(-r));
		return r;
	}
	struct seer_idmap ids = {0};
	int r = ids_of("snapshot", snap, pid, &ids, err, n);
	if (r < 0) {
		close(fd);
		return r;
	}
	out->fd = fd;
	out->sftp = NULL;
	out->path[0] = '\0';
	out->host_ids = ids.count == 0;
	out->ids = ids;
	return 0;
}

/* A remote engine's viewer: its "/" over SFTP, as a remote sandbox's
 * root/ (owners as the server gives them). */
static int view_root_sftp(struct docker_entry *e, const struct dk_view *v, struct seer_root *out, char *err, size_t n)
{
	struct sftp_client *c = NULL;
	int r = dk_view_sftp(e, v, REMOTE_SFTP_SERVER, &c, err, n);
	if (r < 0)
		return r;
	out->fd = -1;
	out->sftp = c;
	snprintf(out->path, sizeof(out->path), "/");
	out->host_ids = 0;
	return 0;
}

static int docker_snap_root(struct seer_ctx *ctx, const void *settings, const struct seer_snap_ref *snap,
			    struct seer_root *out, char *err, size_t n)
{
	struct docker_entry *e = (struct docker_entry *)settings;
	struct docker_state *st = seer_provider_state(ctx, &seer_provider_docker);
	if (!e || !snap->where || !*snap->where) {
		snprintf(err, n, "snapshot %s: no image recorded", snap->name);
		return -ENOENT;
	}
	int r = e->local ? write_agent(ctx, err, n) : 0;
	if (r < 0)
		return r;
	static const char *const ep[] = {"/.seerfs/agent", "--connect", "/nonexistent/seerfs-view", NULL};
	static const char *const ep_remote[] = {"/bin/sh", "-c", REMOTE_INIT, NULL};
	char vname[200];
	view_name(ctx, snap->name, vname, sizeof(vname));
	struct sbuf b = {0};
	if (e->local)
		sbuf_printf(&b, "%s:/.seerfs/agent:ro", st->agent_path);
	struct dk_view v = {snap->name, snap->where, vname, e->local ? ep : ep_remote, b.data};
	pid_t pid = 0;
	r = dk_view_run(ctx, e, &v, &pid, err, n);
	if (r == 0)
		r = e->local ? view_root_fd(snap->name, pid, out, err, n) : view_root_sftp(e, &v, out, err, n);
	sbuf_free(&b);
	out->readonly = 1;
	return r;
}

/* root/'s file operations beyond SFTP on a remote engine, through the
 * sandbox's agent in the container (fs/root/sftpfs_agent.c); -ENOTSUP on a
 * local engine (root/ is an fd there) and without the agent (no perl). */
static int docker_fileop(struct sandbox *sb, const void *req, size_t len, char *reply, size_t cap, size_t *rlen)
{
	struct docker_sb *d = priv_of(sb);
	if (!d->remote)
		return -ENOTSUP;
	struct dkr_jobs *rj = hold_rjobs(d, 1);
	if (!rj)
		return -ENOTCONN;
	int r = dkr_fileop(rj, req, len, reply, cap, rlen);
	dkr_unhold(rj);
	return r;
}

static int docker_busy(struct sandbox *sb)
{
	struct docker_sb *d = priv_of(sb);
	if (d->ac.paused)
		return 1;
	if (d->remote) {
		struct dkr_jobs *rj = hold_rjobs(d, 0);
		if (!rj)
			return 0;
		int busy = dkr_busy(rj);
		dkr_unhold(rj);
		return busy;
	}
	return agentjobs_busy(&d->ac);
}

static void docker_release(struct sandbox *sb)
{
	struct docker_sb *d = sb->priv;
	if (!d)
		return;
	drop_agent(d);
	agentconn_destroy(&d->ac);
	pthread_mutex_destroy(&d->revive_lock);
	free(d);
	sb->priv = NULL;
}

static void docker_isolation(struct sandbox *sb, char *buf, size_t len)
{
	int network = sandbox_network(sb);
	struct docker_entry *e = entry_of(sb);
	struct docker_sb *d = priv_of(sb);
	snprintf(buf, len,
		 "docker container %.12s on %s (pid, mount, ipc, uts namespaces; %s; no capabilities; no-new-privileges; the engine's seccomp profile; root is host root unless the engine remaps users)",
		 d->id, e ? e->endpoint : "?", network ? "the host's network" : "no network");
}

const struct seer_provider seer_provider_docker = {
	.name = "docker",
	.init = docker_state_init,
	.cleanup = docker_state_cleanup,
	.check = docker_check,
	.start = docker_start,
	.stop = docker_stop,
	.destroy = docker_destroy,
	.root = docker_root,
	.copy_in = docker_copy_in,
	.spawn = docker_spawn,
	.signal = docker_signal,
	.freeze = docker_freeze,
	.snap_take = docker_snap_take,
	.snap_remove = docker_snap_remove,
	.snap_root = docker_snap_root,
	.busy = docker_busy,
	.fileop = docker_fileop,
	.release = docker_release,
	.isolation = docker_isolation,
	.host_binds = 1,
	.builds_packages = 1,
};
