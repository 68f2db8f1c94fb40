"""Rebuild the region-mosaic fixtures in this folder (committed): a static STAC catalogue (`sentinel-2-l2a`) of four
small invented L2A scenes around the UTM zone 18/19 boundary (-72 deg, 37.7 N), each a folder of COGs (B02, B03,
B04 at 10 m, SCL at 20 m; 192 x 192 px, 32 px blocks) cut from data/sample/sentinel2, and `region.json` (the bbox
and month the tests and nbs/05b_region.ipynb map).

    .venv/bin/python tests/data/region/make.py

The scenes look at one "ground" (the bundled crop placed here), as a real revisit does:
- A `S2A_T18_20180610_c03` (EPSG:32618, 3 % cloud): the west of the bbox, with a no-data triangle in its south-west
  corner, an SCL 9 cloud block (only C under it) and an SCL 8 cloud block (B under it);
- B `S2B_T19_20180618_c10` (EPSG:32619, 10 %, processing baseline 04.00, so every DN carries the +1000 offset): the
  east of the bbox;
- C `S2A_T18_20180625_c40` (EPSG:32618, 40 %): the whole bbox, brighter (haze, x1.25), with an SCL 10 cirrus patch
  inside A's SCL 9 block (a place cloudy in every scene);
- D `S2A_T18_20180705_c01` (July, 1 %): the same files as A; the clearest scene, but not of June.
"""
import json
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pystac
import rasterio
from pyproj import Transformer
from rasterio.transform import Affine
from rasterio.warp import Resampling, reproject, transform_bounds

HERE = Path(__file__).resolve().parent
CROP = HERE.parents[2] / "data" / "sample" / "sentinel2" / "s2_l1c_virginia_crop.tif"
BBOX = (-72.012, 37.695, -71.996, 37.705)  # W, S, E, N
N = 192  # scene size, px at 10 m


def cog(path, arr, crs, tr, name):
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="COG", width=arr.shape[1], height=arr.shape[0], count=1, dtype=arr.dtype,
                       crs=crs, transform=tr, nodata=0, compress="deflate", predictor=2, blocksize=32,
                       overview_resampling="nearest") as dst:
        dst.write(arr, 1)
        dst.descriptions = (name,)


def scl_of(vis):
    "Synthetic SCL at 20 m: 6 (water) where green > red + 10 %, else 4 (vegetation); 0 where the bands are no data."
    g, r = vis[1, ::2, ::2].astype(int), vis[0, ::2, ::2].astype(int)
    scl = np.where(g > r * 1.1, 6, 4).astype("uint8")
    scl[(vis[:, ::2, ::2] == 0).any(0)] = 0
    return scl


def write_scene(name, vis, scl, crs, tr):
    "vis: (3, N, N) B04, B03, B02."
    for b, arr in zip(["B04", "B03", "B02"], vis):
        cog(HERE / "cog" / name / f"{b}.tif", arr, crs, tr, b)
    cog(HERE / "cog" / name / "SCL.tif", scl, crs, tr * Affine.scale(2), "SCL")


def ground():
    "The bundled crop's B04, B03, B02 placed on a 10 m EPSG:32618 grid around the bbox (DNs rounded to 16)."
    to18 = Transformer.from_crs(4326, 32618, always_xy=True)
    x0, _ = to18.transform(BBOX[0], BBOX[1])
    _, y1 = to18.transform(BBOX[0], BBOX[3])
    tr = Affine(10, 0, round(x0, -1) - 1100, 0, -10, round(y1, -1) + 500)
    with rasterio.open(CROP) as src:
        g = src.read([3, 2, 1], window=((100, 100 + 300), (100, 100 + 420)))
    return (g // 16 * 16).astype("uint16"), tr, x0, y1


def scene_a(g, tg, bx0, by1):
    tr = Affine(10, 0, round(bx0, -1) + 900 - N * 10, 0, -10, round(by1, -1) + 400)
    c, r = int((tr.c - tg.c) / 10), int((tg.f - tr.f) / 10)
    vis = g[:, r:r + N, c:c + N].copy()
    rows, cols = np.mgrid[:N, :N]
    vis[:, rows - cols > N - 40] = 0  # no-data triangle, south-west
    scl = scl_of(vis)
    col_of = lambda x: int((round(bx0, -1) + x - tr.c) / 20)  # SCL column of bbox-relative metres
    scl[30:50, col_of(200):col_of(500)] = 9  # cloud, only C under it
    scl[60:75, col_of(650):col_of(850)] = 8  # cloud, B under it
    return vis, scl, tr


def scene_b(g, tg, bx0, by1):
    to19 = Transformer.from_crs(32618, 32619, always_xy=True)
    x, y = to19.transform(round(bx0, -1) + 600, round(by1, -1) + 400)
    tr = Affine(10, 0, round(x, -1), 0, -10, round(y, -1))
    vis = np.zeros((3, N, N), "uint16")
    for i in range(3):
        reproject(g[i], vis[i], src_transform=tg, src_crs="EPSG:32618", dst_transform=tr, dst_crs="EPSG:32619",
                  resampling=Resampling.nearest, src_nodata=0, dst_nodata=0)
    scl = scl_of(vis)
    vis = np.where(vis > 0, vis + 1000, 0).astype("uint16")  # processing baseline 04.00: DN = 10000 * refl + 1000
    return vis, scl, tr


def scene_c(g, tg, bx0, by1, a_tr):
    tr = Affine(10, 0, round(bx0, -1) - 250, 0, -10, round(by1, -1) + 400)
    c, r = int((tr.c - tg.c) / 10), int((tg.f - tr.f) / 10)
    vis = np.clip(g[:, r:r + N, c:c + N].astype(float) * 1.25, 1, 65535).astype("uint16")
    scl = scl_of(vis)
    ca, ra = int((a_tr.c - tr.c) / 20), int((tr.f - a_tr.f) / 20)  # A's SCL grid in C's
    col_of = lambda x: int((round(bx0, -1) + x - a_tr.c) / 20) + ca
    scl[ra + 35:ra + 42, col_of(300):col_of(380)] = 10  # cirrus inside A's cloud: cloudy in every scene
    return vis, scl, tr


def footprint(crs, tr):
    xs, ys = zip(*[tr * (c, r) for c, r in [(0, 0), (N, 0), (N, N), (0, N), (0, 0)]])
    lon, lat = Transformer.from_crs(crs, 4326, always_xy=True).transform(xs, ys)
    ring = [[round(a, 7), round(b, 7)] for a, b in zip(lon, lat)]
    return {"type": "Polygon", "coordinates": [ring]}, [min(lon), min(lat), max(lon), max(lat)]


def catalogue(scenes):
    "scenes: (id, date, cloud, baseline, epsg, folder, transform)."
    cat = pystac.Catalog("senclip-region-test", "Local Sentinel-2 L2A scenes for senclip region mosaics (invented metadata)")
    boxes = [footprint(f"EPSG:{e}", t)[1] for *_, e, _, t in scenes]
    ext = [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]
    coll = pystac.Collection("sentinel-2-l2a", "Sentinel-2 L2A test scenes", pystac.Extent(
        pystac.SpatialExtent([ext]), pystac.TemporalExtent([[datetime(2018, 6, 1), datetime(2018, 7, 31)]])))
    cat.add_child(coll)
    for iid, date, cc, baseline, epsg, folder, tr in scenes:
        geom, bb = footprint(f"EPSG:{epsg}", tr)
        it = pystac.Item(iid, geom, bb, datetime.fromisoformat(date + "T15:55:39"),
                         {"eo:cloud_cover": cc, "s2:processing_baseline": baseline, "s2:product_type": "S2MSI2A",
                          "platform": "Sentinel-2" + iid[2], "proj:epsg": epsg})
        for b in ["B02", "B03", "B04", "SCL"]:
            it.add_asset(b, pystac.Asset(str(HERE / "cog" / folder / f"{b}.tif"), media_type=pystac.MediaType.COG,
                                         roles=["data"]))
        coll.add_item(it)
    cat.normalize_hrefs(str(HERE))
    cat.make_all_asset_hrefs_relative()
    cat.save(pystac.CatalogType.SELF_CONTAINED)


def main():
    for p in HERE.iterdir():
        if p.is_dir():
            shutil.rmtree(p)
        elif p.name != "make.py":
            p.unlink()
    g, tg, bx0, by1 = ground()
    va, sa, ta = scene_a(g, tg, bx0, by1)
    vb, sb, tb = scene_b(g, tg, bx0, by1)
    vc, sc, tc = scene_c(g, tg, bx0, by1, ta)
    write_scene("A", va, sa, "EPSG:32618", ta)
    write_scene("B", vb, sb, "EPSG:32619", tb)
    write_scene("C", vc, sc, "EPSG:32618", tc)
    catalogue([("S2A_T18_20180610_c03", "2018-06-10", 3.0, "02.09", 32618, "A", ta),
               ("S2B_T19_20180618_c10", "2018-06-18", 10.0, "04.00", 32619, "B", tb),
               ("S2A_T18_20180625_c40", "2018-06-25", 40.0, "02.09", 32618, "C", tc),
               ("S2A_T18_20180705_c01", "2018-07-05", 1.0, "02.09", 32618, "A", ta)])
    (HERE / "region.json").write_text(json.dumps({"bbox": list(BBOX), "date": "2018-06"}, indent=1) + "\n")
    print(sorted((str(p.relative_to(HERE)), p.stat().st_size) for p in HERE.rglob("*") if p.is_file()))
    print("total", sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file()))


if __name__ == "__main__":
    main()
