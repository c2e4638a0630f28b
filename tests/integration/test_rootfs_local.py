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


# ---- expiry notices never address a reused node id ----------------------------

def _churn(ws, tag, stop, errors):
    """Host side through root/: directories that get negative entries
    recorded under them (a lookup of a missing name while idle), then are
    removed (the kernel forgets them, their node is freed) and replaced by
    files and directories whose new nodes may take the freed addresses."""
    i = 0
    while not stop.is_set():
        i += 1
        try:
            dd = ws / f"{tag}-d{i}"
            dd.mkdir()
            for k in range(3):
                assert not os.path.exists(dd / f"missing{k}")
            (dd / "x").write_text("x")
            os.stat(dd / "x")
            os.rename(dd / "x", ws / f"{tag}-x{i}")
            os.rmdir(dd)
            for k in range(3):
                (ws / f"{tag}-f{i}-{k}").write_text("f")
            os.mkdir(ws / f"{tag}-e{i}")
            os.rename(ws / f"{tag}-e{i}", ws / f"{tag}-r{i}")
            assert not os.path.exists(ws / f"{tag}-r{i}" / "nothing")
            os.rmdir(ws / f"{tag}-r{i}")
            os.unlink(ws / f"{tag}-x{i}")
            for k in range(3):
                os.unlink(ws / f"{tag}-f{i}-{k}")
        except OSError as e:       # a job inside may remove what we made: only ENOENT
            if e.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
                errors.append(repr(e))
        except AssertionError as e:
            errors.append(repr(e))


def test_no_expiry_notice_for_a_reused_node_id(seerfs_factory):
    """fsstress on root/ made the daemon print `fuse: writing device: Not a
    directory`: an expiry notice for a parent whose node had been freed and
    its address (the node id) reused by a regular file. Host-side churn
    through root/ while idle records entries under short-lived
    directories; jobs inside (each one a sweep) churn too."""
    import threading
    m = seerfs_factory(args=["-o", "pass_timeout=0.2"])
    d = m.sandbox("sb", "{}")
    ws = d / "root" / "workspace"
    stop = threading.Event()
    errors = []
    threads = [threading.Thread(target=_churn, args=(ws, f"t{t}", stop, errors)) for t in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 12
        n = 0
        while time.monotonic() < deadline:
            n += 1
            must(sandbox_run(d, f"cd /workspace && for i in 1 2 3 4 5; do mkdir -p in{n}/a/b && "
                                f"touch in{n}/a/b/f$i && mv in{n}/a in{n}/c && rm -r in{n}; done"))
            time.sleep(0.15)           # idle again: replies recorded for the next sweep
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:5]
    assert "writing device" not in m.stderr(), m.stderr()[-2000:]


# ---- stat of a symlink leaves its atime alone -----------------------------------

def _link_times_kept(ws, hp, name):
    """Sets link name's times (atime before mtime: relatime would update it
    on the next read of the link), stats it through root/ several ways and
    says whether the backing file system's atime stayed."""
    os.utime(ws / name, ns=(1_000_000_000_000_000_000, 2_000_000_000_000_000_000), follow_symlinks=False)
    for _ in range(3):
        st = os.lstat(ws / name)
        assert st.st_atime_ns == 1_000_000_000_000_000_000
        os.listdir(ws)
    return os.lstat(hp / name).st_atime_ns == 1_000_000_000_000_000_000


def test_stat_of_symlink_keeps_atime(seerfs_factory):
    """pjdfstest utimensat/05 #7: the size root/ reports for a link is the
    length of the (confined) text readlink returns; finding it read the
    link, and ext4's relatime then moved the atime just set."""
    m = seerfs_factory()
    d = m.sandbox("sb", "{}")
    ws, hp = d / "root" / "workspace", host_path(m, d)
    # Made through root/: the text is known, the link is never read.
    os.symlink("/etc/passwd", ws / "abs")
    os.symlink("down/file", ws / "rel")
    for name in ("abs", "rel"):
        assert _link_times_kept(ws, hp, name), name
        assert os.lstat(ws / name).st_size == len(os.readlink(ws / name))
    # Made inside: read once when root/ first meets it, then kept.
    must(sandbox_run(d, "ln -s /etc/hostname /workspace/inside"))
    assert os.lstat(ws / "inside").st_size == len(os.readlink(ws / "inside"))
    assert _link_times_kept(ws, hp, "inside")
    # The confinement rewrite is still what the size says.
    assert os.readlink(ws / "abs") != "/etc/passwd"
