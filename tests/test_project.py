"""The project's own wiring: one dependency list, notebooks papermill can parameterise, exported package in sync."""
import configparser
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def settings():
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini")
    return cfg["DEFAULT"]


def test_environment_yml_installs_settings_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    py = [d for d in deps if isinstance(d, str) and d.startswith("python")]
    assert py, "environment.yml must pin python"
    min_py = tuple(int(x) for x in settings()["min_python"].split("."))
    got = tuple(int(x) for x in re.split(r"[=<>]+", py[0])[1].split(".")[:2])
    assert got >= min_py, f"environment.yml python {got} is below settings.ini min_python {min_py}"
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    # the only pip line is the editable install: settings.ini stays the single list of Python dependencies
    assert pip == ['-e ".[dev]"'], pip
    conda_pkgs = [d for d in deps if isinstance(d, str) and not d.startswith(("python", "pip"))]
    assert conda_pkgs == [], f"Python packages belong in settings.ini, not environment.yml: {conda_pkgs}"


def test_setup_py_reads_settings():
    out = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == settings()["version"]
    assert "pkg_resources" not in (ROOT / "setup.py").read_text()


def test_torch_ranges_admit_local_wheels():
    from packaging.requirements import Requirement

    reqs = {Requirement(r).name: Requirement(r) for r in settings()["requirements"].split()}
    assert reqs["torch"].specifier.contains("2.14.1")
    assert reqs["torchvision"].specifier.contains("0.29.1")


def test_nbdev_settings_keep_papermill_tags():
    s = settings()
    assert "tags" in s["allowed_cell_metadata_keys"].split()
    assert set(s["tst_flags"].split()) == {"slow", "cuda"}


def test_papermill_notebooks_have_parameters():
    import papermill

    nbs = [ROOT / "nbs" / "04_eval.ipynb", *sorted((ROOT / "nbs" / "paper").glob("*.ipynb"))]
    nbs = [n for n in nbs if n.exists()]
    for nb in nbs:
        params = papermill.inspect_notebook(str(nb))
        assert params, f"{nb.relative_to(ROOT)} has no cell tagged 'parameters': papermill would ignore -p values"


def test_sample_data_is_small_and_present():
    sample = ROOT / "data" / "sample"
    total = sum(f.stat().st_size for f in sample.rglob("*") if f.is_file())
    assert total < 15e6, f"data/sample is {total / 1e6:.1f} MB (limit 15 MB)"
    jpgs = list((sample / "eurosat" / "2750").glob("*/*.jpg"))
    assert len(jpgs) == 200 and len({j.parent.name for j in jpgs}) == 10
    import rasterio

    with rasterio.open(sample / "sentinel2" / "s2_l1c_virginia_crop.tif") as ds:
        assert ds.crs.to_epsg() == 32618 and ds.count == 4 and ds.res == (10.0, 10.0)
        assert ds.descriptions == ("B02", "B03", "B04", "B08")


def test_cited_test_files_exist():
    "Every `tests/....py[::name]` a notebook or the README cites exists (and so does the cited test function)."
    cited = set()
    for f in [*(ROOT / "nbs").rglob("*.ipynb"), ROOT / "README.md"]:
        cited |= {(m.group(1), m.group(2)) for m in re.finditer(r"(tests/[\w/]+\.py)(?:::(\w+))?", f.read_text())}
    assert cited, "no citation found: the pattern is wrong"
    for path, func in sorted(cited, key=str):
        assert (ROOT / path).exists(), f"{path} is cited but does not exist"
        if func:
            assert f"def {func}(" in (ROOT / path).read_text(), f"{path}::{func} is cited but not defined"


def test_notebooks_are_valid_nbformat_with_cell_ids():
    "Every notebook validates against its nbformat schema, and every cell has a unique id (required since nbformat 4.5;\n    a cell written without one is a MissingIDFieldWarning today and a hard error in later nbformat versions)."
    import json

    import nbformat

    for path in sorted((ROOT / "nbs").rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        raw = json.loads(path.read_text())
        ids = [c.get("id") for c in raw["cells"]]
        assert None not in ids, f"{path.relative_to(ROOT)}: cell {ids.index(None)} has no id (nbformat 4.5 needs one)"
        assert len(set(ids)) == len(ids), f"{path.relative_to(ROOT)}: duplicate cell ids"
        nbformat.validate(nbformat.reads(path.read_text(), as_version=nbformat.NO_CONVERT))
