"""senclip.train on real sample pairs (built with senclip.pairs from data/sample): the loss reaches its minimum on a
handful of pairs, bad inputs fail clearly or are counted, a process killed by a signal resumes to the same weights,
and torchrun with 2 gloo processes makes the same update as one process with the combined batch."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    "The bundled sample turned into a manifest, GeoTIFF patches and a ground store (tiny tower), via senclip.pairs."
    from senclip.pairs import build_sample_pairs

    return build_sample_pairs(tmp_path_factory.mktemp("pairs"), model="senclip-tiny-vit", pretrained="")


def handful(pairs, tmp_path, n=8, name="few.parquet", edit=None):
    "A manifest with the first `n` usable rows of the sample (optionally edited), written with senclip.pairs."
    from senclip.pairs import read_manifest, write_manifest

    m = read_manifest(pairs["manifest"])
    m = m[m.status == "ok"].head(n).reset_index(drop=True)
    if edit:
        m = edit(m)
    path = tmp_path / name
    write_manifest(m, path)
    return path


def run_cli(args, **kw):
    return subprocess.run([str(BIN / "senclip_train"), *args], env=ENV, capture_output=True, text=True, **kw)


def load_ck(path):
    return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------- optimisation
@pytest.mark.slow  # over ~3 s on 2 cores: make test-slow (CI runs it)
def test_loss_reaches_minimum_on_a_handful_of_pairs(pairs, tmp_path):
    from senclip.pairs import PairDataset
    from senclip.train import train

    few = handful(pairs, tmp_path, n=8)
    over = dict(batch_size=8, epochs=250, negatives="batch", augment="none", head=False, lr=2e-3, weight_decay=0.0,
                gamma=1.0)
    res = train("tiny", few, pairs["store"], tmp_path / "run", overrides=over, val_every=0, export=False,
                log_every=10, progress=False, tensorboard=False, device="cpu")
    assert res["status"] == "finished" and res["step"] == 250
    rows = [r for r in __import__("csv").DictReader(open(res["metrics"])) if r["loss"]]
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])

    # the theoretical minimum of this InfoNCE: free unit satellite embeddings s_i against the fixed pooled keys
    ds = PairDataset(few, pairs["store"], "tiny")
    g, m = ds.ground, ds.mask.float().unsqueeze(-1)
    keys = F.normalize((g * m).sum(1) / m.sum(1), dim=-1)
    s = keys.clone().requires_grad_(True)
    opt = torch.optim.Adam([s], lr=0.05)
    for _ in range(500):
        loss = F.cross_entropy((1 / 0.07) * F.normalize(s, dim=-1) @ keys.t(), torch.arange(len(keys)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    floor = loss.item()
    chance = float(torch.log(torch.tensor(8.0)))
    print(f"loss {first:.3f} -> {last:.3f}; minimum {floor:.3f}; chance {chance:.3f}")
    assert first > floor + 0.5
    assert last - floor < 0.1 * (first - floor), (first, last, floor)


# ---------------------------------------------------------------- bad input
def test_missing_or_corrupt_patch_is_a_clear_error_or_a_counted_skip(pairs, tmp_path):
    from senclip.train import train

    def missing(m):
        m.loc[2, "patch"] = str(tmp_path / "gone" / "nope.tif")
        return m

    bad_tif = tmp_path / "corrupt.tif"

    def corrupt(m):
        data = Path(m.loc[5, "patch"]).read_bytes()
        bad_tif.write_bytes(data[: len(data) // 3])  # a truncated GeoTIFF
        m.loc[5, "patch"] = str(bad_tif)
        return m

    kw = dict(overrides=dict(batch_size=8, epochs=1), val_every=0, export=False, progress=False, tensorboard=False,
              device="cpu")
    for edit, name in [(missing, "gone/nope.tif"), (corrupt, "corrupt.tif")]:
        man = handful(pairs, tmp_path, n=8, edit=edit, name=f"bad_{Path(name).stem}.parquet")
        with pytest.raises(RuntimeError, match="could not be loaded") as e:
            train("tiny", man, pairs["store"], tmp_path / "err", **kw)
        assert str(tmp_path / name) in str(e.value) and "on_bad='skip'" in str(e.value), str(e.value)
    man = handful(pairs, tmp_path, n=8, edit=lambda m: corrupt(missing(m)), name="bad.parquet")
    res = train("tiny", man, pairs["store"], tmp_path / "skip", on_bad="skip", **kw)
    assert res["status"] == "finished" and res["skipped"] == 2
    rows = list(__import__("csv").DictReader(open(res["metrics"])))
    assert rows[-1]["skipped"] == "2"


def test_store_from_another_model_is_refused(pairs, tmp_path):
    from senclip.embeddings import EmbeddingStore
    from senclip.train import train

    st = EmbeddingStore.load(pairs["store"])
    other = EmbeddingStore(st.ids, torch.randn(len(st), 4, 1024), st.mask, dict(model_name="RN50", arch="RN50"))
    path = other.save(tmp_path / "rn50.safetensors")
    with pytest.raises(ValueError, match="rebuild the store|Rebuild the store"):
        train("tiny", pairs["manifest"], path, tmp_path / "run", val_every=0, export=False, progress=False, device="cpu")


def test_batch_larger_than_data_is_a_clear_error(pairs, tmp_path):
    from senclip.train import train

    few = handful(pairs, tmp_path, n=8)
    with pytest.raises(ValueError, match="larger than the 8 training pairs"):
        train("tiny", few, pairs["store"], tmp_path / "run", overrides=dict(batch_size=16), val_every=0,
              export=False, progress=False, device="cpu")
    with pytest.raises(ValueError, match="grad_accum 3"):
        train("tiny", few, pairs["store"], tmp_path / "run", overrides=dict(batch_size=4, grad_accum=3), val_every=0,
              export=False, progress=False, device="cpu")


@pytest.mark.slow  # over ~3 s on 2 cores: make test-slow (CI runs it)
def test_cuda_graph_request_without_a_gpu_says_so_and_trains_ordinary_steps(pairs, tmp_path):
    "--cuda_graph yes on a CPU: a note, ordinary steps, run.json records that no graph was used; a bad value is refused."
    import json

    few = handful(pairs, tmp_path, n=8)
    out = tmp_path / "run"
    r = run_cli(["--preset", "tiny", "--manifest", str(few), "--store", str(pairs["store"]), "--out", str(out),
                 "--device", "cpu", "--cuda_graph", "yes", "--max_steps", "2", "--set", "batch_size=4",
                 "--val_every", "0", "--no_tensorboard", "--no_export", "--quiet"], timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "cuda_graph requested but not used (not on CUDA)" in r.stdout
    assert json.loads((out / "run.json").read_text())["params"]["cuda_graph"] is False
    bad = run_cli(["--cuda_graph", "maybe", "--out", str(tmp_path / "bad")], timeout=120)
    assert bad.returncode != 0 and "--cuda_graph must be auto, yes or no" in bad.stderr


# ---------------------------------------------------------------- kill and resume (real processes, real signals)
@pytest.mark.slow  # over ~10 s on 2 cores: make test-slow (CI runs it)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_run_resumes_to_the_same_weights(pairs, tmp_path, sig):
    few = handful(pairs, tmp_path, n=24)
    args = ["--preset", "tiny", "--manifest", str(few), "--store", str(pairs["store"]), "--device", "cpu",
            "--set", "batch_size=4", "epochs=100", "head=true", "augment=paper", "learn_temperature=true",
            "--max_steps", "60", "--ckpt_every", "10", "--val_every", "0", "--deterministic", "--quiet",
            "--no_tensorboard"]
    full = subprocess.Popen([str(BIN / "senclip_train"), *args, "--out", str(tmp_path / "full")], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cut = tmp_path / "cut"
    p = subprocess.Popen([str(BIN / "senclip_train"), *args, "--out", str(cut), "--no_export"], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = cut / "checkpoints" / "last.pt"
    t0 = time.time()
    while not last.exists() and p.poll() is None and time.time() - t0 < 120:
        time.sleep(0.02)
    assert p.poll() is None, "the run ended before it could be interrupted:\n" + p.stdout.read()
    p.send_signal(sig)
    out = p.communicate(timeout=60)[0]
    stopped = load_ck(last)["step"]
    assert 0 < stopped < 60, stopped
    if sig == signal.SIGTERM:  # graceful: a checkpoint at the step it was told, exit code 143
        assert p.returncode == 143, out
    else:
        assert p.returncode == -signal.SIGKILL
    r = run_cli([*args, "--out", str(cut), "--resume"], timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resumed from {last} at step {stopped}" in r.stdout
    assert full.wait(timeout=180) == 0, full.stdout.read()
    a, b = load_ck(tmp_path / "full" / "checkpoints" / "last.pt"), load_ck(last)
    assert a["step"] == b["step"] == 60
    assert a["model"].keys() == b["model"].keys()
    diff = max((a["model"][k].float() - b["model"][k].float()).abs().max().item() for k in a["model"])
    assert diff <= 1e-6, diff
    # each step is logged once in the resumed run's CSV
    steps = [int(r["step"]) for r in __import__("csv").DictReader(open(cut / "metrics.csv")) if r["loss"]]
    assert steps == sorted(set(steps)) and steps[-1] == 60
    # the uninterrupted run exported loadable weights equal to its checkpoint
    from senclip.model import load

    zs = load(tmp_path / "full" / "senclip.safetensors")
    sd = zs.model.state_dict()
    assert all(torch.equal(sd[k], a["model"]["clip." + k]) for k in sd)


# ---------------------------------------------------------------- torchrun, 2 gloo processes
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # over ~10 s on 2 cores: make test-slow (CI runs it)
def test_torchrun_two_processes_equal_one_process_with_the_combined_batch(pairs, tmp_path):
    from senclip.core import get_preset
    from senclip.pairs import PairDataset
    from senclip.train_state import GlobalBatchSampler

    few = handful(pairs, tmp_path, n=16)
    # queue negatives (the per-sample loss then depends on the sample and the queue only) and no dropout head:
    # the combined-batch mean loss and its gradient are the same whatever the split between processes
    # global batch 4 x 2 accumulated micro-batches (the non-final one under DDP's no_sync)
    sets = ["batch_size=4", "grad_accum=2", "negatives=queue", "head=false", "augment=paper", "learn_temperature=true",
            "epochs=5"]
    args = ["--preset", "tiny", "--manifest", str(few), "--store", str(pairs["store"]), "--device", "cpu",
            "--set", *sets, "--max_steps", "1", "--val_every", "0", "--quiet", "--no_tensorboard", "--no_export"]
    ddp = subprocess.Popen([str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(_free_port()),
                            "-m", "senclip.train", *args, "--out", str(tmp_path / "ddp")], env=ENV,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    one = run_cli([*args, "--out", str(tmp_path / "one")], timeout=180)
    assert one.returncode == 0, one.stdout + one.stderr
    out = ddp.communicate(timeout=180)[0]
    assert ddp.returncode == 0, out
    a, b = load_ck(tmp_path / "ddp" / "checkpoints" / "last.pt"), load_ck(tmp_path / "one" / "checkpoints" / "last.pt")
    assert (a["world_size"], b["world_size"], a["step"], b["step"]) == (2, 1, 1, 1)
    assert len(a["rng"]) == 2  # every rank's RNG state is kept for an exact resume
    # the same averaged gradient (AdamW's first moment after one step is 0.1 x gradient)
    for i in b["optimizer"]["state"]:
        ga, gb = a["optimizer"]["state"][i]["exp_avg"], b["optimizer"]["state"][i]["exp_avg"]
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-7)
    # the same update: weights equal wherever the gradient is not at float-noise level (Adam's g/|g| turns
    # rounding noise of near-zero gradients into full steps, so those entries are compared loosely)
    from senclip.model import build_senclip
    from senclip.train_step import param_groups

    p = get_preset("tiny", **dict(s.split("=") for s in sets))
    mdl = build_senclip(p)
    names = {id(t): n for n, t in mdl.named_parameters()}
    order = [names[id(t)] for grp in param_groups(mdl, p.weight_decay) for t in grp["params"]]
    assert len(order) == len(b["optimizer"]["state"])
    for i, name in enumerate(order):
        grad = b["optimizer"]["state"][i]["exp_avg"] / 0.1
        wa, wb = a["model"][name.replace("clip.visual.", "visual.", 0)], b["model"][name]
        clear = grad.abs() > 1e-6
        torch.testing.assert_close(wa[clear], wb[clear], rtol=0, atol=1e-6)
        torch.testing.assert_close(wa, wb, rtol=0, atol=2.01 * p.lr)  # elsewhere at most one Adam step apart
    torch.testing.assert_close(a["model"]["logit_scale"], b["model"]["logit_scale"], rtol=0, atol=1e-6)
    # the queue holds the keys of both ranks, in global-batch order, identical to the single process's
    torch.testing.assert_close(a["model"]["queue"], b["model"]["queue"], rtol=0, atol=1e-6)
    ds = PairDataset(few, pairs["store"], p)
    batch = sum(GlobalBatchSampler(len(ds), 4, seed=p.seed).global_batches(0)[:2], [])  # both micro-batches
    g, m = ds.ground[batch], ds.mask[batch].float().unsqueeze(-1)
    keys = F.normalize((g * m).sum(1) / m.sum(1), dim=-1)
    ptr = int(a["model"]["queue_ptr"])
    K = a["model"]["queue"].shape[0]
    written = a["model"]["queue"][[(ptr - 8 + j) % K for j in range(8)]]
    torch.testing.assert_close(written, keys, rtol=0, atol=1e-6)  # per micro-batch: rank 0's 2 keys, then rank 1's


def test_cli_help_lists_the_options():
    r = run_cli(["--help"], timeout=120)
    assert r.returncode == 0, r.stderr
    for flag in ("--preset", "--set", "--manifest", "--store", "--out", "--resume", "--device", "--compile",
                 "--cuda_graph", "--val_every", "--ckpt_every", "--max_steps", "--on_bad", "--deterministic"):
        assert flag in r.stdout, flag
