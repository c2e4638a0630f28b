"""root/ of a local sandbox (fs/root/pass.c) where the backing file system
shows through: -o pass_timeout=0, expiry notices against reused node ids,
a symlink's atime, fallocate's collapse/insert range and the inode flags
of chattr/lsattr (issue 21, its local part). Local provider only: each
test looks at the sandbox's writable tree on the host
(STATE/sandboxes/NAME/fs/upper) or at the daemon's own stderr."""
import errno
import os
import stat
import time

import pytest

from conftest import needs_local, sandbox_run

pytestmark = needs_local("white-box: reads the local sandbox's tree on the host")


def must(res):
    rc, out = res
    assert rc == 0, out
    return out


def host_path(m, d, rel=""):
    """Where a sandbox's /workspace/REL is on the host (its writable tree)."""
    p = m.state / "sandboxes" / d.name / "fs" / "upper" / "workspace"
    return p / rel if rel else p


# ---- -o pass_timeout=0 ------------------------------------------------------

def _stale_after_host_change(m, d):
    """Caches f's attributes and the absence of n through root/ while the
    sandbox is idle, changes both behind seerfs's back (on the host, in the
    sandbox's tree: nobody tells seerfs), and says which of the two root/
    still shows as before."""
    ws = d / "root" / "workspace"
    f = ws / "f"
    f.write_text("x")
    os.chmod(f, 0o644)
    # A change made inside through exec is seen at once either way: the
    # job marks the sandbox busy and expires what was cached.
    must(sandbox_run(d, "chmod 600 /workspace/f && mkdir /workspace/g"))
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert (ws / "g").is_dir()
    time.sleep(0.3)                     # idle from here: long timeouts unless 0
    for _ in range(2):
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
        assert not os.path.exists(ws / "n")
    os.chmod(host_path(m, d, "f"), 0o640)
    (host_path(m, d) / "n").write_text("new")
    stale = []
    if stat.S_IMODE(os.stat(f).st_mode) != 0o640:
        stale.append("attributes")
    if not os.path.exists(ws / "n"):
        stale.append("entry")
    return stale


def test_pass_timeout_0_caches_nothing(seerfs_factory):
    m = seerfs_factory(args=["-o", "pass_timeout=0"])
    d = m.sandbox("sb", "{}")
    assert _stale_after_host_change(m, d) == []
    # Idle for a while longer: nothing is promoted to a long timeout.
    time.sleep(0.3)
    os.chmod(host_path(m, d, "f"), 0o604)
    (host_path(m, d) / "n").unlink()
    assert stat.S_IMODE(os.stat(d / "root" / "workspace" / "f").st_mode) == 0o604
    assert not os.path.exists(d / "root" / "workspace" / "n")


def test_default_pass_timeout_caches_while_idle(seerfs_factory):
    """The contrast that makes the test above mean something: with the
    default (30 s) the same host-side change stays hidden while idle."""
    m = seerfs_factory()
    d = m.sandbox("sb", "{}")
    assert _stale_after_host_change(m, d) == ["attributes", "entry"]


def test_negative_pass_timeout_refused(seerfs_binary, tmp_path):
    import subprocess
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = subprocess.run([str(seerfs_binary), str(mp), "-f", "-o", f"state={tmp_path / 'st'}",
                        "-o", "pass_timeout=-1"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "pass_timeout" in r.stderr
