"""test_sftpfs.py - fs/root/sftpfs.c (root/ over SFTP) through the standalone
harness tests/drivers/sftpmount.c, against a real OpenSSH sshd on 127.0.0.1
(sshd_fixture.py).  The sshd serves a local backing directory, so the
"remote side" can be changed directly to check invalidation.

The harness is tests/sftpmount of the meson build in $SEERFS_BUILD (build/
when unset; build-asan/ gives the ASan/UBSan one), or $SEERFS_SFTPMOUNT.
Needs root or user FUSE mounts, sshd, tar, git.  About a minute.
"""

import ctypes
import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from sshd_fixture import SshdFixture, transfers_across_link_kill  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def harness_binary():
    """tests/sftpmount of the meson build in $SEERFS_BUILD (default build/;
    build-asan/ for the ASan/UBSan one), or $SEERFS_SFTPMOUNT."""
    env = os.environ.get("SEERFS_SFTPMOUNT")
    if env:
        return env
    build = os.environ.get("SEERFS_BUILD", "build")
    out = os.path.join(build if os.path.isabs(build) else os.path.join(ROOT, build), "tests", "sftpmount")
    if not os.access(out, os.X_OK):
        pytest.fail(f"{out} is missing: build it with ninja -C {build} (tests/meson.build), "
                    "or name a harness in SEERFS_SFTPMOUNT")
    return out


def is_mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


class Mount:
    def __init__(self, sshd, remote, mnt, timeout="60"):
        self.sshd, self.remote, self.mnt = sshd, remote, mnt
        env = dict(os.environ, SFTPMOUNT_TIMEOUT=timeout)
        self.log = open(os.path.join(os.path.dirname(mnt), "sftpmount.log"), "w")
        self.proc = subprocess.Popen(
            [harness_binary(), sshd.host, str(sshd.port), sshd.user,
             sshd.identity_file, sshd.known_hosts, remote, mnt, "-o", "fsname=sftpfs"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 15
        while not is_mounted(mnt):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("sftpmount did not mount: " + self.log_text())
            time.sleep(0.05)

    def log_text(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()[-4000:]

    def invalidate(self):
        os.kill(self.proc.pid, signal.SIGUSR1)
        time.sleep(0.3)

    def close(self):
        subprocess.run(["umount", "-l", self.mnt], capture_output=True)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def env():
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse")
    tmp = tempfile.mkdtemp(prefix="sftpfs-test-")
    remote = os.path.join(tmp, "remote")
    mnt = os.path.join(tmp, "mnt")
    os.makedirs(remote)
    os.makedirs(mnt)
    sshd = SshdFixture(sftp_server="sftp-server").start()
    m = Mount(sshd, remote, mnt)
    try:
        yield m
    finally:
        died = m.proc.poll()
        m.close()
        sshd.stop()
        with open(m.log.name, errors="replace") as f:
            log = f.read()[-8000:]
        shutil.rmtree(tmp, ignore_errors=True)
    # A harness that died under the tests (every later test then fails with
    # ENOTCONN) says why here, sanitizer report included.
    assert died is None and "ERROR: AddressSanitizer" not in log and "runtime error:" not in log, \
        f"sftpmount ended (status {died}):\n{log}"


def R(env, *p):
    return os.path.join(env.remote, *p)


def M(env, *p):
    return os.path.join(env.mnt, *p)


def errno_of(fn, *a, **kw):
    try:
        fn(*a, **kw)
    except OSError as e:
        return e.errno
    return 0


libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100


def renameat2(old, new, flags):
    libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    r = libc.renameat2(AT_FDCWD, old.encode(), AT_FDCWD, new.encode(), flags)
    return 0 if r == 0 else ctypes.get_errno()


def test_files_offsets_truncate(env):
    p = M(env, "f.txt")
    with open(p, "wb") as f:
        f.write(b"hello world")
    fd = os.open(p, os.O_RDWR)
    os.pwrite(fd, b"XY", 6)
    os.pwrite(fd, b"tail", 20)  # hole
    assert os.pread(fd, 100, 0) == b"hello XYrld" + b"\0" * 9 + b"tail"
    os.ftruncate(fd, 5)
    os.close(fd)
    assert open(p, "rb").read() == b"hello"
    assert open(R(env, "f.txt"), "rb").read() == b"hello"
    os.truncate(p, 2)
    assert os.stat(p).st_size == 2
    with open(p, "ab") as f:
        f.write(b"++")
    assert open(p, "rb").read() == b"he++"
    assert errno_of(os.open, p, os.O_CREAT | os.O_EXCL | os.O_WRONLY) == errno.EEXIST
    with open(p, "w") as f:  # O_TRUNC
        f.write("new")
    assert open(R(env, "f.txt")).read() == "new"
    assert errno_of(os.stat, M(env, "nope")) == errno.ENOENT
    assert errno_of(open, M(env, "nodir", "x"), "w") == errno.ENOENT
    os.unlink(p)
    assert not os.path.exists(R(env, "f.txt"))
    assert errno_of(os.unlink, p) == errno.ENOENT


def test_rename(env):
    a, b = M(env, "ra"), M(env, "rb")
    open(a, "w").write("A")
    open(b, "w").write("B")
    os.rename(a, b)  # over an existing file
    assert open(b).read() == "A" and not os.path.exists(a)
    open(a, "w").write("A2")
    assert renameat2(a, b, 1) == errno.EEXIST  # RENAME_NOREPLACE
    assert open(b).read() == "A" and open(a).read() == "A2"
    assert renameat2(a, M(env, "rc"), 1) == 0
    assert open(M(env, "rc")).read() == "A2"
    assert renameat2(M(env, "rc"), b, 2) in (errno.EINVAL, errno.ENOTSUP)  # EXCHANGE
    os.makedirs(M(env, "rd", "sub"))
    open(M(env, "rd", "sub", "x"), "w").write("x")
    os.rename(M(env, "rd"), M(env, "re"))
    assert open(M(env, "re", "sub", "x")).read() == "x"
    assert errno_of(os.stat, M(env, "rd", "sub", "x")) == errno.ENOENT
    os.mkdir(M(env, "rf"))
    open(M(env, "rf", "y"), "w").write("y")
    assert errno_of(os.rename, M(env, "re"), M(env, "rf")) == errno.ENOTEMPTY


def test_dirs(env):
    d = M(env, "d1")
    os.mkdir(d, 0o750)
    assert os.stat(d).st_mode & 0o7777 == 0o750 & ~0o022 | (0o750 & 0o022 and 0)
    assert errno_of(os.mkdir, d) == errno.EEXIST
    open(os.path.join(d, "x"), "w").close()
    assert errno_of(os.rmdir, d) == errno.ENOTEMPTY
    assert sorted(os.listdir(d)) == ["x"]
    os.unlink(os.path.join(d, "x"))
    os.rmdir(d)
    assert not os.path.exists(R(env, "d1"))


def test_symlinks_and_links(env):
    os.makedirs(M(env, "sl", "sub"))
    open(M(env, "sl", "target"), "w").write("T")
    os.symlink("target", M(env, "sl", "rel"))
    assert os.readlink(M(env, "sl", "rel")) == "target"
    assert open(M(env, "sl", "rel")).read() == "T"
    # An absolute target is shown relative, resolving inside the mount.
    os.symlink("/sl/target", R(env, "sl", "sub", "abs"))
    env.invalidate()
    assert os.readlink(M(env, "sl", "sub", "abs")) == "../../sl/target"
    assert open(M(env, "sl", "sub", "abs")).read() == "T"
    os.symlink("../../../../etc/passwd", R(env, "sl", "sub", "up"))
    # A change on the host is seen after the next job starts (invalidate):
    # sl/sub's listing may already be cached (read ahead with sl's).
    env.invalidate()
    assert os.readlink(M(env, "sl", "sub", "up")) == "../../etc/passwd"
    # A ".." after a name is never left to the kernel: "loop" is a link to
    # ".", so "loop/../../../x" as it stands would climb out of the mount.
    os.symlink(".", R(env, "sl", "sub", "loop"))
    os.symlink("loop/../../../x", R(env, "sl", "sub", "inner"))
    env.invalidate()
    assert os.readlink(M(env, "sl", "sub", "inner")) == "../../x"
    # utime on the link itself must not touch its target
    t_before = os.stat(R(env, "sl", "target")).st_mtime
    os.utime(M(env, "sl", "rel"), (1000000000, 1000000000), follow_symlinks=False)
    assert os.lstat(R(env, "sl", "rel")).st_mtime == 1000000000
    assert os.stat(R(env, "sl", "target")).st_mtime == t_before
    assert os.lstat(M(env, "sl", "rel")).st_mtime == 1000000000
    # hard links
    os.link(M(env, "sl", "target"), M(env, "sl", "hard"))
    assert os.stat(R(env, "sl", "hard")).st_ino == os.stat(R(env, "sl", "target")).st_ino
    assert open(M(env, "sl", "hard")).read() == "T"
    # chmod, utime on a file
    os.chmod(M(env, "sl", "target"), 0o600)
    assert os.stat(R(env, "sl", "target")).st_mode & 0o777 == 0o600
    assert os.stat(M(env, "sl", "target")).st_mode & 0o777 == 0o600
    os.utime(M(env, "sl", "target"), (2000000000, 2000000001))
    st = os.stat(R(env, "sl", "target"))
    assert (st.st_atime, st.st_mtime) == (2000000000, 2000000001)


def test_statfs(env):
    a, b = os.statvfs(env.mnt), os.statvfs(env.remote)
    assert a.f_blocks * a.f_frsize == b.f_blocks * b.f_frsize
    assert a.f_namemax == b.f_namemax


def test_tar_symlinks_and_cp_a(env):
    src = tempfile.mkdtemp(prefix="sftpfs-src-")
    try:
        os.makedirs(os.path.join(src, "t", "a", "b"))
        for i in range(50):
            with open(os.path.join(src, "t", "a", f"f{i}"), "wb") as f:
                f.write(os.urandom(i * 97))
        os.symlink("f1", os.path.join(src, "t", "a", "lnk"))
        os.symlink("../a/f2", os.path.join(src, "t", "a", "b", "up"))
        os.symlink("dangling", os.path.join(src, "t", "dang"))
        os.chmod(os.path.join(src, "t", "a", "f3"), 0o751)
        tarball = os.path.join(src, "t.tar")
        subprocess.run(["tar", "cf", tarball, "-C", src, "t"], check=True)
        os.mkdir(M(env, "tx"))
        subprocess.run(["tar", "xf", tarball, "-C", M(env, "tx")], check=True, timeout=60)
        subprocess.run(["diff", "-r", "--no-dereference", os.path.join(src, "t"), M(env, "tx", "t")],
                       check=True)
        lm = os.lstat(M(env, "tx", "t", "a", "lnk")).st_mtime
        assert lm == int(os.lstat(os.path.join(src, "t", "a", "lnk")).st_mtime)  # SFTP: whole seconds
        subprocess.run(["cp", "-a", M(env, "tx", "t"), M(env, "cpa")], check=True, timeout=60)
        subprocess.run(["diff", "-r", "--no-dereference", os.path.join(src, "t"), M(env, "cpa")],
                       check=True)
        assert os.stat(R(env, "cpa", "a", "f3")).st_mode & 0o777 == 0o751
    finally:
        shutil.rmtree(src)


def test_git(env):
    g = M(env, "repo")
    os.mkdir(g)
    for i in range(30):
        open(os.path.join(g, f"file{i}.c"), "w").write(f"int x{i};\n")
    genv = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
                GIT_COMMITTER_EMAIL="t@t", HOME=g)
    run = lambda *a: subprocess.run(["git", "-c", "safe.directory=*", *a], cwd=g, env=genv, check=True,
                                    capture_output=True, text=True, timeout=60)
    run("init", "-q")
    run("add", "-A")
    run("commit", "-q", "-m", "init")
    assert run("status", "--porcelain").stdout == ""
    open(os.path.join(g, "file3.c"), "a").write("// more\n")
    assert run("status", "--porcelain").stdout.strip() == "M file3.c"
    run("fsck", "--no-progress")


def test_listing_cache_follows_changes(env):
    """Listings cached for lookups must follow changes made through the
    mount, also after the kernel forgot the directories."""
    if os.geteuid() != 0:
        pytest.skip("dropping the kernel's caches needs root")
    base = M(env, "lc")
    os.makedirs(os.path.join(base, "d", "sub"))
    for i in range(5):
        open(os.path.join(base, "d", f"f{i}"), "w").write("x")
    for i in range(5):  # lookups: the second miss lists the directory
        os.stat(os.path.join(base, "d", f"f{i}"))
    assert errno_of(os.stat, os.path.join(base, "d", "nope")) == errno.ENOENT
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2")
    open(os.path.join(base, "d", "added"), "w").write("a")
    assert os.path.exists(os.path.join(base, "d", "added"))
    os.rename(os.path.join(base, "d"), os.path.join(base, "e"))
    assert errno_of(os.stat, os.path.join(base, "d", "f1")) == errno.ENOENT
    assert os.path.exists(os.path.join(base, "e", "f1"))
    os.mkdir(os.path.join(base, "d"))
    assert os.listdir(os.path.join(base, "d")) == []
    assert errno_of(os.stat, os.path.join(base, "d", "f2")) == errno.ENOENT
    shutil.rmtree(os.path.join(base, "e", "sub"))
    os.mkdir(os.path.join(base, "e", "sub"))
    open(os.path.join(base, "e", "sub", "z"), "w").write("z")
    assert os.listdir(os.path.join(base, "e", "sub")) == ["z"]
    with open(os.path.join(base, "e", "f3"), "a") as f:
        f.write("more")
    assert os.stat(os.path.join(base, "e", "f3")).st_size == 5
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2")
    assert os.stat(os.path.join(base, "e", "f3")).st_size == 5


def test_big_file(env):
    data = os.urandom(1 << 20) * 100  # 100 MiB
    h = hashlib.sha256(data).hexdigest()
    with open(M(env, "big"), "wb") as f:
        for i in range(0, len(data), 1 << 20):
            f.write(data[i:i + (1 << 20)])
    assert os.stat(R(env, "big")).st_size == len(data)
    env.invalidate()  # read from the server, not the page cache
    with open(M(env, "big"), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == h
    with open(R(env, "big"), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == h
    os.unlink(M(env, "big"))


def test_stale_entries(env):
    p = M(env, "stale.txt")
    open(p, "w").write("one")
    assert open(p).read() == "one"
    assert errno_of(os.stat, M(env, "later")) == errno.ENOENT  # negative entry
    os.makedirs(M(env, "sd"))
    assert os.listdir(M(env, "sd")) == []
    # the sandbox changes its files (a job ran): write the backing dir
    with open(R(env, "stale.txt"), "w") as f:
        f.write("two, longer")
    open(R(env, "later"), "w").write("L")
    open(R(env, "sd", "new"), "w").write("N")
    os.unlink(R(env, "stale.txt"))
    os.symlink("later", R(env, "stale.txt"))
    env.invalidate()
    assert os.path.islink(p) and os.readlink(p) == "later"
    assert open(p).read() == "L"
    assert os.listdir(M(env, "sd")) == ["new"]
    assert open(M(env, "sd", "new")).read() == "N"
    # data cache of a file kept open elsewhere
    open(R(env, "cached"), "w").write("v1")
    env.invalidate()
    assert open(M(env, "cached")).read() == "v1"
    open(R(env, "cached"), "w").write("v2")  # same size, same second
    env.invalidate()
    assert open(M(env, "cached")).read() == "v2"


def test_link_loss_fails_promptly():
    """Killing the sshd session process during a large read and a large
    write gives EIO/ENOTCONN within seconds, never a hang."""
    tmp = tempfile.mkdtemp(prefix="sftpfs-kill-")
    remote, mnt = os.path.join(tmp, "remote"), os.path.join(tmp, "mnt")
    os.makedirs(remote)
    os.makedirs(mnt)
    sshd = SshdFixture(sftp_server="sftp-server").start()
    m = None
    try:
        with open(os.path.join(remote, "big"), "wb") as f:
            f.truncate(2 << 30)  # sparse 2 GiB
        m = Mount(sshd, remote, mnt)
        results, took = transfers_across_link_kill(sshd, os.path.join(mnt, "big"), os.path.join(mnt, "out"))
        assert None not in results.values(), ("hung after link loss", results)
        assert took < 15
        assert results["read"] in (errno.EIO, errno.ENOTCONN, errno.ETIMEDOUT), results
        assert results["write"] in (errno.EIO, errno.ENOTCONN, errno.ETIMEDOUT), results
        # later operations fail too, promptly
        t0 = time.monotonic()
        assert errno_of(os.listdir, os.path.join(mnt)) in (errno.ENOTCONN, errno.EIO, 0)
        assert errno_of(open, os.path.join(mnt, "newfile"), "w") in (errno.ENOTCONN, errno.EIO)
        assert time.monotonic() - t0 < 5
    finally:
        if m:
            m.close()
        sshd.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_tar_style_attrs_reach_the_server_by_close(env):
    # create, write, futimens, fchown (same owner), fchmod, close: the mode
    # and time changes are held back until the close, which must have
    # applied them on the server before it returns.
    d = M(env, "attrs")
    os.mkdir(d)
    st0 = os.stat(d)
    fd = os.open(os.path.join(d, "f"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"x" * 5000)
    os.write(fd, b"y" * 100)
    os.utime(fd, ns=(1_000_000_000 * 1_600_000_000, 1_000_000_000 * 1_500_000_000))
    os.fchown(fd, st0.st_uid, st0.st_gid)
    os.fchmod(fd, 0o751)
    st = os.fstat(fd)  # answered while the changes are still held back
    assert (st.st_size, st.st_mode & 0o7777, st.st_mtime) == (5100, 0o751, 1_500_000_000)
    os.close(fd)
    r = os.stat(R(env, "attrs", "f"))
    assert (r.st_size, r.st_mode & 0o7777, int(r.st_mtime), int(r.st_atime)) == (5100, 0o751, 1_500_000_000,
                                                                               1_600_000_000)
    assert open(R(env, "attrs", "f"), "rb").read() == b"x" * 5000 + b"y" * 100
    # A write after the times were set moves mtime again, as on a local disk.
    fd = os.open(os.path.join(d, "g"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.utime(fd, (1_000_000_000, 1_000_000_000))
    os.fchmod(fd, 0o640)
    os.write(fd, b"later")
    os.close(fd)
    r = os.stat(R(env, "attrs", "g"))
    assert r.st_mode & 0o7777 == 0o640 and r.st_mtime > 1_700_000_000
    # A chown that changes the owner is not held back: its error comes at once.
    if os.getuid() != 0:
        fd = os.open(os.path.join(d, "h"), os.O_WRONLY | os.O_CREAT, 0o644)
        assert errno_of(os.fchown, fd, 0, 0) == errno.EPERM
        os.close(fd)


def test_new_names_in_a_listed_directory(env):
    # A listing stays usable for misses after we add names to the
    # directory: new names are absent at once, names we made are found.
    d = M(env, "names")
    os.mkdir(d)
    for i in range(20):
        open(os.path.join(d, f"a{i}"), "w").write(str(i))
    assert sorted(os.listdir(d)) == sorted(f"a{i}" for i in range(20))
    os.mkdir(os.path.join(d, "sub"))
    os.symlink("a1", os.path.join(d, "ln"))
    os.link(os.path.join(d, "a2"), os.path.join(d, "hard"))
    os.rename(os.path.join(d, "a3"), os.path.join(d, "moved"))
    for name in ("sub", "ln", "hard", "moved", "a0", "a19"):
        assert os.path.lexists(os.path.join(d, name)), name
    for name in ("a3", "nope", "a20"):
        assert errno_of(os.lstat, os.path.join(d, name)) == errno.ENOENT, name
    os.unlink(os.path.join(d, "a4"))
    assert errno_of(os.lstat, os.path.join(d, "a4")) == errno.ENOENT
    # The listing read again shows exactly the server's names.
    want = sorted(os.listdir(R(env, "names")))
    assert sorted(os.listdir(d)) == want and "moved" in want and "a3" not in want
    # A directory made through the mount starts with an empty listing:
    # a file created there right away is found, by us and by the server.
    sub = os.path.join(d, "sub")
    assert errno_of(os.lstat, os.path.join(sub, "x")) == errno.ENOENT
    open(os.path.join(sub, "x"), "w").write("x")
    assert os.listdir(sub) == ["x"] and os.listdir(R(env, "names", "sub")) == ["x"]


def test_closed_handles_are_closed_on_the_server(env):
    # release does not wait for CLOSE's answer; the server must still close
    # every handle (sftp-server keeps an fd per open handle).
    d = M(env, "many-closes")
    os.mkdir(d)
    server = [p for p in os.listdir("/proc") if p.isdigit() and _is_sftp_server_of(p, env.sshd)]
    if server and not os.access(f"/proc/{server[0]}/fd", os.R_OK):
        pytest.skip("sftp-server makes itself undumpable: its open fds are readable by root only")
    before = {p: len(os.listdir(f"/proc/{p}/fd")) for p in server}
    for i in range(300):
        with open(os.path.join(d, f"f{i}"), "w") as f:
            f.write("z")
        with open(os.path.join(d, f"f{i}")) as f:
            assert f.read() == "z"
    os.rename(os.path.join(d, "f1"), os.path.join(d, "f2"))
    assert open(R(env, "many-closes", "f2")).read() == "z"
    time.sleep(0.5)
    after = {p: len(os.listdir(f"/proc/{p}/fd")) for p in server if os.path.exists(f"/proc/{p}")}
    assert len(server) == 1 and all(after[p] <= before[p] + 2 for p in after), (before, after)


def _is_sftp_server_of(pid, sshd):
    # sftp-server <- "sshd: USER@notty" <- the fixture's sshd (-f CONFIG)
    try:
        if "sftp-server" not in open(f"/proc/{pid}/cmdline").read():
            return False
        for _ in range(3):
            pid = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]
            if sshd.config in open(f"/proc/{pid}/cmdline").read():
                return True
    except OSError:
        pass
    return False


def test_reading_back_what_we_wrote(env):
    # Small files written through the mount are read back from what seerfs
    # kept, without the server: the bytes must still be exactly the file's,
    # across appends, rewrites, truncation and a change made on the server
    # (which the harness's SIGUSR1 stands for: a job started).
    d = M(env, "readback")
    os.mkdir(d)
    data = os.urandom(70000)
    with open(os.path.join(d, "a"), "wb") as f:
        f.write(data[:10000])
        f.write(data[10000:])
    assert open(os.path.join(d, "a"), "rb").read() == data
    with open(os.path.join(d, "a"), "rb") as f:
        f.seek(65530)
        assert f.read(100) == data[65530:65630]
    with open(os.path.join(d, "a"), "ab") as f:   # O_APPEND: no longer kept
        f.write(b"tail")
    assert open(os.path.join(d, "a"), "rb").read() == data + b"tail"
    with open(os.path.join(d, "b"), "wb") as f:
        f.write(b"0123456789")
    fd = os.open(os.path.join(d, "b"), os.O_WRONLY)
    os.pwrite(fd, b"XY", 3)                      # a write in the middle
    os.close(fd)
    assert open(os.path.join(d, "b"), "rb").read() == b"012XY56789"
    with open(os.path.join(d, "c"), "wb") as f:
        f.write(b"before")
    open(os.path.join(d, "c"), "wb").close()     # O_TRUNC, nothing written
    assert open(os.path.join(d, "c"), "rb").read() == b""
    with open(os.path.join(d, "e"), "wb") as f:
        f.write(b"mine")
    with open(R(env, "readback", "e"), "wb") as f:   # the server's side
        f.write(b"theirs!")
    env.invalidate()
    assert open(os.path.join(d, "e"), "rb").read() == b"theirs!"
    big = os.urandom(300 * 1024)                  # over the per-file limit
    with open(os.path.join(d, "big"), "wb") as f:
        f.write(big)
    assert open(os.path.join(d, "big"), "rb").read() == big
    assert open(R(env, "readback", "big"), "rb").read() == big
    os.chmod(os.path.join(d, "b"), 0o200)            # unreadable to its owner
    if os.getuid() != 0:
        assert errno_of(open, os.path.join(d, "b"), "rb") == errno.EACCES
