"""test_functions.py - served functions (Seer's ScopedSandbox.serve): an
interface file served by config ("serve") or ctl, MOUNT/NAME/functions/SET/FN
call files, README, the generated client module, errors, concurrent and
interrupted calls, models (MODEL_<ID>_PATH, get_model_path), a seerfs
restart and scoped access by a second user.

Runs against the local provider, and with SEERFS_TEST_PROVIDER=ssh against
the ssh provider (conftest.py)."""

import errno
import json
import os
import pathlib
import subprocess
import sys
import threading
import time

import pytest

from conftest import IS_ROOT, LOCAL, ctl, error_text, sandbox_run, transact, wait_settled

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

INTERFACE = '''
import time
import numpy as np

W = np.arange(12, dtype=float).reshape(3, 4)
LOADS = []
LOADS.append(time.time())


@expose
def get_embedding(text: str) -> list:
    """A toy embedding of text: a numpy vector, returned as a list."""
    v = np.array([len(text), text.count("a"), 1.0])
    return v @ W


@expose
def add(a: int, b: int = 2) -> int:
    """a + b."""
    return a + b


@expose
def loads() -> int:
    """How many times this file ran."""
    return len(LOADS)


@expose
def slow(seconds: float) -> str:
    t = time.time()
    try:
        time.sleep(seconds)
    except KeyboardInterrupt:
        open("/tmp/interrupted", "w").write("yes")
        raise
    return "done"


@expose
def fail(x: int):
    raise ValueError("bad x %d" % x)


@expose
def opaque():
    return object()


@expose
def options(names: list, scale: float = 1.0, flags: dict = None, on: bool = False) -> dict:
    return {"n": len(names), "scale": scale, "on": on}
'''


def call(sb, set_, fn, args, timeout=60):
    """One call through the file: open read-write, write the arguments,
    read the answer to EOF."""
    out = transact(pathlib.Path(sb) / "functions" / set_ / fn,
                   args if isinstance(args, str) else json.dumps(args), timeout, f"{fn}({args})")
    assert out.endswith(b"\n") and out.count(b"\n") == 1, out
    return json.loads(out)


def put_interface(sb, text=INTERFACE, name="interface.py"):
    (sb / "root" / "workspace" / name).write_text(text)
    code, out = sandbox_run(sb, "pwd")
    return out.decode().strip() + "/" + name


def have_numpy(sb):
    code, _ = sandbox_run(sb, "python3 -c 'import numpy'")
    if code != 0:
        pytest.skip("numpy is not installed where the sandbox's python3 runs (Debian: python3-numpy)")


@pytest.fixture
def served(sandbox):
    have_numpy(sandbox)
    path = put_interface(sandbox)
    ctl(sandbox, f"serve {path} as model_tools")
    return sandbox


def test_calls(served):
    sb = served
    assert sorted(os.listdir(sb / "functions")) == ["model_tools", "model_tools.py"]
    assert sorted(os.listdir(sb / "functions" / "model_tools")) == \
        ["README", "add", "fail", "functions.json", "get_embedding", "loads", "opaque", "options", "slow"]
    assert call(sb, "model_tools", "get_embedding", {"text": "banana"}) == \
        {"ok": True, "result": [20.0, 30.0, 40.0, 50.0]}
    assert call(sb, "model_tools", "add", {"a": 1}) == {"ok": True, "result": 3}
    assert call(sb, "model_tools", "add", [1, 5]) == {"ok": True, "result": 6}
    assert call(sb, "model_tools", "add", {"args": [1], "kwargs": {"b": 9}}) == {"ok": True, "result": 10}
    # the file ran once: state kept between calls
    assert call(sb, "model_tools", "loads", {}) == {"ok": True, "result": 1}
    assert call(sb, "model_tools", "loads", {}) == {"ok": True, "result": 1}


def test_readme(served):
    text = (served / "functions" / "model_tools" / "README").read_text()
    assert "get_embedding(text: str) -> list" in text
    assert "A toy embedding of text" in text
    i = text.index("## options")
    schema = json.loads(text[i:].split("arguments (JSON schema): ", 1)[1].split("\n", 1)[0])
    assert schema["properties"]["names"] == {"type": "array"}
    assert schema["properties"]["scale"] == {"type": "number", "default": 1.0}
    assert schema["properties"]["on"] == {"type": "boolean", "default": False}
    assert schema["required"] == ["names"]
    i = text.index("## add")
    schema = json.loads(text[i:].split("arguments (JSON schema): ", 1)[1].split("\n", 1)[0])
    assert schema["properties"]["a"] == {"type": "integer"}


def test_errors_of_calls(served):
    sb = served
    r = call(sb, "model_tools", "fail", {"x": 3})
    assert r["ok"] is False and r["error"] == "ValueError: bad x 3"
    assert 'interface.py", line' in r["traceback"] and "raise ValueError" in r["traceback"]
    r = call(sb, "model_tools", "add", {"a": 1, "c": 3})
    assert r["ok"] is False and "wrong arguments for add(a: int, b: int = 2)" in r["error"]
    r = call(sb, "model_tools", "add", "{bad json")
    assert r["ok"] is False and "not valid JSON" in r["error"]
    r = call(sb, "model_tools", "add", '"a string"')
    assert r["ok"] is False and "must be a JSON object" in r["error"]
    r = call(sb, "model_tools", "opaque", {})
    assert r["ok"] is False and "not JSON-serialisable" in r["error"]
    with pytest.raises(FileNotFoundError):
        os.open(sb / "functions" / "model_tools" / "no_such_function", os.O_RDWR)
    with pytest.raises(PermissionError):
        os.open(sb / "functions" / "model_tools" / "add", os.O_RDONLY)
    # the server goes on after all that
    assert call(sb, "model_tools", "add", [2, 2]) == {"ok": True, "result": 4}


def test_library(served):
    prog = f"""
import sys
sys.path.insert(0, {str(served / "functions")!r})
import model_tools
print(model_tools.get_embedding("hi"))
print(model_tools.add(5, b=6), model_tools.add(1))
print(model_tools.add.__doc__.splitlines()[0])
try:
    model_tools.fail(2)
except model_tools.RemoteError as e:
    print("raised", e.error)
    print("remote", "raise ValueError" in e.remote_traceback)
"""
    p = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["[8.0, 11.0, 14.0, 17.0]", "11 3", "add(a: int, b: int = 2) -> int",
                                     "raised ValueError: bad x 2", "remote True"]


def test_concurrent_calls(served):
    """Callers in many threads and processes are all answered, each with its
    own answer."""
    results = {}

    def worker(i):
        results[i] = call(served, "model_tools", "add", [i, 1000])

    ths = [threading.Thread(target=worker, args=(i,)) for i in range(30)]
    prog = f"""
import os, json
for i in range(20):
    fd = os.open({str(served / "functions" / "model_tools" / "add")!r}, os.O_RDWR)
    os.write(fd, json.dumps([i, 7]).encode())
    out = b""
    while b := os.read(fd, 4096):
        out += b
    os.close(fd)
    assert json.loads(out) == {{"ok": True, "result": i + 7}}, out
print("ok")
"""
    procs = [subprocess.Popen([sys.executable, "-c", prog], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(60)
    for p in procs:
        assert p.communicate(timeout=60)[0] == "ok\n"
    assert {i: r["result"] for i, r in results.items()} == {i: i + 1000 for i in range(30)}


def test_caller_gone_interrupts_call(served):
    sb = served
    sandbox_run(sb, "rm -f /tmp/interrupted")
    prog = f"""
import os
fd = os.open({str(sb / "functions" / "model_tools" / "slow")!r}, os.O_RDWR)
os.write(fd, b'[60]')
os.read(fd, 100)
"""
    p = subprocess.Popen([sys.executable, "-c", prog])
    time.sleep(1.5)
    t0 = time.monotonic()
    p.kill()
    p.wait()
    # the server is free again at once: the long call was interrupted
    assert call(sb, "model_tools", "add", [1, 1]) == {"ok": True, "result": 2}
    assert time.monotonic() - t0 < 10
    code, out = sandbox_run(sb, "cat /tmp/interrupted")
    assert out == b"yes"


def test_serve_errors(sandbox):
    have_numpy(sandbox)
    bad = put_interface(sandbox, "def broken(:\n    pass\n", "syntax.py")
    with pytest.raises(OSError) as ei:
        ctl(sandbox, f"serve {bad} as broken")
    assert ei.value.errno == errno.EINVAL
    err = error_text(sandbox)
    assert "SyntaxError" in err and "syntax.py" in err
    raises = put_interface(sandbox, "@expose\ndef f():\n    return 1\nraise RuntimeError('no GPU here')\n", "raises.py")
    with pytest.raises(OSError):
        ctl(sandbox, f"serve {raises} as raising")
    err = error_text(sandbox)
    assert "RuntimeError: no GPU here" in err and "Traceback" in err
    none = put_interface(sandbox, "x = 1\n", "none.py")
    with pytest.raises(OSError):
        ctl(sandbox, f"serve {none} as nothing")
    assert "exposes no function" in error_text(sandbox)
    with pytest.raises(OSError):
        ctl(sandbox, "serve /workspace/missing.py as missing")
    assert "FileNotFoundError" in error_text(sandbox)
    for line in ("serve relative.py as x", "serve /a.py as 1bad", "serve /a.py as a-b", "serve /a.py"):
        with pytest.raises(OSError) as ei:
            ctl(sandbox, line)
        assert ei.value.errno == errno.EINVAL
    assert not os.listdir(sandbox / "functions")


def test_serve_from_config_and_restart(seerfs_factory, tmp_path):
    iface = tmp_path / "interface.py"
    iface.write_text(INTERFACE)
    iface.chmod(0o644)
    tmp_path.chmod(0o755)
    m = seerfs_factory()
    probe = m.sandbox("probe", "{}")
    have_numpy(probe)
    ctl(probe, "terminate")
    wait_settled(probe)
    os.rmdir(probe)
    cfg = {"local_files": [[str(iface), "/workspace/interface.py"]],
           "serve": [{"file": "/workspace/interface.py", "name": "model_tools"}]}
    if not LOCAL:
        pytest.skip("local_files paths differ on the ssh provider's host without bwrap")
    sb = m.sandbox("cfg", json.dumps(cfg))
    assert call(sb, "model_tools", "add", [1, 2]) == {"ok": True, "result": 3}
    m.stop(terminate_first=False, how="signal")
    m2 = seerfs_factory(state=m.state, mountpoint=m.path)
    assert wait_settled(sb) == "running"
    assert call(sb, "model_tools", "add", [2, 2]) == {"ok": True, "result": 4}
    assert call(sb, "model_tools", "loads", {}) == {"ok": True, "result": 1}
    ctl(sb, "terminate")
    wait_settled(sb)
    os.rmdir(sb)
    m2.stop()


def test_config_serve_failure_fails_provisioning(mnt, tmp_path):
    iface = tmp_path / "bad.py"
    iface.write_text("import no_such_module_xyz\n")
    iface.chmod(0o644)
    tmp_path.chmod(0o755)
    if not LOCAL:
        pytest.skip("local_files paths differ on the ssh provider's host without bwrap")
    cfg = {"local_files": [[str(iface), "/workspace/bad.py"]],
           "serve": [{"file": "/workspace/bad.py", "name": "tools"}]}
    sb = mnt.sandbox("bad", json.dumps(cfg), want="failed")
    err = error_text(sb)
    assert "serve /workspace/bad.py as tools failed" in err and "ModuleNotFoundError" in err
    os.rmdir(sb)


@pytest.mark.parametrize("cfg,word", [
    ({"serve": {"file": "/a.py", "name": "x"}}, "expected an array"),
    ({"serve": [{"file": "a.py", "name": "x"}]}, "absolute"),
    ({"serve": [{"file": "/a.py", "name": "x-y"}]}, "Python identifier"),
    ({"serve": [{"file": "/a.py"}]}, "required"),
    ({"serve": [{"file": "/a.py", "name": "x", "extra": 1}]}, "unknown key"),
    ({"serve": [{"file": "/a.py", "name": "x"}, {"file": "/b.py", "name": "x"}]}, "served twice"),
    ({"scoped": "yes"}, "scoped"),
])
def test_config_fields_refused(mnt, cfg, word):
    sb = mnt.path / "c"
    sb.mkdir()
    with pytest.raises(OSError) as ei:
        (sb / "config.json").write_text(json.dumps(cfg))
    assert ei.value.errno == errno.EINVAL
    assert word in error_text(sb)
    os.rmdir(sb)


def test_model_paths(seerfs_factory, tmp_path):
    if not LOCAL:
        pytest.skip("the test hub is reached from this host only")
    import hf_server
    srv = hf_server.make_server(token="hf_FNtoken_0a1b2c3d4e")
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        env = dict(os.environ, HF_ENDPOINT=f"http://127.0.0.1:{srv.server_address[1]}")
        env.pop("HF_TOKEN", None)
        iface = tmp_path / "m.py"
        iface.write_text("import os\n@expose\ndef paths() -> dict:\n"
                         "    return {'env': os.environ.get('MODEL_SEER_TINY_MODEL_PATH'),\n"
                         "            'fn': get_model_path('seer/tiny-model'),\n"
                         "            'cfg': open(get_model_path('seer/tiny-model') + '/config.json').read()[:1]}\n"
                         "@expose\ndef missing():\n    return get_model_path('nope/nothing')\n")
        iface.chmod(0o644)
        tmp_path.chmod(0o755)
        m = seerfs_factory(state=tmp_path / "st", env=env)
        cfg = {"models": [{"name": "seer/tiny-model"}], "local_files": [[str(iface), "/workspace/m.py"]],
               "serve": [{"file": "/workspace/m.py", "name": "mt"}]}
        sb = m.sandbox("mp", json.dumps(cfg))
        r = call(sb, "mt", "paths", {})
        assert r == {"ok": True, "result": {"env": "/models/seer--tiny-model", "fn": "/models/seer--tiny-model",
                                            "cfg": "{"}}
        r = call(sb, "mt", "missing", {})
        assert r["ok"] is False and "not in this sandbox's config" in r["error"]
        ctl(sb, "terminate")
        wait_settled(sb)
        os.rmdir(sb)
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.skipif(not IS_ROOT, reason="a second user's access needs root (runuser) and allow_other")
def test_scoped_second_user(seerfs_factory, tmp_path):
    """With "scoped": true, a user other than the mount's owner reaches
    functions/ and nothing else of that sandbox."""
    if subprocess.run(["id", "seer"], capture_output=True).returncode != 0:
        pytest.skip("no user 'seer' to act as the second user")
    import tempfile
    mp = pathlib.Path(tempfile.mkdtemp(prefix="seerfs-scoped-", dir="/tmp"))
    mp.chmod(0o755)   # the second user must reach the mount point
    m = seerfs_factory(args=("-o", "allow_other"), mountpoint=mp)
    sb = m.sandbox("sc", json.dumps({"scoped": True}))
    have_numpy(sb)
    path = put_interface(sb)
    ctl(sb, f"serve {path} as model_tools")
    open_sb = m.sandbox("open", "{}")
    sandbox_run(sb, "echo hi > /workspace/secret")
    # a snapshot of it holds the same files: as closed as the sandbox
    ctl(sb, "snapshot scsnap")
    ctl(open_sb, "snapshot opensnap")
    snaps = m.path / "snapshots"
    # the owner's lookups are cached; the second user must still be refused
    os.listdir(sb)
    os.listdir(sb / "root" / "workspace")
    assert (snaps / "scsnap" / "root" / "workspace" / "secret").read_text() == "hi\n"
    (snaps / "scsnap" / "info.json").read_text()
    prog = f"""
import errno, json, os, sys
sb = {str(sb)!r}
res = {{}}
res["list"] = sorted(os.listdir(sb))
for name in ("exec", "ctl", "config.json", "root/workspace/secret", "jobs/1/cmd", "log"):
    try:
        fd = os.open(os.path.join(sb, name), os.O_RDONLY)
        os.close(fd)
        res[name] = "open"
    except OSError as e:
        res[name] = errno.errorcode[e.errno]
for name in ("sessions", "jobs", "root", "root/workspace"):
    try:
        res[name] = os.listdir(os.path.join(sb, name))
    except OSError as e:
        res[name] = errno.errorcode[e.errno]
try:
    os.mkdir(os.path.join(sb, "sessions", "x"))
    res["mkdir"] = "made"
except OSError as e:
    res["mkdir"] = errno.errorcode[e.errno]
try:
    os.rmdir(sb)
    res["rmdir"] = "removed"
except OSError as e:
    res["rmdir"] = errno.errorcode[e.errno]
fd = os.open(os.path.join(sb, "functions", "model_tools", "add"), os.O_RDWR)
os.write(fd, b"[20, 22]")
out = b""
while b := os.read(fd, 4096):
    out += b
res["call"] = json.loads(out)
sys.path.insert(0, os.path.join(sb, "functions"))
import model_tools
res["lib"] = model_tools.add(1, 1)
try:
    res["other"] = sorted(os.listdir({str(open_sb)!r}))[:3]
except OSError as e:
    res["other"] = errno.errorcode[e.errno]
snaps = {str(m.path / "snapshots")!r}
res["snaps"] = sorted(os.listdir(snaps))
res["scsnap"] = sorted(os.listdir(os.path.join(snaps, "scsnap")))
for name in ("scsnap/root/workspace/secret", "scsnap/info.json", "opensnap/info.json"):
    try:
        os.close(os.open(os.path.join(snaps, name), os.O_RDONLY))
        res[name] = "open"
    except OSError as e:
        res[name] = errno.errorcode[e.errno]
for name in ("scsnap/root", "opensnap/root"):
    try:
        res[name] = sorted(os.listdir(os.path.join(snaps, name)))[:1]
    except OSError as e:
        res[name] = errno.errorcode[e.errno]
print(json.dumps(res))
"""
    p = subprocess.run(["runuser", "-u", "seer", "--", sys.executable, "-c", prog], capture_output=True, text=True,
                       timeout=60, cwd="/")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["list"] == ["functions"]
    for name in ("exec", "ctl", "config.json", "root/workspace/secret", "jobs/1/cmd", "log", "sessions", "jobs",
                 "root", "root/workspace"):
        assert res[name] == "EACCES", (name, res)
    assert res["mkdir"] == "EACCES" and res["rmdir"] == "EACCES"
    assert res["call"] == {"ok": True, "result": 42}
    assert res["lib"] == 2
    # a sandbox that is not scoped is unchanged
    assert res["other"] == ["config.json", "ctl", "error"]
    # its snapshot's name shows; nothing in it opens, unlike an open sandbox's
    assert res["snaps"] == ["opensnap", "scsnap"]
    assert res["scsnap"] == ["error", "info.json", "root"]
    for name in ("scsnap/root/workspace/secret", "scsnap/info.json", "scsnap/root"):
        assert res[name] == "EACCES", (name, res)
    assert res["opensnap/info.json"] == "open" and isinstance(res["opensnap/root"], list), res
    # the owner still has everything
    assert (sb / "root" / "workspace" / "secret").read_text() == "hi\n"
    for d in (sb, open_sb):
        ctl(d, "terminate")
        wait_settled(d)
        os.rmdir(d)
