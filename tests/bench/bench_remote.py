#!/usr/bin/python3
"""bench_remote.py - remote sandboxes at real-world latency (issue #19):
sshfs and seerfs's ssh provider side by side, through tests/bench/
delay_proxy.py at several round-trip times, with seconds and round trips
per operation.  Run as root (it drops the page cache and mounts).

    tests/bench/bench_remote.py [--latencies 0,20,100] [--rows create,tarx,...]
        [--rounds 3] [--slow-rounds 1] [--budget 540] [--build build] [--json FILE]

Setup: one OpenSSH sshd on 127.0.0.1 (tests/integration/sshd_fixture.py,
run as the user `seer` when there is one, as bench_ssh.sh does, with
aes128-ctr + hmac-sha2-256 forced for both clients).  Per latency (a
round trip in ms; each direction gets half) two delay proxies are started
in front of it, one per client, so each client's round trips are counted
alone.  sshfs (Debian's 3.7.x, `kernel_cache,dir_cache=yes` and 60 s
dcache/entry/attr timeouts, one connection) mounts a directory of the
server's user through one proxy; seerfs (BUILD/fs/seerfs, its defaults)
mounts with a providers.json whose ssh provider points at the other, and
one host-mode sandbox is made; its root/workspace is the seerfs side.
As root everything lives on a fresh ext4 loop image (see bench_ssh.sh for
why).

Rows, in order, each on both clients in turn (the order alternates from
round to round), every round in fresh directories:
  create  100 files, `sh -c 'for i in $(seq 100); do echo x > f$i; done'`
  tarx    `tar x --no-same-owner` of a 120-entry tree (12 directories,
          108 text files of 0.2 to 16 KiB, generated the same every run)
  commit  `git add -A && git commit` of that tree (git init not timed)
  gsc     `git status --porcelain`, caches dropped
  gsw     the same, warm (after one untimed run)
  find    `find` over the tree (.git included), caches dropped
  grep    `grep -r` of a word that is nowhere, caches dropped (reads all)
  write   `dd bs=1M count=16 conv=fsync` (16 MiB, durable at the end)
  read    `dd` of that file, caches dropped
A row that needs an earlier one (commit needs tarx, gsc/gsw need commit,
find/grep need tarx, read needs write) runs it untimed when it is filtered
out.  find and grep run over the tree as it is then: without commit (not
asked for, or skipped for the budget) it has no .git (12 directories and
108 files instead of 118 and 251), and the table says so.

"Caches dropped" means, for the client under test, just before the timed
command:
  sshfs:  umount, `sync; echo 3 > /proc/sys/vm/drop_caches`, mount again
          (sshfs keeps its dir_cache and attribute cache in the process;
          only a new process forgets them; the new SSH login is not timed);
  seerfs: a job (`true` through NAME/exec): its start calls
          sftpfs_invalidate (drops cached listings, negative entries,
          kept file contents, and the kernel's entries, attributes and
          pages of root/), then `sync; echo 3 > /proc/sys/vm/drop_caches`.
The page cache is the host's, so the server side starts cold too.

Round trips: each proxy counts client-to-server "bursts" (data after a
quiet gap of more than half the one-way delay; see delay_proxy.py); the
difference across the timed command is printed as rt.  At 0 ms the gap is
0.5 ms and the counts mean little; read them at 20 and 100 ms.

Time budget: a row whose time at this latency, projected from the previous
(lower, non-zero) latency of the same run scaled by the ratio of round
trips, would take the rows of this round past --budget seconds is skipped
and shown as such (with its dependents).  Defaults: 3 rounds below 100 ms,
--slow-rounds (1) at 100 ms or more; figures are medians of the rounds.

Not a test: it asserts nothing, but reports a tree that differs after
tar x, and any failing command.
"""
import argparse
import json
import os
import pathlib
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from proxy_client import DelayProxy  # noqa: E402
ROWS = ["create", "tarx", "commit", "gsc", "gsw", "find", "grep", "write", "read"]
LABELS = {
    "create": "create 100 files (echo x > fN)",
    "tarx": "tar x, 120 entries",
    "commit": "git add -A + commit of that tree",
    "gsc": "git status, caches dropped",
    "gsw": "git status warm",
    "find": "find, caches dropped",
    "grep": "grep -r over the tree, caches dropped",
    "write": "write 16 MiB",
    "read": "read 16 MiB, caches dropped",
}
NEEDS = {"commit": "tarx", "gsc": "commit", "gsw": "commit", "find": "tarx", "grep": "tarx",
         "read": "write"}
COLD = {"gsc", "find", "grep", "read"}
# Units of each row for round trips per operation: (count, unit), and the
# same without .git for find/grep when commit did not run.
UNITS = {"create": (100, "file"), "tarx": (120, "entry"), "commit": (121, "object"), "gsc": (118, "dir"),
         "gsw": (17, "file git opens"), "find": (118, "dir"), "grep": (251, "file"), "write": (16, "MiB"),
         "read": (16, "MiB")}
UNITS_NOGIT = {"find": (12, "dir"), "grep": (108, "file")}
# The fewest round trips each row could cost over plain SFTP v3 (a handle
# must come back before a request names it; a call that can fail must
# wait for its answer; listings and small files of many directories may
# share a round trip), for this tree; docs/remote-latency.md says how.
FLOOR = {"create": 200, "tarx": 228, "commit": 580, "gsc": 12, "gsw": 0, "find": 10, "grep": 20,
         "write": 2, "read": 2}
CLIENTS = ["sshfs", "seerfs"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, stdin=subprocess.DEVNULL, **kw)


def drop_page_cache():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def make_tree(top):
    """The 120-entry tree: 12 directories and 108 small text files, the
    same bytes every run (seeded), something like a small source tree."""
    rnd = random.Random(19)
    words = ("int char void return static struct const size_t if else for while "
             "buf len ret err node path file open close read write seer sftp").split()
    dirs = ["proj", "proj/src", "proj/src/core", "proj/src/lib", "proj/src/net", "proj/include",
            "proj/include/seer", "proj/tests", "proj/tests/unit", "proj/docs", "proj/tools", "proj/data"]
    for d in dirs:
        os.makedirs(os.path.join(top, d))
    n = 0
    while n < 108:
        d = dirs[n % len(dirs)]
        size = int(200 * (80 ** rnd.random()))  # 0.2 to 16 KiB, most small
        lines, total = [], 0
        while total < size:
            line = " ".join(rnd.choice(words) for _ in range(rnd.randint(2, 12))) + ";\n"
            lines.append(line)
            total += len(line)
        with open(os.path.join(top, d, f"file{n:03d}.{'ch'[n % 2]}"), "w") as f:
            f.write("".join(lines))
        n += 1
    return len(dirs) + n


class Sshd:
    """tests/integration/sshd_fixture.py's server in a process of its own,
    as the user `seer` when there is one (a login without root's heavy
    ~/.bashrc, as in bench_ssh.sh)."""

    SCRIPT = r"""
import os, sys, time
sys.path.insert(0, sys.argv[2])
from sshd_fixture import SshdFixture
class Fixture(SshdFixture):
    def _write_config(self, authorized):
        super()._write_config(authorized)
        with open(self.config, "a") as f:
            f.write("Ciphers aes128-ctr\nMACs hmac-sha2-256\nCompression no\n")
s = Fixture(sftp_server="sftp-server", log_level="ERROR")
s.start()
try:
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(f"{s.host} {s.port} {s.user} {s.identity_file} {s.known_hosts} {s.host_key}\n")
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    while os.path.exists(sys.argv[1]):
        time.sleep(0.2)
finally:
    s.stop()
"""

    def __init__(self, base, user):
        envdir = os.path.join(base, "sshd")
        os.mkdir(envdir)
        if user:
            shutil.chown(envdir, user)
        self.envfile = os.path.join(envdir, "env")
        runas = ["runuser", "-u", user, "--"] if user else []
        self.proc = subprocess.Popen(runas + ["/usr/bin/python3" if runas else sys.executable, "-c", self.SCRIPT, self.envfile,
                                              str(REPO / "tests/integration")],
                                     stdin=subprocess.DEVNULL)
        for _ in range(300):
            if os.path.exists(self.envfile):
                break
            if self.proc.poll() is not None:
                raise RuntimeError("the test sshd did not start")
            time.sleep(0.1)
        with open(self.envfile) as f:
            self.host, port, self.user, self.key, _, self.host_key = f.read().split()
        self.port = int(port)

    def known_hosts(self, path, ports):
        """known_hosts naming the server's key at each proxy port."""
        with open(self.host_key + ".pub") as f:
            keytype, key = f.read().split()[:2]
        with open(path, "w") as f:
            for p in ports:
                f.write(f"[{self.host}]:{p} {keytype} {key}\n")

    def stop(self):
        try:
            os.unlink(self.envfile)
        except FileNotFoundError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait()


class Proxy(DelayProxy):
    """One delay_proxy.py process; counters() reads its counts."""

    def __init__(self, base, name, target_port, delay_ms):
        super().__init__(base, target_port, delay_ms, name=f"proxy-{name}")


class Client:
    """One side of the table: where its files are, how to forget caches."""

    def __init__(self, name, proxy):
        self.name = name
        self.proxy = proxy


class Sshfs(Client):
    def __init__(self, proxy, sshd, kh, remote, mnt):
        super().__init__("sshfs", proxy)
        self.args = ["sshfs", "-o", f"port={proxy.port},IdentityFile={sshd.key},UserKnownHostsFile={kh},"
                     "StrictHostKeyChecking=yes,BatchMode=yes,IdentitiesOnly=yes",
                     "-o", "kernel_cache,dir_cache=yes,dcache_timeout=60,entry_timeout=60,attr_timeout=60",
                     "-o", "Ciphers=aes128-ctr,MACs=hmac-sha2-256,Compression=no",
                     f"{sshd.user}@{sshd.host}:{remote}", mnt]
        self.mnt = mnt
        self.dir = mnt
        run(self.args)

    def drop(self):
        run(["umount", self.mnt])
        drop_page_cache()
        run(self.args)

    def stop(self):
        run(["umount", self.mnt], check=False)


class Seerfs(Client):
    def __init__(self, proxy, sshd, kh, work, mnt, state, seerfs):
        super().__init__("seerfs", proxy)
        pfile = os.path.join(os.path.dirname(state), f"providers-{proxy.port}.json")
        with open(pfile, "w") as f:
            json.dump({"b": {"type": "ssh", "host": sshd.host, "port": proxy.port, "user": sshd.user,
                             "identity_file": sshd.key, "known_hosts": kh, "workdir": work}}, f)
        self.mnt = mnt
        run([seerfs, mnt, "-o", f"state={state},providers={pfile}"])
        self.sb = os.path.join(mnt, "s")
        os.mkdir(self.sb)
        with open(os.path.join(self.sb, "config.json"), "w") as f:
            f.write('{"provider": "b"}')
        with open(os.path.join(self.sb, "wait")) as f:
            st = f.readline()
        if "running" not in st:
            with open(os.path.join(self.sb, "error")) as f:
                raise RuntimeError(f"seerfs sandbox did not start: {st.strip()}: {f.read()}")
        self.dir = os.path.join(self.sb, "root/workspace")

    def drop(self):
        # A job's start invalidates everything root/ has cached
        # (sftpfs_invalidate); wait for it to end so the sandbox is idle
        # again (caches on) before the timed command.
        fd = os.open(os.path.join(self.sb, "exec"), os.O_RDWR)
        try:
            os.write(fd, b"true")
            while os.read(fd, 65536):
                pass
        finally:
            os.close(fd)
        time.sleep(0.1)  # busy() is sampled at most every 50 ms
        drop_page_cache()

    def stop(self):
        try:
            with open(os.path.join(self.sb, "ctl"), "w") as f:
                f.write("terminate")
        except OSError:
            pass
        run(["umount", self.mnt], check=False)


GIT_ENV = None


def row_command(row, d, tarball):
    """(argv, cwd, setup) of one row in client directory d."""
    git = ["git", "-c", "safe.directory=*"]
    if row == "create":
        return ["sh", "-c", "for i in $(seq 100); do echo x > f$i; done"], os.path.join(d, "c")
    if row == "tarx":
        return ["tar", "xf", tarball, "--no-same-owner", "-C", os.path.join(d, "t")], d
    if row == "commit":
        return ["sh", "-c", "git -c safe.directory='*' add -A && git -c safe.directory='*' commit -q -m bench"], \
            os.path.join(d, "t")
    if row in ("gsc", "gsw"):
        return git + ["status", "--porcelain"], os.path.join(d, "t")
    if row == "find":
        return ["find", os.path.join(d, "t")], d
    if row == "grep":
        return ["grep", "-r", "nowhereinthistree", os.path.join(d, "t")], d
    if row == "write":
        return ["dd", "if=/dev/zero", f"of={os.path.join(d, 'big')}", "bs=1M", "count=16", "conv=fsync",
                "status=none"], d
    if row == "read":
        return ["dd", f"if={os.path.join(d, 'big')}", "of=/dev/null", "bs=1M", "status=none"], d
    raise ValueError(row)


def prepare(row, d):
    """Untimed set-up of a row in client directory d."""
    if row == "create":
        os.mkdir(os.path.join(d, "c"))
    elif row == "tarx":
        os.mkdir(os.path.join(d, "t"))
    elif row == "commit":
        run(["git", "-c", "safe.directory=*", "init", "-q"], cwd=os.path.join(d, "t"), env=GIT_ENV,
            stdout=subprocess.DEVNULL)
    elif row == "gsw":
        run(["git", "-c", "safe.directory=*", "status", "--porcelain"], cwd=os.path.join(d, "t"), env=GIT_ENV,
            stdout=subprocess.DEVNULL)


def timed(client, row, d, tarball, fails):
    """Runs one row on one client; returns (seconds, up bursts, down bursts)."""
    prepare(row, d)
    os.sync()
    if row in COLD:
        client.drop()
    argv, cwd = row_command(row, d, tarball)
    c0 = client.proxy.counters()
    t0 = time.perf_counter()
    p = run(argv, check=False, cwd=cwd, env=GIT_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t = time.perf_counter() - t0
    c1 = client.proxy.counters()
    ok = p.returncode == 0 or (row == "grep" and p.returncode == 1)
    if not ok:
        fails.append(f"{client.name} {row}: exit {p.returncode}: {p.stderr.decode(errors='replace')[:200]}")
    return t, c1["up"]["bursts"] - c0["up"]["bursts"], c1["down"]["bursts"] - c0["down"]["bursts"]


def main():
    global GIT_ENV
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latencies", default="0,20,100", help="round trips in ms (each direction gets half)")
    ap.add_argument("--rows", default=",".join(ROWS), help="subset of " + ",".join(ROWS))
    ap.add_argument("--rounds", type=int, default=3, help="rounds below 100 ms")
    ap.add_argument("--slow-rounds", type=int, default=1, help="rounds at 100 ms or more")
    ap.add_argument("--budget", type=float, default=540,
                    help="seconds of rows per round and latency (projected; see above)")
    ap.add_argument("--build", default=str(REPO / "build"))
    ap.add_argument("--json", help="write every measurement here")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_remote.py: run as root (drop_caches, mounts)")
    seerfs = os.path.join(a.build, "fs/seerfs")
    if not os.access(seerfs, os.X_OK):
        sys.exit(f"bench_remote.py: no {seerfs}: build first (meson setup build && ninja -C build)")
    if not shutil.which("sshfs"):
        sys.exit("bench_remote.py: no sshfs: apt-get install sshfs")
    lats = [float(x) for x in a.latencies.split(",")]
    want = [r for r in a.rows.split(",") if r]
    for r in want:
        if r not in ROWS:
            sys.exit(f"bench_remote.py: unknown row {r}; rows: {','.join(ROWS)}")
    torun = set()
    for r in want:   # the rows asked for and those they need
        while r:
            torun.add(r)
            r = NEEDS.get(r)

    base = tempfile.mkdtemp(prefix="seerfs-bench-remote-", dir="/var/tmp")
    img = base + ".img"
    fresh = False
    if shutil.which("mkfs.ext4"):
        try:
            run(["truncate", "-s", "2G", img])
            run(["mkfs.ext4", "-q", "-F", img], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            run(["mount", "-o", "loop", img, base])
            fresh = True
        except subprocess.CalledProcessError:
            os.unlink(img)
    os.chmod(base, 0o755)
    user = "seer" if run(["id", "-u", "seer"], check=False, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL).returncode == 0 else None
    GIT_ENV = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b",
                   GIT_COMMITTER_EMAIL="b@b", HOME=base)
    tree = os.path.join(base, "tree")
    entries = make_tree(tree)
    tarball = os.path.join(base, "tree.tar")
    run(["tar", "cf", tarball, "-C", tree, "proj"])
    load0 = os.getloadavg()
    sshd = None
    results = {}   # (lat, client, row) -> list of (s, up, down)
    skipped = {}   # lat -> rows skipped for the budget
    late = {}
    nogit = set()  # (lat, row): find/grep ran on a tree without .git
    fails = []
    cleanup = []
    try:
        sshd = Sshd(base, user)
        prev = None
        for lat in lats:
            tag = f"{lat:g}ms"
            srv = os.path.join(base, "srv-" + tag)
            os.makedirs(os.path.join(srv, "sshfs"))
            os.makedirs(os.path.join(srv, "work"))
            if user:
                run(["chown", "-R", user, srv])
            proxies = {c: Proxy(base, f"{c}-{tag}", sshd.port, lat / 2) for c in CLIENTS}
            cleanup[:] = list(proxies.values())
            kh = os.path.join(base, f"known_hosts-{tag}")
            sshd.known_hosts(kh, [p.port for p in proxies.values()])
            for m in ("mnt-sshfs-" + tag, "mnt-seerfs-" + tag, "state-" + tag):
                os.mkdir(os.path.join(base, m))
            log(f"{tag}: mounting sshfs and seerfs through the proxies")
            clients = [Sshfs(proxies["sshfs"], sshd, kh, os.path.join(srv, "sshfs"),
                             os.path.join(base, "mnt-sshfs-" + tag))]
            cleanup.insert(0, clients[0])
            clients.append(Seerfs(proxies["seerfs"], sshd, kh, os.path.join(srv, "work"),
                                  os.path.join(base, "mnt-seerfs-" + tag), os.path.join(base, "state-" + tag),
                                  seerfs))
            cleanup.insert(0, clients[1])
            rounds = a.slow_rounds if lat >= 100 else a.rounds
            for rnd in range(rounds):
                order = clients if rnd % 2 == 0 else clients[::-1]
                dirs = {}
                for c in clients:
                    dirs[c.name] = os.path.join(c.dir, f"r{rnd}")
                    os.mkdir(dirs[c.name])
                spent = 0.0
                done = set()
                for row in ROWS:
                    if row not in torun:
                        continue
                    if NEEDS.get(row) and NEEDS[row] not in done:
                        skipped.setdefault(lat, set()).add(row)
                        continue
                    if prev is not None and lat > prev and row in want:
                        past = [results[(prev, c.name, row)] for c in clients if (prev, c.name, row) in results]
                        proj = sum(statistics.median(x[0] for x in p) for p in past) * lat / prev
                        if spent + proj > a.budget:
                            log(f"{tag} round {rnd}: skipping {row}: projected {proj:.0f} s, "
                                f"{spent:.0f} s spent of the {a.budget:.0f} s budget")
                            skipped.setdefault(lat, set()).add(row)
                            continue
                    if row in ("find", "grep") and "commit" not in done:
                        nogit.add((lat, row))
                    for c in order:
                        s, up, down = timed(c, row, dirs[c.name], tarball, fails)
                        spent += s
                        if row in want:
                            results.setdefault((lat, c.name, row), []).append((s, up, down))
                        log(f"{tag} round {rnd} {c.name:6} {row:6} {s:8.3f} s  rt {up}/{down}")
                    done.add(row)
                # did tar x give the same tree on both?
                if "tarx" in done:
                    for c in clients:
                        p = run(["diff", "-r", "--no-dereference", "-x", ".git", os.path.join(tree, "proj"),
                                 os.path.join(dirs[c.name], "t", "proj")], check=False,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                        if p.returncode != 0:
                            fails.append(f"{c.name} {tag}: tree differs after tar x: "
                                         f"{p.stdout.decode(errors='replace')[:200]}")
            late[lat] = {c: p.counters()["late_ms_avg"] for c, p in proxies.items()}
            for c in clients:
                c.stop()
            for p in proxies.values():
                p.stop()
            cleanup[:] = []
            if lat > 0:
                prev = lat
    finally:
        for x in cleanup:
            try:
                x.stop()
            except Exception as e:  # keep tearing down
                log(f"teardown: {e}")
        if sshd:
            sshd.stop()
        if fresh:
            run(["umount", "-l", base], check=False)
            os.unlink(img)
            os.rmdir(base)
        else:
            shutil.rmtree(base, ignore_errors=True)

    load1 = os.getloadavg()
    out = []
    ver = run(["sshfs", "--version"], capture_output=True, text=True)
    ver = [ln.split()[-1] for ln in (ver.stdout + ver.stderr).splitlines() if ln.startswith("SSHFS version")]
    out.append(f"tree: {entries} entries; sshfs {ver[0] if ver else '?'}; "
               f"load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
               f"at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}; {os.cpu_count()} CPUs")
    for lat in lats:
        n = a.slow_rounds if lat >= 100 else a.rounds
        out.append("")
        out.append(f"### {lat:g} ms round trip ({lat / 2:g} ms each way; proxy sends late by "
                   f"{late.get(lat, {}).get('sshfs', 0):.1f}/{late.get(lat, {}).get('seerfs', 0):.1f} ms on average"
                   f" (sshfs/seerfs)); median of {n} round{'s' if n > 1 else ''}, seconds; "
                   f"rt = round trips (client-to-server bursts)")
        out.append("")
        out.append("| row | sshfs | seerfs | sshfs / seerfs | sshfs rt | seerfs rt | seerfs rt per unit "
                   "| SFTP floor rt |")
        out.append("|---|---|---|---|---|---|---|---|")
        for row in ROWS:
            if row not in want:
                continue
            r = {c: results.get((lat, c, row)) for c in CLIENTS}
            if not all(r.values()):
                out.append(f"| {LABELS[row]} | skipped | skipped | | | | | |")
                continue
            s = {c: statistics.median(x[0] for x in r[c]) for c in CLIENTS}
            rt = {c: statistics.median(x[1] for x in r[c]) for c in CLIENTS}
            label = LABELS[row] + (" (no .git: commit not run)" if (lat, row) in nogit else "")
            units, unit = (UNITS_NOGIT if (lat, row) in nogit and row in UNITS_NOGIT else UNITS)[row]
            floor = "" if (lat, row) in nogit else f"{FLOOR[row]:g}"
            out.append(f"| {label} | {s['sshfs']:.2f} | {s['seerfs']:.2f} | "
                       f"{s['sshfs'] / s['seerfs']:.2f} | {rt['sshfs']:g} | {rt['seerfs']:g} | "
                       f"{rt['seerfs'] / units:.2f} per {unit} | {floor} |")
        if skipped.get(lat):
            out.append("")
            out.append(f"skipped at {lat:g} ms (time budget {a.budget:g} s or a skipped row it needs): "
                       + ", ".join(r for r in ROWS if r in skipped[lat]))
    if fails:
        out.append("")
        out += ["failures:"] + ["  " + f for f in fails]
    print("\n".join(out))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"load_start": load0, "load_end": load1, "late_ms_avg": {str(k): v for k, v in late.items()},
                       "fails": fails,
                       "results": [{"rtt_ms": k[0], "client": k[1], "row": k[2],
                                    "runs": [{"s": s, "rt_up": u, "rt_down": d} for s, u, d in v]}
                                   for k, v in results.items()]}, f, indent=1)


if __name__ == "__main__":
    main()
