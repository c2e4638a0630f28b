#!/usr/bin/python3
"""bench_files.py - the files benchmark: native disk, libfuse's passthrough
example, and seerfs root/ on the same disk, in one run, as ratios.

Rows: sequential write and read of 1 GiB (read after dropping caches when
root), create / stat / delete 10,000 files, extract a tarball of
/usr/include without Boost (about 9,000 files), `git add -A && git commit`, `git status`
warm and with cold caches, `find`, `du -s`.

Peers: libfuse's passthrough_hp is not packaged on Debian 12; when a binary
named passthrough_hp is on PATH it is used, else the benchmark says so and
builds passthrough_ll from Debian's libfuse3-dev examples (the low-level
example, single request path, its default cache settings) as the peer.

The three clients are mounted side by side and take turns: each round runs
the whole workload on each client in turn, the order rotating from round to
round, and every figure is the median of the rounds. This machine is shared
and noisy; a single cold `git status` moves by 2x from one run to the next.

Prints a table, writes docs/bench-files.md and docs/bench-files.png (gnuplot).
Not a test: it asserts nothing.
usage: tests/bench/bench_files.py [BUILD] [SIZE_MIB] [ROUNDS]"""
import os, pathlib, shutil, statistics, subprocess, sys, tempfile, time

REPO = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "build").resolve()
SIZE_MIB = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
ROOT = os.geteuid() == 0
BASE = pathlib.Path(tempfile.mkdtemp(prefix="seerfs-bench-files-", dir="/var/tmp"))
BASE.chmod(0o711)   # as root the sandboxes (a subordinate id range) pass through it: docs/security.md
TARBALL = BASE / "include.tar"
ENV = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b",
           GIT_COMMITTER_EMAIL="b@b")


def sh(cmd):
    subprocess.run(cmd, shell=True, check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def drop_caches():
    if ROOT:
        sh("sync; echo 3 > /proc/sys/vm/drop_caches")


def timed(cmd):
    t = time.perf_counter()
    sh(cmd)
    return time.perf_counter() - t


def workload(d):
    d = pathlib.Path(d)
    r = {}
    r["write 1 GiB"] = timed(f"dd if=/dev/zero of={d}/big bs=1M count={SIZE_MIB} conv=fsync")
    drop_caches()
    r["read 1 GiB (cold)"] = timed(f"dd if={d}/big of=/dev/null bs=1M")
    os.unlink(d / "big")
    (d / "many").mkdir()
    t = time.perf_counter()
    for i in range(10000):
        os.close(os.open(d / "many" / f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644))
    r["create 10,000"] = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(10000):
        os.stat(d / "many" / f"f{i}")
    r["stat 10,000"] = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(10000):
        os.unlink(d / "many" / f"f{i}")
    r["delete 10,000"] = time.perf_counter() - t
    r["tar x /usr/include"] = timed(f"mkdir {d}/inc && tar -C {d}/inc -xf {TARBALL}")
    g = f"git -C {d}/inc -c init.defaultBranch=main"
    sh(f"{g} init -q")
    r["git add + commit"] = timed(f"{g} add -A && {g} commit -q -m x")
    r["git status (warm)"] = timed(f"{g} status --porcelain")
    drop_caches()
    r["git status (cold)"] = timed(f"{g} status --porcelain")
    r["find"] = timed(f"find {d}/inc -type f | wc -l")
    r["du -s"] = timed(f"du -s {d}/inc")
    return r


def mounted(p):
    return os.path.ismount(p)


def fresh_fs(name, notes):
    """A directory for one client's files. As root, on a fresh ext4 file
    system of its own: a loop image on the same disk, made with mkfs.ext4's
    defaults (a journal). Every client then starts from the same allocator
    state. On a shared, journal-less ext4 (this project's VMs), ext4 skips
    the inodes deleted in the last minutes one by one at every create, so
    the create and tar rows of whichever client ran last paid for the
    deletions of the ones before it."""
    d = BASE / name
    d.mkdir()
    if not ROOT or not shutil.which("mkfs.ext4"):
        return d
    img = BASE / f"{name}.img"
    with open(img, "wb") as f:
        f.truncate((SIZE_MIB + 4096) << 20)
    ok = subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], capture_output=True).returncode == 0 and \
        subprocess.run(["mount", "-o", "loop", str(img), str(d)], capture_output=True).returncode == 0
    if not ok:
        img.unlink()
        return d
    FRESH.append(d)
    note = "each client ran on a fresh ext4 file system of its own (a loop image on the same disk, mkfs.ext4 defaults)"
    if note not in notes:
        notes.append(note)
    return d


FRESH = []


def peer():
    hp = shutil.which("passthrough_hp")
    if hp:
        return "passthrough_hp", [hp]
    src = pathlib.Path("/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c")
    if not src.exists():
        return None, None
    exe = BASE / "passthrough_ll"
    cflags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], capture_output=True, text=True).stdout.split()
    subprocess.run(["cc", "-O2", "-o", str(exe), str(src), *cflags], check=True)
    return "passthrough_ll", [str(exe)]


def main():
    # The tree is /usr/include at about 9,000 files; Boost's headers,
    # when installed, add 15,000 more and are left out to keep that size.
    sh(f"tar -C /usr -cf {TARBALL} --exclude=include/boost include")
    notes, dirs, procs, mounts = [], {}, [], []
    dirs["native"] = fresh_fs("native", notes)
    # the libfuse peer
    name, cmd = peer()
    if name:
        if name != "passthrough_hp":
            notes.append("libfuse's passthrough_hp is not on this machine (Debian 12 does not package it); "
                         "the peer is libfuse 3.14's passthrough_ll example built from libfuse3-dev")
        else:
            notes.append(f"the peer is the passthrough_hp found on PATH ({cmd[0]}), run with its defaults "
                         "(writeback cache, splice, long cache timeouts)")
        src, mnt = fresh_fs("peer-src", notes), BASE / "peer-mnt"
        mnt.mkdir()
        args = cmd + ["-o", f"source={src}", str(mnt)] if name == "passthrough_ll" else cmd + [str(src), str(mnt)]
        procs.append(subprocess.Popen(args + (["--foreground"] if name == "passthrough_hp" else ["-f"])))
        mounts.append(mnt)
        for _ in range(100):
            if mounted(mnt):
                break
            time.sleep(0.05)
        dirs[name] = mnt
    else:
        notes.append("no libfuse passthrough peer available: skipped")
    # seerfs root/
    m, st = BASE / "seer-mnt", fresh_fs("seer-fs", notes) / "state"
    m.mkdir()
    subprocess.run([str(BUILD / "fs" / "seerfs"), str(m), "-o", f"state={st}"], check=True)
    mounts.append(m)
    runs = {c: [] for c in list(dirs) + ["seerfs root/"]}
    try:
        sb = m / "bench"
        sb.mkdir()
        (sb / "config.json").write_text("{}")
        assert (sb / "wait").read_text().startswith("running")
        dirs["seerfs root/"] = sb / "root" / "workspace"
        clients = list(dirs)
        for r in range(ROUNDS):
            order = clients[r % len(clients):] + clients[:r % len(clients)]
            for c in order:
                d = pathlib.Path(dirs[c]) / f"round{r}"
                d.mkdir()
                runs[c].append(workload(d))
                shutil.rmtree(d)
            print(f"round {r + 1} of {ROUNDS} done", file=sys.stderr)
        (sb / "ctl").write_text("terminate")
        (sb / "wait").read_text()
    finally:
        for mnt in mounts:
            subprocess.run(["fusermount3", "-u", str(mnt)])
        for p in procs:
            p.wait()
    results = {c: {k: statistics.median(x[k] for x in v) for k in v[0]} for c, v in runs.items() if v}
    notes.append(f"each figure is the median of {ROUNDS} rounds; the clients took turns, in an order rotating by round")
    rows = list(results["native"].keys())
    cols = list(results.keys())
    peer_name = name if name in results else None
    lines = ["| row | " + " | ".join(f"{c} (s)" for c in cols) + " | seerfs / native | seerfs / " +
             (peer_name or "peer") + " | seerfs / " + (peer_name or "peer") + ", each round |",
             "|---" * (len(cols) + 4) + "|"]
    for r in rows:
        v = [results[c][r] for c in cols]
        s = results["seerfs root/"][r]
        ratio_p = f"{s / results[peer_name][r]:.2f}x" if peer_name else "-"
        each = ", ".join(f"{a[r] / b[r]:.2f}" for a, b in zip(runs["seerfs root/"], runs[peer_name])) \
            if peer_name else "-"
        lines.append(f"| {r} | " + " | ".join(f"{x:.3f}" for x in v) +
                     f" | {s / results['native'][r]:.2f}x | {ratio_p} | {each} |")
    table = "\n".join(lines)
    print(table)
    for n in notes:
        print("note:", n)
    doc = REPO / "docs" / "bench-files.md"
    doc.write_text("# Files benchmark (tests/bench/bench_files.py)\n\n"
                   f"One run of {ROUNDS} rounds on {os.uname().nodename} ({os.cpu_count()} cores), {SIZE_MIB} MiB sequential file, "
                   f"{'as root, caches dropped for cold rows' if ROOT else 'not root: cold rows are warm'}. "
                   "Times in seconds; ratios are time over time (lower is better for seerfs).\n\n" + table + "\n\n" +
                   "".join(f"- {n}\n" for n in notes) + "\n![times](bench-files.png)\n")
    dat = BASE / "bench.dat"
    with open(dat, "w") as f:
        for i, r in enumerate(rows):
            f.write(f'"{r}" ' + " ".join(f"{results[c][r] / max(results['native'][r], 1e-9):.4f}" for c in cols) + "\n")
    if shutil.which("gnuplot"):
        plot = (f"set terminal png size 1100,500; set output '{REPO}/docs/bench-files.png'; set style data histograms; "
                "set style fill solid; set logscale y; set ylabel 'time / native'; set xtics rotate by -30; "
                "plot " + ", ".join(f"'{dat}' using {i + 2}:xtic(1) title '{c}'" for i, c in enumerate(cols)))
        subprocess.run(["gnuplot", "-e", plot], check=False)


if __name__ == "__main__":
    try:
        main()
    finally:
        for d in FRESH:
            subprocess.run(["umount", "-l", str(d)], capture_output=True)
        shutil.rmtree(BASE, ignore_errors=True)
