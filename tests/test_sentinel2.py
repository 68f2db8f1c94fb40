"""senclip.sentinel2 on real rasters: CRS handling (a point near the UTM 18/19 zone edge, rasters in EPSG:32619 and
EPSG:4326), every rejection reason, one file per band vs one multi-band file, 20 m bands resampled to 10 m, JP2."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import Affine

from senclip.core import sample_dir
from senclip.sentinel2 import cut_patches, open_scene
from senclip.stac import patches_from_stac

FX = Path(__file__).parent / "data" / "s2_scenes"
STAC = Path(__file__).parent / "data" / "stac"
SCENE = sample_dir("sentinel2", "s2_l1c_virginia_crop.tif")


def centre_lonlat(patch):
    "Longitude/latitude of a patch's centre."
    with rasterio.open(patch) as p:
        x, y = p.transform @ (p.width / 2, p.height / 2)
        return Transformer.from_crs(p.crs, 4326, always_xy=True).transform(x, y), p


def dist_m(lon1, lat1, lon2, lat2):
    return np.hypot((lon1 - lon2) * 111_320 * np.cos(np.radians(lat1)), (lat1 - lat2) * 110_574)


@pytest.mark.parametrize("raster", ["zone_edge_32618.tif", "zone_edge_32619.tif"])
def test_points_either_side_of_the_utm_zone_edge(raster, tmp_path):
    # -72.0005 is in zone 18, -71.9995 in zone 19; both rasters (one per zone CRS) must find both points
    pts = pd.DataFrame({"id": ["18000001", "19000001"], "lat": [37.7002, 37.6998], "lon": [-72.0005, -71.9995]})
    res = cut_patches(FX / raster, pts, tmp_path, size=40, progress=False, cloud_test="none")
    assert list(res.status) == ["ok", "ok"], res
    for _, r in res.iterrows():
        (lon, lat), p = centre_lonlat(r.patch)
        q = pts.set_index("id").loc[r.id]
        assert dist_m(lon, lat, q.lon, q.lat) <= 10 * np.sqrt(2) / 2 + 1  # within half a pixel
        assert p.crs.to_epsg() == int(raster[-9:-4])


def test_raster_in_epsg4326_gives_the_same_place(tmp_path):
    with open_scene(FX / "crop_4326.tif") as sc:
        assert sc.crs.to_epsg() == 4326 and sc.bands == ["B02", "B03", "B04", "B08"]  # names from the BANDS tag
        tr = Transformer.from_crs(4326, 4326)
        lon, lat = sc.transform @ (sc.width / 2 + 3.3, sc.height / 2 - 7.1)
    pts = pd.DataFrame({"id": ["43260001"], "lat": [lat], "lon": [lon]})
    a = cut_patches(FX / "crop_4326.tif", pts, tmp_path / "a", size=30, progress=False)
    b = cut_patches(SCENE, pts, tmp_path / "b", size=30, progress=False)
    assert a.status.item() == b.status.item() == "ok"
    (la, pa), (lb, pb) = centre_lonlat(a.patch.item()), centre_lonlat(b.patch.item())
    assert dist_m(*la, lon, lat) < 10 and dist_m(*lb, lon, lat) < 10
    with rasterio.open(a.patch.item()) as p:
        assert p.crs.to_epsg() == 4326 and p.descriptions == ("B04", "B03", "B02")
        # nearest-neighbour warped pixels: the two patches see (mostly) the same values
        with rasterio.open(b.patch.item()) as q:
            va, vb = p.read(1).astype(float), q.read(1).astype(float)
            assert abs(np.median(va) - np.median(vb)) < 0.1 * np.median(vb)


def test_every_patch_rejection_reason(tmp_path):
    with open_scene(FX / "l1c_bands") as sc:  # JP2 per band, B10 at 60 m
        assert sc.product == "L1C" and sc.bands == ["B02", "B03", "B04", "B10"]
        to_ll = Transformer.from_crs(sc.crs, 4326, always_xy=True)
        ll = lambda c, r: to_ll.transform(*(sc.transform @ (c, r)))
        where = {"nodata01": (16, 16), "cloudy01": (96, 32), "clear001": (40, 100), "edge0001": (5, 100),
                 "outside1": (400, 400)}
        pts = pd.DataFrame([dict(id=k, lon=ll(*v)[0], lat=ll(*v)[1]) for k, v in where.items()])
        res = cut_patches(sc, pts, tmp_path, size=24, progress=False).set_index("id")
    assert res.status.to_dict() == {"nodata01": "nodata", "cloudy01": "cloudy", "clear001": "ok", "edge0001": "edge",
                                    "outside1": "outside_scene"}
    assert "brightness" in res.reason["cloudy01"] and "no-data" in res.reason["nodata01"]
    assert sorted(p.name for p in tmp_path.glob("*.tif")) == ["clear001.tif"]  # only good windows are written
    assert not list(tmp_path.glob(".*"))  # no temporary files left
    # SCL (L2A) cloud classes, through the STAC route
    with open_scene(STAC / "cog") as cog:
        assert cog.product == "L2A"
        lon, lat = Transformer.from_crs(cog.crs, 4326, always_xy=True).transform(*(cog.transform @ (10, 10)))
    got = patches_from_stac(pd.DataFrame({"id": ["scl00001"], "lon": [lon], "lat": [lat], "date": ["2018-06-10"]}),
                            tmp_path / "stac", str(STAC / "catalog.json"), progress=False, size=16)
    assert got.status.item() == "cloudy" and "scl" in got.reason.item()
    far = patches_from_stac(pd.DataFrame({"id": ["far00001"], "lon": [-100.0], "lat": [40.0], "date": ["2018-06-10"]}),
                            tmp_path / "stac", str(STAC / "catalog.json"), progress=False, size=16)
    assert far.status.item() == "no_scene"


def test_one_file_per_band_equals_multiband_and_20m_is_resampled(tmp_path):
    with rasterio.open(SCENE) as src:
        prof = src.profile
        for i, b in enumerate(src.descriptions):
            with rasterio.open(tmp_path / f"T18SVH_20180628_{b}_10m.tif", "w", **dict(prof, count=1)) as dst:
                dst.write(src.read(i + 1), 1)
        b08 = src.read(4).astype(float)
        b05 = b08.reshape(512, 2, 512, 2).mean((1, 3)).astype("uint16")  # 20 m bands (made from B08)
        for b in ("B05", "B06", "B07", "B8A", "B11", "B12"):
            with rasterio.open(tmp_path / f"T18SVH_20180628_{b}_20m.tif", "w",
                               **dict(prof, count=1, width=512, height=512, transform=src.transform @ Affine.scale(2),
                                      blockxsize=256, blockysize=256)) as dst:
                dst.write(b05, 1)
    pts = pd.DataFrame({"id": ["10000001", "10000002"], "lat": [37.70, 37.68], "lon": [-75.65, -75.62]})
    multi = cut_patches(SCENE, pts, tmp_path / "m", progress=False)
    with open_scene(tmp_path) as sc:
        assert set(sc.bands) == {"B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"}
        assert sc.res == (10.0, 10.0)
        per = cut_patches(sc, pts, tmp_path / "p", bands=["B04", "B03", "B02", "B05"], progress=False)
        every = cut_patches(sc, pts, tmp_path / "all", bands="all", progress=False)
    with rasterio.open(every.patch[0]) as pa:  # all 10 m and 20 m bands, on the 10 m grid
        assert pa.descriptions == ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
        assert pa.res == (10.0, 10.0) and pa.shape == (100, 100)
    assert (multi.status == "ok").all() and (per.status == "ok").all()
    for a, b in zip(multi.patch, per.patch):
        with rasterio.open(a) as pa, rasterio.open(b) as pb:
            assert pb.count == 4 and pb.descriptions[-1] == "B05" and pb.shape == (100, 100)
            assert np.array_equal(pa.read(), pb.read([1, 2, 3]))
            assert pa.transform == pb.transform
            # B05 (20 m) resampled onto the 10 m grid follows B08 closely
            r = np.corrcoef(pb.read(4).ravel().astype(float), rasterio.open(SCENE).read(
                4, window=rasterio.windows.from_bounds(*pa.bounds, transform=rasterio.open(SCENE).transform)).ravel())[0, 1]
            assert r > 0.8


def test_bands_without_names_are_a_clear_error(tmp_path):
    with rasterio.open(SCENE) as src:
        prof = src.profile
        with rasterio.open(tmp_path / "scene.tif", "w", **dict(prof, count=1)) as dst:
            dst.write(src.read(1), 1)
    with pytest.raises(ValueError, match="cannot tell which Sentinel-2 band"):
        open_scene(tmp_path / "scene.tif")
