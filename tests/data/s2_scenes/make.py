"""Rebuild the small Sentinel-2 raster fixtures in this folder from data/sample/sentinel2 (fixed seed; committed).

    .venv/bin/python tests/data/s2_scenes/make.py

- l1c_bands/: an L1C scene as one JPEG2000 file per band (B02, B03, B04 at 10 m, 128x128 px cut from the bundled
  crop; B10 cirrus at 60 m, synthetic low values), with a 28x28 px no-data (0) corner and a painted bright, white
  "cloud" (B02-B04 ~ 0.45-0.5 reflectance, B10 high) so every rejection reason can be hit.
- crop_4326.tif: a 256x256 px piece of the crop reprojected to EPSG:4326 (multi-band, band names in a BANDS tag only).
- zone_edge_32618.tif / zone_edge_32619.tif: the same pixels placed across the UTM zone 18/19 boundary (-72 deg)
  in EPSG:32618, and that raster reprojected to EPSG:32619 (band names as descriptions).
"""
from pathlib import Path

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.transform import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject

HERE = Path(__file__).resolve().parent
CROP = HERE.parents[2] / "data" / "sample" / "sentinel2" / "s2_l1c_virginia_crop.tif"


def main():
    rng = np.random.default_rng(0)
    with rasterio.open(CROP) as src:
        crs, t = src.crs, src.transform
        a = src.read(window=((300, 428), (300, 428)))  # B02, B03, B04, B08
        big = src.read(window=((250, 410), (250, 410)))  # 160x160
    t128 = t * Affine.translation(300, 300)
    t256 = t * Affine.translation(250, 250)
    # --- L1C, one JP2 per band
    out = HERE / "l1c_bands"
    out.mkdir(exist_ok=True)
    vis = a[:3].copy()
    vis[:, :28, :28] = 0  # no-data corner
    vis[:, 10:54, 74:118] = (4700 + rng.normal(0, 60, (3, 44, 44))).astype("uint16")  # bright white cloud
    b10 = (8 + rng.integers(0, 4, (22, 22))).astype("uint16")
    b10[2:9, 12:20] = 300  # cirrus above the cloud
    b10[:5, :5] = 0
    for band, arr, tr in [("B02", vis[0], t128), ("B03", vis[1], t128), ("B04", vis[2], t128),
                          ("B10", b10, t128 * Affine.scale(6))]:
        with rasterio.open(out / f"S2B_MSIL1C_20180628T155539_{band}.jp2", "w", driver="JP2OpenJPEG", width=arr.shape[1],
                           height=arr.shape[0], count=1, dtype="uint16", crs=crs, transform=tr, nodata=0,
                           QUALITY=100, REVERSIBLE="YES") as dst:
            dst.write(arr, 1)
    # --- EPSG:4326 copy
    dst_t, w, h = calculate_default_transform(crs, "EPSG:4326", 160, 160, *rasterio.transform.array_bounds(160, 160, t256))
    arr = np.zeros((4, h, w), "uint16")
    for i in range(4):
        reproject(big[i], arr[i], src_transform=t256, src_crs=crs, dst_transform=dst_t, dst_crs="EPSG:4326",
                  resampling=Resampling.nearest, src_nodata=0, dst_nodata=0)
    with rasterio.open(HERE / "crop_4326.tif", "w", driver="GTiff", width=w, height=h, count=4, dtype="uint16",
                       crs="EPSG:4326", transform=dst_t, nodata=0, compress="deflate") as dst:
        dst.write(arr)
        dst.update_tags(BANDS="B02,B03,B04,B08", PRODUCT="L1C")
    # --- across the UTM 18/19 boundary at 37.7 N
    x, y = Transformer.from_crs(4326, 32618, always_xy=True).transform(-72.0, 37.7)
    tz = Affine(10, 0, round(x) - 800, 0, -10, round(y) + 800)
    with rasterio.open(HERE / "zone_edge_32618.tif", "w", driver="GTiff", width=160, height=160, count=3, dtype="uint16",
                       crs="EPSG:32618", transform=tz, nodata=0, compress="deflate") as dst:
        dst.write(big[[2, 1, 0]])
        dst.descriptions = ("B04", "B03", "B02")
    bounds = rasterio.transform.array_bounds(160, 160, tz)
    dst_t, w, h = calculate_default_transform("EPSG:32618", "EPSG:32619", 160, 160, *bounds, resolution=10)
    arr = np.zeros((3, h, w), "uint16")
    for i, b in enumerate([2, 1, 0]):
        reproject(big[b], arr[i], src_transform=tz, src_crs="EPSG:32618", dst_transform=dst_t, dst_crs="EPSG:32619",
                  resampling=Resampling.nearest, src_nodata=0, dst_nodata=0)
    with rasterio.open(HERE / "zone_edge_32619.tif", "w", driver="GTiff", width=w, height=h, count=3, dtype="uint16",
                       crs="EPSG:32619", transform=dst_t, nodata=0, compress="deflate") as dst:
        dst.write(arr)
        dst.descriptions = ("B04", "B03", "B02")
    print(sorted((p.name, p.stat().st_size) for p in HERE.rglob("*") if p.is_file()))


if __name__ == "__main__":
    main()
