"""GPU check for the pairing module (run by the lead on a CUDA machine; not part of `make test`):

    .venv/bin/python tests/gpu_check_pairs.py            # ~1 minute, offline

1. embed_photos on CUDA (tiny random tower, the sample's placeholder photos) gives the same embeddings as on CPU
   (fp32 storage, |diff| < 1e-3) and the same mask;
2. a whole build_sample_pairs run with device='cuda' finishes and PairDataset batches move to the GPU;
3. photos per second of embed_photos on CUDA vs CPU, printed (not recorded: the tiny tower is not representative).
"""
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from senclip.core import sample_dir
from senclip.embeddings import embed_photos
from senclip.lucas import DIRECTIONS, find_photos, read_points
from senclip.pairs import PairDataset, make_pairs

assert torch.cuda.is_available(), "this check needs a CUDA GPU"
pts = read_points(sample_dir("pairs", "lucas_2018_sample.csv"))
pts = pts[pts.status == "ok"].reset_index(drop=True)
photos = pd.concat([pts[["id"]], find_photos(pts, sample_dir("pairs", "photos"))], axis=1)
with tempfile.TemporaryDirectory() as d:
    d = Path(d)
    t = {}
    stores = {}
    for dev in ("cpu", "cuda"):
        t0 = time.perf_counter()
        stores[dev] = embed_photos(photos, d / f"{dev}.safetensors", model="senclip-tiny-vit", pretrained="",
                                   dtype="float32", device=dev, photo_size=512, progress=False)
        t[dev] = time.perf_counter() - t0
    assert torch.equal(stores["cpu"].mask, stores["cuda"].mask)
    diff = (stores["cpu"].embeddings - stores["cuda"].embeddings).abs().max().item()
    print(f"embed_photos cpu vs cuda: max |diff| {diff:.2e}")
    assert diff < 1e-3, diff
    n = int(stores["cpu"].mask.sum())
    print(f"photos/s (tiny tower, incl. start-up): cpu {n / t['cpu']:.0f}, cuda {n / t['cuda']:.0f}")
    res = make_pairs(points=str(sample_dir("pairs", "lucas_2018_sample.csv")), photos=str(sample_dir("pairs", "photos")),
                     scenes=[str(sample_dir("sentinel2", "s2_l1c_virginia_crop.tif"))], model="senclip-tiny-vit",
                     pretrained="", device="cuda", out=str(d / "pairs"), progress=False)
    ds = PairDataset(res["manifest"], res["store"], "demo")
    b = next(iter(torch.utils.data.DataLoader(ds, batch_size=16, num_workers=2, pin_memory=True)))
    img, ground = b["image"].cuda(non_blocking=True), b["ground"].cuda(non_blocking=True)
    assert img.dtype == torch.uint8 and img.shape[1:] == (3, 100, 100) and ground.shape[1:] == (4, 64)
    print("counts:", res["counts"])
print("gpu_check_pairs: OK")
