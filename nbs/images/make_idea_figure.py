"""Draw nbs/images/senclip_idea.png, the README's one-picture summary of SenCLIP (run from the repo root).

The satellite patch is a real crop of the bundled Sentinel-2 scene; the four "ground photos" are scikit-image
sample photos standing in for LUCAS photos (labelled as such)."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import rasterio
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from rasterio.windows import Window
from skimage import data as skdata
from skimage.transform import resize

ROOT = Path(__file__).resolve().parents[2]


def s2_patch():
    with rasterio.open(ROOT / "data/sample/sentinel2/s2_l1c_virginia_crop.tif") as ds:
        a = ds.read([3, 2, 1], window=Window(180, 300, 100, 100)).astype(float)  # B04, B03, B02
    a = (a - a.min()) / (a.max() - a.min())
    return np.clip(a.transpose(1, 2, 0) * 1.3, 0, 1)


def photos():
    ims = [skdata.grass(), skdata.coffee(), skdata.rocket(), skdata.chelsea()]
    out = []
    for im in ims:
        im = im if im.ndim == 3 else np.stack([im] * 3, -1)
        out.append(resize(im, (96, 128), anti_aliasing=True))
    return out


def box(ax, xy, w, h, text, fc):
    ax.add_patch(FancyBboxPatch(xy, w, h, boxstyle="round,pad=0.02", fc=fc, ec="0.3", lw=1))
    ax.text(xy[0] + w / 2, xy[1] + h / 2, text, ha="center", va="center", fontsize=9)


def arrow(ax, a, b, **kw):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, lw=1.2, color="0.25", **kw))


def main(out=ROOT / "nbs/images/senclip_idea.png"):
    fig = plt.figure(figsize=(11, 4.2))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 4.2)
    ax.axis("off")
    # ground photos
    for i, (im, d) in enumerate(zip(photos(), "NESW")):
        x = 0.2 + i * 0.78
        ax.imshow(im, extent=(x, x + 0.72, 3.0, 3.55))
        ax.text(x + 0.36, 3.6, d, ha="center", fontsize=9, weight="bold")
    ax.text(1.7, 2.8, "ground photos at the point (LUCAS)\n(here: stand-in sample photos)", ha="center", va="top", fontsize=7.5)
    box(ax, (3.45, 3.0), 1.5, 0.55, "CLIP image encoder\n$f_G$ (frozen)", "#dde7f3")
    box(ax, (5.3, 3.0), 1.3, 0.55, "pool 4 views\n(avg / attention)", "#dde7f3")
    arrow(ax, (3.3, 3.27), (3.45, 3.27))
    arrow(ax, (4.95, 3.27), (5.3, 3.27))
    # satellite
    ax.imshow(s2_patch(), extent=(0.9, 2.1, 0.45, 1.65))
    ax.text(1.5, 0.3, "Sentinel-2 patch (RGB, 10 m)", ha="center", va="top", fontsize=7.5)
    box(ax, (3.45, 0.8), 1.5, 0.55, "CLIP image encoder\n$f_S$ (fine-tuned)", "#fbe3c8")
    box(ax, (5.3, 0.8), 1.3, 0.55, "projection head\n(training only)", "#fbe3c8")
    arrow(ax, (2.15, 1.07), (3.45, 1.07))
    arrow(ax, (4.95, 1.07), (5.3, 1.07))
    # loss
    box(ax, (6.95, 1.75), 1.35, 0.7, "InfoNCE\n$s_i \\leftrightarrow G_i$\n+ queue of $G$", "#e6f2e0")
    arrow(ax, (6.6, 3.27), (7.6, 2.45))
    arrow(ax, (6.6, 1.07), (7.6, 1.75))
    # inference
    ax.plot([8.6, 8.6], [0.2, 4.0], ls="--", color="0.6", lw=1)
    ax.text(9.8, 3.95, "zero-shot land use", ha="center", va="top", fontsize=10, weight="bold")
    box(ax, (8.85, 2.75), 1.9, 0.75, "\"rows of wheat under\na blue sky\" ...\nCLIP text encoder (frozen)", "#eeeeee")
    box(ax, (8.85, 1.2), 1.9, 0.75, "$f_S$(patch)\ncosine vs. class prompts\n→ land-use class", "#fbe3c8")
    arrow(ax, (9.8, 2.75), (9.8, 1.95))
    ax.text(5.5, 0.15, "training: no text, text encoder untouched", ha="center", fontsize=8, style="italic", color="0.3")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
