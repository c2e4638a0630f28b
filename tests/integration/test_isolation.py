"""test_isolation.py - what a process inside a real local sandbox cannot do,
checked from inside through the exec file (sandbox_run): read the mounting
user's files or the state directory, see host processes, write outside its
own tree, reach the network when "network" is false, see GPUs it did not ask
for. Each negative check has a positive twin where that makes sense, so a
broken probe cannot pass for isolation.
"""

import os
import pathlib
import re
import shutil
import socket
import subprocess
import threading
import uuid

import pytest

from conftest import (error_text, sandbox_run, status_fields, status_text, wait_settled, write_config)


def run(sbdir, cmd):
    code, out = sandbox_run(sbdir, cmd)
    return code, out.decode(errors="replace")


@pytest.fixture
def planted():
    """A file with a random token in the mounting user's home; removed after."""
    home = pathlib.Path(os.path.expanduser("~"))
    if not home.is_dir() or not os.access(home, os.W_OK):
        pytest.skip(f"home directory {home} is not writable by this user")
    token = "planted-" + uuid.uuid4().hex          # in the content only, not the name
    p = home / f".seerfs-test-{uuid.uuid4().hex[:8]}"
    p.write_text(token + "\n")
    p.chmod(0o644)
    try:
        yield p, token
    finally:
        p.unlink()


def test_exec_works(sandbox):
    """The probe itself: commands run, output and exit status come back."""
    code, out = run(sandbox, "echo out; echo err >&2; exit 3")
    assert code == 3
    assert "out" in out and "err" in out
    code, out = run(sandbox, "id -u; pwd; cat /etc/hostname")
    assert code == 0, out
    lines = out.split()
    assert lines[1] == "/workspace" and lines[2] == "sb", out


def test_cannot_read_home(sandbox, planted):
    path, token = planted
    code, out = run(sandbox, f"cat {path}; ls -a {path.parent}")
    assert token not in out
    code, out = run(sandbox, f"cat {path}")
    assert code != 0
    code, out = run(sandbox, f"grep -rsl {token} /root /home /workspace /tmp /var /opt 2>/dev/null; true")
    assert out.strip() == "", out


def test_cannot_read_state_dir(mnt, sandbox):
    token = "statefile-" + uuid.uuid4().hex
    p = mnt.state / f"planted-{uuid.uuid4().hex[:8]}"
    p.write_text(token)
    p.chmod(0o644)
    code, out = run(sandbox, f"cat {p}; ls {mnt.state}; ls {mnt.state}/sandboxes/sb")
    assert token not in out
    assert code != 0
    # the sandbox's own control files are not reachable either
    code, out = run(sandbox, f"ls {mnt.path}; cat {mnt.path}/README")
    assert code != 0 and "seerfs: every directory" not in out, out


def test_cannot_see_host_pids(sandbox):
    code, out = run(sandbox, "for p in /proc/[0-9]*; do echo \"${p#/proc/} $(tr '\\0' ' ' < $p/cmdline)\"; done")
    assert code == 0, out
    procs = [line.split(" ", 1) for line in out.splitlines() if line.strip()]
    pids = [int(p[0]) for p in procs]
    cmdlines = " ".join(p[1] if len(p) > 1 else "" for p in procs)
    assert len(pids) < 20, out
    assert "pytest" not in cmdlines and "seerfs /" not in cmdlines and "/sbin/init" not in cmdlines, out
    assert os.getpid() not in pids or os.getpid() < 50
    code, out = run(sandbox, f"kill -0 {os.getpid()}")
    assert code != 0
    code, out = run(sandbox, "cat /proc/1/cmdline | tr '\\0' ' '")
    assert "agent" in out, out


@pytest.mark.parametrize("target", ["/usr/seerfs-probe", "/etc/seerfs-probe", "/usr/bin/seerfs-probe",
                                    "/etc/passwd"])
def test_cannot_write_outside(sandbox, target):
    code, out = run(sandbox, f"echo x >> {target}")
    assert code != 0
    assert "Read-only file system" in out, out
    assert not os.path.exists(target) or target == "/etc/passwd"


def test_can_write_own_tree(sandbox):
    code, out = run(sandbox, "for d in /workspace /root /tmp /var /opt; do echo hi > $d/probe && cat $d/probe; done")
    assert code == 0, out
    assert out.split() == ["hi"] * 5


def test_no_secret_host_files(sandbox):
    """Files that would leak host secrets read empty (or are absent) inside."""
    code, out = run(sandbox, "cat /etc/shadow /etc/gshadow 2>/dev/null; ls /etc/ssh 2>/dev/null; true")
    assert "root:" not in out, out


@pytest.fixture
def tcp_server():
    """A TCP server on the host's 127.0.0.1 that answers 'hello' and counts connections."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    seen = []
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            seen.append(1)
            try:
                c.sendall(b"hello\n")
            finally:
                c.close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield srv.getsockname()[1], seen
    stop.set()
    t.join()
    srv.close()


CONNECT = ("python3 -c \"import socket,sys; s=socket.create_connection(('127.0.0.1', {port}), timeout=3); "
           "sys.stdout.write(s.recv(16).decode())\"")


def test_network_false(mnt, tcp_server):
    port, seen = tcp_server
    d = mnt.sandbox("nonet", '{"network": false}')
    assert "no network" in status_text(d)
    code, out = run(d, "cat /proc/net/dev")
    assert code == 0, out
    ifaces = [line.split(":")[0].strip() for line in out.splitlines() if ":" in line]
    assert ifaces == ["lo"], out
    code, out = run(d, CONNECT.format(port=port))
    assert code != 0 and "hello" not in out, out
    assert seen == []


def test_network_default_reaches_host(sandbox, tcp_server):
    """The positive twin: with the default network the same probe connects."""
    port, seen = tcp_server
    code, out = run(sandbox, CONNECT.format(port=port))
    assert code == 0 and "hello" in out, out
    assert seen


def test_gpu_null_sees_no_nvidia(sandbox):
    code, out = run(sandbox, "ls /dev; ls /dev/nvidia* 2>&1; true")
    assert "nvidia" not in out.split("ls:")[0], out
    assert "/dev/nvidia" not in out.replace("cannot access '/dev/nvidia*'", ""), out


def _host_gpus():
    try:
        p = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [x.strip() for x in p.stdout.splitlines() if x.strip()] if p.returncode == 0 else []


def test_gpu_a100_without_it_fails(mnt):
    if any("A100" in g for g in _host_gpus()):
        pytest.skip("this host has an A100")
    d = mnt.path / "gpu"
    os.mkdir(d)
    write_config(d, '{"gpu": "A100"}')
    assert wait_settled(d) == "failed"
    reason = status_fields(status_text(d)).get("reason", "")
    assert "A100" in reason and ("no NVIDIA GPU" in reason or "has only" in reason or "no working" in reason), reason
    assert "A100" in error_text(d)


@pytest.mark.skipif(not _host_gpus(), reason="no NVIDIA GPU on this host")
def test_gpu_requested_is_visible(mnt):
    """The positive twin of gpu null, where there is a GPU: asking for its
    type gives the sandbox the device nodes and a working nvidia-smi."""
    name = _host_gpus()[0]
    m = re.search(r"\b(H100|H200|A100|A10G|A10|L40S|L4|T4|V100)\b", name)
    kind = m.group(1) if m else name.split()[-1]
    smi = shutil.which("nvidia-smi")
    d = mnt.path / "gpu2"
    os.mkdir(d)
    write_config(d, '{"gpu": "%s"}' % kind)
    assert wait_settled(d) == "running", error_text(d)
    code, out = run(d, f"ls /dev/nvidia*; {smi} -L")
    assert code == 0 and "/dev/nvidia0" in out and "GPU 0" in out, out
    # and a sandbox without gpu on the same host still sees none
    n = mnt.sandbox("nogpu", "{}")
    code, out = run(n, f"ls /dev/nvidia* 2>&1; {smi} -L 2>&1; true")
    assert "GPU 0" not in out and "\n/dev/nvidia" not in "\n" + out, out
