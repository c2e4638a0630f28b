#!/usr/bin/python3
"""sftp_requests.py - which SFTP requests seerfs sends for each row of
bench_remote.py: the breakdown behind its round-trip counts (issue #19).

    tests/bench/sftp_requests.py [--rows create,tarx,commit,gsc,gsw,find,grep] [--build build]

Same setup as bench_remote.py (its classes are reused) with no delay and
seerfs only.  Around each row, strace (as root) attaches to the sandbox's
own sftp-server (the one serving root/, inside its bubblewrap) and dumps
what that server reads on its stdin; the SFTP packets in that stream are
counted by type.  The data rows (write, read 16 MiB) are left out: their
dumps would be 16 MiB of hex.  Counts are requests, not round trips:
requests sent together (OPEN+LSTAT of a create) are one round trip.

Not a test: it asserts nothing.  Needs strace.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_remote as br  # noqa: E402

TYPES = {3: "OPEN", 4: "CLOSE", 5: "READ", 6: "WRITE", 7: "LSTAT", 8: "FSTAT", 9: "SETSTAT", 10: "FSETSTAT",
         11: "OPENDIR", 12: "READDIR", 13: "REMOVE", 14: "MKDIR", 15: "RMDIR", 16: "REALPATH", 17: "STAT",
         18: "RENAME", 19: "READLINK", 20: "SYMLINK", 200: "EXTENDED"}
HEX = re.compile(r"^ \| [0-9a-f]{5}  ")  # then 16 bytes in hex (49 columns), then text


def descendants(pid):
    kids = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open(f"/proc/{e}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            kids.setdefault(ppid, []).append(int(e))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def under_bwrap(pid):
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read()
        except OSError:
            return False
        if st.split(" (", 1)[1].rsplit(")", 1)[0] == "bwrap":
            return True
        pid = int(st.rsplit(")", 1)[1].split()[1])
    return False


def server_pid(sshd):
    for p in descendants(sshd.proc.pid):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0")[0]
        except OSError:
            continue
        # the one inside the sandbox's bubblewrap (seerfs may also hold
        # the host's sftp subsystem open for its own work)
        if argv0.endswith(b"/sftp-server") and under_bwrap(p):
            return p
    raise RuntimeError("no sftp-server below the test sshd")


def count(dump):
    """SFTP request types in strace's hex dump of the server's stdin."""
    data = bytearray()
    with open(dump) as f:
        for line in f:
            if HEX.match(line):
                data += bytes.fromhex(line[10:59].replace(" ", ""))
    n, i = {}, 0
    while i + 5 <= len(data):
        ln = int.from_bytes(data[i:i + 4], "big")
        t = data[i + 4]
        if t == 200 and i + 13 <= len(data):  # name the extension
            elen = int.from_bytes(data[i + 9:i + 13], "big")
            name = "EXT " + data[i + 13:i + 13 + elen].decode(errors="replace").split("@")[0]
        else:
            name = TYPES.get(t, str(t))
        n[name] = n.get(name, 0) + 1
        i += 4 + ln
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="create,tarx,commit,gsc,gsw,find,grep")
    ap.add_argument("--build", default=str(br.REPO / "build"))
    a = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("strace"):
        sys.exit("sftp_requests.py: run as root, with strace installed")
    want = a.rows.split(",")
    base = tempfile.mkdtemp(prefix="seerfs-sftp-requests-", dir="/var/tmp")
    os.chmod(base, 0o755)
    user = "seer" if subprocess.run(["id", "-u", "seer"], capture_output=True).returncode == 0 else None
    br.GIT_ENV = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b",
                      GIT_COMMITTER_EMAIL="b@b", HOME=base)
    tree = os.path.join(base, "tree")
    br.make_tree(tree)
    tarball = os.path.join(base, "tree.tar")
    subprocess.run(["tar", "cf", tarball, "-C", tree, "proj"], check=True)
    sshd = proxy = sf = None
    table = []
    try:
        sshd = br.Sshd(base, user)
        proxy = br.Proxy(base, "seerfs", sshd.port, 0)
        kh = os.path.join(base, "known_hosts")
        sshd.known_hosts(kh, [proxy.port])
        work = os.path.join(base, "work")
        os.mkdir(work)
        if user:
            shutil.chown(work, user)
        for d in ("mnt", "state"):
            os.mkdir(os.path.join(base, d))
        sf = br.Seerfs(proxy, sshd, kh, work, os.path.join(base, "mnt"), os.path.join(base, "state"),
                       os.path.join(a.build, "fs/seerfs"))
        d = os.path.join(sf.dir, "r0")
        os.mkdir(d)
        for row in br.ROWS:
            if row in ("write", "read"):
                continue
            br.prepare(row, d)
            os.sync()
            if row in br.COLD:
                sf.drop()
            pid = server_pid(sshd)  # a job's start may not restart it, but look again
            dump = os.path.join(base, f"strace-{row}")
            st = subprocess.Popen(["strace", "-q", "-p", str(pid), "-e", "trace=read", "-e", "read=0", "-o", dump],
                                  )
            time.sleep(0.5)  # attached
            argv, cwd = br.row_command(row, d, tarball)
            subprocess.run(argv, cwd=cwd, env=br.GIT_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)  # CLOSEs not waited for
            st.send_signal(signal.SIGINT)
            st.wait()
            if row in want:
                table.append((row, count(dump)))
                if not sum(table[-1][1].values()):
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
                    with open(dump) as f:
                        head = f.read(600)
                    br.log(f"{row}: no requests seen from pid {pid} ({cmd}): {head}")
    finally:
        if sf:
            sf.stop()
        if proxy:
            proxy.stop()
        if sshd:
            sshd.stop()
        shutil.rmtree(base, ignore_errors=True)
    print("| row | requests | by type |")
    print("|---|---|---|")
    for row, n in table:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(n.items(), key=lambda kv: -kv[1]))
        print(f"| {br.LABELS[row]} | {sum(n.values())} | {parts} |")


if __name__ == "__main__":
    main()
