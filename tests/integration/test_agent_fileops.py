"""test_agent_fileops.py - the ssh agent's file operations for root/
(core/lib/agent_remote.pl, F frames; fs/root/sftpfs_agent.c), run
here against this machine's files, with no bubblewrap around them: what
keeps them from following a symlink is the agent's own walk (openat with
O_NOFOLLOW, one name at a time, and the *at calls' no-follow flags), and
these tests check exactly that. The same agent serves root/ of ssh
sandboxes inside their bubblewrap (test_posix.py on the ssh stage checks
the operations end to end).

Needs /usr/bin/perl and libseccomp (for this machine's system call numbers,
as seerfs finds them for the host)."""

import contextlib
import ctypes
import ctypes.util
import errno
import os
import stat
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "core" / "lib" / "agent_remote.pl"
CALLS = ["openat", "statx", "fchownat", "mknodat", "utimensat", "utimensat_time64", "ftruncate", "fchdir", "fchmodat",
         "mkdirat", "unlinkat", "renameat2", "linkat", "symlinkat", "setfsuid", "setfsgid", "setgroups",
         "pread64", "pwrite64", "fsync", "readlinkat"]
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2


def _numbers():
    name = ctypes.util.find_library("seccomp")
    if not name:
        return None
    lib = ctypes.CDLL(name)
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    out = []
    for c in CALLS:
        nr = lib.seccomp_syscall_resolve_name(c.encode())
        if nr >= 0:
            out.append(f"{c}={nr}")
    return ",".join(out)


NUMBERS = _numbers()
pytestmark = [
    pytest.mark.skipif(not os.path.exists("/usr/bin/perl"), reason="no /usr/bin/perl"),
    pytest.mark.skipif(not NUMBERS, reason="no libseccomp to resolve this machine's system call numbers"),
]


class Agent:
    """The real agent text, started as seerfs starts it (perl -, the text on
    stdin up to __END__), speaking frames on its stdin and stdout."""

    def __init__(self, numbers=None, files=False):
        self.p = subprocess.Popen(["/usr/bin/perl", "-", "-1", numbers if numbers is not None else NUMBERS]
                                  + (["files"] if files else []),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.p.stdin.write(AGENT.read_bytes() + b"\n__END__\n")
        self.p.stdin.flush()
        while True:
            line = self.p.stdout.readline()
            assert line, "the agent ended before it was ready"
            if line == b"@@seer-agent-ready\n":
                break
        self.mu = threading.Lock()
        self.id = 0

    def op(self, *args):
        """(errno, [fields]) of one file operation."""
        data = b"\0".join(a if isinstance(a, bytes) else str(a).encode() for a in args)
        with self.mu:
            self.id += 1
            self.p.stdin.write(struct.pack(">cII", b"F", self.id, len(data)) + data)
            self.p.stdin.flush()
            t, i, n = struct.unpack(">cII", self.p.stdout.read(9))
            body = self.p.stdout.read(n)
        assert (t, i) == (b"f", self.id)
        f = body.split(b"\0")
        return int(f[0]), f[1:]

    def close(self):
        self.p.stdin.close()
        self.p.wait(10)


@pytest.fixture
def agent():
    a = Agent()
    yield a
    a.close()


@pytest.fixture
def tree(tmp_path):
    """inside/ (the sandbox's files) and host/ (a host file the sandbox
    points at)."""
    inside = tmp_path / "inside"
    host = tmp_path / "host"
    inside.mkdir()
    host.mkdir()
    (host / "f").write_text("HOST\n")
    os.utime(host / "f", (1_000_000_000, 1_000_000_000))
    os.chmod(host / "f", 0o644)
    (inside / "d").mkdir()
    (inside / "d" / "f").write_text("INSIDE\n")
    return inside, host


def host_state(host):
    """Everything a change would move (ctime: any chown, chmod, utimens or
    truncate); not atime, which reading the file moves."""
    st = os.lstat(host / "f")
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_size,
            sorted(os.listdir(host)), (host / "f").read_text())


def test_operations(agent, tree):
    inside, _ = tree
    f = inside / "d" / "f"
    e, s = agent.op("stat", f)
    assert e == 0
    st = os.lstat(f)
    assert int(s[0]) == st.st_nlink and int(s[3]) == st.st_mode and int(s[4]) == st.st_size
    assert (int(s[10]), int(s[11])) == (st.st_ctime_ns // 10**9, st.st_ctime_ns % 10**9)
    assert agent.op("utimens", f, (1 << 32), 5, (1 << 32) + 1, 123_456_789)[0] == 0
    assert os.stat(f).st_mtime_ns == ((1 << 32) + 1) * 10**9 + 123_456_789
    assert os.stat(f).st_atime_ns == (1 << 32) * 10**9 + 5
    assert agent.op("utimens", f, 0, UTIME_OMIT, 7, 0, 0o600)[0] == 0
    assert os.stat(f).st_mtime_ns == 7 * 10**9 and stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert agent.op("mknod", inside / "p", stat.S_IFIFO | 0o640)[0] == 0
    assert stat.S_ISFIFO(os.lstat(inside / "p").st_mode) and stat.S_IMODE(os.lstat(inside / "p").st_mode) == 0o640
    assert agent.op("mknod", inside / "p", stat.S_IFIFO | 0o640)[0] == errno.EEXIST
    assert agent.op("mknod", inside / "s", stat.S_IFSOCK | 0o755)[0] == 0
    assert stat.S_ISSOCK(os.lstat(inside / "s").st_mode) and stat.S_IMODE(os.lstat(inside / "s").st_mode) == 0o755
    assert agent.op("mknod", inside / "s", stat.S_IFSOCK | 0o755)[0] == errno.EEXIST
    # Device nodes: refused whoever runs the agent (it never has
    # CAP_MKNOD inside a sandbox; refused here too, as there).
    assert agent.op("mknod", inside / "null", stat.S_IFCHR | 0o600, 0)[0] == errno.EPERM
    assert not os.path.lexists(inside / "null")
    assert agent.op("truncate", f, 999_999_999_999_999)[0] == errno.EFBIG
    assert agent.op("truncate", f, 3)[0] == 0 and os.stat(f).st_size == 3
    assert agent.op("chown", f, os.geteuid(), os.getegid())[0] == 0
    # Owners are the sandbox's ids only, as the local provider maps them.
    assert agent.op("chown", f, 65536, -1)[0] == errno.EINVAL
    assert agent.op("pchown", f, -1, 70000)[0] == errno.EINVAL
    assert agent.op("chown", f, "x", -1)[0] == errno.EINVAL
    assert agent.op("stat", inside / "missing")[0] == errno.ENOENT
    assert agent.op("stat", inside / "d" / "f" / "x")[0] == errno.ENOTDIR
    assert agent.op("stat", "relative/path")[0] == errno.EINVAL
    assert agent.op("stat", f"{inside}/d/../d/f")[0] == errno.EINVAL
    assert agent.op("nosuchop", f)[0] == errno.ENOSYS
    # A long path, walked a name at a time: no PATH_MAX of its own.
    deep = inside
    for _ in range(24):
        deep = deep / ("n" * 200)
    # made by descriptors: the whole path is longer than open() takes
    fd = os.open(inside, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(24):
        os.mkdir("n" * 200, dir_fd=fd)
        nfd = os.open("n" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(fd)
    assert len(str(deep)) > 4096
    assert agent.op("mknod", deep / "p", stat.S_IFIFO | 0o600)[0] == 0
    e, s = agent.op("stat", deep / "p")
    assert e == 0 and stat.S_ISFIFO(int(s[3]))


def test_create(agent, tree):
    """create (a deferred create of root/, fs/root/sftpfs.c): made, written,
    its mode (exact: umask 0), a later chmod and the times in one request,
    answered with stat's fields; O_EXCL and O_TRUNC as open(2) has them."""
    inside, _ = tree
    f = inside / "d" / "new"
    data = b"a\0b\0\0c" * 1000
    old = os.umask(0o077)
    try:
        e, s = agent.op("create", f, 1, 0, 0o664, -1, -1, 0, 0, 0, -1, -1, data)
    finally:
        os.umask(old)
    assert e == 0, e
    st = os.lstat(f)
    assert f.read_bytes() == data and stat.S_IMODE(st.st_mode) == 0o664
    assert int(s[3]) == st.st_mode and int(s[4]) == len(data) and int(s[0]) == 1
    # exclusive: the name exists now
    assert agent.op("create", f, 1, 0, 0o600, -1, -1, 0, 0, 0, -1, -1, b"x")[0] == errno.EEXIST
    assert f.read_bytes() == data
    # not exclusive, truncating: open(2)'s rules, its mode stays; then the
    # held-back chmod and times
    e, s = agent.op("create", f, 0, 1, 0o600, 0o640, 5, 6, 1 << 32, 7, -1, -1, b"xy")
    assert e == 0
    st = os.lstat(f)
    assert f.read_bytes() == b"xy" and stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_mtime_ns == (1 << 32) * 10**9 + 7 and st.st_atime_ns == 5 * 10**9 + 6
    assert (int(s[8]), int(s[9])) == (1 << 32, 7)
    # an empty file; a missing directory; a file on the way
    assert agent.op("create", inside / "d" / "empty", 1, 1, 0o644, -1, -1, 0, 0, 0, -1, -1, b"")[0] == 0
    assert (inside / "d" / "empty").read_bytes() == b""
    assert agent.op("create", inside / "nodir" / "f", 1, 1, 0o644, -1, -1, 0, 0, 0, -1, -1, b"x")[0] == errno.ENOENT
    assert agent.op("create", f / "x", 1, 1, 0o644, -1, -1, 0, 0, 0, -1, -1, b"x")[0] == errno.ENOTDIR
    # an owner (pcreate: the owners' agent, with CAP_CHOWN): given where
    # allowed; refused, the file stays its maker's and the answer says so
    g = inside / "d" / "owned"
    e, s = agent.op("pcreate", g, 1, 0, 0o644, -1, -1, 0, 0, 0, 1234, 4321, b"o")
    assert e == 0 and g.read_bytes() == b"o"
    st = os.lstat(g)
    assert (int(s[1]), int(s[2])) == (st.st_uid, st.st_gid)
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (1234, 4321) and int(s[15]) == 0
    else:
        assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid()) and int(s[15]) == errno.EPERM
    e, s = agent.op("pcreate", inside / "d" / "big-id", 1, 0, 0o644, -1, -1, 0, 0, 0, 70000, -1, b"o")
    assert e == 0 and os.lstat(inside / "d" / "big-id").st_uid == os.geteuid()   # beyond the sandbox's ids


def test_create_never_follows_a_symlink(agent, tree):
    """A symlink planted at the name, or a directory of the path swapped
    for one (to a host directory): create fails, nothing lands on the
    host."""
    inside, host = tree
    before = host_state(host)
    (inside / "evil").symlink_to(host / "f")
    (inside / "dangling").symlink_to(host / "new")
    (inside / "sw").symlink_to(host)
    for name, excl in (("evil", 1), ("evil", 0), ("dangling", 1), ("dangling", 0)):
        e = agent.op("create", inside / name, excl, 1, 0o644, -1, -1, 0, 0, 0, -1, -1, b"EVIL")[0]
        assert e in (errno.EEXIST, errno.ELOOP), (name, excl, e)
    assert agent.op("create", inside / "sw" / "f", 0, 1, 0o644, -1, -1, 0, 0, 0, -1, -1, b"EVIL")[0] in (errno.ENOTDIR, errno.ELOOP)
    assert agent.op("create", inside / "sw" / "g", 1, 0, 0o644, -1, -1, 0, 0, 0, -1, -1, b"EVIL")[0] in (errno.ENOTDIR, errno.ELOOP)
    assert host_state(host) == before
    assert not os.path.lexists(host / "new") and not os.path.lexists(host / "g")


def test_final_symlink_never_followed(agent, tree):
    """A symlink planted where root/ names a file: chown, utimens (and the
    mode with it), truncate and mknod act on the link or fail; the host
    file it points at stays as it was."""
    inside, host = tree
    before = host_state(host)
    evil = inside / "evil"
    evil.symlink_to(host / "f")
    assert agent.op("utimens", evil, 5, 0, 6, 0)[0] == 0
    assert os.lstat(evil).st_mtime == 6      # the link's own time
    assert agent.op("utimens", evil, 5, 0, 6, 0, 0o777)[0] in (errno.EOPNOTSUPP, errno.ENOTSUP)
    assert agent.op("chown", evil, os.geteuid(), os.getegid())[0] == 0
    assert agent.op("truncate", evil, 0)[0] == errno.ELOOP
    assert agent.op("mknod", evil, stat.S_IFIFO | 0o600)[0] == errno.EEXIST
    assert agent.op("mknod", evil, stat.S_IFSOCK | 0o600)[0] == errno.EEXIST
    e, s = agent.op("stat", evil)
    assert e == 0 and stat.S_ISLNK(int(s[3]))
    # A dangling link to a host path: nothing is made there.
    (inside / "dangling").symlink_to(host / "new")
    assert agent.op("mknod", inside / "dangling", stat.S_IFIFO | 0o600)[0] == errno.EEXIST
    assert agent.op("mknod", inside / "dangling", stat.S_IFSOCK | 0o600)[0] == errno.EEXIST
    assert host_state(host) == before


def test_symlink_in_the_middle_never_followed(agent, tree):
    """A directory on the path that is a symlink (to a host directory)
    fails the operation; it is never walked through."""
    inside, host = tree
    before = host_state(host)
    (inside / "sw").symlink_to(host)
    for args in (("utimens", inside / "sw" / "f", 5, 0, 6, 0), ("chown", inside / "sw" / "f", 0, 0),
                 ("truncate", inside / "sw" / "f", 0), ("mknod", inside / "sw" / "p", stat.S_IFIFO | 0o600),
                 ("mknod", inside / "sw" / "s", stat.S_IFSOCK | 0o600), ("stat", inside / "sw" / "f")):
        assert agent.op(*args)[0] in (errno.ENOTDIR, errno.ELOOP), args
    assert host_state(host) == before


@contextlib.contextmanager
def exchanging(a, b, seconds=2.0):
    """The sandbox's side of a swap race: a thread exchanges a and b
    (RENAME_EXCHANGE) as fast as it can for `seconds`. Yields a function
    that says whether it still runs; at the end, checks it swapped often."""
    libc = ctypes.CDLL(None, use_errno=True)
    stop = time.time() + seconds
    swaps = [0]

    def swapper():
        x, y = str(a).encode(), str(b).encode()
        while time.time() < stop:
            if libc.renameat2(-100, x, -100, y, 2) == 0:
                swaps[0] += 1

    t = threading.Thread(target=swapper)
    t.start()
    try:
        yield lambda: time.time() < stop
    finally:
        t.join()
    assert swaps[0] > 10


def test_directory_swapped_mid_walk(agent, tree):
    """The sandbox swaps a directory of the path for a symlink to a host
    directory (RENAME_EXCHANGE, as fast as it can) while the agent works on
    names beneath it: every operation lands inside or fails, the host
    directory is never touched."""
    inside, host = tree
    before = host_state(host)
    (inside / "sw").symlink_to(host)
    seen = set()
    n = 0
    with exchanging(inside / "d", inside / "sw") as running:
        while running():
            for name in ("d", "sw"):
                base = inside / name
                seen.add(agent.op("utimens", base / "f", 5, 0, 6, 0)[0])
                seen.add(agent.op("chown", base / "f", os.geteuid(), os.getegid())[0])
                seen.add(agent.op("mknod", base / f"p{n}", stat.S_IFIFO | 0o600)[0])
                seen.add(agent.op("truncate", base / "f", 1)[0])
                seen.add(agent.op("create", base / f"c{n}", 0, 1, 0o600, -1, -1, 0, 0, 0, -1, -1, b"EVIL")[0])
                seen.add(agent.op("create", base / "f", 0, 1, 0o600, -1, -1, 0, 0, 0, -1, -1, b"EVIL")[0])
                n += 1
    assert 0 in seen
    assert seen <= {0, errno.ENOTDIR, errno.ELOOP, errno.ENOENT, errno.EEXIST}
    assert host_state(host) == before


def test_owners_agent_runs_no_command(tree):
    """The owners' agent (third argument "files", run with CAP_CHOWN)
    makes file operations only: a command is refused, a signal request
    signals nothing."""
    inside, _ = tree
    a = Agent.__new__(Agent)
    a.p = subprocess.Popen(["/usr/bin/perl", "-", "-1", NUMBERS, "files"], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    a.p.stdin.write(AGENT.read_bytes() + b"\n__END__\n")
    a.p.stdin.flush()
    while a.p.stdout.readline() != b"@@seer-agent-ready\n":
        pass
    a.mu, a.id = threading.Lock(), 0
    try:
        spec = b"/\x000\x00/bin/touch\x00" + str(inside / "ran").encode()
        a.p.stdin.write(struct.pack(">cII", b"S", 99, len(spec)) + spec)
        a.p.stdin.write(struct.pack(">cII", b"K", 100, 5) + b"1 9 1")
        a.p.stdin.flush()
        got = {}
        while len(got) < 3:
            t, i, n = struct.unpack(">cII", a.p.stdout.read(9))
            got[t] = (i, a.p.stdout.read(n))
        assert got[b"E"][1].startswith(b"seerfs: this agent makes file operations only")
        assert got[b"X"][0] == 99 and got[b"R"] == (100, b"0")
        assert not os.path.exists(inside / "ran")
        assert a.op("pchown", inside / "d" / "f", os.geteuid(), -1)[0] == 0
    finally:
        a.close()


def test_without_system_call_numbers(tree):
    """An agent not told the numbers answers ENOSYS (root/ then stays on
    SFTP), and runs on."""
    inside, _ = tree
    a = Agent(numbers="-")
    try:
        assert a.op("stat", inside / "d" / "f")[0] == errno.ENOSYS
        assert a.op("mknod", inside / "p", stat.S_IFIFO | 0o600)[0] == errno.ENOSYS
        assert not os.path.lexists(inside / "p")
    finally:
        a.close()


# ---- the owners' agent: operations as root/'s caller ---------------------------

U1, U2 = 1234, 1235   # two of the sandbox's uids (and gids) other than root


@pytest.fixture
def shared():
    """A tree other uids may reach (pytest's tmp_path is root's 0700):
    st/ root's and sticky, od/ U1's with mode 0755, gd/ 0770 of group 5,
    each with a file of its owner's."""
    import shutil
    import tempfile
    top = Path(tempfile.mkdtemp(prefix="seerfs-as-", dir="/tmp"))
    top.chmod(0o755)
    (top / "st").mkdir()
    (top / "st").chmod(0o1777)
    (top / "st" / "rootf").write_text("r")
    (top / "od").mkdir()
    (top / "od" / "f").write_text("u1")
    os.chown(top / "od" / "f", U1, U1)
    os.chown(top / "od", U1, U1)
    (top / "gd").mkdir()
    os.chown(top / "gd", 0, 5)
    (top / "gd").chmod(0o770)
    yield top
    shutil.rmtree(top)


@pytest.fixture
def owners():
    a = Agent(files=True)
    yield a
    a.close()


def _as(a, uid, groups, *op):
    return a.op("as", uid, uid, ",".join(map(str, groups)), *op)


def _fs_ids(pid):
    """(fsuid, fsgid, groups) of a process, from /proc."""
    st = {l.split(":")[0]: l.split(":")[1].split() for l in Path(f"/proc/{pid}/status").read_text().splitlines()}
    return int(st["Uid"][3]), int(st["Gid"][3]), st["Groups"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the agent takes other uids' ids (CAP_SETUID, CAP_SETGID)")
def test_owners_agent_acts_as_the_caller(owners, shared):
    """Directory operations sent "as" a caller are the caller's: the host's
    kernel checks its search and write permission, its groups and the
    sticky bit, and what it makes is its own; root may all of it. After
    each the agent has its own ids back."""
    before = _fs_ids(owners.p.pid)
    t = shared
    # Another owner's 0755 directory: EACCES; its owner and root may.
    assert _as(owners, U2, [], "mkdir", t / "od" / "x", 0o755)[0] == errno.EACCES
    assert _as(owners, U2, [], "mkfile", t / "od" / "x")[0] == errno.EACCES
    assert _as(owners, U2, [], "unlink", t / "od" / "f")[0] == errno.EACCES
    assert _as(owners, U2, [], "symlink", t / "od" / "x", "t")[0] == errno.EACCES
    e, s = _as(owners, U1, [], "mkdir", t / "od" / "x", 0o2750)
    assert e == 0 and (int(s[1]), int(s[2]), int(s[3])) == (U1, U1, stat.S_IFDIR | 0o750)
    assert (os.lstat(t / "od" / "x").st_uid, os.lstat(t / "od" / "x").st_gid) == (U1, U1)
    assert _as(owners, 0, [], "mkdir", t / "od" / "r", 0o700)[0] == 0
    assert os.lstat(t / "od" / "r").st_uid == 0
    assert _as(owners, U2, [], "truncate", t / "od" / "f", 1)[0] == errno.EACCES
    assert _as(owners, U1, [], "truncate", t / "od" / "f", 1)[0] == 0 and os.stat(t / "od" / "f").st_size == 1
    assert _as(owners, U2, [], "utimens", t / "od" / "f", 0, UTIME_NOW, 0, UTIME_NOW)[0] == errno.EACCES
    assert _as(owners, U2, [], "utimens", t / "od" / "f", 5, 0, 6, 0)[0] == errno.EPERM
    assert _as(owners, U1, [], "utimens", t / "od" / "f", 5, 0, 6, 7)[0] == 0
    assert os.stat(t / "od" / "f").st_mtime_ns == 6_000_000_007
    # Groups: the caller's supplementary groups count, and only those.
    assert _as(owners, U2, [], "mkdir", t / "gd" / "y", 0o755)[0] == errno.EACCES
    e, s = _as(owners, U2, [5], "mkdir", t / "gd" / "y", 0o755)
    assert e == 0 and int(s[1]) == U2
    # The sticky directory: only one's own entries, or all for its owner.
    assert _as(owners, U1, [], "mknod", t / "st" / "mine", stat.S_IFREG | 0o644, 0)[0] == 0
    assert _as(owners, U2, [], "unlink", t / "st" / "rootf")[0] == errno.EPERM
    assert _as(owners, U2, [], "rename", t / "st" / "rootf", t / "st" / "z", 0)[0] == errno.EPERM
    assert _as(owners, U2, [], "unlink", t / "st" / "mine")[0] == errno.EPERM
    assert _as(owners, U1, [], "rename", t / "st" / "mine", t / "st" / "mine2", 0)[0] == 0
    assert _as(owners, U1, [], "link", t / "st" / "mine2", t / "st" / "hard")[0] == 0
    assert _as(owners, U1, [], "unlink", t / "st" / "hard")[0] == 0
    assert _as(owners, 0, [], "rename", t / "st" / "mine2", t / "st" / "rootf", 1)[0] == errno.EEXIST
    assert _as(owners, 0, [], "unlink", t / "st" / "mine2")[0] == 0
    # Device nodes: root's (CAP_MKNOD), nobody else's.
    assert _as(owners, U1, [], "mknod", t / "od" / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))[0] == errno.EPERM
    e, s = _as(owners, 0, [], "mknod", t / "st" / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    assert e == 0 and os.lstat(t / "st" / "null").st_rdev == os.makedev(1, 3) and (int(s[13]), int(s[14])) == (1, 3)
    # mkfile: the caller's new file, given to the agent's own uid to open.
    assert _as(owners, U1, [], "mkfile", t / "od" / "nf")[0] == 0
    st = os.lstat(t / "od" / "nf")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), U1, 0o600)
    assert _as(owners, U1, [], "mkfile", t / "od" / "nf")[0] == errno.EEXIST
    # Ids beyond the sandbox's, nesting, other operations: refused.
    assert _as(owners, 65536, [], "mkdir", t / "st" / "q", 0o755)[0] == errno.EINVAL
    assert _as(owners, U1, [70000], "mkdir", t / "st" / "q", 0o755)[0] == errno.EINVAL
    assert owners.op("as", U1, "x", "", "mkdir", t / "st" / "q", 0o755)[0] == errno.EINVAL
    assert _as(owners, U1, [], "as", 0, 0, "", "mkdir", t / "st" / "q")[0] == errno.EINVAL
    assert _as(owners, U1, [], "pchown", t / "st" / "rootf", U1, U1)[0] == errno.EINVAL
    assert owners.op("mkdir", t / "st" / "q", 0o755)[0] == errno.ENOSYS
    assert owners.op("unlink", t / "st" / "rootf")[0] == errno.ENOSYS
    assert not os.path.lexists(t / "st" / "q")
    assert _fs_ids(owners.p.pid) == before


def test_sandbox_agent_never_acts_as_a_caller(agent, tree):
    """The sandbox's own agent (no "files": it runs the sandbox's commands)
    takes no "as" request and no mkfile; its directory operations (for
    paths SFTP cannot carry) are its own, the SSH login's, as SFTP's."""
    inside, _ = tree
    assert agent.op("as", 0, 0, "", "mkdir", inside / "q", 0o755)[0] == errno.ENOSYS
    assert agent.op("as", 0, 0, "", "open", inside / "d" / "f", os.O_RDONLY, 0)[0] == errno.ENOSYS
    assert agent.op("mkfile", inside / "q")[0] == errno.ENOSYS
    assert not os.path.lexists(inside / "q")
    e, st = agent.op("mkdir", inside / "q", 0o750)
    assert e == 0 and int(st[1]) == os.geteuid() and int(st[3]) == stat.S_IFDIR | 0o750
    assert agent.op("unlink", inside / "d" / "f")[0] == 0
    assert not os.path.exists(inside / "d" / "f")


def test_link(agent, tree):
    """link (root/'s link, one round trip with the new name's stat): the
    sandbox's agent makes it with its own rights, as SFTP's hardlink would;
    neither path is walked through a symlink, a symlink at the old name is
    linked itself (not its target), and the owners' agent takes it only
    "as" a caller."""
    inside, host = tree
    before = host_state(host)
    f = inside / "d" / "f"
    e, s = agent.op("link", f, inside / "d" / "g")
    assert e == 0 and int(s[0]) == 2 == os.stat(f).st_nlink
    assert os.path.samefile(f, inside / "d" / "g")
    assert agent.op("link", f, inside / "d" / "g")[0] == errno.EEXIST
    assert agent.op("link", inside / "d" / "missing", inside / "d" / "h")[0] == errno.ENOENT
    (inside / "sw").symlink_to(host)
    assert agent.op("link", inside / "sw" / "f", inside / "d" / "stolen")[0] in (errno.ENOTDIR, errno.ELOOP)
    assert agent.op("link", f, inside / "sw" / "planted")[0] in (errno.ENOTDIR, errno.ELOOP)
    (inside / "evil").symlink_to(host / "f")
    e, s = agent.op("link", inside / "evil", inside / "evil2")
    assert e == 0 and stat.S_ISLNK(int(s[3])) and os.readlink(inside / "evil2") == str(host / "f")
    assert host_state(host) == before
    assert not os.path.lexists(inside / "d" / "stolen") and not os.path.lexists(host / "planted")
    owners = Agent(files=True)
    try:
        assert owners.op("link", f, inside / "d" / "o")[0] == errno.ENOSYS
        assert not os.path.lexists(inside / "d" / "o")
    finally:
        owners.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the agent takes other uids' ids (CAP_SETUID, CAP_SETGID)")
def test_callers_operations_never_follow_symlinks(owners, shared, tmp_path):
    """A symlink on the path of a caller's operation, planted or swapped in
    for a directory mid-operation (RENAME_EXCHANGE in a loop), is never
    walked through: the host directory it points to, writable by all,
    never changes, as root or as another uid."""
    host = Path(str(shared) + ".host")
    host.mkdir()
    try:
        host.chmod(0o777)
        (host / "f").write_text("HOST\n")
        os.chmod(host / "f", 0o666)
        before = host_state(host)
        d = shared / "st" / "d"
        d.mkdir()
        d.chmod(0o777)
        (d / "f").write_text("IN")
        (shared / "st" / "sw").symlink_to(host)
        for uid in (0, U1):
            for args in (("mkdir", shared / "st" / "sw" / "x", 0o777), ("mkfile", shared / "st" / "sw" / "x"),
                         ("mknod", shared / "st" / "sw" / "p", stat.S_IFIFO | 0o666, 0),
                         ("symlink", shared / "st" / "sw" / "s", "t"), ("unlink", shared / "st" / "sw" / "f"),
                         ("rename", shared / "st" / "sw" / "f", d / "g", 0),
                         ("rename", d / "f", shared / "st" / "sw" / "g", 0),
                         ("link", d / "f", shared / "st" / "sw" / "h"), ("rmdir", shared / "st" / "sw" / "x")):
                assert _as(owners, uid, [], *args)[0] in (errno.ENOTDIR, errno.ELOOP), (uid, args)
        assert host_state(host) == before
        seen = set()
        n = 0
        with exchanging(d, shared / "st" / "sw") as running:
            while running():
                uid = (0, U1)[n % 2]
                for name in ("d", "sw"):
                    base = shared / "st" / name
                    for args in (("mkdir", base / f"m{n}", 0o777), ("mkfile", base / f"k{n}"),
                                 ("symlink", base / f"s{n}", "t"), ("rename", base / f"m{n}", base / f"n{n}", 0),
                                 ("link", base / f"k{n}", base / f"l{n}"), ("unlink", base / "f"),
                                 ("rmdir", base / f"n{n}")):
                        seen.add(_as(owners, uid, [], *args)[0])
                    n += 1
        assert 0 in seen
        assert seen <= {0, errno.ENOTDIR, errno.ELOOP, errno.ENOENT, errno.EEXIST}
        assert host_state(host) == before
    finally:
        import shutil
        shutil.rmtree(host)


# ---- open files (handles) and long paths ----------------------------------------

def _deep(top, total):
    """A chain of 100-byte directories under top whose absolute path passes
    `total` bytes (made by descriptor: the kernel refuses such whole
    paths); its path."""
    fd = os.open(top, os.O_DIRECTORY)
    p = str(top)
    try:
        i = 0
        while len(p) < total:
            name = f"{i:03d}" + "d" * 97
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
            p += "/" + name
            i += 1
    finally:
        os.close(fd)
    return Path(p)


def test_long_paths(agent, tree):
    """Paths of PATH_MAX and more (which SFTP cannot carry) are walked one
    name at a time: mkdir, open, stat, list, symlink, readlink, rename,
    link, chmod, unlink and rmdir work there; a name of 256 bytes is
    ENAMETOOLONG, as the kernel says."""
    inside, _ = tree
    deep = _deep(inside, 4200)
    assert len(str(deep)) >= 4096
    e, st = agent.op("mkdir", deep / "sub", 0o705)
    assert e == 0 and int(st[3]) == stat.S_IFDIR | 0o705
    e, st = agent.op("open", deep / "f", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o642)
    assert e == 0 and int(st[3]) == stat.S_IFREG | 0o642
    h = st[15]
    assert agent.op("hwrite", h, 0, b"LONG\0PATH")[0] == 0
    e, got = agent.op("hread", h, 0, 100)
    assert e == 0 and b"\0".join(got) == b"LONG\0PATH"
    assert agent.op("hclose", h)[0] == 0
    assert agent.op("symlink", deep / "l", "f")[0] == 0
    e, t = agent.op("readlink", deep / "l")
    assert (e, t) == (0, [b"f"])
    assert agent.op("link", deep / "f", deep / "g")[0] == 0
    e, st = agent.op("stat", deep / "g")
    assert e == 0 and int(st[0]) == 2 and int(st[4]) == 9
    assert agent.op("rename", deep / "g", deep / "sub" / "g", 0)[0] == 0
    assert agent.op("chmod", deep / "f", 0o600)[0] == 0
    e, ls = agent.op("list", deep)
    assert e == 0 and int(ls[0]) == 3
    names = {ls[1 + 16 * i].decode(): ls[2 + 16 * i:17 + 16 * i] for i in range(3)}
    assert set(names) == {"f", "l", "sub"}
    assert int(names["f"][3]) == stat.S_IFREG | 0o600 and int(names["l"][3]) & 0o170000 == stat.S_IFLNK
    assert agent.op("mkdir", deep / ("n" * 256), 0o755)[0] == errno.ENAMETOOLONG
    assert agent.op("open", deep / ("n" * 256), os.O_CREAT | os.O_WRONLY, 0o644)[0] == errno.ENAMETOOLONG
    for args in (("unlink", deep / "sub" / "g"), ("unlink", deep / "l"), ("unlink", deep / "f"), ("rmdir", deep / "sub")):
        assert agent.op(*args)[0] == 0, args
    assert agent.op("stat", deep / "f")[0] == errno.ENOENT
    assert agent.op("list", deep) == (0, [b"0"])


def _fds(pid):
    return set(os.listdir(f"/proc/{pid}/fd"))


def test_handles(agent, tree):
    """open keeps a regular file open (never through a symlink, never a
    FIFO or a directory) and its handle reads, writes, truncates, syncs and
    stats that descriptor alone; a closed or unknown handle is EBADF; at
    most 256 are open (EMFILE); they go when the agent ends."""
    inside, host = tree
    fds0 = _fds(agent.p.pid)
    e, st = agent.op("open", inside / "d" / "f", os.O_RDWR, 0)
    assert e == 0 and int(st[4]) == 7
    h = st[15]
    assert len(_fds(agent.p.pid)) == len(fds0) + 1
    assert agent.op("hread", h, 0, 3) == (0, [b"INS"])
    assert agent.op("hwrite", h, 7, b"MORE") == (0, [b"4"])
    assert agent.op("htrunc", h, 9)[0] == 0
    assert agent.op("hsync", h)[0] == 0
    e, st = agent.op("hstat", h)
    assert e == 0 and int(st[4]) == 9
    # renamed away: the descriptor still names it
    os.rename(inside / "d" / "f", inside / "d" / "moved")
    assert agent.op("hread", h, 0, 100) == (0, [b"INSIDE\nMO"])
    assert agent.op("hclose", h)[0] == 0
    assert agent.op("hread", h, 0, 1)[0] == errno.EBADF
    assert agent.op("hclose", h)[0] == errno.EBADF
    assert agent.op("hread", "nosuch", 0, 1)[0] == errno.EBADF
    assert _fds(agent.p.pid) == fds0
    # never through a symlink, never a FIFO (it would block), a directory
    (inside / "l").symlink_to(host / "f")
    assert agent.op("open", inside / "l", os.O_RDONLY, 0)[0] == errno.ELOOP
    assert agent.op("open", inside / "l", os.O_WRONLY | os.O_TRUNC, 0)[0] == errno.ELOOP
    os.mkfifo(inside / "p")
    assert agent.op("open", inside / "p", os.O_RDONLY, 0)[0] == errno.ENXIO
    assert agent.op("open", inside / "d", os.O_RDONLY, 0)[0] == errno.EISDIR
    # the access mode is the kernel's: a read-only handle does not write
    e, st = agent.op("open", inside / "d" / "moved", os.O_RDONLY, 0)
    assert agent.op("hwrite", st[15], 0, b"X")[0] == errno.EBADF
    # bounded
    hs = [st[15]]
    while True:
        e, st = agent.op("open", inside / "d" / "moved", os.O_RDONLY, 0)
        if e:
            break
        hs.append(st[15])
    assert e == errno.EMFILE and len(hs) == 256
    assert agent.op("hclose", hs.pop())[0] == 0
    assert agent.op("open", inside / "d" / "moved", os.O_RDONLY, 0)[0] == 0
    assert (host / "f").read_text() == "HOST\n"
    pid = agent.p.pid
    agent.close()
    assert not os.path.exists(f"/proc/{pid}")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the agent takes other uids' ids (CAP_SETUID, CAP_SETGID)")
def test_handles_as_the_caller(owners, shared):
    """The owners' agent opens "as" a caller with the caller's rights (its
    own 0600 file: yes; another's: EACCES); the handle then serves that uid
    and gid alone (EBADF for any other, ENOSYS without "as"), with the
    rights it was opened with, so it never reads what its opener cannot."""
    t = shared
    f = t / "od" / "secret"
    f.write_text("U1 ONLY")
    os.chown(f, U1, U1)
    f.chmod(0o600)
    assert _as(owners, U2, [], "open", f, os.O_RDONLY, 0)[0] == errno.EACCES
    assert _as(owners, U2, [U1], "open", f, os.O_RDONLY, 0)[0] == errno.EACCES
    e, st = _as(owners, U1, [], "open", f, os.O_RDWR, 0)
    assert e == 0
    h = st[15]
    assert _as(owners, U1, [], "hread", h, 0, 100) == (0, [b"U1 ONLY"])
    assert _as(owners, U2, [], "hread", h, 0, 100)[0] == errno.EBADF
    assert owners.op("as", U1, U2, "", "hread", h, 0, 100)[0] == errno.EBADF
    assert _as(owners, 0, [], "hread", h, 0, 100)[0] == errno.EBADF
    assert owners.op("hread", h, 0, 100)[0] == errno.ENOSYS
    assert owners.op("open", f, os.O_RDONLY, 0)[0] == errno.ENOSYS
    assert _as(owners, U1, [], "hwrite", h, 0, b"u1")[0] == 0
    assert f.read_text() == "u1 ONLY"
    # a write as U1 clears the set-uid bit, as the kernel does for a caller
    # without CAP_FSETID (the agent has it)
    f.chmod(0o4700)
    assert _as(owners, U1, [], "hwrite", h, 0, b"U1")[0] == 0
    assert not os.stat(f).st_mode & stat.S_ISUID
    # created as the caller: its owner, the exact mode
    e, st = _as(owners, U1, [], "open", t / "od" / "new", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640)
    assert e == 0 and (int(st[1]), int(st[2]), int(st[3])) == (U1, U1, stat.S_IFREG | 0o640)
    assert _as(owners, U2, [], "open", t / "od" / "new2", os.O_CREAT | os.O_WRONLY, 0o640)[0] == errno.EACCES
    assert _as(owners, U1, [], "hclose", h)[0] == 0
    assert _as(owners, U1, [], "hread", h, 0, 1)[0] == errno.EBADF


def test_open_and_list_never_follow_a_swapped_directory(agent, tree):
    """A directory of a long path swapped for a symlink to a host directory
    while the agent opens, lists and makes names beneath it: every
    operation lands inside or fails, the host directory never changes."""
    inside, host = tree
    before = host_state(host)
    deep = _deep(inside / "d", 4200)
    e, st = agent.op("open", deep / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    assert e == 0 and agent.op("hclose", st[15])[0] == 0
    rel = deep.relative_to(inside / "d")
    # the same long path in the host directory, with a file a followed
    # symlink would reach
    hdeep = _deep(host, 4200 - len(str(inside / "d")) + len(str(host)))
    assert hdeep.relative_to(host) == rel
    hf = _at(host, rel / "f", os.O_CREAT | os.O_WRONLY)
    os.write(hf, b"HOST")
    os.close(hf)
    before = host_state(host)
    (inside / "sw").symlink_to(host)
    seen = set()
    n = 0
    with exchanging(inside / "d", inside / "sw") as running:
        while running():
            for name in ("d", "sw"):
                base = inside / name
                for path, fl in ((base / rel / "f", os.O_WRONLY | os.O_TRUNC), (base / "f", os.O_WRONLY | os.O_TRUNC),
                                 (base / f"o{n}", os.O_WRONLY | os.O_CREAT)):
                    e, st = agent.op("open", path, fl, 0o644)
                    seen.add(e)
                    if e == 0:
                        assert agent.op("hwrite", st[15], 0, b"EVIL")[0] == 0
                        assert agent.op("hclose", st[15])[0] == 0
                seen.add(agent.op("list", base)[0])
                seen.add(agent.op("mkdir", base / rel / f"m{n}", 0o755)[0])
                seen.add(agent.op("unlink", base / "f")[0])
                n += 1
    assert 0 in seen
    assert seen <= {0, errno.ENOTDIR, errno.ELOOP, errno.ENOENT, errno.EEXIST, errno.EBADF}
    assert host_state(host) == before
    hf = _at(host, rel / "f", os.O_RDONLY)
    assert os.read(hf, 100) == b"HOST"
    os.close(hf)
    hd = _at(host, rel, os.O_RDONLY | os.O_DIRECTORY)
    assert os.listdir(hd) == ["f"]
    os.close(hd)


def _at(top, rel, flags):
    """os.open of top/rel one name at a time (a whole path past PATH_MAX
    is refused)."""
    fd = os.open(top, os.O_DIRECTORY)
    parts = rel.parts
    for c in parts[:-1]:
        nfd = os.open(c, os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        os.close(fd)
        fd = nfd
    try:
        return os.open(parts[-1], flags | os.O_NOFOLLOW, 0o644, dir_fd=fd)
    finally:
        os.close(fd)


def test_exchange_never_follows_a_symlink(agent, tree):
    """rename with RENAME_EXCHANGE (root/'s renameat2 on ssh) swaps two
    names inside; through a symlink to a host directory on either path it
    fails, and the host directory is untouched."""
    inside, host = tree
    before = host_state(host)
    (inside / "a").write_text("A")
    (inside / "sw").symlink_to(host)
    assert agent.op("rename", inside / "a", inside / "d", 2)[0] == 0
    assert (inside / "a" / "f").read_text() == "INSIDE\n" and (inside / "d").read_text() == "A"
    assert agent.op("rename", inside / "d", inside / "sw" / "f", 2)[0] in (errno.ENOTDIR, errno.ELOOP)
    assert agent.op("rename", inside / "sw" / "f", inside / "d", 2)[0] in (errno.ENOTDIR, errno.ELOOP)
    assert agent.op("rename", inside / "d", inside / "sw", 2)[0] == 0   # the link itself, never its target
    assert os.readlink(inside / "d") == str(host) and (inside / "sw").read_text() == "A"
    assert host_state(host) == before
