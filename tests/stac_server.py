"""A STAC *API* on 127.0.0.1 for the tests (landing page; POST /search filtering by collection, bbox, datetime and
eo:cloud_cover, as a STAC API does), serving the items of a local catalogue. With `files_root`, the items' assets are
rewritten to /files/... and served from there with HTTP Range (bytes=a-b, as GDAL's /vsicurl/ asks), so COGs are read
window by window as from a cloud store; without it, the assets keep their absolute local paths."""
import contextlib
import http.server
import json
import threading
from pathlib import Path

import pandas as pd
import pystac

from senclip.stac import _item_time


class StacApiHandler(http.server.BaseHTTPRequestHandler):
    items: list = []  # pystac Items with absolute asset hrefs
    searches: list = []  # every POST /search body, in order
    served: dict = {}  # bytes served per file under files_root
    files_root: Path | None = None
    api_id = "test-api"

    def log_message(self, *a):
        pass

    def _root(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _json(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _file(self, head=False):
        f = self.files_root / self.path[len("/files/"):]
        if not f.is_file():
            return self.send_error(404)
        data = f.read_bytes()
        a, b = 0, len(data) - 1
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            s, e = rng[6:].split(",")[0].split("-")
            a, b = int(s or 0), min(int(e) if e else len(data) - 1, len(data) - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {a}-{b}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(b - a + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not head:
            key = f.relative_to(self.files_root).as_posix()
            self.served[key] = self.served.get(key, 0) + b - a + 1
            self.wfile.write(data[a:b + 1])

    def do_HEAD(self):
        if self.files_root and self.path.startswith("/files/"):
            return self._file(head=True)
        self.send_error(404)

    def do_GET(self):
        if self.files_root and self.path.startswith("/files/"):
            return self._file()
        if self.path.rstrip("/") == "":
            r = self._root()
            return self._json({
                "type": "Catalog", "id": self.api_id, "stac_version": "1.0.0", "description": "test STAC API",
                "conformsTo": ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search",
                               "https://api.stacspec.org/v1.0.0/item-search#query"],
                "links": [{"rel": "self", "href": r + "/"}, {"rel": "root", "href": r + "/"},
                          {"rel": "search", "href": r + "/search", "method": "POST", "type": "application/geo+json"}]})
        self.send_error(404)

    def _hit(self, it, q, start, end) -> bool:
        w, s, e, n = q["bbox"]
        lt = q.get("query", {}).get("eo:cloud_cover", {}).get("lt", 101)
        return (it.collection_id in q.get("collections", [it.collection_id]) and it.bbox[0] <= e and it.bbox[2] >= w
                and it.bbox[1] <= n and it.bbox[3] >= s and start <= _item_time(it) <= end
                and it.properties["eo:cloud_cover"] < lt)

    def do_POST(self):
        q = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.searches.append(q)
        start, end = (pd.Timestamp(t.rstrip("Z")) for t in q["datetime"].split("/"))
        hits = []
        for it in self.items:
            if self._hit(it, q, start, end):
                d = it.to_dict()
                if self.files_root:
                    for a in d["assets"].values():
                        rel = Path(a["href"]).resolve().relative_to(self.files_root).as_posix()
                        a["href"] = self._root() + "/files/" + rel
                hits.append(d)
        self._json({"type": "FeatureCollection", "features": hits, "links": []})


@contextlib.contextmanager
def stac_api(catalog: Path, files_root: Path | None = None, api_id: str = "test-api"):
    "Serve `catalog`'s items as a STAC API on 127.0.0.1; yields (url, handler class: .searches, .served)."
    cat = pystac.Catalog.from_file(str(catalog))
    items = []
    for it in cat.get_items(recursive=True):
        it.make_asset_hrefs_absolute()
        items.append(it)

    class Handler(StacApiHandler):
        pass

    Handler.items, Handler.searches, Handler.served, Handler.api_id = items, [], {}, api_id
    Handler.files_root = Path(files_root).resolve() if files_root else None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", Handler
    finally:
        srv.shutdown()
        srv.server_close()
