#!/usr/bin/python3
"""bench_docker.py - the docker provider beside the local provider, in one
run on one mount: root/ (create, stat, read, delete N small files from the
host through root/workspace), exec round trip (write exec, read exit),
`docker exec` of the CLI on the same container, and the start of a sandbox
from an image the engine has. Starts a dockerd of its own
(tests/integration/engines.py; root). Not a test: it asserts nothing.
usage: tests/bench/bench_docker.py [BUILD] [FILES] [ROUNDS]"""
import json, os, pathlib, shutil, statistics, subprocess, sys, tempfile, time

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))
BUILD = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "build").resolve()
FILES = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
import engines  # noqa: E402


def wait_running(sb):
    with open(sb / "wait") as f:
        st = f.read().split()[0]
    assert st == "running", (sb / "error").read_text()


def run(sb, cmd):
    (sb / "exec").write_text(cmd)
    return (sb / "jobs" / "latest" / "exit").read_text().strip()


def files_rows(sb):
    d = sb / "root" / "workspace" / f"b{time.monotonic_ns()}"
    d.mkdir()
    out = {}
    t0 = time.monotonic()
    for i in range(FILES):
        (d / f"f{i}").write_bytes(b"x" * 100)
    out["create"] = time.monotonic() - t0
    t0 = time.monotonic()
    for i in range(FILES):
        os.stat(d / f"f{i}")
    out["stat"] = time.monotonic() - t0
    t0 = time.monotonic()
    for i in range(FILES):
        (d / f"f{i}").read_bytes()
    out["read"] = time.monotonic() - t0
    t0 = time.monotonic()
    for i in range(FILES):
        os.unlink(d / f"f{i}")
    out["delete"] = time.monotonic() - t0
    d.rmdir()
    return out


def main():
    e = engines.start_engine("docker")
    base = pathlib.Path(tempfile.mkdtemp(prefix="seerfs-bench-docker-", dir="/var/tmp"))
    base.chmod(0o711)
    mnt, st = base / "mnt", base / "state"
    mnt.mkdir()
    pf = base / "providers.json"
    pf.write_text(json.dumps({"dk": {"type": "docker", "endpoint": e.endpoint, "image": e.image}}))
    p = subprocess.Popen([str(BUILD / "fs" / "seerfs"), str(mnt), "-f", "-o", f"state={st}", "-o", f"providers={pf}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if os.path.ismount(mnt):
                break
            time.sleep(0.05)
        sbs = {}
        for name, cfg in (("local", {}), ("docker", {"provider": "dk"})):
            sb = mnt / name
            sb.mkdir()
            t0 = time.monotonic()
            (sb / "config.json").write_text(json.dumps(cfg))
            wait_running(sb)
            sbs[name] = (sb, time.monotonic() - t0)
        rows = {}
        for r in range(ROUNDS):
            for name, (sb, _) in (sorted(sbs.items()) if r % 2 else sorted(sbs.items(), reverse=True)):
                for k, v in files_rows(sb).items():
                    rows.setdefault((k, name), []).append(v)
                t0 = time.monotonic()
                for _ in range(50):
                    run(sb, "true")
                rows.setdefault(("exec round trip", name), []).append((time.monotonic() - t0) / 50)
        cid = json.loads(e.request("GET", "/containers/json")[1])[0]["Id"]
        env = dict(os.environ, DOCKER_HOST=e.endpoint)
        t0 = time.monotonic()
        for _ in range(10):
            subprocess.run(["docker", "exec", cid, "true"], env=env, check=True, capture_output=True)
        cli = (time.monotonic() - t0) / 10
        print(f"{'row':<18} {'local':>10} {'docker':>10} {'ratio':>6}")
        for k in ("create", "stat", "read", "delete", "exec round trip"):
            lo, dk = statistics.median(rows[(k, "local")]), statistics.median(rows[(k, "docker")])
            unit, f = ("ms", 1000) if k == "exec round trip" else ("s", 1)
            print(f"{k:<18} {lo * f:>8.2f}{unit:>2} {dk * f:>8.2f}{unit:>2} {dk / lo:>6.2f}")
        print(f"{'docker exec (CLI)':<18} {'':>10} {cli * 1000:>8.2f}ms")
        print(f"{'start':<18} {sbs['local'][1]:>8.2f} s {sbs['docker'][1]:>8.2f} s   (docker: image present)")
        print(f"({FILES} files of 100 bytes per row, median of {ROUNDS} rounds; engine {e.kind})")
        for name in sbs:
            (mnt / name / "ctl").write_text("terminate")
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)])
        p.wait(timeout=60)
        e.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
