# seerfs-kernel: the persistent Python of a notebook session (core/sessions/sessions.c)
#
# seerfs starts it as a job in the sandbox and talks to it through that
# job's own stdin and stdout, so the same path serves every provider:
#
# stdin (seerfs -> kernel), one JSON object a line:
#   {"seq": N, "code": TEXT}   run TEXT as cell N (cells run in the order
#                              they arrive, one at a time, in the main thread)
#   {"interrupt": N}           KeyboardInterrupt in cell N if it is running
#   {"cancel": N}              cell N's job was killed: interrupt it if it
#                              runs, drop it if it waits
#
# stdout (kernel -> seerfs, the record channel), one JSON object a line:
#   {"s": N, "o": TEXT} / {"s": N, "e": TEXT}   what cell N wrote to
#                              stdout / stderr, in the order it wrote it
#   {"seq": N, "exit": 0|1, "stdout_len", "stderr_len", "displays",
#    "result", "error"}        cell N's end and its record (the notebook's
#                              result, error and figures)
#
# The record channel is a private descriptor: fd 1 and 2 of the process
# both go to the job's stderr and fd 0 reads /dev/null, so nothing a cell
# or its subprocesses print (to fd 1, sys.__stdout__, ...) can be taken for
# a record, and nothing a cell reads from stdin is taken from seerfs.
import ast
import base64
import io
import json
import linecache
import os
import signal
import sys
import threading
import traceback
import warnings

RECORD_FD = os.dup(1)
CTRL_FD = os.dup(0)
os.set_inheritable(RECORD_FD, False)
os.set_inheritable(CTRL_FD, False)
os.dup2(2, 1)
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)
os.environ.setdefault("MPLBACKEND", "Agg")
warnings.filterwarnings("ignore", message=".*non-interactive.*")


class State:
    lock = threading.Lock()
    cond = threading.Condition(lock)
    queue = []           # requests waiting, in arrival order
    cancelled = set()    # seqs cancelled before they arrived or ran
    eof = False
    running = 0          # the seq of the cell that runs, 0: none
    in_cell = False
    in_record = False    # the main thread is writing a record line
    deferred = False     # an interrupt came meanwhile
    wlock = threading.Lock()   # one record line at a time


ST = State()
MAIN = threading.main_thread().ident


def record(obj):
    """Writes one line on the record channel. A line longer than a pipe
    takes at once is written in pieces: an interrupt of the main thread
    waits until the line is whole, or the lines after it would be lost."""
    line = (json.dumps(obj) + "\n").encode("utf-8", "replace")
    main = threading.get_ident() == MAIN
    with ST.wlock:
        if main:
            ST.in_record = True
        try:
            view = memoryview(line)
            while view:
                try:
                    n = os.write(RECORD_FD, view)
                except InterruptedError:
                    continue
                view = view[n:]
        finally:
            if main:
                ST.in_record = False
    if main and ST.deferred:
        ST.deferred = False
        if ST.in_cell:
            raise KeyboardInterrupt


def frames(seq, kind, s):
    """Text of cell seq, in frames of at most 64 Ki characters: seerfs
    holds one line at a time, so a big print streams through it."""
    for i in range(0, len(s), 1 << 16):
        record({"s": seq, kind: s[i:i + (1 << 16)]})


class Stream(io.TextIOBase):
    """sys.stdout / sys.stderr while a cell runs: each write becomes a frame
    of that cell on the record channel; outside a cell (a thread a cell left
    behind) the text goes where fd 1 and 2 go."""

    def __init__(self, kind, fallback):
        self.kind = kind
        self.fallback = fallback
        self.count = 0

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not %s" % type(s).__name__)
        seq = ST.running
        if not seq:
            return self.fallback.write(s)
        self.count += len(s.encode("utf-8", "replace"))
        frames(seq, self.kind, s)
        return len(s)

    def flush(self):
        pass

    def isatty(self):
        return False

    @property
    def encoding(self):
        return "utf-8"


def on_sigint(signum, frame):
    if ST.in_record:
        ST.deferred = True
    elif ST.in_cell:
        raise KeyboardInterrupt


def interrupt(seq):
    """KeyboardInterrupt in the main thread if it runs cell seq; ST.lock held."""
    if ST.running == seq and ST.in_cell:
        signal.pthread_kill(MAIN, signal.SIGINT)
        return True
    return False


def reader():
    with os.fdopen(CTRL_FD, "rb", buffering=1 << 16) as f:
        for line in f:
            # A cell's code is whatever bytes were written: ones that are
            # not UTF-8 reach compile() as it sees them, and fail there.
            try:
                req = json.loads(line.decode("utf-8", "surrogateescape"))
            except ValueError:
                continue
            if not isinstance(req, dict):
                continue
            with ST.lock:
                if "code" in req and "seq" in req:
                    ST.queue.append(req)
                    ST.cond.notify_all()
                elif "interrupt" in req:
                    interrupt(req["interrupt"])
                elif "cancel" in req:
                    seq = req["cancel"]
                    if not interrupt(seq) and ST.running != seq:
                        ST.cancelled.add(seq)
    with ST.lock:
        ST.eof = True
        ST.cond.notify_all()


def next_request():
    """The next cell to run, or None when seerfs closed the kernel's stdin."""
    with ST.lock:
        while True:
            while ST.queue:
                req = ST.queue.pop(0)
                seq = req.get("seq")
                if seq in ST.cancelled:
                    ST.cancelled.discard(seq)
                    continue
                ST.running = seq
                return req
            if ST.eof:
                return None
            ST.cond.wait()


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


def serve():
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    out = Stream("o", sys.__stdout__)
    err = Stream("e", sys.__stderr__)
    sys.stdout, sys.stderr = out, err
    threading.Thread(target=reader, daemon=True).start()
    while True:
        try:
            req = next_request()
            if req is None:
                return
            seq = req["seq"]
            out.count = err.count = 0
            code = req.get("code", "")
            result, error = run_cell(ns, seq, code if isinstance(code, str) else "")
            rec = {"seq": seq, "stdout_len": out.count, "stderr_len": err.count,
                   "displays": figures(), "result": None, "error": None,
                   "exit": 1 if error is not None else 0}
            if result is not None:
                rec["result"] = {"text/plain": result}
                frames(seq, "o", result + "\n")
            if error is not None:
                rec["error"] = error
                frames(seq, "e", "".join(error["traceback"]))
            with ST.lock:
                ST.running = 0
            record(rec)
        except KeyboardInterrupt:
            ST.in_cell = False


def main():
    signal.signal(signal.SIGINT, on_sigint)
    # A request passes from the thread that reads it to the main thread:
    # hand the GIL over sooner than the default 5 ms.
    sys.setswitchinterval(0.0005)
    record({"kernel": os.environ.get("SEERFS_KNAME", ""), "pid": os.getpid()})
    serve()


main()
