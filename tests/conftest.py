"""Shared pytest fixtures: a real HTTP server on 127.0.0.1 and offline defaults."""
import http.server
import os
import threading
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
ROOT = Path(__file__).resolve().parent.parent


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder with HTTP Range support. `/cut/<name>` sends only the first half of the first request's
    bytes and then drops the connection, as a flaky network does; later requests for it are served normally."""

    cut_served: set = set()
    requests_seen: list = []

    def log_message(self, *a):  # keep pytest output quiet
        pass

    def do_GET(self):
        self.requests_seen.append((self.path, self.headers.get("Range")))
        path = self.path
        cut = path.startswith("/cut/")
        if cut:
            path = path[len("/cut"):]
        f = Path(self.directory) / path.lstrip("/")
        if not f.is_file():
            self.send_error(404)
            return
        data = f.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if cut and path not in self.cut_served:
            self.cut_served.add(path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def one_thread():
    "One intra-op thread for tiny-model tests: on a busy 2-core machine more threads only make OpenMP spin."
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def http_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving `tmp_path / 'www'`; yields (base_url, folder, handler class)."""
    www = tmp_path / "www"
    www.mkdir()

    class Handler(RangeHandler):
        cut_served = set()
        requests_seen = []

        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(www), **k)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", www, Handler
    finally:
        srv.shutdown()
        srv.server_close()
