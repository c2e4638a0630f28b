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


# ---- fallocate's collapse and insert range --------------------------------------

FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_INSERT_RANGE = 0x20


def _fallocate(fd, mode, off, length):
    import ctypes
    import ctypes.util
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    if libc.fallocate(fd, mode, off, length) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


@pytest.mark.parametrize("mode", ["collapse", "insert"])
def test_fallocate_collapse_insert_range(seerfs_factory, mode):
    m = seerfs_factory()
    d = m.sandbox("sb", "{}")
    ws, hp = d / "root" / "workspace", host_path(m, d)
    blk = os.statvfs(hp).f_bsize
    data = b"".join(bytes([65 + i]) * blk for i in range(4))
    flag = FALLOC_FL_COLLAPSE_RANGE if mode == "collapse" else FALLOC_FL_INSERT_RANGE
    # The backing file system first: without it there is nothing to pass on.
    (hp / "probe").write_bytes(data)
    fd = os.open(hp / "probe", os.O_RDWR)
    try:
        _fallocate(fd, flag, blk, blk)
    except OSError as e:
        pytest.skip(f"the backing file system refuses {mode} range: {e}")
    finally:
        os.close(fd)
    (ws / "f").write_bytes(data)
    fd = os.open(ws / "f", os.O_RDWR)
    try:
        _fallocate(fd, flag, blk, blk)
    except OSError as e:
        if e.errno == errno.EOPNOTSUPP:
            pytest.skip(f"the kernel's FUSE refuses {mode} range before asking seerfs "
                        "(fs/fuse/file.c passes on only KEEP_SIZE, PUNCH_HOLE and ZERO_RANGE)")
        raise
    finally:
        os.close(fd)
    got = (ws / "f").read_bytes()
    if mode == "collapse":
        assert got == data[:blk] + data[2 * blk:]
    else:
        assert got == data[:blk] + bytes(blk) + data[blk:]
    assert (hp / "f").read_bytes() == got


# ---- chattr / lsattr -------------------------------------------------------------

def _lsattr(path, d=False):
    import subprocess
    r = subprocess.run(["lsattr", "-d" if d else "--", str(path)] if d else ["lsattr", str(path)],
                       capture_output=True, text=True)
    return r.returncode, (r.stdout.split()[0] if r.returncode == 0 and r.stdout.split() else r.stderr)


def test_chattr_lsattr_pass_through(seerfs_factory):
    import shutil
    import subprocess
    if not shutil.which("chattr") or not shutil.which("lsattr"):
        pytest.skip("needs chattr and lsattr (e2fsprogs)")
    if os.geteuid() != 0:
        pytest.skip("chattr +a needs CAP_LINUX_IMMUTABLE (root)")
    m = seerfs_factory()
    d = m.sandbox("sb", "{}")
    ws, hp = d / "root" / "workspace", host_path(m, d)
    (ws / "f").write_text("one\n")
    (ws / "dir").mkdir()
    (hp / "probe").write_text("x")
    if subprocess.run(["chattr", "+a", str(hp / "probe")], capture_output=True).returncode != 0:
        pytest.skip("the backing file system has no append-only flag")
    subprocess.run(["chattr", "-a", str(hp / "probe")], check=True)
    try:
        for target, isdir in ((ws / "f", False), (ws / "dir", True)):
            rc, before = _lsattr(target, isdir)
            assert rc == 0, before
            assert "a" not in before
            r = subprocess.run(["chattr", "+a", str(target)], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            rc, after = _lsattr(target, isdir)
            assert rc == 0 and "a" in after, after
            rc, host = _lsattr(hp / target.name, isdir)
            assert rc == 0 and "a" in host, host
        # Append-only holds through root/: a rewrite is refused, an append goes.
        with pytest.raises(PermissionError):
            open(ws / "f", "w").close()
        with open(ws / "f", "a") as f:
            f.write("two\n")
        assert (hp / "f").read_text() == "one\ntwo\n"
    finally:
        for name in ("f", "dir"):
            subprocess.run(["chattr", "-a", str(hp / name)], capture_output=True)
    rc, after = _lsattr(ws / "f")
    assert rc == 0 and "a" not in after, after
    # FS_IOC_FSSETXATTR is not passed on: its project id would reach the
    # host's quotas. Its read half is (the kernel asks it before a change).
    import fcntl
    import struct
    FS_IOC_FSGETXATTR, FS_IOC_FSSETXATTR = 0x801c581f, 0x401c5820

    def projid(path):
        fd = os.open(path, os.O_RDONLY)
        try:
            return struct.unpack("IIIII8x", fcntl.ioctl(fd, FS_IOC_FSGETXATTR, bytes(28)))[3]
        finally:
            os.close(fd)
    assert projid(ws / "dir") == projid(hp / "dir")
    fd = os.open(ws / "dir", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as ei:
            fcntl.ioctl(fd, FS_IOC_FSSETXATTR, struct.pack("IIIII8x", 0, 0, 0, 4242, 0))
        assert ei.value.errno in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL), ei.value
    finally:
        os.close(fd)
    assert projid(hp / "dir") != 4242


def test_hidden_xattr_write_answers_as_a_missing_namespace(seerfs_factory):
    # xfstests' t_immutable (generic/079) sets trusted.* as root and takes
    # EOPNOTSUPP as "this file system has none", and on an immutable or
    # append-only file wants EPERM for every attribute write, which the
    # kernel gives before it asks a file system (a FUSE inode does not
    # carry those flags, so root/ asks the backing file).
    import shutil
    import subprocess
    if os.geteuid() != 0:
        pytest.skip("trusted.* reaches root/ only from root (else the kernel answers EPERM)")
    if not shutil.which("chattr"):
        pytest.skip("needs chattr (e2fsprogs)")
    m = seerfs_factory(args=["-o", "xattr"])
    d = m.sandbox("sb", "{}")
    ws, hp = d / "root" / "workspace", host_path(m, d)
    (ws / "f").write_text("x")
    (ws / "dir").mkdir()
    for t in (ws / "f", ws / "dir"):
        for name in ("trusted.k", "security.k"):
            with pytest.raises(OSError) as ei:
                os.setxattr(t, name, b"v")
            assert ei.value.errno == errno.EOPNOTSUPP, (t, name, ei.value)
            with pytest.raises(OSError) as ei:
                os.removexattr(t, name)
            assert ei.value.errno == errno.EOPNOTSUPP, (t, name, ei.value)
        os.setxattr(t, "user.k", b"v")
    if subprocess.run(["chattr", "+i", str(hp / "f")], capture_output=True).returncode != 0:
        pytest.skip("the backing file system has no immutable flag")
    subprocess.run(["chattr", "+a", str(hp / "dir")], check=True)
    try:
        for t in (ws / "f", ws / "dir"):
            for name in ("trusted.k", "security.k", "user.k", "user.new"):
                with pytest.raises(OSError) as ei:
                    os.setxattr(t, name, b"w")
                assert ei.value.errno == errno.EPERM, (t, name, ei.value)
            assert os.getxattr(t, "user.k") == b"v"
    finally:
        subprocess.run(["chattr", "-i", str(hp / "f")], capture_output=True)
        subprocess.run(["chattr", "-a", str(hp / "dir")], capture_output=True)
    assert not [n for n in os.listxattr(hp / "f") if n.startswith(("trusted.", "security."))]
