"""LaFTer (senclip.lafter): stage 1 on embeddings with a known answer, stage 2 on a synthetic problem where the
pseudo-labels are informative, frozen parameters untouched, kill-and-resume with a real SIGKILL, the command line,
and nbs/paper/table2.ipynb under papermill (slow)."""
import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from senclip.core import UserError
from senclip.lafter import (LafterViews, PromptedVisual, embed, lafter_preset, top1, train_text_classifier,
                            trainable_parameters, tune_unlabeled)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # fast on a shared 2-core machine, and the same kernels in every process
    yield
    torch.set_num_threads(n)


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "IN_TEST"}
    env.update(HF_HUB_OFFLINE="1", MPLBACKEND="Agg", SENCLIP_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    return env


def _tiny(seed=0):
    "The tiny ViT with seeded random weights."
    from senclip.checkpoints import load

    return load("senclip-tiny-vit", seed=seed)


# --------------------------------------------------------------------------- stage 1
def test_stage1_separable_embeddings_reach_100():
    """LaFTer's own schedule (400 steps, lr 5e-4, noise 0.1, label smoothing) on 6 separable classes in 64-D: every
    held-out 'image' embedding (drawn around the same class directions as the sentences) is named correctly."""
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(6, 64, generator=g), dim=-1)
    s_cls = torch.arange(6).repeat_interleave(10)
    sentences = F.normalize(centres[s_cls] + 0.1 * torch.randn(60, 64, generator=g), dim=-1)
    i_cls = torch.arange(6).repeat_interleave(50)
    imgs = F.normalize(centres[i_cls] + 0.1 * torch.randn(300, 64, generator=g), dim=-1)
    cfg = lafter_preset("paper")
    clf = train_text_classifier(sentences, s_cls, 6, cfg.text_steps, cfg.text_lr, cfg.text_noise,
                                cfg.text_weight_decay, cfg.label_smoothing, seed=1)
    assert top1(imgs @ clf.weight.T, i_cls) == 100.0
    assert clf.bias is None and not clf.weight.requires_grad
    # deterministic in the seed
    again = train_text_classifier(sentences, s_cls, 6, 50, seed=1)
    assert torch.equal(again.weight, train_text_classifier(sentences, s_cls, 6, 50, seed=1).weight)


# --------------------------------------------------------------------------- stage 2 on a synthetic problem
def _colour_problem(n_per_class=64, size=32, seed=0):
    "Flat red/green/blue images of random brightness (+ light noise): the class is the hue."
    g = torch.Generator().manual_seed(seed)
    hues = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0]])
    y = torch.arange(3).repeat_interleave(n_per_class)
    bright = 0.3 + 0.7 * torch.rand(len(y), generator=g)
    x = hues[y].view(-1, 3, 1, 1) * bright.view(-1, 1, 1, 1) + 0.03 * torch.randn(len(y), 3, size, size, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8), y, bright


def _biased_teacher(model, images, y, bright, cut=0.7):
    "A linear classifier fitted to labels that are wrong (next class) for every bright image."
    feats = embed(PromptedVisual(model.model.visual, 0), LafterViews(32, model.mean, model.std, "none"), images)
    wrong = torch.where(bright > cut, (y + 1) % 3, y)
    clf = train_text_classifier(feats, wrong, 3, steps=300, lr=5e-2, noise=0.0, label_smoothing=0.0)
    return clf, top1(feats @ clf.weight.T, y)


def _synthetic_run(lr, epochs=12):
    model = _tiny(0)
    imgs, ys, bright = _colour_problem()
    teacher, before = _biased_teacher(model, imgs, ys, bright)
    cfg = lafter_preset("demo", epochs=epochs, batch_size=32, lr=lr, student_norm=True, teacher="frozen")
    res = tune_unlabeled(copy.deepcopy(model), teacher, imgs, cfg, seed=0, eval_images=imgs, eval_labels=ys, log=None)
    return before, res


@pytest.mark.slow  # over ~3.5 s on a slow 2-core machine (torch imports in 4 s): make test-slow (CI runs it)
def test_stage2_improves_on_informative_pseudo_labels():
    """The teacher's mistakes follow brightness, which the strong view's colour jitter varies: tuning on its
    pseudo-labels must beat it clearly. With lr 0 (nothing learns) the same check fails: it is not vacuous."""
    before, res = _synthetic_run(1e-3)
    assert 55 < before < 80, before  # informative but wrong on many images
    assert res.acc > before + 8, (before, [h.get("acc") for h in res.history])
    before0, res0 = _synthetic_run(0.0, epochs=1)  # nothing changes at lr 0: one epoch scores the same as twelve
    assert not res0.acc > before0 + 8


# --------------------------------------------------------------------------- frozen parameters
def test_frozen_parameters_bit_identical(tmp_path):
    model = _tiny(1)
    net = model.model
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    imgs, ys, _ = _colour_problem(16)
    clf = torch.nn.Linear(64, 3, bias=False)
    cfg = lafter_preset("demo", epochs=2, batch_size=16, lr=1e-2)
    res = tune_unlabeled(model, clf, imgs, cfg, seed=0, log=None)
    trained = trainable_parameters(res.encoder, res.classifier, cfg.tune)
    ids = {id(p) for p in trained.values()}
    changed, frozen = 0, 0
    for k, v in net.state_dict(keep_vars=True).items():
        if id(v) in ids:
            changed += not torch.equal(v.detach(), before[k])
        else:
            frozen += 1
            assert torch.equal(v.detach(), before[k]), f"{k} changed but is not trained"
    assert frozen > 10 and changed >= 5  # the norms moved; everything else (text tower included) did not
    assert not torch.equal(res.classifier.weight, clf.weight) and res.encoder.prompts is not None
    # only layer/batch-norm parameters of the image tower, the prompts and the classifier
    assert all(n in ("prompts", "classifier.weight") or ".ln_" in n or n.startswith("visual.ln_") for n in trained)


# --------------------------------------------------------------------------- kill and resume
RUNNER = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from senclip.checkpoints import load
    from senclip.lafter import lafter_preset, tune_unlabeled
    ckpt, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = load("senclip-tiny-vit")
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g)
    clf = torch.nn.Linear(64, 4, bias=False)
    torch.nn.init.normal_(clf.weight, generator=g)
    cfg = lafter_preset("demo", epochs=5, batch_size=8, ckpt_every=1, teacher="live")
    res = tune_unlabeled(model, clf, images, cfg, seed=3, ckpt=ckpt if ckpt != "-" else None,
                         eval_images=images[:16], eval_labels=torch.arange(16) % 4)
    sd = {"prompts": res.encoder.prompts.detach(), "classifier": res.classifier.weight.detach(),
          **{k: v for k, v in res.encoder.visual.state_dict().items()}}
    torch.save({"weights": sd, "history": res.history, "resumed_from": res.resumed_from}, out)
""")


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_weights(tmp_path):
    """A run checkpointing every step is killed with SIGKILL mid-epoch; the same command resumes it from the
    checkpoint (read with weights_only=True) to weights and history bit-identical to an uninterrupted run."""
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    env = _env(tmp_path)
    run = lambda ckpt, out: subprocess.run([sys.executable, str(script), ckpt, str(out)], env=env,
                                           capture_output=True, text=True, timeout=300)
    ref = run("-", tmp_path / "ref.pt")
    assert ref.returncode == 0, ref.stderr[-2000:]
    ckpt = tmp_path / "ckpt.pt"
    p = subprocess.Popen([sys.executable, str(script), str(ckpt), str(tmp_path / "never.pt")], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed_at, deadline = None, time.time() + 240
    while time.time() < deadline and p.poll() is None:
        if ckpt.exists():
            try:
                step = torch.load(ckpt, weights_only=True)["global_step"]
            except Exception:  # replaced while we read it: try again
                continue
            if step >= 11:  # mid-epoch (8 steps per epoch)
                p.send_signal(signal.SIGKILL)
                p.wait()
                killed_at = step
                break
        time.sleep(0.02)
    assert killed_at is not None, "the run finished (or never checkpointed) before it could be killed"
    assert p.returncode == -signal.SIGKILL and not (tmp_path / "never.pt").exists()
    resumed = run(str(ckpt), tmp_path / "resumed.pt")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    a, b = torch.load(tmp_path / "ref.pt", weights_only=True), torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert b["resumed_from"] >= killed_at
    for k in a["weights"]:
        assert torch.equal(a["weights"][k], b["weights"][k]), k
    assert a["history"] == b["history"]  # per-epoch loss and accuracy too


def test_resume_refuses_another_run(tmp_path):
    model = _tiny(2)
    imgs, _, _ = _colour_problem(8)
    clf = torch.nn.Linear(64, 3, bias=False)
    ckpt = tmp_path / "c.pt"
    tune_unlabeled(copy.deepcopy(model), clf, imgs, lafter_preset("demo", epochs=1, batch_size=8), ckpt=ckpt, log=None)
    with pytest.raises(UserError, match="different run.*config"):
        tune_unlabeled(copy.deepcopy(model), clf, imgs, lafter_preset("demo", epochs=1, batch_size=8, lr=1.0), ckpt=ckpt, log=None)
    with pytest.raises(UserError, match="different run.*frozen"):
        tune_unlabeled(_tiny(3), clf, imgs, lafter_preset("demo", epochs=1, batch_size=8), ckpt=ckpt, log=None)


# --------------------------------------------------------------------------- one Table 2 cell
def test_run_lafter_inductive_and_stale_results(tmp_path):
    """The inductive option tunes on one part of each class and scores on the other; a finished folder is reused
    only for the same settings (a stale result is refused with the fix, not silently reported)."""
    from senclip.datasets import EuroSAT
    from senclip.core import sample_dir
    from senclip.lafter import load_images, run_lafter

    images, labels = load_images(EuroSAT(sample_dir("eurosat")))
    data = (images[::4], labels[::4])  # 50 images, 5 per class
    cfg = lafter_preset("demo", epochs=1, text_steps=10, batch_size=16)
    r = run_lafter("senclip-tiny-vit", data, "ground", cfg, 0, tmp_path / "r", "inductive", 0.4, log=None)
    assert (r["n_tune"], r["n_test"], r["holdout"]) == (30, 20, 0.4) and r["untrained"]
    assert r["history"][-1]["acc"] == r["stage2"] and (tmp_path / "r" / "checkpoint.pt").exists()
    assert run_lafter("senclip-tiny-vit", data, "ground", cfg, 0, tmp_path / "r", "inductive", 0.4) == r
    with pytest.raises(UserError, match="holdout differ"):
        run_lafter("senclip-tiny-vit", data, "ground", cfg, 0, tmp_path / "r", "inductive", 0.5)
    with pytest.raises(UserError, match="config differ"):
        run_lafter("senclip-tiny-vit", data, "ground", cfg.replace(lr=1e-2), 0, tmp_path / "r", "inductive", 0.4)
    again = run_lafter("senclip-tiny-vit", data, "ground", cfg.replace(lr=1e-2), 0, tmp_path / "r", "inductive", 0.4,
                       restart=True, log=None)
    assert again["config"]["lr"] == 1e-2


# --------------------------------------------------------------------------- command line
@pytest.mark.slow  # over ~3.5 s on a slow 2-core machine (torch imports in 4 s): make test-slow (CI runs it)
def test_cli_help_documents_the_recipe(tmp_path):
    out = subprocess.run([sys.executable, "-m", "senclip.lafter", "--help"], env=_env(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    text = " ".join(out.stdout.split())  # argparse wraps the description
    for s in ("Stage 1", "Stage 2", "N(0, 0.1^2)", "label smoothing 0.1", "visual prompt tokens", "transductive",
              "--prompts", "--split", "--set", "--debug"):
        assert s in text, s


@pytest.mark.slow  # over ~10 s on 2 cores: make test-slow (CI runs it)
def test_cli_demo_and_one_line_errors(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "senclip.lafter", *a], env=_env(tmp_path),
                                    capture_output=True, text=True, timeout=300)
    out = run("--demo", "--seeds", "0", "--set", "epochs=1 text_steps=20", "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(next((tmp_path / "run").glob("*/result.json")).read_text())
    assert res["untrained"] and "not a result" in res["caveat"] and res["n_test"] == 200
    assert (tmp_path / "run" / "results.csv").exists() and "not a result" in out.stdout
    bad = run("--demo", "--set", "epoch=3", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert "epoch" in bad.stderr and "known" in bad.stderr
    missing = tmp_path / "missing.json"  # fails before the model is loaded: one line, naming the file
    bad = run("--demo", "--prompts", str(missing), "--out", str(tmp_path / "bad"))
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and str(missing) in bad.stderr, bad.stderr
    bad = run("--model", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "bad"))
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and "nope.safetensors" in bad.stderr


# --------------------------------------------------------------------------- Table 2 notebook
def test_table2_has_papermill_parameters():
    import papermill

    params = papermill.inspect_notebook(str(ROOT / "nbs" / "paper" / "table2.ipynb"))
    assert {"demo", "models", "styles", "seeds", "split", "eurosat_root", "settings"} <= set(params)


@pytest.mark.slow
def test_table2_papermill_demo(tmp_path):
    run = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "papermill", str(ROOT / "nbs" / "paper" / "table2.ipynb"), str(tmp_path / "out.ipynb"),
         "-p", "demo", "True", "-p", "out_dir", str(run), "-p", "settings", '{"epochs": 1, "text_steps": 20}',
         "--cwd", str(ROOT)],
        env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    import pandas as pd

    t2 = pd.read_csv(run / "table2.csv")
    assert set(t2.prompts) == {"aerial", "ground"} and t2.not_a_result.all() and t2.published.isna().all()
    assert (run / "table2.md").read_text().startswith("**UNTRAINED WEIGHTS")
    assert (run / "figures" / "table2.png").exists() and (run / "figures" / "stage2_epochs.png").exists()
    assert json.loads((run / "params.json").read_text())["params"]["demo"] is True


@pytest.mark.slow
def test_table2_paper_mode_fails_early_offline(tmp_path):
    """Without demo, missing weights stop the notebook in its input cell with what to do, before any tuning."""
    out = subprocess.run(
        [sys.executable, "-m", "papermill", str(ROOT / "nbs" / "paper" / "table2.ipynb"), str(tmp_path / "out.ipynb"),
         "-p", "out_dir", str(tmp_path / "run"), "-p", "models", '["senclip-vit-b-32-avgpool"]', "--cwd", str(ROOT)],
        env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "downloads are off" in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "run" / "runs").exists() and not (tmp_path / "run" / "table2.csv").exists()
