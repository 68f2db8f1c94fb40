"""Maps that can be trusted (issue 10): no map of a raster without CRS unless asked (and then it says so); a write
error is a non-zero exit that keeps the previous map; the output folder is checked before the work; truncated scenes
give one line naming the file; `senclip_map --help` does not import torch."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from senclip.core import UserError, sample_dir
from senclip.mapping import map_scene

CROP = sample_dir("sentinel2", "s2_l1c_virginia_crop.tif")
EXE = Path(sys.executable).parent / "senclip_map"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def model():
    import senclip

    return senclip.load("senclip-tiny-vit")


def _run(*args):
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, env=ENV, timeout=180)


def _small_scene(path: Path, georef: str = "full") -> Path:
    "The crop's top-left 256 x 256 px with its CRS and transform ('full'), its transform only ('no_crs'), or neither."
    with rasterio.open(CROP) as s:
        win = rasterio.windows.Window(0, 0, 256, 256)
        arr, tr, crs = s.read(window=win), s.window_transform(win), s.crs
    kw = {"full": dict(crs=crs, transform=tr), "no_crs": dict(transform=tr), "none": {}}[georef]
    with rasterio.Env(), rasterio.open(path, "w", driver="GTiff", width=256, height=256, count=4, dtype="uint16",
                                       nodata=0, **kw) as d:
        d.write(arr)
        d.descriptions = ("B02", "B03", "B04", "B08")
    return path


def test_no_crs_is_refused_unless_allowed(tmp_path, model):
    scene = _small_scene(tmp_path / "no_crs.tif", "no_crs")
    with pytest.raises(UserError, match=r"no_crs\.tif: the scene has no CRS.*allow_no_crs"):
        map_scene(scene, model, out_dir=tmp_path / "refused", tile=64, progress=False)
    assert not list((tmp_path / "refused").glob("*")) if (tmp_path / "refused").exists() else True
    with pytest.warns(UserWarning, match="no CRS"):
        p = map_scene(scene, model, out_dir=tmp_path / "allowed", tile=64, progress=False, allow_no_crs=True)
    for k in ("classes", "confidence"):
        with rasterio.open(p[k]) as m:
            assert m.crs is None and m.tags()["GEOREFERENCE"].startswith("none: the scene has no CRS")
    meta = json.loads(Path(p["meta"]).read_text())
    assert meta["georeferenced"] is False and meta["crs"] is None and "allow_no_crs" in meta["georeference"]
    # a georeferenced scene says where its georeference comes from
    ok = map_scene(_small_scene(tmp_path / "full.tif"), model, out_dir=tmp_path / "full", tile=64, progress=False)
    assert json.loads(Path(ok["meta"]).read_text())["georeferenced"] is True


@pytest.mark.slow  # over ~3.5 s on a slow 2-core machine (torch imports in 4 s): make test-slow (CI runs it)
def test_cli_no_crs_one_line_and_flag(tmp_path):
    scene = _small_scene(tmp_path / "nogeo.tif", "none")
    p = _run("--scene", scene, "--out", tmp_path / "m", "--tile", 64, "--device", "cpu", "--quiet")
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and str(scene) in lines[0] and "--allow_no_crs" in lines[0], p.stderr
    assert not (tmp_path / "m" / "nogeo_classes.tif").exists()


@pytest.mark.slow
def test_cli_allow_no_crs_says_so(tmp_path):
    scene = _small_scene(tmp_path / "nogeo.tif", "none")
    p = _run("--scene", scene, "--out", tmp_path / "m", "--tile", 64, "--device", "cpu", "--quiet", "--allow_no_crs")
    assert p.returncode == 0, p.stderr
    assert "NOTE: not georeferenced" in p.stdout
    with rasterio.open(tmp_path / "m" / "nogeo_classes.tif") as m:
        assert m.crs is None and "no CRS and no geotransform" in m.tags()["GEOREFERENCE"]


def _short_writes(monkeypatch, only: str = ""):
    "Make the GeoTIFFs that rasterio writes (those whose name contains `only`) lose their second half when closed, silently, as on a full disk."
    real_open = rasterio.open

    class Short:
        def __init__(self, ds, path):
            self.ds, self.path = ds, path

        def __enter__(self):
            return self.ds.__enter__()

        def __exit__(self, *exc):
            r = self.ds.__exit__(*exc)
            os.truncate(self.path, os.path.getsize(self.path) // 2)
            return r

    def short_open(path, mode="r", *a, **k):
        ds = real_open(path, mode, *a, **k)
        return Short(ds, path) if mode == "w" and only in Path(path).name else ds

    monkeypatch.setattr(rasterio, "open", short_open)


@pytest.mark.parametrize("short", ["classes", "confidence"])
def test_short_write_keeps_the_previous_map(tmp_path, model, monkeypatch, short):
    "A GeoTIFF that GDAL wrote short (no exception) is not published: the error names it, the old outputs all stay."
    out = tmp_path / "map"
    first = map_scene(CROP, model, out_dir=out, tile=128, progress=False)
    before = {k: Path(v).read_bytes() for k, v in first.items()}
    _short_writes(monkeypatch, only=short)
    with pytest.raises(OSError, match=rf"/s2_l1c_virginia_crop_{short}\.tif: the written file does not read back"):
        map_scene(CROP, model, out_dir=out, tile=128, stride=64, progress=False)
    monkeypatch.undo()
    assert {k: Path(v).read_bytes() for k, v in first.items()} == before  # map, confidence, counts and JSON
    assert not [f for f in out.iterdir() if f.name.startswith(".")]  # no temporary left


@pytest.mark.slow
def test_full_disk_cli_exits_non_zero_and_keeps_the_map(tmp_path):
    "On a real full tmpfs senclip_map fails with one line and the previous class map is kept byte for byte."
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a real full disk needs root to mount a small tmpfs")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        args = ("--scene", CROP, "--out", disk / "map", "--tile", 128, "--device", "cpu", "--quiet")
        assert _run(*args).returncode == 0
        cls = disk / "map" / "s2_l1c_virginia_crop_classes.tif"
        old = cls.read_bytes()
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)  # fill the disk to the last byte
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        p = _run(*args, "--stride", 64)
        last = p.stderr.strip().splitlines()[-1]  # GDAL's own complaints about the disk come before it
        assert p.returncode != 0 and str(disk / "map") in last and "previous map" in last, p.stderr
        assert cls.read_bytes() == old
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_unwritable_out_fails_before_the_model_loads(tmp_path):
    "The output folder is checked first: a model that does not exist is never reached."
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot write output here"):
        map_scene(CROP, "no-such-model-anywhere", out_dir=blocker / "map", progress=False)


@pytest.mark.slow  # over ~3 s on 2 cores: make test-slow (CI runs it)
def test_truncated_scene_cli_is_one_line(tmp_path):
    bad = tmp_path / "cut_short.tif"
    bad.write_bytes(CROP.read_bytes()[: CROP.stat().st_size // 2])
    p = _run("--scene", bad, "--out", tmp_path / "m", "--device", "cpu", "--quiet")
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "truncated" in lines[0], p.stderr
    p = _run("--scene", bad, "--out", tmp_path / "m", "--device", "cpu", "--quiet", "--debug")
    assert p.returncode != 0 and "Traceback" in p.stderr


def test_help_does_not_import_torch(tmp_path):
    script = tmp_path / "help.py"
    script.write_text("import sys\nfrom senclip.mapping import senclip_map\ntry:\n    senclip_map()\n"
                      "except SystemExit:\n    pass\nprint('torch imported:', 'torch' in sys.modules)\n")
    p = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, env=ENV, timeout=60)
    assert "--allow_no_crs" in p.stdout and "--debug" in p.stdout, p.stdout + p.stderr
    assert "torch imported: False" in p.stdout
