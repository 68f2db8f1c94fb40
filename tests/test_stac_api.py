"""senclip.sentinel2.StacSource against a real STAC *API* (not a static file) on 127.0.0.1: pystac-client opens the
landing page, POSTs item searches (point + datetime), and the scene selection and patch cutting follow. The API
serves the items of tests/data/stac with absolute asset paths, filtering them as a STAC API does."""
from pathlib import Path

import pandas as pd
import pytest
from pyproj import Transformer

from senclip.sentinel2 import open_scene
from senclip.stac import StacSource, find_scenes, patches_from_stac
from stac_server import stac_api as serve_stac_api

STAC = Path(__file__).parent / "data" / "stac"


@pytest.fixture(name="stac_api")
def _stac_api():
    with serve_stac_api(STAC / "catalog.json") as (url, handler):
        yield url, handler.searches


def test_search_select_and_cut_through_a_stac_api(stac_api, tmp_path):
    url, searches = stac_api
    with open_scene(STAC / "cog") as cog:
        tr = Transformer.from_crs(cog.crs, 4326, always_xy=True)
        ll = [tr.transform(*(cog.transform @ (c, r))) for c, r in [(40, 90), (64, 64), (100, 100)]]
    pts = pd.DataFrame({"id": ["a0000001", "a0000002", "a0000003"], "lon": [p[0] for p in ll],
                        "lat": [p[1] for p in ll], "date": ["2018-06-15", "2018-08-10", "2018-06-15"]})
    src = StacSource(url)
    assert not src.static and not src.sign  # an API that is not the Planetary Computer: no signing
    found, items = find_scenes(pts, src, max_cloud=20, progress=False)
    assert list(found.scene) == ["S2_20180620_c05", "S2_20180905_c08", "S2_20180620_c05"]
    assert list(found.widened) == [0, 1, 0]
    assert all(q["collections"] == ["sentinel-2-l2a"] for q in searches)
    assert searches[0]["datetime"].startswith("2018-04-01T00:00:00")  # one search covers +-2 months
    assert len(searches) == 2  # one per (grid cell, survey-month window): the two June points share one
    # the API-side cloud filter gives the same choice with less traffic
    found2, _ = find_scenes(pts, StacSource(url, max_cloud=20), max_cloud=20, progress=False)
    assert list(found2.scene) == list(found.scene) and searches[-1]["query"] == {"eo:cloud_cover": {"lt": 20}}
    got = patches_from_stac(pts, tmp_path, src, progress=False, size=32)
    assert list(got.status) == ["ok", "ok", "ok"] and all(Path(p).exists() for p in got.patch)


def test_planetary_computer_is_signed_by_default():
    assert StacSource().sign and StacSource().collection == "sentinel-2-l2a"
    assert not StacSource(str(STAC / "catalog.json")).sign


def test_region_search_through_a_stac_api(stac_api):
    "StacSource.search (regions, senclip.region): one POST with the box, the month and the server-side cloud filter."
    from senclip.stac import month_window

    url, searches = stac_api
    with open_scene(STAC / "cog") as cog:
        tr = Transformer.from_crs(cog.crs, 4326, always_xy=True)
        (w, n), (e, s) = (tr.transform(*(cog.transform @ (c, r))) for c, r in [(30, 30), (60, 60)])
    got = StacSource(url, max_cloud=12).search((w, s, e, n), *month_window("2018-06"))
    assert [it.id for it in got] == ["S2_20180620_c05"]  # June, under 12 %; the Europe item is elsewhere
    assert searches[-1]["bbox"] == [w, s, e, n] and searches[-1]["query"] == {"eo:cloud_cover": {"lt": 12}}
    assert searches[-1]["datetime"].startswith("2018-06-01T00:00:00") and len(searches) == 1
