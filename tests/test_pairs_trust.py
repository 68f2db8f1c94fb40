"""Pairs that can be trusted (issue 10): a re-run into the same folder rebuilds patches made by another scene, size
or band set and those a full disk left empty or short; a full disk is an error, never a published short patch;
truncated or non-georeferenced scenes give one line naming the file; `senclip_pairs --help` does not import torch."""
import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from senclip.core import sample_dir
from senclip.lucas import read_points
from senclip.pairs import read_manifest
from senclip.sentinel2 import cut_patches

TESTS = Path(__file__).parent
CROP = sample_dir("sentinel2", "s2_l1c_virginia_crop.tif")
POINTS = sample_dir("pairs", "lucas_2018_sample.csv")
CLI = Path(sys.executable).with_name("senclip_pairs")
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg")


def run_cli(*args, ok=True):
    p = subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, env=ENV, timeout=300)
    if ok:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


def ok_points():
    pts = read_points(POINTS)
    return pts[pts.status == "ok"]


def reads_whole(path) -> bool:
    try:
        with rasterio.open(path) as ds:
            ds.read()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str):
    "A tmpfs of `size` mounted on `path` (needs root; skips otherwise), unmounted afterwards."
    path.mkdir(parents=True, exist_ok=True)
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a real full disk needs root to mount a small tmpfs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.mark.slow  # over ~3 s on 2 cores: make test-slow (CI runs it)
def test_rerun_with_other_size_and_bands_rebuilds_the_patches(tmp_path):
    "The bundled scene at 48 px RGB, then at 32 px B08,B04 into the same --out: every patch is the second run's."
    common = ["--points", POINTS, "--scenes", CROP, "--photos", sample_dir("pairs", "photos"),
              "--embeddings", TESTS / "data" / "lucas_emb" / "lucas_clipemb_tiny.pt", "--model", "senclip-tiny-vit",
              "--out", tmp_path / "run"]
    run_cli(*common, "--size", 48)
    first = read_manifest(tmp_path / "run" / "manifest.parquet")
    run_cli(*common, "--size", 32, "--bands", "B08,B04")
    m = read_manifest(tmp_path / "run" / "manifest.parquet")
    ok = m[m.status == "ok"]
    assert len(ok) >= len(first[first.status == "ok"]) > 0  # a smaller window fits at the edge too
    for p in ok.patch:
        with rasterio.open(p) as ds:
            assert ds.shape == (32, 32) and ds.descriptions == ("B08", "B04"), (p, ds.shape, ds.descriptions)
            assert ds.tags()["SIZE"] == "32" and ds.tags()["BANDS"] == "B08,B04"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["params"]["size"] == 32 and summary["params"]["bands"] == "B08,B04"  # the manifest's run is the patches' run
    # the same settings again: the patches are kept, not cut again
    again = cut_patches(CROP, ok_points(), tmp_path / "run" / "patches", size=32, bands=["B08", "B04"], progress=False)
    assert set(again[again.status == "ok"].reason) == {"patch already on disk (kept)"}


def test_rerun_rebuilds_empty_and_short_patches(tmp_path):
    "A 0-byte patch and a half-written one (what a full disk leaves) are cut again on a re-run, not counted as ok."
    pts = ok_points()
    first = cut_patches(CROP, pts, tmp_path, size=48, progress=False)
    good = first[first.status == "ok"].patch.tolist()
    empty, short = Path(good[0]), Path(good[1])
    empty.write_bytes(b"")
    os.truncate(short, short.stat().st_size // 2)
    again = cut_patches(CROP, pts, tmp_path, size=48, progress=False)
    again = again.set_index("id")
    for p in (empty, short):
        row = again.loc[p.stem]
        assert row.status == "ok" and row.reason != "patch already on disk (kept)", row.reason
        assert reads_whole(p)
    assert (again.status == first.set_index("id").status).all()


def test_kept_patches_follow_todays_cloud_limit(tmp_path):
    "A kept patch is judged by the limits of the run that keeps it (from its recorded cloud fraction)."
    pts = ok_points()
    first = cut_patches(CROP, pts, tmp_path, size=48, progress=False, cloud_test="none")
    p = Path(first[first.status == "ok"].patch.iloc[0])
    with rasterio.open(p, "r+") as ds:  # as if this window had been 30 % cloud when it was cut
        ds.update_tags(CLOUD_FRACTION="0.300000")
    again = cut_patches(CROP, pts, tmp_path, size=48, progress=False, cloud_test="none", max_cloud=0.1)
    row = again.set_index("id").loc[p.stem]
    assert row.status == "cloudy" and row.patch == ""


def test_full_disk_is_an_error_and_publishes_no_short_patch(tmp_path):
    "On a real 200 kB tmpfs the patch writer fails, leaves only whole patches, and a re-run with room completes them."
    out = tmp_path / "disk"
    with small_tmpfs(out, "200k"):
        with pytest.raises(OSError, match="patches"):
            cut_patches(CROP, ok_points(), out / "patches", size=100, progress=False)
        files = sorted((out / "patches").iterdir())
        assert files, "some patches fit before the disk was full"
        assert all(reads_whole(f) for f in files), [(f.name, f.stat().st_size) for f in files if not reads_whole(f)]
        subprocess.run(["mount", "-o", "remount,size=8m", str(out)], check=True)
        res = cut_patches(CROP, ok_points(), out / "patches", size=100, progress=False)
        assert all(reads_whole(p) for p in res[res.status == "ok"].patch)


def one_line_error(p, path):
    assert p.returncode != 0, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "Traceback" not in p.stderr, p.stderr
    return lines[0]


def test_truncated_scene_is_one_line(tmp_path):
    bad = tmp_path / "cut_short.tif"
    bad.write_bytes(CROP.read_bytes()[: CROP.stat().st_size // 2])
    p = run_cli("--points", POINTS, "--scenes", bad, "--model", "senclip-tiny-vit", "--pretrained", "",
                "--out", tmp_path / "o", ok=False)
    assert "truncated" in one_line_error(p, bad)


@pytest.mark.slow  # over ~2.5 s on a slow 2-core machine (torch imports in 4 s): make test-slow (CI runs it)
def test_scene_without_geotransform_is_one_line(tmp_path):
    with rasterio.open(CROP) as s:
        arr = s.read(window=rasterio.windows.Window(0, 0, 256, 256))
    bad = tmp_path / "no_georef.tif"
    with rasterio.Env(), rasterio.open(bad, "w", driver="GTiff", width=256, height=256, count=4, dtype="uint16",
                                       nodata=0) as d:
        d.write(arr)
        d.descriptions = ("B02", "B03", "B04", "B08")
    p = run_cli("--points", POINTS, "--scenes", bad, "--model", "senclip-tiny-vit", "--pretrained", "",
                "--out", tmp_path / "o", ok=False)
    line = one_line_error(p, bad)
    assert "no CRS and no geotransform" in line and "gdal_edit" in line
    d = run_cli("--points", POINTS, "--scenes", bad, "--out", tmp_path / "o", "--debug", ok=False)
    assert d.returncode != 0 and "Traceback" in d.stderr  # --debug shows where it came from


def test_help_does_not_import_torch(tmp_path):
    "`senclip_pairs --help` parses without importing torch (it took 9 s when torch came first)."
    script = tmp_path / "help.py"
    script.write_text("import sys\nfrom senclip.pairs import senclip_pairs\ntry:\n    senclip_pairs()\n"
                      "except SystemExit:\n    pass\nprint('torch imported:', 'torch' in sys.modules)\n")
    p = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, env=ENV, timeout=60)
    assert "--points" in p.stdout and "--debug" in p.stdout, p.stdout + p.stderr
    assert "torch imported: False" in p.stdout, p.stdout
