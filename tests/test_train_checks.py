"""senclip.train refuses what would give wrong numbers (issue 10, items 7-9): the official-code preset decays every
parameter and augments bilinearly like the authors' code; a NaN or foreign ground-embedding store and a non-finite
loss stop the run with the points/step named; `--resume` refuses settings it cannot honour; `--help` needs no torch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
KW = dict(val_every=0, export=False, progress=False, tensorboard=False, device="cpu")

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    "The bundled sample as a manifest, GeoTIFF patches and a ground store of the tiny tower (senclip.pairs)."
    from senclip.pairs import build_sample_pairs

    return build_sample_pairs(tmp_path_factory.mktemp("pairs"), model="senclip-tiny-vit", pretrained="")


def _store_like(pairs, path, embeddings=None, meta=None):
    "A copy of the sample store with other embeddings and/or metadata, written by EmbeddingStore.save."
    from senclip.embeddings import EmbeddingStore

    st = EmbeddingStore.load(pairs["store"])
    emb = st.embeddings if embeddings is None else embeddings(st.embeddings.clone())
    return EmbeddingStore(st.ids, emb, st.mask, st.meta if meta is None else meta).save(path)


# ---------------------------------------------------------------- item 7: the official-code preset
def _tiny_official(**kw):
    from senclip.core import get_preset

    return get_preset("official-code", arch="senclip-tiny-vit", pretrained="", image_size=32, batch_size=4,
                      queue_size=16, num_workers=0, **kw)


def test_official_code_decays_every_parameter_including_the_logit_scale(pairs, tmp_path):
    "The authors' AdamW decays all parameters with 0.2: the trained run's optimiser holds logit_scale under decay 0.2."
    from senclip.model import build_senclip
    from senclip.train import train

    p = _tiny_official()
    assert p.decay_all and p.weight_decay == 0.2 and p.learn_temperature
    res = train(p, pairs["manifest"], pairs["store"], tmp_path / "run", max_steps=1, **KW)
    ck = torch.load(res["checkpoint"], map_location="cpu", weights_only=True)
    groups = ck["optimizer"]["param_groups"]
    mdl = build_senclip(p)
    n_trainable = sum(t.requires_grad for t in mdl.parameters())
    decayed = [i for g in groups if g["weight_decay"] == 0.2 for i in g["params"]]
    assert len(decayed) == n_trainable, [(g.get("name"), g["weight_decay"], len(g["params"])) for g in groups]
    # the logit scale is a trained parameter of that group (it has AdamW state) and moved
    assert ck["model"]["logit_scale"].item() != pytest.approx(torch.log(torch.tensor(1 / 0.07)).item(), abs=1e-7)


def test_official_code_randaugment_interpolates_bilinearly_like_torchvision(pairs):
    "On real Sentinel-2 patches, the official transform equals torchvision's RandAugment(interpolation=BILINEAR) ops."
    import torchvision.transforms as T
    import torchvision.transforms.functional as TF
    from torchvision.transforms.autoaugment import _apply_op

    from senclip.core import get_preset
    from senclip.pairs import PairDataset
    from senclip.augment import TrainTransform

    p = get_preset("official-code")
    ds = PairDataset(pairs["manifest"], pairs["store"], p.replace(arch="senclip-tiny-vit", pretrained=""))
    patches = torch.stack([ds[i]["image"] for i in range(6)])  # uint8 (6, 3, 100, 100)
    authors = T.RandAugment(num_ops=3, magnitude=5, interpolation=T.InterpolationMode.BILINEAR)
    tt = TrainTransform(p)
    names = [o[0] for o in tt.ops]
    geo = ["ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Rotate"]  # every image: geometry first
    ops = torch.tensor([[names.index(geo[i]), names.index("Rotate"), names.index("Brightness")] for i in range(6)])
    neg = torch.tensor([[i % 2 == 0, True, False] for i in range(6)])
    prm = {"ops": ops, "negative": neg}
    x = TF.resize(TF.center_crop(patches, 32), [224, 224], interpolation=T.InterpolationMode.BILINEAR, antialias=True)
    ref = []
    for i in range(6):
        img = x[i : i + 1]
        for k in range(3):
            name, mag, signed = tt.ops[int(ops[i, k])]
            mag = -mag if (signed and bool(neg[i, k])) else mag
            img = _apply_op(img, name, mag, interpolation=authors.interpolation, fill=[0.0] * 3)
        ref.append(img)
    ref = torch.cat(ref).float() / 255
    ref = (ref - torch.tensor(p.mean).view(1, 3, 1, 1)) / torch.tensor(p.std).view(1, 3, 1, 1)
    for batched in (False, True):  # the grouped (CPU) and the fixed-shape (CUDA graph) versions alike
        torch.testing.assert_close(tt(patches, prm, batched=batched), ref, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- item 8: NaN and foreign embeddings
def test_store_with_nan_embeddings_is_refused_before_training(pairs, tmp_path):
    from senclip.core import UserError
    from senclip.train import train

    nan = _store_like(pairs, tmp_path / "nan.safetensors", embeddings=lambda e: e.fill_(float("nan")))
    with pytest.raises(UserError, match=r"non-finite \(NaN/inf\) ground embeddings, e.g. \['") as e:
        train("tiny", pairs["manifest"], nan, tmp_path / "run", **KW)
    assert str(nan) in str(e.value)
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_non_finite_loss_stops_with_the_step_and_the_pair_ids(pairs, tmp_path):
    "A NaN reaching the loss (here one point's embeddings, changed in memory) stops the run at that step, naming the batch."
    from senclip.core import get_preset
    from senclip.pairs import PairDataset
    from senclip.train import train
    from senclip.train_state import GlobalBatchSampler

    p = get_preset("tiny", negatives="batch", batch_size=4, epochs=2)
    ds = PairDataset(pairs["manifest"], pairs["store"], p)
    batches = GlobalBatchSampler(len(ds), 4, seed=p.seed).global_batches(0)
    bad_step = 3
    j = batches[bad_step - 1][1]
    ds.ground[j] = float("nan")
    ids = [str(ds.rows.at[i, "id"]) for i in batches[bad_step - 1]]
    with pytest.raises(FloatingPointError, match=f"at step {bad_step}, batch of pairs") as e:
        train(p, out_dir=tmp_path / "run", dataset=ds, ckpt_every=1, log_every=100, **KW)
    assert str(ids) in str(e.value), (ids, str(e.value))
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert ck["step"] == bad_step - 1  # the last checkpoint is the one before the NaN, and it is finite
    assert all(torch.isfinite(v.float()).all() for v in ck["model"].values())


def test_store_from_another_pretrained_tag_or_without_metadata_is_refused_unless_allowed(pairs, tmp_path):
    from senclip.core import UserError
    from senclip.embeddings import EmbeddingStore
    from senclip.train import train

    meta = dict(EmbeddingStore.load(pairs["store"]).meta, pretrained="laion2b_s34b_b79k", random_weights="false")
    other = _store_like(pairs, tmp_path / "laion.safetensors", meta=meta)
    bare = _store_like(pairs, tmp_path / "bare.safetensors", meta={})
    for path, what in [(other, "were made by senclip-tiny-vit/laion2b_s34b_b79k"), (bare, "has no model metadata")]:
        with pytest.raises(UserError, match="--allow_foreign_embeddings") as e:
            train("tiny", pairs["manifest"], path, tmp_path / "run", max_steps=1, **KW)
        assert what in str(e.value) and str(path) in str(e.value), str(e.value)
    res = train("tiny", pairs["manifest"], other, tmp_path / "ok", max_steps=1, allow_foreign_embeddings=True, **KW)
    assert res["status"] == "finished"
    rec = json.loads((tmp_path / "ok" / "run.json").read_text())["params"]
    assert "laion2b_s34b_b79k" in rec["foreign_embeddings"] and "allowed" in rec["foreign_embeddings"]
    # the matching store trains without a word
    res = train("tiny", pairs["manifest"], pairs["store"], tmp_path / "same", max_steps=1, **KW)
    assert json.loads((tmp_path / "same" / "run.json").read_text())["params"]["foreign_embeddings"] == ""


# ---------------------------------------------------------------- item 9: --resume with changed settings
def run_cli(args, **kw):
    return subprocess.run([str(BIN / "senclip_train"), *args], env=ENV, capture_output=True, text=True, **kw)


def test_resume_refuses_settings_it_cannot_honour_and_records_what_it_used(pairs, tmp_path):
    from senclip.core import UserError
    from senclip.train import train

    out = tmp_path / "run"
    kw = dict(KW, overrides=dict(batch_size=4, epochs=1))
    train("tiny", pairs["manifest"], pairs["store"], out, max_steps=2, **kw)
    before = (out / "run.json").read_text()
    with pytest.raises(UserError, match=r"cannot honour changed settings: lr 0\.001 -> 0\.1, batch_size 4 -> 8"):
        train("tiny", pairs["manifest"], pairs["store"], out, resume=True, max_steps=3,
              **dict(kw, overrides=dict(batch_size=8, epochs=1, lr=0.1)))
    assert (out / "run.json").read_text() == before  # nothing recorded for a run that did not happen
    # a change resume can honour (more epochs) is applied and recorded
    res = train("tiny", pairs["manifest"], pairs["store"], out, resume=True, **dict(kw, overrides=dict(batch_size=4, epochs=2)))
    rec = json.loads((out / "run.json").read_text())["params"]
    assert rec["preset"]["epochs"] == 2 and rec["preset"]["lr"] == 0.001
    assert rec["resume_changes"] == {"epochs": [1, 2]}
    assert res["status"] == "finished" and res["epoch"] == 2


@pytest.mark.slow
def test_resume_with_changed_settings_on_the_command_line_is_one_line(pairs, tmp_path):
    from senclip.train import train

    out = tmp_path / "run"
    train("tiny", pairs["manifest"], pairs["store"], out, max_steps=1, **dict(KW, overrides=dict(batch_size=4)))
    r = run_cli(["--preset", "tiny", "--manifest", str(pairs["manifest"]), "--store", str(pairs["store"]), "--out",
                 str(out), "--device", "cpu", "--resume", "--set", "batch_size=4", "lr=0.1", "--val_every", "0",
                 "--no_tensorboard", "--no_export", "--quiet"], timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    err = [l for l in r.stderr.splitlines() if not l.startswith("WARNING:root:")]  # open_clip: random tiny weights
    assert len(err) == 1 and "cannot honour changed settings: lr 0.001 -> 0.1" in err[0], r.stderr


# ---------------------------------------------------------------- the command line
def test_help_does_not_import_torch():
    "`senclip_train --help` through the installed console script answers without importing torch."
    script = BIN / "senclip_train"
    code = ("import runpy, sys\n"
            f"sys.argv = [{str(script)!r}, '--help']\n"
            "try:\n"
            f"    runpy.run_path({str(script)!r}, run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    assert e.code in (0, None), e.code\n"
            "print('TORCH IMPORTED' if 'torch' in sys.modules else 'no torch')\n")
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--resume" in r.stdout and "--allow_foreign_embeddings" in r.stdout and "--debug" in r.stdout
    assert r.stdout.strip().endswith("no torch"), r.stdout[-300:]


def test_bad_preset_is_one_line_and_debug_shows_the_traceback(tmp_path):
    r = run_cli(["--preset", "nope", "--out", str(tmp_path / "x")], timeout=300)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0, r.stderr
    assert r.stderr.startswith("senclip_train: error: Unknown preset 'nope'"), r.stderr
    assert not (tmp_path / "x").exists()
    r = run_cli(["--preset", "nope", "--out", str(tmp_path / "x"), "--debug"], timeout=300)
    assert r.returncode != 0 and "Traceback" in r.stderr
