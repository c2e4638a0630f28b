# seerfs-kernel: the persistent Python of a notebook session (core/sessions/sessions.c)
#
# seerfs starts it as a job in the sandbox, with
#   SEERFS_KNAME  the kernel's directory name under $TMPDIR/.seerfs-sessions
# It listens on the unix socket "sock" there. Each cell is a separate job,
# the cell client (core/sessions/seer_cell.py), which connects, sends one JSON line
# {"seq": N, "code": TEXT} and relays the frames it gets back (one type
# byte, a 4-byte big-endian length, the payload): "o" stdout, "e" stderr,
# "x" the cell's exit status. The client sends "i" to interrupt the cell;
# its connection closing interrupts the cell as well.
#
# Cells run in the main thread, one at a time, in the order of their seq
# numbers (seerfs numbers them in the order of the writes); a number that
# never connects (its client was killed first) is skipped after a second.
#
# The kernel's own stdout is seerfs's record of what each cell produced
# beyond text (its result, error, figures), one JSON line per cell; fd 1
# and 2 of the process both go to the job's stderr, so that nothing a cell
# or its subprocesses print there can be taken for a record.
import ast
import base64
import io
import json
import linecache
import os
import signal
import socket
import struct
import sys
import threading
import time
import traceback
import warnings

RECORD = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
os.dup2(2, 1)
os.environ.setdefault("MPLBACKEND", "Agg")
warnings.filterwarnings("ignore", message=".*non-interactive.*")


class State:
    lock = threading.Lock()
    cond = threading.Condition(lock)
    waiting = {}
    next_seq = 1
    conn = None
    in_cell = False


ST = State()


def send(conn, kind, data):
    if conn is None:
        return
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    try:
        conn.sendall(kind + struct.pack(">I", len(data)) + data)
    except OSError:
        pass


class Stream(io.TextIOBase):
    def __init__(self, kind, fallback):
        self.kind = kind
        self.fallback = fallback
        self.count = 0

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not %s" % type(s).__name__)
        conn = ST.conn
        if conn is None:
            return self.fallback.write(s)
        b = s.encode("utf-8", "replace")
        self.count += len(b)
        send(conn, self.kind, b)
        return len(s)

    def flush(self):
        pass

    def isatty(self):
        return False

    @property
    def encoding(self):
        return "utf-8"


def on_sigint(signum, frame):
    if ST.in_cell:
        raise KeyboardInterrupt


def watch(conn, seq):
    """Reads the client's side: "i" or the connection closing interrupts
    the cell while it is this one."""
    while True:
        try:
            b = conn.recv(64)
        except OSError:
            b = b""
        with ST.lock:
            mine = ST.conn is conn and ST.in_cell
        if not b or b"i" in b:
            if mine:
                os.kill(os.getpid(), signal.SIGINT)
            if not b:
                return


def accept_loop(srv):
    while True:
        try:
            conn, _ = srv.accept()
        except OSError:
            time.sleep(0.01)
            continue
        threading.Thread(target=read_request, args=(conn,), daemon=True).start()


def read_request(conn):
    buf = b""
    try:
        while not buf.endswith(b"\n"):
            b = conn.recv(1 << 20)
            if not b:
                conn.close()
                return
            buf += b
        req = json.loads(buf.decode("utf-8"))
        seq = int(req["seq"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        send(conn, b"e", "seerfs kernel: bad request: %s\n" % e)
        send(conn, b"x", "1")
        conn.close()
        return
    with ST.lock:
        ST.waiting[seq] = (conn, req, time.monotonic())
        ST.cond.notify_all()


def next_request():
    with ST.lock:
        while True:
            if ST.next_seq in ST.waiting:
                seq = ST.next_seq
            elif ST.waiting:
                seq = min(ST.waiting)
                if seq > ST.next_seq and time.monotonic() - ST.waiting[seq][2] < 1.0:
                    ST.cond.wait(0.1)
                    continue
            else:
                ST.cond.wait(1.0)
                continue
            conn, req, _ = ST.waiting.pop(seq)
            ST.next_seq = max(ST.next_seq, seq + 1)
            ST.conn = conn
            return seq, conn, req


def gone(conn):
    """Whether the client of a queued cell went away (killed before its
    turn): its cell is not run."""
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def split_last_expr(code, filename):
    tree = ast.parse(code, filename, "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr) and not code.rstrip().endswith(";"):
        last = ast.Expression(tree.body.pop().value)
    body = compile(tree, filename, "exec")
    return body, (compile(last, filename, "eval") if last is not None else None)


def figures():
    plt = sys.modules.get("matplotlib.pyplot")
    out = []
    if plt is None:
        return out
    try:
        for num in plt.get_fignums():
            fig = plt.figure(num)
            b = io.BytesIO()
            fig.savefig(b, format="png", bbox_inches="tight")
            out.append({"image/png": base64.b64encode(b.getvalue()).decode("ascii"),
                        "text/plain": repr(fig)})
        plt.close("all")
    except Exception as e:
        sys.stderr.write("seerfs kernel: a figure could not be saved: %r\n" % e)
    return out


def run_cell(ns, seq, code):
    filename = "<cell %d>" % seq
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    result = None
    error = None
    try:
        ST.in_cell = True
        try:
            body, last = split_last_expr(code, filename)
            exec(body, ns)
            if last is not None:
                value = eval(last, ns)
                if value is not None:
                    ns["_"] = value
                    result = repr(value)
        finally:
            ST.in_cell = False
    except BaseException as e:
        ST.in_cell = False
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != filename:
            tb = tb.tb_next
        lines = traceback.format_exception(type(e), e, tb)
        error = {"ename": type(e).__name__, "evalue": str(e), "traceback": lines}
    return result, error


def serve(srv):
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    out = Stream(b"o", sys.__stdout__)
    err = Stream(b"e", sys.__stderr__)
    sys.stdout, sys.stderr = out, err
    threading.Thread(target=accept_loop, args=(srv,), daemon=True).start()
    while True:
        try:
            seq, conn, req = next_request()
            if gone(conn):
                with ST.lock:
                    ST.conn = None
                conn.close()
                continue
            threading.Thread(target=watch, args=(conn, seq), daemon=True).start()
            out.count = err.count = 0
            code = req.get("code", "")
            result, error = run_cell(ns, seq, code)
            sys.stdout.flush()
            rec = {"seq": seq, "stdout_len": out.count, "stderr_len": err.count,
                   "displays": figures(), "result": None, "error": None}
            if result is not None:
                rec["result"] = {"text/plain": result}
                send(conn, b"o", result + "\n")
            if error is not None:
                rec["error"] = error
                send(conn, b"e", "".join(error["traceback"]))
            RECORD.write(json.dumps(rec) + "\n")
            RECORD.flush()
            send(conn, b"x", "1" if error is not None else "0")
            with ST.lock:
                ST.conn = None
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        except KeyboardInterrupt:
            ST.in_cell = False


def main():
    base = os.path.join(os.environ.get("TMPDIR") or "/tmp", ".seerfs-sessions")
    kdir = os.path.join(base, os.environ["SEERFS_KNAME"])
    os.makedirs(kdir, mode=0o700, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(kdir)
    try:
        os.unlink("sock")
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind("sock")
    srv.listen(64)
    os.chdir(cwd)
    signal.signal(signal.SIGINT, on_sigint)
    # A cell's request passes from the thread that reads it to the main
    # thread: hand the GIL over sooner than the default 5 ms.
    sys.setswitchinterval(0.0005)
    RECORD.write(json.dumps({"kernel": os.environ["SEERFS_KNAME"], "pid": os.getpid()}) + "\n")
    serve(srv)


main()
