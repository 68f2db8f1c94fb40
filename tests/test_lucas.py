"""senclip.lucas: the photo downloader against a real HTTP server on 127.0.0.1 (LUCAS layout, resume, 404, flaky
connections, hostile ids), and the point reader on a CSV file with every rejection reason."""
import shutil
from pathlib import Path

import pandas as pd
import pytest

from senclip.core import sample_dir
from senclip.lucas import REJECT_REASONS, download_photos, find_photos, photo_relpath, read_points


@pytest.fixture(autouse=True)
def online(monkeypatch):  # these tests talk to 127.0.0.1 only
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("SENCLIP_OFFLINE", raising=False)


@pytest.fixture
def points():
    p = read_points(sample_dir("pairs", "lucas_2018_sample.csv"))
    return p[p.status == "ok"].head(6).reset_index(drop=True)


def serve_lucas(www, points, skip=()):
    "Copy the sample photos of `points` into the server folder in the LUCAS layout (as the real server has them)."
    n = 0
    for _, r in points.iterrows():
        for v in "NESW":
            src = sample_dir("pairs", "photos") / photo_relpath(r.nuts0, r.id, v)
            if src.exists() and (r.id, v) not in skip:
                dest = www / "lucas" / "photos" / "2018" / photo_relpath(r.nuts0, r.id, v)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, dest)
                n += 1
    return n


def test_download_layout_and_resume(http_server, tmp_path, points):
    url, www, handler = http_server
    r0 = points.iloc[0]
    n = serve_lucas(www, points, skip={(r0.id, "E")})
    out = tmp_path / "photos"
    got = download_photos(points, out, base_url=f"{url}/lucas/photos/2018", workers=3, progress=False, backoff=0)
    assert (got.status == "done").sum() == n
    assert set(got.status) <= {"done", "missing"}
    # byte-identical files in the LUCAS layout
    for p in got.path[got.status == "done"]:
        rel = p.split("/photos/", 1)[1]
        assert (www / "lucas" / "photos" / "2018" / rel).read_bytes() == open(p, "rb").read()
    # the absent photo is a counted 'missing' (HTTP 404), not an error
    miss = got[(got.id == r0.id) & (got.view == "E")]
    assert miss.status.item() == "missing" and "404" in miss.reason.item()
    # find_photos sees what was downloaded
    ph = find_photos(points, out)
    assert (ph != "").values.sum() == n
    # resumable: a second run requests nothing that is already on disk
    before = len(handler.requests_seen)
    again = download_photos(points, out, base_url=f"{url}/lucas/photos/2018", progress=False, backoff=0)
    assert (again.status == "skipped").sum() == n
    assert len(handler.requests_seen) - before == (again.status == "missing").sum() - sum(~points[[f"flag_{v}" for v in "NESW"]].values.ravel())


def test_download_survives_dropped_connections(http_server, tmp_path, points):
    url, www, handler = http_server
    n = serve_lucas(www, points.head(2))
    # /cut/... drops every file's first transfer half-way; download_url retries and resumes with Range
    got = download_photos(points.head(2), tmp_path / "p", base_url=f"{url}/cut/lucas/photos/2018", workers=2,
                          progress=False, backoff=0)
    assert (got.status == "done").sum() == n
    paths = [p for p, _ in handler.requests_seen]
    assert all(paths.count(p) == 2 for p in paths)  # each cut transfer was retried once (politely, then served)
    for p in got.path[got.status == "done"]:
        rel = p.split("/p/", 1)[1]
        assert (www / "lucas" / "photos" / "2018" / rel).read_bytes() == open(p, "rb").read()


def test_hostile_ids_cannot_escape(http_server, tmp_path):
    url, www, handler = http_server
    (www / "secret.jpg").write_bytes(b"x")
    evil = pd.DataFrame({"id": ["../../../../tmp/evil", "1234/../../x"], "nuts0": ["FR", "FR"], "status": "ok"})
    got = download_photos(evil, tmp_path / "p", base_url=url, progress=False)
    assert (got.status == "failed").all() and got.reason.str.contains("cannot be used").all()
    assert not handler.requests_seen  # nothing was even requested
    evil2 = pd.DataFrame({"id": ["30001000"], "nuts0": ["../"], "status": "ok"})
    assert (download_photos(evil2, tmp_path / "p", base_url=url, progress=False).status == "failed").all()
    assert not any(tmp_path.parent.glob("**/evil*"))


def test_unreachable_server_is_counted_not_fatal(tmp_path, points):
    got = download_photos(points.head(1), tmp_path, base_url="http://127.0.0.1:9", retries=0, progress=False, backoff=0)
    assert (got.status == "failed").all() and got.reason.str.contains("OfflineError|Could not reach").all()


def test_every_rejection_reason_from_a_csv(tmp_path):
    rows = [
        "POINT_ID,NUTS0,TH_LAT,TH_LONG,GPS_LAT,GPS_LONG,SURVEY_DATE,LC1",
        "30001000,FR,45.1,2.1,,,02/07/18,B11",
        "30001000,FR,45.1,2.1,,,02/07/18,B11",
        "3000,FR,45.1,2.1,,,02/07/18,B11",
        "30001001,F1,45.1,2.1,,,02/07/18,B11",
        "30001002,FR,2456000,3712000,88.888888,88.888888,02/07/18,B11",
        "30001003,FR,,,,,02/07/18,B11",
        "30001004,FR,-91,2.1,,,02/07/18,B11",
        "30001005,FR,45.1,2.1,,,,B11",
        "30001006,FR,45.1,2.1,,,2018-07-02,B11",
    ]
    f = tmp_path / "lucas.csv"
    f.write_text("\n".join(rows) + "\n")
    p = read_points(f)
    assert list(p.status) == ["ok", "duplicate_id", "bad_id", "bad_nuts0", "projected_coords", "missing_coords",
                              "impossible_coords", "missing_date", "bad_date"]
    assert set(p.status) - {"ok"} == set(REJECT_REASONS)
    assert p.reason[4].startswith("row 6:")  # the reason names the CSV line


def test_offline_switch_is_one_clear_error(tmp_path, points, monkeypatch):
    from senclip.core import OfflineError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="downloads are disabled"):
        download_photos(points, tmp_path, base_url="http://127.0.0.1:9", progress=False)


def test_empty_photos_are_fetched_again(http_server, tmp_path, points):
    "A 0-byte photo (what a full disk or a killed copy leaves) is neither found nor skipped: it is downloaded again."
    url, www, handler = http_server
    n = serve_lucas(www, points)
    out = tmp_path / "photos"
    got = download_photos(points, out, base_url=f"{url}/lucas/photos/2018", progress=False, backoff=0)
    done = got[got.status == "done"]
    assert len(done) == n > 0
    empty = Path(done.path.iloc[0])
    empty.write_bytes(b"")
    assert (find_photos(points, out) != "").values.sum() == n - 1  # not offered to the embedder
    again = download_photos(points, out, base_url=f"{url}/lucas/photos/2018", progress=False, backoff=0)
    row = again[again.path == str(empty)]
    assert row.status.item() == "done" and empty.stat().st_size > 0
    assert (again.status == "skipped").sum() == n - 1
