#!/usr/bin/env python3
"""hf_server.py - a small Hugging Face hub look-alike for testing core/lib/hf.c.

A real, threaded HTTP/1.1 server (stdlib only) that serves hub-shaped
metadata and files for a couple of generated models:

  GET /api/models/{org}/{name}/revision/{rev}     {"sha", "siblings": [...]}
  GET /api/models/{org}/{name}/tree/{rev}?recursive=true
                                   paginated like the hub (Link: rel="next")
  GET /{org}/{name}/resolve/{rev}/{path}          LFS files: 302 to /blobs/...;
                                                  other files: served directly
  GET /blobs/{sha256}?path=...                    the "CDN", Range aware

Models (see build_repos):
  seer/tiny-model   public: .gitattributes, config.json, a ~3 MB LFS
                    model.safetensors, nested tokenizer/vocab.txt, a path with a
                    space, an empty file.  Revisions: main, v1.0, refs/pr/1, sha.
  seer/gated-model  needs "Authorization: Bearer <--token>": 401 without,
                    403 with a wrong one (X-Error-Code: GatedRepo).
  anything else     404, X-Error-Code: RepoNotFound.

Test controls (JSON):
  GET  /_stats   request counters and a log of file requests
  POST /_reset   zero the counters, restore the default config
  POST /_config  change the config, e.g. {"cut_after": 1000000, "cut_times": 1}
      cut_after, cut_times, cut_path   close the connection after N body bytes
                                        (times: how many responses; -1 = all)
      corrupt_path, corrupt_times      flip one byte of that file's body
      ignore_range                     answer Range requests with a full 200
      rate                             throttle file bodies to N bytes/s
      tree_page_size                   entries per tree page (default 2)
      fail_path, fail_status, fail_times   answer that file with an HTTP error

Run: python3 hf_server.py --port 0 --token SECRET   (prints "PORT <n>")
"""

import argparse
import hashlib
import json
import random
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_CONFIG = {
    "cut_after": None,
    "cut_times": 0,
    "cut_path": None,        # None: every LFS file
    "corrupt_path": None,
    "corrupt_times": 0,
    "ignore_range": False,
    "rate": 0,
    "tree_page_size": 2,
    "fail_path": None,
    "fail_status": 500,
    "fail_times": 0,
}


def git_oid(data: bytes) -> str:
    """git's blob id: what the hub calls "oid" for a non-LFS file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    def __init__(self, rid, files, lfs, gated=False, extra_revs=()):
        self.id = rid
        self.files = dict(files)
        self.lfs = set(lfs)
        self.gated = gated
        self.entries = {}
        listing = hashlib.sha1()
        for path in sorted(self.files):
            data = self.files[path]
            ent = {"path": path, "size": len(data)}
            if path in self.lfs:
                sha = hashlib.sha256(data).hexdigest()
                pointer = (f"version https://git-lfs.github.com/spec/v1\n"
                           f"oid sha256:{sha}\nsize {len(data)}\n").encode()
                ent.update(oid=git_oid(pointer), sha256=sha, blob=sha)
            else:
                ent.update(oid=git_oid(data), sha256=None, blob=git_oid(data))
            self.entries[path] = ent
            listing.update(f"{path}\0{ent['blob']}\0".encode())
        self.commit = listing.hexdigest()
        self.revisions = {"main": self.commit, self.commit: self.commit}
        for r in extra_revs:
            self.revisions[r] = self.commit
        self.by_blob = {e["blob"]: p for p, e in self.entries.items()}

    def tree(self):
        """Recursive tree listing as the hub returns it (dirs included)."""
        out, dirs = [], set()
        for path in sorted(self.files):
            parts = path.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    out.append({"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(),
                                "size": 0, "path": d})
            e = self.entries[path]
            item = {"type": "file", "oid": e["oid"], "size": e["size"], "path": path}
            if e["sha256"]:
                item["lfs"] = {"oid": e["sha256"], "size": e["size"], "pointerSize": 134}
            out.append(item)
        return out


def build_repos(lfs_size=3 * 1024 * 1024 + 12345):
    """Deterministic models; tests import this to know the expected bytes."""
    rnd = random.Random(20240601)
    tiny = {
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
        "config.json": json.dumps({"architectures": ["TinyForCausalLM"], "hidden_size": 64,
                                   "num_layers": 2, "vocab_size": 128}, indent=2).encode(),
        "model.safetensors": rnd.randbytes(lfs_size),
        "tokenizer/vocab.txt": "\n".join(f"tok{i}" for i in range(128)).encode(),
        "sub/dir/notes with space.md": b"# notes\nA path with a space, two levels deep.\n",
        "empty.txt": b"",
    }
    gated = {
        ".gitattributes": b"*.bin filter=lfs diff=lfs merge=lfs -text\n",
        "config.json": b'{"gated": true}\n',
        "weights.bin": rnd.randbytes(512 * 1024 + 7),
    }
    repos = [
        Repo("seer/tiny-model", tiny, {"model.safetensors"}, extra_revs=("v1.0", "refs/pr/1")),
        Repo("seer/gated-model", gated, {"weights.bin"}, gated=True),
    ]
    return {r.id: r for r in repos}


class State:
    def __init__(self, repos, token):
        self.repos = repos
        self.token = token
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.config = dict(DEFAULT_CONFIG)
            self.stats = {
                "requests": 0,
                "api_revision": 0,
                "api_tree": 0,
                "resolve": 0,
                "blob": 0,
                "redirects": 0,
                "file_bodies": 0,          # 200/206 responses carrying file bytes
                "file_bytes": 0,
                "bodies_by_path": {},
                "range_requests": [],      # [{"path", "range"}]
                "auth_requests": 0,        # requests that carried Authorization
                "cuts": 0,
                "corruptions": 0,
                "log": [],                 # [{"kind", "path", "range", "status"}]
            }

    def bump(self, key, n=1):
        with self.lock:
            self.stats[key] += n

    def take(self, times_key):
        """Consumes one use of a counted fault; -1 means forever."""
        with self.lock:
            t = self.config[times_key]
            if t == 0:
                return False
            if t > 0:
                self.config[times_key] = t - 1
            return True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-hub/1.0"

    def log_message(self, fmt, *args):  # keep test output clean
        pass

    @property
    def st(self) -> State:
        return self.server.state

    # -- helpers --------------------------------------------------------
    def send_json(self, obj, status=200, headers=None):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def hub_error(self, status, code, message):
        self.send_json({"error": message}, status,
                       {"X-Error-Code": code, "X-Error-Message": message})

    def authorized(self, repo):
        """Gate check; sends the error and returns False when refused."""
        if not repo.gated:
            return True
        auth = self.headers.get("Authorization")
        if not auth:
            self.hub_error(401, "GatedRepo",
                           f"Access to model {repo.id} is restricted. You must be authenticated to access it.")
            return False
        if auth != f"Bearer {self.st.token}":
            self.hub_error(403, "GatedRepo",
                           f"Access to model {repo.id} is restricted and you are not in the authorized list.")
            return False
        return True

    def find_repo(self, org, name):
        repo = self.st.repos.get(f"{org}/{name}")
        if repo is None:
            self.hub_error(404, "RepoNotFound", "Repository not found")
        return repo

    def find_rev(self, repo, rev):
        commit = repo.revisions.get(rev)
        if commit is None:
            self.hub_error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return commit

    # -- dispatch -------------------------------------------------------
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/_reset":
            self.st.reset()
            return self.send_json({"ok": True})
        if self.path == "/_config":
            update = json.loads(body or b"{}")
            with self.st.lock:
                unknown = set(update) - set(DEFAULT_CONFIG)
                if unknown:
                    return self.send_json({"error": f"unknown keys {sorted(unknown)}"}, 400)
                self.st.config.update(update)
                cfg = dict(self.st.config)
            return self.send_json(cfg)
        self.send_json({"error": "not found"}, 404)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        # Split before unquoting so "refs%2Fpr%2F1" stays one segment.
        segs = [urllib.parse.unquote(s) for s in url.path.split("/")[1:]]
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/_stats":
            with self.st.lock:
                snap = json.loads(json.dumps(self.st.stats))
            return self.send_json(snap)
        self.st.bump("requests")
        if self.headers.get("Authorization"):
            self.st.bump("auth_requests")
        try:
            if len(segs) >= 6 and segs[0] == "api" and segs[1] == "models" and segs[4] == "revision":
                return self.api_revision(segs[2], segs[3], "/".join(segs[5:]))
            if len(segs) >= 6 and segs[0] == "api" and segs[1] == "models" and segs[4] == "tree":
                return self.api_tree(segs[2], segs[3], segs[5], query)
            if len(segs) >= 5 and segs[2] == "resolve":
                return self.resolve(segs[0], segs[1], segs[3], "/".join(segs[4:]))
            if len(segs) == 2 and segs[0] == "blobs":
                return self.blob(segs[1])
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        self.send_json({"error": "no such route"}, 404)

    # -- hub API --------------------------------------------------------
    def api_revision(self, org, name, rev):
        self.st.bump("api_revision")
        repo = self.find_repo(org, name)
        if repo is None or not self.authorized(repo):
            return
        commit = self.find_rev(repo, rev)
        if commit is None:
            return
        self.send_json({
            "_id": hashlib.md5(repo.id.encode()).hexdigest()[:24],
            "id": repo.id, "modelId": repo.id, "sha": commit, "private": False,
            "gated": "manual" if repo.gated else False,
            "siblings": [{"rfilename": p} for p in repo.files],
        })

    def api_tree(self, org, name, rev, query):
        self.st.bump("api_tree")
        repo = self.find_repo(org, name)
        if repo is None or not self.authorized(repo):
            return
        if self.find_rev(repo, rev) is None:
            return
        items = repo.tree()
        if query.get("recursive", ["false"])[0].lower() != "true":
            items = [i for i in items if "/" not in i["path"]]
        page = max(1, int(self.st.config["tree_page_size"]))
        start = int(query.get("cursor", ["0"])[0])
        headers = {}
        if start + page < len(items):
            nq = dict((k, v[0]) for k, v in query.items())
            nq["cursor"] = str(start + page)
            host = self.headers.get("Host")
            headers["Link"] = (f"<http://{host}/api/models/{org}/{name}/tree/{urllib.parse.quote(rev, safe='')}"
                               f"?{urllib.parse.urlencode(nq)}>; rel=\"next\"")
        self.send_json(items[start:start + page], headers=headers)

    def resolve(self, org, name, rev, path):
        self.st.bump("resolve")
        repo = self.find_repo(org, name)
        if repo is None or not self.authorized(repo):
            return
        commit = self.find_rev(repo, rev)
        if commit is None:
            return
        ent = repo.entries.get(path)
        if ent is None:
            return self.hub_error(404, "EntryNotFound", f"{path} does not exist on \"{rev}\"")
        cfg = self.st.config
        if cfg["fail_path"] == path and self.st.take("fail_times"):
            return self.send_json({"error": "injected failure"}, int(cfg["fail_status"]))
        common = {"X-Repo-Commit": commit, "X-Linked-Size": str(ent["size"]),
                  "ETag": f"\"{ent['oid']}\""}
        if ent["sha256"]:
            # LFS: the hub redirects to its CDN with a signed URL.
            self.st.bump("redirects")
            loc = f"/blobs/{ent['sha256']}?path={urllib.parse.quote(repo.id + ':' + path)}&sig=x"
            self.send_response(302)
            self.send_header("Location", loc)
            self.send_header("X-Linked-Etag", f"\"{ent['sha256']}\"")
            for k, v in common.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_file(repo, path, common)

    def blob(self, sha):
        self.st.bump("blob")
        for repo in self.st.repos.values():
            path = repo.by_blob.get(sha)
            if path and repo.entries[path]["sha256"]:
                return self.send_file(repo, path, {"ETag": f"\"{sha}\""})
        self.send_json({"error": "no such blob"}, 404)

    # -- file bodies: Range, throttling, faults -------------------------
    def send_file(self, repo, path, headers):
        data = repo.files[path]
        size = len(data)
        cfg = self.st.config
        rng = self.headers.get("Range")
        start, end, status = 0, size - 1, 200
        with self.st.lock:
            self.st.stats["log"].append({"kind": "file", "path": path, "range": rng})
            if rng:
                self.st.stats["range_requests"].append({"path": path, "range": rng})
        if rng and not cfg["ignore_range"]:
            try:
                unit, spec = rng.split("=", 1)
                a, b = spec.split("-", 1)
                assert unit.strip() == "bytes"
                start = int(a)
                end = min(int(b), size - 1) if b else size - 1
            except (ValueError, AssertionError):
                return self.send_json({"error": "bad range"}, 400)
            if start >= size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = bytearray(data[start:end + 1])
        if cfg["corrupt_path"] == path and self.st.take("corrupt_times"):
            pos = size // 2 - start
            if 0 <= pos < len(body):
                body[pos] ^= 0x5A
                self.st.bump("corruptions")
        cut = None
        if cfg["cut_after"] is not None and (cfg["cut_path"] == path or
                                             (cfg["cut_path"] is None and repo.entries[path]["sha256"])):
            if len(body) > cfg["cut_after"] and self.st.take("cut_times"):
                cut = int(cfg["cut_after"])
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        with self.st.lock:
            self.st.stats["file_bodies"] += 1
            byp = self.st.stats["bodies_by_path"]
            byp[path] = byp.get(path, 0) + 1
        limit = len(body) if cut is None else cut
        rate = float(cfg["rate"] or 0)
        chunk = 64 * 1024
        sent = 0
        t0 = time.monotonic()
        while sent < limit:
            n = min(chunk, limit - sent)
            self.wfile.write(body[sent:sent + n])
            sent += n
            self.st.bump("file_bytes", n)
            if rate > 0:
                ahead = sent / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        if cut is not None:
            # Drop the connection mid-body, as a network failure would.
            self.st.bump("cuts")
            self.wfile.flush()
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.close_connection = True


def make_server(host="127.0.0.1", port=0, token="hf_test_token", lfs_size=None):
    repos = build_repos(lfs_size) if lfs_size else build_repos()
    srv = ThreadingHTTPServer((host, port), Handler)
    srv.daemon_threads = True
    srv.state = State(repos, token)
    return srv


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token", default="hf_test_token")
    args = ap.parse_args()
    srv = make_server(args.host, args.port, args.token)
    print(f"PORT {srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
