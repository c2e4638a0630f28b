"""test_engine.py - the Engine API client (core/lib/engine.c) against real
engines, through tests/drivers/engine_driver.c: dockerd (docker.io) and
Podman's compatible service, started by conftest.py's docker_engine and
podman_engine fixtures (engines.py). Version negotiation; a container's
create/start/exec (hijacked stream: 1 MiB of stdin echoed back, stderr
apart, the exit code from exec inspect)/archive put and get/remove; TLS
with client certificates, and the refusals: a certificate of another CA, a
server the CA did not sign, no certificate. An unreachable endpoint and a
stalled one fail within the timeout, naming the endpoint. The tar half runs
without an engine too (its escapes are in tests/unit/test_engine.c).
"""

import errno
import json
import os
import socket
import subprocess
import time

import pytest

from conftest import BUILD

DRIVER = BUILD / "tests" / "drivers" / "engine_driver"


def drive(*args, timeout=120):
    if not DRIVER.exists():
        pytest.fail(f"{DRIVER} not built (ninja -C {BUILD})", pytrace=False)
    t0 = time.monotonic()
    r = subprocess.run([str(DRIVER), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - t0
    assert r.stdout.strip(), f"engine_driver {args}: no output; stderr: {r.stderr}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["wall"] = took
    return out


def tls_args(e, cert=None, key=None, ca=None):
    return ["--ca", ca or e.ca, "--cert", cert or e.cert, "--key", key or e.key]


@pytest.fixture(params=["docker", "podman"])
def engine(request):
    return request.getfixturevalue(request.param + "_engine")


def test_version_negotiation(engine):
    v = drive(engine.endpoint, "version")
    assert v["ok"], v
    assert v["kind"] == engine.kind
    # dockerd 20.10 and Podman 4.3 both speak 1.41: min(theirs, ours)
    assert v["api"] == "1.41", v
    assert v["server"].startswith("20.10" if engine.kind == "docker" else "4.3"), v
    print(f"{engine.kind} {v['server']}: API {v['api']}, open in {v['seconds'] * 1000:.1f} ms,"
          f" engine started in {engine.start_seconds:.1f} s, image imported in {engine.image_seconds:.1f} s")


def test_roundtrip(engine, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.bin").write_bytes(os.urandom(300000))
    (src / "sub").chmod(0o750)
    os.symlink("sub/b.bin", src / "ln")
    out = tmp_path / "out"
    out.mkdir()
    r = drive(engine.endpoint, "roundtrip", engine.image, src, out, timeout=300)
    print(json.dumps(r, indent=1))
    assert r["create"] == 201 and r["start"] == 204, r
    assert r["exec"] == 0, r
    assert r["stdout_len"] == 1 << 20 and r["stdout_same"], r
    assert r["stderr"] == "to-stderr\n", r
    assert r["exit"] == 3, r
    assert r["tar"] == 0 and r["put"] == 200, r
    inside = r["inside"].split("\n")
    assert {".", "./a.txt", "./ln", "./sub", "./sub/b.bin"} <= set(inside), r["inside"]
    # owned by root inside, modes kept
    assert "0:0 750 sub" in r["inside"], r["inside"]
    assert r["get"] == 200 and r["extract"] == 0, r
    got = out / "up"
    assert (got / "a.txt").read_text() == "alpha\n"
    assert (got / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    assert os.readlink(got / "ln") == "sub/b.bin"
    assert r["get_missing"] == -errno.ENOENT and engine.endpoint in r["get_missing_error"], r
    assert r["remove"] == 204, r
    print(f"{engine.kind}: exec round trip of `true` {r['exec_rtt_ms']:.1f} ms (median of 15),"
          f" 1 MiB through cat in {r['exec_seconds'] * 1000:.0f} ms")
    assert not [c for c in engine.containers() if c.get("Labels", {}).get("seerfs.test") == "engine_driver"]


def test_stream_outlives_timeout(engine):
    """The endpoint's timeout bounds connecting and the reply's headers, not
    a stream: an exec that is silent for longer than it still completes."""
    # 4 s: Podman's GET /version alone takes about 1 s (more on a loaded machine)
    r = drive("--timeout", "4", engine.endpoint, "exec", engine.image, "sleep 6; echo late; echo e >&2; exit 7")
    assert "exec" in r, r
    assert r["exec"] == 0 and r["stdout"] == "late\n" and r["stderr"] == "e\n" and r["exit"] == 7, r
    assert r["seconds"] >= 6 and r["remove"] == 204, r


@pytest.mark.parametrize("over", ["unix", "tls"])
def test_parallel_calls(docker_engine, over):
    """One struct engine used by 8 threads at once (a curl handle per call,
    TLS sessions shared under a lock): every call answered."""
    e = docker_engine
    args = [e.endpoint] if over == "unix" else [*tls_args(e), e.tls_endpoint]
    r = drive(*args, "parallel", 8, 25)
    assert r["ok"] == 200 and r["failed"] == 0, r
    print(f"docker over {over}: 200 calls from 8 threads in {r['seconds'] * 1000:.0f} ms")


def test_tls_client_certificates(docker_engine):
    e = docker_engine
    v = drive(*tls_args(e), e.tls_endpoint, "version")
    assert v["ok"] and v["api"] == "1.41" and v["kind"] == "docker", v
    c = drive(*tls_args(e), e.tls_endpoint, "call", "GET", "/containers/json?all=1")
    assert c["status"] == 200 and isinstance(c["reply"], list), c


def test_tls_roundtrip(docker_engine, tmp_path):
    """The hijacked stream over TLS: 1 MiB of stdin through cat and back,
    stdin's half-close (shutdown of the socket under TLS), stderr apart, the
    exit code; archive put and get."""
    e = docker_engine
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("over tls\n")
    out = tmp_path / "out"
    out.mkdir()
    r = drive(*tls_args(e), e.tls_endpoint, "roundtrip", e.image, src, out, timeout=300)
    assert r["exec"] == 0 and r["stdout_same"] and r["stderr"] == "to-stderr\n" and r["exit"] == 3, r
    assert r["put"] == 200 and r["get"] == 200 and r["extract"] == 0 and r["remove"] == 204, r
    assert (out / "up" / "f").read_text() == "over tls\n"
    print(f"docker over TLS: exec round trip of `true` {r['exec_rtt_ms']:.1f} ms (median of 15)")


def test_tls_refusals(docker_engine):
    e = docker_engine
    # a client certificate of another CA: the engine refuses it
    v = drive(*tls_args(e, cert=e.bad_cert, key=e.bad_key), "--timeout", "5", e.tls_endpoint, "version")
    assert not v["ok"] and v["errno"] == errno.EACCES and e.tls_endpoint in v["error"], v
    assert v["wall"] < 5, v
    # a CA that did not sign the server: we refuse it
    v = drive(*tls_args(e, ca=e.certs["other_ca"]), "--timeout", "5", e.tls_endpoint, "version")
    assert not v["ok"] and v["errno"] == errno.EACCES and e.tls_endpoint in v["error"], v
    # no certificate at all against a --tlsverify engine: no HTTP answer
    v = drive("--timeout", "5", e.tls_endpoint, "version")
    assert not v["ok"] and e.tls_endpoint in v["error"] and v["wall"] < 6, v
    # the key's contents never show in a message
    with open(e.key) as f:
        body = [line for line in f.read().splitlines() if line and not line.startswith("-----")]
    assert not any(line in v["error"] for line in body)


def test_unreachable_endpoint(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    ep = f"tcp://127.0.0.1:{port}"
    v = drive("--timeout", "3", ep, "version")
    assert not v["ok"] and v["errno"] == errno.ECONNREFUSED and ep in v["error"] and v["wall"] < 3, v
    ep = f"unix://{tmp_path}/none.sock"
    v = drive("--timeout", "3", ep, "version")
    assert not v["ok"] and v["errno"] == errno.ENOENT and ep in v["error"] and v["wall"] < 3, v


def test_stalled_endpoint(tmp_path):
    """A listener that accepts connections (the kernel's backlog) and never
    answers: the open fails with ETIMEDOUT within its timeout, naming the
    endpoint; the same for a unix socket."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    u = socket.socket(socket.AF_UNIX)
    u.bind(str(tmp_path / "stall.sock"))
    u.listen(16)
    try:
        for ep in (f"tcp://127.0.0.1:{s.getsockname()[1]}", f"unix://{tmp_path}/stall.sock"):
            v = drive("--timeout", "2", ep, "version")
            assert not v["ok"] and v["errno"] == errno.ETIMEDOUT and ep in v["error"], v
            assert 1.5 < v["wall"] < 4.5, v
    finally:
        s.close()
        u.close()


def test_not_an_engine(tmp_path):
    """An HTTP server that is not an Engine API: EPROTO, named."""
    import http.server
    import threading

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.send_header("Content-Length", "9")
            self.end_headers()
            self.wfile.write(b"not here\n")

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        ep = f"tcp://127.0.0.1:{srv.server_address[1]}"
        v = drive("--timeout", "3", ep, "version")
        assert not v["ok"] and v["errno"] == errno.EPROTO and ep in v["error"], v
    finally:
        srv.shutdown()


def test_tar_roundtrip_without_engine(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("x" * 10000)
    os.symlink("/etc/passwd", src / "d" / "abs")
    out = tmp_path / "out"
    out.mkdir()
    r = drive("tar", src, "name", out)
    assert r["ok"], r
    assert (out / "name" / "d" / "f").read_text() == "x" * 10000
    # a link is copied as a link, never followed
    assert os.readlink(out / "name" / "d" / "abs") == "/etc/passwd"
    # a source that is a link is refused
    os.symlink(src, tmp_path / "srclink")
    r = drive("tar", tmp_path / "srclink", "name", out)
    assert not r["ok"] and r["errno"] == errno.ELOOP, r


def test_engine_restart(docker_engine):
    """kill() and start() again on the same data: the client opens it again
    and the image is still there (what the provider's "engine killed
    mid-job" test builds on)."""
    e = docker_engine
    e.kill()
    v = drive("--timeout", "3", e.endpoint, "version")
    assert not v["ok"] and e.endpoint in v["error"], v
    e.start()
    v = drive(e.endpoint, "version")
    assert v["ok"], v
    c = drive(e.endpoint, "call", "GET", f"/images/{e.image}/json")
    assert c["status"] == 200, c
