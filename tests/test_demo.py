"""`senclip_demo` (what `make demo` runs) end to end on the bundled sample, as a user runs it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # over ~10 s on 2 cores: make test-slow (CI runs it)
def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "SENCLIP_CACHE": str(tmp_path / "cache")}
    cmd = [str(Path(sys.executable).parent / "senclip_demo"), "--out", str(out)]  # the console script make demo runs
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # pairs: manifest with the sample's statuses, patches, embedding store
    m = pd.read_parquet(out / "pairs" / "manifest.parquet")
    assert (m.status == "ok").sum() == 54 and set(m.status) > {"ok", "outside_scene", "projected_coords"}
    assert (out / "pairs" / "ground.safetensors").exists()
    # training exported a checkpoint that senclip.load reads
    import senclip

    tr = json.loads((out / "train" / "train.json").read_text())
    assert "not results" in json.loads((out / "train" / "run.json").read_text())["params"]["caveat"]
    model = senclip.load(tr["safetensors"])
    assert model.arch == "senclip-tiny-vit"
    # evaluation: Table-1 layout, every row labelled as not a result
    t1 = pd.read_csv(out / "eval" / "table1.csv")
    assert {"eurosat", "bigearthnet19"} <= set(t1.dataset)
    res = pd.read_csv(out / "eval" / "results.csv")
    assert len(res) and res.not_a_result.all() and res.model.str.contains("not a result").all()
    summary = (out / "SUMMARY.md").read_text()
    assert "not a result" in summary and "| eval |" in summary
    assert any((out / "eval" / "figures").glob("confusion_eurosat_*.png"))
    # land-use map of the bundled scene, georeferenced like it
    import rasterio

    maps = list((out / "map").glob("*_classes.tif"))
    assert len(maps) == 1
    with rasterio.open(maps[0]) as m, rasterio.open(ROOT / "data/sample/sentinel2/s2_l1c_virginia_crop.tif") as s:
        assert m.crs == s.crs and m.transform.c == s.transform.c and m.transform.a == 64 * s.transform.a
        assert m.shape == (16, 16) and m.read(1).max() < 10
        assert "not a result" in m.tags().get("CAVEAT", "")
    # the report a newcomer opens first, and the runner's record of every step
    results = json.loads((out / "results.json").read_text())
    steps = [r["step"] for r in results["steps"]]
    assert steps[:3] == ["pairs", "train", "eval"] and steps[-1] == "map" and {"table1", "fig4_retrieval"} <= set(steps)
    assert not results["failed"] and results["not_a_result"]
    html = (out / "index.html").read_text()
    assert "NOT A RESULT" in html and html.count("<img") >= 10
    # a second run resumes: every step is found unchanged and nothing is recomputed
    r2 = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stdout[-2000:] + r2.stderr[-2000:]
    assert r2.stdout.count(": unchanged") == len(steps), r2.stdout[-2000:]
