"""A small local Hugging Face Hub: the endpoints `huggingface_hub.list_repo_files`, `hf_hub_download` and
`snapshot_download` use, serving repositories laid out as `<root>/<owner>/<name>/<files>`.

Point `HF_ENDPOINT` at it (huggingface_hub reads it at import, so use a subprocess). Implemented:
- GET  /api/models/<owner>/<name>/tree/<rev>[/<path>]?recursive=..  file listing (one page)
- GET  /api/models/<owner>/<name>/revision/<rev>                     repo info with siblings
- HEAD/GET /<owner>/<name>/resolve/<rev>/<path>                      file, with X-Repo-Commit / ETag / Range
Unknown repositories and files answer 404 with the Hub's X-Error-Code header.
"""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubHandler(http.server.BaseHTTPRequestHandler):
    root: Path = Path(".")
    requests_seen: list = []

    def log_message(self, *a):
        pass

    def _repo(self, owner, name) -> Path | None:
        p = self.root / owner / name
        return p if p.is_dir() else None

    def _json(self, obj, code=200):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _404(self, code="EntryNotFound"):
        self.send_response(404)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urlparse(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        self.requests_seen.append((self.command, url.path))
        if parts[:2] == ["api", "models"] and len(parts) >= 6:
            owner, name, kind, _rev = parts[2:6]
            repo = self._repo(owner, name)
            if repo is None:
                return self._404("RepoNotFound")
            files = sorted(p for p in repo.rglob("*") if p.is_file())
            if kind == "tree":
                entries = [{"type": "directory", "path": d.relative_to(repo).as_posix(), "oid": "0" * 40}
                           for d in sorted(p for p in repo.rglob("*") if p.is_dir())]
                entries += [{"type": "file", "path": f.relative_to(repo).as_posix(), "size": f.stat().st_size,
                             "oid": hashlib.sha1(f.read_bytes()).hexdigest()} for f in files]
                return self._json(entries)
            if kind == "revision":
                return self._json({"id": f"{owner}/{name}", "sha": COMMIT, "private": False,
                                   "siblings": [{"rfilename": f.relative_to(repo).as_posix()} for f in files]})
        if len(parts) >= 5 and parts[2] == "resolve":
            owner, name, _, _rev = parts[:4]
            repo = self._repo(owner, name)
            if repo is None:
                return self._404("RepoNotFound")
            f = repo / "/".join(parts[4:])
            if not f.is_file():
                return self._404()
            data = f.read_bytes()
            start = 0
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes=") and self.command == "GET":
                start = int(rng[6:].split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(data[start:])
            return
        self._404("RepoNotFound")


def serve(root: Path):
    "Start the hub on 127.0.0.1 in a thread; returns (base_url, server, handler class)."

    class Handler(HubHandler):
        requests_seen = []

    Handler.root = Path(root)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{srv.server_address[1]}", srv, Handler
