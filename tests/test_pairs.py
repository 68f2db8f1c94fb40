"""The senclip_pairs command end to end (YAML and JSON configs, flags over the config, local scenes, a STAC
catalogue, geotagged photos, the authors' released embeddings) and the PairDataset it feeds."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import rasterio
import torch
from pyproj import Transformer

from senclip.core import get_preset, sample_dir
from senclip.embeddings import EmbeddingStore
from senclip.pairs import PairDataset, read_manifest

TESTS = Path(__file__).parent
CLI = Path(sys.executable).with_name("senclip_pairs")
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg")


def run_cli(*args, cwd=None):
    cmd = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "senclip.pairs"]
    p = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


@pytest.mark.slow  # over ~3 s on 2 cores: make test-slow (CI runs it)
def test_cli_with_yaml_config_reports_counts(tmp_path):
    cfg = tmp_path / "pairs.yaml"
    cfg.write_text(
        f"points: {sample_dir('pairs', 'lucas_2018_sample.csv')}\n"
        f"photos: {sample_dir('pairs', 'photos')}\n"
        f"scenes: [{sample_dir('sentinel2', 's2_l1c_virginia_crop.tif')}]\n"
        "model: senclip-tiny-vit\npretrained: ''\nphoto_size: 0\nsize: 64\nblock_m: 2000\nval_fraction: 0.25\n"
        "out: out_yaml\n"
    )
    out = run_cli("--config", cfg, "--size", "48")  # the flag wins over the file
    for status in ("ok", "projected_coords", "missing_date", "impossible_coords", "outside_scene", "no_photos"):
        assert status in out
    run = tmp_path / "out_yaml"  # relative to the config file
    m = read_manifest(run / "manifest.parquet")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["counts"] == m.status.value_counts().to_dict() and summary["points"] == 60
    assert f"  ok{' ' * 16}{summary['counts']['ok']}" in out
    ok = m[m.status == "ok"]
    with rasterio.open(ok.patch.iloc[0]) as p:
        assert p.shape == (48, 48) and p.crs.to_epsg() == 32618
    store = EmbeddingStore.load(run / "ground.safetensors")
    assert store.ids == list(ok.id) and store.dim == 64
    # the manifest's relative paths survive moving the output folder
    moved = tmp_path / "moved"
    run.rename(moved)
    ds = PairDataset(moved / "manifest.parquet", moved / "ground.safetensors", get_preset("tiny"))
    assert ds[0]["image"].shape == (3, 48, 48)


@pytest.mark.slow  # over ~3.5 s on a slow 2-core machine (torch imports in 4 s): make test-slow (CI runs it)
def test_cli_json_config_with_stac_catalogue(tmp_path):
    # points on the static catalogue's footprint, surveyed in August (too cloudy) -> widened to September
    from senclip.sentinel2 import open_scene

    with open_scene(TESTS / "data" / "stac" / "cog") as cog:
        tr = Transformer.from_crs(cog.crs, 4326, always_xy=True)
        ll = [tr.transform(*(cog.transform @ (c, r))) for c, r in [(40, 90), (64, 64), (100, 100)]]
    pd.DataFrame({"site": ["st000001", "st000002", "st000003"], "y": [p[1] for p in ll], "x": [p[0] for p in ll],
                  "visit": ["2018-08-10"] * 3}).to_csv(tmp_path / "sites.csv", index=False)
    photos = tmp_path / "geo"
    cfg = {"points": "sites.csv", "columns": {"id": "site", "lat": "y", "lon": "x", "date": "visit"},
           "date_format": "%Y-%m-%d", "nuts0": "US", "stac": str(TESTS / "data" / "stac" / "catalog.json"),
           "size": 32, "embeddings": str(TESTS / "data" / "lucas_emb" / "lucas_clipemb_tiny.pt"),
           "model": "senclip-tiny-vit", "out": "out_json"}
    (tmp_path / "pairs.json").write_text(json.dumps(cfg))
    out = run_cli("--config", tmp_path / "pairs.json")
    m = read_manifest(tmp_path / "out_json" / "manifest.parquet")
    assert list(m.scene) == ["S2_20180905_c08"] * 3
    # no photos for these sites and none in the released file: they are counted, not dropped
    assert list(m.status) == ["no_photos"] * 3 and "no_photos" in out


@pytest.mark.slow  # over ~3.5 s on a slow 2-core machine (torch imports in 4 s): make test-slow (CI runs it)
def test_released_embeddings_feed_the_dataset(tmp_path):
    out = run_cli("--points", sample_dir("pairs", "lucas_2018_sample.csv"),
                  "--scenes", sample_dir("sentinel2", "s2_l1c_virginia_crop.tif"),
                  "--photos", sample_dir("pairs", "photos"),
                  "--embeddings", TESTS / "data" / "lucas_emb" / "lucas_clipemb_tiny.pt",
                  "--model", "senclip-tiny-vit", "--out", tmp_path / "rel")
    store = EmbeddingStore.load(tmp_path / "rel" / "ground.safetensors")
    assert store.meta["source"] == "released:lucas_clipemb_tiny.pt" and store.arch == "senclip-tiny-vit"
    raw = torch.load(TESTS / "data" / "lucas_emb" / "lucas_clipemb_tiny.pt", weights_only=True)
    have = [i for i in store.ids if store[i][1].any()]
    assert have and all(torch.allclose(store[i][0][0].float(), raw[f"US_{i}N"][0], atol=1e-3) for i in have
                        if f"US_{i}N" in raw)
    ds = PairDataset(tmp_path / "rel" / "manifest.parquet", tmp_path / "rel" / "ground.safetensors", "demo")
    assert len(ds) == len(have)  # points without released embeddings are left out of training
    b = next(iter(torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True)))
    assert b["image"].dtype == torch.uint8 and b["ground"].shape[1:] == (4, 64) and b["mask"].dtype == torch.bool
    with pytest.raises(ValueError, match="D=64"):
        PairDataset(tmp_path / "rel" / "manifest.parquet", tmp_path / "rel" / "ground.safetensors", "paper")


@pytest.mark.slow  # over ~3 s on 2 cores: make test-slow (CI runs it)
def test_geotagged_photos_as_the_point_source(tmp_path):
    from PIL import Image
    from PIL.ExifTags import GPS, IFD

    src = sorted(sample_dir("pairs", "photos").rglob("*.jpg"))
    with rasterio.open(sample_dir("sentinel2", "s2_l1c_virginia_crop.tif")) as s:
        lon, lat = Transformer.from_crs(s.crs, 4326, always_xy=True).transform(*(s.transform @ (500, 500)))
    folder = tmp_path / "geo"
    folder.mkdir()
    for k, bearing in enumerate([0, 90, 180, 270]):
        ex = Image.Exif()
        ex[IFD.GPSInfo] = {GPS.GPSLatitudeRef: "N", GPS.GPSLatitude: (lat, 0.0, 0.0), GPS.GPSLongitudeRef: "W",
                           GPS.GPSLongitude: (-lon, 0.0, 0.0), GPS.GPSImgDirection: float(bearing)}
        ex[0x0132] = "2018:07:01 12:00:00"
        Image.open(src[k]).save(folder / f"IMG_{k}.jpg", exif=ex)
    run_cli("--geotagged", folder, "--scenes", sample_dir("sentinel2", "s2_l1c_virginia_crop.tif"),
            "--model", "senclip-tiny-vit", "--pretrained", "", "--photo_size", "0", "--out", tmp_path / "g")
    m = read_manifest(tmp_path / "g" / "manifest.parquet")
    assert list(m.status) == ["ok"] and m.n_photos.item() == 4
    assert Path(m.photo_W.item()).name == "IMG_3.jpg"
    assert EmbeddingStore.load(tmp_path / "g" / "ground.safetensors").mask.all()


@pytest.mark.slow  # over ~2.5 s on a slow 2-core machine (torch imports in 4 s): make test-slow (CI runs it)
def test_help_and_bad_config(tmp_path):
    assert "--points" in run_cli("--help")
    (tmp_path / "bad.yaml").write_text("pointz: x.csv\n")
    cmd = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "senclip.pairs"]
    p = subprocess.run(cmd + ["--config", str(tmp_path / "bad.yaml")], capture_output=True, text=True, env=ENV)
    assert p.returncode != 0 and "unknown option(s) ['pointz']" in p.stderr
