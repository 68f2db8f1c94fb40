"""senclip.core.download_url against a real HTTP server on 127.0.0.1: resume, checksum, 404, offline."""
import hashlib
import os
import socket

import pytest

from senclip.core import ChecksumError, OfflineError, download_url


@pytest.fixture(autouse=True)
def online(monkeypatch):
    # these tests talk to 127.0.0.1 only; the offline switch is tested explicitly
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("SENCLIP_OFFLINE", raising=False)


def payload(n=300_000):
    return os.urandom(n)


def test_download_and_checksum(http_server, tmp_path):
    url, www, _ = http_server
    data = payload()
    (www / "w.bin").write_bytes(data)
    out = download_url(f"{url}/w.bin", tmp_path / "dl" / "w.bin", sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert out.read_bytes() == data
    assert not (tmp_path / "dl" / "w.bin.part").exists()


def test_interrupted_transfer_resumes(http_server, tmp_path):
    url, www, handler = http_server
    data = payload()
    (www / "big.bin").write_bytes(data)
    out = download_url(f"{url}/cut/big.bin", tmp_path / "big.bin", sha256=hashlib.sha256(data).hexdigest(),
                       progress=False, backoff=0)
    assert out.read_bytes() == data
    ranges = [r for p, r in handler.requests_seen]
    assert ranges[0] is None and ranges[1].startswith("bytes="), ranges
    resumed_at = int(ranges[1][6:-1])
    assert 0 < resumed_at <= len(data) // 2, ranges  # the second request resumed, it did not start over


def test_partial_file_from_earlier_run_resumes(http_server, tmp_path):
    url, www, handler = http_server
    data = payload()
    (www / "p.bin").write_bytes(data)
    (tmp_path / "p.bin.part").write_bytes(data[:1000])
    download_url(f"{url}/p.bin", tmp_path / "p.bin", progress=False)
    assert (tmp_path / "p.bin").read_bytes() == data
    assert handler.requests_seen[0][1] == "bytes=1000-"


def test_corrupt_file_is_rejected(http_server, tmp_path):
    url, www, _ = http_server
    (www / "c.bin").write_bytes(payload(5000))
    with pytest.raises(ChecksumError, match="does not match"):
        download_url(f"{url}/c.bin", tmp_path / "c.bin", sha256="0" * 64, progress=False)
    assert not (tmp_path / "c.bin").exists() and not (tmp_path / "c.bin.part").exists()


def test_existing_file_with_wrong_checksum_is_refetched(http_server, tmp_path):
    url, www, handler = http_server
    data = payload(5000)
    (www / "r.bin").write_bytes(data)
    (tmp_path / "r.bin").write_bytes(b"stale")
    download_url(f"{url}/r.bin", tmp_path / "r.bin", sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert (tmp_path / "r.bin").read_bytes() == data and len(handler.requests_seen) == 1


def test_404(http_server, tmp_path):
    url, _, _ = http_server
    with pytest.raises(FileNotFoundError, match="404"):
        download_url(f"{url}/nope.bin", tmp_path / "nope.bin", progress=False)


def test_offline_switch(monkeypatch, http_server, tmp_path):
    url, www, handler = http_server
    (www / "o.bin").write_bytes(b"x")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="place the file"):
        download_url(f"{url}/o.bin", tmp_path / "o.bin", progress=False)
    assert handler.requests_seen == []  # nothing was sent


def test_unreachable_host_is_a_clear_offline_error(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(OfflineError, match="Are you offline"):
        download_url(f"http://127.0.0.1:{port}/x.bin", tmp_path / "x.bin", retries=1, backoff=0, progress=False)
