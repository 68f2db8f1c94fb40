"""Figures read well at the size they are shown, the 'not a result' stamp never covers anything, and the outputs
kept in the library notebooks stay small and stable under nbdev_clean (issue 11, section 4)."""
import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from senclip.datasets import BEN19_CLASSES, EUROSAT_CLASSNAMES  # noqa: E402
from senclip.zeroshot.evaluate import UNTRAINED, plot_confusion, plot_per_class, stamp  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import refresh_outputs  # noqa: E402

NAMES = list(EUROSAT_CLASSNAMES.values())
MIN_PX = 8.0  # the smallest text a reader can read on a screen, in pixels at the size the figure is shown


def _boxes(fig, text=UNTRAINED):
    "Window extents of the stamp (every artist showing `text`, and its band) and of everything else a reader reads."
    from matplotlib.transforms import Bbox

    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    mine = lambda a: getattr(a, "_senclip_stamp", False) or text in getattr(a, "get_text", lambda: "")()
    stamped = [a for a in [*fig.texts, *fig.artists, *fig.patches] if mine(a)]
    assert stamped, "the figure is not stamped"
    band = Bbox.union([a.get_window_extent(r) for a in stamped])
    others = [ax.get_tightbbox(r) for ax in fig.axes]
    others += [t.get_window_extent(r) for t in fig.texts if not mine(t) and t.get_text()]
    others += [lg.get_window_extent(r) for lg in fig.legends]
    return band, others


@pytest.mark.parametrize("layout", ["none", "tight", "constrained"])
def test_stamp_sits_above_every_title_and_panel(layout):
    "A two-panel figure with a suptitle (plot_map's layout): the stamp's band overlaps no panel, title or gap."
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.5), constrained_layout=layout == "constrained")
    for ax in axes:
        ax.imshow(np.random.default_rng(0).random((8, 8)))
        ax.set_title("a panel title")
    fig.suptitle("a suptitle")
    if layout == "tight":
        fig.tight_layout()
    stamp(fig, UNTRAINED)
    band, others = _boxes(fig)
    assert all(band.y0 >= o.y1 - 0.5 for o in others), (band, others)  # above everything, the gap included
    texts = [t for t in fig.texts if UNTRAINED in t.get_text()]
    assert len(texts) == 1 and texts[0].get_rotation() == 0  # one horizontal stamp, no diagonal watermark
    plt.close(fig)


def test_stamp_twice_keeps_one_band_with_both_texts():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.set_title("t")
    stamp(fig, UNTRAINED)
    h = fig.get_figheight()
    stamp(fig, UNTRAINED)
    assert fig.get_figheight() == h
    stamp(fig, "demo weights — not a result")
    assert len([t for t in fig.texts if UNTRAINED in t.get_text()]) == 1
    band, others = _boxes(fig)
    assert all(band.y0 >= o.y1 - 0.5 for o in others)
    plt.close(fig)


def _shown_width() -> int:
    "The width nbs/04_eval.ipynb shows each confusion matrix at."
    nb = json.loads((ROOT / "nbs" / "04_eval.ipynb").read_text())
    src = next("".join(c["source"]) for c in nb["cells"] if 'startswith("confusion")' in "".join(c["source"]))
    return int(re.search(r"width=(\d+)", src).group(1))


def test_confusion_matrix_reads_at_its_shown_size(tmp_path):
    "Cell numbers and class names at least MIN_PX high where 04_eval shows the PNG save_fig writes; names whole."
    from senclip.zeroshot.evaluate import save_fig

    y = torch.arange(200) % 10
    S = torch.rand(200, 10, generator=torch.Generator().manual_seed(0)) + torch.nn.functional.one_hot(y, 10)
    fig = plot_confusion(S, y, NAMES, "model\neurosat, aerial prompts", UNTRAINED)
    ax = fig.axes[0]
    cells = [t for t in ax.texts]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert [lab.replace("\n", " ") for lab in labels] == NAMES  # wrapped, never cut ("Herbaceous Vegetation La")
    assert all(re.fullmatch(r"\d{1,3}", t.get_text()) for t in cells)  # whole-number percentages
    png = save_fig(fig, tmp_path / "c")[0]
    from PIL import Image

    scale = _shown_width() / Image.open(png).width  # shown px per saved px
    px_per_pt = 130 / 72 * scale
    assert min(t.get_fontsize() for t in cells) * px_per_pt >= MIN_PX
    assert min(t.get_fontsize() for t in ax.get_yticklabels()) * px_per_pt >= MIN_PX - 0.5
    plt.close(fig)


def test_per_class_bars_keep_long_class_names():
    t = pd.DataFrame({"class": BEN19_CLASSES, "ap": np.linspace(0, 1, 19)})
    fig = plot_per_class({f"m ({UNTRAINED})": t, "other": t}, "ap", "bigearthnet19: per-class ap", UNTRAINED)
    names = [x.get_text().replace("\n", " ") for x in fig.axes[0].get_yticklabels()]
    assert names == list(BEN19_CLASSES)  # "Industrial or commercial units", not "Industrial or commerci"
    assert [x.get_text() for x in fig.axes[0].get_legend().get_texts()] == ["m", "other"]  # the stamp says the caveat
    plt.close(fig)


def test_results_table_keeps_model_names_on_one_line():
    from senclip.zeroshot.evaluate import table_html

    t = pd.DataFrame({"dataset": ["eurosat"], "model": [f"senclip-tiny-vit ({UNTRAINED})"], "generic": [8.5],
                      "no paper number because": ["untrained weights — not a result; " * 6]})
    h = table_html(t)
    model_cell = re.search(r'<td style="([^"]*)">senclip-tiny-vit</td>', h)
    assert model_cell and "nowrap" in model_cell.group(1)
    assert re.search(r'<td style="[^"]*max-width:[^"]*">untrained', h)  # the long note gets a narrow column


@pytest.mark.slow  # over ~3.5 s on a slow 2-core machine (torch imports in 4 s): make test-slow (CI runs it)
def test_keep_outputs_drops_noise_and_shrinks_images():
    import base64
    import io

    from PIL import Image

    big = Image.fromarray((np.random.default_rng(0).random((600, 900, 3)) * 255).astype(np.uint8))
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    outs = [
        {"output_type": "stream", "name": "stdout", "text": ["eurosat: 200 images, 10 classes\n",
                                                           "wrote /tmp/tmpab12/run/results.csv\n",
                                                           "epoch 1:  40%|####      | 4/10 [00:01<00:02, 3.1it/s]\n",
                                                           "done in 12.3 s\n"]},
        {"output_type": "stream", "name": "stderr", "text": ["UserWarning: something\n"]},
        {"output_type": "display_data", "metadata": {},
         "data": {"image/png": base64.b64encode(buf.getvalue()).decode(), "text/plain": ["<Figure size 900x600>"]}},
        {"output_type": "execute_result", "execution_count": 7, "metadata": {},
         "data": {"text/plain": ["<object at 0x7f3a2b1c9d00>"]}},
    ]
    kept = refresh_outputs.keep_outputs(outs, max_kb=60)
    assert kept[0] == {"name": "stdout", "output_type": "stream", "text": ["eurosat: 200 images, 10 classes\n"]}
    img = [o for o in kept if "image/png" in o.get("data", {})]
    assert len(img) == 1 and len(base64.b64decode(img[0]["data"]["image/png"])) <= 60 * 1024
    assert img[0]["metadata"]["image/png"]["width"] == 900  # shown at the size it had
    assert len(kept) == 2  # stderr and the machine-specific repr are gone


@pytest.mark.parametrize("nb", sorted(p.name for p in (ROOT / "nbs").glob("*.ipynb")))
def test_kept_outputs_are_small_and_clean(nb):
    "Every library notebook: images under the limit, no error output, and nbdev_clean leaves it as committed."
    assert refresh_outputs.check(ROOT / "nbs" / nb, max_kb=60) == []


def test_map_figure_stamp_clear_of_both_panels(tmp_path):
    "plot_map on the sample crop: the stamp is one band above the suptitle and both panels, not across the gap."
    import senclip
    from senclip.core import sample_dir
    from senclip.mapping import map_scene, plot_map

    crop = sample_dir("sentinel2", "s2_l1c_virginia_crop.tif")
    paths = map_scene(crop, senclip.load("senclip-tiny-vit"), out_dir=tmp_path, tile=128, progress=False, caveat=UNTRAINED)
    fig = plot_map(paths, crop)
    band, others = _boxes(fig)
    assert len(fig.axes) == 2 and all(band.y0 >= o.y1 - 0.5 for o in others)
    assert [t.get_rotation() for t in fig.texts if UNTRAINED in t.get_text()] == [0]
    plt.close(fig)
