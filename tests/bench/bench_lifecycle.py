#!/usr/bin/python3
"""bench_lifecycle.py - the foundation and exec benchmarks, as ratios measured
in one run on one machine (not a test: nothing here asserts a time).

  * time from the close of config.json to `running` for an empty config
    (median of 20), and the daemon's resident memory with 100 idle sandboxes;
  * the exec round trip of `true` through the file interface (median of 100)
    beside launching the same bubblewrap sandbox directly and `sh -c true`;
  * the throughput of a job writing 1 GiB to stdout, read through `output`
    by the exec read.

usage: tests/bench/bench_lifecycle.py [BUILD_DIR]   (default: build)"""
import os, pathlib, statistics, subprocess, sys, tempfile, time

build = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "build").resolve()
tmp = pathlib.Path(tempfile.mkdtemp(prefix="seerfs-bench-"))
tmp.chmod(0o711)   # as root the sandboxes (a subordinate id range) pass through it: docs/security.md
mnt, state = tmp / "m", tmp / "st"
mnt.mkdir()
subprocess.run([build / "fs/seerfs", mnt, "-o", f"state={state}"], check=True)


def settle(d):
    return (d / "wait").read_text().split("\n")[0]


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


try:
    pid = int(subprocess.run(["pgrep", "-n", "-f", f"seerfs {mnt}"], capture_output=True, text=True).stdout.split()[0])
    times = []
    for i in range(20):
        d = mnt / f"t{i}"
        d.mkdir()
        fd = os.open(d / "config.json", os.O_WRONLY | os.O_TRUNC)
        os.write(fd, b"{}")
        t0 = time.perf_counter()
        os.close(fd)
        assert settle(d) == "running"
        times.append(time.perf_counter() - t0)
    print(f"config close -> running, empty config: median {statistics.median(times)*1000:.1f} ms "
          f"(min {min(times)*1000:.1f}, max {max(times)*1000:.1f}, 20 runs)")
    base = rss_kib(pid)
    for i in range(20, 100):
        d = mnt / f"t{i}"
        d.mkdir()
        (d / "config.json").write_text("{}")
        settle(d)
    print(f"seerfs resident memory: {base} KiB with 20 sandboxes, {rss_kib(pid)} KiB with 100 idle running sandboxes")

    sb = mnt / "t0"
    rt = []
    for _ in range(100):
        t0 = time.perf_counter()
        fd = os.open(sb / "exec", os.O_RDWR)
        os.write(fd, b"true")
        while os.read(fd, 65536):
            pass
        os.close(fd)
        rt.append(time.perf_counter() - t0)
    sh = []
    for _ in range(100):
        t0 = time.perf_counter()
        subprocess.run(["sh", "-c", "true"])
        sh.append(time.perf_counter() - t0)
    bw = []
    for _ in range(100):
        t0 = time.perf_counter()
        subprocess.run(["bwrap", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
                        "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev", "--unshare-pid",
                        "--unshare-ipc", "--unshare-uts", "--unshare-user", "/bin/sh", "-c", "true"])
        bw.append(time.perf_counter() - t0)
    m_rt, m_sh, m_bw = (statistics.median(x) * 1000 for x in (rt, sh, bw))
    print(f"exec round trip of true: seerfs {m_rt:.2f} ms, bubblewrap launched directly {m_bw:.2f} ms, "
          f"sh -c true {m_sh:.2f} ms (medians of 100; seerfs/bwrap = {m_rt/m_bw:.2f}x)")

    big = mnt / "big"
    big.mkdir()
    (big / "config.json").write_text('{"output_cap": 2147483648}')
    settle(big)

    def timed(fn):
        os.sync()
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def read_gib(fd, cmd=None):
        """Writes cmd (the exec transaction), then reads fd to its end with
        one buffer for all reads, as cat does: a fresh 1 MiB object per
        read would time Python's page faults."""
        if cmd:
            os.write(fd, cmd)
        buf, n = bytearray(1 << 20), 0
        while True:
            k = os.readv(fd, [buf])
            if not k:
                break
            n += k
        os.close(fd)
        assert n == 1 << 30, n

    # Output is kept on disk, so the fair native figure is the same bytes
    # written into a file on the state directory's disk. Each round starts
    # from a synced disk and removes what it wrote: otherwise every round
    # pays the writeback of the ones before it, which says more about the
    # disk than about seerfs.
    native_file = state / "bench-native"
    ex, again, nat, pipe = [], [], [], []
    for r in range(3):
        ex.append(timed(lambda: read_gib(os.open(big / "exec", os.O_RDWR), b"head -c 1073741824 /dev/zero")))
        job = big / "jobs" / str(r + 1)
        again.append(timed(lambda: read_gib(os.open(job / "output", os.O_RDONLY))))
        subprocess.run(["rm", "-r", job], check=True)
        nat.append(timed(lambda: subprocess.run(f"head -c 1073741824 /dev/zero | cat > {native_file}", shell=True)))
        native_file.unlink()
        pipe.append(timed(lambda: subprocess.run("head -c 1073741824 /dev/zero | cat > /dev/null", shell=True)))
    gbs = lambda x: (1 << 30) / statistics.median(x) / 1e9
    print(f"1 GiB job output read through exec: {gbs(ex):.2f} GB/s; the same bytes piped into a file on "
          f"the state disk: {gbs(nat):.2f} GB/s; a plain pipe on the host: {gbs(pipe):.2f} GB/s "
          f"(medians of 3 alternating rounds; seerfs/file = {gbs(ex)/gbs(nat):.2f}x); "
          f"the finished job's jobs/N/output read again: {gbs(again):.2f} GB/s")
finally:
    for d in mnt.iterdir():
        if d.is_dir() and d.name != "snapshots":
            try:
                (d / "ctl").write_text("terminate")
            except OSError:
                pass
    subprocess.run(["fusermount3", "-u", mnt])
