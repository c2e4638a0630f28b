"""conftest.py - what the integration tests share: a real seerfs on a
temporary mountpoint with a state directory of its own, sandboxes in it, and
helpers that drive them through their files only.

Binaries come from $SEERFS_BUILD (default <repo>/build; a relative path is
taken from the repository root): fs/seerfs and core/providers/local/seerfs-agent.

The tests run as whoever runs pytest. tools/test.sh runs them once as root
and once as the ordinary user `seer` (SEERFS_TEST_USER=seer, under runuser),
so nothing here may assume root: tests that need it skip with a reason.

Fixtures:
  docker_engine, podman_engine  session-scoped real engines (engines.py), root only
  seerfs_factory   start(state=None, env=None, args=(), mountpoint=None) -> Seerfs;
                   every seerfs started is unmounted at teardown, and must
                   then exit with status 0 (its stderr is shown otherwise)
  mnt              one Seerfs, freshly mounted
  sandbox          Path of MOUNT/sb: made, given config {}, running; at
                   teardown terminated and removed
  sandbox_run      run(cmd, timeout=60) -> (exit, text) in `sandbox`: the output
                   decoded as str; when the test also uses posix_root, the
                   command runs in that directory (as _pass_fixtures.py did)
  posix_root       Path of a fresh empty directory under sandbox/root/workspace/

SEERFS_TEST_PROVIDER=ssh runs the same test bodies against the ssh provider
(docs/ssh.md): one OpenSSH sshd on 127.0.0.1 for the whole session
(sshd_fixture.py), and every seerfs the factory starts gets -o providers=FILE
naming it "t1" (a per-test file, so each test has its own remote workdir;
SEERFS_TEST_SSH_DELAY_MS=20 puts tests/bench/delay_proxy.py in front of it);
Seerfs.sandbox() adds "provider": "t1" to the configs it writes, so the
`sandbox` fixture and tests that build their own sandboxes land there. The
default (unset or "local") is the local provider, unchanged. Tests that check
what only the local provider does mark that with needs_local(reason), or
branch on LOCAL for the part the ssh provider lacks.

Every test that starts a seerfs gets a time limit ($SEERFS_TEST_TIMEOUT,
default 180 s, SIGALRM): a hung filesystem fails that test, not the run.

Helpers (plain functions, usable from any test module):
  sandbox_run(sbdir, cmd)  runs cmd with /bin/sh -c through sbdir/exec: open
                           O_RDWR, write, read to EOF (stdout and stderr as
                           they come); the exit is jobs/latest/exit: an int
                           (0, 3) or a str ("signal 9")
  write_config, state, wait_text, wait_settled, poll_state, ctl, error_text
"""

import base64
import contextlib
import errno
import hashlib
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def _build_dir():
    b = pathlib.Path(os.environ.get("SEERFS_BUILD", "build"))
    return b if b.is_absolute() else REPO / b


BUILD = _build_dir()
SEERFS = BUILD / "fs" / "seerfs"
AGENT = BUILD / "core" / "providers" / "local" / "seerfs-agent"
MOUNT_HELPER = REPO / "tools" / "mount.seerfs"
IS_ROOT = os.geteuid() == 0
TEST_USER = os.environ.get("SEERFS_TEST_USER", "")
# Which provider the sandboxes of the tests use: "local" or "ssh" (see above).
PROVIDER = os.environ.get("SEERFS_TEST_PROVIDER", "local") or "local"
if PROVIDER not in ("local", "ssh", "docker", "docker-remote"):
    raise RuntimeError(f"SEERFS_TEST_PROVIDER={PROVIDER!r}: want local, ssh, docker or docker-remote")
# docker-remote: the docker provider with the test's dockerd reached over its
# TLS endpoint and the entry forced remote ("local": false): root/ is SFTP in
# the container, commands are Engine API execs (docs/docker.md).
DOCKER = PROVIDER in ("docker", "docker-remote")
LOCAL = PROVIDER == "local"
# root/ is an fd on the sandbox's "/" (fs/root/pass.c): the local provider's
# and the docker provider's on a local engine; ssh's is SFTP.
FD_ROOT = PROVIDER in ("local", "docker")   # docker-remote's root/ is SFTP, as ssh's
SSH_PROVIDER_NAME = "t1"
DOCKER_PROVIDER_NAME = "t1"


def needs_local(reason):
    """Skips a test under SEERFS_TEST_PROVIDER=ssh; reason says what the ssh
    provider lacks (so the skip line in the summary explains itself)."""
    return pytest.mark.skipif(not LOCAL, reason=f"{PROVIDER} provider: {reason}")


def needs_fd_root(reason):
    """Skips a test where root/ is SFTP (the ssh provider): reason says
    what SFTP lacks. The docker provider's root/ is an fd, as the local's."""
    return pytest.mark.skipif(not FD_ROOT, reason=f"{PROVIDER} provider: {reason}")


def not_on_docker(reason):
    """Skips a test under SEERFS_TEST_PROVIDER=docker; reason says why it
    cannot hold in a container."""
    return pytest.mark.skipif(DOCKER, reason=f"docker provider: {reason}")


def docker_entry(engine, **kw):
    """A providers.json entry of type docker for engine (engines.py's
    Engine) with its base image; kw adds or overrides keys."""
    e = {"type": "docker", "endpoint": engine.endpoint, "image": engine.image, "timeout": 20}
    e.update(kw)
    return e

# Control files every sandbox directory has (from the issue; names are fixed).
CONTROL_FILES = ("config.json", "status", "wait", "log", "error", "info.json", "ctl")
STATES = ("new", "provisioning", "running", "failed", "terminating", "terminated")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S")

# How long a state change may take. ASan builds are slower; this is generous.
SETTLE_S = float(os.environ.get("SEERFS_TEST_SETTLE_S", "30"))
# The most one test that mounts a seerfs may take, set-up and teardown apart.
TEST_TIMEOUT_S = int(os.environ.get("SEERFS_TEST_TIMEOUT", "180"))


def pytest_configure(config):
    """As root, each session's temporary directories go under a base of its
    own: pytest resets the shared /tmp/pytest-of-root to 0700 whenever any
    session starts, which would shut a running session's sandboxes (a
    subordinate id range, see searchable_parents) out of their state
    directories."""
    if IS_ROOT and not config.option.basetemp and not hasattr(config, "workerinput"):
        import tempfile
        base = tempfile.mkdtemp(prefix="seerfs-pytest-", dir="/tmp")
        os.chmod(base, 0o711)
        config.option.basetemp = os.path.join(base, "t")
        config._seerfs_base = base


def pytest_sessionfinish(session, exitstatus):
    """The base of pytest_configure goes when everything passed (kept to
    look at otherwise)."""
    base = getattr(session.config, "_seerfs_base", None)
    if base and exitstatus == 0:
        remove_tree(base)


def pytest_report_header(config):
    return [f"seerfs: {SEERFS} (uid {os.geteuid()}{', SEERFS_TEST_USER=' + TEST_USER if TEST_USER else ''}), "
            f"provider {PROVIDER}"]


# ---- small helpers -------------------------------------------------------------


def read_text(path, timeout=SETTLE_S):
    """Reads a whole file through `cat` with a time limit, so that a read the
    filesystem parks forever fails the test instead of hanging it."""
    try:
        p = subprocess.run(["cat", str(path)], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"reading {path} did not return within {timeout} s") from None
    if p.returncode != 0:
        raise OSError(_errno_of(p.stderr), p.stderr.decode(errors="replace").strip(), str(path))
    return p.stdout.decode(errors="replace")


def searchable_parents(path):
    """As root, seerfs runs the sandboxes as ids of their own (a subordinate
    range: docs/security.md), and bubblewrap, as the range's root, must pass
    through the state directory's parents: pytest's temporary directories are
    0700, where /var/lib, the default's parent, is 0755. Only those under
    /tmp are opened up (o+x: enter, not list)."""
    if not IS_ROOT:
        return
    p = pathlib.Path(path).absolute()
    for d in p.parents:
        if not str(d).startswith("/tmp/") or not d.exists():
            continue
        mode = d.stat().st_mode
        if not mode & 0o001:
            os.chmod(d, (mode & 0o7777) | 0o001)


def build_wheel(dirpath, name, version, value):
    """A pure-Python wheel zipped by hand (no network, no `wheel` module):
    package `name` whose VALUE is `value`, in dirpath (made 0755, the wheel
    0644, so that a sandbox's other ids may read them). Returns its path."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VALUE = {value!r}\n".encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for p, data in files.items():
        d = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{p},sha256={d},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    dirpath = pathlib.Path(dirpath)
    dirpath.mkdir(parents=True, exist_ok=True)
    os.chmod(dirpath, 0o755)
    path = dirpath / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, data in files.items():
            z.writestr(p, data)
    os.chmod(path, 0o644)
    return path


def _errno_of(msg):
    m = msg.decode(errors="replace") if isinstance(msg, bytes) else msg
    for code, words in ((errno.ENOENT, "No such file"), (errno.EACCES, "Permission denied"),
                        (errno.EINVAL, "Invalid argument"), (errno.EBUSY, "busy"),
                        (errno.ENOTCONN, "not connected"), (errno.EINTR, "Interrupted")):
        if words in m:
            return code
    return errno.EIO


def write_file(path, data, flags=os.O_WRONLY | os.O_TRUNC):
    """open + one write + close, as `echo > file` does; OSError carries the
    errno of whichever step failed."""
    if isinstance(data, str):
        data = data.encode()
    fd = os.open(path, flags)
    try:
        if data:
            os.write(fd, data)
    finally:
        os.close(fd)


def write_config(sbdir, text):
    write_file(pathlib.Path(sbdir) / "config.json", text)


def ctl(sbdir, cmd):
    write_file(pathlib.Path(sbdir) / "ctl", cmd, os.O_WRONLY)


def ctl_errno(sbdir, cmd):
    """Writes cmd to ctl; returns 0 or the errno the write failed with."""
    try:
        ctl(sbdir, cmd)
        return 0
    except OSError as e:
        return e.errno


def status_text(sbdir):
    return (pathlib.Path(sbdir) / "status").read_text()


def state(sbdir):
    return status_text(sbdir).split("\n", 1)[0]


def status_fields(text):
    """The key: value lines after the state line."""
    out = {}
    for line in text.splitlines()[1:]:
        k, sep, v = line.partition(": ")
        if sep:
            out[k] = v
    return out


def error_text(sbdir):
    return (pathlib.Path(sbdir) / "error").read_text()


def log_text(sbdir):
    return (pathlib.Path(sbdir) / "log").read_text()


def wait_text(sbdir, timeout=SETTLE_S):
    """What a read of `wait` returns (it blocks while provisioning or terminating)."""
    return read_text(pathlib.Path(sbdir) / "wait", timeout)


def wait_settled(sbdir, timeout=SETTLE_S):
    """The state once `wait` returns."""
    return wait_text(sbdir, timeout).split("\n", 1)[0]


def poll(fn, timeout=SETTLE_S, interval=0.05, what="condition"):
    """Calls fn until it returns something true; returns that."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(interval)


def poll_state(sbdir, want, timeout=SETTLE_S):
    want = (want,) if isinstance(want, str) else tuple(want)
    poll(lambda: state(sbdir) in want, timeout, what=f"state {want} of {sbdir}")
    return state(sbdir)


def _exit_value(text):
    t = text.strip()
    return int(t) if re.fullmatch(r"-?\d+", t) else t


def start_job(sb, cmd):
    """echo CMD > exec: the job runs on; returns the new job's directory."""
    fd = os.open(pathlib.Path(sb) / "exec", os.O_WRONLY)
    try:
        os.write(fd, cmd.encode())
        n = os.readlink(pathlib.Path(sb) / "jobs" / "mine")
    finally:
        os.close(fd)
    return pathlib.Path(sb) / "jobs" / n


def transact(path, data, timeout=60.0, what=None):
    """The exec transaction on any such file: open read-write, write data,
    read to the end; returns the bytes read. Runs in a thread, so that a
    read the filesystem never ends fails the test (naming `what`) after
    timeout seconds instead of hanging it."""
    data = data.encode() if isinstance(data, str) else bytes(data)
    res = {}

    def work():
        try:
            fd = os.open(path, os.O_RDWR)
            try:
                os.write(fd, data)
                chunks = []
                while b := os.read(fd, 1 << 16):
                    chunks.append(b)
                res["out"] = b"".join(chunks)
            finally:
                os.close(fd)
        except BaseException as e:  # handed to the caller's thread
            res["exc"] = e

    t = threading.Thread(target=work, daemon=True, name="transact")
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise AssertionError(f"{what or path} gave no end of output within {timeout} s")
    if "exc" in res:
        raise res["exc"]
    return res["out"]


def sandbox_run(sbdir, cmd, timeout=60.0):
    """Runs cmd in the sandbox through its exec file; returns (exit, output).

    exit is an int (0, 3) or a str ("signal 9"); output is bytes, stdout and
    stderr interleaved as the job wrote them."""
    sbdir = pathlib.Path(sbdir)
    out = transact(sbdir / "exec", cmd, timeout, f"{cmd!r} in {sbdir.name}")
    return _exit_value(read_text(sbdir / "jobs" / "latest" / "exit", timeout)), out


def mounted(mountpoint):
    """Whether mountpoint is a seerfs mount (from /proc/self/mountinfo)."""
    mp = os.path.realpath(mountpoint)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            path = parts[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
            if path == mp and parts[sep + 1] == "fuse.seerfs":
                return True
    return False


def _umount_cmd(mountpoint, lazy=False):
    """fusermount3 -u (any user); plain umount where fusermount3 is missing (root)."""
    if shutil.which("fusermount3"):
        return ["fusermount3", "-u"] + (["-z"] if lazy else []) + [str(mountpoint)]
    return ["umount"] + (["-l"] if lazy else []) + [str(mountpoint)]


def unmount(mountpoint, timeout=10.0):
    """fusermount3 -u, retried while the mount is busy; lazy as a last resort.
    Returns the last fusermount3 result text when it had to go lazy."""
    deadline = time.monotonic() + timeout
    last = ""
    while mounted(mountpoint):
        p = subprocess.run(_umount_cmd(mountpoint), capture_output=True, text=True)
        if p.returncode == 0:
            return ""
        last = p.stderr.strip()
        if time.monotonic() > deadline:
            subprocess.run(_umount_cmd(mountpoint, lazy=True), capture_output=True)
            return last or "lazy unmount"
        time.sleep(0.1)
    return ""


def remove_tree(top):
    """rm -rf that also gets through the mode-000 directories overlayfs leaves
    in its work dir (and whatever a sandbox chmod'ed)."""
    def onerror(func, path, exc):
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
            func(path)
    for dirpath, dirnames, _ in os.walk(top):
        for d in dirnames:
            with contextlib.suppress(OSError):
                p = os.path.join(dirpath, d)
                if not os.path.islink(p):
                    os.chmod(p, 0o700)
    shutil.rmtree(top, onerror=onerror)


def grep_tree(top, needle):
    """Paths of the regular files under top that hold needle (bytes)."""
    hits = []
    for dirpath, dirnames, filenames in os.walk(top):
        for name in filenames:
            p = os.path.join(dirpath, name)
            try:
                if not os.path.isfile(p) or os.path.islink(p):
                    continue
                with open(p, "rb") as f:
                    if needle in f.read():
                        hits.append(p)
            except OSError:
                pass
    return hits


# ---- one seerfs ------------------------------------------------------------------


class Seerfs:
    """A seerfs process started with -f on a mountpoint, with its own state dir."""

    def __init__(self, mountpoint, state, env=None, args=(), provider=None):
        self.path = pathlib.Path(mountpoint)
        self.provider = provider      # added to the configs sandbox() writes
        self.state = pathlib.Path(state)
        self.env = env
        self.args = tuple(args)
        self.proc = None
        self.stderr_path = self.state.parent / f"{self.path.name}.seerfs-{uuid.uuid4().hex[:6]}.stderr"
        self.stopped = False

    def start(self, timeout=SETTLE_S):
        self.path.mkdir(parents=True, exist_ok=True)
        searchable_parents(self.state)
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [str(SEERFS), str(self.path), "-f", "-o", f"state={self.state}", *self.args],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not mounted(self.path):
            if self.proc.poll() is not None:
                raise AssertionError(f"seerfs exited with {self.proc.returncode} before mounting:\n{self.stderr()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"seerfs did not mount {self.path} within {timeout} s:\n{self.stderr()}")
            time.sleep(0.02)
        return self

    def stderr(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def terminate_all(self):
        """Terminates every running sandbox (what a person does before unmounting)."""
        if not mounted(self.path):
            return
        names = [n for n in os.listdir(self.path) if n not in ("README", "CONFIG", "snapshots")]
        started = []
        for n in names:
            with contextlib.suppress(OSError):
                if state(self.path / n) in ("running", "provisioning"):
                    ctl(self.path / n, "terminate")
                    started.append(n)
        for n in started:
            with contextlib.suppress(OSError, AssertionError):
                wait_settled(self.path / n)

    def stop(self, check=True, how="fusermount", terminate_first=True, timeout=SETTLE_S):
        """Stops seerfs and waits for it; with check, asserts it exited 0 (an
        ASan or UBSan report makes it exit non-zero).

        how="fusermount": fusermount3 -u, as a person unmounts; how="signal":
        SIGTERM, which ends the FUSE loop from inside and unmounts. Running
        sandboxes are terminated first unless terminate_first is False."""
        if self.stopped:
            return self.proc.returncode
        self.stopped = True
        if terminate_first:
            self.terminate_all()
        lazy = ""
        if how == "signal":
            self.proc.send_signal(signal.SIGTERM)
        else:
            lazy = unmount(self.path)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            unmount(self.path)
            raise AssertionError(f"seerfs did not exit within {timeout} s after {how}:\n{self.stderr()}") from None
        if check:
            assert rc == 0, f"seerfs exited with status {rc}:\n{self.stderr()}"
            assert not lazy, f"{self.path} could not be unmounted cleanly: {lazy}"
        return rc

    def sandbox(self, name, config=None, want="running"):
        """mkdir NAME, optionally write a config and wait until it settles in `want`."""
        d = self.path / name
        d.mkdir()
        if config is not None:
            if self.provider:
                cfg = json.loads(config)
                cfg.setdefault("provider", self.provider)
                config = json.dumps(cfg)
            write_config(d, config)
            st = wait_settled(d)
            if want is not None:
                assert st == want, f"{name}: {st}, want {want}\n{status_text(d)}\n{error_text(d)}\n{log_text(d)}"
        return d

    def __fspath__(self):
        return str(self.path)


@pytest.fixture(scope="session")
def seerfs_binary():
    if not SEERFS.is_file() or not os.access(SEERFS, os.X_OK):
        pytest.fail(f"{SEERFS} not found: build first (meson setup build && ninja -C build) "
                    f"or point SEERFS_BUILD at a build directory", pytrace=False)
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        pytest.fail("/dev/fuse is not usable by this user: chmod 666 /dev/fuse (as root)", pytrace=False)
    return SEERFS


class TestTimeout(AssertionError):
    pass


@contextlib.contextmanager
def time_limit(seconds, what):
    """Raises TestTimeout in the main thread after `seconds` (SIGALRM): a
    blocked read on the mount returns EINTR and the test fails cleanly."""
    def on_alarm(signum, frame):
        raise TestTimeout(f"{what} took more than {seconds} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


class _DelayedSshd:
    """An SshdFixture seen through tests/bench/delay_proxy.py: its port and
    known_hosts are the proxy's, everything else the sshd's."""

    def __init__(self, sshd, delay_ms, base):
        self._sshd = sshd
        portfile = os.path.join(base, "proxy.port")
        self._proxy = subprocess.Popen(
            [sys.executable, str(pathlib.Path(__file__).resolve().parents[1] / "bench" / "delay_proxy.py"),
             "0", "127.0.0.1", str(sshd.port), str(delay_ms / 2), "--port-file", portfile],
            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not os.path.exists(portfile):
            if self._proxy.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("delay_proxy.py did not start")
            time.sleep(0.05)
        with open(portfile) as f:
            self.port = int(f.read())
        self.known_hosts = os.path.join(base, "known_hosts")
        with open(self.known_hosts, "w") as f:
            f.write(self.known_hosts_line())

    def __getattr__(self, name):
        return getattr(self._sshd, name)

    def known_hosts_line(self, host_key=None):
        with open((host_key or self._sshd.host_key) + ".pub") as f:
            keytype, key = f.read().split()[:2]
        return f"[{self._sshd.host}]:{self.port} {keytype} {key}\n"

    def stop_proxy(self):
        self._proxy.terminate()
        self._proxy.wait()


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory):
    """The sshd of SEERFS_TEST_PROVIDER=ssh, one for the session; with
    SEERFS_TEST_SSH_DELAY_MS=N, seen through tests/bench/delay_proxy.py
    adding a round trip of N ms (issue #19: remote hosts are far away)."""
    if not os.path.exists("/usr/sbin/sshd"):
        pytest.fail("SEERFS_TEST_PROVIDER=ssh needs openssh-server (/usr/sbin/sshd)", pytrace=False)
    from sshd_fixture import SshdFixture
    delay = float(os.environ.get("SEERFS_TEST_SSH_DELAY_MS", "0") or 0)
    with SshdFixture(log_level="INFO") as s:
        if delay <= 0:
            yield s
            return
        d = _DelayedSshd(s, delay, str(tmp_path_factory.mktemp("delay-proxy")))
        try:
            yield d
        finally:
            d.stop_proxy()


ENGINES_NEED_ROOT = "container engines need root (tools/test.sh runs them in the root stage)"


def _engine_fixture(kind):
    """One engine of `kind` for the session (tests/integration/engines.py):
    started on a data directory of its own with seerfs-base:bookworm
    imported; stopped and removed at the end, failing the session's last
    test when it left a container, a mount or a process behind."""
    if TEST_USER == "seer" or not IS_ROOT:
        pytest.skip(ENGINES_NEED_ROOT)
    from engines import EngineError, start_engine
    try:
        e = start_engine(kind)
    except EngineError as err:
        pytest.fail(f"cannot start the {kind} engine: {err}", pytrace=False)
    try:
        yield e
    finally:
        try:
            e.stop()
        except EngineError as err:
            pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="session")
def docker_engine():
    """dockerd (docker.io): .endpoint (unix), .tls_endpoint with .ca/.cert/.key,
    .bad_cert/.bad_key (refused), .image, .data_dir, .kill(), .restart()."""
    yield from _engine_fixture("docker")


@pytest.fixture(scope="session")
def podman_engine():
    """Podman's Docker-compatible service: .endpoint (unix), .image,
    .data_dir, .kill(), .restart(); no TLS (.tls_endpoint is None)."""
    yield from _engine_fixture("podman")


def ssh_entry(sshd, workdir, **kw):
    """A providers.json entry for sshd (an SshdFixture), host mode, with its
    remote work directory; kw adds or overrides keys."""
    e = {"type": "ssh", "host": sshd.host, "port": sshd.port, "user": sshd.user,
         "identity_file": sshd.identity_file, "known_hosts": sshd.known_hosts,
         "workdir": str(workdir), "mode": "host", "timeout": 10}
    e.update(kw)
    return e


def ssh_providers_file(sshd, tmp_path):
    """A providers file naming sshd "t1", with a remote workdir under
    tmp_path (the sshd runs as this user on this machine). Returns
    (file, workdir)."""
    workdir = tmp_path / "remote-work"
    pfile = tmp_path / "providers.json"
    pfile.write_text(json.dumps({SSH_PROVIDER_NAME: ssh_entry(sshd, workdir)}))
    return pfile, workdir


@pytest.fixture
def seerfs_factory(tmp_path, seerfs_binary, request):
    started = []
    counter = iter(range(1000))
    extra, provider = (), None
    if PROVIDER == "ssh":
        pfile, _ = ssh_providers_file(request.getfixturevalue("ssh_server"), tmp_path)
        extra, provider = ("-o", f"providers={pfile}"), SSH_PROVIDER_NAME
    elif DOCKER:
        pfile = tmp_path / "providers.json"
        eng = request.getfixturevalue("docker_engine")
        kw = {}
        if PROVIDER == "docker-remote":
            kw = dict(endpoint=eng.tls_endpoint, ca=eng.ca, cert=eng.cert, key=eng.key, local=False)
        pfile.write_text(json.dumps({DOCKER_PROVIDER_NAME: docker_entry(eng, **kw)}))
        extra, provider = ("-o", f"providers={pfile}"), DOCKER_PROVIDER_NAME

    def start(state=None, env=None, args=(), mountpoint=None):
        n = next(counter)
        m = Seerfs(mountpoint or tmp_path / f"mnt{n}", state or tmp_path / f"state{n}", env,
                   (*extra, *args), provider)
        started.append(m)
        return m.start()

    with time_limit(TEST_TIMEOUT_S, request.node.nodeid):
        yield start
    problems = []
    for m in reversed(started):
        try:
            m.stop()
        except AssertionError as e:
            problems.append(str(e))
        else:
            remove_tree(m.state)     # kept when something went wrong, for a look
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def small_state(tmp_path):
    """A state directory on a 20 MiB tmpfs, for full-disk tests (root only)."""
    if not IS_ROOT:
        pytest.skip("mounting a small tmpfs for the state directory needs root")
    d = tmp_path / "smallstate"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {r.stderr.strip()}")
    yield d / "state"
    subprocess.run(["umount", "-l", str(d)], capture_output=True)


@pytest.fixture
def mnt(seerfs_factory):
    return seerfs_factory()


def _teardown_sandbox(d):
    """Terminates (when it runs) and removes a sandbox; quiet when it is gone."""
    try:
        st = wait_settled(d)
        if st in ("running", "failed"):
            ctl(d, "terminate")
            wait_settled(d)
        os.rmdir(d)
    except FileNotFoundError:
        pass


@pytest.fixture
def sandbox(mnt):
    d = mnt.sandbox("sb", "{}")
    yield d
    if mounted(mnt.path):
        _teardown_sandbox(d)


@pytest.fixture(name="sandbox_run")
def sandbox_run_fixture(sandbox, request):
    """run(cmd, timeout=60) -> (exit, text) in the `sandbox` fixture's sandbox.

    Unlike the helper it returns the output as str, and when the test uses
    posix_root too the command runs in that directory: the contract of the
    temporary fixtures in _pass_fixtures.py, which test_posix.py was written
    against."""
    cwd = None
    if "posix_root" in request.fixturenames:
        cwd = workspace_inside(sandbox) + "/" + request.getfixturevalue("posix_root").name

    def run(cmd, timeout=60.0):
        if cwd:
            cmd = f"cd {shlex.quote(cwd)} && {cmd}"
        code, out = sandbox_run(sandbox, cmd, timeout)
        return code, out.decode(errors="replace")

    return run


def workspace_inside(sbdir):
    """sandbox/root/workspace as the sandbox's commands see it: /workspace,
    except on an ssh host without a working bwrap, where commands run in the
    remote WORKDIR/NAME/workspace itself (their starting directory)."""
    if FD_ROOT:
        return "/workspace"
    code, out = sandbox_run(sbdir, "pwd")
    assert code == 0, out
    return out.decode().strip()


@pytest.fixture
def posix_root(sandbox):
    d = sandbox / "root" / "workspace" / f"posix-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    return d


# ---- holding a sandbox in `provisioning` ------------------------------------------


class Held:
    """A sandbox kept in `provisioning` until release().

    There is no slow provisioning step to rely on, so this uses what the
    local provider does first: it opens STATE/sandboxes/NAME/bwrap.err for
    writing. Made a FIFO beforehand, that open blocks until a reader comes.
    White-box on purpose; `held` fails (it does not skip) when the trick
    stops holding, so the tests that use it cannot stop testing unseen."""

    def __init__(self, m, name):
        self.dir = m.path / name
        self.fifo = m.state / "sandboxes" / name / "bwrap.err"
        self.fd = None
        self.drain = None

    def release(self):
        if self.fd is not None:
            return
        self.fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        os.set_blocking(self.fd, True)

        def drain(fd=self.fd):
            with contextlib.suppress(OSError):
                while os.read(fd, 4096):
                    pass
            with contextlib.suppress(OSError):
                os.close(fd)

        self.drain = threading.Thread(target=drain, daemon=True)
        self.drain.start()


@pytest.fixture
def held(mnt):
    if not LOCAL:
        pytest.skip("ssh provider: held stops the local provider's bwrap.err open; "
                    "the ssh provider has no such step")
    name = "held"
    d = mnt.path / name
    d.mkdir()
    h = Held(mnt, name)
    os.mkfifo(h.fifo, 0o600)
    write_config(d, "{}")
    time.sleep(0.3)
    if state(d) != "provisioning":
        h.release()
        pytest.fail("cannot hold a sandbox in provisioning: the local provider no longer opens "
                    f"bwrap.err first (state {state(d)}); make Held in conftest.py hold it "
                    "another way", pytrace=False)
    yield h
    h.release()
    if mounted(mnt.path):
        _teardown_sandbox(d)
