"""The docker provider on a remote engine (docs/docker.md, "Remote
engines"): the test's own dockerd (engines.py, docker_engine) reached over
its TLS tcp endpoint with the entry forced remote ("local": false), so
nothing of this machine is bound into the container. root/ is SFTP to
/usr/lib/openssh/sftp-server started in the container over an Engine API
exec stream (core/lib/bytestream_engine.c); local_files and local_dirs go
through the archive endpoint; snapshots/NAME/root/ is the same SFTP to a
viewer container of the snapshot's image (core/providers/docker/snapview.c),
read-only, adopted at a remount, removed with the snapshot."""

import errno
import io
import json
import os
import pathlib
import tarfile
import time
import urllib.parse
import uuid

import pytest

from conftest import ctl, docker_entry, error_text, log_text, poll, read_text, sandbox_run, state, wait_settled
from conftest import start_job
import dockerhelp
from dockerhelp import file_rows, host_secret, hub, hub_model  # noqa: F401 (hub: a fixture)

NAME = "dkr"


def remote_entry(engine, **kw):
    """`engine` as a remote one: its TLS endpoint, "local": false."""
    e = engine
    fields = dict(endpoint=e.tls_endpoint, ca=e.ca, cert=e.cert, key=e.key, local=False)
    fields.update(kw)
    return docker_entry(e, **fields)


def mount(factory, tmp_path, engine, state_dir=None, env=None, **kw):
    return dockerhelp.mount(factory, tmp_path, {NAME: remote_entry(engine, **kw)}, env=env, state_dir=state_dir)


def start(m, name, config=None, want="running"):
    return dockerhelp.start(m, name, NAME, config, want)


def container_of(engine, name):
    q = "/containers/json?all=1&filters=" + urllib.parse.quote(json.dumps({"label": ["seerfs.sandbox=" + name]}))
    st, body = engine.request("GET", q)
    assert st == 200, body
    cs = json.loads(body)
    assert len(cs) == 1, cs
    st, body = engine.request("GET", f"/containers/{cs[0]['Id']}/json")
    assert st == 200, body
    return json.loads(body)


def file_in_container(engine, cid, path):
    """A file's bytes as the engine reads it inside the container (the
    archive endpoint), or None when it is not there."""
    st, body = engine.request("GET", f"/containers/{cid}/archive?path=" + urllib.parse.quote(path))
    if st == 404:
        return None
    assert st == 200, body
    with tarfile.open(fileobj=io.BytesIO(body)) as t:
        m = t.getmembers()[0]
        if m.issym():
            return ("symlink", m.linkname)
        return t.extractfile(m).read()


@pytest.fixture
def engine(docker_engine):
    if not docker_engine.tls_endpoint:
        pytest.skip("this engine has no TLS tcp endpoint")
    return docker_engine


def test_remote_root_read_write_rename_symlink(seerfs_factory, tmp_path, engine):
    m = mount(seerfs_factory, tmp_path, engine)
    a = start(m, "r1")
    c = container_of(engine, "r1")
    # nothing of this machine is bound in, and its init is no seerfs binary
    assert not c["HostConfig"]["Binds"] and not c["Mounts"], (c["HostConfig"]["Binds"], c["Mounts"])
    assert c["Path"] == "/bin/sh"
    root = a / "root"
    # the container's own files
    assert (root / "etc" / "hostname").read_text().strip() == "r1"
    assert (root / "usr" / "lib" / "openssh" / "sftp-server").is_file()
    # write, read, append, rename, mkdir, rmdir, unlink
    (root / "workspace").mkdir(exist_ok=True)
    f = root / "workspace" / "a.txt"
    f.write_text("hello remote\n")
    with open(f, "a") as fh:
        fh.write("more\n")
    assert f.read_text() == "hello remote\nmore\n"
    big = os.urandom(3 * 1024 * 1024 + 17)
    (root / "workspace" / "big.bin").write_bytes(big)
    assert (root / "workspace" / "big.bin").read_bytes() == big
    os.rename(f, root / "workspace" / "b.txt")
    assert not f.exists()
    (root / "workspace" / "sub").mkdir()
    os.rename(root / "workspace" / "b.txt", root / "workspace" / "sub" / "b.txt")
    assert sorted(os.listdir(root / "workspace")) == ["big.bin", "sub"]
    # the engine sees the same files inside the container
    assert file_in_container(engine, c["Id"], "/workspace/sub/b.txt") == b"hello remote\nmore\n"
    # symlinks are made and read as links, resolved inside the container
    os.symlink("sub/b.txt", root / "workspace" / "ln")
    assert os.readlink(root / "workspace" / "ln") == "sub/b.txt"
    assert (root / "workspace" / "ln").read_text() == "hello remote\nmore\n"
    assert file_in_container(engine, c["Id"], "/workspace/ln") == ("symlink", "sub/b.txt")
    os.chmod(root / "workspace" / "sub" / "b.txt", 0o640)
    assert (root / "workspace" / "sub" / "b.txt").stat().st_mode & 0o777 == 0o640
    os.unlink(root / "workspace" / "ln")
    os.unlink(root / "workspace" / "sub" / "b.txt")
    os.rmdir(root / "workspace" / "sub")
    with pytest.raises(FileNotFoundError):
        (root / "workspace" / "nope").read_text()
    # a command sees what root/ wrote: one container
    (root / "workspace" / "seen").write_text("via-sftp")
    code, out = sandbox_run(a, "cat /workspace/seen; hostname")
    assert (code, out) == (0, b"via-sftpr1\n")


def test_remote_escape_symlinks_stay_inside(seerfs_factory, tmp_path, engine):
    with host_secret() as secret:
        m = mount(seerfs_factory, tmp_path, engine)
        a = start(m, "e1")
        root = a / "root"
        (root / "workspace").mkdir(exist_ok=True)
        os.symlink("/", root / "workspace" / "top")
        os.symlink(str(secret), root / "workspace" / "abs")
        os.symlink("../../../../../../.." + str(secret), root / "workspace" / "rel")
        # through root/, every link resolves in the container: the host's file is not there
        assert not (root / "workspace" / "top" / secret.relative_to("/")).exists()
        for name in ("abs", "rel"):
            with pytest.raises(OSError):
                (root / "workspace" / name).read_text()
        # "/" through the link is the container's "/", not the host's
        assert (root / "workspace" / "top" / "etc" / "hostname").read_text().strip() == "e1"
        # writing through the link lands in the container, never on the host
        (root / "workspace" / "top" / "tmp" / "planted").write_text("x")
        assert not pathlib.Path("/tmp/planted").exists() or pathlib.Path("/tmp/planted").read_text() != "x"
        assert file_in_container(engine, container_of(engine, "e1")["Id"], "/tmp/planted") == b"x"


def test_remote_local_files_through_the_archive_endpoint(seerfs_factory, tmp_path, engine):
    src = tmp_path / "in.txt"
    src.write_text("from-the-host")
    d = tmp_path / "d"
    (d / "deep").mkdir(parents=True)
    (d / "x").write_text("x1")
    (d / "deep" / "y").write_text("y1")
    os.symlink("x", d / "lx")
    m = mount(seerfs_factory, tmp_path, engine)
    a = start(m, "lf1", {"local_files": [[str(src), "/workspace/in.txt"]],
                         "local_dirs": [[str(d), "/opt/d"]]})
    root = a / "root"
    assert (root / "workspace" / "in.txt").read_text() == "from-the-host"
    assert (root / "opt" / "d" / "x").read_text() == "x1"
    assert (root / "opt" / "d" / "deep" / "y").read_text() == "y1"
    assert os.readlink(root / "opt" / "d" / "lx") == "x"
    cid = container_of(engine, "lf1")["Id"]
    assert file_in_container(engine, cid, "/opt/d/deep/y") == b"y1"
    st = (root / "workspace" / "in.txt").stat()
    assert (st.st_uid, st.st_gid) == (0, 0)


def test_remote_image_without_sftp_server_is_refused(seerfs_factory, tmp_path, engine):
    m = mount(seerfs_factory, tmp_path, engine)
    a = start(m, "ns1")
    cid = container_of(engine, "ns1")["Id"]
    os.unlink(a / "root" / "usr" / "lib" / "openssh" / "sftp-server")
    tag = "t" + uuid.uuid4().hex[:8]
    st, body = engine.request("POST", f"/commit?container={cid}&repo=seerfs-nosftp&tag={tag}")
    assert st == 201, body
    try:
        b = start(m, "ns2", {"image": f"seerfs-nosftp:{tag}"}, want="failed")
        err = error_text(b)
        assert "/usr/lib/openssh/sftp-server" in err and f"seerfs-nosftp:{tag}" in err, err
    finally:
        engine.request("DELETE", f"/images/seerfs-nosftp:{tag}?force=1")


def test_remote_engine_killed_fails_pending_requests_in_time(seerfs_factory, tmp_path, engine):
    m = mount(seerfs_factory, tmp_path, engine, timeout=5)
    a = start(m, "k1")
    root = a / "root"
    (root / "workspace").mkdir(exist_ok=True)
    (root / "workspace" / "f").write_text("before")
    (a / "exec").write_text("sleep 60; echo done")
    job = a / "jobs" / "latest"
    time.sleep(0.5)
    engine.kill()
    try:
        # the job's stream went with the engine: it ends as killed, at once
        assert exit_of(job, 20) == 'signal 9'
        t0 = time.monotonic()
        with pytest.raises(OSError) as ei:
            (root / "workspace" / "g").write_text("during")
        took = time.monotonic() - t0
        assert took < 15, took
        assert ei.value.errno in (errno.ENOTCONN, errno.EIO, errno.ETIMEDOUT, errno.ECONNABORTED), ei.value
    finally:
        engine.start()
    # the engine back (it stopped the container at its start): root/ connects again
    deadline = time.monotonic() + 60
    while True:
        try:
            (root / "workspace" / "after").write_text("after")
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    assert sorted(os.listdir(root / "workspace")) == ["after", "f"]
    assert (root / "workspace" / "f").read_text() == "before"
    assert "reached again" in log_text(a)
    # and commands run again
    code, out = sandbox_run(a, "cat /workspace/after")
    assert (code, out) == (0, b"after")


def exit_of(job, timeout=60):
    return read_text(job / "exit", timeout).strip()


def test_remote_exec_stdin_exit_env_kill(seerfs_factory, tmp_path, engine):
    m = mount(seerfs_factory, tmp_path, engine)
    a = start(m, "x1")
    # exit codes and output, stdout and stderr
    for cmd, want in (("true", "0"), ("false", "1"), ("exit 3", "3"), ("no-such-command-xyz", "127")):
        assert exit_of(start_job(a, cmd)) == want, cmd
    j = start_job(a, "echo out; echo err >&2; pwd")
    assert exit_of(j) == "0"
    assert (j / "stdout").read_text() == "out\n/workspace\n"
    assert (j / "stderr").read_text() == "err\n"
    # stdin, with its end
    fd = os.open(a / "exec", os.O_RDWR)
    try:
        os.write(fd, b"wc -c; echo end")
        job = a / "jobs" / os.readlink(a / "jobs" / "mine")
        w = os.open(job / "stdin", os.O_WRONLY)
        os.write(w, b"x" * 100000)
        os.close(w)
        out = b""
        while b := os.read(fd, 65536):
            out += b
    finally:
        os.close(fd)
    assert out.split() == [b"100000", b"end"]
    # no stdin: EOF at once
    j = start_job(a, "cat; echo after-eof")
    assert exit_of(j, 20) == "0" and (j / "output").read_text() == "after-eof\n"
    # kill of the tree: every process of it, inside the container
    marker = "seerfs-remote-kill-4321"
    j = start_job(a, f"sh -c 'sleep 1000 # {marker}' & sleep 1002 # {marker}")
    def left():
        code, out = sandbox_run(a, f"ps -eo args | grep -c '[#] {marker}'")
        return int(out.decode().strip() or 0)
    poll(lambda: left() >= 2, what="the job's processes to start")
    t0 = time.monotonic()
    ctl_fd = os.open(j / "ctl", os.O_WRONLY)
    os.write(ctl_fd, b"kill")
    os.close(ctl_fd)
    assert exit_of(j) == "signal 9"
    kill_s = time.monotonic() - t0
    poll(lambda: left() == 0, what="no process of the tree left in the container")
    # a signal the command handles
    j = start_job(a, "trap 'echo got-usr1; exit 5' USR1; while true; do sleep 0.05; done")
    time.sleep(0.5)
    ctl_fd = os.open(j / "ctl", os.O_WRONLY)
    os.write(ctl_fd, b"signal 10")
    os.close(ctl_fd)
    assert exit_of(j) == "5" and "got-usr1" in (j / "stdout").read_text()
    # the round trip, beside the local engine's in test_docker.py
    t0 = time.monotonic()
    for _ in range(10):
        assert sandbox_run(a, "true")[0] == 0
    print(f"\nremote exec round trip {(time.monotonic() - t0) / 10 * 1000:.1f} ms; kill {kill_s * 1000:.0f} ms")


def test_remote_root_and_exec_speed_beside_local_engine(seerfs_factory, tmp_path, engine):
    """One mount, the same dockerd as a local and as a remote engine: the
    rows of docs/docker.md's remote table (printed; the assertions are on
    the files)."""
    m = dockerhelp.mount(seerfs_factory, tmp_path, {"loc": docker_entry(engine), NAME: remote_entry(engine)})
    boxes = {"local": dockerhelp.start(m, "sl", "loc"), "remote": start(m, "sr")}
    n = 200
    rows = {}
    for kind, sb in boxes.items():
        d = sb / "root" / "workspace" / "bench"
        d.mkdir(parents=True)
        t = file_rows(d, n, readdir=True)
        big = os.urandom(16 << 20)
        t0 = time.monotonic()
        (d / "big").write_bytes(big)
        t["write 16 MiB"] = time.monotonic() - t0
        t0 = time.monotonic()
        assert (d / "big").read_bytes() == big
        t["read 16 MiB"] = time.monotonic() - t0
        t0 = time.monotonic()
        for _ in range(10):
            assert sandbox_run(sb, "true")[0] == 0
        t["exec round trip"] = (time.monotonic() - t0) / 10
        rows[kind] = t
    print("\n| row | local engine | remote (TLS, SFTP) |")
    for k in rows["local"]:
        label = f"{k} ({n} files)" if k in ("create", "stat", "read", "readdir", "delete") else k
        print(f"| {label} | {rows['local'][k] * 1000:.1f} ms | {rows['remote'][k] * 1000:.1f} ms |")


def test_remote_model_volume_filled_once(seerfs_factory, tmp_path, engine, hub):
    import hashlib
    repo, env = hub_model(hub)
    e = engine
    m = mount(seerfs_factory, tmp_path, e, env=env)
    a = start(m, "md1", {"models": ["seer/tiny-model"]})
    assert "filled in" in log_text(a), log_text(a)
    want = hashlib.sha256(repo.files["model.safetensors"]).hexdigest()
    code, out = sandbox_run(a, "sha256sum /models/seer--tiny-model/model.safetensors")
    assert code == 0 and want in out.decode(), out
    # the files, not links into a cache that is not there
    assert (a / "root" / "models" / "seer--tiny-model" / "model.safetensors").read_bytes() == \
        repo.files["model.safetensors"]
    code, _ = sandbox_run(a, "touch /models/seer--tiny-model/x")
    assert code != 0, "the model must be read-only"
    # a volume of the engine's, labelled with the model, mounted read-only; no host path
    c = container_of(e, "md1")
    mounts = [x for x in c["Mounts"] if x["Destination"] == "/models/seer--tiny-model"]
    assert len(mounts) == 1 and mounts[0]["Type"] == "volume" and mounts[0]["RW"] is False, c["Mounts"]
    st, body = e.request("GET", "/volumes/" + mounts[0]["Name"])
    assert st == 200, body
    assert json.loads(body)["Labels"]["seerfs.model"] == "seer/tiny-model"
    # a second sandbox on the same engine uses the volume as it is
    b = start(m, "md2", {"models": ["seer/tiny-model"]})
    assert "is filled already" in log_text(b) and "filled in" not in log_text(b), log_text(b)
    code, out = sandbox_run(b, "sha256sum /models/seer--tiny-model/model.safetensors")
    assert code == 0 and want in out.decode(), out
    # no helper container is left behind
    q = "/containers/json?all=1&filters=" + urllib.parse.quote(json.dumps({"label": ["seerfs.helper=model"]}))
    st, body = e.request("GET", q)
    assert st == 200 and json.loads(body) == [], body


# ---- snapshots: snapshots/NAME/root/ through a viewer container over SFTP ------------------


def viewers_of(engine, snap):
    """The engine's viewer containers of snapshot `snap` (all states)."""
    q = "/containers/json?all=1&filters=" + urllib.parse.quote(json.dumps({"label": ["seerfs.snapshot=" + snap]}))
    st, body = engine.request("GET", q)
    assert st == 200, body
    return json.loads(body)


def snap_images(engine, snap):
    st, body = engine.request("GET", "/images/json")
    assert st == 200, body
    return [t for i in json.loads(body) for t in (i.get("RepoTags") or [])
            if t.startswith("seerfs-snap:") and t.endswith("-" + snap)]


def assert_erofs(fn, *args):
    with pytest.raises(OSError) as ei:
        fn(*args)
    assert ei.value.errno == errno.EROFS, (fn, args, ei.value)


def test_remote_snapshot_browse_read_only_and_removed(seerfs_factory, tmp_path, engine):
    m = mount(seerfs_factory, tmp_path, engine)
    a = start(m, "rs1")
    ws = a / "root" / "workspace"
    ws.mkdir(exist_ok=True)
    (ws / "f.txt").write_text("kept\n")
    big = os.urandom(2 * 1024 * 1024 + 5)
    (ws / "big.bin").write_bytes(big)
    (ws / "sub").mkdir()
    (ws / "sub" / "x").write_text("deep")
    os.symlink("sub/x", ws / "ln")
    code, out = sandbox_run(a, "mkdir -p /opt/x && echo opt > /opt/x/y")
    assert code == 0, out
    ctl(a, "snapshot s1")
    snap = m.path / "snapshots" / "s1"
    root = snap / "root"
    # its files, as written (the first look makes the viewer and connects)
    t0 = time.monotonic()
    assert sorted(os.listdir(root / "workspace")) == ["big.bin", "f.txt", "ln", "sub"]
    first = time.monotonic() - t0
    assert (root / "workspace" / "f.txt").read_text() == "kept\n"
    assert (root / "workspace" / "big.bin").read_bytes() == big
    assert (root / "workspace" / "sub" / "x").read_text() == "deep"
    assert os.readlink(root / "workspace" / "ln") == "sub/x"
    assert (root / "workspace" / "ln").read_text() == "deep"
    assert (root / "opt" / "x" / "y").read_text() == "opt\n"
    print(f"\nremote snapshot root/: first look {first:.2f} s (viewer made and started, SFTP connected)")
    # read-only: every change is EROFS
    assert_erofs((root / "workspace" / "new").write_text, "no")
    assert_erofs((root / "workspace" / "f.txt").write_text, "changed")
    assert_erofs(os.mkdir, root / "workspace" / "d")
    assert_erofs(os.unlink, root / "workspace" / "f.txt")
    assert_erofs(os.rmdir, root / "workspace" / "sub")
    assert_erofs(os.rename, root / "workspace" / "f.txt", root / "workspace" / "g.txt")
    assert_erofs(os.symlink, "x", root / "workspace" / "l2")
    assert_erofs(os.chmod, root / "workspace" / "f.txt", 0o600)
    assert_erofs(os.truncate, root / "workspace" / "f.txt", 0)
    assert (root / "workspace" / "f.txt").read_text() == "kept\n"
    # the sandbox's later changes are not in the snapshot
    (ws / "f.txt").write_text("later\n")
    (ws / "after").write_text("after")
    code, out = sandbox_run(a, "echo changed > /opt/x/y")
    assert code == 0, out
    assert (root / "workspace" / "f.txt").read_text() == "kept\n"
    assert not (root / "workspace" / "after").exists()
    assert (root / "opt" / "x" / "y").read_text() == "opt\n"
    assert (ws / "f.txt").read_text() == "later\n"
    # the viewer: on the engine, with the sandboxes' isolation, a read-only
    # root, no network, nothing of this machine bound in; not the sandbox's
    vs = viewers_of(engine, "s1")
    assert len(vs) == 1, vs
    st, body = engine.request("GET", f"/containers/{vs[0]['Id']}/json")
    assert st == 200, body
    v = json.loads(body)
    hc = v["HostConfig"]
    assert hc["ReadonlyRootfs"] is True and hc["NetworkMode"] == "none", hc
    assert hc["CapDrop"] == ["ALL"] and "no-new-privileges" in hc["SecurityOpt"] and not hc["Privileged"], hc
    assert not hc["Binds"] and not v["Mounts"], (hc["Binds"], v["Mounts"])
    assert v["Path"] == "/bin/sh" and v["State"]["Running"] is True
    assert v["Config"]["Labels"]["seerfs.state"] == str(m.state)
    assert container_of(engine, "rs1")["Id"] != v["Id"]   # one container labelled rs1: the sandbox
    # rmdir removes the viewer and the image
    assert len(snap_images(engine, "s1")) == 1
    os.rmdir(snap)
    assert viewers_of(engine, "s1") == []
    assert snap_images(engine, "s1") == []
    assert not snap.exists()
    # the sandbox is untouched
    assert (ws / "f.txt").read_text() == "later\n"


def test_remote_snapshot_symlinks_stay_in_the_viewer(seerfs_factory, tmp_path, engine):
    with host_secret() as secret:
        m = mount(seerfs_factory, tmp_path, engine)
        a = start(m, "rs2")
        ws = a / "root" / "workspace"
        ws.mkdir(exist_ok=True)
        (ws / "marker").write_text("inside")
        os.symlink("/", ws / "top")
        os.symlink("../../../../../../..", ws / "up")
        os.symlink(str(secret), ws / "abs")
        os.symlink("../../../../../../.." + str(secret), ws / "rel")
        ctl(a, "snapshot s2")
        root = m.path / "snapshots" / "s2" / "root"
        sws = root / "workspace"
        # root/ shows a link to "/" relative, into the snapshot's root/ (docs/sftpfs.md)
        assert os.path.realpath(sws / "top") == os.path.realpath(root)
        # "/" and "../../.." through the links are the viewer's "/": the
        # snapshot's files, never the host's
        for link in ("top", "up"):
            assert (sws / link / "workspace" / "marker").read_text() == "inside"
            assert not (sws / link / secret.relative_to("/")).exists()
            assert sorted(os.listdir(sws / link / "workspace")) == ["abs", "marker", "rel", "top", "up"]
        for name in ("abs", "rel"):
            with pytest.raises(OSError) as ei:
                (sws / name).read_text()
            assert ei.value.errno == errno.ENOENT, ei.value
        # nor can anything be written through them
        assert_erofs((sws / "top" / "tmp" / "planted").write_text, "x")
        assert not pathlib.Path("/tmp/planted").exists() or pathlib.Path("/tmp/planted").read_text() != "x"
        os.rmdir(m.path / "snapshots" / "s2")
        assert viewers_of(engine, "s2") == []


def test_remote_snapshot_viewer_adopted_after_remount(seerfs_factory, tmp_path, engine):
    m = mount(seerfs_factory, tmp_path, engine)
    a = start(m, "rs3")
    (a / "root" / "workspace").mkdir(exist_ok=True)
    (a / "root" / "workspace" / "f").write_text("one")
    ctl(a, "snapshot s3")
    # first looks from several threads at once: one viewer, every look served
    from concurrent.futures import ThreadPoolExecutor
    f = m.path / "snapshots" / "s3" / "root" / "workspace" / "f"
    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(lambda _: f.read_text(), range(6))) == ["one"] * 6
    vs = viewers_of(engine, "s3")
    assert len(vs) == 1, vs
    vid = vs[0]["Id"]
    m.stop(terminate_first=False)
    # the viewer outlives the mount; stopped meanwhile, a remount starts it again
    st, body = engine.request("POST", f"/containers/{vid}/kill")
    assert st == 204, body
    m2 = mount(seerfs_factory, tmp_path, engine, state_dir=m.state)
    root = m2.path / "snapshots" / "s3" / "root"
    assert (root / "workspace" / "f").read_text() == "one"
    vs = viewers_of(engine, "s3")
    assert [x["Id"] for x in vs] == [vid] and vs[0]["State"] == "running", vs
    assert_erofs((root / "workspace" / "g").write_text, "no")
    os.rmdir(m2.path / "snapshots" / "s3")
    assert viewers_of(engine, "s3") == []
    assert snap_images(engine, "s3") == []


def test_remote_snapshot_viewer_of_another_image_made_again_foreign_refused(seerfs_factory, tmp_path, engine):
    m = mount(seerfs_factory, tmp_path, engine)
    a = start(m, "rs4")
    (a / "root" / "workspace").mkdir(exist_ok=True)
    (a / "root" / "workspace" / "f").write_text("v1")
    ctl(a, "snapshot s4")
    assert (m.path / "snapshots" / "s4" / "root" / "workspace" / "f").read_text() == "v1"
    old = viewers_of(engine, "s4")[0]
    m.stop(terminate_first=False)
    # the snapshot's tag now names another image (the same files, committed again)
    tag = snap_images(engine, "s4")[0]
    repo, t = tag.split(":")
    cid = container_of(engine, "rs4")["Id"]
    st, body = engine.request("POST", f"/commit?container={cid}&repo={repo}&tag={t}")
    assert st == 201, body
    # a container under the name a viewer of s5 will take, made by someone else
    foreign = old["Names"][0].lstrip("/").replace("-s4-snapview", "-s5-snapview")
    st, body = engine.request("POST", f"/containers/create?name={foreign}",
                              body=json.dumps({"Image": engine.image, "Cmd": ["true"]}),
                              headers={"Content-Type": "application/json"})
    assert st == 201, body
    try:
        m2 = mount(seerfs_factory, tmp_path, engine, state_dir=m.state)
        root = m2.path / "snapshots" / "s4" / "root"
        assert (root / "workspace" / "f").read_text() == "v1"
        new = viewers_of(engine, "s4")
        assert len(new) == 1 and new[0]["Id"] != old["Id"] and new[0]["ImageID"] != old["ImageID"], (old, new)
        a2 = m2.path / "rs4"
        ctl(a2, "snapshot s5")
        with pytest.raises(OSError) as ei:
            os.listdir(m2.path / "snapshots" / "s5" / "root")
        assert ei.value.errno == errno.EBUSY, ei.value
        assert f"has a container named {foreign} that is not this mount's viewer" in m2.stderr(), m2.stderr()
        st, body = engine.request("GET", f"/containers/{foreign}/json")
        assert st == 200, body   # left alone
    finally:
        engine.request("DELETE", f"/containers/{foreign}?force=1")
    # once it is gone, the viewer is made
    assert sorted(os.listdir(m2.path / "snapshots" / "s5" / "root" / "workspace")) == ["f"]
    for s in ("s4", "s5"):
        os.rmdir(m2.path / "snapshots" / s)
        assert viewers_of(engine, s) == [] and snap_images(engine, s) == []


# ---- the sandbox's agent in the container (core/lib/agent_remote.c) ----------------------------

def procs_with(a, marker):
    """How many processes in the container have marker in their command
    line, read from /proc (no ps needed)."""
    code, out = sandbox_run(a, "for p in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $p 2>/dev/null; echo; done"
                               f" | grep -c '[#] {marker}'")
    return int(out.decode().strip() or 0)


def image_without(engine, a, name, paths):
    """An image of a's container with paths removed (through root/): its
    tag, made with the engine's commit."""
    cid = container_of(engine, name)["Id"]
    for p in paths:
        if os.path.lexists(a / "root" / p.lstrip("/")):
            os.unlink(a / "root" / p.lstrip("/"))
    tag = "t" + uuid.uuid4().hex[:8]
    st, body = engine.request("POST", f"/commit?container={cid}&repo=seerfs-without&tag={tag}")
    assert st == 201, body
    return f"seerfs-without:{tag}"


def test_remote_agent_self_kill_reads_as_signal(seerfs_factory, tmp_path, engine):
    """A command that kills itself: `signal 9` (the agent's wait status),
    not the engine's 128 + 9; `exit 137` stays 137."""
    m = mount(seerfs_factory, tmp_path, engine)
    a = start(m, "sk1")
    log = log_text(a)
    assert "commands start through its agent in container" in log and "one Engine API exec each" not in log, log
    assert exit_of(start_job(a, "kill -9 $$")) == "signal 9"
    assert exit_of(start_job(a, "kill -TERM $$")) == "signal 15"
    assert exit_of(start_job(a, "exit 137")) == "137"
    # the agent's commands run where its stream runs: in the container
    code, out = sandbox_run(a, "cat /etc/hostname; echo $PWD")
    assert code == 0 and out.decode().split()[1] == "/workspace", out


def test_remote_agent_kills_a_tree_without_ps(seerfs_factory, tmp_path, engine):
    """kill of a job's tree in an image without ps: the agent finds the
    tree in /proc."""
    m = mount(seerfs_factory, tmp_path, engine)
    a = start(m, "np1")
    img = image_without(engine, a, "np1", ["/usr/bin/ps", "/bin/ps"])
    try:
        b = start(m, "np2", {"image": img})
        code, out = sandbox_run(b, "command -v ps || echo no-ps")
        assert out.strip() == b"no-ps", out
        marker = "seerfs-agent-kill-5150"
        j = start_job(b, f"sh -c 'sleep 1000 # {marker}' & sh -c 'sleep 1001 # {marker}' & wait")
        poll(lambda: procs_with(b, marker) >= 2, what="the job's processes to start")
        os.write(fd := os.open(j / "ctl", os.O_WRONLY), b"kill")
        os.close(fd)
        assert exit_of(j) == "signal 9"
        poll(lambda: procs_with(b, marker) == 0, what="no process of the tree left in the container")
    finally:
        engine.request("DELETE", f"/images/{img}?force=1")


def test_remote_agent_unmount_ends_running_commands(seerfs_factory, tmp_path, engine):
    """An unmount leaves the container to the next seerfs, but not the
    commands: the agent's stream ends and it kills them."""
    state_dir = tmp_path / "state-um"
    m = mount(seerfs_factory, tmp_path, engine, state_dir=state_dir)
    a = start(m, "um1")
    marker = "seerfs-unmount-7331"
    start_job(a, f"sh -c 'sleep 1000 # {marker}' & sleep 1001 # {marker}")
    poll(lambda: procs_with(a, marker) >= 1, what="the job to start")
    m.stop(terminate_first=False)
    assert container_of(engine, "um1")["State"]["Running"], "an unmount keeps the container"
    m2 = mount(seerfs_factory, tmp_path, engine, state_dir=state_dir)
    a2 = m2.path / "um1"
    assert wait_settled(a2) == "running"
    poll(lambda: procs_with(a2, marker) == 0, timeout=20, what="the commands of the last mount ended")


def test_remote_image_without_perl_falls_back(seerfs_factory, tmp_path, engine):
    """Without perl in the image, commands go one Engine API exec each, as
    before the agent; the log names the image and says why."""
    m = mount(seerfs_factory, tmp_path, engine)
    a = start(m, "pl1")
    code, out = sandbox_run(a, "ls /usr/bin/perl*")
    perls = out.decode().split()
    assert code == 0 and "/usr/bin/perl" in perls, out
    img = image_without(engine, a, "pl1", perls)
    try:
        b = start(m, "pl2", {"image": img})
        log = log_text(b)
        assert "commands go one Engine API exec each" in log and img in log and "no perl" in log, log
        code, out = sandbox_run(b, "echo hi; command -v perl || echo no-perl")
        assert (code, out) == (0, b"hi\nno-perl\n")
        # the engine's exit code of a death by signal: 128 + N
        assert exit_of(start_job(b, "kill -9 $$")) == "137"
        j = start_job(b, "sleep 1000")
        time.sleep(0.5)
        os.write(fd := os.open(j / "ctl", os.O_WRONLY), b"kill")
        os.close(fd)
        assert exit_of(j) == "signal 9"
        # root/ stays on SFTP alone: no FIFOs there
        with pytest.raises(OSError):
            os.mkfifo(b / "root" / "tmp" / "fifo")
        # the round trip of one exec per command, beside the agent's
        rt = {}
        for kind, sb in (("agent", a), ("one exec each", b)):
            t0 = time.monotonic()
            for _ in range(10):
                assert sandbox_run(sb, "true")[0] == 0
            rt[kind] = (time.monotonic() - t0) / 10 * 1000
        print("\nremote exec round trip: " + "; ".join(f"{k} {v:.1f} ms" for k, v in rt.items()))
    finally:
        engine.request("DELETE", f"/images/{img}?force=1")


def test_remote_agent_killed_by_a_command_next_command_starts_another(seerfs_factory, tmp_path, engine):
    """The agent runs as the container's root, as its commands do: one
    that kills it ends the records of the commands it ran (as killed, the
    log says why), and the next command starts another agent."""
    m = mount(seerfs_factory, tmp_path, engine)
    a = start(m, "ak1")
    j = start_job(a, "sleep 1000")
    time.sleep(0.5)
    start_job(a, "for p in /proc/[0-9]*; do grep -q '[s]eerfs-agent' $p/cmdline 2>/dev/null && kill -9 ${p#/proc/}; done")
    assert exit_of(j, 30) == "signal 9"
    poll(lambda: "disconnected (the engine's exec stream of the sandbox's agent ended)" in log_text(a),
         what="the log to say why")
    code, out = sandbox_run(a, "echo again; kill -9 $$")
    assert (code, out) == ("signal 9", b"again\n"), (code, out)
    assert "its agent in container" in log_text(a) and "ended: starting another" in log_text(a)
