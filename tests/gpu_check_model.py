"""GPU check of senclip.model (not collected by pytest; needs CUDA, no downloads, ~1 minute on one GPU):

    HF_HUB_OFFLINE=1 .venv/bin/python tests/gpu_check_model.py

For ViT-B/32 (paper policy last_block) and RN50 (all layers), with random weights (throughput and correctness only,
not a result): bf16-autocast training steps of the SenCLIP module with queue+batch negatives and masked pooling,
finite loss, gradients only where the policy says, queue filled on the GPU, then export -> load on the GPU gives the
same image embeddings."""
import tempfile
import time
from pathlib import Path

import torch

from senclip.core import get_preset
from senclip.checkpoints import export_openai, export_safetensors, load
from senclip.model import build_senclip

assert torch.cuda.is_available(), "this check needs a CUDA GPU"
dev = torch.device("cuda")
tmp = Path(tempfile.mkdtemp())
for arch, trainable in (("ViT-B-32-quickgelu", "last_block"), ("RN50-quickgelu", "all")):
    p = get_preset("paper", arch=arch, pretrained="", trainable=trainable, pooling="attn_image", queue_size=512)
    torch.manual_seed(0)
    m = build_senclip(p, device=dev).train()
    D, B = m.embed_dim, 32
    trainable_names = {n for n, q in m.named_parameters() if q.requires_grad}
    opt = torch.optim.AdamW([q for q in m.parameters() if q.requires_grad], lr=1e-5)
    assert m.fill_queue(torch.randn(512, 4, D, device=dev)) == 512
    x = torch.randn(B, 3, 224, 224, device=dev)
    g = torch.randn(B, 4, D, device=dev)
    mask = torch.rand(B, 4, device=dev) > 0.3
    mask[:, 0] = True
    for i in range(13):
        if i == 3:
            torch.cuda.synchronize()
            t = time.time()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = m(x, g, mask)
        out["loss"].backward()
        if i == 0:
            got = {n for n, q in m.named_parameters() if q.grad is not None}
            assert got <= trainable_names, sorted(got - trainable_names)[:5]
            assert not any(n.startswith("clip.transformer") for n in got)
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    dt = (time.time() - t) / 10
    assert torch.isfinite(out["loss"]) and out["logits"].shape == (B, B + 512)
    assert m.queue.device.type == "cuda" and bool(m.queue_valid.all())
    print(f"{arch} ({trainable}): {B / dt:.0f} images/s per training step, bf16, batch {B}, "
          f"loss {out['loss'].item():.3f} — random weights, not a result", flush=True)
    m.eval()
    for path in (export_safetensors(m, tmp / arch), export_openai(m, tmp / f"{arch}.ckpt")):
        zs = load(path, device=dev)
        with torch.no_grad():
            torch.testing.assert_close(zs.encode_image(x[:4]), m.encode_image(x[:4]), rtol=1e-4, atol=1e-4)
    print(f"{arch}: export -> load on the GPU gives the same image embeddings", flush=True)
print("gpu_check_model: OK")
