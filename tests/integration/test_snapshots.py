"""test_snapshots.py - snapshots: `snapshot NAME` through ctl, restore into a
new sandbox ({"snapshot": NAME}), MOUNT/snapshots/NAME/{info.json,root/},
rmdir, terminate snapshot=NAME, chains, crash safety and ENOSPC.

Uses conftest.py's fixtures (a real seerfs per test). Sandboxes are driven
through their files only; the state directory is read only to check that no
half snapshot (NAME.tmp) survives.
"""

import errno
import json
import os
import random
import subprocess
import threading
import time

import pytest

from conftest import (ctl_errno, IS_ROOT, ctl, error_text, log_text, mounted, poll, read_text, sandbox_run, state, unmount,
                      wait_settled, write_config)


def run_ok(sbdir, cmd, timeout=60.0):
    code, out = sandbox_run(sbdir, cmd, timeout)
    assert code == 0, f"{cmd!r} in {sbdir.name}: exit {code}: {out.decode(errors='replace')}"
    return out.decode(errors="replace")


def _try_run(sbdir, cmd):
    try:
        return run_ok(sbdir, cmd)
    except BlockingIOError:
        return None


def snaps(m):
    return sorted(os.listdir(m.path / "snapshots"))


def no_tmp(m):
    return [n for n in os.listdir(m.state / "snapshots") if n.endswith(".tmp")]


def tree(top):
    """{relative path: (type, content or target)} of a directory tree."""
    out = {}
    for dirpath, dirs, files in os.walk(top):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, top)
            if os.path.islink(p):
                out[rel] = ("l", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("d", None)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("f", f.read())
    return out


def test_snapshot_change_restore(mnt):
    a = mnt.sandbox("a", "{}")
    run_ok(a, "mkdir -p /workspace/d/e && echo one > /workspace/f && echo two > /workspace/d/e/g && "
              "ln -s f /workspace/l && echo gone > /workspace/x && mkdir -p /root/cfg && echo rc > /root/cfg/rc")
    ctl(a, "snapshot s1")
    info = json.loads(read_text(mnt.path / "snapshots" / "s1" / "info.json"))
    assert info["source"] == "a" and info["layers"] == ["s1"] and info["parent"] is None
    assert info["config"].strip() == "{}"
    # Changes after the snapshot do not reach it.
    run_ok(a, "echo changed > /workspace/f && rm /workspace/x && echo new > /workspace/n")
    b = mnt.sandbox("b", '{"snapshot": "s1"}')
    assert run_ok(b, "cat /workspace/f /workspace/d/e/g /root/cfg/rc && readlink /workspace/l && "
                     "test -e /workspace/x && ! test -e /workspace/n && echo ok") == "one\ntwo\nrc\nf\nok\n"
    # Whiteouts and opaque dirs survive a snapshot of a restored sandbox.
    run_ok(b, "rm /workspace/x && rm -rf /workspace/d && mkdir /workspace/d && echo fresh > /workspace/d/h")
    ctl(b, "snapshot s2")
    info2 = json.loads(read_text(mnt.path / "snapshots" / "s2" / "info.json"))
    assert info2["parent"] == "s1" and info2["layers"] == ["s2", "s1"]
    c = mnt.sandbox("c", '{"snapshot": "s2"}')
    assert run_ok(c, "ls /workspace/d; test -e /workspace/x || echo nox; cat /workspace/f") == "h\nnox\none\n"
    assert tree(mnt.path / "snapshots" / "s2" / "root" / "workspace") == tree(c / "root" / "workspace")


def test_fresh_tree_is_plain_restored_is_overlay(mnt):
    """A fresh sandbox's writable tree is a plain directory (no overlay over
    nothing); one restored from a snapshot is an overlay, and stays one when
    provisioned again without the snapshot, so its whiteouts never show."""
    a = mnt.sandbox("pa", "{}")
    assert "overlay" not in run_ok(a, "stat -f -c %T /workspace /tmp /root")
    run_ok(a, "echo keep > /workspace/k && echo gone > /workspace/g && mkdir /root/d && echo r > /root/d/f")
    ctl(a, "snapshot ps")
    b = mnt.sandbox("pb", '{"snapshot": "ps"}')
    assert run_ok(b, "stat -f -c %T /workspace /tmp /root").split() == ["overlayfs"] * 3
    run_ok(b, "rm /workspace/g && rm -r /root/d && echo new > /workspace/n")
    ctl(b, "terminate")
    assert wait_settled(b) == "terminated"
    write_config(b, "{}")
    assert wait_settled(b) == "running"
    # Only what the sandbox itself changed is there; the deletions of files
    # that came from the snapshot stay deleted, with no whiteout visible.
    assert run_ok(b, "stat -f -c %T /workspace; ls -A /workspace /root") == "overlayfs\n/root:\n\n/workspace:\nn\n"
    assert sorted(os.listdir(b / "root" / "workspace")) == ["n"]
    # The plain sandbox's own files, and its snapshot, are unchanged.
    assert run_ok(a, "cat /workspace/k /workspace/g /root/d/f") == "keep\ngone\nr\n"
    assert read_text(mnt.path / "snapshots" / "ps" / "root" / "workspace" / "g") == "gone\n"


def test_restore_from_missing_snapshot_names_it(mnt):
    d = mnt.sandbox("m", '{"snapshot": "nosuch"}', want="failed")
    assert "nosuch" in error_text(d)


def test_snapshot_while_writing_is_consistent(mnt):
    a = mnt.sandbox("w", "{}")
    # Files replaced atomically (write a temporary, rename): a counter and
    # its checksum in one file, and in two files written in order. A
    # point-in-time copy shows a whole pair, and never s ahead of c.
    run_ok(a, "nohup sh -c 'cd /workspace; i=0; while :; do i=$((i+1)); "
              "echo \"$i $(echo $i | md5sum)\" > p.t && mv p.t pair; "
              "echo $i > c.t && mv c.t c; echo $i | md5sum > s.t && mv s.t s; done' >/dev/null 2>&1 &")
    time.sleep(0.3)
    for k in range(3):
        ctl(a, f"snapshot w{k}")
        root = mnt.path / "snapshots" / f"w{k}" / "root" / "workspace"
        n, s = read_text(root / "pair").split(" ", 1)
        assert subprocess.run(["md5sum"], input=f"{n}\n".encode(), capture_output=True).stdout.decode() == s
        c = int(read_text(root / "c"))
        s2 = read_text(root / "s")
        ok = {subprocess.run(["md5sum"], input=f"{v}\n".encode(), capture_output=True).stdout.decode()
              for v in (c, c - 1)}
        assert s2 in ok, f"snapshot w{k}: c={c} but s does not match c or c-1"
    assert state(a) == "running"


def test_browse_diff_and_readonly(mnt):
    a = mnt.sandbox("a", "{}")
    run_ok(a, "mkdir -p /workspace/src && for i in 1 2 3; do echo $i > /workspace/src/$i; done")
    ctl(a, "snapshot s1")
    assert snaps(mnt) == ["s1"]
    assert sorted(os.listdir(mnt.path / "snapshots" / "s1")) == ["error", "info.json", "root"]
    r = subprocess.run(["diff", "-r", str(mnt.path / "snapshots/s1/root/workspace"), str(a / "root/workspace")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    run_ok(a, "echo 4 > /workspace/src/4")
    r = subprocess.run(["diff", "-r", str(mnt.path / "snapshots/s1/root/workspace"), str(a / "root/workspace")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "4" in r.stdout
    with pytest.raises(OSError) as e:
        (mnt.path / "snapshots/s1/root/workspace/new").write_text("x")
    assert e.value.errno == errno.EROFS
    with pytest.raises(OSError) as e:
        (mnt.path / "snapshots/s1/root/workspace/src/1").write_text("x")
    assert e.value.errno == errno.EROFS


def test_duplicate_name_is_eexist(mnt):
    a = mnt.sandbox("a", "{}")
    ctl(a, "snapshot dup")
    assert ctl_errno(a, "snapshot dup") == errno.EEXIST
    assert "dup" in error_text(a) and "already exists" in error_text(a)
    assert state(a) == "running"


def test_rmdir_and_busy_while_depended_on(mnt):
    a = mnt.sandbox("a", "{}")
    run_ok(a, "echo x > /workspace/x")
    ctl(a, "snapshot base")
    b = mnt.sandbox("b", '{"snapshot": "base"}')
    run_ok(b, "echo y > /workspace/y")
    ctl(b, "snapshot top")
    with pytest.raises(OSError) as e:
        os.rmdir(mnt.path / "snapshots" / "base")
    assert e.value.errno == errno.EBUSY
    assert "b" in read_text(mnt.path / "snapshots/base/error")
    assert "base" in log_text(b)
    ctl(b, "terminate")
    wait_settled(b)
    os.rmdir(b)
    # Still a layer of snapshot top.
    with pytest.raises(OSError) as e:
        os.rmdir(mnt.path / "snapshots" / "base")
    assert e.value.errno == errno.EBUSY
    assert "top" in read_text(mnt.path / "snapshots/base/error")
    os.listdir(mnt.path / "snapshots/top/root/workspace")   # a live view is dropped by rmdir
    os.rmdir(mnt.path / "snapshots" / "top")
    os.rmdir(mnt.path / "snapshots" / "base")
    assert snaps(mnt) == [] and no_tmp(mnt) == []
    with pytest.raises(FileNotFoundError):
        os.rmdir(mnt.path / "snapshots" / "base")


def test_terminate_with_snapshot(mnt):
    a = mnt.sandbox("a", "{}")
    run_ok(a, "echo keep > /workspace/k")
    b = mnt.sandbox("b", "{}")
    ctl(b, "snapshot t1")
    # Failure path: the name is taken, so a is not terminated.
    assert ctl_errno(a, "terminate snapshot=t1") == errno.EEXIST
    assert state(a) == "running"
    ctl(a, "terminate snapshot=t2")
    assert wait_settled(a) == "terminated"
    assert read_text(mnt.path / "snapshots/t2/root/workspace/k") == "keep\n"


def test_chain_20_deep(mnt):
    prev = None
    for i in range(1, 21):
        cfg = json.dumps({"snapshot": prev}) if prev else "{}"
        d = mnt.sandbox(f"c{i}", cfg)
        run_ok(d, f"echo {i} > /workspace/f{i}")
        ctl(d, f"snapshot k{i}")
        ctl(d, "terminate")
        wait_settled(d)
        prev = f"k{i}"
    info = json.loads(read_text(mnt.path / "snapshots/k20/info.json"))
    assert info["layers"] == [f"k{i}" for i in range(20, 0, -1)]
    last = mnt.sandbox("last", '{"snapshot": "k20"}')
    out = run_ok(last, "cat " + " ".join(f"/workspace/f{i}" for i in range(1, 21)))
    assert out.split() == [str(i) for i in range(1, 21)]
    assert len(os.listdir(mnt.path / "snapshots/k20/root/workspace")) == 20


def test_sigkill_during_snapshot(seerfs_factory):
    m = seerfs_factory()
    a = m.sandbox("big", "{}")
    run_ok(a, "mkdir /workspace/m && cd /workspace/m && seq 1 4000 | split -l 1 -a 4 - f && "
              "head -c 20000000 /dev/zero > /workspace/blob")
    rnd = random.Random(1234)
    taken = []
    for k in range(3):
        name = f"k{k}"
        t = threading.Thread(target=ctl_errno, args=(a, f"snapshot {name}"), daemon=True)
        t.start()
        # Early, somewhere in the copy, and (usually) after the end.
        time.sleep((rnd.uniform(0.0, 0.2), rnd.uniform(0.2, 0.8), 3.0)[k])
        m.proc.kill()
        m.proc.wait()
        m.stopped = True          # its exit status is -9 on purpose
        t.join(10)
        unmount(m.path)
        m = seerfs_factory(state=m.state, mountpoint=m.path)
        a = m.path / "big"
        assert poll(lambda: state(a) == "running", what="big running again")
        # A restarted sandbox shows `running` while it is still being
        # restarted (exec says EAGAIN): retry until it takes the command.
        out = poll(lambda: _try_run(a, "ls /workspace/m | wc -l; wc -c < /workspace/blob"), what="exec in big")
        assert out.split() == ["4000", "20000000"]
        assert "1" in os.listdir(a / "jobs"), "the job that made the files is gone"
        assert "m" in read_text(a / "jobs" / "1" / "cmd")
        names = snaps(m)
        assert no_tmp(m) == [], f"half snapshot left: {no_tmp(m)}"
        for n in names:
            root = m.path / "snapshots" / n / "root" / "workspace"
            assert len(os.listdir(root / "m")) == 4000 and os.path.getsize(root / "blob") == 20000000
        if name in names:
            taken.append(name)
    print("sigkill test: snapshots that completed before the kill:", taken)
    assert set(snaps(m)) == set(taken)
    # A daemon killed while the sandbox was frozen for a snapshot leaves no
    # process behind (its cgroup is reaped by the next daemon): once this
    # daemon's own sandbox is terminated, nothing runs from this state dir.
    ctl(a, "terminate")
    poll(lambda: not _procs_of(m.state), timeout=20,
         what=f"no process left of the killed daemons' sandboxes: {_procs_of(m.state)}")


def _procs_of(state_dir):
    """PIDs whose command line names state_dir (a sandbox's bubblewrap and
    what runs under it name its state directory)."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if str(state_dir).encode() + b"/sandboxes/" in f.read():
                    out.append(int(p))
        except OSError:
            pass
    return out


def test_enospc_leaves_nothing(small_state, seerfs_factory):
    m = seerfs_factory(state=small_state)
    a = m.sandbox("a", "{}")
    out = run_ok(a, "head -c 12000000 /dev/urandom > /workspace/big && md5sum < /workspace/big")
    assert ctl_errno(a, "snapshot full") == errno.ENOSPC
    assert "full" in error_text(a)
    assert snaps(m) == [] and no_tmp(m) == []
    assert state(a) == "running"
    assert run_ok(a, "md5sum < /workspace/big") == out
    assert mounted(m.path)


def test_on_timeout_snapshot(mnt):
    t = mnt.sandbox("t", '{"timeout": 2, "on_timeout": "snapshot"}')
    run_ok(t, "echo late > /workspace/l")
    assert poll(lambda: state(t) == "terminated", what="t terminated by its timeout")
    assert read_text(mnt.path / "snapshots/t-timeout/root/workspace/l") == "late\n"
