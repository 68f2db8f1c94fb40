"""GPU check for scene mapping (run by the lead on a CUDA machine; not part of `make test`):

    python3 tests/gpu_check_mapping.py          # ~1 minute, offline

0. stretch_batch on CUDA (the default stretch of a CUDA map) gives stretch_tiles' bytes exactly, both methods;
1. map_scene on CUDA and CPU with the same ViT-B-32-quickgelu random weights gives the same class map on the sample
   crop (>= 98% of tiles; ties between near-equal random scores may flip) and confidences within 1e-3;
2. throughput on a 6144 x 6144 px scene tiled from the crop (9216 tiles of 64 px, ViT-B-32 at 224 px), batch 256.
Random weights: the numbers are timings and agreement, not results.
"""
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch

from senclip.core import sample_dir
from senclip.mapping import iter_tile_strips, map_scene, stretch_batch, stretch_tiles
from senclip.sentinel2 import RGB_BANDS, open_scene
from senclip.model import load

assert torch.cuda.is_available(), "this check needs a CUDA GPU"
print(torch.cuda.get_device_name(0))
tmp = Path(tempfile.mkdtemp())
crop = sample_dir("sentinel2", "s2_l1c_virginia_crop.tif")
with open_scene(crop) as sc:
    tiles = np.concatenate([t for _, t, _, _ in iter_tile_strips(sc, RGB_BANDS, 64)])
for method in ("minmax", "fixed"):
    same = np.array_equal(stretch_batch(tiles, RGB_BANDS, method, device="cuda").cpu().numpy(),
                          stretch_tiles(tiles, RGB_BANDS, method))
    print(f"stretch on CUDA vs host, {method}, {len(tiles)} tiles: {'identical' if same else 'DIFFERENT'}")
    assert same, method
mc = load("ViT-B-32-quickgelu", device="cpu")
mg = load("ViT-B-32-quickgelu", device="cpu")
mg.model.load_state_dict(mc.model.state_dict())
mg = mg.to("cuda")
pc = map_scene(crop, mc, out_dir=tmp / "cpu", device="cpu", progress=False)
pg = map_scene(crop, mg, out_dir=tmp / "gpu", device="cuda", progress=False)
with rasterio.open(pc["classes"]) as a, rasterio.open(pg["classes"]) as b:
    agree = float((a.read(1) == b.read(1)).mean())
    assert a.transform == b.transform and a.crs == b.crs
with rasterio.open(pc["confidence"]) as a, rasterio.open(pg["confidence"]) as b:
    dconf = float(np.nanmax(np.abs(a.read(1) - b.read(1))))
print(f"sample crop: CPU vs CUDA class agreement {agree:.4f}, max |confidence diff| {dconf:.2e}")
assert agree >= 0.98 and dconf < 1e-3, (agree, dconf)

with rasterio.open(crop) as s:
    prof, arr = s.profile, s.read()
prof.update(width=6144, height=6144)
big = tmp / "big.tif"
with rasterio.open(big, "w", **prof) as d:
    for i in range(6):
        for j in range(6):
            d.write(arr, window=rasterio.windows.Window(j * 1024, i * 1024, 1024, 1024))
    d.descriptions = ("B02", "B03", "B04", "B08")
map_scene(crop, mg, out_dir=tmp / "warm", device="cuda", progress=False)  # warm-up
torch.cuda.synchronize()
t = time.time()
p = map_scene(big, mg, out_dir=tmp / "big", device="cuda", progress=False, batch_size=256)
torch.cuda.synchronize()
dt = time.time() - t
print(f"6144x6144 px, 9216 tiles, ViT-B-32 on CUDA: {dt:.1f} s = {9216 / dt:.0f} tiles/s "
      f"(peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB) — random weights, timing only")
