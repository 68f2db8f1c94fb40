"""Patches per second on the bundled Sentinel-2 scene: senclip.sentinel2.cut_patches (one open per scene, reads in
raster block order, GDAL block cache) against the naive way (open the raster again for every point, read, write),
side by side in one run, reported with senclip.core.bench_record as a ratio.

    .venv/bin/python tests/bench/bench_patches.py [--n 400] [--size 100] [--repeats 3]

Both sides write the same GeoTIFF patches (bands B04, B03, B02); ours also runs the cloud and no-data tests.
"""
import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from pyproj import Transformer
from rasterio.windows import Window
from rasterio.windows import transform as win_transform

from senclip.core import bench_record, sample_dir
from senclip.sentinel2 import cut_patches, open_scene

SCENE = sample_dir("sentinel2", "s2_l1c_virginia_crop.tif")


def random_points(n, size, seed=0):
    rng = np.random.default_rng(seed)
    with rasterio.open(SCENE) as src:
        cols = rng.uniform(size, src.width - size, n)
        rows = rng.uniform(size, src.height - size, n)
        x, y = src.transform @ (cols, rows)
        lon, lat = Transformer.from_crs(src.crs, 4326, always_xy=True).transform(x, y)
    return pd.DataFrame({"id": [f"{10000000 + i}" for i in range(n)], "lat": lat, "lon": lon})


def naive(points, out, size):
    "Open the raster for every point (the obvious loop; the coordinate transformer is built once, to be fair)."
    with rasterio.open(SCENE) as src:
        tr = Transformer.from_crs(4326, src.crs, always_xy=True)
    for pid, lat, lon in zip(points.id, points.lat, points.lon):
        with rasterio.open(SCENE) as src:
            x, y = tr.transform(lon, lat)
            col, row = ~src.transform @ (x, y)
            win = Window(int(round(col - size / 2)), int(round(row - size / 2)), size, size)
            data = src.read([3, 2, 1], window=win)
            with rasterio.open(out / f"{pid}.tif", "w", driver="GTiff", width=size, height=size, count=3,
                               dtype=data.dtype, crs=src.crs, transform=win_transform(win, src.transform),
                               nodata=0, compress="deflate") as dst:
                dst.write(data)


def ours(points, out, size):
    with open_scene(SCENE) as sc:
        res = cut_patches(sc, points, out, size=size, progress=False)
    assert (res.status == "ok").all(), res.status.value_counts()


def timed(fn, points, size):
    out = Path(tempfile.mkdtemp(prefix="bench_patches_"))
    try:
        t = time.perf_counter()
        fn(points, out, size)
        dt = time.perf_counter() - t
        assert len(list(out.glob("*.tif"))) == len(points)
        return dt
    finally:
        shutil.rmtree(out)


def main(n=400, size=100, repeats=3):
    pts = random_points(n, size)
    best = {"naive": np.inf, "ours": np.inf}
    for _ in range(repeats):  # interleaved, best of `repeats`
        for name, fn in (("naive", naive), ("ours", ours)):
            best[name] = min(best[name], timed(fn, pts, size))
    rate = {k: n / v for k, v in best.items()}
    print(f"{n} points, {size}x{size} px, best of {repeats}: naive {rate['naive']:.1f} patches/s, "
          f"ours {rate['ours']:.1f} patches/s")
    bench_record("pairs.patches_per_s.naive", rate["naive"], "patches/s")
    bench_record("pairs.patches_per_s.ours", rate["ours"], "patches/s")
    return bench_record("pairs.patches_per_s.ratio", rate["ours"] / rate["naive"], "x", goal=">= 1.5")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    a, _ = ap.parse_known_args()  # run_all.py may pass flags meant for other scripts (e.g. --gpu)
    main(a.n, a.size, a.repeats)
