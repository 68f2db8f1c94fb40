"""Issue 10, item 6: with in-batch negatives (the `paper` loss, `negatives='queue+batch'`) two torchrun processes
(gloo, CPU) optimise exactly what one process does with the combined batch: the keys of the whole global batch are
the negatives on every rank, and gradients reach them from every rank (attention pooling and the symmetric term
included)."""
import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BIN = Path(sys.executable).parent
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    from senclip.pairs import build_sample_pairs

    return build_sample_pairs(tmp_path_factory.mktemp("pairs"), model="senclip-tiny-vit", pretrained="")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _loss_and_grads(rank, world, folder):
    "One SenCLIP forward/backward on this rank's slice of a fixed batch of 8 (world 1: all of it); saves loss and grads."
    import torch.distributed as dist

    from senclip.core import get_preset
    from senclip.model import build_senclip

    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{folder}/pg", rank=rank, world_size=world)
    torch.manual_seed(0)
    m = build_senclip(get_preset("tiny", negatives="queue+batch", pooling="attn_image", symmetric=True, head=False,
                                 learn_temperature=True, queue_size=16, queue_init="random"))
    g = torch.Generator().manual_seed(1)
    images, ground = torch.randn(8, 3, 32, 32, generator=g), torch.randn(8, 4, m.embed_dim, generator=g)
    mask = torch.rand(8, 4, generator=g) > 0.3
    mask[:, 0] = True
    b = 8 // world
    sl = slice(rank * b, (rank + 1) * b)
    out = m(images[sl], ground[sl], mask[sl])
    out["loss"].backward()
    loss = out["loss"].detach()
    grads = {n: t.grad.clone() for n, t in m.named_parameters() if t.grad is not None}
    if world > 1:  # what DDP does: average the losses' gradients over the ranks
        dist.all_reduce(loss)
        for v in grads.values():
            dist.all_reduce(v)
        loss /= world
        grads = {n: v / world for n, v in grads.items()}
        dist.destroy_process_group()
    if rank == 0:
        torch.save({"loss": loss, "grads": grads}, f"{folder}/world{world}.pt")


@pytest.mark.slow  # over ~10 s on 2 cores: make test-slow (CI runs it)
def test_gathered_negatives_give_the_combined_batch_gradient(tmp_path):
    "Fast check of senclip.model.gather_with_grad inside SenCLIP's loss: 2 gloo processes == 1 process, loss and grads."
    import torch.multiprocessing as mp

    _loss_and_grads(0, 1, str(tmp_path))
    mp.start_processes(_loss_and_grads, args=(2, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    one, two = _load(tmp_path / "world1.pt"), _load(tmp_path / "world2.pt")
    torch.testing.assert_close(two["loss"], one["loss"], rtol=1e-5, atol=1e-6)
    assert one["grads"].keys() == two["grads"].keys() and "pool.linear.weight" in one["grads"]
    for k in one["grads"]:
        torch.testing.assert_close(two["grads"][k], one["grads"][k], rtol=1e-4, atol=1e-6, msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("sets", [
    ["negatives=queue+batch", "pooling=attn_image", "symmetric=true"],  # the paper's loss, learnt pooling, both ways
    ["negatives=batch", "pooling=avg"],
], ids=["queue+batch-attn-symmetric", "batch-avg"])
def test_two_processes_optimise_the_combined_batch_loss(pairs, tmp_path, sets):
    from senclip.pairs import read_manifest, write_manifest

    m = read_manifest(pairs["manifest"])
    few = tmp_path / "few.parquet"
    write_manifest(m[m.status == "ok"].head(16).reset_index(drop=True), few)
    # no dropout head: dropout masks differ between ranks by design; everything else must agree
    sets = ["batch_size=8", "head=false", "augment=paper", "learn_temperature=true", "epochs=5", *sets]
    args = ["--preset", "tiny", "--manifest", str(few), "--store", str(pairs["store"]), "--device", "cpu",
            "--set", *sets, "--max_steps", "1", "--log_every", "1", "--val_every", "0", "--quiet", "--no_tensorboard",
            "--no_export"]
    ddp = subprocess.Popen([str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(_free_port()),
                            "-m", "senclip.train", *args, "--out", str(tmp_path / "ddp")], env=ENV,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    one = subprocess.run([str(BIN / "senclip_train"), *args, "--out", str(tmp_path / "one")], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stdout + one.stderr
    try:
        out = ddp.communicate(timeout=300)[0]
    except subprocess.TimeoutExpired:
        ddp.kill()
        pytest.fail("torchrun did not finish in 300 s:\n" + ddp.communicate()[0][-3000:])
    assert ddp.returncode == 0, out
    a, b = _load(tmp_path / "ddp" / "checkpoints" / "last.pt"), _load(tmp_path / "one" / "checkpoints" / "last.pt")
    assert (a["world_size"], b["world_size"], a["step"], b["step"]) == (2, 1, 1, 1)
    # the same loss: the mean over the global batch (each rank logs the mean of its rows; the ranks are averaged)
    la, lb = (float(next(csv.DictReader(open(tmp_path / r / "metrics.csv")))["loss"]) for r in ("ddp", "one"))
    assert la == pytest.approx(lb, rel=1e-5, abs=1e-6), (la, lb)
    # the same gradient of every trained parameter (AdamW's first moment after one step is 0.1 x gradient),
    # the pooling weights and the logit scale included
    assert len(a["optimizer"]["state"]) == len(b["optimizer"]["state"])
    for i in b["optimizer"]["state"]:
        ga, gb = a["optimizer"]["state"][i]["exp_avg"], b["optimizer"]["state"][i]["exp_avg"]
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-7)
    # the same weights after the step where the gradient is above float noise (Adam's g/|g| turns rounding noise of
    # near-zero gradients into full steps), at most one Adam step apart elsewhere
    lr = 1e-3
    for k in b["model"]:
        wa, wb = a["model"][k].float(), b["model"][k].float()
        torch.testing.assert_close(wa, wb, rtol=0, atol=2.01 * lr)
    if "pool.linear.weight" in b["model"]:
        torch.testing.assert_close(a["model"]["pool.linear.weight"], b["model"]["pool.linear.weight"], rtol=0, atol=1e-6)
    torch.testing.assert_close(a["model"]["logit_scale"], b["model"]["logit_scale"], rtol=0, atol=1e-6)
