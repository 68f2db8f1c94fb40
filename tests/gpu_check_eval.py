"""GPU check for the zero-shot evaluation (run by the lead on a CUDA machine; not part of `make test`):

    .venv/bin/python tests/gpu_check_eval.py          # well under a minute, offline

1. embed_images on CUDA (ViT-B-32-quickgelu, random weights, the EuroSAT and BigEarthNet samples) matches CPU in fp32
   (cosine > 0.9999 per image) and bf16 stays close (cosine > 0.99), with identical labels and validity masks;
2. the whole evaluation (run_evaluation, demo data, class-mean/cosine/dap, tiny random model) runs on the device;
3. JPEGs decoded on the GPU (decode='device': torchvision.io.decode_jpeg, nvjpeg) against PIL on the host: pixels of
   the 200 EuroSAT sample JPEGs within a mean absolute difference of 2 grey levels (nvjpeg's IDCT and chroma
   upsampling are not libjpeg's; torchvision's own CUDA decode tests allow a mean of about this), embeddings
   (fp32, same weights) with cosine > 0.995 per image, identical labels and validity, 'auto' choosing the device,
   and a cache key of its own (decoder: nvjpeg).
"""
import json
import tempfile
from pathlib import Path

import torch

from senclip.datasets import BigEarthNet, EuroSAT
from senclip.core import sample_dir
from senclip.zeroshot.evaluate import run_evaluation
from senclip.zeroshot.classify import embed_images, load_model

assert torch.cuda.is_available(), "this check needs a CUDA GPU"
print(torch.cuda.get_device_name(0))
tmp = Path(tempfile.mkdtemp())
for ds in (EuroSAT(sample_dir("eurosat")), BigEarthNet(sample_dir("bigearthnet"), split="all")):
    # the same random weights on both devices
    m = load_model("ViT-B-32-quickgelu", "cuda")
    mc = load_model("ViT-B-32-quickgelu", "cpu")
    m.model.load_state_dict(mc.model.state_dict())
    cpu = embed_images(mc, ds, cache=False, progress=False, device="cpu")
    g32 = embed_images(m, ds, cache=False, progress=False, device="cuda", precision="fp32")
    g16 = embed_images(m, ds, cache=False, progress=False, device="cuda", precision="bf16", batch_size=64)
    c32 = (cpu.emb * g32.emb).sum(1).min().item()
    c16 = (cpu.emb * g16.emb).sum(1).min().item()
    print(f"{ds.name}: min cosine CPU vs CUDA fp32 {c32:.6f}, bf16 {c16:.4f}")
    assert c32 > 0.9999 and c16 > 0.99, (c32, c16)
    assert torch.equal(cpu.labels, g32.labels) and torch.equal(cpu.valid, g16.valid)
r_gpu = run_evaluation(tmp / "gpu", models=["senclip-tiny-vit"], datasets=["eurosat", "bigearthnet19"], demo=True,
                       n_boot=0, sweep=False, device="cuda", cache=str(tmp / "c1"), progress=False)
r_cpu = run_evaluation(tmp / "cpu", models=["senclip-tiny-vit"], datasets=["eurosat", "bigearthnet19"], demo=True,
                       n_boot=0, sweep=False, device="cpu", cache=str(tmp / "c2"), progress=False)
print(r_gpu[["dataset", "prompts", "scoring", "value"]].assign(cpu=r_cpu.value.values))
# tiny random weights differ between the two loads; compare only that both ran completely
assert len(r_gpu) == len(r_cpu) == 18

# 3. decoding on the device (nvjpeg) vs on the host (PIL)
from torchvision.io import ImageReadMode, decode_jpeg
from senclip.datasets import decode_image, read_jpeg_bytes
from senclip.zeroshot.classify import resolve_decode

eu = EuroSAT(sample_dir("eurosat"))
paths = [eu.source(i) for i in range(len(eu))]
gpu_px = decode_jpeg([read_jpeg_bytes(p) for p in paths], device="cuda", mode=ImageReadMode.RGB)
diff = torch.stack([(g.cpu().float() - decode_image(p).float()).abs() for g, p in zip(gpu_px, paths)])
print(f"nvjpeg vs PIL pixels: mean |diff| {diff.mean():.3f}, max {diff.max():.0f}, "
      f"share of pixels differing {(diff > 0).float().mean():.4f}")
assert diff.mean() < 2, diff.mean()
m = load_model("ViT-B-32-quickgelu", "cuda")
assert resolve_decode("auto", eu, "cuda") == "device"
host = embed_images(m, eu, cache=False, progress=False, device="cuda", decode="host")
dev = embed_images(m, eu, cache=str(tmp / "c3"), progress=False, device="cuda", decode="device")
cos = (host.emb * dev.emb).sum(1).min().item()
print(f"EuroSAT sample on {torch.cuda.get_device_name(0)}: min cosine host vs device decode (fp32) {cos:.6f}, "
      f"identical embeddings: {torch.equal(host.emb, dev.emb)}")
assert cos > 0.995, cos
assert torch.equal(host.labels, dev.labels) and torch.equal(host.valid, dev.valid) and bool(dev.valid.all())
assert dev.key != host.key and json.loads((dev.path.parent / "key.json").read_text())["decoder"] == "nvjpeg"
print("gpu_check_eval: OK")
