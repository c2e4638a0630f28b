# seerfs-cell: one cell of a notebook session, as a job (core/sessions/sessions.c)
#
# Runs SEERFS_CODE as cell SEERFS_SEQ in the kernel SEERFS_KNAME (see
# core/sessions/seer_kernel.py): its stdout and stderr become this job's, its exit
# status this job's. SIGINT asks the kernel to interrupt the cell; this
# process being killed does as well (the connection closes). When the
# kernel dies under the cell, the job ends with the kernel's signal.
import os
import signal
import socket
import struct
import sys
import time

KNAME = os.environ["SEERFS_KNAME"]
SESSION = os.environ.get("SEERFS_SESSION", "")
KDIR = os.path.join(os.environ.get("TMPDIR") or "/tmp", ".seerfs-sessions", KNAME)


def died_status():
    try:
        with open(os.path.join(KDIR, "died")) as f:
            return int(f.read().strip() or "1")
    except (OSError, ValueError):
        return None


def connect():
    """Connects to the kernel, which may still be starting; relative to
    its directory, since a socket's path is limited to 108 bytes."""
    deadline = time.monotonic() + 120
    delay = 0.001
    while True:
        if os.path.isdir(KDIR):
            os.chdir(KDIR)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect("sock")
                return s
            except OSError:
                s.close()
        st = died_status()
        if st is not None:
            fail(st, "before it could run this cell")
        if time.monotonic() > deadline:
            sys.stderr.write("seerfs: the kernel of session %s did not start in 120 s; "
                             "see its job (jobs/) for its output\n" % SESSION)
            sys.exit(1)
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def fail(st, when):
    if st > 128:
        sys.stderr.write("seerfs: the kernel of session %s was killed by signal %d %s; "
                         "the next cell starts a fresh one (state lost)\n" % (SESSION, st - 128, when))
        sys.stderr.flush()
        sig = st - 128
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), sig)
        time.sleep(1)
    sys.stderr.write("seerfs: the kernel of session %s exited with status %d %s; "
                     "the next cell starts a fresh one\n" % (SESSION, st, when))
    sys.exit(1)


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        try:
            c = s.recv(n - len(b))
        except InterruptedError:
            continue
        if not c:
            return None
        b += c
    return b


def main():
    code = os.environ.pop("SEERFS_CODE", "")
    note = os.environ.get("SEERFS_NOTE")
    if note:
        sys.stderr.write(note + "\n")
        sys.stderr.flush()
    s = connect()
    signal.signal(signal.SIGINT, lambda n, f: s.send(b"i"))
    import json
    s.sendall(json.dumps({"seq": int(os.environ["SEERFS_SEQ"]), "code": code}).encode() + b"\n")
    out = sys.stdout.buffer
    err = sys.stderr.buffer
    while True:
        h = recv_exact(s, 5)
        if h is None:
            break
        n = struct.unpack(">I", h[1:])[0]
        data = recv_exact(s, n)
        if data is None:
            break
        kind = h[:1]
        if kind == b"o":
            out.write(data)
            out.flush()
        elif kind == b"e":
            err.write(data)
            err.flush()
        elif kind == b"x":
            sys.exit(int(data or b"1"))
    for _ in range(100):
        st = died_status()
        if st is not None:
            fail(st, "while it ran this cell")
        time.sleep(0.01)
    sys.stderr.write("seerfs: the kernel of session %s went away (restarted or ended) while it ran this cell\n"
                     % SESSION)
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


main()
