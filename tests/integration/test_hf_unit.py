"""test_hf_unit.py - drives the compiled tests/drivers/hf_driver binary (core/lib/hf.c)
against tests/integration/hf_server.py, a real local HTTP hub look-alike.

Builds nothing: the binary is looked up as $SEERFS_TEST_HF, else under
$SEERFS_BUILD (default "build/", relative to the cwd or the repo root) as
tests/drivers/hf_driver (where meson puts it).  meson test runs this file
(suite net): meson test -C build hf.

Run:  SEERFS_BUILD=build /usr/bin/python3 -m pytest -q tests/integration/test_hf_unit.py
"""

import hashlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import urllib.request

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
import hf_server  # noqa: E402  (expected contents come from the same generator)

TOKEN = "hf_TESTtoken_9f8e7d6c5b4a"
TINY = "seer/tiny-model"
GATED = "seer/gated-model"
LFS = "model.safetensors"
REPOS = hf_server.build_repos()


def find_binary():
    exact = os.environ.get("SEERFS_TEST_HF")
    if exact:
        return pathlib.Path(exact)
    build = pathlib.Path(os.environ.get("SEERFS_BUILD", "build"))
    bases = [build] if build.is_absolute() else [pathlib.Path.cwd() / build, ROOT / build]
    for base in bases:
        for rel in ("tests/drivers/hf_driver",):
            if (base / rel).is_file() and os.access(base / rel, os.X_OK):
                return base / rel
    pytest.fail(f"hf_driver binary not found under {', '.join(map(str, bases))}: build it first "
                "(meson builds it: ninja -C build tests/drivers/hf_driver) or set SEERFS_BUILD / SEERFS_TEST_HF", pytrace=False)


@pytest.fixture(scope="session")
def binary():
    return find_binary()


class Hub:
    def __init__(self, url, proc):
        self.url = url
        self.proc = proc

    def _call(self, path, data=None):
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data is not None else "GET")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def stats(self):
        return self._call("/_stats")

    def reset(self):
        return self._call("/_reset", b"")

    def config(self, **kw):
        return self._call("/_config", json.dumps(kw).encode())


@pytest.fixture(scope="session")
def server():
    proc = subprocess.Popen([sys.executable, str(HERE / "hf_server.py"), "--port", "0", "--token", TOKEN],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("PORT "), f"hf_server did not start: {line!r}"
    hub = Hub(f"http://127.0.0.1:{int(line.split()[1])}", proc)
    yield hub
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def hub(server):
    server.reset()
    return server


class Result:
    def __init__(self, cp, args):
        self.args = args
        self.rc = cp.returncode
        self.out = cp.stdout
        self.err = cp.stderr
        self.lines = [l for l in cp.stdout.splitlines() if l.startswith(("OK ", "ERR "))]
        first = self.lines[0] if self.lines else ""
        self.ok = first.startswith("OK ")
        self.path = first[3:] if self.ok else None
        self.errno_name = first.split(" ", 3)[2] if first.startswith("ERR ") else None
        self.msg = first.split(" ", 3)[3] if first.startswith("ERR ") and first.count(" ") >= 3 else ""
        self.logs = [l[4:] for l in cp.stderr.splitlines() if l.startswith("LOG ")]
        self.filedone = [l.split(" ", 1)[1].rsplit(" ", 1)[0] for l in cp.stderr.splitlines()
                         if l.startswith("FILEDONE ")]

    def __repr__(self):
        return f"<hf_driver rc={self.rc}\nstdout:\n{self.out}\nstderr:\n{self.err[-4000:]}>"


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_HOME")
           and not k.startswith("HF_TEST_")}
    env.update(extra or {})
    return env


def run_hf(binary, endpoint, cache, *args, token=None, env=None, timeout=120):
    cmd = [str(binary), "--endpoint", endpoint, "--cache", str(cache), *map(str, args)]
    if token is not None:
        cmd += ["--token", token]
    cp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=clean_env(env))
    res = Result(cp, cmd)
    assert res.lines, f"hf_driver printed no result line: {res!r}"
    for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error"):
        assert bad not in cp.stderr, res
    assert cp.returncode == (0 if res.ok else 1), res
    return res


def spawn_hf(binary, endpoint, cache, *args):
    cmd = [str(binary), "--endpoint", endpoint, "--cache", str(cache), *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())


def repo_dir(cache, rid=TINY):
    return pathlib.Path(cache) / ("models--" + rid.replace("/", "--"))


def check_snapshot(cache, rid=TINY, path=None):
    """Everything a finished fetch promises, checked against the generator."""
    repo = REPOS[rid]
    rd = repo_dir(cache, rid)
    snap = rd / "snapshots" / repo.commit
    if path is not None:
        assert pathlib.Path(path) == snap.resolve()
    for rel, data in repo.files.items():
        p = snap / rel
        assert p.is_symlink(), rel
        target = os.readlink(p)
        blob = repo.entries[rel]["blob"]
        assert target == "../" * (2 + rel.count("/")) + "blobs/" + blob, (rel, target)
        assert p.read_bytes() == data, rel
        if repo.entries[rel]["sha256"]:
            assert blob == hashlib.sha256(data).hexdigest()
    assert (rd / "refs" / "main").read_text() == repo.commit
    assert not list((rd / "blobs").glob("*.incomplete"))
    assert sorted(p.name for p in (rd / "blobs").iterdir()) == sorted({e["blob"] for e in repo.entries.values()})


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def lfs_blob(rid=TINY, path=LFS):
    return REPOS[rid].entries[path]["blob"]


# ---------------------------------------------------------------------------


def test_sha_selftest(binary):
    cp = subprocess.run([str(binary), "--selftest"], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0 and "SELFTEST OK" in cp.stdout, cp.stdout + cp.stderr


def test_full_download_and_verify(binary, hub, tmp_path):
    r = run_hf(binary, hub.url, tmp_path)
    assert r.ok, r
    check_snapshot(tmp_path, path=r.path)
    st = hub.stats()
    repo = REPOS[TINY]
    non_empty = [p for p, d in repo.files.items() if d]
    # every non-empty file's bytes sent exactly once; the empty one needs no request
    assert st["bodies_by_path"] == {p: 1 for p in non_empty}, st["bodies_by_path"]
    assert st["redirects"] == 1 and st["blob"] == 1          # LFS went through the 302
    assert st["api_tree"] > 1                                 # tree pagination followed
    assert st["auth_requests"] == 0                           # no token, no header
    assert sorted(r.filedone) == sorted(repo.files)           # one finished callback per file
    total = sum(len(d) for d in repo.files.values())
    assert f"last={total}/{total}" in r.err, r
    for rel in repo.files:
        assert any(rel in l for l in r.logs), (rel, r.logs)


def test_second_fetch_served_from_cache(binary, hub, tmp_path):
    assert run_hf(binary, hub.url, tmp_path).ok
    hub.reset()
    r = run_hf(binary, hub.url, tmp_path)
    assert r.ok, r
    check_snapshot(tmp_path, path=r.path)
    st = hub.stats()
    assert st["resolve"] == 0 and st["blob"] == 0 and st["file_bodies"] == 0, st
    assert st["api_tree"] == 0 and st["api_revision"] == 1, st
    # by commit: no request at all
    hub.reset()
    r = run_hf(binary, hub.url, tmp_path, "--rev", REPOS[TINY].commit)
    assert r.ok and hub.stats()["requests"] == 0, r


def test_unreachable_endpoint_uses_complete_cache(binary, hub, tmp_path):
    assert run_hf(binary, hub.url, tmp_path).ok
    dead = f"http://127.0.0.1:{closed_port()}"
    r = run_hf(binary, dead, tmp_path)
    assert r.ok, r
    check_snapshot(tmp_path, path=r.path)
    assert any("using cached snapshot" in l and dead in l for l in r.logs), r.logs
    # HF_HUB_OFFLINE skips the network entirely
    hub.reset()
    r = run_hf(binary, hub.url, tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert r.ok and hub.stats()["requests"] == 0, r


def test_unreachable_endpoint_message_names_it(binary, tmp_path):
    dead = f"http://127.0.0.1:{closed_port()}"
    r = run_hf(binary, dead, tmp_path)
    assert not r.ok and r.rc == 1, r
    assert dead in r.msg and "cannot reach" in r.msg, r.msg
    assert r.errno_name == "ECONNREFUSED", r


def test_interrupted_download_resumes_with_range(binary, hub, tmp_path):
    cut = 1_000_000
    hub.config(cut_after=cut, cut_times=1)
    r = run_hf(binary, hub.url, tmp_path, "--retries", "-1")
    assert not r.ok, r
    assert LFS in r.msg and "resume" in r.msg, r.msg
    inc = repo_dir(tmp_path) / "blobs" / (lfs_blob() + ".incomplete")
    assert inc.stat().st_size == cut
    assert not (repo_dir(tmp_path) / "blobs" / lfs_blob()).exists()

    hub.reset()
    r = run_hf(binary, hub.url, tmp_path)
    assert r.ok, r
    check_snapshot(tmp_path, path=r.path)
    st = hub.stats()
    assert {"path": LFS, "range": f"bytes={cut}-"} in st["range_requests"], st["range_requests"]
    others = sum(len(REPOS[TINY].files[p]) * n for p, n in st["bodies_by_path"].items() if p != LFS)
    assert st["file_bytes"] - others == len(REPOS[TINY].files[LFS]) - cut, st  # only the rest was sent
    assert any("resuming" in l and LFS in l for l in r.logs), r.logs


def test_retry_within_one_call(binary, hub, tmp_path):
    hub.config(cut_after=700_000, cut_times=2)
    r = run_hf(binary, hub.url, tmp_path)
    assert r.ok, r
    check_snapshot(tmp_path, path=r.path)
    ranges = [x["range"] for x in hub.stats()["range_requests"] if x["path"] == LFS]
    assert ranges == ["bytes=700000-", "bytes=1400000-"], ranges
    assert any("retrying" in l for l in r.logs), r.logs


def test_server_ignoring_range_restarts_cleanly(binary, hub, tmp_path):
    hub.config(cut_after=500_000, cut_times=1)
    assert not run_hf(binary, hub.url, tmp_path, "--retries", "-1").ok
    hub.reset()
    hub.config(ignore_range=True)
    r = run_hf(binary, hub.url, tmp_path)
    assert r.ok, r
    check_snapshot(tmp_path, path=r.path)
    assert any("restarting from 0" in l for l in r.logs), r.logs


@pytest.mark.parametrize("path,kind", [(LFS, "sha256"), ("config.json", "git-sha1")])
def test_corrupted_byte_detected_and_removed(binary, hub, tmp_path, path, kind):
    hub.config(corrupt_path=path, corrupt_times=1)
    r = run_hf(binary, hub.url, tmp_path)
    assert not r.ok and r.errno_name == "EBADMSG", r
    blob = REPOS[TINY].entries[path]["blob"]
    assert "checksum mismatch" in r.msg and path in r.msg and f"expected {kind} {blob}" in r.msg, r.msg
    assert hub.stats()["corruptions"] == 1
    blobs = repo_dir(tmp_path) / "blobs"
    assert not (blobs / blob).exists() and not (blobs / (blob + ".incomplete")).exists()
    snap = repo_dir(tmp_path) / "snapshots" / REPOS[TINY].commit / path
    assert not os.path.lexists(snap)
    # nothing bad left behind: the next run just works
    hub.reset()
    r = run_hf(binary, hub.url, tmp_path)
    assert r.ok, r
    check_snapshot(tmp_path, path=r.path)


def test_gated_without_token(binary, hub, tmp_path):
    r = run_hf(binary, hub.url, tmp_path, "--id", GATED)
    assert not r.ok and r.errno_name == "EACCES", r
    assert "HF_TOKEN" in r.msg and "gated" in r.msg and "secrets" in r.msg, r.msg


def test_gated_with_wrong_token(binary, hub, tmp_path):
    bad = "hf_WRONGtoken_0000000000"
    r = run_hf(binary, hub.url, tmp_path, "--id", GATED, token=bad)
    assert not r.ok and r.errno_name == "EACCES", r
    assert "token" in r.msg, r.msg
    assert bad not in r.out and bad not in r.err


def test_gated_with_token(binary, hub, tmp_path):
    r = run_hf(binary, hub.url, tmp_path, "--id", GATED, token=TOKEN)
    assert r.ok, r
    check_snapshot(tmp_path, GATED, r.path)
    st = hub.stats()
    assert st["auth_requests"] >= st["api_revision"] + st["api_tree"] + st["resolve"]
    assert TOKEN not in r.out and TOKEN not in r.err


def test_not_found(binary, hub, tmp_path):
    r = run_hf(binary, hub.url, tmp_path, "--id", "seer/no-such-model")
    assert not r.ok and r.errno_name == "ENOENT", r
    assert "not found" in r.msg and "seer/no-such-model" in r.msg, r.msg


def test_unknown_revision(binary, hub, tmp_path):
    r = run_hf(binary, hub.url, tmp_path, "--rev", "no-such-branch")
    assert not r.ok and r.errno_name == "ENOENT", r
    assert "revision 'no-such-branch' not found" in r.msg, r.msg


def test_revision_with_slash_and_tag(binary, hub, tmp_path):
    for rev in ("refs/pr/1", "v1.0"):
        r = run_hf(binary, hub.url, tmp_path, "--rev", rev)
        assert r.ok, r
        assert (repo_dir(tmp_path) / "refs" / rev).read_text() == REPOS[TINY].commit


def test_invalid_id(binary, tmp_path):
    r = run_hf(binary, "http://127.0.0.1:9", tmp_path, "--id", "../etc")
    assert not r.ok and r.errno_name == "EINVAL" and "invalid model id" in r.msg, r


def test_http_error_status(binary, hub, tmp_path):
    hub.config(fail_path="config.json", fail_status=500, fail_times=-1)
    r = run_hf(binary, hub.url, tmp_path, "--retries", "1")
    assert not r.ok, r
    assert "HTTP 500" in r.msg and "config.json" in r.msg, r.msg


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full(binary, hub, tmp_path):
    # /dev/full fails every write with ENOSPC: make the LFS partial file it.
    blobs = repo_dir(tmp_path) / "blobs"
    blobs.mkdir(parents=True)
    (blobs / (lfs_blob() + ".incomplete")).symlink_to("/dev/full")
    r = run_hf(binary, hub.url, tmp_path)
    assert not r.ok and r.errno_name == "ENOSPC", r
    assert "disk full" in r.msg and LFS in r.msg, r.msg


def test_cancel_keeps_partial_then_resumes(binary, hub, tmp_path):
    hub.config(rate=2_000_000)
    r = run_hf(binary, hub.url, tmp_path, "--cancel-after", "400000")
    assert not r.ok and r.errno_name == "ECANCELED", r
    inc = repo_dir(tmp_path) / "blobs" / (lfs_blob() + ".incomplete")
    assert 0 < inc.stat().st_size < len(REPOS[TINY].files[LFS])
    hub.reset()
    r = run_hf(binary, hub.url, tmp_path)
    assert r.ok, r
    check_snapshot(tmp_path, path=r.path)
    assert any(x["path"] == LFS for x in hub.stats()["range_requests"])


def test_two_processes_share_the_cache(binary, hub, tmp_path):
    hub.config(rate=3_000_000)  # ~1 s for the LFS file, so the runs overlap
    procs = [spawn_hf(binary, hub.url, tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and out.startswith("OK "), out + err
    check_snapshot(tmp_path)
    st = hub.stats()
    # each blob crossed the wire once: the loser waited on the blob lock
    assert all(n == 1 for n in st["bodies_by_path"].values()), st["bodies_by_path"]
    assert st["bodies_by_path"].get(LFS) == 1


def test_threads_in_one_process(binary, hub, tmp_path):
    hub.config(rate=5_000_000)
    r = run_hf(binary, hub.url, tmp_path, "--threads", "4")
    assert r.ok and len(r.lines) == 4 and all(l.startswith("OK ") for l in r.lines), r
    check_snapshot(tmp_path, path=r.path)
    assert all(n == 1 for n in hub.stats()["bodies_by_path"].values())


def test_snapshot_pruned_is_refetched(binary, hub, tmp_path):
    """A snapshot deleted behind our back (huggingface-cli delete-cache) is
    not trusted just because our completion record survives."""
    assert run_hf(binary, hub.url, tmp_path).ok
    rd = repo_dir(tmp_path)
    (rd / "snapshots" / REPOS[TINY].commit / "config.json").unlink()
    blob = REPOS[TINY].entries["config.json"]["blob"]
    (rd / "blobs" / blob).unlink()
    hub.reset()
    r = run_hf(binary, hub.url, tmp_path)
    assert r.ok, r
    check_snapshot(tmp_path, path=r.path)
    assert hub.stats()["bodies_by_path"] == {"config.json": 1}


def test_complete_partial_file_is_verified_without_download(binary, hub, tmp_path):
    """A crash between the last byte and the rename leaves a full
    .incomplete file: it is verified and renamed, not downloaded again."""
    blobs = repo_dir(tmp_path) / "blobs"
    blobs.mkdir(parents=True)
    (blobs / (lfs_blob() + ".incomplete")).write_bytes(REPOS[TINY].files[LFS])
    r = run_hf(binary, hub.url, tmp_path)
    assert r.ok, r
    check_snapshot(tmp_path, path=r.path)
    assert LFS not in hub.stats()["bodies_by_path"]


def test_garbage_partial_file_fails_verification(binary, hub, tmp_path):
    """A partial file whose bytes are wrong is resumed (the server cannot
    know), caught by the sha256 check, and deleted so the next run is clean."""
    blobs = repo_dir(tmp_path) / "blobs"
    blobs.mkdir(parents=True)
    inc = blobs / (lfs_blob() + ".incomplete")
    inc.write_bytes(b"\0" * 100_000)
    r = run_hf(binary, hub.url, tmp_path)
    assert not r.ok and r.errno_name == "EBADMSG" and LFS in r.msg, r
    assert not inc.exists()
    r = run_hf(binary, hub.url, tmp_path)
    assert r.ok, r
    check_snapshot(tmp_path, path=r.path)
