"""senclip.region: region mosaics from a real STAC *API* and real COGs served over HTTP (with byte ranges, as a
cloud store serves them) on 127.0.0.1 -- the scenes of tests/data/region (two UTM zones, a baseline-04.00 offset,
SCL clouds, a no-data corner) -- plus the errors a user meets: nothing found, a missing asset, offline, unreachable,
malformed --bbox/--date. Nothing here reaches the internet."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from senclip.core import UserError
from senclip.region import (build_mosaic, find_region_scenes, read_scene, region_grid, region_mosaic, scene_window,
                            senclip_region)
from senclip.stac import StacSource
from stac_server import stac_api

REGION = Path(__file__).parent / "data" / "region"
CATALOG = REGION / "catalog.json"
BBOX = tuple(json.loads((REGION / "region.json").read_text())["bbox"])
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def region_api():
    with stac_api(CATALOG, files_root=REGION, api_id="region-api") as (url, handler):
        yield url + "/", handler


def _read(path):
    with rasterio.open(path) as m:
        return m.read(), m.tags(), m.profile, m.descriptions


@pytest.mark.slow
def test_mosaic_through_a_stac_api_reads_only_windows(region_api, tmp_path):
    url, h = region_api
    src = StacSource(url)
    assert not src.sign  # not the Planetary Computer: addresses used as they are
    p = build_mosaic(BBOX, "2018-06", tmp_path / "api", catalog=src, progress=False)
    assert [q["datetime"][:10] for q in h.searches] == ["2018-06-01"] and h.searches[0]["bbox"] == list(BBOX)
    arr, tags, prof, desc = _read(p)
    assert desc == ("B04", "B03", "B02", "SCL") and prof["crs"].to_string() == "EPSG:32618" and prof["nodata"] == 0
    assert prof["tiled"] and prof["compress"] == "deflate" and prof["transform"].a == 10
    assert tags["SCENES"] == "S2A_T18_20180610_c03,S2B_T19_20180618_c10,S2A_T18_20180625_c40"
    # the same mosaic as from the static catalogue on disk
    local = build_mosaic(BBOX, "2018-06", tmp_path / "local", catalog=CATALOG, progress=False)
    np.testing.assert_array_equal(arr, _read(local)[0])
    assert {f.split("/")[1] for f in h.served} == {"A", "B", "C"} and "cog/C/SCL.tif" in h.served


def test_a_small_box_fetches_only_its_blocks_of_one_scene(region_api, tmp_path):
    url, h = region_api
    box = (-71.9975, 37.6995, -71.9965, 37.7005)  # ~ 90 x 110 m, clear in B (the east scene)
    p = build_mosaic(box, "2018-06", tmp_path, catalog=url, progress=False)
    with rasterio.open(p) as m:
        assert m.tags()["SCENES"] == "S2B_T19_20180618_c10" and m.crs.to_string() == "EPSG:32619"
    # A's footprint misses the box, and C (more cloudy) is never opened once B filled every pixel clear
    assert {f.split("/")[1] for f in h.served} == {"B"}
    for band in ("B02", "B03", "B04"):  # byte ranges: well under the file (header + the blocks under the box)
        assert h.served[f"cog/B/{band}.tif"] < 0.6 * (REGION / "cog" / "B" / f"{band}.tif").stat().st_size, h.served


def test_fill_order_clouds_offset_and_nodata(tmp_path):
    src = StacSource(str(CATALOG))
    a, b, c = find_region_scenes(BBOX, "2018-06", src)
    grid = region_grid(BBOX)
    p = build_mosaic(BBOX, "2018-06", tmp_path, catalog=src, progress=False)
    arr, tags, _, _ = _read(p)
    bands, scl = arr[:3], arr[3]
    reads = {}
    for it in (a, b, c):
        w = scene_window(it, grid)
        d, s = read_scene(it, ("B04", "B03", "B02"), grid, w)
        full, fs = np.zeros((3, grid.height, grid.width), np.uint16), np.zeros((grid.height, grid.width), np.uint8)
        full[:, w.toslices()[0], w.toslices()[1]], fs[w.toslices()] = d, s
        reads[it.id[-3:]] = (full, fs)
    (da, sa), (db, sb), (dc, sc) = reads["c03"], reads["c10"], reads["c40"]
    cloudy = lambda s: np.isin(s, [3, 8, 9, 10])
    clear_a = (da > 0).all(0) & (sa > 0) & ~cloudy(sa)
    np.testing.assert_array_equal(bands[:, clear_a], da[:, clear_a])  # A (3 %) wins wherever it is clear
    from_b = ~clear_a & (db > 0).all(0) & (sb > 0) & ~cloudy(sb)
    assert from_b.sum() > 1000 and (bands[:, from_b] == db[:, from_b]).all()
    assert np.median(bands[0, from_b]) < np.median(db[0, from_b] + 1000) - 900  # the +1000 DN offset was removed
    from_c = ~clear_a & ~from_b & (dc > 0).all(0) & ~cloudy(sc)
    assert from_c.sum() > 300 and (bands[:, from_c] == dc[:, from_c]).all()  # A's west cloud filled from hazy C
    everywhere = cloudy(sa) & cloudy(sc) & ~((db > 0).all(0) & ~cloudy(sb))
    assert everywhere.sum() > 20 and (scl[everywhere] == 9).all() and (bands[:, everywhere] == da[:, everywhere]).all()
    assert float(tags["CLEAR_FRACTION"]) == pytest.approx(1 - everywhere.mean(), abs=1e-4)
    # a box reaching north of every scene: those pixels are no data (0) in every band and in SCL
    north = build_mosaic((BBOX[0], BBOX[1], BBOX[2], BBOX[3] + 0.01), "2018-06", tmp_path, catalog=src, progress=False)
    arr2 = _read(north)[0]
    assert (arr2[:, :40] == 0).all() and (arr2[:, -40:] > 0).all(0).mean() > 0.99


def test_other_utm_zone_and_explicit_crs(tmp_path):
    east = (-71.999, BBOX[1], -71.991, BBOX[3])  # centre east of -72: zone 19, mostly scene B
    p = build_mosaic(east, "2018-06", tmp_path, catalog=CATALOG, progress=False)
    with rasterio.open(p) as m:
        assert m.crs.to_string() == "EPSG:32619" and m.tags()["SCENES"].startswith("S2B_T19")
    q = build_mosaic(BBOX, "2018-06", tmp_path, catalog=CATALOG, crs="EPSG:32619", resolution=20, name="z19.tif",
                     progress=False)
    with rasterio.open(q) as m:
        assert q.name == "z19.tif" and m.crs.to_string() == "EPSG:32619" and m.res == (20, 20)


def test_user_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"no Sentinel-2 scene under 50% cloud over bbox .* in 2018-09 .*--date"):
        build_mosaic(BBOX, "2018-09", tmp_path, catalog=CATALOG, progress=False)
    # an item without the asset of a requested band
    cat = tmp_path / "cat"
    shutil.copytree(REGION, cat, ignore=shutil.ignore_patterns("*.tif"))
    for f in (REGION / "cog").rglob("*.tif"):
        (cat / f.relative_to(REGION)).parent.mkdir(parents=True, exist_ok=True)
        (cat / f.relative_to(REGION)).symlink_to(f)
    j = cat / "sentinel-2-l2a" / "S2A_T18_20180610_c03" / "S2A_T18_20180610_c03.json"
    d = json.loads(j.read_text())
    del d["assets"]["B02"]
    j.write_text(json.dumps(d))
    with pytest.raises(UserError, match=r"S2A_T18_20180610_c03: no asset for band\(s\) \['B02'\]"):
        build_mosaic(BBOX, "2018-06", tmp_path, catalog=cat / "catalog.json", progress=False)
    # an asset whose file is gone (a broken link, an expired signature): named, with the fix
    (cat / "cog" / "B" / "B04.tif").unlink()
    with pytest.raises(UserError, match=r"B/B04.tif: the asset cannot be read .*check the network and the address"):
        build_mosaic(BBOX, "2018-06", tmp_path, catalog=cat / "catalog.json", bands="B04,B03", progress=False)
    # offline: a remote catalogue is refused before any connection
    monkeypatch.setenv("SENCLIP_OFFLINE", "1")
    with pytest.raises(UserError, match="downloads are switched off"):
        build_mosaic(BBOX, "2018-06", tmp_path, progress=False)  # the Planetary Computer
    # a catalogue that does not answer
    with pytest.raises(UserError, match=r"STAC catalogue http://127.0.0.1:9/: the search failed"):
        build_mosaic(BBOX, "2018-06", tmp_path, catalog="http://127.0.0.1:9/", progress=False)
    for bbox, date, msg in [("1,2,3", "2018-06", "expected four numbers"), ("3,2,1,4", "2018-06", "W < E"),
                            (",".join(map(str, BBOX)), "2018/06", "expected a month YYYY-MM")]:
        with pytest.raises(UserError, match=msg):
            region_mosaic(bbox, date, tmp_path, str(CATALOG))


def test_planetary_computer_signing_is_on_by_default_and_used(monkeypatch, tmp_path):
    import planetary_computer

    signed = []
    monkeypatch.setattr(planetary_computer, "sign", lambda it: signed.append(it.id) or it)  # test double, no network
    build_mosaic(BBOX, "2018-06", tmp_path, catalog=StacSource(str(CATALOG), sign=True), progress=False)
    assert signed == ["S2A_T18_20180610_c03", "S2B_T19_20180618_c10", "S2A_T18_20180625_c40"]
    assert StacSource().sign and not StacSource(str(CATALOG)).sign and not StacSource("http://x/", sign=False).sign


def _cli(*args, cwd):
    "Run `senclip_region` as a console-script entry point does (a script file calling it with sys.argv)."
    script = Path(cwd) / "senclip_region.py"
    script.write_text("import sys\nfrom senclip.region import senclip_region\nsys.exit(senclip_region())\n")
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)


@pytest.mark.slow
def test_cli(tmp_path):
    r = _cli(f"--bbox={','.join(map(str, BBOX))}", "--date", "2018-06", "--catalog", CATALOG, "--out", tmp_path, "--quiet",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    path = Path(r.stdout.strip().splitlines()[-1].split("mosaic: ")[1])
    assert path.exists() and path.parent == tmp_path
    bad = _cli("--bbox=1,2,3", "--date", "2018-06", "--catalog", CATALOG, "--out", tmp_path, cwd=tmp_path)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and "expected four numbers" in bad.stderr


@pytest.mark.slow
def test_mosaic_maps(tmp_path, one_thread):
    import senclip
    from senclip.mapping import map_scene

    p = build_mosaic(BBOX, "2018-06", tmp_path, catalog=CATALOG, progress=False)
    out = map_scene(p, senclip.load("senclip-tiny-vit"), out_dir=tmp_path / "map", tile=32, progress=False)
    with rasterio.open(out["classes"]) as m, rasterio.open(p) as s:
        assert m.crs == s.crs
