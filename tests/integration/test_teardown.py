"""test_teardown.py - a sandbox holds no mount it does not need (#20).

The hang: every local sandbox's bubblewrap monitor stayed in a mount
namespace copied from the host at the sandbox's start, FUSE mounts included,
and on a host whose mounts are private (no systemd) an unmount never reached
those copies: a seerfs (or a user's sshfs) mounted when another seerfs's
sandbox started could not end after fusermount3 -u until that sandbox did.

Here: two seerfs mounts and an sshfs mount, each unmounted while the other's
sandboxes run, under CPU load, several rounds. Every daemon must exit within
its time and nothing of it may stay mounted.
"""

import contextlib
import json
import multiprocessing
import os
import shutil
import subprocess
import time

import pytest

from conftest import IS_ROOT, LOCAL, ctl, mounted, poll, sandbox_run
from sshd_fixture import SshdFixture

pytestmark = pytest.mark.skipif(not LOCAL, reason="ssh provider: the held mounts are the local provider's "
                                "bubblewrap monitors on this host")

ROUNDS = 3
EXIT_S = 15


def _burn(stop):
    while not stop.is_set():
        pass


@contextlib.contextmanager
def cpu_load(n=2):
    stop = multiprocessing.Event()
    procs = [multiprocessing.Process(target=_burn, args=(stop,), daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        yield
    finally:
        stop.set()
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()


def fuse_mounted(where):
    """Whether where is a FUSE mount of any kind (conftest's mounted() is seerfs's only)."""
    mp = os.path.realpath(where)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[4] == mp and parts[parts.index("-") + 1].startswith("fuse"):
                return True
    return False


def sshfs_mount(sshd, where):
    where.mkdir()
    cmd = ["sshfs", f"{sshd.user}@{sshd.host}:/", str(where), "-p", str(sshd.port),
           "-o", f"IdentityFile={sshd.identity_file}", "-o", f"UserKnownHostsFile={sshd.known_hosts}",
           "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]
    subprocess.run(cmd, check=True, timeout=30)
    poll(lambda: fuse_mounted(where), what="the sshfs mount")
    pid = subprocess.run(["pgrep", "-n", "-f", f"sshfs .* {where}"], capture_output=True, text=True).stdout.strip()
    assert pid, "the sshfs daemon's pid"
    return int(pid)


def wait_gone(pid, what):
    deadline = time.monotonic() + EXIT_S
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{pid}/stat") as f:
            if f.read().split(") ")[1].startswith("Z"):
                return
        time.sleep(0.05)
    raise AssertionError(f"{what} (pid {pid}) did not exit within {EXIT_S} s after its unmount")


@pytest.mark.skipif(not shutil.which("sshfs"), reason="sshfs is not installed (tools/test.sh installs it)")
def test_unmounts_end_while_other_mounts_sandboxes_run(seerfs_factory, tmp_path):
    with SshdFixture(log_level="INFO") as sshd, cpu_load():
        for r in range(ROUNDS):
            a = seerfs_factory()
            a.sandbox("a", "{}")
            ssh_pid = sshfs_mount(sshd, tmp_path / f"sshfs{r}")
            b = seerfs_factory()
            sb = b.sandbox("b", "{}")
            held = [sb]
            # A sandbox restored from a snapshot gets an overlay, mounted in
            # a namespace of its own: as root that namespace drops the FUSE
            # mounts it copied (docs/security.md says why a user's cannot).
            if IS_ROOT:
                ctl(sb, "snapshot base")
                poll(lambda: (b.path / "snapshots" / "base").exists(), what="snapshot base")
                held.append(b.sandbox("c", json.dumps({"snapshot": "base"})))
            # a's sandbox is running too, started before b and sshfs.
            code, _ = sandbox_run(a.path / "a", "true")
            assert code == 0

            # 1. a unmounted while b's sandboxes (started after a) run.
            a.stop(terminate_first=False, timeout=EXIT_S)
            # 2. sshfs unmounted while b's sandboxes run.
            subprocess.run(["fusermount3", "-u", str(tmp_path / f"sshfs{r}")], check=True, timeout=10)
            wait_gone(ssh_pid, "sshfs")
            for sbdir in held:
                code, out = sandbox_run(sbdir, "echo alive")
                assert code == 0 and out.strip() == b"alive", out
            # 3. b itself, with its sandboxes still running.
            b.stop(terminate_first=False, timeout=EXIT_S)
            assert not mounted(a.path) and not mounted(b.path)
