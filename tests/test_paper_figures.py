"""The figure notebooks of nbs/paper/ (Fig. 4, Fig. A.1/A.3, training curves, attention over views) run by papermill
on one demo output folder (pairs -> two training steps, no evaluation) made once for this module."""
import json
import os
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "nbs" / "paper"
# notebook -> (figures it writes, tables it writes)
NOTEBOOKS = {
    "fig4_retrieval": (["fig4_patch_to_photo", "fig4_photo_to_patch", "fig4_text_to_patch"], ["fig4_retrieval.csv", "fig4.json"]),
    "figA1_points": (["figA1_points", "figA1_status", "figA3_point"], ["figA1_points.csv", "figA3_points.csv", "figA1.json"]),
    "training_curves": (["training_curves"], ["training_curves.csv", "training_curves.json"]),
    "attention_views": (["attention_views"], ["attention_views_by_class.csv", "attention_views_points.csv", "attention_views.json"]),
}


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_parameters_are_found(name):
    """papermill sees the tagged parameters cell (nbdev_clean must keep the tag, or -p values are silently ignored),
    with `demo` among them; the notebook opens on a kernel and exports nothing."""
    import papermill

    params = papermill.inspect_notebook(str(PAPER / f"{name}.ipynb"))
    assert "demo" in params and params["demo"]["default"] == "False"  # the paper configuration by default
    assert {"run_dir", "out"} <= set(params)
    nb = json.loads((PAPER / f"{name}.ipynb").read_text())
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3"
    assert not any("#| export" in "".join(c["source"]) for c in nb["cells"])  # paper notebooks export nothing


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    "One demo output folder (pairs, two training steps, no evaluation) shared by every notebook of this module."
    from senclip.demo import run_demo

    root = tmp_path_factory.mktemp("paper")
    old = {k: os.environ.get(k) for k in ("SENCLIP_CACHE", "HF_HUB_OFFLINE", "MPLBACKEND")}
    os.environ.update(SENCLIP_CACHE=str(root / "cache"), HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    try:
        run_demo(root / "demo", max_steps=2, eval=False)
        yield root
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run(name: str, root: Path, tag: str = "", **params) -> Path:
    import papermill

    out = root / "out" / (name + tag)
    papermill.execute_notebook(str(PAPER / f"{name}.ipynb"), str(root / f"{name}{tag}.ipynb"), cwd=str(ROOT),
                               parameters=dict(demo=True, run_dir=str(root / "demo"), out=str(out), **params),
                               progress_bar=False, log_output=False)
    return out


def _check_outputs(name: str, out: Path):
    figures, tables = NOTEBOOKS[name]
    for f in figures:
        for ext in ("png", "pdf"):
            p = out / f"{f}.{ext}"
            assert p.exists() and p.stat().st_size > 1000, p
    for t in tables:
        assert (out / t).exists() and (out / t).stat().st_size > 0, out / t
    meta = json.loads((out / [t for t in tables if t.endswith(".json")][0]).read_text())
    assert meta["commit"] and meta["params"]["demo"] is True
    assert "not " in meta["not_a_result"]  # demo inputs: every figure carries a stamp ("not a result", "not LUCAS data")
    return meta


@pytest.mark.slow
def test_fig4_retrieval(demo_run):
    out = _run("fig4_retrieval", demo_run)
    _check_outputs("fig4_retrieval", out)
    t = pd.read_csv(out / "fig4_retrieval.csv")
    assert set(t.search) == {"patch->photo", "photo->patch", "text->patch"}
    assert t.groupby(["search", "query"]).size().eq(2).all()  # top-2, as in the paper
    assert t.groupby(["search", "query"]).similarity.apply(lambda s: s.is_monotonic_decreasing).all()
    assert t[t.search == "patch->photo"].query_class.nunique() == 5  # five EuroSAT classes queried
    assert t[t.search == "patch->photo"].photo.str.endswith(".jpg").all()


@pytest.mark.slow
def test_figA1_points(demo_run):
    out = _run("figA1_points", demo_run)
    meta = _check_outputs("figA1_points", out)
    pts = pd.read_csv(out / "figA1_points.csv")
    assert len(pts) == meta["counts"]["points"] == 60 and (pts.status == "ok").sum() == 54
    a3 = pd.read_csv(out / "figA3_points.csv")
    assert len(a3) == 2 and a3.lc1.nunique() == 2  # two points, two land-cover classes


@pytest.mark.slow
def test_training_curves(demo_run):
    out = _run("training_curves", demo_run)
    meta = _check_outputs("training_curves", out)
    assert meta["final"]["step"] == 2 and meta["final"]["loss"] > 0
    assert len(pd.read_csv(out / "training_curves.csv")) >= 1


@pytest.mark.slow
def test_attention_views_avg_and_attn_image(demo_run):
    "The demo model pools with avg: uniform weights, said so; an AttPool checkpoint gives its learned softmax weights."
    import torch

    from senclip.core import get_preset
    from senclip.model import build_senclip
    from senclip.train_state import save_checkpoint

    out = _run("attention_views", demo_run)
    meta = _check_outputs("attention_views", out)
    assert meta["pooling"] == "avg"
    by = pd.read_csv(out / "attention_views_by_class.csv")
    full = pd.read_csv(out / "attention_views_points.csv").query("n_views == 4")
    assert (full[["N", "E", "S", "W"]] == 0.25).all().all() and by.n_points.sum() == 54
    nb = json.loads((demo_run / "attention_views.ipynb").read_text())
    assert any("pools with `avg`" in "".join(o.get("data", {}).get("text/markdown", ""))
               for c in nb["cells"] for o in c.get("outputs", []))

    p = get_preset("demo", pooling="attn_image")
    torch.manual_seed(0)
    m = build_senclip(p)
    torch.nn.init.normal_(m.pool.linear.weight, std=0.5)
    ck = save_checkpoint(demo_run / "attn.pt", dict(model=m.state_dict(), preset=p.to_dict(), step=7))
    out = _run("attention_views", demo_run, "_attn", checkpoint=str(ck))
    meta = _check_outputs("attention_views", out)
    assert meta["pooling"] == "attn_image" and meta["step"] == 7
    pts = pd.read_csv(out / "attention_views_points.csv")
    w = pts[["N", "E", "S", "W"]].to_numpy()
    assert abs(w.sum(axis=1) - 1).max() < 1e-5 and abs(w[pts.n_views == 4] - 0.25).max() > 0.01
