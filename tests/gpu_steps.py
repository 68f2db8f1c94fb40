"""What the GPU checks of the training step share (imported by tests/gpu_check_train*.py; not collected by pytest)."""
import time

import torch


def step_batch(g: torch.Generator, tf, dim: int, n: int = 32):
    "A random batch for `TrainStep`: pinned uint8 patches and ground embeddings, a mask with missing photos, params."
    img = torch.randint(0, 256, (n, 3, 100, 100), dtype=torch.uint8, generator=g).pin_memory()
    ground = torch.randn(n, 4, dim, generator=g).pin_memory()
    mask = torch.ones(n, 4, dtype=torch.bool)
    mask[::3, 1] = False
    return img, ground, mask, tf.sample_params(n, g)


def set_lr(opts, lr: float):
    "Set every group's learning rate (a change the captured step must notice)."
    for o in opts:
        for grp in o.param_groups:
            grp["lr"] = lr


def max_rel_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    "Largest difference between two models' parameters, relative to each tensor's largest value."
    return max(((x - y).abs().max() / x.abs().max().clamp_min(1e-6)).item() for x, y in zip(a.parameters(), b.parameters()))


def img_per_s(step, batch, n: int = 30) -> float:
    "Images per second of `step` on one resident batch (3 untimed calls first)."
    for _ in range(3):
        step(*batch)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        step(*batch)
    torch.cuda.synchronize()
    return n * batch[0].shape[0] / (time.perf_counter() - t)
