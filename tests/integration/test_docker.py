"""The docker provider (core/providers/docker/, docs/docker.md) against a
real dockerd of the test's own (engines.py, the docker_engine fixture; root
only): provisioning with labels, limits and no capabilities; package layers
cached as images (a second sandbox installs nothing); snapshots as commits
and restore; remount adoption; an engine killed mid-job; a TLS endpoint
with client certificates; unreachable endpoints; GPU device requests as the
engine receives them; escapes (host root, /proc/sys, capabilities, planted
symlinks, the agent's socket); secrets kept out of the container's config;
exec latency beside `docker exec`; user namespaces (a userns-remap dockerd of
the module's own, Podman's "userns": "auto"): ids through root/, on disk and
in provisioning's copies, snapshots, and a host root-only file closed to the
container's root.

test_posix.py and test_exec.py run their bodies on docker with
SEERFS_TEST_PROVIDER=docker (conftest.py)."""

import errno
import json
import os
import pathlib
import subprocess
import time

import pytest

from conftest import (build_wheel, ctl, ctl_errno, docker_entry, error_text, log_text, read_text, sandbox_run, state,
                      status_text, wait_settled, write_config)
import dockerhelp
from dockerhelp import host_secret, hub, hub_model  # noqa: F401 (hub: a fixture)

NAME = "dk"


def mount(factory, tmp_path, engine, env=None, state_dir=None, **kw):
    """A seerfs whose providers file names `engine` "dk" (kw: entry fields)."""
    return dockerhelp.mount(factory, tmp_path, {NAME: docker_entry(engine, **kw)}, env=env, state_dir=state_dir)


def start(m, name, config=None, want="running"):
    return dockerhelp.start(m, name, NAME, config, want)


def must(sb, cmd, timeout=120):
    code, out = sandbox_run(sb, cmd, timeout)
    assert code == 0, f"{cmd!r}: exit {code}: {out.decode(errors='replace')}"
    return out.decode(errors="replace")


def containers(engine, name=None):
    """The engine's containers (all states), or those of sandbox `name`."""
    flt = {"label": ["seerfs.sandbox=" + name]} if name else {}
    q = "/containers/json?all=1"
    if flt:
        import urllib.parse
        q += "&filters=" + urllib.parse.quote(json.dumps(flt))
    st, body = engine.request("GET", q)
    assert st == 200, body
    return json.loads(body)


def inspect(engine, cid):
    st, body = engine.request("GET", f"/containers/{cid}/json")
    assert st == 200, body
    return json.loads(body)


def container_of(engine, name):
    cs = containers(engine, name)
    assert len(cs) == 1, cs
    return inspect(engine, cs[0]["Id"])


# ---- provisioning ------------------------------------------------------------------------


def test_provision_labels_isolation_limits(seerfs_factory, tmp_path, docker_engine):
    m = mount(seerfs_factory, tmp_path, docker_engine)
    sb = start(m, "p1", {"memory": "256m", "cpu": 0.5, "network": False,
                         "env": {"SEED": "env-marker-5150"}})
    c = container_of(docker_engine, "p1")
    labels = c["Config"]["Labels"]
    assert labels["seerfs.sandbox"] == "p1"
    assert labels["seerfs.state"] == str(m.state)
    hc = c["HostConfig"]
    assert hc["Privileged"] is False
    assert hc["CapDrop"] == ["ALL"] and not hc.get("CapAdd")
    assert "no-new-privileges" in hc["SecurityOpt"]
    assert hc["NetworkMode"] == "none"
    assert hc["Memory"] == 256 << 20 and hc["NanoCpus"] == 500_000_000
    # The engine's seccomp profile applies: nothing turned it off.
    assert not any("seccomp" in o and "unconfined" in o for o in hc["SecurityOpt"])
    # env reaches the job, never the container's config.
    assert must(sb, "echo $SEED").strip() == "env-marker-5150"
    assert "env-marker-5150" not in json.dumps(c)
    assert "env-marker-5150" not in json.dumps(container_of(docker_engine, "p1"))
    # The limits hold inside: cgroup v2's files, or v1's.
    out = must(sb, "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
    assert out.strip() == str(256 << 20)
    # no network: only lo
    assert must(sb, "ls /sys/class/net").split() == ["lo"]
    assert "docker container" in status_text(sb)
    ctl(sb, "terminate")
    assert wait_settled(sb) == "terminated"
    assert container_of(docker_engine, "p1")["State"]["Running"] is False
    os.rmdir(sb)
    assert containers(docker_engine, "p1") == []


def test_unreachable_endpoint_fails_in_time(seerfs_factory, tmp_path):
    # a socket that is not there, and tcp to a closed port (refused at
    # once): each fails within its timeout, the endpoint named
    for i, endpoint in enumerate(("unix:///nonexistent/seerfs-test/docker.sock", "tcp://127.0.0.1:1")):
        class Unreachable:
            image = "seerfs-base:bookworm"
        Unreachable.endpoint = endpoint
        m = mount(seerfs_factory, tmp_path, Unreachable, timeout=3)
        t0 = time.monotonic()
        sb = start(m, f"u{i + 1}", want="failed")
        assert time.monotonic() - t0 < 10
        assert endpoint in error_text(sb)


def test_tls_endpoint_with_client_certificates(seerfs_factory, tmp_path, docker_engine):
    e = docker_engine
    m = mount(seerfs_factory, tmp_path, e, endpoint=e.tls_endpoint, ca=e.ca, cert=e.cert, key=e.key)
    sb = start(m, "t1")
    assert must(sb, "echo over-tls").strip() == "over-tls"
    # A client certificate of another CA is refused, and the error says where.
    m2 = mount(seerfs_factory, tmp_path, e, endpoint=e.tls_endpoint, ca=e.ca, cert=e.bad_cert, key=e.bad_key,
               timeout=5)
    bad = start(m2, "t2", want="failed")
    assert e.tls_endpoint in error_text(bad)


def test_gpu_device_requests_reach_the_engine(seerfs_factory, tmp_path, docker_engine):
    """No GPU here: the engine refuses to start the container (no nvidia
    driver), so what it received is read from the created container."""
    m = mount(seerfs_factory, tmp_path, docker_engine)
    sb = start(m, "g1", {"gpu": "any", "gpu_count": 2}, want="failed")
    assert "cannot start container" in error_text(sb)
    c = container_of(docker_engine, "g1")
    reqs = c["HostConfig"]["DeviceRequests"]
    assert reqs == [{"Driver": "nvidia", "Count": 2, "DeviceIDs": None, "Capabilities": [["gpu"]],
                     "Options": None}] or (len(reqs) == 1 and reqs[0]["Driver"] == "nvidia" and reqs[0]["Count"] == 2
                                           and reqs[0]["Capabilities"] == [["gpu"]])
    os.rmdir(sb)
    assert containers(docker_engine, "g1") == []


def test_local_files_land_as_root_inside(seerfs_factory, tmp_path, docker_engine):
    src = tmp_path / "in.txt"
    src.write_text("from-the-host")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x1")
    m = mount(seerfs_factory, tmp_path, docker_engine)
    a = start(m, "lf1", {"local_files": [[str(src), "/workspace/in.txt"]],
                         "local_dirs": [[str(tmp_path / "d"), "/opt/d"]]})
    assert must(a, "cat /workspace/in.txt /opt/d/x") == "from-the-hostx1"
    # owned by the container's root (host uid 0: no user namespace), writable by it without capabilities
    assert must(a, "stat -c %u:%g /workspace/in.txt /opt/d/x").split() == ["0:0", "0:0"]
    must(a, "echo more >> /workspace/in.txt")


def test_models_bound_read_only(seerfs_factory, tmp_path, docker_engine, hub):
    import hashlib
    repo, env = hub_model(hub)
    m = mount(seerfs_factory, tmp_path, docker_engine, env=env)
    a = start(m, "md1", {"models": ["seer/tiny-model"]})
    out = must(a, "sha256sum /models/seer--tiny-model/model.safetensors")
    assert hashlib.sha256(repo.files["model.safetensors"]).hexdigest() in out
    code, _ = sandbox_run(a, "touch /models/seer--tiny-model/x")
    assert code != 0, "the model must be read-only"
    code, _ = sandbox_run(a, "echo x > /.seerfs/models/seer--tiny-model/config.json")
    assert code != 0
    # the bind is of the host's model cache, read-only
    c = container_of(docker_engine, "md1")
    assert any(b.endswith(":/.seerfs/models/seer--tiny-model:ro") for b in c["HostConfig"]["Binds"])


# ---- packages --------------------------------------------------------------------------


def provision_log(sb):
    return log_text(sb)


def test_system_packages_cached_as_a_layer(seerfs_factory, tmp_path, docker_engine):
    m = mount(seerfs_factory, tmp_path, docker_engine)
    cfg = {"system_packages": ["hello"]}
    t0 = time.monotonic()
    a = start(m, "s1", cfg)
    a_s = time.monotonic() - t0
    assert "installing into image layer" in log_text(a)
    assert must(a, "hello").strip() == "Hello, world!"
    # The sandbox itself has no capabilities even though apt needed some.
    assert "CapEff:\t0000000000000000" in must(a, "grep CapEff /proc/self/status")
    first = a_s
    t0 = time.monotonic()
    b = start(m, "s2", cfg)
    dt = time.monotonic() - t0
    print(f"system_packages start: first {first:.1f} s (apt-get into a layer), second {dt:.2f} s (cached)")
    log = log_text(b)
    assert "cached, nothing installed" in log and "installing" not in log, log
    assert dt < 5, f"second start took {dt:.1f} s"
    assert must(b, "hello").strip() == "Hello, world!"


def test_python_packages_cached_as_a_layer(seerfs_factory, tmp_path, docker_engine):
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "seerdemo", "1.0", "from-the-wheel")
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels))
    m = mount(seerfs_factory, tmp_path, docker_engine, env=env)
    cfg = {"python_packages": ["seerdemo"]}
    t0 = time.monotonic()
    a = start(m, "py1", cfg)
    first = time.monotonic() - t0
    assert "installing into image layer" in log_text(a)
    assert must(a, "python -c 'import seerdemo; print(seerdemo.VALUE)'").strip() == "from-the-wheel"
    assert must(a, "command -v python").strip() == "/opt/venv/bin/python"
    t0 = time.monotonic()
    b = start(m, "py2", cfg)
    dt = time.monotonic() - t0
    print(f"python_packages start: first {first:.1f} s (venv + pip into a layer), second {dt:.2f} s (cached)")
    assert dt < 5
    assert "cached, nothing installed" in log_text(b)
    assert must(b, "python -c 'import seerdemo; print(seerdemo.VALUE)'").strip() == "from-the-wheel"


# ---- snapshots ------------------------------------------------------------------------


def test_snapshot_browse_restore_remove(seerfs_factory, tmp_path, docker_engine):
    m = mount(seerfs_factory, tmp_path, docker_engine)
    a = start(m, "sn1")
    must(a, "echo kept > /workspace/f && mkdir -p /opt/x && echo opt > /opt/x/y")
    ctl(a, "snapshot s1")
    snap = m.path / "snapshots" / "s1"
    assert (snap / "root" / "workspace" / "f").read_text() == "kept\n"
    with pytest.raises(OSError) as ei:
        (snap / "root" / "workspace" / "new").write_text("no")
    assert ei.value.errno == errno.EROFS
    # the source keeps running and changing
    must(a, "echo later > /workspace/f")
    b = start(m, "sn2", {"snapshot": "s1"})
    assert must(b, "cat /workspace/f /opt/x/y") == "kept\nopt\n"
    assert must(a, "cat /workspace/f") == "later\n"
    # terminate snapshot=NAME
    ctl(a, "terminate snapshot=s2")
    assert wait_settled(a) == "terminated"
    c = start(m, "sn3", {"snapshot": "s2"})
    assert must(c, "cat /workspace/f") == "later\n"
    for sb in (b, c):
        ctl(sb, "terminate")
        wait_settled(sb)
        os.rmdir(sb)
    os.rmdir(snap)
    # the snapshot's image went with it
    st, body = docker_engine.request("GET", "/images/json")
    assert st == 200
    tags = [t for i in json.loads(body) for t in (i.get("RepoTags") or [])]
    assert not any(t.startswith("seerfs-snap:") and t.endswith("-s1") for t in tags), tags
    assert any(t.startswith("seerfs-snap:") and t.endswith("-s2") for t in tags), tags


# ---- restarts -------------------------------------------------------------------------


def test_remount_adopts_the_container(seerfs_factory, tmp_path, docker_engine):
    m = mount(seerfs_factory, tmp_path, docker_engine)
    a = start(m, "r1")
    must(a, "echo before > /workspace/f")
    cid = container_of(docker_engine, "r1")["Id"]
    m.stop(terminate_first=False)
    # the container lives on while no seerfs runs
    assert container_of(docker_engine, "r1")["State"]["Running"] is True
    m2 = mount(seerfs_factory, tmp_path, docker_engine, state_dir=m.state)
    a2 = m2.path / "r1"
    assert wait_settled(a2) == "running"
    assert "adopting container" in log_text(a2)
    assert container_of(docker_engine, "r1")["Id"] == cid
    assert must(a2, "cat /workspace/f") == "before\n"


def test_engine_killed_mid_job(seerfs_factory, tmp_path, docker_engine):
    m = mount(seerfs_factory, tmp_path, docker_engine)
    a = start(m, "k1")
    (a / "exec").write_text("sleep 60; echo done")
    job = a / "jobs" / "latest"
    time.sleep(0.5)
    docker_engine.kill()
    try:
        # dockerd gone, its containers live on: the job goes on
        assert state(a) == "running"
    finally:
        docker_engine.start()
    # dockerd, started again without live-restore, stops the containers it
    # finds: the job ends with a status that says so.
    exit_text = read_text(job / "exit", timeout=90).strip()
    assert exit_text in ("signal 9", "killed", "lost") or exit_text.startswith("signal"), exit_text
    # The next command starts the container again and runs.
    assert must(a, "echo back").strip() == "back"
    assert "started again" in log_text(a)


# ---- escapes --------------------------------------------------------------------------


def test_escapes(seerfs_factory, tmp_path, docker_engine):
    with host_secret() as secret:
        m = mount(seerfs_factory, tmp_path, docker_engine)
        a = start(m, "e1")
        # the host's root is not the container's
        code, out = sandbox_run(a, f"cat {secret}")
        assert code != 0 and b"host-only" not in out
        # /proc/sys is read-only, and no capability is left
        code, out = sandbox_run(a, "echo x > /proc/sys/kernel/hostname")
        assert code != 0
        assert "CapEff:\t0000000000000000" in must(a, "grep CapEff /proc/self/status")
        code, out = sandbox_run(a, "mount -t tmpfs none /mnt")
        assert code != 0
        # symlinks planted inside do not take root/ out of the container
        must(a, f"ln -s {secret} /workspace/abs && ln -s ../../../../../../..{secret} /workspace/rel"
                " && ln -s / /workspace/top")
        for name in ("abs", "rel"):
            with pytest.raises(OSError):
                (a / "root" / "workspace" / name).read_text()
        assert not (a / "root" / "workspace" / "top" / secret.relative_to("/")).exists()
        # a process of the sandbox cannot take the agent's socket
        code, out = sandbox_run(a, "python3 -c \"import socket,struct; s=socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET);"
                                   " s.connect('/.seerfs/run/agent.sock'); s.settimeout(3);"
                                   " s.send(struct.pack('<IIiiqqII',1,1,0,0,0,0,0,0)); print(repr(s.recv(64)))\"")
        # (no listener once the agent connected: refused; else SO_PEERCRED)
        assert code != 0 and b"b'" not in out, out
        assert must(a, "echo still-fine").strip() == "still-fine"
        # the agent and its socket's directory are read-only inside
        code, _ = sandbox_run(a, "echo x > /.seerfs/agent || rm /.seerfs/run/agent.sock")
        assert code != 0


# ---- speed ------------------------------------------------------------------------------


def test_exec_latency_beside_docker_exec(seerfs_factory, tmp_path, docker_engine):
    m = mount(seerfs_factory, tmp_path, docker_engine)
    t0 = time.monotonic()
    a = start(m, "l1")
    print(f"\nsandbox from a present image: running in {time.monotonic() - t0:.2f} s")
    n = 20
    t0 = time.monotonic()
    for _ in range(n):
        must(a, "true")
    ours = (time.monotonic() - t0) / n
    cid = container_of(docker_engine, "l1")["Id"]
    env = dict(os.environ, DOCKER_HOST=docker_engine.endpoint)
    t0 = time.monotonic()
    for _ in range(5):
        subprocess.run(["docker", "exec", cid, "true"], check=True, env=env, capture_output=True)
    theirs = (time.monotonic() - t0) / 5
    # the local provider's, in the same mount
    loc = m.sandbox("l0", json.dumps({"provider": "local"}))
    t0 = time.monotonic()
    for _ in range(n):
        must(loc, "true")
    local = (time.monotonic() - t0) / n
    print(f"exec round trip: seerfs docker {ours * 1000:.1f} ms, seerfs local {local * 1000:.1f} ms, "
          f"docker exec (CLI) {theirs * 1000:.1f} ms")
    assert ours < theirs


# ---- Podman's compatible service -----------------------------------------------------


def host_ids(pid):
    """(uid, gid) of host process pid, as the host sees them."""
    st = pathlib.Path(f"/proc/{pid}/status").read_text()
    uid = [ln.split()[1] for ln in st.splitlines() if ln.startswith("Uid:")][0]
    gid = [ln.split()[1] for ln in st.splitlines() if ln.startswith("Gid:")][0]
    return int(uid), int(gid)


def test_podman_service(seerfs_factory, tmp_path, podman_engine):
    """The same provider on Podman 4.3's Docker-compatible API: a sandbox
    runs commands, root/ shows its files, a snapshot restores."""
    m = mount(seerfs_factory, tmp_path, podman_engine)
    a = start(m, "pm1", {"env": {"SEED": "pm-env"}})
    assert must(a, "echo $SEED; grep CapEff /proc/self/status") == "pm-env\nCapEff:\t0000000000000000\n"
    (a / "root" / "workspace" / "f").write_text("via-root")
    assert must(a, "cat /workspace/f") == "via-root"
    ctl(a, "snapshot p1")
    b = start(m, "pm2", {"snapshot": "p1"})
    assert must(b, "cat /workspace/f") == "via-root"


def test_podman_userns_auto(seerfs_factory, tmp_path, podman_engine):
    """Podman gives each container a user namespace of its own with
    "userns": "auto": root inside, a range of user containers's outside;
    root/ shows the container's ids and gives its own; no snapshot (Podman
    4.3 commits host ids); without it, no user namespace."""
    src = tmp_path / "secret.txt"
    src.write_text("for-the-sandbox")
    os.chmod(src, 0o600)
    m = mount(seerfs_factory, tmp_path, podman_engine, userns="auto")
    a = start(m, "pu1", {"local_files": [[str(src), "/workspace/secret.txt"]]})
    info = container_of(podman_engine, "pu1")
    assert info["HostConfig"].get("UsernsMode") in ("auto", "private"), info["HostConfig"].get("UsernsMode")
    assert must(a, "id -u").strip() == "0"
    pid = info["State"]["Pid"]
    base = int(pathlib.Path(f"/proc/{pid}/uid_map").read_text().split()[1])
    assert base != 0 and host_ids(pid)[0] == base
    disk = pathlib.Path(f"/proc/{pid}/root")
    assert must(a, "cat /workspace/secret.txt") == "for-the-sandbox"
    assert must(a, "stat -c %u:%a /workspace/secret.txt").strip() == "0:600"
    assert os.lstat(disk / "workspace" / "secret.txt").st_uid == base
    (a / "root" / "workspace" / "from-root.txt").write_text("made-in-root")
    assert must(a, "stat -c %u /workspace/from-root.txt").strip() == "0"
    assert os.lstat(disk / "workspace" / "from-root.txt").st_uid == base
    must(a, "echo inside > /workspace/inside.txt")
    assert os.stat(a / "root" / "workspace" / "inside.txt").st_uid == 0
    # the host's root-only files stay closed to the container's root
    run = [x["Source"] for x in info["Mounts"] if x["Destination"] == "/.seerfs/run"][0]
    secret = pathlib.Path(run) / "h0.txt"
    secret.write_text("hush-value")
    os.chmod(secret, 0o600)
    try:
        code, out = sandbox_run(a, "cat /.seerfs/run/h0.txt")
        assert code != 0 and b"hush-value" not in out, out
    finally:
        secret.unlink()
    # no snapshot: refused with the reason
    code = ctl_errno(a, "snapshot pu-s")
    deadline = time.monotonic() + 30
    while "Podman's user namespace" not in log_text(a) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "Podman's user namespace" in log_text(a), (code, log_text(a))
    assert not (m.path / "snapshots" / "pu-s").exists()
    # without "userns": no user namespace, the container's root is host root
    m2 = mount(seerfs_factory, tmp_path, podman_engine)
    b = start(m2, "pu2")
    pid = container_of(podman_engine, "pu2")["State"]["Pid"]
    assert host_ids(pid)[0] == 0
    assert must(b, "id -u").strip() == "0"
    # removed now: Podman keeps a userns container's id-mapped layer mounted
    # until removal, and an engine started later (the userns-remap dockerd)
    # would copy that mount into its containers' namespaces and keep it busy
    for sb in (a, b):
        ctl(sb, "terminate")
        assert wait_settled(sb) == "terminated"
        os.rmdir(sb)
    assert not containers(podman_engine, "pu1") and not containers(podman_engine, "pu2")


# ---- a user namespace: dockerd's userns-remap ----------------------------------------------

REMAP_USER = "sfdkremap"
REMAP_BASE = 1879048192   # a subordinate range of the fixture's own, far from useradd's
# The remapped engine's own bridge (its default network): dockerd refuses the
# host's network namespace to a container in a user namespace.
REMAP_BRIDGE = ("sfdkbr0", "10.213.77.1/24")


@pytest.fixture(scope="module")
def remap_engine():
    """A dockerd of its own with --userns-remap onto user REMAP_USER, whom
    the fixture creates with the range REMAP_BASE..+65536 in /etc/subuid
    and /etc/subgid, and removes (user and lines) at the end."""
    if os.geteuid() != 0:
        pytest.skip("container engines need root (tools/test.sh runs them in the root stage)")
    from engines import EngineError, start_engine
    line = f"{REMAP_USER}:{REMAP_BASE}:65536\n"
    made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", REMAP_USER],
                          capture_output=True).returncode == 0
    for f in ("/etc/subuid", "/etc/subgid"):
        with open(f, "a") as fh:
            fh.write(line)

    def undo():
        for f in ("/etc/subuid", "/etc/subgid"):
            with open(f) as fh:
                lines = fh.readlines()
            with open(f, "w") as fh:
                fh.writelines(x for x in lines if x != line)
        if made:
            subprocess.run(["userdel", REMAP_USER], capture_output=True)
    try:
        e = start_engine("docker", REMAP_USER, bridge=REMAP_BRIDGE)
    except EngineError as err:
        undo()
        pytest.fail(f"cannot start the userns-remap dockerd: {err}", pytrace=False)
    try:
        yield e
    finally:
        try:
            e.stop()
        finally:
            undo()


def test_userns_remap_ids_through_root(seerfs_factory, tmp_path, remap_engine):
    st, body = remap_engine.request("GET", "/info")
    assert st == 200 and "name=userns" in json.dumps(json.loads(body).get("SecurityOptions")), body[:300]
    src = tmp_path / "secret.txt"
    src.write_text("for-the-sandbox")
    os.chmod(src, 0o600)
    m = mount(seerfs_factory, tmp_path, remap_engine)
    a = start(m, "un1", {"network": False, "local_files": [[str(src), "/workspace/secret.txt"]]})
    # root inside, the remapped range outside
    assert must(a, "id -u").strip() == "0"
    pid = container_of(remap_engine, "un1")["State"]["Pid"]
    assert host_ids(pid) == (REMAP_BASE, REMAP_BASE)
    disk = pathlib.Path(f"/proc/{pid}/root")
    # a local_files copy of mode 0600 is the container root's, and readable by it
    assert must(a, "cat /workspace/secret.txt") == "for-the-sandbox"
    assert must(a, "stat -c %u:%g:%a /workspace/secret.txt").strip() == "0:0:600"
    s = os.lstat(disk / "workspace" / "secret.txt")
    assert (s.st_uid, s.st_gid) == (REMAP_BASE, REMAP_BASE)
    # what the mounting root creates in root/ is the container's root's
    (a / "root" / "workspace" / "from-root.txt").write_text("made-in-root")
    assert must(a, "stat -c %u:%g /workspace/from-root.txt").strip() == "0:0"
    s = os.lstat(disk / "workspace" / "from-root.txt")
    assert (s.st_uid, s.st_gid) == (REMAP_BASE, REMAP_BASE)
    must(a, "echo more >> /workspace/from-root.txt")
    # what the container's root makes reads as 0 through root/, the range on disk
    must(a, "echo inside > /workspace/inside.txt && mkdir /workspace/dd")
    s = os.stat(a / "root" / "workspace" / "inside.txt")
    assert (s.st_uid, s.st_gid) == (0, 0)
    # chown through root/ numbers the container's ids (it has no CAP_CHOWN itself)
    os.chown(a / "root" / "workspace" / "dd", 1000, 1000)
    assert must(a, "stat -c %u:%g /workspace/dd").strip() == "1000:1000"
    assert os.stat(a / "root" / "workspace" / "dd").st_uid == 1000
    assert os.lstat(disk / "workspace" / "dd").st_uid == REMAP_BASE + 1000
    with pytest.raises(OSError) as ei:   # an id the container does not map
        os.chown(a / "root" / "workspace" / "dd", 70000, 70000)
    assert ei.value.errno == errno.EINVAL
    s = os.lstat(disk / "workspace" / "inside.txt")
    assert (s.st_uid, s.st_gid) == (REMAP_BASE, REMAP_BASE)
    # a snapshot restores with the container's ids
    ctl(a, "snapshot us1")
    b = start(m, "un3", {"network": False, "snapshot": "us1"})
    assert must(b, "stat -c %u:%g /workspace/from-root.txt /workspace/dd").split() == ["0:0", "1000:1000"]
    assert os.stat(m.path / "snapshots" / "us1" / "root" / "workspace" / "dd").st_uid == 1000


def test_userns_remap_network(seerfs_factory, tmp_path, remap_engine):
    """network: true on a remapped dockerd is the engine's default network
    (its bridge), since the engine refuses the host's network namespace
    there: the container has an address on it and reaches a server on this
    machine's side of the bridge. network: false has only lo and reaches
    nothing."""
    import socket
    import threading
    ip = REMAP_BRIDGE[1].split("/")[0]
    srv = socket.socket()
    srv.bind((ip, 0))
    srv.listen(4)
    srv.settimeout(60)
    port = srv.getsockname()[1]
    seen = []

    def serve():
        try:
            while True:
                c, peer = srv.accept()
                seen.append(peer[0])
                c.sendall(b"over-the-bridge\n")
                c.close()
        except OSError:
            pass
    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        m = mount(seerfs_factory, tmp_path, remap_engine)
        a = start(m, "unet1", {"network": True})
        info = container_of(remap_engine, "unet1")
        assert info["HostConfig"]["NetworkMode"] == "default", info["HostConfig"]["NetworkMode"]
        assert info["HostConfig"].get("UsernsMode", "") != "host"
        assert "eth0" in must(a, "ls /sys/class/net").split()
        out = must(a, f"bash -c 'exec 3<>/dev/tcp/{ip}/{port} && cat <&3'")
        assert out.strip() == "over-the-bridge"
        assert seen and seen[0].startswith("10.213.77."), seen
        # still in the user namespace: root inside, the range outside
        assert host_ids(info["State"]["Pid"]) == (REMAP_BASE, REMAP_BASE)
        b = start(m, "unet2", {"network": False})
        assert must(b, "ls /sys/class/net").split() == ["lo"]
        code, out = sandbox_run(b, f"bash -c 'exec 3<>/dev/tcp/{ip}/{port} && cat <&3'")
        assert code != 0 and b"over-the-bridge" not in out, out
    finally:
        srv.close()


def test_userns_remap_escape(seerfs_factory, tmp_path, remap_engine):
    m = mount(seerfs_factory, tmp_path, remap_engine)
    a = start(m, "un2", {"network": False})
    info = container_of(remap_engine, "un2")
    assert not info["HostConfig"].get("Privileged")
    run = [x["Source"] for x in info["Mounts"] if x["Destination"] == "/.seerfs/run"]
    assert run, info["Mounts"]
    # a host file only host root may read, in a directory bound into the
    # sandbox: the container's root is not host root and cannot read it
    secret = pathlib.Path(run[0]) / "h0.txt"
    secret.write_text("hush-value")
    os.chmod(secret, 0o600)
    try:
        code, out = sandbox_run(a, "cat /.seerfs/run/h0.txt")
        assert code != 0 and b"hush-value" not in out, out
        assert b"Permission denied" in out, out
        # nor by taking it
        code, out = sandbox_run(a, "chown 0:0 /.seerfs/run/h0.txt; cat /.seerfs/run/h0.txt")
        assert code != 0 and b"hush-value" not in out, out
    finally:
        secret.unlink()


def test_userns_remap_models(seerfs_factory, tmp_path, remap_engine, hub):
    """Models on a remapped engine: the bind of the host's cache is readable
    by the container's root, /models and its links are the container's."""
    import hashlib
    repo, env = hub_model(hub)
    m = mount(seerfs_factory, tmp_path, remap_engine, env=env)
    a = start(m, "um1", {"network": False, "models": ["seer/tiny-model"]})
    out = must(a, "sha256sum /models/seer--tiny-model/model.safetensors")
    assert hashlib.sha256(repo.files["model.safetensors"]).hexdigest() in out
    assert must(a, "stat -c %u:%g /models /models/seer--tiny-model").split() == ["0:0", "0:0"]
    code, _ = sandbox_run(a, "touch /models/seer--tiny-model/x")
    assert code != 0, "the model must be read-only"


def test_userns_remap_remount_adopts(seerfs_factory, tmp_path, remap_engine):
    """An adopted container of a remapped engine keeps its ids through root/."""
    m = mount(seerfs_factory, tmp_path, remap_engine)
    a = start(m, "ur1", {"network": False})
    must(a, "echo before > /workspace/f")
    m.stop(terminate_first=False)
    m2 = mount(seerfs_factory, tmp_path, remap_engine, state_dir=m.state)
    a2 = m2.path / "ur1"
    assert wait_settled(a2) == "running"
    assert "adopting container" in log_text(a2)
    assert os.stat(a2 / "root" / "workspace" / "f").st_uid == 0
    (a2 / "root" / "workspace" / "g").write_text("after")
    assert must(a2, "stat -c %u /workspace/g; cat /workspace/f").split() == ["0", "before"]
    pid = container_of(remap_engine, "ur1")["State"]["Pid"]
    assert os.lstat(f"/proc/{pid}/root/workspace/g").st_uid == REMAP_BASE



def test_userns_remap_system_packages(seerfs_factory, tmp_path, remap_engine):
    """system_packages on a remapped dockerd: the build container is in the
    same user namespace as the sandbox (so the layer's files are the
    container's root's) and reaches the mirror through the engine's default
    network, since dockerd refuses the host's network namespace there
    (before: "cannot share the host's network namespace when user
    namespaces are enabled")."""
    m = mount(seerfs_factory, tmp_path, remap_engine)
    a = start(m, "upk", {"network": False, "system_packages": ["hello"]})
    assert "Hello" in must(a, "hello")
    assert must(a, "stat -c %u:%g /usr/bin/hello").strip() == "0:0"
    pid = container_of(remap_engine, "upk")["State"]["Pid"]
    s = os.stat(f"/proc/{pid}/root/usr/bin/hello")
    assert (s.st_uid, s.st_gid) == (REMAP_BASE, REMAP_BASE)
    builds = [c for c in remap_engine.containers() if "seerfs.sandbox" not in (c.get("Labels") or {})]
    assert not builds, builds
