"""nbs/04_eval.ipynb through papermill in demo mode, and the senclip_eval command, each writing to a tmp dir."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "IN_TEST"}
    env.update(HF_HUB_OFFLINE="1", MPLBACKEND="Agg", SENCLIP_CACHE=str(tmp_path / "cache"))
    return env


@pytest.mark.slow  # over ~10 s on 2 cores: make test-slow (CI runs it)
def test_papermill_demo(tmp_path):
    import papermill

    params = papermill.inspect_notebook(str(ROOT / "nbs" / "04_eval.ipynb"))
    assert {"demo", "models", "datasets", "prompts", "scoring", "eurosat_root", "bigearthnet_root"} <= set(params)
    run = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "papermill", str(ROOT / "nbs" / "04_eval.ipynb"), str(tmp_path / "out.ipynb"),
         "-p", "demo", "True", "-p", "out_dir", str(run), "-p", "n_boot", "50", "--cwd", str(ROOT)],
        env=_env(tmp_path), capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Unable to parse" not in out.stderr  # every parameter line is a literal papermill can read
    res = pd.read_csv(run / "results.csv")
    assert set(res.dataset) == {"eurosat", "bigearthnet19", "lucas-lc1"}
    # the untrained architecture, plus the demo checkpoint when `make demo` has trained it: none of it is a result
    assert res.not_a_result.all() and res.untrained.any() and set(res.scoring) == {"class-mean", "cosine", "dap"}
    assert (res[res.dataset == "eurosat"].n_images == 200).all()
    assert (res[res.dataset == "bigearthnet19"].n_images == 6).all()
    assert (run / "table1.md").read_text().startswith("**UNTRAINED WEIGHTS")
    for f in ("confusion_eurosat_aerial_senclip-tiny-vit", "per_class_bigearthnet19_ground", "sweep_eurosat"):
        assert (run / "figures" / f"{f}.png").exists() and (run / "figures" / f"{f}.pdf").exists()
    meta = json.loads((run / "params.json").read_text())
    assert meta["params"]["demo"] is True and meta["commit"]
    # the injected parameters were used (not the Table 1 defaults)
    nb = json.loads((tmp_path / "out.ipynb").read_text())
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in nb["cells"])


@pytest.mark.slow  # over ~10 s on 2 cores: make test-slow (CI runs it)
def test_default_mode_fails_early_offline(tmp_path):
    """Without demo, missing weights/data stop the notebook in its first cells with a clear message."""
    out = subprocess.run(
        [sys.executable, "-m", "papermill", str(ROOT / "nbs" / "04_eval.ipynb"), str(tmp_path / "out.ipynb"),
         "-p", "out_dir", str(tmp_path / "run"), "-p", "models", '["senclip-vit-b-32-avgpool"]', "--cwd", str(ROOT)],
        env=_env(tmp_path), capture_output=True, text=True, timeout=300)  # a loaded machine starts kernels slowly
    assert out.returncode != 0
    assert "downloads are off" in out.stderr or "HF_HUB_OFFLINE" in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "run" / "results.csv").exists()
    # the clear message comes first, on its own line (the kernel writes it before papermill's report), and the
    # cell's traceback is the cell alone: no frames from huggingface_hub or senclip's internals
    lines = out.stderr.splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("04_eval stopped:"))
    # before papermill's own report (counted from that report, not from the top: under load the kernel and the
    # progress bar may write a few more lines first, which made a fixed line limit flaky)
    report = next(i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last)"))
    assert first < report, out.stderr[:3000]
    assert "senclip-vit-b-32-avgpool" in lines[first] and "demo=True" in lines[first]
    assert "LocalEntryNotFoundError" not in out.stderr and "huggingface_hub" not in out.stderr


@pytest.mark.slow  # over ~10 s on 2 cores: make test-slow (CI runs it)
def test_senclip_eval_cli(tmp_path):
    run = tmp_path / "cli"
    out = subprocess.run(
        [str(Path(sys.executable).parent / "senclip_eval"), "--demo", "--out", str(run),
         "--models", "senclip-tiny-vit", "--datasets", "eurosat", "--prompts", "generic,ground", "--scoring", "cosine,dap",
         "--n_boot", "0", "--num_workers", "0", "--no_sweep"],
        env=_env(tmp_path), capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    res = pd.read_csv(run / "results.csv")
    assert len(res) == 4 and set(res.prompts) == {"generic", "ground"}
    assert "UNTRAINED" in out.stdout


def test_parameters_cell_is_evalconfig():
    """The notebook's parameters are EvalConfig's fields, declared once: the tagged cell is the text
    EvalConfig.papermill_cell() writes (regenerate it from there when a field changes)."""
    import papermill

    from senclip.zeroshot.evaluate import EvalConfig

    nb = json.loads((ROOT / "nbs" / "04_eval.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    assert "".join(cell["source"]).strip() == EvalConfig.papermill_cell().strip()
    params = papermill.inspect_notebook(str(ROOT / "nbs" / "04_eval.ipynb"))
    assert list(params) == [f.name for f in __import__("dataclasses").fields(EvalConfig)]
