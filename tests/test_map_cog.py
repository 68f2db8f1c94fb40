"""Issue 13 item 1 for maps: real COGs (tiling, overviews, colour table, IFDs before the data), clouds and nodata as
no data, overlapping windows averaged onto the stride grid (checked by hand), one-line band errors, --set."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from senclip.core import UserError, sample_dir
from senclip.mapping import NODATA_CLASS, MapConfig, cell_windows, map_scene, onto_cells

CROP = sample_dir("sentinel2", "s2_l1c_virginia_crop.tif")


@pytest.fixture(scope="module")
def model():
    import senclip

    return senclip.load("senclip-tiny-vit", device="cpu")


def _window(path, col, row, w, h, edit=None, scl=None):
    "A window of the crop as a 4-band GeoTIFF (`edit(arr)` changes it first); with `scl`, an SCL file beside it."
    with rasterio.open(CROP) as s:
        win = rasterio.windows.Window(col, row, w, h)
        arr, tr = s.read(window=win), s.window_transform(win)
        prof = {**s.profile, "width": w, "height": h, "transform": tr}
    if edit:
        edit(arr)
    with rasterio.open(path, "w", **prof) as d:
        d.write(arr)
        d.descriptions = ("B02", "B03", "B04", "B08")
    if scl is not None:
        with rasterio.open(path.with_name("SCL.tif"), "w", driver="GTiff", width=w // 2, height=h // 2, count=1,
                           dtype="uint8", crs=prof["crs"], transform=tr * rasterio.Affine.scale(2)) as d:
            d.write(scl, 1)
    return path


def test_outputs_are_cogs(tmp_path, model):
    p = map_scene(CROP, model, out_dir=tmp_path, tile=16, probabilities=True, progress=False, cloud_test="none")
    with rasterio.open(p["classes"]) as m, rasterio.open(CROP) as s:
        assert (m.crs, m.shape, m.block_shapes) == (s.crs, (64, 64), [(16, 16)])
        assert m.transform == s.transform * rasterio.Affine.scale(16)
        assert m.overviews(1) == [2, 4] and m.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert len(json.loads(m.tags()["CLASSES"])) == 10 and m.colormap(1)[NODATA_CLASS] == (0, 0, 0, 0)
        full, ov = m.read(1), m.read(1, out_shape=(16, 16))
        assert set(np.unique(ov)) <= set(np.unique(full))  # nearest overviews: class values only
    head = Path(p["classes"]).read_bytes()[:400]  # GDAL's COG ghost header: directories before the image data
    assert b"LAYOUT=IFDS_BEFORE_DATA" in head and b"BLOCK_ORDER=ROW_MAJOR" in head
    with rasterio.open(p["probabilities"]) as pr:
        assert pr.count == 10 and pr.tags(1, ns="IMAGE_STRUCTURE").get("NBITS") == "16" and pr.overviews(1)
        np.testing.assert_allclose(pr.read().sum(0), 1, atol=1e-2)


def test_nodata_border_and_clouds(tmp_path, model):
    def border(a):
        a[:, :, :40] = 0  # a nodata border on the left (all bands 0)

    scene = _window(tmp_path / "border.tif", 0, 0, 256, 256, border)
    p = map_scene(scene, model, out_dir=tmp_path / "b", tile=64, progress=False)
    with rasterio.open(p["classes"]) as m:
        cls = m.read(1)
    assert (cls[:, 0] == NODATA_CLASS).all() and (cls[:, 1:] < 10).all()
    # L2A: SCL says the top-right quarter is cloud (class 9) and one tile is cloud shadow (3)
    scl = np.full((128, 128), 4, np.uint8)
    scl[:64, 64:] = 9
    scl[96:128, 0:32] = 3
    (tmp_path / "l2a").mkdir()
    scene = _window(tmp_path / "l2a" / "scene.tif", 0, 0, 256, 256, scl=scl)
    p = map_scene(scene, model, out_dir=tmp_path / "c", tile=64, progress=False, scl=tmp_path / "l2a" / "SCL.tif")
    with rasterio.open(p["classes"]) as m, rasterio.open(p["confidence"]) as c:
        cls, conf = m.read(1), c.read(1)
    cloudy = np.zeros((4, 4), bool)
    cloudy[:2, 2:] = True
    cloudy[3, 0] = True
    assert (cls[cloudy] == NODATA_CLASS).all() and np.isnan(conf[cloudy]).all() and (cls[~cloudy] < 10).all()
    meta = json.loads(Path(p["meta"]).read_text())
    assert meta["cloud_test"] == "scl" and meta["cloud_tiles"] == 5 and meta["nodata_tiles"] == 5
    # a cloudy tile by the L1C brightness test: bright and white
    def bright(a):
        a[:3, 64:128, 64:128] = 6000

    p = map_scene(_window(tmp_path / "white.tif", 0, 0, 256, 256, bright), model, out_dir=tmp_path / "w", tile=64,
                  progress=False)
    with rasterio.open(p["classes"]) as m:
        assert m.read(1)[1, 1] == NODATA_CLASS and json.loads(Path(p["meta"]).read_text())["cloud_test"] == "brightness"


def test_overlap_average_by_hand(tmp_path, model, monkeypatch):
    "stride < tile: each cell is the mean probability of the valid windows containing its centre (hand computation)."
    import senclip.mapping as mm

    scene = _window(tmp_path / "small.tif", 0, 0, 160, 96)
    p = map_scene(scene, model, out_dir=tmp_path / "o", tile=64, stride=32, probabilities=True, progress=False,
                  cloud_test="none")
    single = map_scene(scene, model, out_dir=tmp_path / "s", tile=64, stride=32, progress=False, cloud_test="none",
                       dataset_classes="eurosat", probabilities=False)
    z = np.load(p["embeddings"])
    assert tuple(z["grid"]) == (2, 4)  # windows: rows at 0, 32 (96 px tall); columns at 0, 32, 64, 96 (160 px wide)
    from senclip.zeroshot.classify import zeroshot_scores

    bank = mm._prompt_bank(model, "eurosat", "aerial")[0]
    import torch

    S = zeroshot_scores(torch.from_numpy(z["emb"]), bank, "cosine")
    P = torch.softmax(model.model.logit_scale.detach().exp() * S, -1).numpy().reshape(2, 4, 10)
    # cell (1, 2) covers rows 32-63, columns 64-95: its centre (48, 80) lies in the windows at rows 0 and 32
    # (0-63, 32-95) and at columns 32 and 64 (32-95, 64-127): the mean of those four windows' probabilities
    with rasterio.open(p["probabilities"]) as pr, rasterio.open(p["classes"]) as m:
        assert m.shape == (3, 5) and m.transform.a == 320.0
        np.testing.assert_allclose(pr.read()[:, 1, 2], P[0:2, 1:3].mean((0, 1)), atol=2e-3)  # float16
        assert m.read(1)[1, 2] == P[0:2, 1:3].mean((0, 1)).argmax()
        np.testing.assert_allclose(pr.read()[:, 0, 0], P[0, 0], atol=2e-3)  # the corner cell: one window
    with rasterio.open(single["classes"]) as a, rasterio.open(p["classes"]) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))


@pytest.mark.slow  # two senclip_map processes: make test-slow (CI runs it)
def test_band_errors_and_other_zone(tmp_path, model):
    folder = tmp_path / "bands"
    folder.mkdir()
    with rasterio.open(CROP) as s:
        win = rasterio.windows.Window(0, 0, 256, 256)
        arr, tr, crs = s.read(window=win), s.window_transform(win), s.crs
    for b, name in enumerate(("B02", "B03")):
        with rasterio.open(folder / f"T_{name}.tif", "w", driver="GTiff", width=256, height=256, count=1,
                           dtype="uint16", crs=crs, transform=tr, nodata=0) as d:
            d.write(arr[b], 1)
    with pytest.raises(KeyError, match=r"B04.*not found.*it has"):
        map_scene(folder, model, out_dir=tmp_path / "m", progress=False)
    with rasterio.open(folder / "T_B04.tif", "w", driver="GTiff", width=128, height=128, count=1, dtype="uint16",
                       crs=crs, transform=tr * rasterio.Affine.scale(2), nodata=0) as d:
        d.write(arr[2, ::2, ::2], 1)  # B04 at 20 m
    with pytest.raises(UserError, match=r"T_B04\.tif: band B04 is at 20 m"):
        map_scene(folder, model, out_dir=tmp_path / "m", progress=False)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "senclip.mapping", "--scene", str(folder), "--out", str(tmp_path / "m"),
                        "--quiet", "--device", "cpu"], capture_output=True, text=True, env=env, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and "T_B04.tif" in lines[-1] and "B04" in lines[-1], r.stderr
    # a scene in UTM zone 17N keeps its own CRS (python -m senclip.mapping, with --set)
    from rasterio.warp import reproject

    scene = tmp_path / "zone17.tif"
    tr17 = rasterio.Affine(10, 0, 200000, 0, -10, 4300000)
    with rasterio.open(scene, "w", driver="GTiff", width=256, height=256, count=4, dtype="uint16", crs="EPSG:32617",
                       transform=tr17, nodata=0) as d:
        d.write(arr)
        d.descriptions = ("B02", "B03", "B04", "B08")
    r = subprocess.run([sys.executable, "-m", "senclip.mapping", "--scene", str(scene), "--out", str(tmp_path / "z"),
                        "--quiet", "--device", "cpu", "--set", "tile=128", "cloud_test=none"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    with rasterio.open(tmp_path / "z" / "zone17_classes.tif") as m:
        assert m.crs.to_epsg() == 32617 and m.shape == (2, 2) and m.transform == tr17 * rasterio.Affine.scale(128)
