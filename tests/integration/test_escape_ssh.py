"""test_escape_ssh.py - what a process inside a sandbox of the `ssh` provider
cannot do (docs/ssh.md, "What the remote isolation gives"): the kernel's
keyrings, new namespaces and mounts (the system call filter, Seccomp mode 2),
the kernel's shared state under /proc (masked or read-only), and its own
agent: not traceable, not readable through /proc, not killable or stoppable
from inside. Checked from inside through the exec file, against a private
sshd on 127.0.0.1 (sshd_fixture.py) that runs as the test's user, so this
file forces the ssh provider whatever SEERFS_TEST_PROVIDER says. Each
negative check has a positive twin, so a broken probe cannot pass for
isolation.
"""

import json
import os
import pathlib
import platform
import re
import shutil
import stat

import pytest

from conftest import error_text, log_text, sandbox_run, ssh_entry, status_text, wait_settled, write_config
from sshd_fixture import SshdFixture

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="needs openssh-server (/usr/sbin/sshd)"),
    pytest.mark.skipif(shutil.which("bwrap") is None,
                       reason="needs bubblewrap on the (local) ssh host: without it the provider runs unisolated"),
]

# /proc entries the provider masks (core/providers/ssh/ssh.c, proc_masked), a
# sample that most kernels have; and ones it makes read-only.
MASKED = ["keys", "key-users", "timer_list", "kallsyms", "sched_debug", "slabinfo", "vmallocinfo", "kmsg",
          "kcore", "zoneinfo", "buddyinfo", "pagetypeinfo"]
MASKED_DIRS = ["acpi", "asound", "scsi"]

# keyctl and add_key by number (Python has no wrapper): x86_64, aarch64.
KEY_SYSCALLS = {"x86_64": (248, 250), "aarch64": (217, 219)}


@pytest.fixture(scope="module")
def sshd():
    with SshdFixture() as s:
        yield s


def entry(sshd, workdir, **kw):
    return ssh_entry(sshd, workdir, **kw)


def mount(tmp_path, sshd, seerfs_factory):
    """(mount, workdir): t1 runs commands through the agent, tc over a
    channel each (their own bubblewrap per command)."""
    workdir = tmp_path / "remote-work"
    pfile = tmp_path / "providers.json"
    pfile.write_text(json.dumps({"t1": entry(sshd, workdir), "tc": entry(sshd, workdir, exec="channel")}))
    return seerfs_factory(args=("-o", f"providers={pfile}")), workdir


@pytest.fixture
def remote(tmp_path, sshd, seerfs_factory):
    return mount(tmp_path, sshd, seerfs_factory)


def make(m, name, provider="t1", want="running"):
    return m.sandbox(name, json.dumps({"provider": provider}), want=want)


def run(sb, cmd, timeout=60.0):
    code, out = sandbox_run(sb, cmd, timeout)
    return code, out.decode(errors="replace")


def agent_or_skip(sb):
    """The agent runs (as pid 1 of the sandbox's pid namespace), or skip."""
    code, out = run(sb, "cat /proc/1/comm")
    if "lacks --as-pid-1" in log_text(sb):
        pytest.skip("this host's bubblewrap lacks --as-pid-1 (0.8): commands run without the agent")
    assert (code, out) == (0, "seerfs-agent\n"), (out, log_text(sb))


def agent_starts(sb):
    return log_text(sb).count("commands start through its agent")


# ---- the system call filter ------------------------------------------------------


@pytest.mark.parametrize("provider", ["t1", "tc"])
def test_seccomp_filter_in_every_command(remote, provider):
    """Mode 2 (a filter) in the commands, through the agent and over a
    channel each; what it denies fails with EPERM; what it allows works."""
    m, _ = remote
    sb = make(m, "f" + provider)
    code, out = run(sb, "grep '^Seccomp:' /proc/self/status")
    assert (code, out) == (0, "Seccomp:\t2\n"), (out, log_text(sb))
    code, out = run(sb, "unshare -U true; echo rc=$?; unshare -m true; echo rc=$?; "
                        "mkdir -p /tmp/mnt && mount -t tmpfs none /tmp/mnt; echo rc=$?")
    assert out.count("rc=0") == 0 and out.count("rc=") == 3, out
    assert "Operation not permitted" in out, out
    # the twin: forks, pipes and files work
    code, out = run(sb, "echo a | (cat; echo b > /tmp/f; cat /tmp/f)")
    assert (code, out) == (0, "a\nb\n")
    # the log says what the status says
    assert "system call filter" in log_text(sb) and "system call filter" in status_text(sb)


def test_keyrings_denied(remote):
    """keyctl and add_key: the kernel's keyrings are per user, shared with
    the host and every other sandbox of that user: EPERM."""
    nums = KEY_SYSCALLS.get(platform.machine())
    if nums is None:
        pytest.skip(f"keyctl/add_key numbers known for {sorted(KEY_SYSCALLS)} only, not {platform.machine()}")
    add_key, keyctl = nums
    m, _ = remote
    sb = make(m, "k")
    code, out = run(sb, f"""python3 - <<'EOF'
import ctypes
l = ctypes.CDLL(None, use_errno=True)
r1 = l.syscall({keyctl}, 0, -3, 0)               # KEYCTL_GET_KEYRING_ID of the session keyring
e1 = ctypes.get_errno()
r2 = l.syscall({add_key}, b"user", b"seer", b"x", 1, -3)
e2 = ctypes.get_errno()
print(r1, e1, r2, e2, l.getpid() > 0)
EOF""")
    assert code == 0, out
    assert out.split() == ["-1", "1", "-1", "1", "True"], out   # EPERM twice


def test_filter_placed_once_private_whole(remote):
    """WORKDIR/.seerfs-isolation holds the filter (0600), an empty file and
    an empty directory, all the login user's, no temporary names left; the
    sandbox cannot see the directory."""
    m, workdir = remote
    sb = make(m, "p")
    iso = workdir / ".seerfs-isolation"
    st = os.lstat(iso)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
    f = os.lstat(iso / "seccomp.bpf")
    assert stat.S_ISREG(f.st_mode) and stat.S_IMODE(f.st_mode) == 0o600 and f.st_uid == os.getuid()
    assert f.st_size > 0 and f.st_size % 8 == 0   # struct sock_filter
    assert os.lstat(iso / "empty-file").st_size == 0
    assert os.listdir(iso / "empty-dir") == []
    assert sorted(os.listdir(iso)) == ["empty-dir", "empty-file", "seccomp.bpf"]
    code, out = run(sb, f"ls -a {workdir} 2>&1; ls -a / ")
    assert ".seerfs-isolation" not in out, out
    # a sandbox cannot take the directory's name
    bad = m.sandbox(".seerfs-isolation", json.dumps({"provider": "t1"}), want="failed")
    assert "system call filter" in error_text(bad)
    assert stat.S_ISDIR(os.lstat(iso).st_mode) and os.lstat(iso / "seccomp.bpf").st_size == f.st_size


# ---- /proc ---------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["t1", "tc"])
def test_proc_kernel_state_masked(remote, provider):
    """The masked entries read empty (or fail), the masked directories are
    empty, /proc/sys is read-only; the twin: the sandbox's own /proc works."""
    m, _ = remote
    sb = make(m, "m" + provider)
    here = [n for n in MASKED if os.path.exists(f"/proc/{n}")]
    assert "keys" in here or "timer_list" in here, "this kernel has neither /proc/keys nor /proc/timer_list"
    for n in here:
        code, out = run(sb, f"head -c 4096 /proc/{n} 2>/dev/null | wc -c")
        assert out.strip() == "0", (n, out)
    for n in [d for d in MASKED_DIRS if os.path.isdir(f"/proc/{d}")]:
        code, out = run(sb, f"ls -A /proc/{n} | wc -l")
        assert (code, out.strip()) == (0, "0"), (n, out)
    code, out = run(sb, "echo '|/tmp/x' > /proc/sys/kernel/core_pattern; echo rc=$?; cat /proc/sys/kernel/core_pattern")
    assert "rc=0" not in out and "Read-only file system" in out, out
    assert "|/tmp/x" not in out.split("\n", 1)[1], out
    if os.path.exists("/proc/sysrq-trigger"):
        code, out = run(sb, "echo h > /proc/sysrq-trigger; echo rc=$?")
        assert "rc=0" not in out, out
    # the twin: its own processes, the sysctls it reads, cpuinfo
    code, out = run(sb, "grep -c '^processor' /proc/cpuinfo; cat /proc/sys/kernel/hostname; "
                        "grep '^Name:' /proc/self/status")
    lines = out.split()
    assert code == 0 and int(lines[0]) >= 1 and lines[1] == "m" + provider and lines[-1] == "grep", out


def sftp_server_pids(sshd):
    pids = []
    for pid in sshd.session_pids():
        try:
            if pathlib.Path(f"/proc/{pid}/comm").read_text().strip() == "sftp-server":
                pids.append(pid)
        except OSError:
            pass
    return pids


def test_root_sftp_server_filtered(remote, sshd):
    """root/'s SFTP server runs in the same bubblewrap: filtered and with
    the same masks (seen from the host, the sshd being on this machine:
    root/proc's files have no size over SFTP, so they read empty here)."""
    m, _ = remote
    sb = make(m, "r")
    assert "workspace" in os.listdir(sb / "root")   # starts it
    pids = sftp_server_pids(sshd)
    assert len(pids) == 1, pids
    status = pathlib.Path(f"/proc/{pids[0]}/status").read_text()
    assert re.search(r"^Seccomp:\s+2$", status, re.M), status
    inside = pathlib.Path(f"/proc/{pids[0]}/root/proc")
    for n in [n for n in MASKED if os.path.exists(f"/proc/{n}")]:
        try:
            assert (inside / n).read_bytes()[:4096] == b"", n
        except PermissionError:
            pass
    # the twin: its own /proc is there (its pid namespace: bwrap's init and it)
    assert sorted(int(n) for n in os.listdir(inside) if n.isdigit()) == [1, 2]
    assert (inside / "2" / "comm").read_text() == "sftp-server\n"
    assert b"processor" in (inside / "cpuinfo").read_bytes()


# ---- the agent -----------------------------------------------------------------------


def test_agent_not_traceable_nor_readable(remote):
    """The agent is the namespace's init and not dumpable: ptrace attach
    fails with EPERM, its memory, environment and descriptors are closed to
    the sandbox's processes (of the same user). The twin: a process of the
    sandbox can trace its own child."""
    m, _ = remote
    sb = make(m, "t")
    agent_or_skip(sb)
    code, out = run(sb, """python3 - <<'EOF'
import ctypes, os, time
l = ctypes.CDLL(None, use_errno=True)
r = l.ptrace(16, 1, 0, 0)                         # PTRACE_ATTACH to the agent
e = ctypes.get_errno()
c = os.fork()
if c == 0:
    time.sleep(5)
    os._exit(0)
r2 = l.ptrace(16, c, 0, 0)                        # its own child: allowed
os.kill(c, 9)
os.waitpid(c, 0)
print(r, e, r2)
EOF""")
    assert out.split() == ["-1", "1", "0"], out   # EPERM for the agent
    code, out = run(sb, "for f in environ mem maps auxv; do head -c 1 /proc/1/$f >/dev/null 2>&1 && echo open $f; done; "
                        "readlink /proc/1/fd/0 /proc/1/cwd /proc/1/exe 2>/dev/null && echo links; echo end")
    assert out == "end\n", out
    assert "dumpable" not in log_text(sb)   # the agent said nothing about failing


def test_agent_survives_signals_from_inside(remote):
    """Every signal a sandbox process can send to the agent is dropped by the
    kernel: SIGSTOP, SIGKILL, SIGTERM, ... to pid 1, kill -9 -1; the next
    command runs through the same agent, and a command still gets its own
    signals (the twin)."""
    m, _ = remote
    sb = make(m, "s")
    agent_or_skip(sb)
    assert agent_starts(sb) == 1
    code, out = run(sb, "kill -STOP 1; echo stop=$?")
    assert code == 0 and "stop=" in out, out
    code, out = run(sb, "echo after-stop", timeout=20)
    assert (code, out) == (0, "after-stop\n")
    code, out = run(sb, """python3 - <<'EOF'
import os, signal
for s in range(1, 32):
    if s != signal.SIGCHLD:
        os.kill(1, s)
print("sent")
EOF""")
    assert (code, out) == (0, "sent\n"), out
    code, out = run(sb, "echo after-all", timeout=20)
    assert (code, out) == (0, "after-all\n")
    # kill(-1) from inside: everything it may signal but init (and itself)
    code, out = run(sb, "kill -KILL -1")
    code, out = run(sb, "cat /proc/1/comm", timeout=20)
    assert (code, out) == (0, "seerfs-agent\n")
    assert agent_starts(sb) == 1, log_text(sb)   # never restarted
    code, out = run(sb, "kill -TERM $$")
    assert code == "signal 15", (code, out)


# ---- a machine the filter does not know -------------------------------------------------


@pytest.fixture(scope="module")
def sshd_vax(tmp_path_factory):
    """An sshd whose logins find a `uname` that says vax first on the PATH."""
    bindir = tmp_path_factory.mktemp("bin-vax")
    (bindir / "uname").write_text("#!/bin/sh\necho vax\n")
    (bindir / "uname").chmod(0o755)
    os.chmod(bindir, 0o755)
    with SshdFixture(extra_config=(f"SetEnv PATH={bindir}:/usr/local/bin:/usr/bin:/bin",)) as s:
        yield s


def test_unknown_machine_refused(tmp_path, sshd_vax, seerfs_factory):
    """A host whose machine type the filter does not know: the sandbox is
    refused, naming the machine and the types seerfs knows, and nothing of
    it runs there unfiltered (no directory made for it, no filter placed)."""
    m, workdir = mount(tmp_path, sshd_vax, seerfs_factory)
    sb = make(m, "v", want="failed")
    err = error_text(sb)
    assert "vax" in err and "system call filter" in err and "x86_64" in err, err
    assert not (workdir / "v").exists()
    assert not (workdir / ".seerfs-isolation" / "seccomp.bpf").exists()
    # retrying gives the same answer, not a sandbox without the filter
    write_config(sb, json.dumps({"provider": "tc"}))
    assert wait_settled(sb) == "failed"
    assert "vax" in error_text(sb)
