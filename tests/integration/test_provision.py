"""test_provision.py - provisioning what a sandbox holds (core/provision.c),
driven through the mount's files only: local files and directories, hub
models from tests/integration/hf_server.py (a real HTTP server), system
package checks, a venv with a wheel built here and installed offline, a
host git repository cloned with an install command, notebook refusal,
retry after a fix, and a secret's value appearing nowhere.

Run: SEERFS_BUILD=build /usr/bin/python3 -m pytest -q tests/integration/test_provision.py
"""

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time

import pytest

from conftest import build_wheel as conftest_build_wheel
from conftest import (_teardown_sandbox, ctl, error_text, grep_tree, log_text, sandbox_run, status_text,
                      wait_settled, write_config)

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import hf_server  # noqa: E402

TOKEN = "hf_PROVtoken_0a1b2c3d4e"
REPOS = hf_server.build_repos()
TINY = "seer/tiny-model"


@pytest.fixture(scope="module")
def hub():
    srv = hf_server.make_server(token=TOKEN)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def seerfs_factory(seerfs_factory):
    """conftest's factory, but every sandbox is terminated and removed before
    the unmount: a running sandbox's mount namespace holds a reference to
    the FUSE mount, so seerfs would not see the unmount until it ends."""
    started = []

    def start(*a, **kw):
        fs = seerfs_factory(*a, **kw)
        started.append(fs)
        return fs

    yield start
    for fs in started:
        for d in sorted(fs.path.iterdir()) if fs.path.is_dir() else []:
            if d.is_dir():
                try:
                    _teardown_sandbox(d)
                except Exception:  # noqa: BLE001 - teardown is best effort
                    pass


def hub_url(srv):
    return f"http://127.0.0.1:{srv.server_address[1]}"


def env_with(**kw):
    e = dict(os.environ)
    for k in ("HF_TOKEN", "HF_ENDPOINT", "PIP_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX", "PIP_EXTRA_INDEX_URL"):
        e.pop(k, None)
    e.update({k: str(v) for k, v in kw.items()})
    return e


def run_ok(sb, cmd):
    code, out = sandbox_run(sb, cmd)
    assert code == 0, f"{cmd!r} exited {code}: {out!r}"
    return out


def exec_python(sbdir, code_text):
    fd = os.open(pathlib.Path(sbdir) / "exec_python", os.O_RDWR)
    try:
        os.write(fd, code_text.encode())
        chunks = []
        while True:
            b = os.read(fd, 1 << 16)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(fd)
    return b"".join(chunks)


def settle(sb, want, timeout=120):
    st = wait_settled(sb, timeout)
    assert st == want, f"{st}, want {want}\n{status_text(sb)}\n{error_text(sb)}\n{log_text(sb)}"


def sha(b):
    return hashlib.sha256(b).hexdigest()


def grep_mount(top, needle):
    """Like conftest.grep_tree over the mount, but without root/ (the
    sandbox's own files, where the secret is meant to be) and without the
    files that block or act when opened (wait, exec, stdin, ctl)."""
    skip_files = {"wait", "exec", "exec_python", "stdin", "ctl"}
    hits = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d != "root"]
        for name in filenames:
            if name in skip_files:
                continue
            p = os.path.join(dirpath, name)
            try:
                if os.path.islink(p) or not os.path.isfile(p):
                    continue
                with open(p, "rb") as f:
                    if needle in f.read():
                        hits.append(p)
            except OSError:
                pass
    return hits


# ---- local files ------------------------------------------------------------------


def test_local_files_dirs_and_retry(seerfs_factory, tmp_path):
    src = tmp_path / "src"
    (src / "tree" / "sub").mkdir(parents=True)
    (src / "tree" / "sub" / "deep.txt").write_text("deep\n")
    (src / "tree" / "link").symlink_to("sub/deep.txt")
    (src / "one.txt").write_text("one\n")
    fs = seerfs_factory(state=tmp_path / "st")
    missing = src / "later.txt"
    cfg = {"local_files": [[str(src / "one.txt"), "/workspace/in/one.txt"], [str(missing), "/root/later.txt"]],
           "local_dirs": [[str(src / "tree"), "/opt/tree"]]}
    sb = fs.sandbox("lf", json.dumps(cfg), want=None)
    settle(sb, "failed")
    err = error_text(sb)
    assert str(missing) in err and "retry" in err
    # the fix: create the source, then retry resumes
    missing.write_text("later\n")
    ctl(sb, "retry")
    settle(sb, "running")
    out = run_ok(sb, "cat /workspace/in/one.txt /root/later.txt /opt/tree/sub/deep.txt /opt/tree/link; readlink /opt/tree/link")
    assert out == b"one\nlater\ndeep\ndeep\nsub/deep.txt\n"
    assert "step local_files done" in log_text(sb)


def test_local_file_read_only_target_refused(seerfs_factory, tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("x")
    fs = seerfs_factory(state=tmp_path / "st")
    sb = fs.sandbox("ro", json.dumps({"local_files": [[str(f), "/usr/x.txt"]]}), want=None)
    settle(sb, "failed")
    assert "not in a writable part" in error_text(sb)


def test_local_file_symlink_in_sandbox_not_followed(seerfs_factory, tmp_path):
    """A symlink planted in the sandbox pointing at a host path is resolved
    inside the sandbox root (RESOLVE_IN_ROOT), never on the host."""
    victim = tmp_path / "victim"
    victim.mkdir()
    f = tmp_path / "payload.txt"
    f.write_text("payload\n")
    fs = seerfs_factory(state=tmp_path / "st")
    sb = fs.sandbox("sl", "{}")
    run_ok(sb, f"ln -s {victim} /workspace/evil")
    ctl(sb, "terminate")
    settle(sb, "terminated")
    write_config(sb, json.dumps({"local_files": [[str(f), "/workspace/evil/payload.txt"]]}))
    wait_settled(sb, 60)
    assert not (victim / "payload.txt").exists()


# ---- models -------------------------------------------------------------------------


def test_model_visible_shared_cache_and_info(seerfs_factory, tmp_path, hub):
    hub.state.reset()
    fs = seerfs_factory(state=tmp_path / "st", env=env_with(HF_ENDPOINT=hub_url(hub)))
    cfg = json.dumps({"models": [{"name": TINY, "var_name": "m"}]})
    t0 = time.monotonic()
    a = fs.sandbox("m1", cfg, want=None)
    settle(a, "running")
    t_first = time.monotonic() - t0
    out = run_ok(a, "sha256sum /models/seer--tiny-model/model.safetensors; cat /models/seer--tiny-model/config.json")
    assert sha(REPOS[TINY].files["model.safetensors"]).encode() in out
    assert out.endswith(REPOS[TINY].files["config.json"])
    code, _ = sandbox_run(a, "touch /models/seer--tiny-model/x")
    assert code != 0, "the model must be read-only"
    bodies = hub.state.stats["file_bodies"]
    assert bodies >= 1
    info = json.loads((a / "info.json").read_text())
    h = info["model_handles"][0]
    assert h["name"] == TINY and h["volume_path"] == "/models/seer--tiny-model" and h["var_name"] == "m"
    assert h["hidden"] is False and h["is_peft"] is False
    # a second sandbox shares the download: no file bodies fetched again
    t0 = time.monotonic()
    b = fs.sandbox("m2", cfg, want=None)
    settle(b, "running")
    t_second = time.monotonic() - t0
    assert hub.state.stats["file_bodies"] == bodies
    run_ok(b, "test -s /models/seer--tiny-model/model.safetensors")
    print(f"\nprovision with download: {t_first:.2f} s; second sandbox (cached): {t_second:.2f} s")


def test_hidden_model_name_kept_out(seerfs_factory, tmp_path, hub):
    fs = seerfs_factory(state=tmp_path / "st", env=env_with(HF_ENDPOINT=hub_url(hub)))
    sb = fs.sandbox("hid", json.dumps({"models": [{"name": TINY, "hidden": True}]}), want=None)
    settle(sb, "running")
    info = (sb / "info.json").read_text()
    assert "tiny-model" not in info and "model-1" in info
    assert "tiny-model" not in log_text(sb) and "tiny-model" not in status_text(sb)
    out = run_ok(sb, "cat /models/model-1/config.json")
    assert out == REPOS[TINY].files["config.json"]


def test_gated_model_without_token_fails_clearly(seerfs_factory, tmp_path, hub):
    fs = seerfs_factory(state=tmp_path / "st", env=env_with(HF_ENDPOINT=hub_url(hub)))
    sb = fs.sandbox("g", json.dumps({"models": [{"name": "seer/gated-model"}]}), want=None)
    settle(sb, "failed")
    err = error_text(sb)
    assert "seer/gated-model" in err and "HF_TOKEN" in err


def test_gated_model_with_secret_token_and_secret_nowhere(seerfs_factory, tmp_path, hub):
    fs = seerfs_factory(state=tmp_path / "st", env=env_with(HF_ENDPOINT=hub_url(hub), HF_TOKEN=TOKEN))
    sb = fs.sandbox("gs", json.dumps({"models": [{"name": "seer/gated-model"}], "secrets": ["HF_TOKEN"]}), want=None)
    settle(sb, "running")
    out = run_ok(sb, "cat /models/seer--gated-model/config.json; printenv HF_TOKEN | wc -c")
    assert out.startswith(b'{"gated": true}')
    needle = TOKEN.encode()
    hits = grep_mount(fs.path, needle)
    assert hits == [], f"secret value found in mount files: {hits}"
    hits = grep_tree(tmp_path / "st", needle)
    assert hits == [], f"secret value found in the state directory: {hits}"


# ---- system packages, notebook ---------------------------------------------------------


def test_missing_system_package(seerfs_factory, tmp_path):
    fs = seerfs_factory(state=tmp_path / "st")
    sb = fs.sandbox("sp", json.dumps({"system_packages": ["coreutils", "seerfs-no-such-pkg"]}), want=None)
    settle(sb, "failed")
    err = error_text(sb)
    assert "apt-get install -y seerfs-no-such-pkg" in err and "coreutils" not in err.split("installed on the host")[1]


def test_notebook_without_jupyter_refused(seerfs_factory, tmp_path):
    # The host's /usr is the sandbox's: hide a host Jupyter by a PATH without it.
    fs = seerfs_factory(state=tmp_path / "st")
    cfg = {"execution_mode": "notebook", "env": {"PATH": "/usr/local/sbin:/usr/local/bin"}}
    sb = fs.sandbox("nb", json.dumps(cfg), want=None)
    settle(sb, "failed")
    assert 'add "jupyterlab" to python_packages' in error_text(sb)


def test_notebook_with_jupyter_serves(seerfs_factory, tmp_path):
    if not (shutil.which("jupyter-lab") or shutil.which("jupyter-notebook")):
        pytest.skip("no Jupyter on this host (tools/test.sh installs Debian's jupyter-notebook)")
    import urllib.request
    fs = seerfs_factory(state=tmp_path / "st")
    sb = fs.sandbox("nbok", json.dumps({"execution_mode": "notebook"}))
    info = json.loads((sb / "info.json").read_text())
    url = info["jupyter_url"]
    assert url and url.startswith("http://127.0.0.1:") and "token=" in url
    token = url.split("token=", 1)[1]
    assert token not in log_text(sb) and token not in status_text(sb)
    deadline = time.monotonic() + 60
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                assert r.status == 200
                break
        except OSError as e:   # not listening yet
            last = e
            time.sleep(0.5)
    else:
        raise AssertionError(f"Jupyter did not answer at {url}: {last}")
    # the server runs inside the sandbox: its root is the sandbox's /workspace
    api = url.split("?", 1)[0].rstrip("/") + "/api/contents?token=" + token
    (sb / "root" / "workspace" / "nb-marker.txt").write_text("x")
    with urllib.request.urlopen(api, timeout=10) as r:
        names = [c["name"] for c in json.loads(r.read())["content"]]
    assert "nb-marker.txt" in names


def test_bad_python_version(seerfs_factory, tmp_path):
    fs = seerfs_factory(state=tmp_path / "st")
    sb = fs.sandbox("pv", json.dumps({"python_version": "2.1"}), want=None)
    settle(sb, "failed")
    assert "versions present" in error_text(sb)


# ---- python packages ------------------------------------------------------------------------


def build_wheel(dirpath):
    return conftest_build_wheel(dirpath, "seertinypkg", "0.1", "tiny-ok")


def test_python_packages_offline_wheel(seerfs_factory, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    build_wheel(wheels)
    # the sandbox sees host paths only where bound: /tmp of the host is not
    # the sandbox's, so the wheel dir is copied in with local_dirs
    fs = seerfs_factory(state=tmp_path / "st", env=env_with(PIP_NO_INDEX="1", PIP_FIND_LINKS="/opt/wheels"))
    cfg = {"local_dirs": [[str(wheels), "/opt/wheels"]], "python_packages": ["seertinypkg"]}
    t0 = time.monotonic()
    sb = fs.sandbox("py", json.dumps(cfg), want=None)
    settle(sb, "running", timeout=300)
    print(f"\nvenv + offline pip install: {time.monotonic() - t0:.2f} s")
    out = exec_python(sb, "import seertinypkg, sys\nprint(seertinypkg.VALUE, sys.prefix)\n")
    assert out == b"tiny-ok /opt/venv\n", out
    assert "Successfully installed seertinypkg" in log_text(sb)


# ---- repos -----------------------------------------------------------------------------------


def test_repo_from_host_path_with_install(seerfs_factory, tmp_path):
    if not shutil.which("git"):
        pytest.skip("git is not installed")
    repo = tmp_path / "myrepo"
    repo.mkdir()
    g = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "hello.txt").write_text("hello from the repo\n")
    subprocess.run(g + ["add", "hello.txt"], check=True)
    subprocess.run(g + ["commit", "-q", "-m", "first"], check=True)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
    fs = seerfs_factory(state=tmp_path / "st")
    cfg = {"repos": [{"url": str(repo), "branch": "main", "install": "cp hello.txt /root/installed-marker"}]}
    sb = fs.sandbox("rp", json.dumps(cfg), want=None)
    settle(sb, "running")
    assert run_ok(sb, "cat /workspace/myrepo/hello.txt /root/installed-marker") == b"hello from the repo\n" * 2
    h = json.loads((sb / "info.json").read_text())["repo_handles"][0]
    assert h == {"url": str(repo), "path": "/workspace/myrepo", "branch": "main", "commit": head}


def test_repo_install_failure_output_in_log(seerfs_factory, tmp_path):
    if not shutil.which("git"):
        pytest.skip("git is not installed")
    repo = tmp_path / "r2"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "a").write_text("a")
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e", "add", "a"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "x"],
                   check=True)
    fs = seerfs_factory(state=tmp_path / "st")
    sb = fs.sandbox("rf", json.dumps({"repos": [{"url": str(repo), "install": "echo boom-output; exit 7"}]}),
                    want=None)
    settle(sb, "failed")
    assert "exit 7" in error_text(sb) and "boom-output" in log_text(sb)
