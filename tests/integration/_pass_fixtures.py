"""Temporary fixtures for test_posix.py: the passmount harness (fs/root/pass.c
alone) over a real bubblewrap sandbox.

TODO(conftest): tests/integration/conftest.py will provide `posix_root` and
`sandbox_run` for the real seerfs; test_posix.py imports these only while it
does not exist. Delete this file then (the harness-only tests in
test_posix.py skip themselves without it).

The sandbox is built like core/providers/local/local.c builds one: a user and mount
namespace where the caller is root, an overlay (userxattr) for the writable
directories, and bubblewrap with host /usr and /etc read-only, its own /proc
and /dev, every capability dropped and `sleep` as PID 1 (the agent's place).
passmount serves /proc/PID/root, i.e. "/" as the sandbox's processes see it,
in mode=auto: busy while the sandbox runs anything besides its PID 1, and
each sandbox_run first sends SIGUSR1 (pass_invalidate), as fs/ll.c does when
a job starts.

Works as root and as an ordinary user (/dev/fuse must be usable).
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOSTNAME_INSIDE = "pass-sandbox-inside\n"
WRITABLE = ("workspace", "root", "tmp", "var", "opt", "run")


def _passmount_binary(tmp: Path) -> str:
    env = os.environ.get("SEERFS_PASSMOUNT")
    if env:
        return env
    build = Path(os.environ.get("SEERFS_BUILD", "build"))
    build = build if build.is_absolute() else REPO / build
    for cand in (build / "tests/passmount", build / "tests/drivers/passmount"):
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    raise RuntimeError(f"{build}/tests/passmount is missing: build it with ninja -C {build} "
                       "(tests/meson.build), or name a harness in SEERFS_PASSMOUNT")


class PassSandbox:
    """One bubblewrap sandbox and the passmount instances serving it."""

    def __init__(self, base: Path):
        self.base = base
        self.binary = _passmount_binary(base)
        self.holder = None
        self.pid = None
        self.mounts = []

    # -- the sandbox ---------------------------------------------------------
    def start(self):
        b = self.base
        for d in ("lower", "upper", "work", "merged", "gen"):
            (b / d).mkdir()
        (b / "gen/hostname").write_text(HOSTNAME_INSIDE)
        r, w = os.pipe()
        bw = ["bwrap", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net",
              "--hostname", "pass-sandbox", "--die-with-parent", "--as-pid-1", "--cap-drop", "ALL",
              "--info-fd", str(w), "--ro-bind", "/usr", "/usr"]
        for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            p = Path("/" + top)
            if p.is_symlink():
                bw += ["--symlink", os.readlink(p), str(p)]
            elif p.is_dir():
                bw += ["--ro-bind", str(p), str(p)]
        bw += ["--ro-bind", "/etc", "/etc", "--ro-bind", str(b / "gen/hostname"), "/etc/hostname",
               "--proc", "/proc", "--dev", "/dev"]
        for wd in WRITABLE:
            bw += ["--bind", str(b / "merged" / wd), "/" + wd]
        bw += ["--chdir", "/workspace", "--clearenv", "--setenv", "PATH",
               "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "sleep", "infinity"]
        m = b / "merged"
        script = (f"mount -t overlay overlay -o lowerdir={b}/lower,upperdir={b}/upper,"
                  f"workdir={b}/work,userxattr {m} && "
                  + " && ".join(f"mkdir -p {m}/{wd}" for wd in WRITABLE)
                  + f" && chmod 1777 {m}/tmp && exec " + " ".join(shlex.quote(a) for a in bw))
        self.holder = subprocess.Popen(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                                       pass_fds=(w,), stdin=subprocess.DEVNULL,
                                       stdout=open(b / "holder.log", "wb"), stderr=subprocess.STDOUT)
        os.close(w)
        data = b""
        deadline = time.time() + 20
        while b"}" not in data and time.time() < deadline:
            chunk = os.read(r, 4096)
            if not chunk:
                break
            data += chunk
        os.close(r)
        if b"child-pid" not in data:
            raise RuntimeError("sandbox did not start: " + (b / "holder.log").read_text())
        self.pid = json.loads(data[:data.index(b"}") + 1])["child-pid"]
        # bubblewrap reports the child before it has pivoted into its new
        # root: until then /proc/PID/root is bwrap's staging directory
        # (newroot/, oldroot/), and passmount would serve that.
        while not os.path.isdir(f"/proc/{self.pid}/root/workspace"):
            if time.time() > deadline:
                raise RuntimeError("sandbox did not pivot into its root: " + (b / "holder.log").read_text())
            time.sleep(0.01)

    def stop(self):
        for m in list(self.mounts):
            self.umount(m)
        if self.holder:
            self.holder.kill()
            self.holder.wait()

    # -- passmount -------------------------------------------------------------
    def mount(self, name="mnt", opts="mode=auto"):
        mnt = self.base / name
        mnt.mkdir()
        ack = self.base / (name + ".ack")
        log = self.base / (name + ".log")
        proc = subprocess.Popen([self.binary, f"/proc/{self.pid}/root", str(mnt), "-o", f"{opts},ack={ack}"],
                                stdin=subprocess.DEVNULL, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        st = os.stat(self.base)
        deadline = time.time() + 20
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("passmount exited: " + log.read_text())
            try:
                if os.stat(mnt).st_dev != st.st_dev:
                    break
            except OSError:
                pass
            time.sleep(0.02)
        else:
            raise RuntimeError("passmount did not mount")
        h = {"mnt": mnt, "proc": proc, "ack": ack, "log": log, "acks": 0}
        self.mounts.append(h)
        return h

    def umount(self, h):
        self.mounts.remove(h)
        subprocess.run(["fusermount3", "-u", "-z", str(h["mnt"])], stderr=subprocess.DEVNULL)
        try:
            h["proc"].wait(timeout=20)
        except subprocess.TimeoutExpired:
            h["proc"].kill()
            h["proc"].wait()
        text = h["log"].read_text(errors="replace")
        assert "Sanitizer" not in text and "runtime error" not in text, text[-6000:]

    def invalidate(self, h):
        """What fs/ll.c does when a job starts; returns once done."""
        if h["proc"].poll() is not None:
            return
        before = h["acks"]
        os.kill(h["proc"].pid, signal.SIGUSR1)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                n = int(h["ack"].read_text() or 0)
            except (OSError, ValueError):
                n = 0
            if n > before:
                h["acks"] = n
                return
            time.sleep(0.0005)
        raise RuntimeError("passmount did not acknowledge SIGUSR1")

    # -- running inside ----------------------------------------------------------
    def run(self, cmd, cwd="/workspace", timeout=300):
        for h in self.mounts:
            self.invalidate(h)
        argv = ["nsenter", "-t", str(self.pid), "-U", "-m", "-p", "-r", "-w", "--preserve-credentials",
                "setpriv", "--inh-caps=-all", "--bounding-set=-all",
                "env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=/root", "LANG=C.UTF-8",
                "sh", "-c", f"cd {shlex.quote(cwd)} && {cmd}"]
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
        return r.returncode, r.stdout.decode(errors="replace")


@pytest.fixture(scope="session")
def pass_sandbox():
    for tool in ("bwrap", "unshare", "nsenter", "setpriv", "fusermount3"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    base = Path(tempfile.mkdtemp(prefix="seerfs-pass-"))
    sb = PassSandbox(base)
    try:
        sb.start()
        sb.main = sb.mount()
        yield sb
    finally:
        sb.stop()
        subprocess.run(["rm", "-rf", str(base)], stderr=subprocess.DEVNULL)


@pytest.fixture
def _posix_dir(pass_sandbox, request):
    name = "t-" + re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:80]
    inside = "/workspace/" + name
    rc, out = pass_sandbox.run(f"rm -rf {inside} && mkdir {inside}", cwd="/")
    assert rc == 0, out
    yield pass_sandbox.main["mnt"] / "workspace" / name, inside
    pass_sandbox.run(f"chmod -R u+rwX {inside} 2>/dev/null; rm -rf {inside}", cwd="/")


@pytest.fixture
def posix_root(_posix_dir):
    return _posix_dir[0]


@pytest.fixture
def sandbox_run(pass_sandbox, _posix_dir):
    inside = _posix_dir[1]

    def run(cmd):
        return pass_sandbox.run(cmd, cwd=inside)

    return run
