"""GPU check of the CUDA-graphed training step (not collected by pytest; needs CUDA, no downloads, ~1 minute):

    HF_HUB_OFFLINE=1 .venv/bin/python tests/gpu_check_train.py

1. The batched RandAugment on the GPU gives the grouped CPU version's pixels (nearest-neighbour ties aside).
2. `TrainStep(graph=True)` trains like `TrainStep(graph=False)`: ViT-B/32 (random weights), preset official-code
   (whole tower, queue negatives, learnable scale), dropout off so both see the same computation; the same batches
   for 10 steps, with a learning-rate change after step 6 (which must trigger a second capture): per-step losses and
   final weights agree within bf16 tolerance.
3. A batch whose mask has a row with no photo is refused before it reaches the graph.
4. `senclip.train.train` on the bundled sample pairs with the tiny model uses the graphed step (run.json says so)
   and the side-stream prefetcher, finishes and logs finite losses; the same run without graphs also finishes.
5. `DevicePrefetcher` hands over the loader's values, on the device (mask on the host).
Random weights: checks of the machinery, not results."""
import copy
import json
import tempfile
from pathlib import Path

import pandas as pd
import torch

from senclip.core import get_preset
from senclip.model import build_senclip
from senclip.train import sample_pairs, train
from senclip.augment import TrainTransform
from senclip.train_step import TrainStep, param_groups

from gpu_steps import img_per_s, max_rel_diff, set_lr, step_batch  # tests/ is the script's folder

assert torch.cuda.is_available(), "this check needs a CUDA GPU"
dev = torch.device("cuda")
g = torch.Generator().manual_seed(0)

# 1. batched RandAugment on the GPU == grouped on the CPU
p = get_preset("official-code", arch="ViT-B-32-quickgelu", pretrained="", precision="bf16")
tf = TrainTransform(p)
x = torch.randint(0, 256, (64, 3, 100, 100), dtype=torch.uint8, generator=g)
prm = tf.sample_params(64, g)
cpu = tf(x, prm)
gpu = tf.to(dev)(x.to(dev), prm).cpu()
same = ((cpu - gpu).abs() < 1e-4).float().mean().item()
print(f"batched RandAugment, GPU vs grouped CPU: {100 * same:.3f} % of values identical", flush=True)
assert same > 0.999, same

# 2. graphed == eager
torch.manual_seed(0)
ma = build_senclip(p, device=dev).train()
ma.head.dropout.p = 0.0
mb, mc = copy.deepcopy(ma), copy.deepcopy(ma)
oa, ob, oc = (torch.optim.AdamW(param_groups(m, p.weight_decay), lr=1e-4, fused=True) for m in (ma, mb, mc))
sa = TrainStep(ma, oa, tf, torch.bfloat16, graph=False)
sb = TrainStep(mb, ob, tf, torch.bfloat16, graph=True)  # augmentation inside the graph (batch <= 512)
sc = TrainStep(mc, oc, tf, torch.bfloat16, graph=True, graph_transform=False)  # grouped augmentation before it
D = ma.embed_dim
for i in range(10):
    if i == 6:
        set_lr((oa, ob, oc), 3e-5)
    img, ground, mask, prm = step_batch(g, tf, D)
    la, lb, lc = (s(img, ground, mask, prm).item() for s in (sa, sb, sc))
    print(f"step {i}: eager loss {la:.5f}, graphed loss {lb:.5f}, graphed (augmentation outside) {lc:.5f}", flush=True)
    assert abs(la - lb) <= 2e-2 * max(1.0, abs(la)) and abs(la - lc) <= 2e-2 * max(1.0, abs(la)), (i, la, lb, lc)
for m, s in ((mb, sb), (mc, sc)):
    assert s.capture_error is None and s.captures == 2, (s.capture_error, s.captures)
    worst = max_rel_diff(ma, m)
    print(f"weights after 10 steps: largest relative difference to eager {worst:.2e}; captures {s.captures}", flush=True)
    assert worst < 2e-2, worst
    assert torch.equal(ma.queue_ptr, m.queue_ptr) and torch.allclose(ma.queue, m.queue, atol=1e-2)

# timing of the two at batch 32 on one resident batch (the bench has the full comparison)
for name, st in (("eager", sa), ("graph", sb), ("graph, augmentation outside", sc)):
    rate = img_per_s(st, (img, ground, mask, prm))
    print(f"{name} step, batch 32, RandAugment: {rate:.0f} img/s (resident batch)", flush=True)

# 3. a row without any photo is refused on the CPU side
bad = mask.clone()
bad[0] = False
try:
    sb(img, ground, bad, prm)
    raise AssertionError("an all-missing mask row was accepted")
except ValueError as e:
    assert "no photo" in str(e)

# 4. senclip.train end to end with the graphed step, and without
tmp = Path(tempfile.mkdtemp())
manifest, store = sample_pairs(get_preset("tiny"), tmp / "pairs")
for flag in (True, False):
    out = tmp / f"graph_{flag}"
    run = train("tiny", manifest, store, out, overrides=dict(batch_size=8, precision="bf16", epochs=3), device="cuda",
                cuda_graph=flag, val_every=1, progress=False, tensorboard=False)
    meta = json.loads((out / "run.json").read_text())
    losses = pd.read_csv(run["metrics"])["loss"].dropna()
    print(f"train(cuda_graph={flag}): {run['status']}, {run['step']} steps, graph used: {meta['params']['cuda_graph']}, "
          f"losses {[round(float(v), 4) for v in losses]}", flush=True)
    assert run["status"] == "finished" and meta["params"]["cuda_graph"] is flag and meta["params"]["prefetch"] is True
    assert torch.isfinite(torch.tensor(losses.to_numpy())).all()

# 5. the prefetcher: the same batches, copied ahead on a side stream
from senclip.train_step import DevicePrefetcher

batches = [{"image": torch.randint(0, 256, (32, 3, 100, 100), dtype=torch.uint8, generator=g).pin_memory(),
            "ground": torch.randn(32, 4, D, generator=g).pin_memory(), "mask": torch.ones(32, 4, dtype=torch.bool)}
           for _ in range(5)]
for a, b in zip(DevicePrefetcher(batches, dev), batches):
    assert a["image"].is_cuda and a["ground"].is_cuda and not a["mask"].is_cuda
    assert torch.equal(a["image"].cpu(), b["image"]) and torch.equal(a["ground"].cpu(), b["ground"])
print("gpu_check_train: OK")
