"""Rebuild data/sample/pairs/ (committed): a LUCAS-2018-format point table inside the bundled Sentinel-2 crop and
PLACEHOLDER ground photos in the LUCAS photo layout.

    .venv/bin/python data/sample/pairs/make.py

- 60 rows. Good points are pixel centres of data/sample/sentinel2/s2_l1c_virginia_crop.tif (EPSG:32618)
  reprojected to WGS84, at least 60 px from the crop edge. LC1 codes are derived from the pixel by a crude NDVI
  rule (water / woodland / grassland / cropland); they are placeholders, not LUCAS survey labels.
- Deliberately bad rows: projected coordinates in TH_LAT/TH_LONG (one repairable from GPS_LAT/GPS_LONG, one not),
  a missing date, an impossible latitude, a point outside the scene, a point whose window touches the scene edge,
  a point without photos, and points with some directions missing.
- Photos: 128x128 JPEG (quality 80) crops of real photos shipped with scikit-image (skimage.data) and scikit-learn
  (load_sample_images). They are NOT LUCAS photos: they only give the pipeline real JPEGs to decode and embed.
"""
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from PIL import Image
from pyproj import Transformer

HERE = Path(__file__).resolve().parent
SCENE = HERE.parent / "sentinel2" / "s2_l1c_virginia_crop.tif"
N_ROWS = 60
SEED = 2018


def source_photos():
    import skimage.data as d
    from sklearn.datasets import load_sample_images

    imgs = [getattr(d, n)() for n in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")]
    imgs += [np.stack([getattr(d, n)()] * 3, -1) for n in ("grass", "gravel", "brick")]
    imgs += list(load_sample_images().images)
    return imgs


def cut(rng, imgs):
    img = imgs[rng.integers(len(imgs))]
    h, w = img.shape[:2]
    s = int(rng.integers(96, min(h, w)))
    y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
    im = Image.fromarray(img[y:y + s, x:x + s]).resize((128, 128), Image.LANCZOS)
    return im.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else im


def lc1_from_pixel(b03, b04, b08):
    ndvi = (b08 - b04) / max(b08 + b04, 1)
    if b08 < b03:
        return "G20", "U420"  # water, transitional waters / no visible use
    if ndvi > 0.6:
        return "C10", "U120"  # broadleaved woodland / forestry
    if ndvi > 0.35:
        return "E20", "U111"  # grassland / agriculture
    return "B11", "U111"  # cropland / agriculture


def main():
    rng = np.random.default_rng(SEED)
    with rasterio.open(SCENE) as src:
        arr = src.read().astype(float)  # B02, B03, B04, B08
        t, crs, (H, W) = src.transform, src.crs, (src.height, src.width)
    to_ll = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    m = 60
    rows = []
    for k in range(N_ROWS):
        r, c = int(rng.integers(m, H - m)), int(rng.integers(m, W - m))
        x, y = t * (c + 0.5, r + 0.5)
        lon, lat = to_ll.transform(x, y)
        lc1, lu1 = lc1_from_pixel(arr[1, r, c], arr[2, r, c], arr[3, r, c])
        day = int(rng.integers(1, 29))
        rows.append(dict(
            POINT_ID=f"{26000000 + 1000 * k + int(rng.integers(1000)):08d}", NUTS0="US",
            TH_LAT=f"{lat:.6f}", TH_LONG=f"{lon:.6f}", SURVEY_DATE=f"{day:02d}/0{int(rng.integers(6, 9))}/18",
            GPS_LAT=f"{lat + rng.normal(0, 2e-5):.6f}", GPS_LONG=f"{lon + rng.normal(0, 2e-5):.6f}", GPS_EW="2",
            OBS_DIST=f"{abs(rng.normal(5, 3)):.0f}", LC1=lc1, LC1_SPEC="8", LU1=lu1,
            PHOTO_POINT="1", PHOTO_NORTH="1", PHOTO_EAST="1", PHOTO_SOUTH="1", PHOTO_WEST="1",
        ))
    to_utm = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    # --- deliberately bad rows
    x, y = to_utm.transform(float(rows[0]["TH_LONG"]), float(rows[0]["TH_LAT"]))
    rows[0].update(TH_LAT=f"{y:.1f}", TH_LONG=f"{x:.1f}")  # projected coords; GPS present -> repaired
    x, y = to_utm.transform(float(rows[1]["TH_LONG"]), float(rows[1]["TH_LAT"]))
    rows[1].update(TH_LAT=f"{y:.1f}", TH_LONG=f"{x:.1f}", GPS_LAT="88.888888", GPS_LONG="88.888888")  # rejected
    rows[2].update(SURVEY_DATE="")  # missing date
    rows[3].update(TH_LAT="95.000000", GPS_LAT="88.888888", GPS_LONG="88.888888")  # impossible latitude
    lon, lat = to_ll.transform(*(t * (W + 300, H / 2)))
    rows[4].update(TH_LAT=f"{lat:.6f}", TH_LONG=f"{lon:.6f}", GPS_LAT=f"{lat:.6f}", GPS_LONG=f"{lon:.6f}")  # outside scene
    lon, lat = to_ll.transform(*(t * (20.5, H / 2 + 0.5)))
    rows[5].update(TH_LAT=f"{lat:.6f}", TH_LONG=f"{lon:.6f}", GPS_LAT=f"{lat:.6f}", GPS_LONG=f"{lon:.6f}")  # window at edge
    rows[6].update(PHOTO_POINT="2", PHOTO_NORTH="2", PHOTO_EAST="2", PHOTO_SOUTH="2", PHOTO_WEST="2")  # no photos
    rows[7].update(PHOTO_EAST="2")  # some directions missing
    rows[8].update(PHOTO_SOUTH="2", PHOTO_WEST="2")
    df = pd.DataFrame(rows)
    df.to_csv(HERE / "lucas_2018_sample.csv", index=False)

    # --- placeholder photos in the LUCAS layout
    photos = HERE / "photos"
    shutil.rmtree(photos, ignore_errors=True)
    imgs = source_photos()
    for r in rows:
        pid = r["POINT_ID"]
        for v, col in zip("PNESW", ("PHOTO_POINT", "PHOTO_NORTH", "PHOTO_EAST", "PHOTO_SOUTH", "PHOTO_WEST")):
            if r[col] != "1" or v == "P":  # the point photo is not used by SenCLIP: keep the sample small
                continue
            dest = photos / r["NUTS0"] / pid[0:3] / pid[3:6] / f"{pid}{v}.jpg"
            dest.parent.mkdir(parents=True, exist_ok=True)
            cut(rng, imgs).save(dest, "JPEG", quality=80)
    total = sum(p.stat().st_size for p in photos.rglob("*.jpg"))
    print(f"{len(df)} rows, {len(list(photos.rglob('*.jpg')))} photos, {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
