"""senclip_map end to end on the sample Sentinel-2 crop: georeferencing, no-data tiles, other CRSs, per-band files, errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.warp import calculate_default_transform, reproject, transform as warp_transform, transform_bounds

from senclip.core import sample_dir
from senclip.mapping import NODATA_CLASS, map_scene

CROP = sample_dir("sentinel2", "s2_l1c_virginia_crop.tif")
EXE = Path(sys.executable).parent / "senclip_map"


@pytest.fixture(scope="module")
def model():
    import senclip

    return senclip.load("senclip-tiny-vit")


def _run(*args, **kw):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, env=env, timeout=120, **kw)


def _centres_inside(class_tif: Path, scene: Path, tile: int):
    "Every whole-tile class pixel's centre, through lon/lat and back, is the centre of its tile in the scene."
    with rasterio.open(class_tif) as m, rasterio.open(scene) as s:
        assert m.crs == s.crs
        # the edge cells (remainders) reach past the scene's edge: only cells of whole tiles are checked here
        rows, cols = np.mgrid[0:s.height // tile, 0:s.width // tile]
        xs, ys = rasterio.transform.xy(m.transform, rows.ravel(), cols.ravel())
        lon, lat = warp_transform(m.crs, "EPSG:4326", xs, ys)
        w, so, e, n = transform_bounds(s.crs, "EPSG:4326", *s.bounds)
        assert np.all((np.array(lon) > w) & (np.array(lon) < e) & (np.array(lat) > so) & (np.array(lat) < n))
        bx, by = warp_transform("EPSG:4326", s.crs, lon, lat)
        T = s.transform  # north-up: fractional scene pixel coordinates
        c, r = (np.array(bx) - T.c) / T.a, (np.array(by) - T.f) / T.e
        np.testing.assert_allclose(r, rows.ravel() * tile + tile / 2, atol=1e-3)
        np.testing.assert_allclose(c, cols.ravel() * tile + tile / 2, atol=1e-3)


@pytest.mark.slow  # over ~3 s on 2 cores: make test-slow (CI runs it)
def test_cli_sample_crop(tmp_path):
    out = tmp_path / "map"
    p = _run("--scene", CROP, "--model", "senclip-tiny-vit", "--out", out, "--tile", 64, "--prompts", "aerial",
             "--scoring", "cosine", "--device", "cpu", "--plot", "--quiet")
    assert p.returncode == 0, p.stderr
    assert "untrained weights — not a result" in p.stdout
    cls_tif = out / "s2_l1c_virginia_crop_classes.tif"
    with rasterio.open(cls_tif) as m, rasterio.open(CROP) as s:
        assert (m.height, m.width) == (16, 16) and m.dtypes[0] == "uint8" and m.nodata == NODATA_CLASS
        assert (m.transform.c, m.transform.f) == (s.transform.c, s.transform.f)
        assert (m.transform.a, m.transform.e) == (640.0, -640.0)
        cls = m.read(1)
        names = json.loads(m.tags()["CLASSES"])
        assert len(names) == 10 and m.tags()["CAVEAT"] == "untrained weights — not a result"
        assert len(m.colormap(1)) >= 10
    assert cls.max() < 10  # no no-data in the crop, all indices valid
    _centres_inside(cls_tif, CROP, 64)
    with rasterio.open(out / "s2_l1c_virginia_crop_confidence.tif") as c:
        conf = c.read()
        assert c.dtypes[0] == "float32" and conf.shape == (2, 16, 16) and c.transform == m.transform
    assert np.all((conf[0] > 0) & (conf[0] <= 1)) and np.all(conf[1] >= 0)
    counts = pd.read_csv(out / "s2_l1c_virginia_crop_counts.csv")
    assert counts.tiles.sum() == 256
    assert counts.set_index("class_index").tiles.drop(NODATA_CLASS).to_dict() == \
        {k: int((cls == k).sum()) for k in range(10)}
    assert (out / "s2_l1c_virginia_crop_map.png").stat().st_size > 10_000
    assert not list(out.glob(".*"))  # no temporary or resume files left


def test_nodata_corner(tmp_path, model):
    scene = tmp_path / "corner.tif"
    with rasterio.open(CROP) as s:
        prof, arr = s.profile, s.read()
    arr[:, :150, :150] = 0  # a no-data corner (Sentinel-2 nodata = 0)
    arr[2, 900, 1000] = 0  # one no-data pixel in one band (B04) near the bottom right
    with rasterio.open(scene, "w", **prof) as d:
        d.write(arr)
        d.descriptions = ("B02", "B03", "B04", "B08")
    p = map_scene(scene, model, out_dir=tmp_path / "out", tile=128, progress=False)
    with rasterio.open(p["classes"]) as m, rasterio.open(p["confidence"]) as c:
        cls, conf = m.read(1), c.read(1)
    bad = np.zeros((8, 8), bool)
    bad[:2, :2] = True  # tiles touching the 150 px corner
    bad[7, 7] = True  # the tile with the single zero pixel (row 900 // 128 = 7, col 1000 // 128 = 7)
    assert np.all(cls[bad] == NODATA_CLASS) and np.all(np.isnan(conf[bad]))
    assert np.all(cls[~bad] < 10) and not np.isnan(conf[~bad]).any()
    counts = pd.read_csv(p["counts"]).set_index("class_index")
    assert counts.loc[NODATA_CLASS, "tiles"] == 5 and counts.tiles.sum() == 64


def test_other_crs_and_per_band_files(tmp_path, model):
    # the crop's top-left 512 x 512 px warped into UTM zone 17N at 10 m, written as one file per band
    with rasterio.open(CROP) as s:
        win = rasterio.windows.Window(0, 0, 512, 512)
        src, src_tr = s.read(window=win), s.window_transform(win)
        bounds = rasterio.windows.bounds(win, s.transform)
        dst_crs = "EPSG:32617"
        tr, w, h = calculate_default_transform(s.crs, dst_crs, 512, 512, *bounds, resolution=10)
        folder = tmp_path / "scene_32617"
        folder.mkdir()
        for b, name in enumerate(("B02", "B03", "B04", "B08")):
            dst = np.zeros((h, w), np.uint16)
            reproject(src[b], dst, src_transform=src_tr, src_crs=s.crs, dst_transform=tr, dst_crs=dst_crs,
                      resampling=rasterio.enums.Resampling.bilinear, src_nodata=0, dst_nodata=0)
            with rasterio.open(folder / f"T17_20230501_{name}.tif", "w", driver="GTiff", width=w, height=h, count=1,
                               dtype="uint16", crs=dst_crs, transform=tr, nodata=0) as d:
                d.write(dst, 1)
    p = map_scene(folder, model, out_dir=tmp_path / "out", tile=64, scoring="class-mean", progress=False)
    with rasterio.open(p["classes"]) as m:
        assert m.crs.to_epsg() == 32617
        assert (m.height, m.width) == (-(-h // 64), -(-w // 64))  # the remainders are mapped too
        assert (m.transform.c, m.transform.f, m.transform.a) == (tr.c, tr.f, 640.0)
        cls = m.read(1)
    # the warped square is rotated in the new grid: its empty corners are no data, its middle is classified
    assert cls[0, 0] == NODATA_CLASS and np.all(cls[cls != NODATA_CLASS] < 10)
    assert (cls != NODATA_CLASS).sum() >= 16
    _centres_inside(p["classes"], folder / "T17_20230501_B04.tif", 64)


@pytest.mark.slow  # over ~3.5 s on a slow 2-core machine (torch imports in 4 s): make test-slow (CI runs it)
def test_errors(tmp_path, model):
    with pytest.raises(FileNotFoundError, match="available"):
        map_scene(CROP, model, prompts="nosuchset", out_dir=tmp_path, progress=False)
    with pytest.raises(KeyError, match=r"B05.*it has"):
        map_scene(CROP, model, bands=("B04", "B03", "B05"), out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown class set"):
        map_scene(CROP, model, dataset_classes="imagenet", out_dir=tmp_path, progress=False)
    p = _run("--scene", CROP, "--out", tmp_path, "--bands", "B04,B03,B12", "--quiet")
    assert p.returncode != 0 and "B12" in p.stderr and "it has" in p.stderr
    assert not list(tmp_path.glob("*.tif"))


def test_jp2_per_band_files_match_multiband(tmp_path, model):
    "Per-band JPEG-2000 files (as in a SAFE product's IMG_DATA) give the same map as the multi-band GeoTIFF."
    folder = tmp_path / "S2_SAFE_IMG_DATA"
    folder.mkdir()
    with rasterio.open(CROP) as s:
        win = rasterio.windows.Window(0, 0, 256, 256)
        arr, tr = s.read(window=win), s.window_transform(win)
        for b, name in enumerate(("B02", "B03", "B04")):
            with rasterio.open(folder / f"T18SVG_20230501T154809_{name}.jp2", "w", driver="JP2OpenJPEG", width=256,
                               height=256, count=1, dtype="uint16", crs=s.crs, transform=tr, nodata=0,
                               QUALITY=100, REVERSIBLE="YES") as d:
                d.write(arr[b], 1)
        ref = tmp_path / "ref.tif"
        with rasterio.open(ref, "w", driver="GTiff", width=256, height=256, count=4, dtype="uint16", crs=s.crs,
                           transform=tr, nodata=0) as d:
            d.write(arr)
            d.descriptions = ("B02", "B03", "B04", "B08")
    a = map_scene(folder, model, out_dir=tmp_path / "a", tile=64, progress=False)
    b = map_scene(ref, model, out_dir=tmp_path / "b", tile=64, progress=False)
    with rasterio.open(a["classes"]) as ma, rasterio.open(b["classes"]) as mb:
        assert ma.transform == mb.transform and ma.crs == mb.crs
        np.testing.assert_array_equal(ma.read(1), mb.read(1))


def test_demo_map_with_checkpoint_file(tmp_path, model):
    "demo_map maps the sample crop with a checkpoint given by path and saves the figure."
    from senclip.checkpoints import export_safetensors
    from senclip.mapping import demo_map

    ckpt = export_safetensors(model, tmp_path / "ckpt")
    out = demo_map(tmp_path / "demo", str(tmp_path / "ckpt"), device="cpu", tile=128)
    assert out["figure"].stat().st_size > 10_000
    meta = json.loads(Path(out["meta"]).read_text())
    assert meta["grid"] == [8, 8] and meta["valid_tiles"] == 64
    # the file was exported from a random-weights model and says so; the map's outputs carry the untrained caveat
    from senclip.zeroshot.evaluate import UNTRAINED

    assert model.random_weights and meta["caveat"] == UNTRAINED
    with rasterio.open(out["classes"]) as m:
        assert m.read(1).max() < 10


def test_remainders_mapped(tmp_path, model):
    "A scene that is not a whole number of tiles: the right and bottom remainders get a class from the edge-aligned tile."
    from rasterio.transform import Affine

    scene, edge = tmp_path / "odd.tif", tmp_path / "edge.tif"
    with rasterio.open(CROP) as s:
        win = rasterio.windows.Window(100, 200, 200, 150)  # 200 x 150 px: 3 tiles + 8 px wide, 2 tiles + 22 px tall
        prof = {**s.profile, "width": 200, "height": 150, "transform": s.window_transform(win)}
        with rasterio.open(scene, "w", **prof) as d:
            d.write(s.read(window=win))
            d.descriptions = s.descriptions
        corner = rasterio.windows.Window(100 + 200 - 64, 200 + 150 - 64, 64, 64)  # the edge-aligned last tile
        with rasterio.open(edge, "w", **{**prof, "width": 64, "height": 64, "transform": s.window_transform(corner)}) as d:
            d.write(s.read(window=corner))
            d.descriptions = s.descriptions
        crs, tr = s.crs, s.window_transform(win)
    p = map_scene(scene, model, out_dir=tmp_path / "out", tile=64, progress=False)
    with rasterio.open(p["classes"]) as m, rasterio.open(p["confidence"]) as c:
        assert (m.height, m.width) == (3, 4) and m.crs == crs  # ceil(150 / 64) x ceil(200 / 64)
        assert m.transform.almost_equals(tr @ Affine.scale(64))
        assert c.transform == m.transform and c.shape == (3, 4)
        cls, conf = m.read(1), c.read(1)
    assert np.all(cls < 10) and not np.isnan(conf).any()  # the remainder cells have a class
    meta = json.loads(Path(p["meta"]).read_text())
    assert meta["grid"] == [3, 4] and meta["valid_tiles"] == 12
    q = map_scene(edge, model, out_dir=tmp_path / "edge", tile=64, progress=False)
    with rasterio.open(q["classes"]) as e, rasterio.open(q["confidence"]) as ec:
        assert e.read(1)[0, 0] == cls[-1, -1]  # the corner cell is the class of the edge-aligned tile
        np.testing.assert_allclose(ec.read(1)[0, 0], conf[-1, -1], rtol=1e-5)


@pytest.mark.parametrize("stretch_on", ["host", "device"])
def test_overlapped_embedding_equals_sequential(tmp_path, model, stretch_on):
    "embed_shard reads strips in a background thread, syncs once per shard, may stretch on the device: a plain loop's embeddings."
    import torch

    from senclip.mapping import MapConfig, _embed_batch, embed_shard, iter_tile_strips, stretch_tiles
    from senclip.sentinel2 import open_scene

    scene = tmp_path / "holes.tif"
    with rasterio.open(CROP) as s:
        prof, arr = s.profile, s.read()
    arr[:, 400:600, :300] = 0  # no-data tiles on both sides of the first strip's end (tile rows 6-9 of 16 tiles)
    with rasterio.open(scene, "w", **prof) as d:
        d.write(arr)
        d.descriptions = ("B02", "B03", "B04", "B08")
    cfg = MapConfig(tile=64, batch_size=24, stretch_on=stretch_on)  # batches straddle strips
    with open_scene(scene) as sc:
        got = embed_shard(sc, model, cfg, "none", 100, 180)  # strips of 8 tile rows: 100-127, then 128-179
        ref, why = [], []
        for idx, tiles, nodf, _ in iter_tile_strips(sc, cfg.bands, 64, 64, 100, 180):
            keep = nodf <= cfg.max_nodata
            why.append(np.where(keep, 0, 1)), ref.append(stretch_tiles(tiles[keep], cfg.bands))
    x = np.concatenate(ref)
    z = torch.cat([_embed_batch(model, x[b:b + 24], "cpu") for b in range(0, len(x), 24)]).numpy()
    np.testing.assert_array_equal(got["why"], np.concatenate(why))
    assert 0 < got["valid"].sum() < 80 and np.array_equal(got["valid"], np.concatenate(why) == 0)
    np.testing.assert_array_equal(got["emb"][got["valid"]], z)
    assert not got["emb"][~got["valid"]].any()
