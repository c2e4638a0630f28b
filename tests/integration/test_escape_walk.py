"""test_escape_walk.py - the host's walks of a sandbox's tree (core/lib/walk.c)
never follow a link that replaced a directory: snapshots, local_dirs copies
and rmdir raced by swaps, restores from such snapshots, and the host copy of
a file:// repository gone after a failed clone.

The swaps come from two sides. Inside the sandbox a loop renames a
directory away and puts a symlink to / or to a host directory in its place,
as hostile code would. The sandbox is frozen while a snapshot copies, so a
host thread swaps the same way in the sandbox's writable tree in the state
directory too: that is what a process that escaped the freeze would do, and
it races the copy for real. Every test plants a marker outside the
sandbox's tree (a file in a host directory, the state directory's other
sandbox) and asserts that it is untouched and never appears inside.
"""

import json
import os
import pathlib
import random
import shutil
import subprocess
import threading
import time
import uuid

import pytest

from conftest import (LOCAL, _teardown_sandbox, ctl, error_text, grep_tree, log_text, needs_local, poll,
                      sandbox_run, start_job, status_text, wait_settled)

ROUNDS = int(os.environ.get("SEERFS_ESCAPE_ROUNDS", "20"))


@pytest.fixture
def marker(tmp_path):
    """A host directory outside every sandbox with a file only it holds."""
    d = tmp_path / "hostmark"
    d.mkdir()
    secret = f"HOSTMARK-{uuid.uuid4().hex}".encode()
    (d / "secret").write_bytes(secret + b"\n")
    (d / "sub").mkdir()
    (d / "sub" / "deeper").write_bytes(secret + b" deeper\n")
    # the layout of make_tree's trees: a walk by path that a swap sends
    # here finds every name it expects, and reads the marker
    make_tree(tmp_path, "hostmark", content=secret)
    # others may enter: a walk that followed a link here could read it
    os.chmod(tmp_path, 0o755)
    os.chmod(d, 0o755)
    return d, secret


def marker_intact(mark):
    d, secret = mark
    # an rm that chmod'ed through a link (to open a mode-000 directory)
    # would have changed these
    assert os.stat(d).st_mode & 0o7777 == 0o755 and os.stat(d / "sub").st_mode & 0o7777 == 0o755, \
        "the host marker directory's mode changed"
    assert (d / "secret").read_bytes() == secret + b"\n", "the host marker file changed or vanished"
    assert (d / "sub" / "deeper").read_bytes() == secret + b" deeper\n", "the host marker tree changed or vanished"


def run_ok(sb, cmd, timeout=60.0):
    code, out = sandbox_run(sb, cmd, timeout)
    assert code == 0, f"{cmd!r} exited {code}: {out!r}"
    return out


def settle(sb, want, timeout=120):
    st = wait_settled(sb, timeout)
    assert st == want, f"{st}, want {want}\n{status_text(sb)}\n{error_text(sb)}\n{log_text(sb)}"


def upper_of(fs, name):
    """The local provider's writable tree of sandbox name in the state dir."""
    return fs.state / "sandboxes" / name / "fs" / "upper"


class Swapper:
    """A host thread that keeps swapping directory top/name for symlinks to
    each of targets and back, as fast as it can, until stopped."""

    def __init__(self, top, name, targets, hold=0.0):
        self.top, self.name, self.targets = pathlib.Path(top), name, [str(t) for t in targets]
        # each state held up to `hold` seconds (random): a swap right
        # between two steps of a walk, and one that lasts a whole subtree
        self.hold = hold
        self.stop_ev = threading.Event()
        self.swaps = 0
        self.t = threading.Thread(target=self.loop, daemon=True, name="swapper")

    def loop(self):
        d, away = self.top / self.name, self.top / (self.name + ".away")
        while not self.stop_ev.is_set():
            for t in self.targets:
                try:
                    os.rename(d, away)
                    os.symlink(t, d)
                    self.swaps += 1
                    self.pause()
                    os.unlink(d)
                    os.rename(away, d)
                    self.pause()
                except OSError:
                    pass
        # leave the directory in place
        try:
            if os.path.islink(d):
                os.unlink(d)
            if away.exists() and not d.exists():
                os.rename(away, d)
        except OSError:
            pass

    def pause(self):
        if self.hold:
            time.sleep(random.uniform(0, self.hold))

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        self.t.join(10)


def make_tree(top, name, files=200, content=b"inner data"):
    """top/name with subdirectories and files, so a walk of it takes a while."""
    d = pathlib.Path(top) / name
    for i in range(4):
        (d / f"s{i}").mkdir(parents=True, exist_ok=True)
        for j in range(files // 4):
            (d / f"s{i}" / f"f{j}").write_bytes(content + b" %d %d\n" % (i, j))
    return d


# The loop hostile code runs in its sandbox: directory d of /workspace is
# renamed away and a symlink to / or to the host's marker put in its place.
IN_SANDBOX_LOOP = (
    "cd /workspace && mkdir -p d/e && for i in $(seq 40); do echo inner > d/e/f$i; done && "
    "while :; do mv d d.x; ln -s / d; rm d; ln -s {mark} d; rm d; ln -s {other} d; rm d; mv d.x d; done"
)


def host_passwd_line():
    """A line of the host's /etc/passwd that a sandbox's own /etc/passwd
    (root and nobody) lacks."""
    with open("/etc/passwd", "rb") as f:
        lines = [ln for ln in f.read().splitlines() if ln and not ln.startswith((b"root:", b"nobody:"))]
    return lines[0] if lines else b"\0no other line\0"


def leaked(top, secret):
    """What of the host shows in a copied tree: the marker's content, or
    the files a walk through a link to / or a state directory would bring."""
    hits = [str(p) for p in grep_tree(top, secret)]
    for dirpath, dirnames, filenames in os.walk(top):
        rel = os.path.relpath(dirpath, top)
        for n in dirnames + filenames:
            if n in ("shadow", "ssh_host_ed25519_key", "sandboxes", "secret", "deeper", "state.json"):
                hits.append(os.path.join(rel, n))
    return hits


@needs_local("snapshots of the ssh provider are copied on its host by its own script")
def test_snapshot_swap_race_and_restore(seerfs_factory, marker, tmp_path):
    mdir, secret = marker
    fs = seerfs_factory(state=tmp_path / "st")
    # Another sandbox whose config holds a secret of its own: a copy that
    # followed a link into the state directory would carry it.
    other_secret = f"OTHERSB-{uuid.uuid4().hex}"
    fs.sandbox("other", json.dumps({"env": {"OTHER_SECRET": other_secret}}))
    a = fs.sandbox("a", "{}")
    other_dir = fs.state / "sandboxes" / "other"
    start_job(a, IN_SANDBOX_LOOP.format(mark=mdir, other=other_dir))
    upper = upper_of(fs, "a")
    poll(lambda: (upper / "workspace" / "d.x").exists() or (upper / "workspace" / "d").exists(), what="the loop started")
    # A small tree: copying it fits in one state of the swapper's.
    make_tree(upper / "workspace", "h", files=20)
    # names a walk sent to the host's /etc or to the other sandbox's state
    # would find there
    (upper / "workspace" / "h2").mkdir()
    (upper / "workspace" / "h2" / "passwd").write_text("mine\n")
    (upper / "workspace" / "h3").mkdir()
    (upper / "workspace" / "h3" / "config.json").write_text("{}\n")
    taken, swaps = [], 0
    # One swapper at a time: a walk by path that meets a swap half way
    # fails (ENOENT) more often than it leaks, and two swappers would hide
    # each other's leaks.
    phases = (("h", mdir, ROUNDS), ("h2", "/etc", ROUNDS // 2), ("h3", other_dir, ROUNDS // 2), ("h", "/", 2))
    for k, (d, target, rounds) in enumerate(phases):
        with Swapper(upper / "workspace", d, [target], hold=0.1) as sw:
            for i in range(rounds):
                name = f"s{k}-{i}"
                try:
                    ctl(a, f"snapshot {name}")
                    taken.append(name)
                except OSError as e:
                    # a swap the copy saw fails it; nothing half is kept
                    assert name not in os.listdir(fs.path / "snapshots"), f"a failed snapshot {name} was kept: {e}"
        swaps += sw.swaps
    assert swaps > 0, "the host swappers never swapped"
    assert taken, f"no snapshot of {ROUNDS} succeeded: {log_text(a)}"
    for name in taken:
        layer = fs.state / "snapshots" / name / "layer"
        hits = leaked(layer, secret) + [str(p) for p in grep_tree(layer, other_secret.encode())] + \
            [str(p) for p in grep_tree(layer, host_passwd_line())]
        assert not hits, f"snapshot {name} holds host files: {hits[:5]}"
        for d in ("d", "h", "h2", "h3"):
            p = layer / "workspace" / d
            assert not p.is_symlink() or os.readlink(p) in ("/", "/etc", str(mdir), str(other_dir)), p
    marker_intact(marker)
    # Restores of such snapshots read nothing of the host.
    last = {n.split("-")[0]: n for n in taken}   # the last snapshot of each phase
    for name in sorted(last.values()):
        b = fs.sandbox(f"r{name}", json.dumps({"snapshot": name}))
        code, out = sandbox_run(b, f"cat /workspace/d/secret /workspace/h/secret /workspace/h/s0/f0 "
                                   f"/workspace/h2/passwd /workspace/h3/config.json {mdir}/secret "
                                   f"{other_dir}/config.json 2>/dev/null; grep -rs {secret.decode()} /workspace; "
                                   f"grep -rs {other_secret} /workspace; true")
        assert secret not in out and other_secret.encode() not in out and host_passwd_line() not in out, \
            f"restore of {name} reads the host: {out!r}"
        ctl(b, "terminate")
        wait_settled(b)
        os.rmdir(b)
    marker_intact(marker)


def test_local_dirs_swap_race(seerfs_factory, marker, tmp_path):
    mdir, secret = marker
    src = tmp_path / "src"
    make_tree(src, "tree")
    (src / "tree" / "top.txt").write_text("top\n")
    fs = seerfs_factory(state=tmp_path / "st")
    copied = 0
    with Swapper(src / "tree", "s1", [mdir, mdir / "sub"]) as sw:
        for i in range(max(4, ROUNDS // 2)):
            sb = fs.sandbox(f"ld{i}", json.dumps({"local_dirs": [[str(src / "tree"), "/opt/tree"]]}), want=None)
            st = wait_settled(sb, 120)
            assert st in ("running", "failed"), st
            if st == "failed":
                # the copy saw a swap: it says so, and followed nothing
                assert "replaced while it was copied" in error_text(sb), error_text(sb)
                ctl(sb, "terminate")
                wait_settled(sb)
            else:
                copied += 1
                out = run_ok(sb, f"cat /opt/tree/top.txt; grep -rs {secret.decode()} /opt/tree; "
                                 "cat /opt/tree/s1/secret /opt/tree/s1/deeper 2>/dev/null; true")
                assert out.startswith(b"top\n") and secret not in out, f"round {i}: the copy holds the marker: {out!r}"
            if LOCAL:
                hits = leaked(upper_of(fs, sb.name), secret)
                assert not hits, f"round {i}: host files in the sandbox: {hits[:5]}"
            _teardown_sandbox(sb)
    assert sw.swaps > 0
    marker_intact(marker)
    # Without the swapper the copy is whole.
    sb = fs.sandbox("whole", json.dumps({"local_dirs": [[str(src / "tree"), "/opt/tree"]]}))
    assert run_ok(sb, "ls /opt/tree/s1 | wc -l; cat /opt/tree/s1/f0").split() == [b"50", b"inner", b"data", b"1",
                                                                                    b"0"]


@needs_local("the ssh provider removes a sandbox on its host with its own script")
def test_rmdir_swap_race_keeps_host_files(seerfs_factory, marker, tmp_path):
    mdir, secret = marker
    fs = seerfs_factory(state=tmp_path / "st")
    for i in range(max(3, ROUNDS // 3)):
        sb = fs.sandbox(f"rm{i}", "{}")
        # a link planted by the sandbox where a directory was, left there
        run_ok(sb, f"mkdir -p /workspace/a/b && echo x > /workspace/a/b/f && ln -s {mdir} /workspace/planted && "
                   f"ln -s / /workspace/root-link")
        upper = upper_of(fs, sb.name)
        make_tree(upper / "workspace", "h")
        ctl(sb, "terminate")
        wait_settled(sb)
        # directories rm must chmod before it can enter them (not root)
        for sub in ("s0", "s1", "s2", "s3"):
            os.chmod(upper / "workspace" / "h" / sub, 0)
        os.chmod(upper / "workspace" / "h", 0o500)
        with Swapper(upper / "workspace", "h", [mdir, "/", mdir / "sub"]):
            try:
                os.rmdir(sb)
            except OSError:
                pass   # a swap met more often than the retries: refused, not followed
        marker_intact(marker)
        assert os.path.exists("/etc/passwd")
    # without a racer rmdir removes everything, links included
    sb = fs.sandbox("plain", "{}")
    run_ok(sb, f"ln -s {mdir} /workspace/planted && mkdir /workspace/d && ln -s {mdir}/sub /workspace/d/l")
    ctl(sb, "terminate")
    wait_settled(sb)
    os.rmdir(sb)
    assert not (fs.state / "sandboxes" / "plain").exists()
    marker_intact(marker)


def _git_repo(path, content):
    g = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    (path / "hello.txt").write_text(content)
    subprocess.run(g + ["add", "hello.txt"], check=True)
    subprocess.run(g + ["commit", "-q", "-m", "first"], check=True)


def test_failed_file_repo_clone_leaves_no_copy(seerfs_factory, tmp_path):
    if not shutil.which("git"):
        pytest.skip("git is not installed")
    repo = tmp_path / "brokenrepo"
    mark = f"REPOMARK-{uuid.uuid4().hex}"
    _git_repo(repo, mark + "\n")
    # a branch that does not exist: the copy is made, the clone fails
    fs = seerfs_factory(state=tmp_path / "st")
    cfg = {"repos": [{"url": f"file://{repo}", "branch": "no-such-branch"}]}
    sb = fs.sandbox("rc", json.dumps(cfg), want=None)
    settle(sb, "failed")
    assert "git clone" in error_text(sb)
    if LOCAL:
        upper = upper_of(fs, "rc")
        assert not (upper / "tmp" / ".seerfs-repo").exists(), "the host copy of the repository stayed in the sandbox"
        assert not grep_tree(upper, mark.encode()), "the repository's files stayed in the sandbox"
    # the sandbox itself sees nothing of it either
    assert not (sb / "root" / "tmp" / ".seerfs-repo").exists()
    # a directory that is no repository at all fails the same way, and clean
    notrepo = tmp_path / "notrepo"
    notrepo.mkdir()
    (notrepo / "file.txt").write_text(mark + "\n")
    sb2 = fs.sandbox("rc2", json.dumps({"repos": [{"url": f"file://{notrepo}"}]}), want=None)
    settle(sb2, "failed")
    if LOCAL:
        assert not grep_tree(upper_of(fs, "rc2"), mark.encode()), "the copy of the directory stayed in the sandbox"
        assert not (upper_of(fs, "rc2") / "tmp" / ".seerfs-repo").exists()
