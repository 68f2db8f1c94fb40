"""The notebooks as a reader meets them: a real JupyterLab in headless Chromium opens `nbs/index.ipynb`,
`nbs/04_eval.ipynb` (demo) and `nbs/05_mapping.ipynb`, runs every cell from the Run menu, and the page must show
no error and an image under every cell that makes a figure.

The server serves a temporary copy of `nbs/` (plus `settings.ini`, for the closing `nbdev_export()` cells), so
nothing the page does can write into the working tree. Its kernels get `IN_TEST=1` (the notebooks switch to
`data/sample`; `04_eval` runs its offline demo) and `HF_HUB_OFFLINE=1`, and *not* `MPLBACKEND=Agg`, which the
rest of the test suite sets: with it, figures never reach the page, which is what this test is here to catch.

Screenshots (one per notebook, scrolled to its first figure, and one per figure cell) go to `$SENCLIP_LAB_SHOTS`
or a pytest temporary folder, with `runs.json` (timings, kernel dialog, per-cell images and errors).
Needs Debian's `chromium`, `playwright` (its browser download is never used) and the `lab` extra; skipped with
the reason when one is missing. Slow (about a minute per notebook on 2 cores).
"""
import json
import os
from pathlib import Path

import pytest

from jupyterlab_harness import (VIEWPORT, LabServer, copy_tree, lab_browser, missing_requirements, open_notebook,
                                run_notebook, shutdown_kernel)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ["index.ipynb", "04_eval.ipynb", "05_mapping.ipynb"]
KERNEL_ENV = {"IN_TEST": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": None}
RUN_TIMEOUT = float(os.environ.get("SENCLIP_LAB_TIMEOUT", 1500))  # seconds per notebook, Run All to idle

_missing = missing_requirements()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_missing is not None, reason=_missing or "")]


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    d = Path(os.environ["SENCLIP_LAB_SHOTS"]) if os.environ.get("SENCLIP_LAB_SHOTS") else (
        tmp_path_factory.mktemp("lab-shots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    "One JupyterLab server on a copy of nbs/ for the module."
    root = copy_tree(ROOT / "nbs", tmp_path_factory.mktemp("lab") / "nbs", extra=(ROOT / "settings.ini",))
    with LabServer(root, env=KERNEL_ENV) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    with lab_browser() as b:
        yield b


@pytest.fixture
def page(browser):
    p = browser.new_page(viewport=VIEWPORT)
    yield p
    p.close()


def _record(shots: Path, run) -> None:
    "Append a notebook's run to shots/runs.json (what the lead reads when a notebook fails in CI)."
    f = shots / "runs.json"
    runs = json.loads(f.read_text()) if f.exists() else {}
    runs[run.path] = {
        "seconds": round(run.seconds, 1), "kernel_dialog": run.kernel_dialog, "dirty_on_open": run.dirty_on_open,
        "screenshot": str(run.screenshot), "errors": run.errors, "missing_figures": run.missing_figures,
        "not_run": run.not_run, "console_errors": run.console_errors[:20],
        "figure_cells": {c.index: [(i["width"], i["height"]) for i in c.images] for c in run.cells if c.makes_figure},
    }
    f.write_text(json.dumps(runs, indent=1))


@pytest.mark.parametrize("nb", NOTEBOOKS)
def test_notebook_runs_in_jupyterlab(lab, page, shots, nb):
    "Run All in JupyterLab: no error output, every cell run, an image under every figure cell."
    run = run_notebook(page, lab, f"nbs/{nb}", shots=shots, timeout=RUN_TIMEOUT)
    _record(shots, run)
    print(run.summary())
    assert not run.errors, run.summary()
    assert not run.not_run, run.summary()
    assert not run.missing_figures, run.summary()
    assert run.screenshot.stat().st_size > 10_000
    if nb == "04_eval.ipynb":  # the offline demo on data/sample, not the paper's configuration
        assert any("demo=True" in c.text for c in run.cells), run.summary()
        assert [c for c in run.cells if c.makes_figure and c.loaded_images], "04_eval showed no figure at all"


@pytest.mark.parametrize("nb", NOTEBOOKS)
def test_notebook_opens_on_its_kernel(lab, page, nb):
    """The notebook opens on its Python 3 kernel, without JupyterLab's 'Select Kernel' dialog (it has a kernelspec).

    Not checked: that opening leaves it unmodified. JupyterLab marks a notebook modified unless its kernelspec
    display name and its whole `language_info` (Python's patch version included) equal the running kernel's, and
    `nbdev_clean` resets the display name to the kernel name and drops `language_info`; so every clean notebook
    opens modified. The run records it (`dirty_on_open` in runs.json) for whoever changes that."""
    opened = open_notebook(page, lab, f"nbs/{nb}")
    shutdown_kernel(page)
    print(f"{nb}: {opened}")
    assert opened["kernel_dialog"] is None, (
        f"{nb} opens on JupyterLab's {opened['kernel_dialog']!r} dialog: its metadata has no kernelspec")
    assert opened["kernel"] == "python3"


# ---------------------------------------------------------------------------------------------------------------
# The harness itself: it must see what a reader would see go wrong, and drive widgets (issue 13 reuses it).
def _write_nb(path: Path, sources: list) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    nbformat.write(nb, path)
    return path


FAULTY = [
    "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(2, 1))\nax.plot([0, 1])",
    "import sys\nprint('Traceback (most recent call last):\\n  a logged failure', file=sys.stderr)",
    "1 / 0",
    "print('never run')",
]


def test_harness_sees_agg_figures_and_errors(tmp_path, page):
    """Under MPLBACKEND=Agg (what `make lab` used to export) a plotting cell shows no image: the harness reports it,
    as it reports an error output, a traceback printed on stderr, and the cells Run All never reached."""
    _write_nb(tmp_path / "faulty.ipynb", FAULTY)
    with LabServer(tmp_path, env={"MPLBACKEND": "Agg", "IN_TEST": "1"}) as agg:
        run = run_notebook(page, agg, "faulty.ipynb", timeout=300)
    print(run.summary())
    assert run.kernel_dialog is None
    assert [i for i, _ in run.missing_figures] == [0]
    assert [i for i, _ in run.errors] == [1, 2]
    assert "ZeroDivisionError" in run.errors[1][1]
    assert run.not_run == [3]


WIDGET = """
import io

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display

box = widgets.Text(placeholder="a sentence", continuous_update=False)
img = widgets.Image(format="png")


def draw(text):
    fig, ax = plt.subplots(figsize=(3, 1))
    ax.text(0.05, 0.4, text)
    ax.axis("off")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    img.value = buf.getvalue()


draw("start")
box.observe(lambda change: draw(change["new"]), "value")
display(widgets.VBox([box, img]))
"""


def test_harness_drives_a_widget(lab, page):
    "Type a sentence into an ipywidgets Text box and see the Image widget below it change (the issue-13 pattern)."
    from jupyterlab_harness import find_cell, output_image_src, type_into_widget, wait_for_image_change, wait_kernel_idle

    _write_nb(lab.root / "widget_check.ipynb", [WIDGET])
    run = run_notebook(page, lab, "widget_check.ipynb", timeout=300, shutdown=False)
    assert not run.errors and not run.missing_figures, run.summary()
    cell = find_cell(page, "widgets.Text(")
    before = output_image_src(page, cell)
    assert before and run.cells[0].loaded_images
    type_into_widget(page, "a wheat field under a blue sky", cell=cell)
    after = wait_for_image_change(page, cell, before, timeout=60)
    wait_kernel_idle(page)
    assert after != before
    shutdown_kernel(page)
