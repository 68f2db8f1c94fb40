"""Ground-photo embedding sharded with torchrun (issue 13, item 2): two gloo processes on CPU write the same store as
one process (each rank embeds its own shards, rank 0 assembles), a two-process run killed with SIGKILL resumes:
the shards it finished are reused, not recomputed; and the command runs in one process without torchrun."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from senclip.core import sample_dir
from senclip.embeddings import EmbeddingStore, embed_photos
from senclip.lucas import DIRECTIONS, find_photos, read_points

BIN = Path(sys.executable).parent
COLS = [f"photo_{v}" for v in DIRECTIONS]
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
pytestmark = pytest.mark.usefixtures("one_thread")  # the in-process reference runs on one thread, as each rank does


def _photo_table(tmp_path: Path, n: int) -> tuple[pd.DataFrame, Path]:
    "`n` points (unique ids) cycling over the sample's LUCAS photos, written as a Parquet table."
    pts = read_points(sample_dir("pairs", "lucas_2018_sample.csv"))
    pts = pts[pts.status == "ok"].reset_index(drop=True)
    ph = pd.concat([pts[["id"]], find_photos(pts, sample_dir("pairs", "photos"))], axis=1)
    ph = ph[(ph[COLS] != "").any(axis=1)].reset_index(drop=True)
    t = pd.DataFrame([ph.iloc[i % len(ph)] for i in range(n)]).reset_index(drop=True)
    t["id"] = [f"{80000000 + i}" for i in range(n)]
    t.loc[1, "photo_E"] = ""  # an absent photo in the first shard
    path = tmp_path / "photos.parquet"
    t.to_parquet(path)
    return t, path


def _torchrun(table: Path, out: Path, shard: int, photo_size: int, **popen) -> subprocess.Popen:
    "`torchrun --nproc_per_node 2 -m senclip.embeddings ...` on CPU (gloo), the tiny random tower."
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "senclip.embeddings", str(table),
           str(out), "--model", "senclip-tiny-vit", "--pretrained", "", "--batch_size", "8", "--shard_size", str(shard),
           "--photo_size", str(photo_size), "--dtype", "float32", "--device", "cpu"]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


@pytest.mark.slow  # two torchrun processes start torch and open_clip: about 20 s on 2 cores
def test_two_processes_write_the_one_process_store(tmp_path):
    table, path = _photo_table(tmp_path, 22)
    proc = _torchrun(path, tmp_path / "two.safetensors", shard=4, photo_size=0)
    log = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, log
    two = EmbeddingStore.load(tmp_path / "two.safetensors")
    one = embed_photos(table, tmp_path / "one.safetensors", model="senclip-tiny-vit", pretrained="", batch_size=8,
                       shard_size=4, photo_size=0, dtype="float32", device="cpu", progress=False)
    assert two.ids == one.ids == list(table.id)
    assert torch.equal(two.mask, one.mask) and torch.equal(two.embeddings, one.embeddings)
    assert two.meta == EmbeddingStore.load(tmp_path / "one.safetensors").meta
    assert not (tmp_path / "two.safetensors.parts").exists()  # rank 0 removed the shards after assembling


def _descendants(pid: int) -> list[int]:
    "The processes started, directly or not, by `pid` (torchrun starts its workers in their own sessions)."
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def _kill_all(proc: subprocess.Popen):
    "SIGKILL torchrun and every worker at once, as a crash of the node would, and wait until they are gone."
    pids = [proc.pid, *_descendants(proc.pid)]
    assert len(pids) >= 3, "torchrun and its 2 workers"
    for p in pids:
        os.kill(p, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() and "Z" not in _state(p) for p in pids[1:]):
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


@pytest.mark.slow  # two torchrun runs of 2 processes, one killed: about 60 s on 2 cores
def test_killed_two_process_run_resumes_with_its_finished_shards(tmp_path):
    n, shard = 120, 6
    table, path = _photo_table(tmp_path, n)
    out = tmp_path / "ground.safetensors"
    parts = out.with_name(out.name + ".parts")
    proc = _torchrun(path, out, shard=shard, photo_size=512)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(parts.glob("shard_*.safetensors"))) < 4:
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.05)
    _kill_all(proc)
    done = sorted(parts.glob("shard_*.safetensors"))
    assert 4 <= len(done) < n // shard, "the kill must land in the middle of the run"
    assert not out.exists()

    # mark the finished shards: a resumed run that reuses them keeps the mark, one that recomputes them loses it
    marked = []
    for p in done:
        s = EmbeddingStore.load(p)
        s.embeddings[s.mask] = 7.0
        s.save(p)
        marked.append(int(p.stem.split("_")[1]))

    proc = _torchrun(path, out, shard=shard, photo_size=512)
    log = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, log
    assert f"resuming, {len(done)} of {n // shard} shards already done" in log
    store = EmbeddingStore.load(out)
    assert store.ids == list(table.id)
    assert torch.equal(store.mask, torch.from_numpy((table[COLS] != "").to_numpy()))
    for k in range(n // shard):
        rows = store.embeddings[k * shard:(k + 1) * shard][store.mask[k * shard:(k + 1) * shard]]
        assert bool((rows == 7.0).all()) == (k in marked), f"shard {k}"
    # a shard the resumed run computed holds what one process computes for those points
    k = next(k for k in range(n // shard) if k not in marked)
    ref = embed_photos(table.iloc[k * shard:(k + 1) * shard], tmp_path / "ref.safetensors", model="senclip-tiny-vit",
                       pretrained="", batch_size=8, shard_size=shard, photo_size=512, dtype="float32", device="cpu",
                       progress=False)
    torch.testing.assert_close(store.embeddings[k * shard:(k + 1) * shard], ref.embeddings, atol=1e-5, rtol=1e-5)
    assert not parts.exists()


@pytest.mark.slow  # starts open_clip and the tiny tower: about 10 s on a busy 2-core machine
def test_command_in_one_process(tmp_path, capsys):
    "The torchrun entry point without torchrun (the function under its command-line parser): a pair manifest's 'ok' rows."
    from senclip.embeddings import senclip_embed

    table, _ = _photo_table(tmp_path, 6)
    table.assign(status=["ok"] * 5 + ["rejected"]).to_csv(tmp_path / "manifest.csv", index=False)
    senclip_embed.__wrapped__(str(tmp_path / "manifest.csv"), str(tmp_path / "g.safetensors"), model="senclip-tiny-vit",
                              pretrained="", batch_size=8, shard_size=2, photo_size=0, dtype="float32", device="cpu")
    store = EmbeddingStore.load(tmp_path / "g.safetensors")
    assert store.ids == list(table.id[:5])
    assert torch.equal(store.mask, torch.from_numpy((table[COLS] != "").to_numpy()[:5]))
    assert "EmbeddingStore(5 points" in capsys.readouterr().out
