"""Training throughput: senclip's training step vs the authors' configuration, in one script on one machine.

    .venv/bin/python tests/bench/bench_train.py                 # CPU: tiny model, about 15 s
    .venv/bin/python tests/bench/bench_train.py --gpu --json OUT.json   # GPU: ViT-B/32, under ~4 minutes on an H100

Both sides train the same SenCLIP module (preset `official-code`: whole image tower, queue negatives, projection
head, learnable scale; random-init weights, synthetic data — throughput does not depend on the values):

* official: fp32, each sample a PIL image through CenterCrop(32) -> Resize(224) -> RandAugment(3, 5) -> ToTensor ->
  Normalize in DataLoader worker processes, float batches copied to the device, AdamW (foreach);
* ours: `senclip.train_step.TrainStep`, as `senclip.train` runs it: uint8 patches from the loader (pinned memory),
  `TrainTransform` (the same augmentation per sample, on the device), bf16 autocast, fused AdamW, the ViT patch
  convolution as a matmul, and on a GPU the whole step as a CUDA graph; then also with the image tower compiled
  (torch.compile). Variants: RandAugment (the official augmentation; batched inside the graph, or grouped before it
  for big batches) and the paper preset's augmentation (flips and 90-degree rotations, senclip's default); at the
  largest batch also one batch kept resident (no loader), which separates the step from the synthetic loader.

Reported: images/s of each at batch 32 and their ratio (goal >= 3 on an H100); ours at the largest batch that fits
(doubling until out of memory, capped by --max-batch) with its model FLOP utilisation = (forward + backward FLOPs
per image counted with torch.utils.flop_counter.FlopCounterMode) x images/s / peak (goal > 35 % on an H100; the peak
is a parameter, default 989 TFLOP/s = H100 SXM dense bf16). Synthetic data: 100x100 uint8 patches + random ground
embeddings; no download. Records go through senclip.core.bench_record and, with --json, to one JSON file.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from senclip.core import bench_record, get_preset, machine_name, register_model_configs
from senclip.model import build_senclip, linear_patch_embed
from senclip.augment import TrainTransform
from senclip.train_state import GlobalBatchSampler
from senclip.train_step import TrainStep, param_groups


class SyntheticPatches(Dataset):
    "N random uint8 patches (3,P,P) and ground embeddings (4,D); `__getitems__` serves a whole batch at once."

    def __init__(self, n: int, size: int, dim: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
        self.ground = torch.randn(n, 4, dim, generator=g)
        self.mask = torch.ones(n, 4, dtype=torch.bool)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "ground": self.ground[i], "mask": self.mask[i]}

    def __getitems__(self, idx):
        idx = torch.as_tensor(idx)
        return {"image": self.images[idx], "ground": self.ground[idx], "mask": self.mask[idx]}


class OfficialPIL(Dataset):
    "The authors' data path: a PIL image per sample through torchvision's PIL transforms (in worker processes)."

    def __init__(self, base: SyntheticPatches, preset):
        import torchvision.transforms as T

        self.base = base
        ra = T.RandAugment(3, 5, interpolation=T.InterpolationMode.BILINEAR)  # the authors' interpolation
        self.tf = T.Compose([T.CenterCrop(preset.crop), T.Resize(preset.image_size), ra,
                             T.ToTensor(), T.Normalize(preset.mean, preset.std)])

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        from PIL import Image

        img = Image.fromarray(self.base.images[i].permute(1, 2, 0).numpy())
        return {"image": self.tf(img), "ground": self.base.ground[i], "mask": self.base.mask[i]}


class _Resident:
    "One fixed batch served again and again (pinned on a GPU machine): the step's speed without the data loader."

    def __init__(self, data, batch, pin):
        b = data.__getitems__(list(range(batch)))
        self.batch = {k: (v.pin_memory() if pin else v) for k, v in b.items()}
        self.batch_sampler = self

    def set_epoch(self, epoch):
        pass

    def __iter__(self):
        while True:
            yield self.batch


def profile_step(step, data, batch, dev, path, steps: int = 3) -> dict:
    "Kernel time of a few eager steps at `batch` (torch.profiler): the table goes to `path`, a summary is returned."
    from torch.profiler import ProfilerActivity, profile

    b = _Resident(data, batch, True).batch
    for _ in range(2):
        step(b)
    _sync(dev)
    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step(b)
        _sync(dev)
    wall = (time.perf_counter() - t) / steps
    ka = prof.key_averages()
    table = ka.table(sort_by="self_cuda_time_total", row_limit=40, max_name_column_width=80)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(table)
    kernel_us = sum(getattr(e, "self_device_time_total", 0) for e in ka
                    if getattr(getattr(e, "device_type", None), "name", "") == "CUDA") / steps
    print(table[:6000], flush=True)
    print(f"profile: {wall * 1e3:.1f} ms wall per step (profiler on), {kernel_us / 1e3:.1f} ms of kernels per step", flush=True)
    return {"wall_ms": wall * 1e3, "kernel_ms": kernel_us / 1e3, "batch": batch}


def _dump(path, res):
    "Write what has been measured so far (a later phase that fails or times out keeps the earlier numbers)."
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(res, indent=2))


def _identity(x):
    return x


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _loader(ds, batch, workers, pin, batched):
    "Official side: `workers` processes each building samples; ours: whole uint8 batches, a few workers suffice."
    sampler = GlobalBatchSampler(len(ds), batch, seed=0)
    if batched:
        workers = min(workers, 6)
    return DataLoader(ds, batch_sampler=sampler, num_workers=workers, pin_memory=pin, collate_fn=_identity if batched else None,
                      persistent_workers=workers > 0, prefetch_factor=2 if workers else None)


def _endless(loader):
    epoch = 0
    while True:
        loader.batch_sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def official_step(model, opt, dev):
    "The authors' step: float batches already augmented in the workers, fp32, AdamW (ours is senclip's TrainStep)."

    def step(batch):
        loss = model(batch["image"].to(dev, non_blocking=True), batch["ground"].to(dev, non_blocking=True),
                     batch["mask"].to(dev, non_blocking=True))["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def measure(step, loader, batch, dev, warmup: int, seconds: float, min_steps: int = 3) -> float:
    "Images per second over at least `seconds` (and `min_steps` steps) after `warmup` steps, data loading included."
    it = _endless(loader)
    for _ in range(warmup):
        step(next(it))
    _sync(dev)
    t0, n = time.perf_counter(), 0
    while n < min_steps or time.perf_counter() - t0 < seconds:
        step(next(it))
        n += 1
        if n % 10 == 0:  # as senclip.train, which reads the loss every log_every=10 steps
            _sync(dev)
    _sync(dev)
    return n * batch / (time.perf_counter() - t0)


def count_flops_per_image(model, transform, data, dev, batch: int = 8) -> float:
    "Forward + backward FLOPs of one training step per image (FlopCounterMode; matmuls, convolutions, attention)."
    from torch.utils.flop_counter import FlopCounterMode

    b = data.__getitems__(list(range(batch)))
    x = transform(b["image"].to(dev))
    with FlopCounterMode(display=False) as fc:
        loss = model(x, b["ground"].to(dev), b["mask"].to(dev))["loss"]
        loss.backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops() / batch


def build(preset, dev, fused):
    model = build_senclip(preset, device=dev)
    model.train()
    opt = torch.optim.AdamW(param_groups(model, preset.weight_decay, decay_all=preset.decay_all), lr=preset.lr, fused=fused or None)
    return model, opt


def mfu_only(args) -> dict:
    "The MFU figure alone: ours (compiled tower, CUDA-graphed step, paper augmentation) at --max-batch, per attention kernel."
    assert torch.cuda.is_available(), "--mfu-only needs a CUDA device"
    dev = torch.device("cuda")
    register_model_configs()
    arch, batch = args.arch or "ViT-B-32-quickgelu", args.max_batch or 2048
    ours = get_preset("official-code", arch=arch, pretrained="", image_size=args.image_size or 224, precision="bf16")
    workers = args.workers if args.workers is not None else min(16, os.cpu_count() or 1)
    data = SyntheticPatches(4 * batch, 100, 512)
    res = {"device": machine_name(), "arch": arch, "batch": batch, "torch": torch.__version__, "peak_tflops": args.peak_tflops,
           "note": "random-init weights, synthetic data: throughput only"}
    flop_model, _ = build(ours, dev, fused=False)
    fpi = count_flops_per_image(flop_model, TrainTransform(ours, mode="paper").to(dev), data, dev)
    del flop_model
    res["train_flops_per_image"] = fpi
    loader = _loader(data, batch, workers, True, batched=True)
    for backend in ("default", "flash"):
        torch._dynamo.reset()
        torch.backends.cuda.enable_cudnn_sdp(backend == "default")
        model, opt = build(ours, dev, fused=True)
        linear_patch_embed(model.visual)
        model.visual.compile(dynamic=False)
        tf = TrainTransform(ours, mode="paper").to(dev)
        gen = torch.Generator().manual_seed(0)
        for resident in (False, True):
            st = TrainStep(model, opt, tf, torch.bfloat16, graph=True)
            fn = lambda b: st(b["image"], b["ground"], b["mask"], tf.sample_params(len(b["image"]), gen))
            t = time.perf_counter()
            try:
                ips = measure(fn, _Resident(data, batch, True) if resident else loader, batch, dev, 5, args.seconds or 8.0)
            except Exception as e:
                print(f"{backend} attention, resident={resident}: failed: {type(e).__name__}: {e}", flush=True)
                res[f"{backend}_error"] = f"{type(e).__name__}: {e}"[:1500]
                break
            finally:
                st.release()
            key = f"{backend}{'_resident' if resident else ''}"
            res[key] = {"images_per_s": ips, "mfu": fpi * ips / (args.peak_tflops * 1e12), "capture_error": st.capture_error}
            print(f"compiled + CUDA graph, paper augmentation, batch {batch}, {backend} attention"
                  f"{', one resident batch' if resident else ', loader'}: {ips:.0f} img/s, MFU "
                  f"{100 * res[key]['mfu']:.1f} % ({time.perf_counter() - t:.0f} s)", flush=True)
            _dump(args.json, res)
        del model, opt
        torch.cuda.empty_cache()
    torch.backends.cuda.enable_cudnn_sdp(True)
    print(json.dumps(res, indent=2), flush=True)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu", action="store_true", help="ViT-B/32 on the GPU (default: tiny model on the CPU)")
    ap.add_argument("--arch", default=None, help="override the architecture (GPU default ViT-B-32-quickgelu; e.g. RN50)")
    ap.add_argument("--image-size", type=int, default=None, help="input size (GPU default 224, CPU 32)")
    ap.add_argument("--json", default=None, help="write all numbers to this JSON file")
    ap.add_argument("--results", default="runs/bench/results.json", help="bench_record's results file")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="device peak for MFU (H100 SXM dense bf16: 989)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers, both sides (default: min(16, cores))")
    ap.add_argument("--max-batch", type=int, default=None, help="largest batch tried (GPU 2048, CPU 128)")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per measurement (GPU 8, CPU 3)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurements")
    ap.add_argument("--compile-mode", default="default", help="torch.compile mode (default | reduce-overhead | max-autotune)")
    ap.add_argument("--budget", type=float, default=210.0, help="seconds after which optional phases are skipped")
    ap.add_argument("--profile", default=None, help="GPU: write a kernel-time table of eager steps at the largest batch here")
    ap.add_argument("--mfu-only", action="store_true",
                    help="GPU: only the MFU figure (compiled tower + CUDA graph, paper augmentation, largest batch), "
                         "with cuDNN attention and with FlashAttention")
    args = ap.parse_args(argv)
    if args.mfu_only:
        return mfu_only(args)
    t_start = time.perf_counter()

    gpu = args.gpu
    if gpu and not torch.cuda.is_available():
        sys.exit("--gpu was given but torch sees no CUDA device")
    dev = torch.device("cuda" if gpu else "cpu")
    register_model_configs()
    arch = args.arch or ("ViT-B-32-quickgelu" if gpu else "senclip-tiny-vit")
    size = args.image_size or (224 if gpu else 32)
    preset = get_preset("official-code", arch=arch, pretrained="", image_size=size, batch_size=32)
    workers = args.workers if args.workers is not None else min(16, os.cpu_count() or 1)
    seconds = args.seconds or (5.0 if gpu else 3.0)
    max_batch = args.max_batch or (2048 if gpu else 128)
    warm = 5 if gpu else 2
    channels_last = "rn" in arch.lower()  # ResNet towers: convolutions prefer channels-last
    if gpu:
        torch.backends.cudnn.benchmark = True
    print(f"device: {machine_name()}; arch {arch} at {size}px; {workers} loader workers; peak {args.peak_tflops} TFLOP/s "
          f"({'given' if '--peak-tflops' in (argv or sys.argv) else 'default: H100 SXM dense bf16'})", flush=True)
    res = {"compile_mode": args.compile_mode, "device": machine_name(), "arch": arch, "image_size": size, "workers": workers, "peak_tflops": args.peak_tflops,
           "torch": torch.__version__, "note": "random-init weights, synthetic data: throughput only"}
    model, opt = build(preset, dev, fused=False)
    dim = model.embed_dim
    data = SyntheticPatches(4096 if gpu else 512, 100, dim)

    # --- official configuration: fp32, PIL RandAugment per sample in the workers
    off_loader = _loader(OfficialPIL(data, preset), 32, workers, gpu, batched=False)
    ips_off = measure(official_step(model, opt, dev), off_loader, 32, dev, warm, seconds)
    del off_loader
    res["official_b32_images_per_s"] = ips_off
    _dump(args.json, res)
    print(f"official (fp32, PIL RandAugment in workers), batch 32: {ips_off:.1f} img/s", flush=True)

    # --- ours: uint8 batches, augmentation on the device, bf16 autocast, fused AdamW; the whole step as a CUDA graph
    del model, opt
    ours = preset.replace(precision="bf16")
    model, opt = build(ours, dev, fused=gpu)
    if channels_last:
        model.visual.to(memory_format=torch.channels_last)
    amp = torch.bfloat16 if gpu else None  # CPU runs stay fp32 (as senclip.train does)
    tf_ra = TrainTransform(ours, channels_last=channels_last).to(dev)  # RandAugment (batched on CUDA)
    tf_paper = TrainTransform(ours, mode="paper", channels_last=channels_last).to(dev)
    aug_gen = torch.Generator().manual_seed(0)

    if gpu:  # ViT patch convolution as patchify + matmul (cuDNN's weight gradient for it is slow), as senclip.train
        linear_patch_embed(model.visual)

    def ours_step(transform, graph, graph_transform=None):
        st = TrainStep(model, opt, transform, amp, graph=graph, graph_transform=graph_transform)
        fn = lambda b: st(b["image"], b["ground"], b["mask"], transform.sample_params(len(b["image"]), aug_gen))
        fn.st = st
        return fn

    def run(name, transform, graph, loader, batch, resident=False, graph_transform=None):
        "Measure one variant, keep what it measured, never let one failing variant lose the others."
        try:
            fn = ours_step(transform, graph, graph_transform)
            src = loader if not resident else _Resident(data, batch, gpu)
            v = measure(fn, src, batch, dev, warm, seconds)
            fn.st.release()
            if fn.st.capture_error:
                raise RuntimeError(f"capture failed, measured ordinary steps: {fn.st.capture_error}")
        except Exception as e:  # e.g. a capture that fails on this torch: report, go on
            opt.zero_grad(set_to_none=True)
            print(f"{name}: failed: {type(e).__name__}: {e}", flush=True)
            res.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"[:1500]
            return None
        if gpu:
            torch.cuda.empty_cache()
        print(f"{name}: {v:.1f} img/s" + (f" = {v / ips_off:.2f}x official" if batch == 32 else ""), flush=True)
        return v

    loader32 = _loader(data, 32, workers, gpu, batched=True)
    ips = {"eager": run("ours eager, RandAugment, batch 32", tf_ra, False, loader32, 32)}
    if gpu:
        ips["graph"] = run("ours CUDA graph, RandAugment, batch 32", tf_ra, True, loader32, 32)
    res["ours_b32_images_per_s"] = dict(ips)
    _dump(args.json, res)
    # --- ours with the paper preset's augmentation (flips + 90-degree rotations, senclip's default)
    ips_paper = {} if gpu else {"eager": run("ours eager, paper augmentation, batch 32", tf_paper, False, loader32, 32)}
    if gpu:
        ips_paper["graph"] = run("ours CUDA graph, paper augmentation, batch 32", tf_paper, True, loader32, 32)
    res["ours_paper_aug_b32_images_per_s"] = dict(ips_paper)
    _dump(args.json, res)
    # --- FLOPs per image (eager, fp32 graph; counts do not depend on dtype)
    flop_model, _ = build(ours, dev, fused=False)
    fpi = count_flops_per_image(flop_model, tf_ra, data, dev)
    del flop_model
    res["train_flops_per_image"] = fpi
    print(f"forward+backward: {fpi / 1e9:.3g} GFLOP per image", flush=True)
    _dump(args.json, res)

    # --- largest batch that fits (doubling, eager), then ours at that batch
    largest, b = 32, 64
    probe = ours_step(tf_paper if gpu else tf_ra, False)
    while b <= max_batch and b <= len(data) and time.perf_counter() - t_start < args.budget * 0.4:
        try:
            batch = data.__getitems__(list(range(b)))
            for _ in range(2):
                probe(batch)
            _sync(dev)
            largest = b
            b *= 2
        except torch.OutOfMemoryError:
            break
        finally:
            batch = None
            opt.zero_grad(set_to_none=True)
            if gpu:
                torch.cuda.empty_cache()
    res["largest_batch"] = largest
    loaderL = _loader(data, largest, workers, gpu, batched=True)
    ipsL = {} if gpu else {"eager": run(f"ours eager, RandAugment, batch {largest}", tf_ra, False, loaderL, largest)}
    if gpu:
        ipsL["graph"] = run(f"ours CUDA graph, RandAugment (grouped, before the graph), batch {largest}", tf_ra, True,
                            loaderL, largest)
        ipsL["graph_ra_inside"] = run(f"ours CUDA graph, RandAugment (batched, inside the graph), batch {largest}", tf_ra,
                                      True, loaderL, largest, graph_transform=True)
        ipsL["graph_paper"] = run(f"ours CUDA graph, paper augmentation, batch {largest}", tf_paper, True, loaderL, largest)
        ipsL["graph_paper_resident"] = run(f"ours CUDA graph, paper augmentation, batch {largest}, one resident batch (no loader)",
                                           tf_paper, True, None, largest, resident=True)
    res["ours_largest_images_per_s"] = dict(ipsL)
    _dump(args.json, res)
    if gpu and args.profile:
        res["profile"] = profile_step(ours_step(tf_paper, False), data, largest, dev, args.profile)

    # --- torch.compile of the image tower, then the graphed step (GPU; skipped when the time budget is short)
    if not args.no_compile and gpu and time.perf_counter() - t_start < args.budget * 0.55:
        try:
            t = time.perf_counter()
            model.visual.compile(mode=args.compile_mode, dynamic=False)
            ips["compiled_graph"] = run("ours compiled + CUDA graph, RandAugment, batch 32", tf_ra, True, loader32, 32)
            print(f"(compile + warm-up + measurement {time.perf_counter() - t:.0f} s)", flush=True)
            res["ours_b32_images_per_s"] = dict(ips)
            _dump(args.json, res)
            for name, tf, resident in (("compiled_graph", tf_ra, False), ("compiled_graph_paper", tf_paper, False),
                                       ("compiled_graph_paper_resident", tf_paper, True)):
                if time.perf_counter() - t_start < args.budget * 0.85:
                    ipsL[name] = run(f"ours compiled + CUDA graph, {'RandAugment' if tf is tf_ra else 'paper augmentation'}, "
                                     f"batch {largest}{', one resident batch (no loader)' if resident else ''}", tf, True,
                                     loaderL, largest, resident=resident)
                    res["ours_largest_images_per_s"] = dict(ipsL)
                    _dump(args.json, res)
        except Exception as e:  # report, keep the eager numbers
            print(f"torch.compile failed: {type(e).__name__}: {e}", flush=True)
            res["compile_error"] = f"{type(e).__name__}: {e}"[:2000]
    del loader32, loaderL
    ips = {k: v for k, v in ips.items() if v}
    ipsL = {k: v for k, v in ipsL.items() if v}
    ips_paper = {k: v for k, v in ips_paper.items() if v}
    best32 = max(ips.values(), default=0.0)
    bestL_key = max((k for k in ipsL if "resident" not in k), key=ipsL.get, default="none")
    bestL = ipsL.get(bestL_key, 0.0)
    res.update(ratio_b32=best32 / ips_off, ratio_paper_aug_b32=max(ips_paper.values(), default=0.0) / ips_off,
               best_largest=bestL_key, mfu_largest=fpi * bestL / (args.peak_tflops * 1e12),
               mfu_largest_by_variant={k: fpi * v / (args.peak_tflops * 1e12) for k, v in ipsL.items()})
    mfu = res["mfu_largest"]
    print(f"ratio ours/official at batch 32: {res['ratio_b32']:.2f}x (RandAugment on both sides), "
          f"{res['ratio_paper_aug_b32']:.2f}x (ours with the paper augmentation); "
          f"MFU at batch {largest}: {100 * mfu:.1f} % ({bestL_key})", flush=True)

    tag = "gpu" if gpu else "cpu-tiny"
    bench_record(f"train.{tag}.official_b32", ips_off, "img/s", results=args.results)
    bench_record(f"train.{tag}.ours_b32", best32, "img/s", results=args.results)
    bench_record(f"train.{tag}.ratio_b32", res["ratio_b32"], "x", goal=">= 3 on H100" if gpu else "", results=args.results)
    bench_record(f"train.{tag}.ratio_paper_aug_b32", res["ratio_paper_aug_b32"], "x", results=args.results)
    bench_record(f"train.{tag}.ours_largest_b{largest}", bestL, "img/s", results=args.results)
    bench_record(f"train.{tag}.mfu_largest", 100 * mfu, "%", goal="> 35 on H100" if gpu else "", results=args.results)
    res["seconds"] = time.perf_counter() - t_start
    _dump(args.json, res)
    print(json.dumps(res, indent=2), flush=True)
    return res


if __name__ == "__main__":
    main()
