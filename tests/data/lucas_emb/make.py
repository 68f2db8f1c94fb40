"""Rebuild lucas_clipemb_tiny.pt: a file in the format of the SenCLIP authors' released frozen embeddings
(`lucas_clipemb_ViTB-32.pt`: a torch-pickled dict f"{NUTS0}_{POINT_ID}{V}" -> float tensor of shape (1, D)),
made from the placeholder photos in data/sample/pairs with senclip's tiny random CLIP tower (seed 0, D = 64).
The first point also gets a `P` (point photo) key, which readers must skip. A key in another format is added too.

    .venv/bin/python tests/data/lucas_emb/make.py
"""
from pathlib import Path

import torch
from PIL import Image

from senclip.embeddings import load_image_tower
from senclip.lucas import find_photos, read_points

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parents[2] / "data" / "sample" / "pairs"


def main():
    pts = read_points(SAMPLE / "lucas_2018_sample.csv")
    pts = pts[pts.status == "ok"].head(20).reset_index(drop=True)
    photos = find_photos(pts, SAMPLE / "photos")
    tower = load_image_tower("senclip-tiny-vit", pretrained="")
    out = {}
    with torch.no_grad():
        for i, r in pts.iterrows():
            for v in "NESW":
                p = photos.at[i, f"photo_{v}"]
                if p:
                    x = tower.preprocess(Image.open(p).convert("RGB").resize((512, 512), Image.LANCZOS))[None]
                    out[f"{r.nuts0}_{r.id}{v}"] = tower.encode(x).float()
                    if i == 0 and v == "N":
                        out[f"{r.nuts0}_{r.id}P"] = out[f"{r.nuts0}_{r.id}N"].clone()
    out["not_a_lucas_key"] = torch.zeros(1, 64)
    torch.save(out, HERE / "lucas_clipemb_tiny.pt")
    print(len(out), "keys")


if __name__ == "__main__":
    main()
