"""Mapping windows/s against the bare image-encoder forward on the same windows, side by side in one run, and the
peak memory (RSS) of mapping the bundled scene; reported with senclip.core.bench_record.

    .venv/bin/python tests/bench/bench_map.py [--gpu] [--arch ViT-B-32-quickgelu] [--tile 128] [--repeats 1]

(a) ours: `senclip.mapping.map_scene` end to end on the bundled 1024 x 1024 px crop (read strips, no-data and cloud
    masks, stretch, resize + normalise, forward, classify, write the COGs, counts and JSON), every window of the grid;
    bare: `model.encode_image` alone over the same windows, already read, stretched, resized and normalised, resident
    on the device, in the same batches. Ratio = ours / bare (goal >= 0.95, CPU and GPU). Best of `--repeats`,
    interleaved. Random weights: a timing, not a result.
(b) peak RSS of a child process that maps the bundled crop (VmHWM), and of the same process stopping before the map
    (imports, model, scene opened): what the mapping itself adds.
(c) with `--full-tile N` (default 10980 with --gpu; 0 = skip): a full Sentinel-2 tile from local COGs mapped end to
    end (goal: 10980 x 10980 px in under 60 s on one GPU), and its windows/s over (a)'s bare forward (same model, tile,
    batch and device; on a large scene the fixed costs of a map, such as writing the COGs, weigh less). The scene is
    the bundled crop tiled out to N x N px as one COG per band (B04, B03, B02; 512 px blocks, deflate), written once
    to a temporary folder and not timed.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from senclip.core import bench_record, machine_name, sample_dir

CROP = sample_dir("sentinel2", "s2_l1c_virginia_crop.tif")


def windows(tile, bands=("B04", "B03", "B02")):
    "Every window of the crop's grid, stretched to uint8 as the map does."
    from senclip.mapping import iter_tile_strips, stretch_tiles
    from senclip.sentinel2 import open_scene

    with open_scene(CROP) as sc:
        return np.concatenate([stretch_tiles(t, bands) for _, t, _, _ in iter_tile_strips(sc, bands, tile)])


def bare_forward(model, tiles, batch, dev):
    "Seconds for encode_image over resident, preprocessed batches (the device synchronised at the end)."
    import torch

    from senclip.zeroshot.classify import preprocess_batch

    xs = [preprocess_batch(torch.from_numpy(tiles[i:i + batch]).to(dev), model.image_size, model.mean, model.std)
          for i in range(0, len(tiles), batch)]
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    with torch.no_grad():
        for x in xs:
            model.encode_image(x)
    sync()
    return time.perf_counter() - t


def ours(model, tile, batch, dev):
    from senclip.mapping import map_scene

    out = Path(tempfile.mkdtemp(prefix="bench_map_"))
    t = time.perf_counter()
    map_scene(CROP, model, out_dir=out, tile=tile, batch_size=batch, device=str(dev), progress=False)
    return time.perf_counter() - t


def throughput(arch, tile, batch, dev, repeats):
    import senclip

    model = senclip.load(arch, device=dev).eval()
    tiles = windows(tile)
    ours(model, tile, batch, dev), bare_forward(model, tiles, batch, dev)  # warm-up (allocator, kernels, caches)
    best = {"ours": np.inf, "bare": np.inf}
    for _ in range(repeats):
        best["ours"] = min(best["ours"], ours(model, tile, batch, dev))
        best["bare"] = min(best["bare"], bare_forward(model, tiles, batch, dev))
    return {k: len(tiles) / v for k, v in best.items()}, len(tiles)


CHILD = """
import json, sys, resource
from senclip.core import sample_dir
import senclip
from senclip.mapping import map_scene
from senclip.sentinel2 import open_scene
arch, tile, dev, run = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
model = senclip.load(arch, device=dev)
crop = sample_dir("sentinel2", "s2_l1c_virginia_crop.tif")
with open_scene(crop) as sc:
    pass
if run:
    map_scene(crop, model, out_dir=sys.argv[5], tile=tile, device=dev, progress=False)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")]
print(json.dumps({"maxrss_mb": int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def peak_rss(arch, tile, dev, run):
    out = tempfile.mkdtemp(prefix="bench_map_rss_")
    r = subprocess.run([sys.executable, "-c", CHILD, arch, str(tile), str(dev), "1" if run else "0", out],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])["maxrss_mb"]


def full_tile_scene(n: int, folder: Path) -> Path:
    "An N x N px scene (one COG per band, the crop repeated) in `folder`: real reflectances at Sentinel-2 tile size."
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(CROP) as src:
        crop, t, names = src.read(), src.transform, list(src.descriptions)
    reps = (-(-n // crop.shape[1]), -(-n // crop.shape[2]))
    prof = dict(driver="COG", dtype=crop.dtype.name, count=1, width=n, height=n, crs=src.crs, compress="deflate",
                blocksize=512, transform=from_origin(t.c, t.f, t.a, -t.e))
    for name in ("B04", "B03", "B02"):  # true colour, by the crop's band descriptions (B02, B03, B04, B08)
        with rasterio.open(folder / f"{name}.tif", "w", **prof) as dst:
            dst.write(np.tile(crop[names.index(name)], reps)[:n, :n], 1)
    return folder


def full_tile(arch, n, tile, batch, dev):
    "Seconds to map an N x N px scene end to end (read, masks, forward, classify, write the COGs)."
    import senclip
    from senclip.mapping import map_scene

    scene = full_tile_scene(n, Path(tempfile.mkdtemp(prefix="bench_map_tile_")))
    model = senclip.load(arch, device=dev).eval()
    out = Path(tempfile.mkdtemp(prefix="bench_map_full_"))
    t = time.perf_counter()
    map_scene(scene, model, out_dir=out, tile=tile, batch_size=batch, device=str(dev), progress=False)
    if dev.type == "cuda":
        import torch

        torch.cuda.synchronize()
    return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="on CUDA")
    ap.add_argument("--arch", default="ViT-B-32-quickgelu", help="model architecture (random weights)")
    ap.add_argument("--tile", type=int, default=0, help="tile size (default 128 on CPU: 64 windows; 64 on GPU: 256)")
    ap.add_argument("--batch", type=int, default=0, help="tiles per batch (default 64 CPU / 256 GPU)")
    ap.add_argument("--repeats", type=int, default=0, help="timed repeats per side (default 1 CPU / 3 GPU)")
    ap.add_argument("--full-tile", type=int, default=-1, help="(c) map an N x N px scene end to end (default 10980 "
                    "with --gpu, skipped on CPU; 0 = skip)")
    a, _ = ap.parse_known_args(argv)  # run_all.py may pass flags meant for other scripts
    import torch

    if a.gpu and not torch.cuda.is_available():
        raise SystemExit("bench_map: --gpu needs a CUDA device")
    dev = torch.device("cuda" if a.gpu else "cpu")
    batch = a.batch or (256 if a.gpu else 32)
    a.tile, a.repeats = a.tile or (64 if a.gpu else 128), a.repeats or (3 if a.gpu else 1)
    rate, n = throughput(a.arch, a.tile, batch, dev, a.repeats)
    print(f"(a) {n} windows of {a.tile} px, {a.arch}, batch {batch}, {machine_name()}: mapping {rate['ours']:.1f} "
          f"windows/s, bare forward {rate['bare']:.1f} windows/s")
    tag = "gpu" if a.gpu else "cpu"
    bench_record(f"map.windows_per_s.{tag}.ours", rate["ours"], "windows/s")
    bench_record(f"map.windows_per_s.{tag}.bare_forward", rate["bare"], "windows/s")
    bench_record(f"map.windows_per_s.{tag}.ours_over_bare", rate["ours"] / rate["bare"], "x", goal=">= 0.95")
    full, base = peak_rss(a.arch, a.tile, dev, True), peak_rss(a.arch, a.tile, dev, False)
    print(f"(b) peak RSS mapping the bundled 1024 x 1024 px crop: {full:.0f} MB ({full - base:.0f} MB over the "
          f"process with the model loaded and the scene opened, {base:.0f} MB)")
    bench_record(f"map.memory.{tag}.peak_rss_mb", full, "MB", higher_is_better=False)
    bench_record(f"map.memory.{tag}.peak_rss_added_mb", full - base, "MB", higher_is_better=False)
    n = a.full_tile if a.full_tile >= 0 else (10980 if a.gpu else 0)
    if n:
        from senclip.mapping import tile_offsets

        sec = full_tile(a.arch, n, a.tile, batch, dev)
        wins = len(tile_offsets(n, a.tile)) ** 2
        print(f"(c) a {n} x {n} px scene from local COGs mapped end to end, tile {a.tile}, {machine_name()}: {sec:.1f} s"
              + (" (goal: under 60 s on one GPU)" if n == 10980 else "")
              + f"; {wins / sec:.1f} windows/s = {wins / sec / rate['bare']:.2f}x the bare forward of (a)")
        bench_record(f"map.full_tile.{tag}.ours_over_bare_{n}px", wins / sec / rate["bare"], "x")
        bench_record(f"map.full_tile.{tag}.seconds_{n}px", sec, "s", higher_is_better=False,
                     **({"goal": "< 60"} if n == 10980 and a.gpu else {}))


if __name__ == "__main__":
    main()
