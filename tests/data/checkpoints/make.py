"""Checkpoint fixtures in every format senclip loads, written from a seeded random open_clip model.

Weights are not committed (even the tiny architectures carry a 49408 x 64 token embedding, ~13 MB per file): the
tests call these functions to write them into a temporary folder. What is committed:

- `clip_keys.json`: key -> shape of the OpenAI `clip` package's ViT-B/32 and RN50 models, dumped from
  openai/CLIP `clip/model.py` (commit 0845fc4) built with the published hyper-parameters. The tests assert that
  open_clip's `ViT-B-32-quickgelu` / `RN50-quickgelu` and senclip's exports have exactly these names and shapes.

Formats written (all layouts taken from the real files' producers, not from senclip's own exporter):

- `write_authors_ckpt`: the authors' `SenCLIP_*.ckpt`: `torch.save` of the `clip` model's fp32 state dict, keys in
  the `clip` package's order.
- `write_mixin`: a PyTorchModelHubMixin folder (`model.safetensors` + `config.json`) of a wrapper module, i.e. the
  CLIP weights under a prefix (default `model.`) beside training-only tensors (head, pooling, queue).
- `write_open_clip_training_ckpt`: open_clip's training checkpoint (`epoch`, `name`, `state_dict` with DDP's
  `module.` prefix, `optimizer`), the format of SkyCLIP's `epoch_20.pt`.
- `write_skyclip_zip`: SkyScript's release zip holding that checkpoint in a folder.
- `write_hf_repo`: a folder laid out as a Hugging Face model repository for `hub.py`'s local server.

Run `python tests/data/checkpoints/make.py` to check that open_clip still matches `clip_keys.json`.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
CLIP_KEYS = json.loads((HERE / "clip_keys.json").read_text())["models"]
ARCH_OF = {"ViT-B/32": "ViT-B-32-quickgelu", "RN50": "RN50-quickgelu"}


def random_clip(arch: str, seed: int = 0):
    "A seeded random open_clip model of `arch` in fp32, eval mode (BatchNorm statistics perturbed too)."
    from senclip.core import create_model

    torch.manual_seed(seed)
    model = create_model(arch).float().eval()
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
        for name, p in model.named_parameters():
            if name.endswith(("bn1.weight", "bn2.weight", "bn3.weight")):
                p.uniform_(0.5, 1.5)  # CLIP zero-inits bn3: make every layer matter
    return model


def clip_order(sd: dict) -> dict:
    "`sd` with keys in the clip package's order when it is one of its architectures."
    for keys in CLIP_KEYS.values():
        if set(keys) == set(sd):
            return {k: sd[k] for k in keys}
    return dict(sd)


def write_authors_ckpt(model, path: Path) -> Path:
    "The authors' checkpoint: torch.save(clip_model.state_dict()) in fp32."
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = clip_order({k: v.detach().clone().float() if v.is_floating_point() else v.clone()
                     for k, v in model.state_dict().items()})
    torch.save(sd, path)
    return path


def write_mixin(model, folder: Path, prefix: str = "model.", config: dict | None = None, dtype=torch.float32) -> Path:
    "A PyTorchModelHubMixin folder: model.safetensors (wrapper prefix + training-only tensors) + config.json."
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    dim = model.text_projection.shape[1]
    sd = {prefix + k: (v.to(dtype) if v.is_floating_point() else v).contiguous().clone()
          for k, v in model.state_dict().items()}
    sd |= {"projection_head.projection.weight": torch.zeros(dim, dim), "projection_head.fc.weight": torch.zeros(dim, dim),
           "projection_head.layer_norm.weight": torch.ones(dim), "pooling_layer.linear.weight": torch.ones(1, dim),
           "queue": torch.randn(dim, 8), "queue_ptr": torch.zeros(1, dtype=torch.long)}
    save_file(sd, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config or {"architecture": "ViT-B/32", "pooling": "avgpool"}))
    return folder


def write_open_clip_training_ckpt(model, path: Path, epoch: int = 20) -> Path:
    "open_clip's training checkpoint: {'epoch', 'name', 'state_dict' (module. prefix), 'optimizer'}."
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {"module." + k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = {"state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(3)}},
           "param_groups": [{"lr": 1e-5, "betas": (0.9, 0.98), "eps": 1e-6, "weight_decay": 0.2, "params": [0]}]}
    torch.save({"epoch": epoch, "name": "SkyCLIP_ViT_B32_top50pct", "state_dict": sd, "optimizer": opt}, path)
    return path


def write_skyclip_zip(model, path: Path) -> Path:
    "SkyScript's release zip: SkyCLIP_ViT_B32_top50pct/epoch_20.pt inside."
    ckpt = write_open_clip_training_ckpt(model, path.parent / "_epoch_20.pt")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("SkyCLIP_ViT_B32_top50pct/", "")
        z.write(ckpt, "SkyCLIP_ViT_B32_top50pct/epoch_20.pt")
    ckpt.unlink()
    return path


def write_hf_repo(root: Path, repo: str, files: dict[str, bytes | Path]) -> Path:
    "A Hugging Face model repository `repo` ('owner/name') under `root`, for tests/data/checkpoints/hub.py."
    base = root / repo
    for name, data in files.items():
        p = base / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else Path(data).read_bytes())
    return base


if __name__ == "__main__":
    import open_clip

    for clip_name, arch in ARCH_OF.items():
        m = open_clip.create_model(arch, device="meta")
        got = {k: list(v.shape) for k, v in m.state_dict().items()}
        assert got == CLIP_KEYS[clip_name], f"open_clip {arch} no longer matches the clip package's {clip_name}"
        print(f"{arch}: {len(got)} tensors, same names and shapes as clip {clip_name}")
