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
                      write_config)
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


# ---- root/ confined: the sandbox's own "/" through its own sftp-server ----------------

def bwrapped(sb):
    if "isolation: bubblewrap" not in log_text(sb):
        pytest.skip("no working bwrap on the test host: root/ is the remote directory there")


def test_root_is_the_sandboxes_own_slash(remote):
    m, _, workdir = remote
    sb = make(m, "c")
    bwrapped(sb)
    assert "root/ is the sandbox's own / as its commands see it" in log_text(sb)
    root = sb / "root"
    assert {"usr", "etc", "workspace", "tmp", "root"} <= set(os.listdir(root))
    # /etc is the host's, read-only, as the commands see it: sshd's keys hidden.
    assert (root / "etc" / "hostname").read_bytes() == run(sb, "cat /etc/hostname")[1]
    assert os.listdir(root / "etc" / "ssh") == []
    if os.path.exists("/etc/shadow"):       # /dev/null on a nodev bind: EACCES, as inside
        with pytest.raises(OSError) as ei:
            (root / "etc" / "shadow").read_bytes()
        assert ei.value.errno == errno.EACCES
        assert run(sb, "cat /etc/shadow")[0] != 0
    with pytest.raises(OSError) as ei:
        open(root / "etc" / "hostname", "a").close()
    assert ei.value.errno in (errno.EROFS, errno.EACCES)
    with pytest.raises(OSError) as ei:
        os.mkdir(root / "usr" / "seerfs-x")
    assert ei.value.errno in (errno.EROFS, errno.EACCES)
    assert not (pathlib.Path("/usr") / "seerfs-x").exists()
    # "/" itself is each bwrap's private tmpfs: nothing written there would
    # reach the commands, so root/ refuses it.
    with pytest.raises(OSError) as ei:
        os.mkdir(root / "opt-seerfs")
    assert ei.value.errno == errno.EROFS
    # /workspace, /tmp and /root are the sandbox's directories on the host.
    for d in ("workspace", "tmp", "root"):
        (root / d / "t").write_text(d)
        assert (workdir / "c" / d / "t").read_text() == d
        assert run(sb, f"cat /{d}/t")[1] == d.encode()


def test_root_follows_a_swapped_symlink_inside(remote):
    """A directory the kernel knows, swapped on the host for a symlink to a
    host directory: the server resolves the path below it, and resolves it
    in the sandbox (its /tmp), never on the host."""
    m, _, workdir = remote
    sb = make(m, "sw")
    bwrapped(sb)
    host = pathlib.Path("/tmp") / ("seerfs-host-" + uuid.uuid4().hex)
    host.mkdir()
    (host / "f").write_text("HOST\n")
    try:
        ws = workdir / "sw" / "workspace"
        (ws / "d").mkdir()
        (ws / "d" / "f").write_text("INSIDE\n")
        (workdir / "sw" / "tmp" / host.name).mkdir()
        (workdir / "sw" / "tmp" / host.name / "f").write_text("SANDBOX-TMP\n")
        assert (sb / "root" / "workspace" / "d").is_dir()     # the kernel knows d now
        (ws / "d").rename(ws / "d.old")
        (ws / "d").symlink_to(host)
        assert (sb / "root" / "workspace" / "d" / "f").read_text() == "SANDBOX-TMP\n"
    finally:
        shutil.rmtree(host)


def _ppid(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(l for l in f if l.startswith("PPid:")).split()[1])


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def sftp_servers(sbdir_on_host):
    """pids of the sftp-server processes under a bwrap that binds sbdir_on_host."""
    want = str(sbdir_on_host / "workspace").encode()
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or not (_cmdline(p) or [b""])[0].endswith(b"sftp-server"):
            continue
        try:
            up = _ppid(p)
            for _ in range(3):
                if want in _cmdline(up):
                    found.append(int(p))
                    break
                up = _ppid(up)
        except (OSError, StopIteration):
            pass
    return found


def test_root_sftp_server_one_per_sandbox_restarted_no_secrets(tmp_path, sshd, seerfs_factory):
    workdir = tmp_path / "remote-work"
    pfile = tmp_path / "providers.json"
    pfile.write_text(json.dumps({"t1": entry(sshd, workdir)}))
    secret = "seerfs-secret-" + uuid.uuid4().hex
    m = seerfs_factory(args=("-o", f"providers={pfile}"), env={"SEERFS_T_TOKEN": secret})
    sb = make(m, "k", extra={"secrets": ["SEERFS_T_TOKEN"]})
    bwrapped(sb)
    assert run(sb, "printenv SEERFS_T_TOKEN")[1] == secret.encode() + b"\n"
    (sb / "root" / "workspace" / "a").write_text("1")
    os.listdir(sb / "root" / "workspace")
    pids = sftp_servers(workdir / "k")
    assert len(pids) == 1, pids                    # one server per sandbox, not per access
    # Nothing on a command line carries the sandbox's secret.
    for p in os.listdir("/proc"):
        if p.isdigit():
            assert secret.encode() not in b" ".join(_cmdline(p)), _cmdline(p)
    os.kill(pids[0], 9)
    poll(lambda: "root/'s SFTP server on" in log_text(sb) and "ended" in log_text(sb), what="the end logged")

    def back():
        try:
            return (sb / "root" / "workspace" / "a").read_text() == "1"
        except OSError:
            return False
    poll(back, what="root/ served again")
    new = sftp_servers(workdir / "k")
    assert len(new) == 1 and new != pids, (pids, new)
    # Terminating the sandbox ends its server.
    ctl(sb, "terminate")
    poll(lambda: not sftp_servers(workdir / "k"), what="the server gone after stop")


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
