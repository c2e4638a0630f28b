"""dockerhelp.py - what the docker provider's tests (test_docker.py,
test_docker_remote.py) and tests/bench/bench_docker.py share: the seerfs of
one providers file and its sandboxes, a host-only file for the escape tests,
the fake Hub for models, and the timed small-file rows (create, stat, read,
delete) that the speed test and the benchmark run."""

import contextlib
import json
import os
import pathlib
import time
import uuid

import pytest


def mount(factory, tmp_path, entries, env=None, state_dir=None):
    """A seerfs whose providers file holds `entries` ({name: entry})."""
    pfile = tmp_path / f"providers-{uuid.uuid4().hex[:6]}.json"
    pfile.write_text(json.dumps(entries))
    return factory(args=("-o", f"providers={pfile}"), env=env, state=state_dir)


def start(m, name, provider, config=None, want="running"):
    """Sandbox `name` on `provider` (config: more of its config.json)."""
    cfg = dict(config or {})
    cfg.setdefault("provider", provider)
    return m.sandbox(name, json.dumps(cfg), want=want)


@contextlib.contextmanager
def host_secret():
    """A file only the host has (/tmp/seerfs-host-secret-*, "host-only"):
    no sandbox may read or reach it. Removed afterwards."""
    secret = pathlib.Path("/tmp") / f"seerfs-host-secret-{uuid.uuid4().hex}"
    secret.write_text("host-only")
    try:
        yield secret
    finally:
        secret.unlink()


@pytest.fixture(scope="module")
def hub():
    """hf_server's fake Hub on a port of its own, for "models"."""
    import threading
    import hf_server
    srv = hf_server.make_server(token="hf_DOCKtoken_0a1b")
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def hub_model(hub):
    """seer/tiny-model as the fake Hub serves it, and the environment that
    points a seerfs at that Hub (no token of the host's)."""
    import hf_server
    repo = hf_server.build_repos()["seer/tiny-model"]
    env = dict(os.environ, HF_ENDPOINT=f"http://127.0.0.1:{hub.server_address[1]}")
    env.pop("HF_TOKEN", None)
    return repo, env


def file_rows(d, n, readdir=False):
    """Seconds to create, stat, read (and with readdir list) and delete n
    files of 100 bytes in directory d, one after another, each checked."""
    t = {}
    t0 = time.monotonic()
    for i in range(n):
        (d / f"f{i}").write_bytes(b"x" * 100)
    t["create"] = time.monotonic() - t0
    t0 = time.monotonic()
    for i in range(n):
        assert (d / f"f{i}").stat().st_size == 100
    t["stat"] = time.monotonic() - t0
    t0 = time.monotonic()
    for i in range(n):
        assert (d / f"f{i}").read_bytes() == b"x" * 100
    t["read"] = time.monotonic() - t0
    if readdir:
        t0 = time.monotonic()
        assert len(os.listdir(d)) == n
        t["readdir"] = time.monotonic() - t0
    t0 = time.monotonic()
    for i in range(n):
        os.unlink(d / f"f{i}")
    t["delete"] = time.monotonic() - t0
    return t
