"""test_sftp_latency.py - root/ over SFTP at a real-world distance (issue #19):
the round-trip savings of fs/root/sftpfs.c and core/lib/sftp.c (listings in
two round trips and read ahead a level, small files read whole in batches,
deferred mode and times sent behind the writes) and what they must not
cost: coherence, order, and write errors that reach close or fsync.

Through tests/bench/delay_proxy.py (20 ms round trip, 10 ms each way) in
front of a real OpenSSH sshd and its sftp-server, with the standalone
harness tests/drivers/sftpmount.c (see test_sftpfs.py: $SEERFS_BUILD picks
the build, build-asan/ the sanitized one).  Round trips are the proxy's
client-to-server bursts.  Needs root (tmpfs for a full disk), sshd.
"""

import contextlib
import errno
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import sshd_fixture  # noqa: E402
from sshd_fixture import SshdFixture  # noqa: E402
from test_sftpfs import Mount, errno_of  # noqa: E402
from conftest import sandbox_run  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
from proxy_client import DelayProxy  # noqa: E402



class Proxy(DelayProxy):
    """delay_proxy.py in front of the sshd; bursts() is its client-to-server
    burst count so far."""

    def __init__(self, base, target_port, delay_ms=10):
        super().__init__(base, target_port, delay_ms)

    def bursts(self):
        return self.counters()["up"]["bursts"]  # client to server


class Via:
    """The sshd as seen through the proxy: what Mount needs."""

    def __init__(self, sshd, proxy, base):
        self.host, self.port, self.user = sshd.host, proxy.port, sshd.user
        self.identity_file = sshd.identity_file
        self.known_hosts = os.path.join(base, "known_hosts.proxy")
        with open(sshd.host_key + ".pub") as f:
            keytype, key = f.read().split()[:2]
        with open(self.known_hosts, "w") as f:
            f.write(f"[{sshd.host}]:{proxy.port} {keytype} {key}\n")


class Setup:
    """sshd + proxy + harness mount of a fresh remote directory."""

    def __init__(self, timeout="20", tmpfs_size=None, sftp_server=None):
        if not os.path.exists("/dev/fuse"):
            pytest.skip("no /dev/fuse")
        self.tmp = tempfile.mkdtemp(prefix="sftplat-")
        self.remote = os.path.join(self.tmp, "remote")
        self.mnt = os.path.join(self.tmp, "mnt")
        os.makedirs(self.remote)
        os.makedirs(self.mnt)
        self.tmpfs = False
        self.sshd = self.proxy = self.m = None
        saved = sshd_fixture.SFTP_SERVER
        try:
            if tmpfs_size:
                if os.getuid() != 0:
                    pytest.skip("a small tmpfs (a full remote disk) needs root")
                subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={tmpfs_size}", "tmpfs", self.remote], check=True)
                self.tmpfs = True
            if sftp_server:
                sshd_fixture.SFTP_SERVER = sftp_server
            self.sshd = SshdFixture(sftp_server="sftp-server").start()
            self.proxy = Proxy(self.tmp, self.sshd.port)
            self.m = Mount(Via(self.sshd, self.proxy, self.tmp), self.remote, self.mnt, timeout=timeout)
        except BaseException:
            self.close()
            raise
        finally:
            sshd_fixture.SFTP_SERVER = saved

    def R(self, *p):
        return os.path.join(self.remote, *p)

    def M(self, *p):
        return os.path.join(self.mnt, *p)

    def close(self):
        died = None
        log = ""
        if self.m:
            died = self.m.proc.poll()
            log = self.m.log_text()
            self.m.close()
        if self.proxy:
            self.proxy.kill()
        if self.sshd:
            self.sshd.stop()
        if self.tmpfs:
            subprocess.run(["umount", "-l", self.remote], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        assert "ERROR: AddressSanitizer" not in log and "runtime error:" not in log, log
        return died, log


@pytest.fixture
def lat():
    s = Setup()
    yield s
    died, log = s.close()
    assert died is None, f"sftpmount ended (status {died}):\n{log}"


def make_tree(top, ndirs, nfiles):
    for i in range(ndirs):
        d = os.path.join(top, f"d{i:02d}", "sub")
        os.makedirs(d)
        for j in range(nfiles):
            with open(os.path.join(d, f"f{j}.txt"), "w") as f:
                f.write(f"dir {i} file {j}\n" * (j + 1))


def walk_count(top):
    def fail(e):
        raise e
    n = 0
    for _dirpath, dirs, files in os.walk(top, onerror=fail):
        n += len(dirs) + len(files)
    return n


def test_walk_and_read_in_few_round_trips(lat):
    """A walk over 60 directories costs a few round trips per level, not
    4 per directory (OPENDIR, READDIR, READDIR, CLOSE each waited for);
    reading its 90 small files costs about 2 per directory, not 3 per file;
    and what is read is what the host has."""
    make_tree(lat.R("t"), 30, 3)
    lat.m.invalidate()
    b0 = lat.proxy.bursts()
    assert walk_count(lat.M("t")) == 30 * 2 + 30 * 3
    walked = lat.proxy.bursts() - b0
    # before: 4 per directory, 244; now 2 per batch of listings read
    # ahead (8 here on a quiet machine); generous for a loaded one
    assert walked <= 24, walked
    b0 = lat.proxy.bursts()
    for i in range(30):
        for j in range(3):
            with open(lat.M("t", f"d{i:02d}", "sub", f"f{j}.txt")) as f:
                assert f.read() == f"dir {i} file {j}\n" * (j + 1)
    read = lat.proxy.bursts() - b0
    # before: 3 per file, 270; now 2 per directory (its files in one batch)
    assert read <= 80, read


def test_read_ahead_crosses_directories(lat):
    """A walk reading every small file (`grep -r`, depth first in listing
    order) has the files of the next directories read in the same batch
    as the first one's: a git object store's 256 fan-out directories of
    one or two files each cost 2 round trips per 32 files, not 2 per
    directory; what is read is what the host has, and a file changed
    through the mount after the batch is read as changed."""
    make_tree(lat.R("x"), 30, 3)
    lat.m.invalidate()
    assert walk_count(lat.M("x")) == 30 * 2 + 30 * 3
    b0 = lat.proxy.bursts()
    for i in range(30):
        for j in range(3):
            if (i, j) == (20, 1):
                # after the batch that read it: a write through the mount
                with open(lat.M("x", "d20", "sub", "f1.txt"), "w") as f:
                    f.write("rewritten\n")
                assert open(lat.M("x", "d20", "sub", "f1.txt")).read() == "rewritten\n"
                continue
            with open(lat.M("x", f"d{i:02d}", "sub", f"f{j}.txt")) as f:
                assert f.read() == f"dir {i} file {j}\n" * (j + 1), (i, j)
    read = lat.proxy.bursts() - b0
    # 90 files in 3 batches of 32 (2 round trips each), plus the write's
    # create; 60 when each directory's files were read apart
    assert read <= 24, read
    assert open(lat.R("x", "d20", "sub", "f1.txt")).read() == "rewritten\n"


def test_read_ahead_of_other_directories_follows_changes(lat):
    """Files read ahead before the kernel looked them up are not served
    once the tree changed through the mount (a rename over one of them by
    a file of the same size and mtime) or a job started (a change on the
    host)."""
    for d in ("a", "b", "c"):
        os.makedirs(lat.R("y", d))
        for name in ("f0", "f1"):
            with open(lat.R("y", d, name), "w") as f:
                f.write(f"{d}/{name}\n")
            os.utime(lat.R("y", d, name), (1700000000, 1700000000))
    lat.m.invalidate()
    assert walk_count(lat.M("y")) == 3 + 6
    # reads a's files and, ahead, b's and c's (no node names them yet)
    assert open(lat.M("y", "a", "f0")).read() == "a/f0\n"
    os.rename(lat.M("y", "b", "f1"), lat.M("y", "b", "f0"))
    assert open(lat.M("y", "b", "f0")).read() == "b/f1\n"
    assert not os.path.exists(lat.M("y", "b", "f1"))
    # rewritten in place through the mount, same size, times put back
    with open(lat.M("y", "c", "f0"), "r+") as f:
        f.write("C/F0\n")
    os.utime(lat.M("y", "c", "f0"), (1700000000, 1700000000))
    assert open(lat.M("y", "c", "f0")).read() == "C/F0\n"
    # read ahead again, then changed on the host and a job starts
    lat.m.invalidate()
    assert open(lat.M("y", "a", "f1")).read() == "a/f1\n"
    with open(lat.R("y", "c", "f1"), "w") as f:
        f.write("on the host\n")
    lat.m.invalidate()
    assert open(lat.M("y", "c", "f1")).read() == "on the host\n"
    assert open(lat.M("y", "c", "f0")).read() == "C/F0\n"


def test_big_directory_listed_whole(lat):
    """A directory of 2,500 names (25 READDIR answers of OpenSSH's 100)
    is listed whole, in rounds of more READDIRs at once, not one round
    trip per 100 names."""
    os.makedirs(lat.R("big"))
    for i in range(2500):
        open(lat.R("big", f"n{i:05d}"), "w").close()
    lat.m.invalidate()
    b0 = lat.proxy.bursts()
    names = os.listdir(lat.M("big"))
    took = lat.proxy.bursts() - b0
    assert sorted(names) == [f"n{i:05d}" for i in range(2500)]
    # OPENDIR, then rounds of 2, 4, 8, 16 READDIRs: 5 (25 one by one before)
    assert took <= 12, took


def test_read_ahead_stays_coherent(lat):
    """Listings and contents read ahead follow changes made through the
    mount at once, and changes on the host after the next job starts
    (invalidate), like everything cached."""
    make_tree(lat.R("c"), 3, 4)
    lat.m.invalidate()
    assert sorted(os.listdir(lat.M("c"))) == ["d00", "d01", "d02"]
    # read ahead: d01/sub's listing and the small files next to f0
    assert open(lat.M("c", "d01", "sub", "f0.txt")).read() == "dir 1 file 0\n"
    # through the mount: seen at once
    with open(lat.M("c", "d01", "sub", "f1.txt"), "w") as f:
        f.write("changed through the mount\n")
    assert open(lat.M("c", "d01", "sub", "f1.txt")).read() == "changed through the mount\n"
    with open(lat.M("c", "d02", "sub", "new.txt"), "w") as f:
        f.write("new\n")
    assert "new.txt" in os.listdir(lat.M("c", "d02", "sub"))
    os.unlink(lat.M("c", "d01", "sub", "f2.txt"))
    assert not os.path.exists(lat.M("c", "d01", "sub", "f2.txt"))
    assert open(lat.R("c", "d01", "sub", "f1.txt")).read() == "changed through the mount\n"
    # on the host (a job): seen after the invalidation its start makes
    with open(lat.R("c", "d01", "sub", "f3.txt"), "w") as f:
        f.write("changed on the host, longer than before\n")
    os.mkdir(lat.R("c", "d00", "sub", "hostdir"))
    with open(lat.R("c", "d00", "sub", "hostdir", "h.txt"), "w") as f:
        f.write("h\n")
    lat.m.invalidate()
    assert open(lat.M("c", "d01", "sub", "f3.txt")).read() == "changed on the host, longer than before\n"
    assert open(lat.M("c", "d00", "sub", "hostdir", "h.txt")).read() == "h\n"
    assert "hostdir" in os.listdir(lat.M("c", "d00", "sub"))


def test_order_kept_for_rename_over_and_unlink_after_create(lat):
    """Writes answered before they reach the host stay in order with the
    path operations after them: rename over an existing name, unlink of a
    file still being written, and a name made again after an unlink."""
    with open(lat.R("target"), "w") as f:
        f.write("old target\n")
    lat.m.invalidate()
    data = os.urandom(3 << 20)
    fd = os.open(lat.M("src"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.rename(lat.M("src"), lat.M("target"))  # writes possibly still in flight
    os.write(fd, b"tail")
    os.close(fd)
    with open(lat.R("target"), "rb") as f:
        assert f.read() == data + b"tail"
    assert not os.path.exists(lat.R("src"))
    assert open(lat.M("target"), "rb").read() == data + b"tail"
    # unlink while writing: nothing left on the host, close succeeds
    fd = os.open(lat.M("gone"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"x" * 100000)
    os.unlink(lat.M("gone"))
    os.write(fd, b"y" * 100000)
    os.close(fd)
    assert not os.path.exists(lat.R("gone"))
    assert not os.path.exists(lat.M("gone"))
    # made, removed and made again at once: the last one wins
    for i in range(5):
        with open(lat.M("again"), "w") as f:
            f.write(f"version {i}\n" * 1000)
        if i < 4:
            os.unlink(lat.M("again"))
    assert open(lat.R("again")).read() == "version 4\n" * 1000
    # tar's order: data, then mode and times, all by close
    with open(lat.M("stamped"), "w") as f:
        f.write("s" * 70000)
        os.utime(f.fileno(), (1000000000, 1000000000))
        os.fchmod(f.fileno(), 0o640)
    st = os.stat(lat.R("stamped"))
    assert (st.st_mtime, st.st_mode & 0o777, st.st_size) == (1000000000, 0o640, 70000)


def test_file_removed_on_the_host_mid_write(lat):
    """A file removed on the host while written through the mount: as on a
    local disk, the open handle keeps writing to the removed file; close
    reports no error it did not have, and nothing comes back to life."""
    fd = os.open(lat.M("victim"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"a" * (1 << 20))
    os.unlink(lat.R("victim"))
    os.write(fd, b"b" * (1 << 20))
    os.fsync(fd)
    os.close(fd)
    assert not os.path.exists(lat.R("victim"))


def test_deferred_write_failure_reaches_close_disk_full():
    """A full disk on the host: the writes were answered before the host
    refused them, so close (or fsync) reports ENOSPC, and the log names the
    sandbox and the file."""
    s = Setup(tmpfs_size="1m")
    try:
        fd = os.open(s.M("big"), os.O_WRONLY | os.O_CREAT, 0o644)
        early = 0
        try:
            for _ in range(24):
                os.write(fd, b"z" * (128 << 10))  # 3 MiB into 1 MiB
        except OSError as e:
            early = e.errno  # a later write may already see the error
        got = errno_of(os.fsync, fd)
        close_rc = errno_of(os.close, fd)
        assert errno.ENOSPC in (early, got, close_rc), (early, got, close_rc)
        assert got == errno.ENOSPC or close_rc == errno.ENOSPC or early == errno.ENOSPC
        # a second file: the error is reported at close when nothing else did
        fd = os.open(s.M("big2"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"q" * (512 << 10))
            rc = errno_of(os.close, fd)
        except OSError as e:
            rc = e.errno
            os.close(fd)
        assert rc == errno.ENOSPC, rc
        log = s.m.log_text()
        assert "deferred write of" in log and "big2" in log, log
    finally:
        s.close()


@contextlib.contextmanager
def size_limited_server():
    """A Setup whose host sftp-server may write files of 64 KiB at most
    (ulimit -f; SIGXFSZ ignored, so a write past it fails with EFBIG)."""
    tmp = tempfile.mkdtemp(prefix="sftplat-wrap-")
    wrapper = os.path.join(tmp, "sftp-server-limited")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nulimit -f 128\ntrap '' XFSZ\nexec %s \"$@\"\n" % sshd_fixture.SFTP_SERVER)
    os.chmod(wrapper, 0o755)
    os.chmod(tmp, 0o755)
    s = Setup(sftp_server=wrapper)
    try:
        yield s
    finally:
        s.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_deferred_write_failure_reaches_close_file_size_limit():
    """The host's sftp-server limited to 64 KiB files (ulimit -f): a write
    past it fails on the host after it was answered here; close says so
    (EFBIG arrives as SFTP FAILURE: EIO)."""
    with size_limited_server() as s:
        with open(s.M("small"), "w") as f:
            f.write("fits\n")
        assert open(s.R("small")).read() == "fits\n"
        fd = os.open(s.M("toolarge"), os.O_WRONLY | os.O_CREAT, 0o644)
        rc = 0
        try:
            os.write(fd, b"w" * (256 << 10))
        except OSError as e:
            rc = e.errno
        rc = errno_of(os.close, fd) or rc
        assert rc in (errno.EIO, errno.EFBIG), rc
        assert "toolarge" in s.m.log_text()


def test_fsync_behind_big_write_lands_it_whole(lat):
    """fsync sends FSYNC right behind the file's WRITEs and waits once for
    all their answers: when it returns, every byte is on the host."""
    data = bytes(range(256)) * (4 << 12)  # 4 MiB, not one repeated byte
    fd = os.open(lat.M("bulk"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for i in range(0, len(data), 1 << 20):
            os.write(fd, data[i:i + (1 << 20)])
        os.fsync(fd)
        with open(lat.R("bulk"), "rb") as f:
            assert f.read() == data
    finally:
        os.close(fd)


def test_fsync_behind_big_write_reports_its_failure():
    """The host refuses a big write after it was answered here (ulimit -f,
    64 KiB files): the FSYNC sent behind it succeeds on the host, but fsync
    reports the write's error (EFBIG arrives as SFTP FAILURE: EIO), as does
    the close after it, and the log names the file."""
    with size_limited_server() as s:
        fd = os.open(s.M("bulk"), os.O_WRONLY | os.O_CREAT, 0o644)
        early = 0
        try:
            for _ in range(4):
                os.write(fd, b"w" * (1 << 20))
        except OSError as e:
            early = e.errno  # a later write may already see the error
        rc = errno_of(os.fsync, fd)
        close_rc = errno_of(os.close, fd)
        assert early in (0, errno.EIO, errno.EFBIG), early
        assert rc in (errno.EIO, errno.EFBIG), (early, rc)
        assert close_rc in (errno.EIO, errno.EFBIG), close_rc
        assert "deferred write of" in s.m.log_text() and "bulk" in s.m.log_text()
        assert os.path.getsize(s.R("bulk")) <= 64 << 10


def test_dead_link_mid_pipeline():
    """The link dies (the proxy is killed) while writes, a listing and reads
    are in flight: every pending operation ends with an error within the
    timeout, none hangs, and what was acknowledged (fsync'ed) before is on
    the host whole."""
    s = Setup(timeout="8")
    try:
        safe = os.urandom(2 << 20)
        with open(s.M("safe"), "wb") as f:
            f.write(safe)
            f.flush()
            os.fsync(f.fileno())
        make_tree(s.R("tree"), 20, 2)
        s.m.invalidate()
        results = {}

        def writer():
            try:
                fd = os.open(s.M("inflight"), os.O_WRONLY | os.O_CREAT, 0o644)
                try:
                    for _ in range(2048):  # until the link dies (512 MiB at most)
                        os.write(fd, b"p" * (256 << 10))
                finally:
                    os.close(fd)
                results["write"] = 0
            except OSError as e:
                results["write"] = e.errno

        def walker():
            try:
                while True:
                    walk_count(s.M("tree"))
                    s.m.invalidate()
            except OSError as e:
                results["walk"] = e.errno

        threads = [threading.Thread(target=writer, daemon=True), threading.Thread(target=walker, daemon=True)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        s.proxy.kill()
        for t in threads:
            t.join(20)
        took = time.monotonic() - t0
        assert not any(t.is_alive() for t in threads), ("hung after link loss", results)
        assert took < 15, took
        assert results["write"] in (errno.EIO, errno.ENOTCONN, errno.ETIMEDOUT), results
        assert results["walk"] in (errno.EIO, errno.ENOTCONN, errno.ETIMEDOUT), results
        t0 = time.monotonic()
        assert errno_of(open, s.M("after"), "w") in (errno.ENOTCONN, errno.EIO)
        assert time.monotonic() - t0 < 5
        with open(s.R("safe"), "rb") as f:
            assert f.read() == safe
    finally:
        s.close()


# ---- deferred creates: a full seerfs, an ssh sandbox and its agent ----------
#
# root/ of a sandbox of the ssh provider, whose resident agent makes a small
# file created through root/ in one request at its close (fs/root/sftpfs.c:
# dc_try_create, dc_commit; ssh_agent.pl: create), through the same 20 ms
# proxy. The sandbox's files are WORKDIR/NAME/... on this machine (host mode).

AGENT_MARKS = [
    pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="needs openssh-server (/usr/sbin/sshd)"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="the agent runs inside bubblewrap: needs bwrap"),
    pytest.mark.skipif(not os.path.exists("/usr/bin/perl"), reason="the agent is perl: needs /usr/bin/perl"),
]


def needs_agent(f):
    for m in AGENT_MARKS:
        f = m(f)
    return f


@pytest.fixture(scope="module")
def sshd_delayed(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("dcproxy"))
    with SshdFixture() as sshd:
        proxy = Proxy(base, sshd.port)
        try:
            yield Via(sshd, proxy, base), proxy
        finally:
            proxy.kill()


class AgentSandbox:
    def __init__(self, m, sb, home):
        self.m, self.sb, self.home = m, sb, home

    def M(self, *p):  # through root/
        return os.path.join(str(self.sb), "root", "workspace", *p)

    def H(self, *p):  # the same file on the host
        return os.path.join(str(self.home), "workspace", *p)


def agent_sandbox(tmp_path, via, seerfs_factory, workdir=None):
    import json
    from conftest import ssh_entry
    workdir = workdir or tmp_path / "remote-work"
    pfile = tmp_path / "providers-dc.json"
    pfile.write_text(json.dumps({"dc": ssh_entry(via, workdir)}))
    m = seerfs_factory(args=("-o", f"providers={pfile}"))
    sb = m.sandbox("s", json.dumps({"provider": "dc"}))
    return AgentSandbox(m, sb, workdir / "s")


def stop_clean(a):
    """Unmounts a's seerfs; its log has no sanitizer report (build-asan)."""
    a.m.stop()
    log = a.m.stderr()
    assert "ERROR: AddressSanitizer" not in log and "runtime error:" not in log and "LeakSanitizer" not in log, log


@pytest.fixture
def asb(tmp_path, sshd_delayed, seerfs_factory):
    a = agent_sandbox(tmp_path, sshd_delayed[0], seerfs_factory)
    yield a
    stop_clean(a)


def deferred_log(a):
    return [line for line in a.m.stderr().splitlines() if "the deferred create of" in line]


@needs_agent
def test_deferred_create_one_round_trip_coherent(asb, sshd_delayed):
    """Small files created through root/ cost about one round trip each
    (SFTP needs two); what was written is there on the host at close, seen
    through root/ (stat, read) and by a command in the sandbox; a file
    still open is seen whole through root/ as well."""
    a, proxy = asb, sshd_delayed[1]
    os.mkdir(a.M("d"))
    with open(a.M("d", "warm"), "w") as f:   # learns the new entries' owner, if not yet
        f.write("w\n")
    n = 40
    before = proxy.bursts()
    for i in range(n):
        with open(a.M("d", f"f{i}"), "w") as f:
            f.write(f"file {i}\n")
    rts = proxy.bursts() - before
    # SFTP needs two per file; bursts split by load (client think time
    # past half the one-way delay) leave some slack above one
    assert rts <= n * 1.5 + 4, f"{rts} round trips for {n} files created"
    # a shell's redirection: open, dup2 to 1, close (a flush before any
    # write), write, close: still one request
    before = proxy.bursts()
    subprocess.run(["sh", "-c", "for i in $(seq 20); do echo x > s$i; done"], cwd=a.M("d"), check=True)
    rts = proxy.bursts() - before
    assert rts <= 20 * 1.5 + 4, f"{rts} round trips for 20 files created by sh"
    assert all(open(a.H("d", f"s{i}")).read() == "x\n" for i in range(1, 21))
    for i in range(n):
        assert open(a.H("d", f"f{i}")).read() == f"file {i}\n"
        assert os.stat(a.M("d", f"f{i}")).st_size == len(f"file {i}\n")
        assert open(a.M("d", f"f{i}")).read() == f"file {i}\n"
    # mode and owner as the host has them
    fd = os.open(a.M("d", "m"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    os.write(fd, b"m\0m")
    st_open = os.fstat(fd)
    assert st_open.st_size == 3
    # still open: a stat and a read through root/ see it (it is made first)
    assert open(a.M("d", "m"), "rb").read() == b"m\0m"
    os.write(fd, b"more")
    os.close(fd)
    host, mine = os.stat(a.H("d", "m")), os.stat(a.M("d", "m"))
    assert open(a.H("d", "m"), "rb").read() == b"m\0mmore"
    assert (mine.st_mode, mine.st_size) == (host.st_mode, host.st_size) and host.st_mode & 0o7777 == 0o640
    assert sorted(os.listdir(a.M("d"))) == sorted(os.listdir(a.H("d")))
    # a command in the sandbox sees them, and root/ sees what it writes
    code, out = sandbox_run(a.sb, "cat /workspace/d/f7 /workspace/d/m; echo job > /workspace/d/j")
    assert (code, out) == (0, b"file 7\nm\0mmore"), out
    assert open(a.M("d", "j")).read() == "job\n"
    # tar's order: data, then mode and times, one request at close
    with open(a.M("d", "stamped"), "w") as f:
        f.write("s" * 5000)
        f.flush()
        os.utime(f.fileno(), (1000000000, 1000000000))
        os.fchmod(f.fileno(), 0o600)
    st = os.stat(a.H("d", "stamped"))
    assert (st.st_mtime, st.st_mode & 0o777, st.st_size) == (1000000000, 0o600, 5000)
    # bigger than one request carries: over SFTP, as before
    big = os.urandom(300 << 10)
    with open(a.M("d", "big"), "wb") as f:
        f.write(big)
    assert open(a.H("d", "big"), "rb").read() == big
    assert deferred_log(a) == []


@needs_agent
def test_deferred_create_order_rename_over_and_unlink(asb):
    """A create answered here stays in order with the path operations after
    it: rename over an existing name (after close, and while still open),
    unlink (after close, and while open), made again after an unlink."""
    a = asb
    os.mkdir(a.M("o"))
    with open(a.M("o", "target"), "w") as f:
        f.write("old target\n")
    with open(a.M("o", "new"), "w") as f:
        f.write("new content\n")
    os.rename(a.M("o", "new"), a.M("o", "target"))
    assert open(a.H("o", "target")).read() == "new content\n"
    assert not os.path.exists(a.H("o", "new"))
    # renamed while still open, then written and closed
    fd = os.open(a.M("o", "open"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"head ")
    os.rename(a.M("o", "open"), a.M("o", "target"))
    os.write(fd, b"tail")
    os.close(fd)
    assert open(a.H("o", "target"), "rb").read() == b"head tail"
    assert open(a.M("o", "target"), "rb").read() == b"head tail"
    # unlink after close, and while open
    with open(a.M("o", "gone"), "w") as f:
        f.write("x")
    os.unlink(a.M("o", "gone"))
    assert not os.path.exists(a.H("o", "gone")) and not os.path.exists(a.M("o", "gone"))
    fd = os.open(a.M("o", "gone2"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"y" * 1000)
    os.unlink(a.M("o", "gone2"))
    os.write(fd, b"z")
    os.close(fd)
    assert not os.path.exists(a.H("o", "gone2")) and not os.path.exists(a.M("o", "gone2"))
    for i in range(4):
        with open(a.M("o", "again"), "w") as f:
            f.write(f"version {i}\n")
        if i < 3:
            os.unlink(a.M("o", "again"))
    assert open(a.H("o", "again")).read() == "version 3\n"
    # a listing read while a create is pending shows it
    fd = os.open(a.M("o", "listed"), os.O_WRONLY | os.O_CREAT, 0o644)
    assert "listed" in os.listdir(a.M("o"))
    assert os.path.exists(a.H("o", "listed"))
    os.close(fd)
    assert deferred_log(a) == []


def close_errno(path, data=b"data\n"):
    """(errno of the close, or 0) of a file created through root/ at path."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    return errno_of(os.close, fd)


@needs_agent
def test_deferred_create_errors_reach_close(asb):
    """The host refuses a create answered here: its close fails with the
    host's errno, the log names the file, and nothing of it stays in
    root/: its directory removed on the host, a directory that refuses new
    names (immutable for root, read-only for others)."""
    a = asb
    os.mkdir(a.M("gone"))
    os.mkdir(a.M("locked"))
    os.listdir(a.M("gone"))
    os.rmdir(a.H("gone"))
    assert close_errno(a.M("gone", "f")) == errno.ENOENT
    log = deferred_log(a)
    assert any("/workspace/gone/f" in line and "No such file" in line for line in log), a.m.stderr()
    assert not os.path.exists(a.M("gone", "f"))
    # refused by the host's kernel
    if os.geteuid() == 0:
        r = subprocess.run(["chattr", "+i", a.H("locked")], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"chattr +i: {r.stderr.strip()} (root passes permission checks; an immutable directory is the refusal)")
        want = errno.EPERM
    else:
        os.chmod(a.H("locked"), 0o555)
        want = errno.EACCES
    try:
        assert close_errno(a.M("locked", "f")) == want
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", a.H("locked")], check=True)
        else:
            os.chmod(a.H("locked"), 0o755)
    assert any("/workspace/locked/f" in line for line in deferred_log(a)), a.m.stderr()
    assert not os.path.exists(a.H("locked", "f")) and not os.path.exists(a.M("locked", "f"))
    # the name can be made again
    with open(a.M("locked", "f"), "w") as f:
        f.write("ok\n")
    assert open(a.H("locked", "f")).read() == "ok\n"


@needs_agent
def test_deferred_create_disk_full(tmp_path, sshd_delayed, seerfs_factory):
    """The host's disk is full when the create arrives: close fails ENOSPC
    and the log names the file."""
    if os.geteuid() != 0:
        pytest.skip("a small tmpfs (a full remote disk) needs root")
    workdir = tmp_path / "small"
    workdir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(workdir)], check=True)
    try:
        a = agent_sandbox(tmp_path, sshd_delayed[0], seerfs_factory, workdir=workdir)
        os.mkdir(a.M("d"))
        os.listdir(a.M("d"))
        with open(a.H("filler"), "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\1" * (64 << 10))
            except OSError as e:
                assert e.errno == errno.ENOSPC
        rc = close_errno(a.M("d", "f"), b"q" * 20000)
        assert rc == errno.ENOSPC, rc
        assert any("/workspace/d/f" in line and "No space" in line for line in deferred_log(a)), a.m.stderr()
        os.unlink(a.H("filler"))
        assert close_errno(a.M("d", "g")) == 0
        assert open(a.H("d", "g")).read() == "data\n"
        stop_clean(a)
    finally:
        subprocess.run(["umount", "-l", str(workdir)], capture_output=True)


@needs_agent
def test_deferred_create_not_redirected_by_a_planted_symlink(asb):
    """Escape: the sandbox swaps a directory for a symlink to elsewhere
    (here, the sandbox's own /tmp) after root/ listed it: the create that
    root/ answered fails at close (the agent's walk follows no symlink),
    and nothing lands where the link points."""
    a = asb
    os.mkdir(a.M("d"))
    assert os.listdir(a.M("d")) == []
    elsewhere = os.path.join(str(a.home), "tmp", "elsewhere")
    os.makedirs(elsewhere)
    os.rename(a.H("d"), a.H("d.moved"))
    os.symlink("/tmp/elsewhere", a.H("d"))
    rc = close_errno(a.M("d", "f"), b"EVIL\n")
    assert rc in (errno.ENOTDIR, errno.ELOOP), rc
    assert os.listdir(elsewhere) == [] and os.listdir(a.H("d.moved")) == []
    assert any("/workspace/d/f" in line for line in deferred_log(a)), a.m.stderr()


# ---- git's object writes: link through the agent, unlink not waited for ----

def git_object_write(a, d, name, data):
    """What git does for each object: an exclusive create of a temporary
    name, its content, link to the object's name, unlink of the temporary.
    Returns how long the unlink took, in seconds."""
    tmp = a.M(d, "tmp_obj_" + name)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o444)
    os.write(fd, data)
    os.close(fd)
    os.link(tmp, a.M(d, name))
    t0 = time.monotonic()
    os.unlink(tmp)
    return time.monotonic() - t0


@needs_agent
def test_object_writes_link_and_unlink_round_trips(asb, sshd_delayed):
    """A link through root/ is one round trip with its link count (the
    agent's link answers with the new name's stat; SFTP needed two), and
    unlinking the temporary name of a file just linked costs none: it is
    sent without waiting. The host has every object and no temporary name
    once a command starts in the sandbox (a job's start takes the answers),
    and the link counts are right through root/ and on the host."""
    a, proxy = asb, sshd_delayed[1]
    os.mkdir(a.M("objs"))
    os.listdir(a.M("objs"))
    b0 = proxy.bursts()
    unlinks = 0.0
    for i in range(20):
        unlinks += git_object_write(a, "objs", f"o{i:02d}", b"blob %d\n" % i)
    took = proxy.bursts() - b0
    # create 1 + link 1 per object, and the unlink's REMOVE sent (was 1 +
    # 2 + 1, each waited for)
    assert took <= 20 * 3 + 6, took
    # no unlink waited for its answer: 20 of them in less than 10 of the
    # proxy's 20 ms round trips
    assert unlinks < 0.2, unlinks
    # git stats each object after: its link count (one fewer) and ctime
    # are known without asking the server
    b0 = proxy.bursts()
    sts = [os.lstat(a.M("objs", f"o{i:02d}")) for i in range(20)]
    assert proxy.bursts() - b0 <= 4, proxy.bursts() - b0
    assert all(st.st_nlink == 1 and st.st_size == len(b"blob %d\n" % i) for i, st in enumerate(sts))
    assert sorted(os.listdir(a.M("objs"))) == [f"o{i:02d}" for i in range(20)]
    code, out = sandbox_run(a.sb, "ls /workspace/objs | wc -l; cat /workspace/objs/o07; stat -c %h /workspace/objs/o07")
    assert code == 0 and out.split() == [b"20", b"blob", b"7", b"1"], out
    assert sorted(os.listdir(a.H("objs"))) == [f"o{i:02d}" for i in range(20)]
    assert os.stat(a.M("objs", "o07")).st_nlink == 1
    # the directory's fsync takes any answer still out, and reports none
    fd = os.open(a.M("objs"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@needs_agent
def test_unlink_not_waited_for_failure_reported(asb):
    """An unlink answered without waiting that the host then refuses (the
    name became a directory there meanwhile, unseen by root/'s cache): the
    log names the file, the next fsync of a directory fails with EIO, the
    one after succeeds, and the name is listed again; nothing else went."""
    a = asb
    os.mkdir(a.M("u"))
    os.listdir(a.M("u"))
    tmp = a.M("u", "tmp_x")
    with open(tmp, "w") as f:
        f.write("keep\n")
    os.link(tmp, a.M("u", "obj"))
    # on the host, outside root/: the temporary name is now a directory
    os.unlink(a.H("u", "tmp_x"))
    os.mkdir(a.H("u", "tmp_x"))
    os.unlink(tmp)  # answered from what root/ knows
    fd = os.open(a.M("u"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as e:
            os.fsync(fd)
        assert e.value.errno == errno.EIO
        os.fsync(fd)  # reported once
    finally:
        os.close(fd)
    log = [line for line in a.m.stderr().splitlines() if "the unlink of" in line]
    assert any("/workspace/u/tmp_x" in line for line in log), a.m.stderr()
    assert sorted(os.listdir(a.M("u"))) == ["obj", "tmp_x"]
    assert os.path.isdir(a.H("u", "tmp_x"))
    assert open(a.M("u", "obj")).read() == "keep\n"
