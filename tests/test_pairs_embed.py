"""Embedding photos resumes after a real SIGKILL: finished shards are reused (never recomputed), the store is
complete and equal to an uninterrupted run, and no half-written file is ever taken for a finished one."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import senclip.embeddings as E
from senclip.core import sample_dir
from senclip.embeddings import EmbeddingStore, embed_photos
from senclip.lucas import DIRECTIONS, find_photos, read_points

N_POINTS, SHARD = 200, 20
COLS = [f"photo_{v}" for v in DIRECTIONS]


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture
def photo_table(tmp_path):
    "N_POINTS points (unique ids) cycling over the sample photos: enough work for a kill to land mid-run."
    pts = read_points(sample_dir("pairs", "lucas_2018_sample.csv"))
    pts = pts[pts.status == "ok"].reset_index(drop=True)
    ph = pd.concat([pts[["id"]], find_photos(pts, sample_dir("pairs", "photos"))], axis=1)
    ph = ph[(ph[COLS] != "").any(axis=1)].reset_index(drop=True)
    rows = [ph.iloc[i % len(ph)] for i in range(N_POINTS)]
    t = pd.DataFrame(rows).reset_index(drop=True)
    t["id"] = [f"{90000000 + i}" for i in range(N_POINTS)]
    path = tmp_path / "photos.parquet"
    t.to_parquet(path)
    return t, path


SCRIPT = """
import sys, pandas as pd
from senclip.embeddings import embed_photos
embed_photos(pd.read_parquet(sys.argv[1]), sys.argv[2], model="senclip-tiny-vit", pretrained="",
             batch_size=20, shard_size={shard}, photo_size=512, dtype="float32", device="cpu", progress=False)
"""


@pytest.mark.slow  # over ~10 s on 2 cores: make test-slow (CI runs it)
def test_resume_after_sigkill(photo_table, tmp_path, monkeypatch):
    table, path = photo_table
    out = tmp_path / "ground.safetensors"
    parts = out.with_name(out.name + ".parts")
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT.format(shard=SHARD), str(path), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("shard_*.safetensors"))) < 2:
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = sorted(parts.glob("shard_*.safetensors"))
    n_shards = N_POINTS // SHARD
    assert 2 <= len(done) < n_shards, "the kill must land in the middle of the run"
    assert not out.exists()
    before = {p.name: p.read_bytes() for p in done}
    # every finished shard is a complete, loadable file (atomic writes)
    for p in done:
        s = EmbeddingStore.load(p)
        assert len(s) == SHARD

    # resume in this process, counting what the tower really encodes
    encoded = []
    real = E.load_image_tower

    def counting(*a, **k):
        t = real(*a, **k)
        enc = t.encode

        def encode(x):
            encoded.append(len(x))
            return enc(x)

        t.encode = encode
        return t

    monkeypatch.setattr(E, "load_image_tower", counting)
    store = embed_photos(table, out, model="senclip-tiny-vit", pretrained="", batch_size=20, shard_size=SHARD,
                         photo_size=512, dtype="float32", device="cpu", progress=False)
    todo_photos = int((table[COLS] != "").to_numpy()[len(done) * SHARD:].sum())
    assert sum(encoded) == todo_photos  # finished shards were not recomputed
    assert not parts.exists()
    assert store.ids == list(table.id) and len(store) == N_POINTS
    assert torch.equal(store.mask, torch.from_numpy((table[COLS] != "").to_numpy()))

    # what the killed run finished is exactly what an uninterrupted run computes
    monkeypatch.setattr(E, "load_image_tower", real)
    ref = embed_photos(table.head(SHARD * 2 + 5), tmp_path / "ref.safetensors", model="senclip-tiny-vit", pretrained="",
                       batch_size=20, shard_size=SHARD, photo_size=512, dtype="float32", device="cpu", progress=False)
    torch.testing.assert_close(store.embeddings[: SHARD * 2 + 5], ref.embeddings, atol=1e-5, rtol=1e-5)
    assert {p: b for p, b in before.items()}  # shards were read back, not rewritten (files gone after merge)


def test_changed_plan_discards_old_shards(photo_table, tmp_path):
    table, _ = photo_table
    small = table.head(12)
    out = tmp_path / "g.safetensors"
    parts = out.with_name(out.name + ".parts")
    parts.mkdir()
    (parts / "plan.json").write_text('{"plan": "something else"}')
    (parts / "shard_00000.safetensors").write_bytes(b"garbage from another plan")
    s = embed_photos(small, out, model="senclip-tiny-vit", pretrained="", shard_size=5, photo_size=0, progress=False)
    assert len(s) == 12 and s.ids == list(small.id)
