"""test_exec.py - running commands through files: exec, exec_python, jobs/N/,
stdin, exit codes, kill, timeouts, restarts and tools/seer-exec.

Runs against the local provider, and with SEERFS_TEST_PROVIDER=ssh against
the ssh provider (conftest.py); what the latter lacks is marked needs_local."""

import hashlib
import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import (BUILD, PROVIDER, ctl, error_text, log_text, mounted, needs_local, poll, read_text, sandbox_run,
                      state, wait_settled, write_config)
from conftest import start_job as start

SEER_EXEC = BUILD / "tools" / "seer-exec"


def read_to_eof(fd):
    """Reads an open exec file until the job's output ends."""
    chunks = []
    while b := os.read(fd, 65536):
        chunks.append(b)
    return b"".join(chunks)


def exit_of(job, timeout=60):
    return read_text(job / "exit", timeout).strip()


@pytest.mark.parametrize("cmd,want", [("true", "0"), ("false", "1"), ("exit 3", "3"),
                                      ("no-such-command-xyz", "127"), ("exit 137", "137"),
                                      ("kill -9 $$", "signal 9"), ("kill -TERM $$", "signal 15")])
def test_exit_codes(sandbox, cmd, want):
    job = start(sandbox, cmd)
    assert exit_of(job) == want
    st = (job / "status").read_text()
    assert st.split("\n")[0] == "exited"
    assert "pid: " in st and "started: " in st and "ended: " in st and "cpu: " in st


def test_output_streams_and_interleaving(sandbox):
    # stdout and stderr are separate pipes: `output` has them in the order
    # seerfs read them, which is the order written when the writes are apart
    job = start(sandbox, "echo out1; sleep 0.1; echo err1 >&2; sleep 0.1; echo out2")
    assert exit_of(job) == "0"
    assert (job / "stdout").read_text() == "out1\nout2\n"
    assert (job / "stderr").read_text() == "err1\n"
    assert (job / "output").read_text() == "out1\nerr1\nout2\n"
    assert (job / "cmd").read_text().startswith("echo out1; sleep 0.1;")
    # any offset can be read again later
    with open(job / "output", "rb") as f:
        f.seek(5)
        assert f.read(4) == b"err1"


def test_read_write_transaction(sandbox):
    code, out = sandbox_run(sandbox, "for i in 1 2 3; do echo line $i; done; echo done >&2")
    assert code == 0
    # on every provider: on docker-remote the sandbox's agent reads both
    # pipes in the container, as on ssh (without it, in an image without
    # perl, the Engine API reads them apart: docs/docker.md)
    assert out == b"line 1\nline 2\nline 3\ndone\n"


def test_exec_python(sandbox):
    fd = os.open(sandbox / "exec_python", os.O_RDWR)
    try:
        os.write(fd, b"import sys\nprint(sum(range(10)))\nsys.exit(4)\n")
        out = read_to_eof(fd)
    finally:
        os.close(fd)
    assert out == b"45\n"
    assert read_text(sandbox / "jobs" / "latest" / "exit").strip() == "4"


def test_environment_and_cwd(sandbox):
    code, out = sandbox_run(sandbox, "pwd; echo $HOME; echo $SEER_SANDBOX")
    assert code == 0
    assert out.decode().split() == ["/workspace", "/root", "sb"]


def test_config_env_reaches_commands(mnt):
    sb = mnt.sandbox("envsb", '{"env": {"SEED": "42", "EMPTY": ""}}')
    code, out = sandbox_run(sb, 'echo "seed=$SEED empty=[$EMPTY]"')
    assert out == b"seed=42 empty=[]\n"


def test_100mb_output_no_byte_lost(mnt):
    sandbox = mnt.sandbox("big", '{"output_cap": 209715200}')
    cmd = "head -c 104857600 /dev/zero | tr '\\000' '\\377' | od -An -v -tx1 -w64 | head -c 104857600"
    code, out = sandbox_run(sandbox, cmd, timeout=180)
    assert code == 0
    assert len(out) == 104857600
    job = sandbox / "jobs" / "latest"
    assert os.path.getsize(job / "stdout") == 104857600
    h1 = hashlib.sha256(out).hexdigest()
    with open(job / "stdout", "rb") as f:
        h2 = hashlib.sha256(f.read()).hexdigest()
    assert h1 == h2


def test_binary_output(sandbox):
    code, out = sandbox_run(sandbox, "printf '\\000\\001\\377\\n\\000'")
    assert code == 0
    assert out == b"\x00\x01\xff\n\x00"


def test_stdin_round_trip_with_eof(sandbox):
    fd = os.open(sandbox / "exec", os.O_RDWR)
    try:
        os.write(fd, b"wc -c; echo end")
        n = os.readlink(sandbox / "jobs" / "mine")
        job = sandbox / "jobs" / n
        w = os.open(job / "stdin", os.O_WRONLY)
        os.write(w, b"x" * 100000)
        os.close(w)     # the last writer closing sends EOF
        out = read_to_eof(fd)
    finally:
        os.close(fd)
    assert out.split() == [b"100000", b"end"]
    # a finished job's stdin is closed
    with pytest.raises(OSError):
        w = os.open(job / "stdin", os.O_WRONLY)
        os.write(w, b"late")
        os.close(w)


def test_plain_echo_gives_eof_to_stdin(sandbox):
    job = start(sandbox, "cat; echo after-eof")
    assert exit_of(job, 20) == "0"
    assert (job / "output").read_text() == "after-eof\n"


def test_fifty_jobs_at_once(sandbox):
    jobs = [start(sandbox, f"sleep 0.2; echo job{i}") for i in range(50)]
    for i, j in enumerate(jobs):
        assert exit_of(j) == "0"
        assert (j / "stdout").read_text() == f"job{i}\n"
    assert len([n for n in os.listdir(sandbox / "jobs") if n.isdigit()]) >= 50


def host_pids(marker):
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_kill_kills_the_tree(sandbox):
    marker = "seerfs-kill-tree-marker-1234"
    job = start(sandbox, f"sh -c 'sleep 1000 # {marker}' & setsid sh -c 'sleep 1001 # {marker}' & "
                         f"sleep 1002 # {marker}")
    poll(lambda: len(host_pids(marker)) >= 3, what="the job's processes to start")
    ctl_fd = os.open(job / "ctl", os.O_WRONLY)
    os.write(ctl_fd, b"kill")
    os.close(ctl_fd)
    assert exit_of(job) == "signal 9"
    assert (job / "status").read_text().split("\n")[0] == "killed"
    poll(lambda: not host_pids(marker), what="no process of the tree left on the host")


def test_signal_and_bad_ctl(sandbox):
    job = start(sandbox, "trap 'echo got-usr1; exit 5' USR1; while true; do sleep 0.05; done")
    time.sleep(0.3)
    fd = os.open(job / "ctl", os.O_WRONLY)
    os.write(fd, b"signal 10")
    os.close(fd)
    assert exit_of(job) == "5"
    assert "got-usr1" in (job / "output").read_text()
    fd = os.open(job / "ctl", os.O_WRONLY)
    with pytest.raises(OSError) as e:
        os.write(fd, b"frobnicate")
    os.close(fd)
    assert e.value.errno == 22
    assert "unknown command" in error_text(sandbox)


@pytest.mark.parametrize("sig", [9, 15])
def test_signal_reports_the_signal(sandbox, sig):
    # `signal N` reaches the command itself, which dies of it: exit says so
    # (on ssh under bubblewrap too, past bwrap and the wait-status wrapper).
    marker = f"seerfs-signal-marker-{sig}"
    job = start(sandbox, f"sleep 1000 # {marker}")
    poll(lambda: host_pids(marker), what="the job to start")
    fd = os.open(job / "ctl", os.O_WRONLY)
    os.write(fd, f"signal {sig}".encode())
    os.close(fd)
    assert exit_of(job, 20) == f"signal {sig}"
    poll(lambda: not host_pids(marker), what="the job's processes gone")


def test_signal_to_own_group_delivered_once(sandbox):
    # A command that signals its own process group gets the signal once and
    # lives on when it traps it (on ssh: nothing in between forwards it again
    # or dies of it).
    job = start(sandbox, "n=0; trap 'n=$((n+1))' USR1; kill -USR1 0; sleep 0.2; echo \"got $n\"; exit 4")
    assert exit_of(job) == "4"
    assert (job / "stdout").read_text() == "got 1\n"


def test_stderr_byte_exact_around_status_lines(sandbox):
    # On ssh under bubblewrap the wait-status wrapper's line is taken out of
    # stderr: look-alikes, a split look-alike and one cut off at the end stay.
    job = start(sandbox, r"printf 'a\036@@seer' >&2; sleep 0.1; printf 'b\n\036@@seer-sig-00 9\n' >&2; "
                         r"printf 'end\036@@seer-s' >&2")
    assert exit_of(job) == "0"
    assert (job / "stderr").read_bytes() == b"a\x1e@@seerb\n\x1e@@seer-sig-00 9\nend\x1e@@seer-s"


def test_timeout_kills_the_tree(sandbox):
    marker = "seerfs-timeout-marker-5678"
    job = start(sandbox, f"sleep 1000 # {marker}")
    poll(lambda: host_pids(marker), what="the job to start")
    fd = os.open(job / "ctl", os.O_WRONLY)
    os.write(fd, b"timeout 1")
    os.close(fd)
    assert exit_of(job, 20) == "signal 9"
    assert (job / "status").read_text().split("\n")[0] == "timed-out"
    poll(lambda: not host_pids(marker), what="the timed-out tree gone")


def test_exec_timeout_from_config(mnt):
    sb = mnt.sandbox("tsb", '{"exec_timeout": 1}')
    job = start(sb, "sleep 30")
    assert exit_of(job, 20) == "signal 9"
    assert (job / "status").read_text().startswith("timed-out")


def test_tail_follows_a_running_job(sandbox):
    job = start(sandbox, "for i in 1 2 3 4 5; do echo tick $i; sleep 0.2; done")
    p = subprocess.Popen(["tail", "-f", "-s", "0.1", str(job / "stdout")], stdout=subprocess.PIPE)
    try:
        got = b""
        deadline = time.monotonic() + 20
        while b"tick 5" not in got and time.monotonic() < deadline:
            got += os.read(p.stdout.fileno(), 4096)
        assert b"tick 1\n" in got and b"tick 5\n" in got
    finally:
        p.kill()
        p.wait()


def test_files_coherent_with_root(sandbox):
    code, _ = sandbox_run(sandbox, "echo from-inside > /workspace/coh1")
    assert code == 0
    assert (sandbox / "root" / "workspace" / "coh1").read_text() == "from-inside\n"
    (sandbox / "root" / "workspace" / "coh2").write_text("from-outside\n")
    code, out = sandbox_run(sandbox, "cat /workspace/coh2")
    assert out == b"from-outside\n"


def test_exec_on_terminated_sandbox(sandbox):
    ctl(sandbox, "terminate")
    wait_settled(sandbox)
    fd = os.open(sandbox / "exec", os.O_WRONLY)
    with pytest.raises(OSError) as e:
        os.write(fd, b"true")
    os.close(fd)
    assert e.value.errno in (107, 11)   # ENOTCONN, EAGAIN
    assert "not running" in error_text(sandbox)


def test_exec_on_new_sandbox(mnt):
    d = mnt.path / "fresh"
    d.mkdir()
    fd = os.open(d / "exec", os.O_WRONLY)
    with pytest.raises(OSError) as e:
        os.write(fd, b"true")
    os.close(fd)
    assert e.value.errno == 107


def test_remove_job_record(sandbox):
    job = start(sandbox, "echo x")
    assert exit_of(job) == "0"
    subprocess.run(["rm", "-r", str(job)], check=True)
    assert not job.exists()
    running = start(sandbox, "sleep 30")
    with pytest.raises(OSError) as e:
        os.rmdir(running)
    assert e.value.errno == 16   # EBUSY
    fd = os.open(running / "ctl", os.O_WRONLY)
    os.write(fd, b"kill")
    os.close(fd)


def test_jobs_listing_follows_jobs(sandbox):
    """The kernel caches listings (no OPENDIR): jobs/ must still show a new
    job, and drop a removed one, at once."""
    before = set(os.listdir(sandbox / "jobs"))
    job = start(sandbox, "echo listed")
    assert exit_of(job) == "0"
    after = set(os.listdir(sandbox / "jobs"))
    assert job.name in after and job.name not in before
    subprocess.run(["rm", "-r", str(job)], check=True)
    assert job.name not in os.listdir(sandbox / "jobs")
    second = start(sandbox, "echo again")
    assert exit_of(second) == "0"
    assert second.name in os.listdir(sandbox / "jobs")
    assert os.readlink(sandbox / "jobs" / "latest") == second.name


def test_output_cap_is_stated(mnt):
    sb = mnt.sandbox("capped", '{"output_cap": 10000}')
    code, out = sandbox_run(sb, "head -c 50000 /dev/zero")
    assert code == 0 and len(out) == 10000
    st = (sb / "jobs" / "latest" / "status").read_text()
    assert "capped" in st and "output_cap: 10000" in st


def test_full_state_disk_stops_storing_not_the_job(small_state, seerfs_factory):
    m = seerfs_factory(state=small_state)
    sb = m.sandbox("full", "{}")
    full = subprocess.run(["seq", "1", "4000000"], capture_output=True, check=True).stdout
    assert len(full) > 25 << 20          # more than the 20 MiB state disk holds
    job = start(sb, "seq 1 4000000; exit 5")
    assert exit_of(job) == "5"           # the job ran to its end; its exit is not lost
    out = (job / "stdout").read_bytes()
    assert 0 < len(out) < len(full) and full.startswith(out)
    assert (job / "output").read_bytes() == out
    st = (job / "status").read_text()
    assert "No space left on device in the state directory" in st, st
    assert "no longer stored" in log_text(sb)
    subprocess.run(["rm", "-r", str(job)], check=True)
    # The space comes back once the last reader's handle is released, which
    # the kernel sends after close() has returned.
    poll(lambda: os.statvfs(small_state).f_bfree * os.statvfs(small_state).f_frsize > 10 << 20,
         what="the removed job's space to be freed")
    code, again = sandbox_run(sb, "echo stored again")
    assert code == 0 and again == b"stored again\n"
    assert mounted(m.path)


def test_records_survive_restart(seerfs_factory, tmp_path):
    m = seerfs_factory()
    sb = m.sandbox("rsb", "{}")
    done = start(sb, "echo finished-output; exit 6")
    assert exit_of(done) == "6"
    running = start(sb, "echo partial; sleep 1000")
    poll(lambda: (running / "stdout").read_text() == "partial\n", what="partial output")
    m.stop(terminate_first=False, how="signal")
    m2 = seerfs_factory(state=m.state, mountpoint=m.path)
    sb2 = m2.path / "rsb"
    assert state(sb2) == "running"
    assert (sb2 / "jobs" / done.name / "output").read_text() == "finished-output\n"
    assert read_text(sb2 / "jobs" / done.name / "exit").strip() == "6"
    assert (sb2 / "jobs" / running.name / "stdout").read_text() == "partial\n"
    assert (sb2 / "jobs" / running.name / "status").read_text().startswith("lost")
    assert read_text(sb2 / "jobs" / running.name / "exit").strip() == "lost"


def test_job_survives_its_starter(sandbox):
    # the writer goes away at once; the job runs on
    subprocess.run(["sh", "-c", f"echo 'sleep 0.5; echo survived' > {sandbox}/exec"], check=True)
    job = sandbox / "jobs" / os.readlink(sandbox / "jobs" / "latest")
    assert exit_of(job) == "0"
    assert (job / "stdout").read_text() == "survived\n"


def test_seer_exec_tool(sandbox):
    p = subprocess.run([str(SEER_EXEC), str(sandbox), "sh", "-c", "echo out; echo err >&2; exit 7"],
                       capture_output=True, timeout=60)
    assert p.returncode == 7
    assert p.stdout == b"out\n" and p.stderr == b"err\n"
    p = subprocess.run([str(SEER_EXEC), str(sandbox), "tr a-z A-Z"], input=b"hello\n",
                       capture_output=True, timeout=60)
    assert p.returncode == 0 and p.stdout == b"HELLO\n"
    p = subprocess.run([str(SEER_EXEC), "-n", str(sandbox), "kill -9 $$"], capture_output=True, timeout=60)
    assert p.returncode == 137
    p = subprocess.run([str(SEER_EXEC), str(sandbox), "printf", "%s|", "a b", "c'd"], capture_output=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert p.stdout == b"a b|c'd|"


# A job that alternates between stdout (bytes below 0x80) and stderr (0x80 and
# up) in runs of random length: `output` is an index into the two stream
# files, so the bytes of each stream, in their order, must come back from it.
ALTERNATING = r'''
import os, random
r = random.Random(7)
lo = bytes(i & 0x7f for i in range(256))
hi = bytes(i | 0x80 for i in range(256))
for i in range(300):
    fd = 1 + i % 2
    data = os.urandom(r.randrange(1, 40000)).translate(lo if fd == 1 else hi)
    while data:
        data = data[os.write(fd, data):]
'''


def check_interleaved(job):
    out, err, both = ((job / f).read_bytes() for f in ("stdout", "stderr", "output"))
    assert out and err and len(both) == len(out) + len(err)
    assert max(out) < 0x80 and min(err) >= 0x80
    assert bytes(b for b in both if b < 0x80) == out
    assert bytes(b for b in both if b >= 0x80) == err
    # any offset, across runs and inside them, reads as the whole does
    r = __import__("random").Random(3)
    with open(job / "output", "rb") as f:
        for _ in range(200):
            off = r.randrange(0, len(both))
            n = r.randrange(1, 300000)
            f.seek(off)
            assert f.read(n) == both[off:off + n]
    return both


def test_output_index_interleaving_and_restart(seerfs_factory):
    m = seerfs_factory()
    sb = m.sandbox("isb", "{}")
    fd = os.open(sb / "exec_python", os.O_RDWR)
    try:
        os.write(fd, ALTERNATING.encode())
        through_exec = read_to_eof(fd)
    finally:
        os.close(fd)
    job = sb / "jobs" / "latest"
    assert exit_of(job) == "0"
    both = check_interleaved(job)
    assert through_exec == both
    n = os.readlink(job)
    # the index is on disk: the output reads the same after a restart
    m.stop(terminate_first=False, how="signal")
    rec = m.state / "sandboxes" / "isb" / "jobs" / n
    assert (rec / "output.idx").exists() and not (rec / "output").exists()
    m2 = seerfs_factory(state=m.state, mountpoint=m.path)
    job2 = m2.path / "isb" / "jobs" / n
    assert check_interleaved(job2) == both
    assert f"output: {len(both)} bytes" in (job2 / "status").read_text()
    # a record written before the index, with `output` a copy, still reads
    m2.stop(terminate_first=False, how="signal")
    (rec / "output").write_bytes(both)
    (rec / "output.idx").unlink()
    m3 = seerfs_factory(state=m.state, mountpoint=m.path)
    assert check_interleaved(m3.path / "isb" / "jobs" / n) == both
