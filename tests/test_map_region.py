"""`senclip_map --bbox W,S,E,N --date YYYY-MM`: the region's Sentinel-2 L2A mosaic (senclip.region, here from the
local STAC fixture) is built and mapped (`--bbox=W,...`: with a `=`, as a western longitude starts with '-'); its SCL band masks clouds. Local files keep working (test_mapping.py)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio

REGION = Path(__file__).parent / "data" / "region"
BBOX = json.loads((REGION / "region.json").read_text())["bbox"]
EXE = Path(sys.executable).parent / "senclip_map"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow  # over ~3 s on 2 cores (a subprocess starting torch): make test-slow
def test_cli_bbox_date_maps_the_mosaic(tmp_path):
    out = tmp_path / "map"
    r = subprocess.run([str(EXE), "--bbox=" + ",".join(map(str, BBOX)), "--date", "2018-06", "--catalog",
                        str(REGION / "catalog.json"), "--out", str(out), "--tile", "16", "--device", "cpu", "--quiet"],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    mosaic = next((out / "mosaic").glob("*.tif"))
    meta = json.loads(next(out.glob("*_map.json")).read_text())
    assert meta["scene"] == str(mosaic) and meta["cloud_test"] == "scl"
    with rasterio.open(next(out.glob("*_classes.tif"))) as m, rasterio.open(mosaic) as s:
        assert m.crs == s.crs and m.transform == s.transform * rasterio.Affine.scale(16)
        assert m.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    assert meta["valid_tiles"] > 0
    r = subprocess.run([str(EXE), "--bbox=" + ",".join(map(str, BBOX)), "--out", str(out), "--quiet"],
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 1 and "--date" in r.stderr.strip().splitlines()[-1]
