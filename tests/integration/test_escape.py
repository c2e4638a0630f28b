"""test_escape.py - escape attempts from inside local sandboxes (#15).

Each test is what an attacker in the sandbox would try: the sysctl and
core_pattern route to host root, the host keyring, ptrace and signals to the
sandbox's init (the agent), the kernel's root-only /proc tables, setuid
files, mount, unshare and device nodes, and the secrets in the environment
of seerfs's helper processes. Every attempt asserts that it failed inside
AND that the host is untouched (its core_pattern, keyring, a marker file).
They run as root (where the sandbox's ids are a subordinate range) and as
the user seer (where they are that user's own id).
"""

import json
import os
import pathlib
import subprocess
import uuid

import pytest

from conftest import IS_ROOT, LOCAL, ctl, log_text, poll, sandbox_run, state, wait_settled

pytestmark = pytest.mark.skipif(not LOCAL, reason="ssh provider: these attempts are for the local provider; "
                                "test_escape_ssh.py has the remote ones")


def run(sbdir, cmd, timeout=60.0):
    code, out = sandbox_run(sbdir, cmd, timeout=timeout)
    return code, out.decode(errors="replace")


def py(sbdir, code):
    """Runs a python3 snippet in the sandbox; returns (exit, output)."""
    return run(sbdir, "python3 -c " + "'" + code.replace("'", "'\"'\"'") + "'")


def subid_base():
    """The first host uid of user seerfs's range (root's mounts map to it)."""
    for line in pathlib.Path("/etc/subuid").read_text().splitlines():
        name, start, _count = line.split(":")
        if name == "seerfs":
            return int(start)
    raise AssertionError("no range for user seerfs in /etc/subuid after a root mount")


# ---- ids -----------------------------------------------------------------------------


def test_sandbox_root_is_not_host_root(sandbox):
    """Root's mount: the sandbox's uid 0 is a subordinate id, never host 0;
    a user's mount: that user's own id, one id only."""
    code, out = run(sandbox, "cat /proc/self/uid_map /proc/self/gid_map; id -u; touch /workspace/owned")
    assert code == 0, out
    maps = [line.split() for line in out.splitlines()[:2]]
    if IS_ROOT:
        base = subid_base()
        assert base >= 100000
        assert maps[0] == ["0", str(base), "65536"], out
        host_owner = base
    else:
        assert maps[0] == ["0", str(os.getuid()), "1"], out
        host_owner = os.getuid()
    assert out.splitlines()[2] == "0"
    st = os.stat(sandbox / "root" / "workspace" / "owned")
    # root/ shows the sandbox's view or the host's; the file on the host disk
    # is what counts: find it in the state directory.
    upper = pathlib.Path(sandbox).parent.parent / "state0" / "sandboxes" / "sb" / "fs" / "upper" / "workspace" / "owned"
    if upper.exists():
        assert upper.stat().st_uid == host_owner, (upper.stat().st_uid, host_owner)
    assert st.st_size == 0


def test_setuid_file_is_not_host_root(sandbox):
    """A setuid-root binary made inside is not setuid root on the host disk,
    and gains nothing inside (the tree is mounted nosuid)."""
    code, out = run(sandbox, "cp /usr/bin/id /workspace/suid && chmod 4755 /workspace/suid && "
                             "ls -ln /workspace/suid && grep -w /workspace /proc/self/mountinfo")
    assert code == 0, out
    assert "nosuid" in out.splitlines()[-1], out
    upper = pathlib.Path(sandbox).parent.parent / "state0" / "sandboxes" / "sb" / "fs" / "upper" / "workspace" / "suid"
    if IS_ROOT:
        st = upper.stat()
        assert st.st_uid != 0 and st.st_uid == subid_base(), st


# ---- the kernel's shared state ----------------------------------------------------------


def test_core_pattern_and_sysctls_are_read_only(sandbox):
    """The route to host root: core_pattern (and any sysctl) cannot be
    written; the host's stays as it was."""
    sysctls = {p: pathlib.Path(p).read_text() for p in ("/proc/sys/kernel/core_pattern",
                                                        "/proc/sys/kernel/printk_ratelimit")}
    marker = f"|/workspace/pwn-{uuid.uuid4().hex}"
    try:
        for path, value in [("/proc/sys/kernel/core_pattern", marker), ("/proc/sys/kernel/printk_ratelimit", "7"),
                            ("/proc/sys/vm/drop_caches", "3"), ("/proc/sysrq-trigger", "h")]:
            code, out = run(sandbox, f"echo '{value}' > {path}")
            assert code != 0, (path, out)
            # sysrq-trigger: read-only where this procfs shows it at all
            assert ("Read-only file system" in out or "Permission denied" in out or
                    path == "/proc/sysrq-trigger"), (path, out)
        for path, before in sysctls.items():
            assert pathlib.Path(path).read_text() == before, path
    finally:
        # A build that lets the write through must not leave the host so.
        for path, before in sysctls.items():
            if IS_ROOT and pathlib.Path(path).read_text() != before:
                pathlib.Path(path).write_text(before)
    code, out = run(sandbox, "grep -E ' /proc/sys ' /proc/self/mountinfo")
    assert code == 0 and " ro," in out, out


MASKED = ["kcore", "keys", "key-users", "timer_list", "sched_debug", "slabinfo", "vmallocinfo", "kallsyms",
          "kmsg", "pagetypeinfo", "zoneinfo"]


def test_root_only_proc_tables_are_masked(sandbox):
    """Each masked /proc file that exists reads as empty (or not at all)."""
    present = [m for m in MASKED if os.path.exists(f"/proc/{m}")]
    assert "keys" in present and "timer_list" in present, present
    for m in present:
        code, out = run(sandbox, f"wc -c < /proc/{m} 2>&1 || echo unreadable")
        assert out.strip() in ("0", "unreadable"), (m, out)
    code, out = run(sandbox, "ls -A /proc/acpi 2>/dev/null | wc -l")
    assert out.strip() == "0", out


def test_host_keyring_is_out_of_reach(sandbox):
    """add_key, keyctl and request_key fail (seccomp); nothing reaches the
    keyring of the host's uid, which /proc/keys on the host would list."""
    desc = f"seerfs-escape-{uuid.uuid4().hex[:8]}"
    code, out = py(sandbox, f"""
import ctypes, ctypes.util, errno, os
libc = ctypes.CDLL(None, use_errno=True)
nr = {{"add_key": 248, "keyctl": 250, "request_key": 249}}
r = libc.syscall(nr["add_key"], b"user", b"{desc}", b"v", 1, ctypes.c_long(-4))
print("add_key", r, errno.errorcode.get(ctypes.get_errno()))
r = libc.syscall(nr["keyctl"], 0, ctypes.c_long(-4), 0)
print("keyctl", r, errno.errorcode.get(ctypes.get_errno()))
r = libc.syscall(nr["request_key"], b"user", b"{desc}", None, 0)
print("request_key", r, errno.errorcode.get(ctypes.get_errno()))
""")
    assert code == 0, out
    for name in ("add_key", "keyctl", "request_key"):
        assert f"{name} -1 EPERM" in out, out
    with open("/proc/keys") as f:
        assert desc not in f.read()


def test_mount_unshare_and_device_nodes_fail(sandbox):
    """No new mounts, namespaces or device nodes from inside."""
    for cmd in ("mount -t tmpfs none /tmp", "unshare -U true", "unshare -m true", "unshare -n true",
                "mknod /tmp/mem c 1 1", "python3 -c 'import os; os.setns(os.open(\"/proc/self/ns/mnt\", 0), 0)'"):
        code, out = run(sandbox, cmd)
        assert code != 0, (cmd, out)
    code, out = run(sandbox, "grep -E '^(Seccomp|NoNewPrivs|CapEff|CapPrm):' /proc/self/status")
    fields = dict(line.split(":\t") for line in out.strip().splitlines())
    assert fields["Seccomp"] == "2" and fields["NoNewPrivs"] == "1", out
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapPrm"], 16) == 0, out


# ---- the agent ---------------------------------------------------------------------------


def test_agent_cannot_be_traced_or_signalled(sandbox):
    """PID 1 (the agent) cannot be ptraced, its /proc entries read, nor
    stopped or killed from inside: the next command still runs."""
    code, out = py(sandbox, """
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
r = libc.ptrace(16, 1, None, None)      # PTRACE_ATTACH
print("attach", r, errno.errorcode.get(ctypes.get_errno()))
r = libc.ptrace(0x4206, 1, None, None)  # PTRACE_SEIZE
print("seize", r, errno.errorcode.get(ctypes.get_errno()))
for f in ("environ", "mem", "fd/3"):
    try:
        open("/proc/1/" + f, "rb").read(1)
        print(f, "readable")
    except OSError as e:
        print(f, errno.errorcode[e.errno])
""")
    assert code == 0, out
    assert "attach -1 EPERM" in out and "seize -1 EPERM" in out, out
    assert "readable" not in out, out
    # Every standard signal (the ASan build's agent once had a SIGSEGV
    # handler from its runtime, which let SIGSEGV through).
    code, out = run(sandbox, "for s in $(seq 1 31); do kill -$s 1; done; echo sent")
    assert "sent" in out, out
    code, out = run(sandbox, "echo still-here")
    assert code == 0 and out.strip() == "still-here", out
    assert state(sandbox) == "running"


def test_snapshot_freezes_or_fails_never_copies_a_moving_tree(sandbox):
    """With processes busy writing and another trying to hold the agent,
    a snapshot either is one frozen point or fails with the reason; the
    log never says it copied anyway."""
    run(sandbox, "nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /workspace/counter; done' "
                 ">/dev/null 2>&1 & "
                 "nohup python3 -c 'import ctypes,time\nl=ctypes.CDLL(None)\nwhile 1: l.ptrace(16,1,0,0)' "
                 ">/dev/null 2>&1 & echo started")
    for i in range(3):
        try:
            ctl(sandbox, f"snapshot esc{i}")
            ok = True
        except OSError:
            ok = False
        poll(lambda: f"snapshot esc{i}" in log_text(sandbox), what="the snapshot's log line")
        log = log_text(sandbox)
        assert "copying anyway" not in log
        if ok:
            poll(lambda: (pathlib.Path(sandbox).parent / "snapshots" / f"esc{i}").exists(),
                 what=f"snapshot esc{i}")
    assert "still" in run(sandbox, "echo still")[1]


# ---- secrets -------------------------------------------------------------------------------


def _descendants(pid):
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    kids = {}
    pairs = [tuple(map(int, line.split())) for line in out.strip().splitlines()]
    for p, pp in pairs:
        kids.setdefault(pp, []).append(p)
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        for k in kids.get(p, []):
            seen.append(k)
            todo.append(k)
    return seen


def test_secrets_only_in_the_sandbox_that_names_them(seerfs_factory):
    """seerfs holds the secret in its environment; only the commands of the
    sandbox whose config names it get it: not bubblewrap or the agent of any
    sandbox, not another sandbox's commands."""
    value = "s3cr3t-" + uuid.uuid4().hex
    env = dict(os.environ, SEERFS_TEST_SECRET=value)
    m = seerfs_factory(env=env)
    a = m.sandbox("a", json.dumps({"secrets": ["SEERFS_TEST_SECRET"]}))
    b = m.sandbox("b", "{}")
    code, out = run(a, "echo $SEERFS_TEST_SECRET")
    assert out.strip() == value
    code, out = run(b, "echo x$SEERFS_TEST_SECRET; cat /proc/1/environ 2>/dev/null | tr '\\0' '\\n'")
    assert value not in out
    # Host side: every process seerfs started (bubblewrap, agents) but the
    # commands of sandbox a, whose environment is theirs.
    leaks = []
    for pid in _descendants(m.proc.pid):
        try:
            environ = pathlib.Path(f"/proc/{pid}/environ").read_bytes()
            cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if value.encode() in environ:
            leaks.append((pid, cmdline))
    assert not leaks, leaks


# ---- state directories of earlier versions ---------------------------------------------------


@pytest.mark.skipif(not IS_ROOT, reason="only a root mount maps a range; a user's map is unchanged")
def test_old_state_dir_is_shifted_into_the_range(seerfs_factory):
    """A state directory of a version that ran root's sandboxes as host uid
    0 (its trees owned by host 0, no idmapped marks): on the next start the
    sandbox's tree and its snapshot's layer are shifted into the range, so
    the sandbox's root owns and can change its files again."""
    m = seerfs_factory()
    a = m.sandbox("a", "{}")
    assert run(a, "mkdir -p /workspace/d && echo one > /workspace/d/f && echo snap > /workspace/s")[0] == 0
    ctl(a, "snapshot old")
    poll(lambda: (m.path / "snapshots" / "old").exists(), what="snapshot old")
    m.stop(terminate_first=False)
    # Make it look as an earlier seerfs left it.
    sd = m.state / "sandboxes" / "a" / "fs"
    layer = m.state / "snapshots" / "old" / "layer"
    for top in (sd / "upper", layer):
        subprocess.run(["chown", "-R", "-h", "0:0", str(top)], check=True)
    for mark in (sd / "idmapped", m.state / "snapshots" / "old" / "idmapped"):
        mark.unlink(missing_ok=True)
    m2 = seerfs_factory(state=m.state)
    a2 = m2.path / "a"
    wait_settled(a2)
    assert state(a2) == "running"
    code, out = run(a2, "stat -c %u /workspace/d/f && echo two >> /workspace/d/f && cat /workspace/d/f")
    assert code == 0 and out.split() == ["0", "one", "two"], out
    assert (sd / "upper" / "workspace" / "d" / "f").stat().st_uid == subid_base()
    assert "owners shifted into the id range" in log_text(a2)
    b = m2.sandbox("b", json.dumps({"snapshot": "old"}))
    code, out = run(b, "stat -c %u /workspace/s && echo more >> /workspace/s && cat /workspace/s")
    assert code == 0 and out.split() == ["0", "snap", "more"], out
