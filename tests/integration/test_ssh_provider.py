"""test_ssh_provider.py - the `ssh` provider end to end: a real seerfs whose
sandboxes live on a real OpenSSH sshd on 127.0.0.1 (sshd_fixture.py), named
in a providers file passed with -o providers=FILE.

The sshd runs on this machine as the current user, so what the remote side
does can be checked directly: pgrep for leftover processes, the files under
the provider's workdir.  Run: /usr/bin/python3 -m pytest -q
tests/integration/test_ssh_provider.py (after ninja -C build).
"""

import errno
import json
import os
import pathlib
import shutil
import subprocess
import time
import uuid

import pytest

from conftest import (ctl, error_text, log_text, poll, read_text, sandbox_run,
                      wait_settled, write_config)
from sshd_fixture import SshdFixture, fingerprint

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="needs openssh-server (/usr/sbin/sshd)")


@pytest.fixture(scope="module")
def sshd():
    with SshdFixture() as s:
        yield s


def entry(sshd, workdir, **kw):
    e = {"type": "ssh", "host": sshd.host, "port": sshd.port, "user": sshd.user,
         "identity_file": sshd.identity_file, "known_hosts": sshd.known_hosts,
         "workdir": str(workdir), "mode": "host", "timeout": 3}
    e.update(kw)
    return e


@pytest.fixture
def remote(tmp_path, sshd, seerfs_factory):
    """(mount, providers file path, workdir): a seerfs with provider t1."""
    workdir = tmp_path / "remote-work"
    pfile = tmp_path / "providers.json"
    pfile.write_text(json.dumps({"t1": entry(sshd, workdir),
                                 "d1": entry(sshd, workdir, mode="direct")}))
    m = seerfs_factory(args=("-o", f"providers={pfile}"))
    return m, pfile, workdir


def entry_host(m):
    """The host the mount's provider t1 points at (from its providers file)."""
    pfile = next(a.split("=", 1)[1] for a in m.args if a.startswith("providers="))
    return json.loads(pathlib.Path(pfile).read_text())["t1"]["host"]


def make(m, name, provider="t1", extra=None, want="running"):
    cfg = {"provider": provider}
    cfg.update(extra or {})
    return m.sandbox(name, json.dumps(cfg), want=want)


def run(sb, cmd, timeout=60.0):
    code, out = sandbox_run(sb, cmd, timeout)
    return code, out


def test_provision_exec_basics(remote):
    m, _, workdir = remote
    sb = make(m, "a")
    assert (workdir / "a" / "workspace").is_dir()
    log = log_text(sb)
    assert "isolation:" in log
    code, out = run(sb, "echo hello; pwd")
    assert code == 0, (out, log)
    lines = out.decode().split()
    assert lines[0] == "hello"
    if shutil.which("bwrap"):
        # this host has bubblewrap, so the "remote" one is used
        assert "isolation: bubblewrap" in log, log
        # status says the same as the log: the remote bubblewrap, on that host
        assert f"isolation: bubblewrap on {entry_host(m)}" in read_text(sb / "status")
        assert lines[1] == "/workspace"
        assert run(sb, "cat /etc/shadow 2>/dev/null | wc -c")[1].strip() == b"0"
        assert run(sb, "ls /etc/ssh | wc -l")[1].strip() == b"0"
    else:
        assert "isolation: NONE" in log, log
        assert "isolation: NONE" in read_text(sb / "status")
        assert lines[1] == str(workdir / "a" / "workspace")
    assert run(sb, "exit 3")[0] == 3
    # environment from the config reaches the command; the marker line never
    assert run(sb, "echo $SEER_SANDBOX")[1] == b"a\n"
    # 10 MB of output arrives intact
    code, out = run(sb, "head -c 10000000 /dev/zero | tr '\\0' x; echo; echo end >&2", timeout=60)
    assert code == 0
    assert out.count(b"x") == 10000000 and b"end\n" in out and len(out) == 10000000 + 5
    # a file written by one command is there for the next and on the host side
    run(sb, "echo data > /workspace/f.txt")
    assert (workdir / "a" / "workspace" / "f.txt").read_text() == "data\n"


def test_stdin_round_trip(remote):
    m, _, _ = remote
    sb = make(m, "s")
    fd = os.open(sb / "exec", os.O_RDWR)
    try:
        os.write(fd, b"cat; echo done")
        jobs = sorted((j for j in os.listdir(sb / "jobs") if j.isdigit()), key=int)
        jd = sb / "jobs" / jobs[-1]
        sfd = os.open(jd / "stdin", os.O_WRONLY)
        os.write(sfd, b"round trip\n" * 1000)
        os.close(sfd)
        chunks = []
        while True:
            b = os.read(fd, 1 << 16)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(fd)
    out = b"".join(chunks)
    assert out == b"round trip\n" * 1000 + b"done\n"


def remote_pids(tag):
    r = subprocess.run(["pgrep", "-f", tag], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()]


def test_kill_timeout_signal(remote):
    m, _, _ = remote
    sb = make(m, "k")
    tag = f"sleep 4{uuid.uuid4().int % 1000:03d}"
    fd = os.open(sb / "exec", os.O_RDWR)
    try:
        os.write(fd, f"({tag}; true) & {tag}; true".encode())
        poll(lambda: len(remote_pids(tag)) >= 2, timeout=10, what="remote sleeps")
        jobs = sorted((j for j in os.listdir(sb / "jobs") if j.isdigit()), key=int)
        ctl(sb / "jobs" / jobs[-1], "kill")
        while os.read(fd, 1 << 16):
            pass
    finally:
        os.close(fd)
    poll(lambda: not remote_pids(tag), timeout=10, what="remote tree gone")
    assert "signal 9" in read_text(sb / "jobs" / jobs[-1] / "exit")
    # exec_timeout ends a job too
    write_config(sb, json.dumps({"provider": "t1", "exec_timeout": 1}))
    t0 = time.monotonic()
    code, _ = run(sb, f"{tag}")
    assert time.monotonic() - t0 < 10
    assert code != 0
    poll(lambda: not remote_pids(tag), timeout=10, what="timed out job gone")


def test_host_key_changed(tmp_path, sshd, seerfs_factory):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kh = tmp_path / "known_hosts"
    keytype, key = pathlib.Path(str(other) + ".pub").read_text().split()[:2]
    kh.write_text(f"[{sshd.host}]:{sshd.port} {keytype} {key}\n")
    badkey = tmp_path / "bad_id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(badkey)], check=True)
    pfile = tmp_path / "providers.json"
    pfile.write_text(json.dumps({
        "kh": entry(sshd, tmp_path / "w", known_hosts=str(kh)),
        "badkey": entry(sshd, tmp_path / "w", identity_file=str(badkey)),
    }))
    m = seerfs_factory(args=("-o", f"providers={pfile}"))
    sb = make(m, "h", provider="kh", want="failed")
    err = error_text(sb)
    assert fingerprint(sshd.host_key + ".pub") in err, err
    sb2 = make(m, "u", provider="badkey", want="failed")
    err2 = error_text(sb2)
    assert "u" in err2 and ("auth" in err2.lower() or "denied" in err2.lower() or "rejected" in err2.lower()), err2


def test_connection_killed_then_reconnect(remote, sshd):
    m, _, _ = remote
    sb = make(m, "c")
    fd = os.open(sb / "exec", os.O_RDWR)
    try:
        os.write(fd, b"echo started; sleep 30")
        assert os.read(fd, 100).startswith(b"started")
        sshd.kill_session_processes()
        t0 = time.monotonic()
        while os.read(fd, 1 << 16):
            pass
        assert time.monotonic() - t0 < 10
    finally:
        os.close(fd)
    jobs = sorted((j for j in os.listdir(sb / "jobs") if j.isdigit()), key=int)
    assert "signal 1" in read_text(sb / "jobs" / jobs[-1] / "exit")
    assert "disconnected" in log_text(sb)
    code, out = run(sb, "echo again")
    assert (code, out) == (0, b"again\n")


def test_outage_then_recovery(remote, sshd):
    m, _, _ = remote
    sb = make(m, "o")
    sshd.stop_process()
    try:
        t0 = time.monotonic()
        with pytest.raises(OSError) as ei:
            run(sb, "echo during")
        took = time.monotonic() - t0
        assert ei.value.errno in (errno.ENOTCONN, errno.ETIMEDOUT), ei.value
        assert took < 3 + 2, took
        assert "disconnected" in error_text(sb)
    finally:
        sshd._launch()
    code, out = run(sb, "echo after")
    assert (code, out) == (0, b"after\n")


def test_direct_mode_root(remote):
    m, _, _ = remote
    sb = make(m, "d", provider="d1")
    code, out = run(sb, "echo $SEER_SANDBOX")
    assert (code, out) == (0, b"d\n")
    # root/ is the endpoint's "/"
    if os.path.isdir(sb / "root" / "etc"):
        assert (sb / "root" / "etc" / "hostname").exists() or (sb / "root" / "usr").is_dir()


def test_root_through_sftp(remote):
    m, _, workdir = remote
    sb = make(m, "r")
    try:
        os.listdir(sb / "root")
    except OSError as e:
        pytest.skip(f"root/ over SFTP not available: {e}")
    (sb / "root" / "workspace" / "in.txt").write_text("from root\n")
    assert run(sb, "cat /workspace/in.txt")[1] == b"from root\n"
    run(sb, "echo from exec > /workspace/out.txt")
    assert poll(lambda: (sb / "root" / "workspace" / "out.txt").exists(), timeout=5, what="out.txt")
    assert (sb / "root" / "workspace" / "out.txt").read_text() == "from exec\n"


def test_listing_over_sftp_whole_and_fresh(remote):
    """A listing longer than one READDIR comes whole (each entry once), and
    a change made by the sandbox's own command shows in the next listing."""
    m, _, workdir = remote
    sb = make(m, "ls")
    ws = sb / "root" / "workspace"
    try:
        os.listdir(ws)
    except OSError as e:
        pytest.skip(f"root/ over SFTP not available: {e}")
    assert run(sb, "mkdir -p /workspace/many && cd /workspace/many && "
                   "for i in $(seq 1 700); do : > file-$i; done")[0] == 0
    names = os.listdir(ws / "many")
    assert len(names) == 700 and len(set(names)) == 700
    assert run(sb, "rm /workspace/many/file-7 && : > /workspace/many/late")[0] == 0
    names = set(os.listdir(ws / "many"))
    assert "late" in names and "file-7" not in names and len(names) == 700


def test_unknown_provider_and_local_files(remote):
    m, _, _ = remote
    d = m.path / "n"
    d.mkdir()
    with pytest.raises(OSError):
        write_config(d, json.dumps({"provider": "nope"}))
    assert "nope" in error_text(d)
    # Hub models are not provisioned over ssh yet: refused with a reason.
    sb = make(m, "md", extra={"models": ["org/model"]}, want="failed")
    assert "models" in error_text(sb) and "ssh" in error_text(sb)


def test_local_files_and_dirs_over_sftp(remote, tmp_path):
    """local_files and local_dirs reach a remote sandbox over SFTP: bytes,
    modes, nested directories, symlinks as links; a bad source fails with
    its name."""
    m, _, _ = remote
    src = tmp_path / "src"
    (src / "sub" / "deep").mkdir(parents=True)
    blob = os.urandom(3 * 1024 * 1024 + 17)
    (src / "sub" / "deep" / "blob.bin").write_bytes(blob)
    (src / "run.sh").write_text("#!/bin/sh\necho ran\n")
    os.chmod(src / "run.sh", 0o750)
    os.symlink("sub/deep/blob.bin", src / "link")
    one = tmp_path / "one.txt"
    one.write_text("single file\n")
    sb = make(m, "lf", extra={"local_files": [[str(one), "/workspace/in/one.txt"], [str(one), "/workspace/in2/"]],
                              "local_dirs": [[str(src), "/workspace/tree"]]})
    code, out = run(sb, "cat /workspace/in/one.txt /workspace/in2/one.txt && /workspace/tree/run.sh && "
                        "stat -c %a /workspace/tree/run.sh && readlink /workspace/tree/link && "
                        "sha256sum < /workspace/tree/sub/deep/blob.bin")
    assert code == 0, out
    lines = out.decode().split("\n")
    assert lines[:5] == ["single file", "single file", "ran", "750", "sub/deep/blob.bin"]
    import hashlib
    assert lines[5].split()[0] == hashlib.sha256(blob).hexdigest()
    bad = make(m, "lf2", extra={"local_dirs": [[str(tmp_path / "missing"), "/workspace/x"]]}, want="failed")
    assert "missing" in error_text(bad)


# ---- snapshots -----------------------------------------------------------------
# The remote host is this machine, so the remote store (WORKDIR/.seerfs-snapshots)
# and the sandboxes' directories can be compared directly.

def ctl_errno(sbdir, cmd):
    """Writes cmd to ctl; 0 or the errno the write failed with."""
    try:
        ctl(sbdir, cmd)
        return 0
    except OSError as e:
        return e.errno


def tree(top):
    """{relative path: (type, mode, content or target)} of a directory tree."""
    out = {}
    for dirpath, dirs, files in os.walk(top):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, top)
            if os.path.islink(p):
                out[rel] = ("l", st.st_mode, os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("d", st.st_mode, None)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("f", st.st_mode, f.read())
    return out


def store_names(workdir):
    """What the remote store holds (temporaries included)."""
    d = workdir / ".seerfs-snapshots"
    return sorted(os.listdir(d)) if d.is_dir() else []


def sandbox_states(sbname):
    """{pid: state letter} of the remote processes of sandbox sbname (their
    environment holds SEER_SANDBOX=sbname)."""
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            env = pathlib.Path(f"/proc/{p}/environ").read_bytes().split(b"\0")
            stat = pathlib.Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        if f"SEER_SANDBOX={sbname}".encode() in env:
            out[int(p)] = stat.rsplit(") ", 1)[1][0]
    return out


def stopped_pids(sbname):
    """The remote processes of sandbox sbname that are stopped; asserts it
    has some (else the check would prove nothing)."""
    st = sandbox_states(sbname)
    assert st, f"no process of sandbox {sbname} found"
    return [p for p, s in st.items() if s in "Tt"]


def test_snapshot_take_restore_rmdir(remote):
    """A snapshot copies the sandbox's directory on the remote host; a new
    sandbox started from it holds the same bytes, modes and links; changes
    made after it reach neither; rmdir is EBUSY while a sandbox is based on
    it and then removes the remote copy."""
    m, _, workdir = remote
    a = make(m, "a")
    blob = os.urandom(2 * 1024 * 1024 + 5)
    (workdir / "a" / "workspace" / "blob.bin").write_bytes(blob)
    assert run(a, "mkdir -p /workspace/d/e && echo two > /workspace/d/e/g && ln -s d/e/g /workspace/l && "
                  "chmod 751 /workspace/d && echo rc > /root/.rc && echo t > /tmp/t && echo gone > /workspace/x")[0] == 0
    ctl(a, "snapshot s1")
    assert sorted(os.listdir(m.path / "snapshots")) == ["s1"]
    info = json.loads(read_text(m.path / "snapshots" / "s1" / "info.json"))
    where = workdir / ".seerfs-snapshots" / "s1"
    assert info["provider"] == "t1" and info["where"] == str(where) and info["source"] == "a"
    assert info["layers"] == ["s1"] and info["size"] >= len(blob) and info["entries"] >= 8
    assert tree(where) == tree(workdir / "a")
    assert "snapshot s1 taken" in log_text(a)
    # root/ shows the remote copy read-only, over SFTP.
    view = m.path / "snapshots" / "s1" / "root"
    assert sorted(os.listdir(m.path / "snapshots" / "s1")) == ["error", "info.json", "root"]
    assert tree(view) == tree(where)
    for bad in (lambda: (view / "workspace" / "new").write_text("x"),
                lambda: (view / "workspace" / "x").write_text("x"),
                lambda: os.mkdir(view / "workspace" / "nd"),
                lambda: os.unlink(view / "workspace" / "x"),
                lambda: os.rename(view / "workspace" / "x", view / "workspace" / "y"),
                lambda: os.chmod(view / "workspace" / "x", 0o600)):
        with pytest.raises(OSError) as e:
            bad()
        assert e.value.errno == errno.EROFS
    assert tree(view) == tree(where) and (where / "workspace" / "x").read_text() == "gone\n"
    # Later changes stay out of the snapshot.
    assert run(a, "echo changed > /workspace/d/e/g && rm /workspace/x && echo new > /workspace/n")[0] == 0
    b = make(m, "b", extra={"snapshot": "s1"})
    assert tree(workdir / "b") == tree(where)
    assert (workdir / "b" / "workspace" / "blob.bin").read_bytes() == blob
    code, out = run(b, "cat /workspace/d/e/g /root/.rc /workspace/x && readlink /workspace/l && "
                       "! test -e /workspace/n && stat -c %a /workspace/d")
    assert (code, out) == (0, b"two\nrc\ngone\nd/e/g\n751\n")
    # b's own changes do not reach the snapshot.
    assert run(b, "echo mine > /workspace/x")[0] == 0
    assert (where / "workspace" / "x").read_text() == "gone\n"
    # A snapshot of a restored sandbox names its parent; its copy is whole.
    ctl(b, "snapshot s2")
    info2 = json.loads(read_text(m.path / "snapshots" / "s2" / "info.json"))
    assert info2["parent"] == "s1" and info2["layers"] == ["s2"]
    with pytest.raises(OSError) as e:
        os.rmdir(m.path / "snapshots" / "s1")
    assert e.value.errno == errno.EBUSY
    assert "b" in read_text(m.path / "snapshots" / "s1" / "error")
    assert where.is_dir()
    ctl(b, "terminate")
    poll(lambda: read_text(b / "status").startswith("terminated"), what="b terminated")
    os.rmdir(b)
    os.rmdir(m.path / "snapshots" / "s1")
    assert not where.exists() and store_names(workdir) == ["s2"]
    assert sorted(os.listdir(m.path / "snapshots")) == ["s2"]
    os.rmdir(m.path / "snapshots" / "s2")
    assert store_names(workdir) == [] and os.listdir(m.path / "snapshots") == []
    assert [n for n in os.listdir(m.state / "snapshots")] == []


def test_snapshot_while_job_runs(remote):
    """The sandbox's processes are stopped for the copy (a writer's pair of
    files is never half updated in the snapshot) and run on afterwards."""
    m, _, workdir = remote
    a = make(m, "w")
    ws = workdir / "w" / "workspace"
    # A job of its own (a background process would end with its job's
    # pid namespace): write to exec and close, the job runs on.
    (a / "exec").write_text("cd /workspace; i=0; while :; do i=$((i+1)); "
                            "echo $i > c.t && mv c.t c; echo $i > s.t && mv s.t s; done")
    poll(lambda: (ws / "s").exists(), what="the writer started")
    for k in range(3):
        ctl(a, f"snapshot w{k}")
        snap = workdir / ".seerfs-snapshots" / f"w{k}" / "workspace"
        c, s = int((snap / "c").read_text()), int((snap / "s").read_text())
        assert s in (c, c - 1), f"snapshot w{k}: c={c} s={s}"
        # Nothing of the sandbox stays stopped, and the writer goes on.
        assert stopped_pids("w") == []
        poll(lambda: int((ws / "c").read_text() or 0) > c + 10, what="the writer goes on after the snapshot")


def test_terminate_and_timeout_snapshot(remote):
    m, _, workdir = remote
    a = make(m, "ta")
    assert run(a, "echo keep > /workspace/k")[0] == 0
    b = make(m, "tb")
    ctl(b, "snapshot taken")
    # The name is taken: a is not terminated.
    assert ctl_errno(a, "terminate snapshot=taken") == errno.EEXIST
    assert "already exists" in error_text(a)
    assert read_text(a / "status").startswith("running")
    ctl(a, "terminate snapshot=t2")
    poll(lambda: read_text(a / "status").startswith("terminated"), what="a terminated")
    assert (workdir / ".seerfs-snapshots" / "t2" / "workspace" / "k").read_text() == "keep\n"
    t = make(m, "tt", extra={"timeout": 2, "on_timeout": "snapshot"})
    assert run(t, "echo late > /workspace/l")[0] == 0
    poll(lambda: read_text(t / "status").startswith("terminated"), what="tt ended by its timeout")
    assert (workdir / ".seerfs-snapshots" / "tt-timeout" / "workspace" / "l").read_text() == "late\n"
    assert "tt-timeout" in os.listdir(m.path / "snapshots")


def test_snapshot_refusals(remote):
    """Direct mode takes no snapshots; a snapshot is restored only on the
    provider that took it; the store's name is no sandbox name."""
    m, _, workdir = remote
    d = make(m, "dm", provider="d1")
    assert ctl_errno(d, "snapshot ds") == errno.ENOTSUP
    assert "direct" in error_text(d) and "ds" in error_text(d)
    assert read_text(d / "status").startswith("running")
    assert os.listdir(m.path / "snapshots") == [] and store_names(workdir) == []
    # An ssh snapshot on the local provider, and a local one on ssh.
    a = make(m, "ra")
    ctl(a, "snapshot remote1")
    lo = m.sandbox("lo", json.dumps({"provider": "local", "snapshot": "remote1"}), want="failed")
    assert "remote1" in error_text(lo) and "t1" in error_text(lo)
    loc = m.sandbox("loc", json.dumps({"provider": "local"}))
    ctl(loc, "snapshot local1")
    x = make(m, "rx", extra={"snapshot": "local1"}, want="failed")
    assert "local1" in error_text(x) and "provider local" in error_text(x)
    assert not (workdir / "rx").exists()
    # Direct mode cannot start from a snapshot either.
    y = make(m, "ry", provider="d1", extra={"snapshot": "remote1"}, want="failed")
    assert "remote1" in error_text(y)
    z = make(m, ".seerfs-snapshots", want="failed")
    assert "snapshots" in error_text(z)
    assert sorted(os.listdir(m.path / "snapshots")) == ["local1", "remote1"]


@pytest.mark.skipif(os.getuid() != 0, reason="mounting a small tmpfs as the remote workdir needs root")
def test_snapshot_remote_disk_full_leaves_nothing(remote):
    """ENOSPC on the remote host: the write to ctl fails with ENOSPC, the
    error says to free space, no partial copy stays on either side, and the
    sandbox runs on with its files and processes untouched."""
    m, _, workdir = remote
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(workdir)], check=True)
    try:
        a = make(m, "full")
        code, out = run(a, "head -c 5000000 /dev/urandom > /workspace/big && md5sum < /workspace/big")
        assert code == 0
        (a / "exec").write_text("while :; do date +%s%N > /workspace/tick; sleep 0.01; done")
        poll(lambda: (workdir / "full" / "workspace" / "tick").exists(), what="the ticker started")
        assert ctl_errno(a, "snapshot big") == errno.ENOSPC
        assert "big" in error_text(a) and "free space" in error_text(a)
        assert os.listdir(m.path / "snapshots") == [] and os.listdir(m.state / "snapshots") == []
        assert store_names(workdir) == []
        assert read_text(a / "status").startswith("running")
        assert stopped_pids("full") == []
        assert run(a, "md5sum < /workspace/big")[1] == out
        t0 = (workdir / "full" / "workspace" / "tick").read_text()
        poll(lambda: (workdir / "full" / "workspace" / "tick").read_text() != t0, what="the sandbox runs on")
        # With room again, the same name works.
        assert run(a, "rm /workspace/big")[0] == 0
        ctl(a, "snapshot big")
        assert store_names(workdir) == ["big"]
    finally:
        subprocess.run(["umount", "-l", str(workdir)])


def _text_or_none(p):
    try:
        return p.read_text()
    except OSError:
        return None


def test_snapshot_rmdir_unreachable_then_reconnect(remote, sshd):
    """rmdir of a remote snapshot while its host is down fails, says why
    and loses nothing; after the reconnect root/ is served again through
    the new link and rmdir removes the copy."""
    m, _, workdir = remote
    a = make(m, "u")
    assert run(a, "echo v > /workspace/v")[0] == 0
    ctl(a, "snapshot u1")
    view = m.path / "snapshots" / "u1" / "root" / "workspace" / "v"
    assert view.read_text() == "v\n"
    sshd.stop_process()
    try:
        with pytest.raises(OSError) as e:
            os.rmdir(m.path / "snapshots" / "u1")
        assert e.value.errno in (errno.ENOTCONN, errno.ETIMEDOUT)
        why = read_text(m.path / "snapshots" / "u1" / "error")
        assert "u1" in why and "disconnected" in why and "try again" in why
    finally:
        sshd._launch()
    assert os.listdir(m.path / "snapshots") == ["u1"]
    assert (workdir / ".seerfs-snapshots" / "u1" / "workspace" / "v").read_text() == "v\n"
    poll(lambda: _text_or_none(view) == "v\n", what="root/ of u1 served again after the reconnect")
    os.rmdir(m.path / "snapshots" / "u1")
    assert store_names(workdir) == [] and os.listdir(m.path / "snapshots") == []


def test_snapshot_rmdir_provider_gone(remote):
    """A snapshot whose provider entry left the providers file cannot be
    deleted (its copy would be lost from sight): ENXIO with the reason;
    putting the entry back makes rmdir work."""
    m, pfile, workdir = remote
    a = make(m, "pg")
    ctl(a, "snapshot pg1")
    saved = pfile.read_text()
    entries = json.loads(saved)
    del entries["t1"]
    pfile.write_text(json.dumps(entries))
    try:
        with pytest.raises(OSError) as e:
            os.rmdir(m.path / "snapshots" / "pg1")
        assert e.value.errno == errno.ENXIO
        why = read_text(m.path / "snapshots" / "pg1" / "error")
        assert "t1" in why and "providers file" in why
        assert (workdir / ".seerfs-snapshots" / "pg1").is_dir()
    finally:
        pfile.write_text(saved)
    os.rmdir(m.path / "snapshots" / "pg1")
    assert store_names(workdir) == []


def test_restored_sandbox_keeps_its_files_across_remount(remote, seerfs_factory):
    """The copy from the snapshot is made once, when the sandbox's directory
    does not exist: after a remount the sandbox restarts with its own
    changes, not with the snapshot's files again."""
    m, pfile, workdir = remote
    a = make(m, "ka")
    assert run(a, "echo snap > /workspace/f")[0] == 0
    ctl(a, "snapshot k1")
    b = make(m, "kb", extra={"snapshot": "k1"})
    assert run(b, "echo mine > /workspace/f")[0] == 0
    m.stop(terminate_first=False)
    m2 = seerfs_factory(state=m.state, args=("-o", f"providers={pfile}"))
    b2 = m2.path / "kb"
    assert wait_settled(b2) == "running"
    poll(lambda: "running again" in log_text(b2), what="kb restarted after the remount")
    assert run(b2, "cat /workspace/f") == (0, b"mine\n")
    assert sorted(os.listdir(m2.path / "snapshots")) == ["k1"]


def test_restore_from_a_copy_removed_by_hand(remote):
    """A snapshot whose remote copy vanished fails provisioning with a
    message that names it and says what to do; nothing is left behind."""
    m, _, workdir = remote
    a = make(m, "ga")
    ctl(a, "snapshot g1")
    shutil.rmtree(workdir / ".seerfs-snapshots" / "g1")
    b = make(m, "gb", extra={"snapshot": "g1"}, want="failed")
    assert "g1" in error_text(b) and "gone" in error_text(b) and "rmdir" in error_text(b)
    assert not (workdir / "gb").exists()
    assert [n for n in os.listdir(workdir) if "@" in n] == []
    ctl(b, "terminate")
    poll(lambda: read_text(b / "status").startswith("terminated"), what="gb terminated")
    os.rmdir(b)
    os.rmdir(m.path / "snapshots" / "g1")   # a copy already gone counts as deleted
    assert os.listdir(m.path / "snapshots") == []
