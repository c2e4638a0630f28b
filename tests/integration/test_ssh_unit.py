"""test_ssh_unit.py - integration tests of core/sshconn, core/sftp and
core/sshexec through the tests/drivers/ssh_driver driver, against a real OpenSSH
server started by sshd_fixture.py (no mocks).

Run:   meson test -C build ssh   (suite net), or
       /usr/bin/python3 -m pytest tests/integration/test_ssh_unit.py
The driver binary is $SEERFS_TEST_SSH, else looked up in $SEERFS_BUILD
(default build/; relative to the repository root) as tests/drivers/ssh_driver
(where meson puts it).  Throughput figures are
printed (use -s to see them live), never asserted.  Nothing here assumes
root; the EACCES check only runs as an ordinary user.
"""

import hashlib
import os
import select
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sshd_fixture import SshdFixture, fingerprint  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIG = 50 * 1024 * 1024


def _driver():
    explicit = os.environ.get("SEERFS_TEST_SSH")
    if explicit:
        return explicit
    build = os.environ.get("SEERFS_BUILD", "build")
    if not os.path.isabs(build):
        build = os.path.join(REPO, build)
    path = os.path.join(build, "tests", "drivers", "ssh_driver")
    if os.access(path, os.X_OK):
        return path
    pytest.fail(f"ssh_driver not built in {build}: build it first (meson builds it: "
                "ninja -C build tests/drivers/ssh_driver) or set SEERFS_BUILD / SEERFS_TEST_SSH", pytrace=False)


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_random(path, size):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n


@pytest.fixture(scope="module")
def sshd():
    with SshdFixture() as s:
        yield s


@pytest.fixture(scope="module")
def driver():
    return _driver()


@pytest.fixture(scope="module")
def bigfile(sshd):
    path = os.path.join(sshd.dir, "big.bin")
    _write_random(path, BIG + 12345)  # not a multiple of the chunk size
    return path


@pytest.fixture
def workdir(sshd, request):
    d = os.path.join(sshd.dir, "w-" + request.node.name.replace("[", "_").replace("]", ""))
    os.makedirs(d)
    return d


def run(driver, sshd, *args, opts=(), key=None, known_hosts=None, timeout=120, input=None):
    cmd = [driver, *opts, sshd.host, str(sshd.port), sshd.user,
           key or sshd.identity_file, known_hosts or sshd.known_hosts, *args]
    return subprocess.run(cmd, capture_output=True, timeout=timeout,
                          input=input if input is not None else b"")


def ok(r):
    assert r.returncode == 0, f"rc={r.returncode}\nstdout={r.stdout!r}\nstderr={r.stderr.decode(errors='replace')}"
    return r.stdout.decode()


# --------------------------------------------------------------------------
# connection and host keys

def test_connect_reports_host_fingerprint(driver, sshd):
    out = ok(run(driver, sshd, "connect"))
    assert fingerprint(sshd.host_key + ".pub") in out


def test_unknown_host_key_refused_with_fingerprint(driver, sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("# nothing here\n")
    r = run(driver, sshd, "connect", known_hosts=str(empty))
    err = r.stderr.decode()
    assert r.returncode == 1
    assert "EKEYREJECTED" in err
    assert fingerprint(sshd.host_key + ".pub") in err
    assert f"ssh-keyscan -p {sshd.port}" in err and str(empty) in err


def test_changed_host_key_refused(driver, sshd, tmp_path):
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    keytype, key = (tmp_path / "other_host_key.pub").read_text().split()[:2]
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[{sshd.host}]:{sshd.port} {keytype} {key}\n")
    r = run(driver, sshd, "connect", known_hosts=str(kh))
    err = r.stderr.decode()
    assert r.returncode == 1
    assert "CHANGED" in err and "EKEYREJECTED" in err
    assert fingerprint(sshd.host_key + ".pub") in err
    assert "ssh-keygen -f" in err


def test_host_key_algorithm_follows_known_hosts(driver, tmp_path):
    # The server has ECDSA and ED25519 keys; libssh2 would prefer ECDSA, but
    # known_hosts knows only one of them: that one must be negotiated.
    with SshdFixture(host_key_types=("ed25519", "ecdsa")) as s:
        for key in s.host_keys:
            kh = tmp_path / ("kh-" + os.path.basename(key))
            kh.write_text(s.known_hosts_line(key))
            out = ok(run(driver, s, "connect", known_hosts=str(kh)))
            assert fingerprint(key + ".pub") in out


def test_missing_known_hosts_file(driver, sshd, tmp_path):
    r = run(driver, sshd, "connect", known_hosts=str(tmp_path / "absent"))
    assert r.returncode == 1
    assert b"ENOENT" in r.stderr and b"known_hosts" in r.stderr


def test_wrong_user_key_refused(driver, sshd, tmp_path):
    wrong = tmp_path / "id_wrong"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    r = run(driver, sshd, "connect", key=str(wrong))
    err = r.stderr.decode()
    assert r.returncode == 1
    assert "EACCES" in err and "rejected" in err and "authorized_keys" in err


def test_ssh_agent_authentication(driver, sshd, tmp_path):
    sock = str(tmp_path / "agent.sock")
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", sock],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.05)
        env = dict(os.environ, SSH_AUTH_SOCK=sock)
        base = [driver, sshd.host, str(sshd.port), sshd.user, "-", sshd.known_hosts, "connect"]
        # An empty agent: refused, and the message says why.
        r = subprocess.run(base, capture_output=True, env=env, timeout=60)
        assert r.returncode == 1 and b"ssh-agent holds no keys" in r.stderr
        subprocess.run(["ssh-add", "-q", sshd.identity_file], env=env, check=True,
                       capture_output=True, timeout=30)
        r = subprocess.run(base, capture_output=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        assert b"connected" in r.stdout
    finally:
        agent.terminate()
        agent.wait()


def test_connection_refused_is_actionable(driver, sshd):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = subprocess.run([driver, "127.0.0.1", str(port), sshd.user, sshd.identity_file,
                        sshd.known_hosts, "connect"], capture_output=True, timeout=60)
    assert r.returncode == 1
    assert b"ECONNREFUSED" in r.stderr and b"is sshd running" in r.stderr


# --------------------------------------------------------------------------
# SFTP

def test_put_get_50mb_byte_exact(driver, sshd, bigfile, workdir):
    remote = os.path.join(workdir, "up.bin")
    back = os.path.join(workdir, "back.bin")
    ok(run(driver, sshd, "put", bigfile, remote))
    assert os.path.getsize(remote) == os.path.getsize(bigfile)
    assert _sha256(remote) == _sha256(bigfile)
    ok(run(driver, sshd, "get", remote, back))
    assert _sha256(back) == _sha256(bigfile)


def test_buffer_range_helpers_byte_exact(driver, sshd, bigfile, workdir):
    # Small odd chunk and depth force many requests and short final reads.
    remote = os.path.join(workdir, "up.bin")
    back = os.path.join(workdir, "back.bin")
    opts = ("--depth", "7", "--chunk", "10007")
    ok(run(driver, sshd, "put-range", bigfile, remote, opts=opts))
    assert _sha256(remote) == _sha256(bigfile)
    ok(run(driver, sshd, "get-range", remote, back, opts=opts))
    assert _sha256(back) == _sha256(bigfile)


def test_empty_file_round_trip(driver, sshd, workdir):
    src = os.path.join(workdir, "empty")
    open(src, "wb").close()
    ok(run(driver, sshd, "put", src, src + ".up"))
    ok(run(driver, sshd, "get", src + ".up", src + ".down"))
    assert os.path.getsize(src + ".down") == 0


def test_posix_rename_over_existing(driver, sshd, workdir):
    a, b = os.path.join(workdir, "a"), os.path.join(workdir, "b")
    with open(a, "w") as f:
        f.write("new contents")
    with open(b, "w") as f:
        f.write("old contents")
    ok(run(driver, sshd, "rename-over", a, b))
    assert not os.path.exists(a)
    with open(b) as f:
        assert f.read() == "new contents"


def test_plain_rename_refuses_existing_target(driver, sshd, workdir):
    a, b = os.path.join(workdir, "a"), os.path.join(workdir, "b")
    for p in (a, b):
        open(p, "w").close()
    r = run(driver, sshd, "rename", a, b)
    assert r.returncode == 1 and b"EEXIST" in r.stderr
    ok(run(driver, sshd, "rename", a, os.path.join(workdir, "c")))
    assert os.path.exists(os.path.join(workdir, "c"))


def test_hardlink(driver, sshd, workdir):
    a, b = os.path.join(workdir, "a"), os.path.join(workdir, "b")
    with open(a, "w") as f:
        f.write("x")
    ok(run(driver, sshd, "hardlink", a, b))
    assert os.stat(a).st_ino == os.stat(b).st_ino
    assert os.stat(a).st_nlink == 2
    r = run(driver, sshd, "hardlink", a, b)
    assert r.returncode == 1 and b"EEXIST" in r.stderr


def test_symlink_and_readlink(driver, sshd, workdir):
    link = os.path.join(workdir, "lnk")
    ok(run(driver, sshd, "symlink", "some/target", link))
    assert os.readlink(link) == "some/target"
    assert ok(run(driver, sshd, "readlink", link)).strip() == "some/target"
    assert "type=lnk" in ok(run(driver, sshd, "lstat", link))
    r = run(driver, sshd, "stat", link)  # dangling: stat follows the link
    assert r.returncode == 1 and b"ENOENT" in r.stderr


def test_fsync(driver, sshd, workdir):
    p = os.path.join(workdir, "synced")
    assert "fsync ok" in ok(run(driver, sshd, "fsync", p))
    with open(p) as f:
        assert f.read() == "fsync-test\n"


def test_statvfs_matches_local(driver, sshd, workdir):
    out = ok(run(driver, sshd, "statvfs", workdir))
    got = dict(kv.split("=") for kv in out.split())
    st = os.statvfs(workdir)
    assert int(got["bsize"]) == st.f_bsize
    assert int(got["frsize"]) == st.f_frsize
    assert int(got["blocks"]) == st.f_blocks
    assert int(got["namemax"]) == st.f_namemax


def test_stat_realpath_ls_and_errno_mapping(driver, sshd, workdir):
    f = os.path.join(workdir, "f")
    with open(f, "w") as fh:
        fh.write("12345")
    os.chmod(f, 0o640)
    out = ok(run(driver, sshd, "stat", f))
    assert "type=reg" in out and "size=5" in out and "mode=0640" in out
    assert ok(run(driver, sshd, "realpath", workdir + "/./f")).strip() == f
    listing = ok(run(driver, sshd, "ls", workdir))
    assert "reg f 5" in listing

    r = run(driver, sshd, "stat", os.path.join(workdir, "missing"))
    assert r.returncode == 1 and b"ENOENT" in r.stderr
    d = os.path.join(workdir, "d")
    ok(run(driver, sshd, "mkdir", d))
    assert os.path.isdir(d)
    r = run(driver, sshd, "mkdir", d)
    assert r.returncode == 1 and b"EEXIST" in r.stderr
    open(os.path.join(d, "inside"), "w").close()
    r = run(driver, sshd, "rmdir", d)
    assert r.returncode == 1 and b"ENOTEMPTY" in r.stderr
    ok(run(driver, sshd, "rm", os.path.join(d, "inside")))
    ok(run(driver, sshd, "rmdir", d))
    assert not os.path.exists(d)
    if os.getuid() != 0:
        locked = os.path.join(workdir, "locked")
        open(locked, "w").close()
        os.chmod(locked, 0)
        r = run(driver, sshd, "get", locked, locked + ".copy")
        assert r.returncode == 1 and b"EACCES" in r.stderr


def test_many_threads_many_requests(driver, sshd, workdir):
    out = ok(run(driver, sshd, "stress", workdir, "8", "150"))
    assert "stress ok" in out


def test_external_sftp_server_binary(driver, tmp_path):
    # Same client against /usr/lib/openssh/sftp-server instead of
    # internal-sftp (it runs as a child process, through the user's shell).
    with SshdFixture(sftp_server="sftp-server") as s:
        src = os.path.join(s.dir, "src")
        _write_random(src, 3 * 1024 * 1024 + 1)
        ok(run(driver, s, "put", src, src + ".up"))
        ok(run(driver, s, "get", src + ".up", src + ".down"))
        assert _sha256(src + ".down") == _sha256(src)
        ok(run(driver, s, "rename-over", src + ".down", src + ".up"))


def test_sftp_over_exec_channel(driver, sshd, workdir):
    # The protocol over an exec channel running the server binary (what the
    # ssh provider does inside a sandbox's bubblewrap): same results.
    opts = ("--sftp-exec", "/usr/lib/openssh/sftp-server")
    if not os.access(opts[1], os.X_OK):
        pytest.skip(f"{opts[1]} not installed")
    src = os.path.join(workdir, "src")
    _write_random(src, 2 * 1024 * 1024 + 7)
    ok(run(driver, sshd, "put", src, src + ".up", opts=opts))
    ok(run(driver, sshd, "get", src + ".up", src + ".down", opts=opts))
    assert _sha256(src + ".down") == _sha256(src)


def test_sftp_over_exec_that_is_no_server_says_why(driver, sshd):
    # A command that is no SFTP server: the error carries its stderr tail.
    r = run(driver, sshd, "stat", "/", opts=("--sftp-exec", "echo no-sftp-here >&2; exit 3"))
    assert r.returncode == 1
    msg = r.stderr.decode()
    assert "no-sftp-here" in msg and "exit status 3" in msg, msg


# --------------------------------------------------------------------------
# exec channels

def test_exec_exit_code_and_separate_streams(driver, sshd):
    r = run(driver, sshd, "exec", "echo out; echo err >&2; echo out2; exit 3")
    assert r.returncode == 3
    assert r.stdout == b"out\nout2\n"
    assert r.stderr == b"err\n"


def test_exec_stdin_round_trip(driver, sshd):
    data = os.urandom(3 * 1024 * 1024 + 17)
    r = run(driver, sshd, "exec", "cat", input=data)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data
    r = run(driver, sshd, "exec", "wc -c", input=data)
    assert r.stdout.strip() == str(len(data)).encode()


def test_exec_large_output_both_streams(driver, sshd):
    # More than the 1 MiB pause threshold on both streams at once.
    r = run(driver, sshd, "exec", "head -c 5000000 /dev/zero; head -c 3000000 /dev/zero >&2")
    assert r.returncode == 0
    assert len(r.stdout) == 5000000 and len(r.stderr) == 3000000


def test_exec_exit_signal(driver, sshd):
    r = run(driver, sshd, "exec", "kill -TERM $$")
    assert r.returncode == 128 + signal.SIGTERM
    assert b"signal TERM" in r.stderr


def test_keepalive_sent_while_idle(driver):
    # OpenSSH logs the global requests it receives at DEBUG level.
    with SshdFixture(log_level="DEBUG") as s:
        out = ok(run(driver, s, "idle-stat", "3", s.dir, opts=("--keepalive", "1")))
        assert "type=dir" in out
        assert "keepalive@libssh2.org want_reply 0" in s.log_tail(10**6)


# --------------------------------------------------------------------------
# faults: nothing may hang

def _start_slow_get(driver, sshd, remote, local, timeout_ms):
    cmd = [driver, "--timeout", str(timeout_ms), "--throttle-ms", "20",
           sshd.host, str(sshd.port), sshd.user, sshd.identity_file,
           sshd.known_hosts, "get", remote, local]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    ready, _, _ = select.select([p.stdout], [], [], 30)
    assert ready, "transfer did not start"
    assert p.stdout.readline().strip() == b"progress"
    time.sleep(0.3)
    return p


def test_killing_sshd_mid_transfer_fails_fast(driver, sshd, bigfile, workdir):
    p = _start_slow_get(driver, sshd, bigfile, os.path.join(workdir, "out"), 5000)
    try:
        killed = sshd.kill_session_processes(signal.SIGKILL)
        assert killed, "no per-connection sshd processes found"
        t0 = time.monotonic()
        out, err = p.communicate(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 1, err
    assert b"ENOTCONN" in err, err
    assert elapsed < 5.0, f"took {elapsed:.1f}s to notice the dead link"


def test_frozen_sshd_times_out(driver, sshd, bigfile, workdir):
    # SIGSTOP keeps the TCP connection up but nothing answers: only the
    # per-operation timeout can end the wait.
    p = _start_slow_get(driver, sshd, bigfile, os.path.join(workdir, "out"), 2000)
    try:
        sshd.kill_session_processes(signal.SIGSTOP)
        t0 = time.monotonic()
        out, err = p.communicate(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        sshd.kill_session_processes(signal.SIGCONT)
        sshd.kill_session_processes(signal.SIGKILL)
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 1, err
    assert b"ETIMEDOUT" in err, err
    # 2 s timeout; after it the driver aborts the link (ssh_conn_abort), so
    # closing the file and the connection must not wait again.
    assert elapsed < 5.0, f"took {elapsed:.1f}s"


# --------------------------------------------------------------------------
# throughput (printed, not asserted)

def _timed(cmd, **kw):
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, timeout=600, **kw)
    return r, time.monotonic() - t0


def test_throughput_vs_scp_and_sftp(driver, sshd, workdir, capsys):
    size = 128 * 1024 * 1024
    src = os.path.join(workdir, "src.bin")
    _write_random(src, size)
    dst = os.path.join(workdir, "dst.bin")
    target = f"{sshd.user}@{sshd.host}"
    ssh_opts = sshd.ssh_options()
    same_crypto = ["-c", "aes256-ctr", "-o", "MACs=hmac-sha2-256"]
    rows = []

    def row(name, r, wall, inner=None):
        assert r.returncode == 0, f"{name}: {r.stderr.decode(errors='replace')}"
        rows.append((name, size / wall / 1e6, inner))

    def ours(*args):
        r, wall = _timed([driver, sshd.host, str(sshd.port), sshd.user,
                          sshd.identity_file, sshd.known_hosts, *args])
        inner = None
        for line in r.stdout.decode().splitlines():
            if "MBps=" in line:
                inner = float(line.split("MBps=")[1])
        return r, wall, inner

    for rnd in range(2):  # second round shows warm-cache numbers
        r, wall, inner = ours("get", src, dst)
        row(f"[{rnd}] seerfs sftp get (32 x 64 KiB)", r, wall, inner)
        r, wall = _timed(["scp", "-P", str(sshd.port), *ssh_opts, f"{target}:{src}", dst])
        row(f"[{rnd}] scp download (default cipher)", r, wall)
        r, wall = _timed(["scp", "-P", str(sshd.port), *ssh_opts, *same_crypto, f"{target}:{src}", dst])
        row(f"[{rnd}] scp download (aes256-ctr+hmac-sha2-256)", r, wall)
        batch = os.path.join(workdir, "batch")
        with open(batch, "w") as f:
            f.write(f"get {src} {dst}\n")
        r, wall = _timed(["sftp", "-P", str(sshd.port), *ssh_opts, "-b", batch, target])
        row(f"[{rnd}] sftp get (default cipher)", r, wall)
        r, wall, inner = ours("put", src, dst)
        row(f"[{rnd}] seerfs sftp put (32 x 64 KiB)", r, wall, inner)
        r, wall = _timed(["scp", "-P", str(sshd.port), *ssh_opts, src, f"{target}:{dst}"])
        row(f"[{rnd}] scp upload (default cipher)", r, wall)
        r, wall = _timed(["scp", "-P", str(sshd.port), *ssh_opts, *same_crypto, src, f"{target}:{dst}"])
        row(f"[{rnd}] scp upload (aes256-ctr+hmac-sha2-256)", r, wall)

    with capsys.disabled():
        print(f"\n\nthroughput, {size >> 20} MiB file over 127.0.0.1 "
              "(MB/s incl. connection setup; in-transfer rate in brackets)")
        for name, mbps, inner in rows:
            extra = f"  [{inner:.1f} in transfer]" if inner else ""
            print(f"  {name:48s} {mbps:8.1f}{extra}")
