"""The map explorer (issue 13 item 3): its plain functions agree with the map and with `heat_map`, and the widget,
driven in a real JupyterLab in headless Chromium, redraws the heat map when a sentence is typed."""
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from senclip.core import UserError, sample_dir

ROOT = Path(__file__).resolve().parent.parent
CROP = sample_dir("sentinel2", "s2_l1c_virginia_crop.tif")


@pytest.fixture(scope="module")
def model():
    import senclip

    return senclip.load("senclip-tiny-vit", device="cpu")


@pytest.fixture(scope="module")
def window(tmp_path_factory):
    "A 192 x 160 px window of the sample crop with a no-data corner."
    path = tmp_path_factory.mktemp("scene") / "window.tif"
    with rasterio.open(CROP) as s:
        win = rasterio.windows.Window(300, 300, 192, 160)
        arr = s.read(window=win)
        arr[:, :8, :8] = 0
        with rasterio.open(path, "w", **{**s.profile, "width": 192, "height": 160,
                                         "transform": s.window_transform(win)}) as d:
            d.write(arr)
            d.descriptions = s.descriptions
    return path


@pytest.fixture(scope="module")
def mapped(tmp_path_factory, window, model):
    from senclip.mapping import map_scene

    return map_scene(window, model, out_dir=tmp_path_factory.mktemp("map"), tile=32, progress=False, device="cpu")


def test_sentence_heat_is_heat_map(mapped, model, tmp_path):
    "The explorer's heat map of a sentence is the one senclip.mapping.heat_map writes, cell for cell."
    from senclip.explore import open_tiles, sentence_heat
    from senclip.mapping import heat_map

    space = open_tiles(mapped, model)
    h = sentence_heat(space, "a river crossing farmland")
    with rasterio.open(heat_map(mapped, "a river crossing farmland", model, out_dir=tmp_path, figure=False)["heat"]) as f:
        np.testing.assert_allclose(h, f.read(1), atol=1e-5, equal_nan=True)
    assert np.isnan(h[0, 0]) and space.shape == (5, 6)


def test_overlapping_windows_average_like_the_map(window, model, tmp_path):
    "With a stride below the tile size, the explorer averages overlapping windows onto the cells as heat_map does."
    from senclip.explore import open_tiles, sentence_heat
    from senclip.mapping import heat_map, map_scene

    paths = map_scene(window, model, out_dir=tmp_path / "map", tile=32, stride=16, progress=False, device="cpu")
    space = open_tiles(paths, model)
    h = sentence_heat(space, "a lake")
    with rasterio.open(heat_map(paths, "a lake", model, out_dir=tmp_path, figure=False)["heat"]) as f:
        assert f.shape == h.shape == space.shape and space.windows != space.shape
        np.testing.assert_allclose(h, f.read(1), atol=1e-5, equal_nan=True)


def test_class_scores_give_the_map(mapped, model):
    "With the map's own prompts, the best class of every cell is the class the map wrote."
    from senclip.explore import class_grid, scores_at, open_tiles
    from senclip.mapping import NODATA_CLASS

    space = open_tiles(mapped, model)
    meta = json.loads(Path(mapped["meta"]).read_text())
    S, P = class_grid(space, meta["prompts"])
    with rasterio.open(mapped["classes"]) as f:
        classes = f.read(1)
    ok = classes != NODATA_CLASS
    assert (S[ok].argmax(-1) == classes[ok]).all() and np.isnan(S[~ok]).all()
    top = scores_at(space, 2, 3, meta["prompts"])
    assert top["class"].iloc[0] == meta["classes"][classes[2, 3]]
    assert scores_at(space, 0, 0).empty  # a no-data cell has no scores


@pytest.mark.slow  # over ~2.5 s on a slow 2-core machine (torch imports in 4 s): make test-slow (CI runs it)
def test_explorer_without_a_browser(mapped, model):
    "Setting the widgets' values runs the callbacks a person triggers: sentence, class, style, place, k."
    from senclip.explore import cell_at, explore

    ex = explore(mapped, model, "a dense forest", k=2)
    first = ex.image.value
    ex.text.value = "a lake with a harbour"
    typed = ex.image.value
    assert typed != first
    ex.style.value = "ground"  # sentence shown: the style only changes the class scores below
    assert ex.query == ("sentence", "a lake with a harbour")
    ex.cls.value = ex.cls.options[3]
    ex.click(*ex.space.transform @ (4.5, 3.5))
    ex.k.value = 4
    assert ex.image.value not in (first, typed) and not ex.status.value, ex.status.value
    assert (ex.row.value, ex.col.value) == (3, 4) and "row 3, col 4 (ground prompts)" in ex.scores.value
    assert ex.top.value.count("<tr") == 1 + 4  # header + k rows
    assert cell_at(ex.space, 0, 0) is None
    ex.show_class("Glacier")  # the widget shows an error instead of raising it into the kernel's log
    assert "not one of this map's classes" in ex.status.value


def test_explorer_refuses_another_model(mapped):
    import senclip
    import torch

    from senclip.explore import open_tiles

    other = senclip.load("senclip-tiny-vit", device="cpu", seed=1)
    with torch.no_grad():
        next(other.model.parameters()).add_(1.0)
    with pytest.raises(UserError, match="pass that model"):
        open_tiles(mapped, other)


# ---------------------------------------------------------------------------------------------------------------
# In JupyterLab, as a reader meets it: nbs/05c_explore.ipynb runs, then typing a sentence redraws the heat map.
@pytest.mark.slow  # a JupyterLab server, Chromium and a kernel: about a minute on 2 cores
def test_explorer_in_jupyterlab(tmp_path):
    from jupyterlab_harness import (VIEWPORT, LabServer, copy_tree, find_cell, lab_browser, missing_requirements,
                                    output_image_src, run_notebook, shutdown_kernel, type_into_widget,
                                    wait_for_image_change, wait_kernel_idle)

    if missing_requirements():
        pytest.skip(missing_requirements())
    root = copy_tree(ROOT / "nbs", tmp_path / "nbs", extra=(ROOT / "settings.ini",))
    env = {"IN_TEST": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": None}
    with LabServer(root, env=env) as lab, lab_browser() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        run = run_notebook(page, lab, "nbs/05c_explore.ipynb", shots=tmp_path / "shots", timeout=900,
                           shutdown=False)
        assert not run.errors and not run.not_run and not run.missing_figures, run.summary()
        cell = find_cell(page, "explore(paths")
        before = output_image_src(page, cell)
        assert before, "the explorer shows no heat-map image"
        type_into_widget(page, "a harbour on a wide river", cell=cell)
        after = wait_for_image_change(page, cell, before, timeout=120)
        wait_kernel_idle(page)
        assert after != before
        title = page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status")
        assert title == "idle"
        shutdown_kernel(page)
