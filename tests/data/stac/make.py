"""Rebuild the local static STAC catalogue in this folder (committed): a `sentinel-2-l2a` collection whose items all
point at small COGs cut from data/sample/sentinel2 (B02, B03, B04 at 10 m, SCL at 20 m), with invented dates and
cloud covers chosen to exercise the scene selection (survey month, widening by up to +-2 months, cloud limit), plus
one item elsewhere (Europe) whose assets are the same files (its footprint decides, not its pixels).

    .venv/bin/python tests/data/stac/make.py

SCL is synthetic: 6 (water) where B08 < B03, else 4 (vegetation), with a 12x12 px block of class 9 (cloud high
probability) in the north-west corner.
"""
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pystac
import rasterio
from rasterio.transform import Affine
from rasterio.warp import transform_bounds

HERE = Path(__file__).resolve().parent
CROP = HERE.parents[2] / "data" / "sample" / "sentinel2" / "s2_l1c_virginia_crop.tif"
ITEMS = [  # id, date, eo:cloud_cover
    ("S2_20180605_c15", "2018-06-05", 15.0),
    ("S2_20180620_c05", "2018-06-20", 5.0),
    ("S2_20180715_c12", "2018-07-15", 12.0),
    ("S2_20180812_c60", "2018-08-12", 60.0),
    ("S2_20180905_c08", "2018-09-05", 8.0),
    ("S2_20181020_c02", "2018-10-20", 2.0),
]


def cog(path, arr, crs, tr, name):
    with rasterio.open(path, "w", driver="COG", width=arr.shape[1], height=arr.shape[0], count=1, dtype=arr.dtype,
                       crs=crs, transform=tr, nodata=0, compress="deflate", blocksize=64) as dst:
        dst.write(arr, 1)
        dst.descriptions = (name,)


def main():
    for p in HERE.iterdir():
        if p.is_dir():
            shutil.rmtree(p)
        elif p.name != "make.py":
            p.unlink()
    with rasterio.open(CROP) as src:
        crs = src.crs
        a = src.read(window=((400, 528), (400, 528)))  # B02, B03, B04, B08
        tr = src.transform * Affine.translation(400, 400)
    (HERE / "cog").mkdir()
    for i, b in enumerate(["B02", "B03", "B04"]):
        cog(HERE / "cog" / f"{b}.tif", a[i], crs, tr, b)
    b03, b08 = a[1, ::2, ::2].astype(int), a[3, ::2, ::2].astype(int)
    scl = np.where(b08 < b03, 6, 4).astype("uint8")
    scl[:12, :12] = 9
    cog(HERE / "cog" / "SCL.tif", scl, crs, tr * Affine.scale(2), "SCL")
    w, s, e, n = transform_bounds(crs, "EPSG:4326", *rasterio.transform.array_bounds(128, 128, tr))
    geom = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    cat = pystac.Catalog("senclip-test", "Local static Sentinel-2 catalogue for senclip tests (invented metadata)")
    coll = pystac.Collection("sentinel-2-l2a", "Sentinel-2 L2A test items", pystac.Extent(
        pystac.SpatialExtent([[w, s, e, n]]), pystac.TemporalExtent([[datetime(2018, 1, 1), datetime(2018, 12, 31)]])))
    cat.add_child(coll)
    items = ITEMS + [("S2_20180620_europe", "2018-06-20", 0.0)]
    for iid, date, cc in items:
        g, bb = geom, [w, s, e, n]
        if "europe" in iid:
            g = {"type": "Polygon", "coordinates": [[[9, 44], [11, 44], [11, 46], [9, 46], [9, 44]]]}
            bb = [9, 44, 11, 46]
        it = pystac.Item(iid, g, bb, datetime.fromisoformat(date + "T15:55:39"),
                         {"eo:cloud_cover": cc, "s2:processing_baseline": "02.09", "s2:product_type": "S2MSI2A",
                          "platform": "Sentinel-2B"})
        for b in ["B02", "B03", "B04", "SCL"]:
            it.add_asset(b, pystac.Asset(str(HERE / "cog" / f"{b}.tif"), media_type=pystac.MediaType.COG, roles=["data"]))
        coll.add_item(it)
    cat.normalize_hrefs(str(HERE))
    cat.make_all_asset_hrefs_relative()
    cat.save(pystac.CatalogType.SELF_CONTAINED)
    print(sorted(str(p.relative_to(HERE)) for p in HERE.rglob("*") if p.is_file()))


if __name__ == "__main__":
    main()
