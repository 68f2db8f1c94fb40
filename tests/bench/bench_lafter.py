"""LaFTer stage-2 throughput: senclip.lafter.tune_unlabeled vs a plain PyTorch loop of the same recipe, side by side.

    .venv/bin/python tests/bench/bench_lafter.py                      # CPU: tiny ViT, about a minute
    .venv/bin/python tests/bench/bench_lafter.py --gpu --json OUT.json    # GPU: ViT-B/32 at 224 px, a few minutes

Both sides run LaFTer's stage 2 on the same model, batch size and trainable parameters (visual prompt tokens, the
tower's layer norms and the classifier; random-init weights and synthetic 64x64 EuroSAT-sized images, since
throughput does not depend on the values):

* plain: LaFTer's public pipeline — each sample a PIL image through TwoCropsTransform(Resize+CenterCrop,
  RandomResizedCrop(0.2-1) + flip + ColorJitter + grayscale + GaussianBlur) -> ToTensor -> Normalize in DataLoader
  worker processes, float batches copied to the device, fp32, the teacher forward then the student forward/backward,
  AdamW;
* ours: `senclip.lafter.tune_unlabeled` — uint8 images resident on the device, both views made there
  (`LafterViews`), bf16 autocast on CUDA, fused AdamW, no host synchronisation inside a step.

Reported: images/s of each and their ratio (goal >= 3 on a GPU); and on the CPU, the wall time of the demo
configuration on data/sample (`senclip_lafter --demo`: the tiny model, both prompt sets, the demo preset's seeds;
goal < 120 s). Records go through senclip.core.bench_record and, with --json, to one JSON file.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from senclip.core import bench_record, machine_name
from senclip.lafter import PromptedVisual, lafter_preset, pseudo_label_loss, trainable_parameters, tune_unlabeled


def plain_transforms(size: int, mean, std):
    "LaFTer's utils/model_utils.py: te_transform and get_random_transform (PIL, per sample)."
    import torchvision.transforms as T
    from PIL import Image, ImageFilter

    class GaussianBlur:
        def __init__(self, sigma=(0.1, 2.0)):
            self.sigma = sigma

        def __call__(self, x):
            return x.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))

    norm = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    weak = T.Compose([T.Resize(size, interpolation=Image.BICUBIC), T.CenterCrop(size), norm])
    strong = T.Compose([T.RandomResizedCrop(size, scale=(0.2, 1.0)), T.RandomHorizontalFlip(),
                        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2),
                        GaussianBlur(), norm])
    return weak, strong


class PILPairs(Dataset):
    "Synthetic uint8 images served as PIL images through the two LaFTer views."

    def __init__(self, images: torch.Tensor, weak, strong):
        self.images = images.permute(0, 2, 3, 1).numpy()
        self.weak, self.strong = weak, strong

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        im = Image.fromarray(self.images[i])
        return self.weak(im), self.strong(im)


def bench_plain(model, images, cfg, dev, steps: int, warmup: int, workers: int) -> float:
    "images/s of LaFTer's own loop: PIL views in loader workers, fp32."
    net = model.model.to(dev).eval().requires_grad_(False)
    enc = PromptedVisual(net.visual, cfg.prompt_tokens).to(dev)
    clf = torch.nn.Linear(net.visual.output_dim, 10, bias=False).to(dev)
    teacher = torch.nn.Linear(net.visual.output_dim, 10, bias=False).to(dev).requires_grad_(False)
    params = trainable_parameters(enc, clf, cfg.tune)
    for p in params.values():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    weak, strong = plain_transforms(model.image_size, model.mean, model.std)
    dl = DataLoader(PILPairs(images, weak, strong), batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                    num_workers=workers, pin_memory=dev.type == "cuda", persistent_workers=workers > 0)
    n, t0, it = 0, None, iter(dl)
    for i in range(warmup + steps):
        if i == warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        try:
            w, s = next(it)
        except StopIteration:
            it = iter(dl)
            w, s = next(it)
        w, s = w.to(dev, non_blocking=True), s.to(dev, non_blocking=True)
        with torch.no_grad():
            t_logits = teacher(F.normalize(enc(w, prompts=False), dim=-1))
        loss, _ = pseudo_label_loss(clf(enc(s)), t_logits, cfg.threshold, cfg.balance, cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            n += len(w)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def bench_ours(model, images, cfg, dev, epochs: int) -> float:
    "images/s of tune_unlabeled, from the epoch ends after the first (warm-up) epoch."
    stamps = []

    def log(msg):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    clf = torch.nn.Linear(model.model.visual.output_dim, 10, bias=False)
    tune_unlabeled(model, clf, images, cfg.replace(epochs=epochs), seed=0, device=dev, log=log)
    per_epoch = (len(images) // cfg.batch_size) * cfg.batch_size
    return per_epoch * (len(stamps) - 1) / (stamps[-1] - stamps[0])


def bench_demo() -> float:
    "Seconds for the demo configuration on the sample (decoding, text encoding with a cold cache, both prompt sets x the demo seeds, stage 1 and stage 2)."
    import tempfile

    from senclip.datasets import EuroSAT
    from senclip.core import sample_dir
    from senclip.lafter import load_images, run_lafter

    import os

    t0 = time.perf_counter()
    cfg = lafter_preset("demo")
    data = load_images(EuroSAT(sample_dir("eurosat")))
    with tempfile.TemporaryDirectory() as tmp:
        old, os.environ["SENCLIP_CACHE"] = os.environ.get("SENCLIP_CACHE"), str(Path(tmp) / "cache")  # cold text cache
        for style in ("aerial", "ground"):
            for seed in cfg.seeds:
                run_lafter("senclip-tiny-vit", data, style, cfg, seed, Path(tmp) / f"{style}{seed}", device="cpu", log=None)
        if old is None:
            os.environ.pop("SENCLIP_CACHE")
        else:
            os.environ["SENCLIP_CACHE"] = old
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="ViT-B/32 at 224 px on CUDA")
    ap.add_argument("--arch", default="", help="model architecture (default: senclip-tiny-vit on CPU, ViT-B-32-quickgelu on GPU)")
    ap.add_argument("--images", type=int, default=0, help="synthetic images (default 400 CPU / 2000 GPU)")
    ap.add_argument("--workers", type=int, default=0, help="plain loop's loader workers (default 2 CPU / 8 GPU)")
    ap.add_argument("--json", default="", help="also write the records to this JSON file")
    args = ap.parse_args(argv)
    if args.gpu and not torch.cuda.is_available():
        sys.exit("--gpu: torch sees no CUDA GPU")
    dev = torch.device("cuda" if args.gpu else "cpu")
    arch = args.arch or ("ViT-B-32-quickgelu" if args.gpu else "senclip-tiny-vit")
    n = args.images or (2000 if args.gpu else 400)
    workers = args.workers or (8 if args.gpu else 2)
    from senclip.checkpoints import load

    torch.manual_seed(0)
    model = load(arch)
    images = torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cfg = lafter_preset("paper", precision="bf16", eval_every=10**6)  # LaFTer's batch 50, 50 prompt tokens
    steps = max(4, min(40, n // cfg.batch_size))
    plain = bench_plain(model, images, cfg, dev, steps=steps, warmup=3, workers=workers)
    torch.manual_seed(0)
    ours = bench_ours(load(arch), images, cfg, dev, epochs=3)
    recs = [
        bench_record("lafter.stage2.images_per_s.plain", plain, "images/s"),  # LaFTer's loop: PIL views in workers, fp32
        bench_record("lafter.stage2.images_per_s.ours", ours, "images/s"),  # tune_unlabeled: device views, bf16 on CUDA
        bench_record("lafter.stage2.images_per_s.ratio", ours / plain, "x", ">= 3 on a GPU"),
    ]
    if not args.gpu:
        recs.append(bench_record("lafter.demo.seconds", bench_demo(), "s", "< 120 on a CPU", higher_is_better=False))
    print(f"{machine_name()} {arch}: plain {plain:.1f} img/s, ours {ours:.1f} img/s, ratio {ours / plain:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"arch": arch, "images": n, "workers": workers, "records": recs}, indent=2))


if __name__ == "__main__":
    main()
