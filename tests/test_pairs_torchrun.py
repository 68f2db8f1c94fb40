"""`torchrun --nproc_per_node 2 senclip_pairs ...` (issue 13 item 2): rank 0 builds the manifest and patches, both
ranks embed their own shards of the ground photos, rank 0 assembles the store; the result equals one process's."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from senclip.core import sample_dir
from senclip.embeddings import EmbeddingStore
from senclip.pairs import read_manifest

BIN = Path(sys.executable).parent
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg")


def _config(tmp_path: Path, out: str) -> Path:
    cfg = tmp_path / f"{out}.yaml"
    cfg.write_text(
        f"points: {sample_dir('pairs', 'lucas_2018_sample.csv')}\n"
        f"photos: {sample_dir('pairs', 'photos')}\n"
        f"scenes: [{sample_dir('sentinel2', 's2_l1c_virginia_crop.tif')}]\n"
        "model: senclip-tiny-vit\npretrained: ''\nphoto_size: 0\nsize: 32\nblock_m: 2000\nval_fraction: 0.25\n"
        f"shard_size: 4\nbatch_size: 8\ndtype: float32\ndevice: cpu\nout: {out}\n"
    )
    return cfg


@pytest.mark.slow  # two torchrun processes plus one plain run: about 40 s on 2 cores
def test_two_ranks_give_the_one_process_pairs(tmp_path):
    one = subprocess.run([str(BIN / "senclip_pairs"), "--config", str(_config(tmp_path, "one"))], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stdout + one.stderr
    two = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "--no-python",
                          str(BIN / "senclip_pairs"), "--config", str(_config(tmp_path, "two"))], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stdout + two.stderr
    a, b = (EmbeddingStore.load(tmp_path / d / "ground.safetensors") for d in ("one", "two"))
    assert a.ids == b.ids and len(a.ids) > 4  # more than one shard, so both ranks had work
    assert torch.equal(a.mask, b.mask) and torch.equal(a.embeddings, b.embeddings)
    ma, mb = (read_manifest(tmp_path / d / "manifest.parquet", absolute=False) for d in ("one", "two"))
    assert ma.drop(columns=["patch"]).equals(mb.drop(columns=["patch"]))
    sa, sb = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert sa["counts"] == sb["counts"] and sa["photos"] == sb["photos"]
    assert not (tmp_path / "two" / "ground.safetensors.parts").exists()
