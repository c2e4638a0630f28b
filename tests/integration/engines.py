"""Real container engines for the tests: dockerd (Debian's docker.io) and
Podman's Docker-compatible service, each started on a data directory of the
test session's own, with the base image (tools/engine-image.sh: a bookworm
minbase with python3, venv, pip, sftp-server, procps) imported as
`seerfs-base:bookworm`.

dockerd listens on a unix socket and on tcp://127.0.0.1:PORT with TLS client
certificates (a CA, server and client certificates made here with openssl,
plus a client certificate of another CA that it must refuse). Podman 4.3's
service speaks plain unix only.

An Engine can be killed (SIGKILL, as a crash) and started again on the same
data, for the provider tests' "engine killed mid-job". stop() removes every
container, stops the engine, unmounts what it left and removes its data; it
raises when a container, a mount or a process of the engine is left.

Used by conftest.py's session fixtures docker_engine and podman_engine.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE = "seerfs-base:bookworm"
START_TIMEOUT_S = 90


class EngineError(Exception):
    pass


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path, timeout=60):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def base_image():
    """The cached base image tarball (built on first use: about a minute)."""
    r = subprocess.run([os.path.join(ROOT, "tools", "engine-image.sh")], capture_output=True, text=True)
    if r.returncode != 0:
        raise EngineError("tools/engine-image.sh failed: " + r.stderr[-3000:])
    return r.stdout.strip().splitlines()[-1]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d):
    """A CA, a server certificate for 127.0.0.1/localhost, a client
    certificate, and a client certificate of another CA (refused). EC keys:
    instant to make. Returns a dict of paths."""
    os.makedirs(d, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "otherca"):
        _openssl("req", "-x509", *ec, "-keyout", ca + "-key.pem", "-out", ca + ".pem", "-days", "7",
                 "-subj", "/CN=seerfs test " + ca, cwd=d)
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    with open(os.path.join(d, "client.ext"), "w") as f:
        f.write("extendedKeyUsage=clientAuth\n")
    for name, ca, ext in (("server", "ca", "server.ext"), ("client", "ca", "client.ext"),
                          ("badclient", "otherca", "client.ext")):
        _openssl("req", *ec, "-keyout", name + "-key.pem", "-out", name + ".csr", "-subj", "/CN=" + name, cwd=d)
        _openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + "-key.pem",
                 "-CAcreateserial", "-out", name + ".pem", "-days", "7", "-extfile", ext, cwd=d)
    for n in os.listdir(d):
        if n.endswith("-key.pem"):
            os.chmod(os.path.join(d, n), 0o600)
    p = lambda n: os.path.join(d, n)  # noqa: E731
    return {"ca": p("ca.pem"), "cert": p("client.pem"), "key": p("client-key.pem"),
            "server_cert": p("server.pem"), "server_key": p("server-key.pem"),
            "bad_cert": p("badclient.pem"), "bad_key": p("badclient-key.pem"), "other_ca": p("otherca.pem")}


class Engine:
    """One engine of the session. Fields: kind ("docker"/"podman"), endpoint
    (unix://...), tls_endpoint/ca/cert/key (docker; None on podman),
    bad_cert/bad_key (a client certificate the engine refuses), image,
    data_dir, log_path."""

    def __init__(self, kind, userns_remap=None, bridge=None):
        self.kind = kind
        # docker only: dockerd's --userns-remap=USER (every container in a
        # user namespace on USER's /etc/subuid, /etc/subgid range)
        self.userns_remap = userns_remap
        # docker only: (NAME, "ADDR/PREFIX"), a bridge of the engine's own
        # that start() makes and stop() removes, instead of --bridge=none:
        # the engine's default network. dockerd runs without iptables, so
        # the fixture adds the one masquerade rule dockerd would (what
        # leaves the bridge's subnet for elsewhere), and removes it.
        self.bridge = bridge
        # Short: a unix socket's path must fit 108 bytes, containerd's under it too.
        self.data_dir = tempfile.mkdtemp(prefix="sfe-" + kind[0] + "-", dir="/tmp")
        os.chmod(self.data_dir, 0o711)
        self.sock = os.path.join(self.data_dir, kind + ".sock")
        self.endpoint = "unix://" + self.sock
        self.log_path = os.path.join(self.data_dir, kind + ".log")
        self.image = IMAGE
        self.proc = None
        self.tls_endpoint = self.ca = self.cert = self.key = None
        self.bad_cert = self.bad_key = None
        if kind == "docker":
            certs = make_certs(os.path.join(self.data_dir, "tls"))
            self.certs = certs
            self.ca, self.cert, self.key = certs["ca"], certs["cert"], certs["key"]
            self.bad_cert, self.bad_key = certs["bad_cert"], certs["bad_key"]
            self.port = free_port()
            self.tls_endpoint = "tcp://127.0.0.1:%d" % self.port
            with open(os.path.join(self.data_dir, "daemon.json"), "w") as f:
                f.write("{}\n")

    # ---- the process --------------------------------------------------------------

    def _argv(self):
        d = self.data_dir
        if self.kind == "docker":
            return ["dockerd", "--config-file", os.path.join(d, "daemon.json"),
                    "--iptables=false", "--ip-masq=false", "--userland-proxy=false",
                    "--bridge", self.bridge[0] if self.bridge else "none",
                    "--storage-driver", "overlay2",
                    "--data-root", os.path.join(d, "data"), "--exec-root", os.path.join(d, "exec"),
                    "--pidfile", os.path.join(d, "docker.pid"),
                    "-H", self.endpoint, "-H", self.tls_endpoint,
                    "--tlsverify", "--tlscacert", self.ca, "--tlscert", self.certs["server_cert"],
                    "--tlskey", self.certs["server_key"],
                    *(["--userns-remap", self.userns_remap] if self.userns_remap else [])]
        return ["podman", *self._podman_globals(), "system", "service", "--time=0", self.endpoint]

    def _nat_rule(self):
        import ipaddress
        net = ipaddress.ip_interface(self.bridge[1]).network
        return ["POSTROUTING", "-s", str(net), "!", "-o", self.bridge[0], "-j", "MASQUERADE"]

    def _podman_globals(self):
        d = self.data_dir
        return ["--root", os.path.join(d, "root"), "--runroot", os.path.join(d, "run"),
                "--tmpdir", os.path.join(d, "tmp"), "--volumepath", os.path.join(d, "volumes"),
                "--network-config-dir", os.path.join(d, "net"),
                "--cgroup-manager", "cgroupfs", "--runtime", "runc", "--events-backend", "file",
                "--storage-driver", "overlay"]

    def _podman_conf(self):
        """A containers.conf of our own. Podman as root gives containers
        nofile=1048576 unless told otherwise, which a root without
        CAP_SYS_RESOURCE (this CI's) cannot raise to: runc fails with
        "error setting rlimit type 7". The default is this process's own
        hard limits instead (dockerd's containers inherit them as well);
        nproc at most 32768, which Podman lowers its own limit to when it
        cannot raise it (seen on Podman 4.3 here: its /proc/PID/limits)."""
        import resource
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        if nproc == resource.RLIM_INFINITY or nproc > 32768:
            nproc = 32768
        lim = lambda v: "-1" if v == resource.RLIM_INFINITY else str(v)  # noqa: E731
        path = os.path.join(self.data_dir, "containers.conf")
        with open(path, "w") as f:
            f.write("[containers]\ndefault_ulimits = [\"nofile=%s:%s\", \"nproc=%s:%s\"]\n"
                    % (lim(nofile), lim(nofile), lim(nproc), lim(nproc)))
        return path

    def log_tail(self, n=60):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError as e:
            return "(no log: %s)" % e

    def start(self):
        """Starts the engine and waits for /_ping; raises EngineError with
        its log when it does not answer within START_TIMEOUT_S."""
        if self.proc and self.proc.poll() is None:
            return
        for n in ("net", "tmp"):
            os.makedirs(os.path.join(self.data_dir, n), exist_ok=True)
        if self.bridge and not os.path.exists("/sys/class/net/" + self.bridge[0]):
            for cmd in (["ip", "link", "add", self.bridge[0], "type", "bridge"],
                        ["ip", "addr", "add", self.bridge[1], "dev", self.bridge[0]],
                        ["ip", "link", "set", self.bridge[0], "up"],
                        ["iptables", "-t", "nat", "-A", *self._nat_rule()]):
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode:
                    raise EngineError("cannot make the engine's bridge: %s: %s" % (" ".join(cmd), r.stderr))
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        log = open(self.log_path, "ab")
        env = dict(os.environ)
        env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        if self.kind == "podman":
            env["CONTAINERS_CONF"] = self._podman_conf()
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     env=env, start_new_session=True)
        log.close()
        while time.monotonic() - t0 < START_TIMEOUT_S:
            if self.proc.poll() is not None:
                raise EngineError("%s exited with status %s while starting; its log %s ends:\n%s"
                                  % (self.kind, self.proc.returncode, self.log_path, self.log_tail()))
            try:
                st, body = self.request("GET", "/_ping", timeout=5)
                if st == 200:
                    self.start_seconds = time.monotonic() - t0
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.kill()
        raise EngineError("%s did not answer /_ping on %s within %d s; its log %s ends:\n%s"
                          % (self.kind, self.endpoint, START_TIMEOUT_S, self.log_path, self.log_tail()))

    def kill(self):
        """SIGKILL of the engine process alone, as a crash: its containers
        (dockerd's containerd and shims, podman's conmons) live on."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if self.kind == "docker":
            self._forget_dead_containerd()
            # A killed dockerd leaves its pid file, and refuses to start
            # again while it is there ("pid file found, ensure docker is not
            # running") where its pid is taken by then.
            try:
                os.unlink(os.path.join(self.data_dir, "docker.pid"))
            except FileNotFoundError:
                pass

    def _forget_dead_containerd(self):
        """dockerd's managed containerd dies with it (parent-death signal),
        but where PID 1 does not reap orphans (this CI's init), it stays a
        zombie, which the next dockerd takes for a live containerd ("still
        running") and waits on forever. Its pid file is removed once the
        process is dead or a zombie, as a reboot's fresh /run would."""
        pidfile = os.path.join(self.data_dir, "exec", "containerd", "containerd.pid")
        try:
            with open(pidfile) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = _state(pid)
            if st in (None, "Z", "X"):
                os.unlink(pidfile)
                return
            time.sleep(0.05)

    def restart(self):
        self.kill()
        self.start()

    # ---- the API, for setup and teardown ----------------------------------------------

    def request(self, method, path, body=None, headers=None, timeout=60):
        c = _UnixHTTP(self.sock, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def containers(self):
        st, body = self.request("GET", "/containers/json?all=1")
        if st != 200:
            raise EngineError("%s: GET /containers/json: HTTP %d %s" % (self.kind, st, body[:300]))
        return json.loads(body)

    def load_image(self, tarball):
        """Imports the base image tarball as IMAGE (POST /images/create
        fromSrc=-, which both engines take)."""
        repo, tag = self.image.split(":")
        t0 = time.monotonic()
        with open(tarball, "rb") as f:
            st, body = self.request("POST", "/images/create?fromSrc=-&repo=%s&tag=%s" % (repo, tag), body=f,
                                    headers={"Content-Type": "application/x-tar",
                                             "Content-Length": str(os.path.getsize(tarball))}, timeout=600)
        if st != 200 or b'"error' in body:
            raise EngineError("%s: importing %s as %s failed: HTTP %d %s; log:\n%s"
                              % (self.kind, tarball, self.image, st, body[-1000:].decode(errors="replace"),
                                 self.log_tail()))
        if self.kind == "podman":
            # Podman 4.3's import drops the tag (REPO:latest) and names it
            # localhost/REPO; its compatible API reads a short name as Docker
            # does (docker.io/library/REPO). Tagged here, so the same
            # "seerfs-base:bookworm" names it on both engines.
            image_id = json.loads(body.strip().splitlines()[-1])["id"]
            st, b2 = self.request("POST", "/images/%s/tag?repo=docker.io/library/%s&tag=%s" % (image_id, repo, tag))
            if st != 201:
                raise EngineError("podman: tagging the import %s as %s: HTTP %d %s" % (image_id, self.image, st, b2[:300]))
        st, body = self.request("GET", "/images/%s/json" % self.image)
        if st != 200:
            raise EngineError("%s: the imported image %s is not found: HTTP %d %s"
                              % (self.kind, self.image, st, body[:300]))
        self.image_seconds = time.monotonic() - t0

    # ---- teardown ---------------------------------------------------------------------------

    def _our_pids(self):
        """Processes of this engine: its own, its containerd, shims and
        conmons (their command lines name the data directory) and the
        containers' processes (their root lies under it)."""
        pids = []
        for p in os.listdir("/proc"):
            if not p.isdigit() or int(p) == os.getpid():
                continue
            try:
                with open("/proc/%s/cmdline" % p, "rb") as f:
                    cmd = f.read()
                root = os.readlink("/proc/%s/root" % p)
            except OSError:
                continue
            if self.data_dir.encode() in cmd or root.startswith(self.data_dir + "/"):
                pids.append(int(p))
        return pids

    def _our_mounts(self):
        out = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4].replace("\\040", " ")
                if mp == self.data_dir or mp.startswith(self.data_dir + "/"):
                    out.append(mp)
        return out

    def stop(self):
        """Removes every container, stops the engine (SIGTERM, then SIGKILL),
        removes its data. Raises EngineError naming what was left behind
        (after cleaning it up, so that the next run starts clean)."""
        left = []
        if not (self.proc and self.proc.poll() is None):
            try:
                self.start()
            except EngineError:
                pass
        if self.proc and self.proc.poll() is None:
            try:
                for c in self.containers():
                    st, body = self.request("DELETE", "/containers/%s?force=1&v=1" % c["Id"], timeout=120)
                    if st not in (204, 404):
                        left.append("container %s (DELETE: HTTP %d %s)" % (c["Id"][:12], st, body[:600]))
                if self.containers():
                    left.append("containers still listed after removal")
            except (OSError, EngineError, ValueError) as e:
                left.append("could not list containers: %s" % e)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                left.append("%s ignored SIGTERM for 60 s" % self.kind)
                self.proc.kill()
                self.proc.wait()
        # dockerd stops its containerd itself; wait for it a moment
        deadline = time.monotonic() + 15
        while [p for p in self._our_pids() if not _is_exec_conmon(p)] and time.monotonic() < deadline:
            time.sleep(0.2)
        # Podman keeps each exec's conmon for --exit-delay 300 s after the
        # exec ended (so a client may still read its exit code), even once
        # the container is gone: expected, killed without a complaint.
        lingering = [p for p in self._our_pids() if _is_exec_conmon(p)]
        for p in lingering:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.2 if lingering else 0)
        pids = [p for p in self._our_pids() if _state(p) not in (None, "Z")]
        if pids:
            left.append("processes left: " + ", ".join("%d (%s)" % (p, _comm(p)) for p in pids))
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.5)
        mounts = self._our_mounts()
        if mounts:
            # podman leaves its storage's own bind of the root (overlay's
            # "root" is a private bind mount): expected, not a leak.
            leaked = [m for m in mounts if not _expected_mount(self, m)]
            if leaked:
                left.append("mounts left: " + ", ".join(leaked))
            for m in sorted(mounts, key=len, reverse=True):
                subprocess.run(["umount", "-l", m], capture_output=True)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.bridge and os.path.exists("/sys/class/net/" + self.bridge[0]):
            for cmd in (["iptables", "-t", "nat", "-D", *self._nat_rule()], ["ip", "link", "del", self.bridge[0]]):
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode:
                    left.append("bridge %s: %s: %s" % (self.bridge[0], " ".join(cmd), r.stderr.strip()))
        if getattr(self, "subid_added", False):
            remove_subid_line(PODMAN_SUBID_LINE)
            self.subid_added = False
        if os.path.exists(self.data_dir):
            left.append("could not remove " + self.data_dir)
        if left:
            raise EngineError("%s engine on %s left: %s" % (self.kind, self.data_dir, "; ".join(left)))


def _expected_mount(e, mp):
    if e.kind == "podman":
        return mp in (os.path.join(e.data_dir, "root", "overlay"),)
    # dockerd binds its data root onto itself to make it a shared mount and
    # undoes that at a clean shutdown, but not after a crash (kill()): the
    # next start binds it again, and one stays.
    # exec/netns/default: dockerd's bind of the host's network namespace,
    # made by the first container with host networking (the docker provider's).
    return mp in (os.path.join(e.data_dir, "data"), os.path.join(e.data_dir, "data", "overlay2"),
                  os.path.join(e.data_dir, "exec", "netns"), os.path.join(e.data_dir, "exec", "netns", "default"))


def _is_exec_conmon(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return os.path.basename(argv[0]) == b"conmon" and b"--exec-attach" in argv and b"--exit-delay" in argv


def _state(pid):
    """A process's state letter (R, S, Z...), None when there is none."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return "?"


# Podman's "userns": "auto" (the docker provider's default there) takes
# each container's ids from user `containers`'s subordinate range.
PODMAN_SUBID_LINE = "containers:1880096768:1048576\n"


def add_subid_line(line):
    """Appends line to /etc/subuid and /etc/subgid unless its user has a
    range there already; True when it was added (remove_subid_line)."""
    user = line.split(":")[0] + ":"
    for f in ("/etc/subuid", "/etc/subgid"):
        with open(f) as fh:
            if any(x.startswith(user) for x in fh):
                return False
    for f in ("/etc/subuid", "/etc/subgid"):
        with open(f, "a") as fh:
            fh.write(line)
    return True


def remove_subid_line(line):
    for f in ("/etc/subuid", "/etc/subgid"):
        with open(f) as fh:
            lines = fh.readlines()
        with open(f, "w") as fh:
            fh.writelines(x for x in lines if x != line)


def start_engine(kind, userns_remap=None, bridge=None):
    """A started engine with the base image loaded; EngineError (with its
    log) otherwise, after stopping what it started."""
    tarball = base_image()
    e = Engine(kind, userns_remap, bridge)
    if kind == "podman":
        e.subid_added = add_subid_line(PODMAN_SUBID_LINE)
    try:
        e.start()
        e.load_image(tarball)
    except Exception:
        try:
            e.stop()
        except EngineError:
            pass
        raise
    return e
