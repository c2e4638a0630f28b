# seerfs-serve: the persistent Python that serves an interface file's functions (core/sessions/functions.c)
#
# seerfs starts it as a job in the sandbox with SEERFS_SERVE_FILE (the
# interface file), SEERFS_SERVE_NAME and SEERFS_MODELS (a JSON object: model
# id -> path in the sandbox; each is also in MODEL_<ID>_PATH). The file runs
# once, with `expose` and `get_model_path` available (as builtins, and as the
# module `seer`), so models load once.
#
# The job's stdin and stdout are the protocol, one JSON object a line:
#   stdout, first:  {"ready": true, "functions": [{name, signature, doc, schema}]}
#                   or {"ready": false, "error": ..., "traceback": ...} (then exit 1)
#   stdin:          {"id": N, "fn": NAME, "args": [...], "kwargs": {...}}
#                   {"cancel": N}   (the caller went away)
#   stdout:         {"id": N, "ok": true, "result": ...}
#                   {"id": N, "ok": false, "error": ..., "traceback": ...}
# Calls run one at a time in the main thread, in the order they arrive: a
# model on a GPU serves one call at a time, and the functions need no locks.
# A cancelled call that runs is interrupted (KeyboardInterrupt); a queued
# one is dropped. What the functions print goes to the job's stderr.
import builtins
import collections
import inspect
import json
import os
import signal
import sys
import threading
import traceback
import types
import typing

OUT = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
os.dup2(2, 1)
sys.stdout = sys.stderr
OUT_LOCK = threading.Lock()
EXPOSED = collections.OrderedDict()


def emit(obj):
    with OUT_LOCK:
        OUT.write(json.dumps(obj, default=to_json) + "\n")
        OUT.flush()


def to_json(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError("%s is not JSON-serialisable; return lists, dicts, numbers and strings "
                    "(tensors and arrays via .tolist())" % type(o).__name__)


def expose(fn=None, *, name=None):
    """Marks a function of the interface file as callable from outside."""
    def mark(f):
        EXPOSED[name or f.__name__] = f
        return f
    return mark(fn) if fn is not None else mark


MODELS = json.loads(os.environ.get("SEERFS_MODELS") or "{}")


def env_name(model_id):
    return "MODEL_" + "".join(c if c.isalnum() else "_" for c in model_id).upper() + "_PATH"


def get_model_path(model_id):
    """The path of a model of the sandbox's config, by its id."""
    if model_id in MODELS:
        return MODELS[model_id]
    p = os.environ.get(env_name(model_id))
    if p:
        return p
    raise KeyError("model %r is not in this sandbox's config (models: %s)" % (model_id, ", ".join(MODELS) or "none"))


TYPES = {int: "integer", float: "number", str: "string", bool: "boolean", list: "array", dict: "object",
         tuple: "array", bytes: "string"}


def schema_of(t):
    if t is inspect.Parameter.empty or t is typing.Any:
        return {}
    if isinstance(t, str):
        return {"description": t}
    if t is type(None):
        return {"type": "null"}
    if t in TYPES:
        return {"type": TYPES[t]}
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is getattr(types, "UnionType")):
        return {"anyOf": [schema_of(a) for a in args]}
    if origin in (list, tuple, collections.abc.Sequence):
        s = {"type": "array"}
        if args and origin is list:
            s["items"] = schema_of(args[0])
        return s
    if origin is dict:
        return {"type": "object"}
    return {}


def describe(name, fn):
    sig = inspect.signature(fn)
    props, required = {}, []
    hints = {}
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        pass
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        s = schema_of(hints.get(p.name, p.annotation))
        if p.default is not p.empty:
            try:
                json.dumps(p.default)
                s["default"] = p.default
            except (TypeError, ValueError):
                pass
        else:
            required.append(p.name)
        props[p.name] = s
    schema = {"type": "object", "properties": props, "required": required}
    d = {"name": name, "signature": name + str(sig), "doc": inspect.getdoc(fn) or "", "schema": schema}
    if "return" in hints:
        d["returns"] = schema_of(hints["return"])
    return d


class Calls:
    lock = threading.Lock()
    cond = threading.Condition(lock)
    queue = collections.deque()
    cancelled = set()
    current = None


C = Calls()


def on_sigint(signum, frame):
    if C.current is not None:
        raise KeyboardInterrupt


def reader():
    for line in sys.stdin:
        try:
            req = json.loads(line)
        except ValueError:
            continue
        with C.lock:
            if "cancel" in req:
                cid = req["cancel"]
                if C.current == cid:
                    os.kill(os.getpid(), signal.SIGINT)
                else:
                    C.cancelled.add(cid)
            else:
                C.queue.append(req)
                C.cond.notify()
    os._exit(0)


def call(req):
    cid = req.get("id")
    name = req.get("fn")
    fn = EXPOSED.get(name)
    if fn is None:
        return {"id": cid, "ok": False, "error": "no function %r; the functions are: %s" % (name, ", ".join(EXPOSED)),
                "traceback": ""}
    args = req.get("args") or []
    kwargs = req.get("kwargs") or {}
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as e:
        return {"id": cid, "ok": False, "error": "wrong arguments for %s%s: %s" % (name, inspect.signature(fn), e),
                "traceback": ""}
    try:
        try:
            result = fn(*args, **kwargs)
        finally:
            C.current = None
        text = json.dumps(result, default=to_json)
        return {"id": cid, "ok": True, "result": json.loads(text)}
    except BaseException as e:
        C.current = None
        tb = e.__traceback__
        tb = tb.tb_next if tb is not None and tb.tb_next is not None else tb   # not this file's own frame
        return {"id": cid, "ok": False, "error": "%s: %s" % (type(e).__name__, e),
                "traceback": "".join(traceback.format_exception(type(e), e, tb))}


def main():
    path = os.environ["SEERFS_SERVE_FILE"]
    for k, v in MODELS.items():
        os.environ.setdefault(env_name(k), v)
    mod = types.ModuleType("seer")
    mod.expose = expose
    mod.get_model_path = get_model_path
    sys.modules["seer"] = mod
    builtins.expose = expose
    builtins.get_model_path = get_model_path
    d = os.path.dirname(path)
    if d not in sys.path:
        sys.path.insert(0, d)
    g = {"__name__": "interface", "__file__": path, "expose": expose, "get_model_path": get_model_path}
    try:
        with open(path, encoding="utf-8") as f:
            code = f.read()
        exec(compile(code, path, "exec"), g)
        if not EXPOSED:
            raise RuntimeError("%s exposes no function: decorate the ones to serve with @expose" % path)
        funcs = [describe(n, f) for n, f in EXPOSED.items()]
    except BaseException as e:
        emit({"ready": False, "error": "%s: %s" % (type(e).__name__, e),
              "traceback": "".join(traceback.format_exception(type(e), e, e.__traceback__))})
        sys.exit(1)
    signal.signal(signal.SIGINT, on_sigint)
    emit({"ready": True, "functions": funcs})
    threading.Thread(target=reader, daemon=True).start()
    while True:
        try:
            with C.lock:
                while not C.queue:
                    C.cond.wait()
                req = C.queue.popleft()
                if req.get("id") in C.cancelled:
                    C.cancelled.discard(req.get("id"))
                    continue
                C.current = req.get("id")
            emit(call(req))
        except KeyboardInterrupt:
            C.current = None


main()
