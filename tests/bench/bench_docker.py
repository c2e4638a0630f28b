#!/usr/bin/python3
"""bench_docker.py - the docker provider beside the local provider, in one
run on one mount: root/ (create, stat, read, delete N small files from the
host through root/workspace), exec round trip (write exec, read exit),
`docker exec` of the CLI on the same container, and the start of a sandbox
from an image the engine has. Beside each root/ row, the same files done
natively, not through FUSE, in the same run: on the local sandbox's
workspace directory in the state directory (fs/upper/workspace), and on the
container's own root through /proc/PID/root/workspace (the engine's
overlayfs): seerfs/native says what seerfs itself adds on each provider. Starts a dockerd of its own
(tests/integration/engines.py; root). Not a test: it asserts nothing.
usage: tests/bench/bench_docker.py [BUILD] [FILES] [ROUNDS]"""
import json, os, pathlib, re, shutil, statistics, subprocess, sys, tempfile, time

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))
BUILD = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "build").resolve()
FILES = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
import engines  # noqa: E402
from dockerhelp import file_rows  # noqa: E402


def wait_running(sb):
    with open(sb / "wait") as f:
        st = f.read().split()[0]
    assert st == "running", (sb / "error").read_text()


def run(sb, cmd):
    (sb / "exec").write_text(cmd)
    return (sb / "jobs" / "latest" / "exit").read_text().strip()


def files_rows(top):
    d = top / f"b{time.monotonic_ns()}"
    d.mkdir()
    out = file_rows(d, FILES)
    d.rmdir()
    return out


def native_dirs(e, st, local_sb):
    """Where each sandbox's /workspace lies on the host, reached without
    seerfs: the local sandbox's tree in the state directory, the same tree
    through /proc/INIT/root (the path seerfs's root/ takes: a magic link's
    lookup each time), and the container's root as its init sees it (the
    engine's overlayfs)."""
    cid = json.loads(e.request("GET", "/containers/json")[1])[0]["Id"]
    pid = json.loads(e.request("GET", f"/containers/{cid}/json")[1])["State"]["Pid"]
    lpid = re.search(r"init pid (\d+)", (local_sb / "log").read_text()).group(1)
    return {"local": st / "sandboxes" / "local" / "fs" / "upper" / "workspace",
            "local /proc": pathlib.Path(f"/proc/{lpid}/root/workspace"),
            "docker": pathlib.Path(f"/proc/{pid}/root/workspace")}, cid


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
        native, cid = native_dirs(e, st, sbs["local"][0])
        rows = {}
        for r in range(ROUNDS):
            for name, (sb, _) in (sorted(sbs.items()) if r % 2 else sorted(sbs.items(), reverse=True)):
                for k, v in files_rows(sb / "root" / "workspace").items():
                    rows.setdefault((k, name), []).append(v)
                for nat in (name, "local /proc") if name == "local" else (name,):
                    for k, v in files_rows(native[nat]).items():
                        rows.setdefault((k, nat + " native"), []).append(v)
                t0 = time.monotonic()
                for _ in range(50):
                    run(sb, "true")
                rows.setdefault(("exec round trip", name), []).append((time.monotonic() - t0) / 50)
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
        print(f"\nnative (no FUSE)   {'local':>9} {'local/proc':>10} {'docker':>9} {'ratio':>6}"
              f"   seerfs/native: {'local':>6} {'local/proc':>10} {'docker':>6}")
        for k in ("create", "stat", "read", "delete"):
            lo, lp, dk = (statistics.median(rows[(k, n + " native")]) for n in ("local", "local /proc", "docker"))
            slo, sdk = statistics.median(rows[(k, "local")]), statistics.median(rows[(k, "docker")])
            print(f"{k:<18} {lo * 1000:>7.1f}ms {lp * 1000:>8.1f}ms {dk * 1000:>7.1f}ms {dk / lp:>6.2f}"
                  f"   {'':>14} {slo / lo:>6.2f} {slo / lp:>10.2f} {sdk / dk:>6.2f}")
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
