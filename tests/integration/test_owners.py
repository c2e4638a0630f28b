"""test_owners.py - who owns what through MOUNT/NAME/root/ (fs/root/pass.c), as
docs/rootfs.md "Who owns what" says.

Under root the sandbox runs in a user namespace mapped to a subordinate
range (core/lib/idmap.h): root/ numbers the range as the sandbox does, gives new
entries to the caller's id as the sandbox sees it, maps chown into the range
(EINVAL outside), shows host ids the sandbox does not map as they are (so
that -o allow_other's permission checks cannot take host nobody for their
owner), and lets host root make device nodes, which the sandbox's nodev
mounts leave inert. Under an ordinary user root/ shows the host's numbers.
The range tests run as root with -o allow_other; other callers act through
setpriv.
"""

import errno
import os
import pathlib
import shutil
import stat
import subprocess
import tempfile

import pytest

from conftest import IS_ROOT, LOCAL, ctl, sandbox_run, wait_settled

pytestmark = pytest.mark.skipif(not LOCAL, reason="root/ of the local provider (fs/root/pass.c); ssh's root/ is sftpfs")

NOBODY = 65534
OUTSIDE = 70000      # past the 65536 ids a sandbox maps


def run(sbdir, cmd):
    code, out = sandbox_run(sbdir, cmd)
    out = out.decode(errors="replace")
    assert code == 0, f"{cmd}: {code} {out}"
    return out.strip()


def as_user(uid, *cmd):
    """Runs cmd as host uid:gid uid with no other groups; returns the result."""
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *cmd],
                          capture_output=True, text=True)


def inside_map(sbdir):
    """(uid base, gid base, count) of the sandbox's user namespace."""
    u = run(sbdir, "cat /proc/self/uid_map").split()
    g = run(sbdir, "cat /proc/self/gid_map").split()
    return int(u[1]), int(g[1]), int(u[2])


@pytest.fixture
def open_dir():
    """A directory others may enter, for the state directory (the range's
    bubblewrap must reach it) and the mount (other callers use it). Not
    under tmp_path: pytest makes /tmp/pytest-of-USER 0700 again whenever a
    session starts."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="seerfs-owners-"))
    os.chmod(d, 0o711)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def ranged(open_dir, seerfs_factory):
    """(mount, sandbox dir, uid base, gid base) of a root seerfs with
    -o allow_other whose sandbox maps a range."""
    if not IS_ROOT:
        pytest.skip("the id range is what a root seerfs gives its sandboxes")
    m = seerfs_factory(state=open_dir / "state", mountpoint=open_dir / "mnt", args=["-o", "allow_other"])
    d = m.sandbox("own", "{}")
    ubase, gbase, count = inside_map(d)
    if count != 65536:
        pytest.skip(f"the sandbox maps {count} id(s) from {ubase}, not a range of 65536 "
                    "(core/providers/local/local.c without the root id range)")
    yield m, d, ubase, gbase
    if wait_settled(d) == "running":
        ctl(d, "terminate")
        wait_settled(d)


def host_path(m, d, rel):
    """Where a sandbox's /workspace/REL is on the host (its writable tree)."""
    return m.state / "sandboxes" / d.name / "fs" / "upper" / "workspace" / rel


def shared_dir(d, name):
    """root/workspace/NAME, mode 1777: every caller may create in it."""
    p = d / "root" / "workspace" / name
    p.mkdir()
    os.chmod(p, 0o1777)
    return p


def owners(path):
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def test_root_creates_as_sandbox_root(ranged):
    m, d, ub, gb = ranged
    f = d / "root" / "workspace" / "byroot"
    f.write_text("x")
    (d / "root" / "workspace" / "dirbyroot").mkdir()
    os.symlink("byroot", d / "root" / "workspace" / "linkbyroot")
    for name in ("byroot", "dirbyroot", "linkbyroot"):
        assert owners(d / "root" / "workspace" / name) == (0, 0), name
        assert owners(host_path(m, d, name)) == (ub, gb), name
        assert run(d, f"stat -c %u:%g /workspace/{name}") == "0:0", name
    # root/ itself, the sandbox's "/".
    assert owners(d / "root") == (0, 0)
    assert run(d, "stat -c %u:%g /") == "0:0"
    # The listing (READDIRPLUS) shows the same.
    ents = {e.name: e for e in os.scandir(d / "root" / "workspace")}
    assert (ents["byroot"].stat(follow_symlinks=False).st_uid, ents["dirbyroot"].stat().st_gid) == (0, 0)


def test_other_caller_owns_what_it_creates(ranged):
    m, d, ub, gb = ranged
    sh = shared_dir(d, "shared")
    for cmd, name in ((["touch"], "f"), (["mkdir"], "dir"), (["mkfifo"], "fifo"), (["ln", "-s", "f"], "link")):
        r = as_user(NOBODY, *cmd, str(sh / name))
        assert r.returncode == 0, (cmd, r.stderr)
        assert owners(sh / name) == (NOBODY, NOBODY), name
        assert owners(host_path(m, d, "shared/" + name)) == (ub + NOBODY, gb + NOBODY), name
        assert run(d, f"stat -c %u:%g /workspace/shared/{name}") == f"{NOBODY}:{NOBODY}", name
    # Another uid of the range: uid 1234 (group 1234).
    r = as_user(1234, "touch", str(sh / "u1234"))
    assert r.returncode == 0, r.stderr
    assert owners(sh / "u1234") == (1234, 1234)
    assert owners(host_path(m, d, "shared/u1234")) == (ub + 1234, gb + 1234)


def test_setgid_directory_keeps_its_group(ranged):
    m, d, ub, gb = ranged
    sh = shared_dir(d, "sg")
    os.chown(sh, -1, 4321)
    os.chmod(sh, 0o3777)
    r = as_user(NOBODY, "touch", str(sh / "f"))
    assert r.returncode == 0, r.stderr
    assert owners(sh / "f") == (NOBODY, 4321)
    assert owners(host_path(m, d, "sg/f")) == (ub + NOBODY, gb + 4321)
    # A setuid file made by root keeps the bit its create asked for.
    fd = os.open(sh / "suid", os.O_CREAT | os.O_WRONLY, 0o4755)
    os.close(fd)
    assert stat.S_IMODE(os.stat(sh / "suid").st_mode) & 0o4000


def test_create_on_the_sandboxs_own_tmpfs(ranged):
    """/dev/shm is a tmpfs of the sandbox's user namespace, which cannot
    store host root as an owner: creates there are made as the caller."""
    m, d, ub, gb = ranged
    shm = d / "root" / "dev" / "shm"
    (shm / "byroot").write_text("x")
    (shm / "dirbyroot").mkdir()
    assert owners(shm / "byroot") == (0, 0) and owners(shm / "dirbyroot") == (0, 0)
    assert run(d, "stat -c %u:%g /dev/shm/byroot /dev/shm/dirbyroot").split() == ["0:0", "0:0"]
    os.chmod(shm, 0o1777)      # bubblewrap makes it 0755
    r = as_user(NOBODY, "touch", str(shm / "bynobody"))
    assert r.returncode == 0, r.stderr
    assert owners(shm / "bynobody") == (NOBODY, NOBODY)
    assert run(d, "stat -c %u:%g /dev/shm/bynobody") == f"{NOBODY}:{NOBODY}"


def test_caller_outside_the_range_cannot_create(ranged):
    m, d, ub, gb = ranged
    sh = shared_dir(d, "shared")
    r = as_user(OUTSIDE, "touch", str(sh / "f"))
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, r.stderr
    r = as_user(OUTSIDE, "mkdir", str(sh / "dir"))
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, r.stderr
    assert not os.path.lexists(sh / "f") and not os.path.lexists(sh / "dir")
    assert not os.path.lexists(host_path(m, d, "shared/f"))


def test_chown_maps_into_the_range(ranged):
    m, d, ub, gb = ranged
    f = d / "root" / "workspace" / "c"
    f.write_text("x")
    os.chown(f, 1234, 2345)
    assert owners(f) == (1234, 2345)
    assert owners(host_path(m, d, "c")) == (ub + 1234, gb + 2345)
    assert run(d, "stat -c %u:%g /workspace/c") == "1234:2345"
    os.chown(f, -1, 77)
    assert owners(f) == (1234, 77)
    os.chown(f, 0, 0)
    assert owners(host_path(m, d, "c")) == (ub, gb)
    for uid, gid in ((OUTSIDE, -1), (-1, OUTSIDE), (ub, -1)):
        with pytest.raises(OSError) as e:
            os.chown(f, uid, gid)
        assert e.value.errno == errno.EINVAL, (uid, gid)
    assert owners(host_path(m, d, "c")) == (ub, gb)
    # Symlinks themselves.
    os.symlink("c", d / "root" / "workspace" / "cl")
    os.chown(d / "root" / "workspace" / "cl", 55, 66, follow_symlinks=False)
    assert owners(d / "root" / "workspace" / "cl") == (55, 66)
    assert owners(host_path(m, d, "c")) == (ub, gb)


def test_only_root_gives_files_away(ranged):
    m, d, ub, gb = ranged
    sh = shared_dir(d, "shared")
    assert as_user(NOBODY, "touch", str(sh / "mine")).returncode == 0
    r = as_user(NOBODY, "chown", "1234", str(sh / "mine"))
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, r.stderr
    assert owners(host_path(m, d, "shared/mine")) == (ub + NOBODY, gb + NOBODY)
    # Its own group is allowed (the kernel's rule for owners).
    r = as_user(NOBODY, "chgrp", str(NOBODY), str(sh / "mine"))
    assert r.returncode == 0, r.stderr


def test_unmapped_host_owner_is_not_nobody(ranged):
    """A file of a host id the sandbox does not map shows its host number
    through root/ (nobody inside), so host nobody with -o allow_other does not
    pass for its owner: it cannot read a 0600 file of host uid 70000."""
    m, d, ub, gb = ranged
    hp = host_path(m, d, "hostfile")
    hp.write_text("host secret\n")
    os.chown(hp, OUTSIDE, OUTSIDE)
    os.chmod(hp, 0o600)
    p = d / "root" / "workspace" / "hostfile"
    assert owners(p) == (OUTSIDE, OUTSIDE)
    assert run(d, "stat -c %u:%g /workspace/hostfile") == f"{NOBODY}:{NOBODY}"
    r = as_user(NOBODY, "cat", str(p))
    assert r.returncode != 0 and "Permission denied" in r.stderr, (r.stdout, r.stderr)
    assert "host secret" not in r.stdout
    r = as_user(NOBODY, "chmod", "666", str(p))
    assert r.returncode != 0, r.stderr
    assert stat.S_IMODE(hp.stat().st_mode) == 0o600
    # The positive twin: its host owner may.
    r = as_user(OUTSIDE, "cat", str(p))
    assert r.returncode == 0 and r.stdout == "host secret\n", r.stderr
    # /usr is the host's: host root's numbers, nobody inside.
    assert owners(d / "root" / "usr" / "bin") == owners("/usr/bin")
    assert run(d, "stat -c %u /usr/bin") == str(NOBODY)


def test_device_nodes_made_by_root_are_inert(ranged):
    m, d, ub, gb = ranged
    node = d / "root" / "workspace" / "null"
    os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    st = os.lstat(node)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert owners(node) == (0, 0)
    hst = os.lstat(host_path(m, d, "null"))
    assert stat.S_ISCHR(hst.st_mode) and (hst.st_uid, hst.st_gid) == (ub, gb)
    assert run(d, "stat -c %F:%t,%T /workspace/null") == "character special file:1,3"
    # Inside: the writable tree is mounted nodev; opening it is refused.
    code, out = sandbox_run(d, "echo x > /workspace/null && echo OPENED; cat /workspace/null && echo READ")
    out = out.decode(errors="replace")
    assert "OPENED" not in out and "READ" not in out, out
    assert "Permission denied" in out, out
    # Through root/ on the host the FUSE mount is nodev as well.
    with pytest.raises(OSError) as e:
        open(node, "rb").close()
    assert e.value.errno in (errno.EACCES, errno.ENXIO, errno.EPERM), e.value
    os.mknod(d / "root" / "workspace" / "blk", stat.S_IFBLK | 0o600, os.makedev(7, 0))
    assert stat.S_ISBLK(os.lstat(d / "root" / "workspace" / "blk").st_mode)
    # Callers other than host root may not make them.
    sh = shared_dir(d, "shared")
    r = as_user(NOBODY, "mknod", str(sh / "n"), "c", "1", "3")
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, r.stderr
    assert not os.path.lexists(sh / "n")


def test_snapshot_view_numbers_like_root(ranged):
    m, d, ub, gb = ranged
    f = d / "root" / "workspace" / "snapme"
    f.write_text("private\n")
    os.chmod(f, 0o600)
    os.chown(f, 1234, 2345)
    ctl(d, "snapshot own-snap")
    v = m.path / "snapshots" / "own-snap" / "root" / "workspace" / "snapme"
    assert owners(v) == (1234, 2345)
    assert v.read_text() == "private\n"


@pytest.mark.skipif(IS_ROOT, reason="an ordinary user's mount: runs in the suite's pass as user seer "
                    "(SEERFS_TEST_USER=seer)")
def test_user_mount_shows_host_numbers(sandbox):
    """Under an ordinary user the sandbox maps only that user (its root):
    root/ shows the host's numbers and a chown to another id is refused."""
    assert inside_map(sandbox) == (os.getuid(), os.getgid(), 1)
    f = sandbox / "root" / "workspace" / "mine"
    f.write_text("x")
    assert owners(f) == (os.getuid(), os.getgid())
    assert run(sandbox, "stat -c %u:%g /workspace/mine") == "0:0"
    assert owners(sandbox / "root" / "usr" / "bin") == owners("/usr/bin")
    with pytest.raises(OSError) as e:
        os.chown(f, 4242, -1)
    assert e.value.errno == errno.EPERM
    with pytest.raises(OSError) as e:
        os.mknod(sandbox / "root" / "workspace" / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    assert e.value.errno == errno.EPERM
