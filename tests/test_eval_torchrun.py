"""Issue 13, item 2: evaluation image embedding sharded with torchrun. Two gloo processes on the CPU, started by
torchrun through `senclip_eval`, embed their shares of the images into the shared cache; rank 0 assembles them and
scores. The results and the assembled embeddings equal those of one process."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ARGS = dict(demo=True, demo_models=["senclip-tiny-vit"], demo_datasets=["eurosat", "bigearthnet19"], prompts=["generic", "ground"],
            n_boot=0, sweep=False, figures=False, chunk=64, progress=False)


def _embeddings(cache: Path) -> dict:
    from safetensors.torch import load_file

    return {f.parent.name: load_file(f) for f in cache.glob("*/embeddings.safetensors")}


@pytest.mark.slow  # two torchrun processes start torch and open_clip: about 20 s on 2 cores
def test_two_ranks_give_one_process_results(tmp_path, monkeypatch):
    from senclip.zeroshot.evaluate import EvalConfig, run_evaluation

    monkeypatch.setenv("SENCLIP_CACHE", str(tmp_path / "cache1"))
    one = run_evaluation(EvalConfig(out_dir=str(tmp_path / "one"), cache=str(tmp_path / "emb1"), **ARGS))
    env = {k: v for k, v in os.environ.items() if k not in ("IN_TEST", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(HF_HUB_OFFLINE="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1", SENCLIP_CACHE=str(tmp_path / "cache2"))
    sets = [f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in ARGS.items() if k != "demo"]
    p = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(BIN / "senclip_eval"),
                        "--demo", "--out", str(tmp_path / "two"), "--set", f"cache={tmp_path / 'emb2'}", *sets],
                       env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("UNTRAINED") == 1  # rank 0 alone writes and prints the table
    two = pd.read_csv(tmp_path / "two" / "results.csv")
    cols = ["dataset", "prompts", "scoring", "n_images", "value"]
    pd.testing.assert_frame_equal(one[cols].reset_index(drop=True), two[cols], check_exact=False, rtol=0, atol=1e-6)
    e1, e2 = _embeddings(tmp_path / "emb1"), _embeddings(tmp_path / "emb2")
    assert len(e1) == 2 and set(e1) == set(e2)  # the same cache keys: same model, data and preprocessing
    for k in e1:
        assert torch.equal(e1[k]["valid"], e2[k]["valid"]) and torch.equal(e1[k]["labels"], e2[k]["labels"])
        assert (e1[k]["emb"] - e2[k]["emb"]).abs().max() < 1e-5
    assert not list((tmp_path / "emb2").glob("*/parts"))  # rank 0 removed the shards after assembling them


def test_embed_images_needs_a_cache_under_torchrun(monkeypatch):
    from senclip.core import UserError, sample_dir
    from senclip.datasets import EuroSAT
    from senclip.zeroshot.classify import embed_images, load_model

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="needs the embedding cache"):
        embed_images(load_model("senclip-tiny-vit"), EuroSAT(sample_dir("eurosat")), cache=False, progress=False)
