"""Text -> patch heat maps: any sentence scored over a mapped scene from the cached tile embeddings (no re-encode)."""
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

from senclip.core import UserError, sample_dir
from senclip.mapping import heat_map, iter_tiles, map_scene
from senclip.sentinel2 import RGB_BANDS, open_scene, stretch_to_uint8
from senclip.zeroshot.classify import encode_texts, preprocess_batch

CROP = sample_dir("sentinel2", "s2_l1c_virginia_crop.tif")


@pytest.fixture(scope="module")
def model():
    import senclip

    return senclip.load("senclip-tiny-vit", device="cpu")


@pytest.fixture
def scene(tmp_path):
    "A 200 x 150 px window of the sample crop (not a whole number of 64 px tiles), with a no-data corner."
    path = tmp_path / "window.tif"
    with rasterio.open(CROP) as s:
        win = rasterio.windows.Window(300, 400, 200, 150)
        arr = s.read(window=win)
        arr[:, :10, :10] = 0  # the top-left tile touches no data
        with rasterio.open(path, "w", **{**s.profile, "width": 200, "height": 150,
                                         "transform": s.window_transform(win)}) as d:
            d.write(arr)
            d.descriptions = s.descriptions
    return path


def _fresh_tile_embeddings(model, scene, tile=64):
    with open_scene(scene) as sc:
        tiles = [(i, stretch_to_uint8(a, RGB_BANDS, "minmax", sc.offset), nod) for i, a, nod in iter_tiles(sc, tile=tile)]
    x = torch.from_numpy(np.stack([t[1] for t in tiles]))
    with torch.no_grad():
        z = F.normalize(model.encode_image(preprocess_batch(x, model.image_size, model.mean, model.std)).float(), dim=-1)
    return z.numpy(), np.array([not t[2] for t in tiles])


def test_heat_map_equals_fresh_cosine_and_never_reencodes(tmp_path, scene, model, monkeypatch):
    paths = map_scene(scene, model, out_dir=tmp_path / "map", tile=64, progress=False, device="cpu")
    meta = json.loads(Path(paths["meta"]).read_text())
    assert Path(paths["embeddings"]).exists() and meta["state_key"]
    sentence = "a river crossing farmland"
    h = heat_map(paths, sentence, model, device="cpu")
    with rasterio.open(h["heat"]) as hm, rasterio.open(paths["classes"]) as m:
        assert hm.dtypes[0] == "float32" and hm.crs == m.crs and hm.transform == m.transform
        assert hm.shape == m.shape == (3, 4) and hm.tags()["SENTENCE"] == sentence
        heat = hm.read(1)
    z, ok = _fresh_tile_embeddings(model, scene)
    t = encode_texts(model, [sentence])[0].numpy()
    expected = np.where(ok, z @ t, np.nan).reshape(3, 4)
    assert np.isnan(heat[0, 0]) and np.isnan(expected[0, 0])  # the no-data tile
    np.testing.assert_allclose(heat, expected, atol=1e-5)
    assert Path(h["figure"]).stat().st_size > 5_000
    # a second sentence costs one text forward: the image tower is never called
    def boom(*a, **k):
        raise AssertionError("tiles re-encoded")

    monkeypatch.setattr(model, "encode_image", boom)
    h2 = heat_map(tmp_path / "map", "dense forest", model, figure=False)  # the folder works too
    with rasterio.open(h2["heat"]) as hm:
        np.testing.assert_allclose(hm.read(1), np.where(ok, z @ encode_texts(model, ["dense forest"])[0].numpy(),
                                                        np.nan).reshape(3, 4), atol=1e-5)
    assert h2["heat"] != h["heat"] and "figure" not in h2


def test_heat_map_refuses_another_model_or_stale_cache(tmp_path, scene, model):
    import senclip

    paths = map_scene(scene, model, out_dir=tmp_path / "map", tile=64, progress=False, device="cpu")
    other = senclip.load("senclip-tiny-vit", device="cpu")
    with torch.no_grad():
        next(other.model.parameters()).add_(1.0)
    with pytest.raises(UserError, match="pass that model"):
        heat_map(paths, "a lake", other)
    meta = json.loads(Path(paths["meta"]).read_text())
    Path(paths["meta"]).write_text(json.dumps({**meta, "state_key": "0" * 16}))
    with pytest.raises(UserError, match="another run"):
        heat_map(paths, "a lake", model)
    Path(paths["embeddings"]).unlink()
    with pytest.raises(UserError, match="tile-embedding cache"):
        heat_map(paths, "a lake", model)
