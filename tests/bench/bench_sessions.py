#!/usr/bin/env python3
"""bench_sessions.py - round trips of a notebook cell (`1+1` through
sessions/S/exec) and of a trivial served call (functions/SET/add), against
a seerfs mounted here (local provider) or on an ssh provider, with the
exec round trip of `true` (a job with a process: NAME/exec) measured in
the same run as the baseline.

usage: bench_sessions.py MOUNT SANDBOX [N]

The sandbox must be running. The script makes sessions/bench, serves a
two-line interface file as `bench` (written under root/workspace), runs N
(default 200) of each after a warm-up, the three kinds taking turns round
by round (so that load from elsewhere weighs on each alike), and prints
median and p90 in ms.
Goals (not asserted): under 5 ms local, under 15 ms ssh.
"""
import os
import pathlib
import statistics
import sys
import time


def transact(path, data):
    fd = os.open(path, os.O_RDWR)
    try:
        os.write(fd, data)
        out = b""
        while b := os.read(fd, 65536):
            out += b
        return out
    finally:
        os.close(fd)


def measure(fns, n):
    """Times each of fns n times, interleaved; returns (median, p90) each."""
    for fn in fns:
        for _ in range(5):
            fn()
    ts = [[] for _ in fns]
    for _ in range(n):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            ts[i].append((time.perf_counter() - t) * 1000)
    out = []
    for v in ts:
        v.sort()
        out.append((statistics.median(v), v[int(len(v) * 0.9)]))
    return out


def main():
    mount, name = pathlib.Path(sys.argv[1]), sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    sb = mount / name
    sess = sb / "sessions" / "bench"
    if not sess.exists():
        sess.mkdir()
    (sb / "root" / "workspace" / "bench_iface.py").write_text("@expose\ndef add(a: int, b: int) -> int:\n"
                                                              "    return a + b\n")
    ws = transact(sb / "exec", b"pwd").decode().strip()
    with open(sb / "ctl", "w") as f:
        f.write(f"serve {ws}/bench_iface.py as bench\n")
    assert transact(sess / "exec", b"1+1") == b"2\n"
    cell, call, true = measure([lambda: transact(sess / "exec", b"1+1"),
                                lambda: transact(sb / "functions" / "bench" / "add", b"[1, 1]"),
                                lambda: transact(sb / "exec", b"true")], n)
    print(f"cell 1+1 round trip:      median {cell[0]:.2f} ms, p90 {cell[1]:.2f} ms  (n={n})")
    print(f"served call round trip:   median {call[0]:.2f} ms, p90 {call[1]:.2f} ms  (n={n})")
    print(f"exec true (baseline):     median {true[0]:.2f} ms, p90 {true[1]:.2f} ms  (n={n})")
    os.rmdir(sess)


if __name__ == "__main__":
    main()
