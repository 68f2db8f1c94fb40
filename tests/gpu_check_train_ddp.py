"""GPU check of CUDA-graphed DDP training steps (not collected by pytest; needs CUDA, no downloads, ~1-2 minutes):

    HF_HUB_OFFLINE=1 .venv/bin/python tests/gpu_check_train_ddp.py

1. One GPU, a one-rank NCCL group: `TrainStep(graph=True)` on DDP built by `wrap_ddp(graph=True)` trains like the
   ordinary DDP step. ViT-B/32 (random weights), preset official-code, dropout off; the same batches for 16 steps,
   a learning-rate change after step 13 (a second capture); per-step losses and final weights agree within bf16
   tolerance; the capture comes after `DDP_GRAPH_WARMUP` (11) ordinary steps. Then img/s of both at batch 32 on a
   resident batch.
2. With two or more GPUs: `torchrun --nproc_per_node 2 -m senclip.train` on the bundled sample pairs with the tiny
   model, `--cuda_graph yes` and `--cuda_graph no`: both finish, run.json records the graph, and the logged losses
   agree within bf16 tolerance. With one GPU this part is skipped (NCCL needs a GPU per rank) and says so.
Random weights: checks of the machinery, not results."""
import copy
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "0"  # before the process group, as PyTorch's CUDA-graph notes ask

import pandas as pd
import torch
import torch.distributed as dist

from senclip.augment import TrainTransform
from senclip.core import get_preset
from senclip.model import build_senclip
from senclip.train import sample_pairs
from senclip.train_step import DDP_GRAPH_WARMUP, TrainStep, param_groups, wrap_ddp

from gpu_steps import img_per_s, max_rel_diff, set_lr, step_batch  # tests/ is the script's folder

assert torch.cuda.is_available(), "this check needs a CUDA GPU"
dev = torch.device("cuda", 0)
torch.cuda.set_device(dev)
g = torch.Generator().manual_seed(0)
print(torch.cuda.get_device_name(dev), "NCCL", torch.cuda.nccl.version(), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# 1. one GPU, one-rank NCCL group: graphed DDP == ordinary DDP
dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
p = get_preset("official-code", arch="ViT-B-32-quickgelu", pretrained="", precision="bf16")
tf = TrainTransform(p).to(dev)
torch.manual_seed(0)
ma = build_senclip(p, device=dev).train()
ma.head.dropout.p = 0.0
mb = copy.deepcopy(ma)
oa, ob = (torch.optim.AdamW(param_groups(m, p.weight_decay), lr=1e-4, fused=True) for m in (ma, mb))
(na, _), (nb, stream) = wrap_ddp(ma, dev), wrap_ddp(mb, dev, graph=True)
sa = TrainStep(na, oa, tf, torch.bfloat16)
sb = TrainStep(nb, ob, tf, torch.bfloat16, graph=True, graph_stream=stream)
assert sb.warmup == DDP_GRAPH_WARMUP, sb.warmup
D = ma.embed_dim
for i in range(16):
    if i == 13:
        set_lr((oa, ob), 3e-5)
    img, ground, mask, prm = step_batch(g, tf, D)
    la, lb = sa(img, ground, mask, prm).item(), sb(img, ground, mask, prm).item()
    print(f"step {i}: DDP eager loss {la:.5f}, DDP graphed loss {lb:.5f} (captures so far {sb.captures})", flush=True)
    assert abs(la - lb) <= 2e-2 * max(1.0, abs(la)), (i, la, lb)
assert sb.capture_error is None and sb.captures == 2, (sb.capture_error, sb.captures)
worst = max_rel_diff(ma, mb)
print(f"weights after 16 steps: largest relative difference to eager DDP {worst:.2e}", flush=True)
assert worst < 2e-2, worst
for name, st in (("DDP eager", sa), ("DDP graph", sb)):
    rate = img_per_s(st, (img, ground, mask, prm))
    print(f"{name} step, batch 32, RandAugment, {torch.cuda.get_device_name(dev)}: {rate:.0f} img/s "
          "(resident batch, one rank)", flush=True)
dist.destroy_process_group()

# 2. torchrun, two ranks on two GPUs: senclip.train with and without graphed DDP steps
if torch.cuda.device_count() < 2:
    print("part 2 skipped: one GPU here; graphed DDP under torchrun needs two (NCCL refuses two ranks on one GPU)")
else:
    tmp = Path(tempfile.mkdtemp())
    manifest, store = sample_pairs(get_preset("tiny"), tmp / "pairs")
    losses = {}
    for flag in ("yes", "no"):
        out = tmp / f"ddp_graph_{flag}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
               "-m", "senclip.train", "--preset", "tiny", "--manifest", str(manifest), "--store", str(store),
               "--device", "cuda", "--cuda_graph", flag, "--set", "batch_size=8", "precision=bf16", "epochs=3",
               "--val_every", "0", "--quiet", "--no_tensorboard", "--no_export", "--out", str(out)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        meta = json.loads((out / "run.json").read_text())
        losses[flag] = pd.read_csv(out / "metrics.csv")["loss"].dropna().to_numpy()
        print(f"torchrun x2 --cuda_graph {flag}: graph used {meta['params']['cuda_graph']}, world "
              f"{meta['params']['world_size']}, losses {[round(float(v), 4) for v in losses[flag]]}", flush=True)
        assert meta["params"]["cuda_graph"] is (flag == "yes") and meta["params"]["world_size"] == 2
    assert len(losses["yes"]) == len(losses["no"]) and all(
        abs(a - b) <= 5e-2 * max(1.0, abs(b)) for a, b in zip(losses["yes"], losses["no"])), losses
print("gpu_check_train_ddp: OK")
