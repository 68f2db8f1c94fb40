"""Checkpoints: every supported format at full ViT-B/32 and RN50 size, the Hugging Face download path against a
local hub server (online, then offline from the cache, then offline with nothing cached), and SkyCLIP's zip over HTTP.
Fixtures are written by tests/data/checkpoints/make.py from seeded random models (no real weights here)."""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "data" / "checkpoints"))
import make  # noqa: E402
import hub  # noqa: E402

from senclip.checkpoints import (Checkpoint, CheckpointFormatError, OfflineError, export_openai,  # noqa: E402
                                 export_safetensors, fetch_checkpoint, load, pick_file, register_checkpoint, CHECKPOINTS)
from senclip.core import CLIP_MEAN, SENCLIP_MEAN, sample_dir  # noqa: E402


def _image(zs):
    from PIL import Image

    return zs.preprocess(Image.open(sorted(sample_dir("eurosat", "2750", "River").glob("*.jpg"))[0]))[None]


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    bad = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not bad, bad[:5]


@pytest.mark.slow  # over ~3.5 s on a slow 2-core machine (torch imports in 4 s): make test-slow (CI runs it)
def test_open_clip_has_the_clip_package_layout():
    import open_clip

    for clip_name, arch in make.ARCH_OF.items():
        m = open_clip.create_model(arch, device="meta")
        assert {k: list(v.shape) for k, v in m.state_dict().items()} == make.CLIP_KEYS[clip_name]


@pytest.mark.slow  # over ~10 s on 2 cores: make test-slow (CI runs it)
@pytest.mark.parametrize("arch", ["ViT-B-32-quickgelu", "RN50-quickgelu"])
def test_every_format_loads_exactly(arch, tmp_path):
    "Full-size random weights in each format -> load -> same tensors and the same embeddings as open_clip itself."
    clip_name = {v: k for k, v in make.ARCH_OF.items()}[arch]
    src = make.random_clip(arch, seed=1)
    paths = {"authors": make.write_authors_ckpt(src, tmp_path / "SenCLIP_AvgPool.ckpt")}
    if arch.startswith("ViT"):  # the other formats once at full size (all of them are also tested on tiny models)
        paths["mixin"] = make.write_mixin(src, tmp_path / "mixin", prefix="model.",
                                          config={"architecture": clip_name, "pooling": "avgpool"})
        paths["open_clip"] = make.write_open_clip_training_ckpt(src, tmp_path / "epoch_20.pt")
    ref = None
    for fmt, path in paths.items():
        # a local file carries no normalisation: SenCLIP's by default, CLIP's on request
        zs = load(path, norm="clip" if fmt == "open_clip" else None)
        assert zs.arch == arch, fmt
        assert zs.mean == (CLIP_MEAN if fmt == "open_clip" else SENCLIP_MEAN)
        _assert_same_weights(src, zs.model)
        if ref is None:  # the direct open_clip forward, on one real EuroSAT image and two prompts
            x = _image(zs)
            assert x.shape == (1, 3, 224, 224)
            tokens = zs.tokenizer(["a satellite photo of a river", "rows of wheat under a blue sky"])
            with torch.no_grad():
                ref = src.encode_image(x), src.encode_text(tokens)
        with torch.no_grad():
            torch.testing.assert_close(zs.encode_image(x), ref[0], rtol=0, atol=1e-6)
            torch.testing.assert_close(zs.encode_text(tokens), ref[1], rtol=0, atol=1e-6)
    # export to the authors' format: the clip package's exact key names, shapes and order, fp32; round trip exact
    out = export_openai(zs, tmp_path / "export.ckpt")
    sd = torch.load(out, weights_only=True)
    assert {k: list(v.shape) for k, v in sd.items()} == make.CLIP_KEYS[clip_name]
    assert all(v.dtype == torch.float32 for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    _assert_same_weights(src, load(out).model)
    if arch.startswith("ViT"):
        export_safetensors(zs, tmp_path / "st")
        back = load(tmp_path / "st")
        assert back.arch == arch and back.mean == CLIP_MEAN  # recorded in the export
        _assert_same_weights(src, back.model)
    # wrong architecture: a clear error that names expected and found keys
    other = "RN50-quickgelu" if arch.startswith("ViT") else "ViT-B-32-quickgelu"
    with pytest.raises(CheckpointFormatError, match="expected keys not found.*unexpected keys"):
        load(paths["authors"], arch=other)


def test_mixin_fp16_and_unrecognised_layout(tmp_path):
    src = make.random_clip("senclip-tiny-vit", seed=2)
    make.write_mixin(src, tmp_path / "half", prefix="encoder.model.", dtype=torch.float16)
    zs = load(tmp_path / "half")
    assert zs.model.visual.proj.dtype == torch.float32
    torch.testing.assert_close(zs.model.visual.proj, src.visual.proj.half().float(), rtol=0, atol=0)
    from safetensors.torch import save_file

    (tmp_path / "odd").mkdir()
    save_file({"backbone.weight": torch.zeros(3, 3)}, str(tmp_path / "odd" / "model.safetensors"))
    with pytest.raises(CheckpointFormatError, match="unrecognised layout.*backbone.weight"):
        load(tmp_path / "odd")


def test_registry_file_names_from_listing():
    listing = ["README.md", ".gitattributes", "SenCLIP_AvgPool_ViTB32.ckpt", "SenCLIP_AttPoolPerImg_ViTB32.ckpt",
               "RN50/SenCLIP_AvgPool_RN50.ckpt", "RN50/SenCLIP_AttPool_RN50.ckpt",
               "LUCAS_CLIP_Frozen_Embeddings/lucas_clipemb_ViTB-32.pt", "LUCAS_CLIP_Frozen_Embeddings/lucas_clipemb_RN50.pt"]
    got = {n: pick_file(CHECKPOINTS[n], listing) for n in
           ["senclip-vit-b-32-avgpool", "senclip-vit-b-32-attpool", "senclip-rn50-avgpool", "senclip-rn50-attpool"]}
    assert got == {"senclip-vit-b-32-avgpool": "SenCLIP_AvgPool_ViTB32.ckpt",
                   "senclip-vit-b-32-attpool": "SenCLIP_AttPoolPerImg_ViTB32.ckpt",
                   "senclip-rn50-avgpool": "RN50/SenCLIP_AvgPool_RN50.ckpt",
                   "senclip-rn50-attpool": "RN50/SenCLIP_AttPool_RN50.ckpt"}
    assert pick_file(CHECKPOINTS["skyclip-50"], ["SkyCLIP_ViT_B32_top50pct/epoch_20.pt"]).endswith("epoch_20.pt")


# --- the Hugging Face download path, against a local hub (huggingface_hub reads HF_ENDPOINT at import: subprocess)
ENTRIES = {  # registry name -> (architecture of the small stand-in weights, writer, seed)
    "senclip-vit-b-32-avgpool": "senclip-tiny-vit",
    "senclip-vit-b-32-attpool": "senclip-tiny-vit",
    "senclip-rn50-avgpool": "senclip-tiny-rn",
    "senclip-vit-b-32-avgpool-mvrl": "senclip-tiny-vit",
    "remoteclip-rn50": "senclip-tiny-rn",
    "georsclip-vit-b-32": "senclip-tiny-vit",
}

SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from senclip.checkpoints import load
    entries, x_path, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    res = {}
    for name, arch in entries.items():
        try:
            zs = load(name, arch=arch)
        except Exception as e:
            res[name] = f"{type(e).__name__}: {e}"
            continue
        x = torch.load(x_path, weights_only=True)[arch]
        with torch.no_grad():
            res[name] = {"image": zs.encode_image(x), "text": zs.encode_text(zs.tokenizer(["a forest"])),
                         "mean": torch.tensor(zs.mean)}
    torch.save(res, out)
""")


def _run(env_extra, tmp_path, entries, tag):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "SENCLIP_"))}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1", **env_extra)
    out = tmp_path / f"{tag}.pt"
    t = time.time()
    r = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(entries), str(tmp_path / "x.pt"), str(out)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return torch.load(out, weights_only=True), time.time() - t


@pytest.mark.slow  # over ~10 s on 2 cores: make test-slow (CI runs it)
def test_hf_download_then_offline_cache(tmp_path):
    www = tmp_path / "hub"
    models = {n: make.random_clip(a, seed=i) for i, (n, a) in enumerate(ENTRIES.items())}
    emb = torch.zeros(1, 64)
    make.write_hf_repo(www, "pallavijainpj/SenCLIP", {
        "README.md": b"# SenCLIP\n",
        "SenCLIP_AvgPool_ViTB32.ckpt": make.write_authors_ckpt(models["senclip-vit-b-32-avgpool"], tmp_path / "a.ckpt"),
        "SenCLIP_AttPoolPerImg_ViTB32.ckpt": make.write_authors_ckpt(models["senclip-vit-b-32-attpool"], tmp_path / "b.ckpt"),
        "SenCLIP_AvgPool_RN50.ckpt": make.write_authors_ckpt(models["senclip-rn50-avgpool"], tmp_path / "c.ckpt"),
        "LUCAS_CLIP_Frozen_Embeddings/lucas_clipemb_ViTB-32.pt": _pt({"DE_1234N": emb}, tmp_path / "e.pt"),
    })
    mixin = make.write_mixin(models["senclip-vit-b-32-avgpool-mvrl"], tmp_path / "mixin")
    make.write_hf_repo(www, "MVRL/senclip-ViT-B-32-avgpool", {"model.safetensors": mixin / "model.safetensors",
                                                              "config.json": mixin / "config.json"})
    make.write_hf_repo(www, "chendelong/RemoteCLIP", {
        "RemoteCLIP-RN50.pt": _pt(models["remoteclip-rn50"].state_dict(), tmp_path / "r.pt")})
    make.write_hf_repo(www, "Zilun/GeoRSCLIP", {
        "ckpt/RS5M_ViT-B-32.pt": _pt(models["georsclip-vit-b-32"].state_dict(), tmp_path / "g.pt")})
    torch.manual_seed(0)
    xs = {a: torch.randn(1, 3, 32, 32) for a in set(ENTRIES.values())}
    torch.save(xs, tmp_path / "x.pt")

    url, srv, handler = hub.serve(www)
    try:
        cache = tmp_path / "cache"
        online, t_online = _run({"HF_ENDPOINT": url, "SENCLIP_CACHE": str(cache)}, tmp_path, ENTRIES, "online")
        n_requests = len(handler.requests_seen)
        offline, t_offline = _run({"HF_ENDPOINT": url, "SENCLIP_CACHE": str(cache), "HF_HUB_OFFLINE": "1"},
                                  tmp_path, ENTRIES, "offline")
        assert len(handler.requests_seen) == n_requests  # offline: served from the cache, nothing asked
    finally:
        srv.shutdown()
        srv.server_close()
    for name, arch in ENTRIES.items():
        m = models[name]
        with torch.no_grad():
            ref_img = m.encode_image(xs[arch])
        for res in (online, offline):
            assert isinstance(res[name], dict), res[name]
            torch.testing.assert_close(res[name]["image"], ref_img, rtol=0, atol=1e-6)
        assert tuple(online[name]["mean"].tolist()) == pytest.approx(CHECKPOINTS[name].mean)
    # the download really went through the hub endpoints, to senclip's cache
    paths = [p for _, p in handler.requests_seen]
    assert any(p.startswith("/api/models/pallavijainpj/SenCLIP/tree/") for p in paths)
    assert any(p.endswith("/resolve/main/SenCLIP_AttPoolPerImg_ViTB32.ckpt") for p in paths)
    assert not any("lucas_clipemb" in p for p in paths if "/resolve/" in p)
    assert list((cache / "hf").glob("models--pallavijainpj--SenCLIP/snapshots/*/SenCLIP_AvgPool_RN50.ckpt"))



def test_offline_without_cache_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SENCLIP_CACHE", str(tmp_path / "empty"))
    for name in ("senclip-vit-b-32-avgpool", "senclip-rn50-avgpool-mvrl", "georsclip-vit-b-32", "skyclip-50"):
        t = time.time()
        with pytest.raises(OfflineError, match="downloads are disabled"):
            load(name)
        assert time.time() - t < 5


def _pt(obj, path):
    torch.save(obj, path)
    return path


def test_skyclip_zip_over_http(http_server, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("SENCLIP_CACHE", str(tmp_path / "cache"))
    url, www, _ = http_server
    src = make.random_clip("senclip-tiny-vit", seed=7)
    make.write_skyclip_zip(src, www / "SkyCLIP_ViT_B32_top50pct.zip")
    sky = CHECKPOINTS["skyclip-50"]
    ck = register_checkpoint(Checkpoint("skyclip-test", "senclip-tiny-vit", "url", files=sky.files,
                                        url=f"{url}/SkyCLIP_ViT_B32_top50pct.zip", norm=sky.norm))
    try:
        path = fetch_checkpoint(ck)
        assert path.name == "epoch_20.pt"
        zs = load("skyclip-test")
        _assert_same_weights(src, zs.model)
        assert zs.mean == CLIP_MEAN
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # cached: no network needed any more
        _assert_same_weights(src, load("skyclip-test").model)
    finally:
        CHECKPOINTS.pop("skyclip-test")


def test_torchscript_archive(tmp_path):
    "OpenAI's original .pt files are TorchScript archives: read without running their code, exact weights."
    import warnings

    src = make.random_clip("senclip-tiny-vit", seed=3)
    x, t = torch.randn(1, 3, 32, 32), torch.randint(0, 49407, (1, 77))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(src, (x, t), strict=False, check_trace=False)
    traced.save(str(tmp_path / "ViT-tiny.pt"))
    zs = load(tmp_path / "ViT-tiny.pt", norm="clip")
    _assert_same_weights(src, zs.model)


@pytest.mark.slow  # two fresh interpreters: make test-slow
def test_random_weights_are_the_same_in_every_process():
    "An untrained baseline (`senclip.load` of a random-weights name) is one fixed model: demo tables repeat run to run."
    code = ("import torch, senclip, hashlib; torch.manual_seed(123); m = senclip.load('senclip-tiny-vit'); "
            "print(hashlib.sha256(b''.join(t.numpy().tobytes() for t in m.state_dict().values())).hexdigest(), "
            "torch.rand(1).item())")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.split()
            for _ in range(2)]
    assert runs[0][0] == runs[1][0]  # the same weights in two processes
    torch.manual_seed(123)
    assert float(runs[0][1]) == torch.rand(1).item()  # and the caller's random stream is left as it was


@pytest.mark.slow  # over ~3 s on 2 cores (a subprocess starting torch): make test-slow
def test_loading_a_file_is_silent_and_backbones_load_through_checkpoints(tmp_path):
    """A checkpoint is built on the meta device through core.create_model: open_clip's 'No pretrained weights loaded'
    line (meant for random init) is not printed; build_senclip's backbone comes from the same loader."""
    from senclip.core import create_model

    torch.save(create_model("senclip-tiny-rn").state_dict(), tmp_path / "rn.pt")
    code = textwrap.dedent(f"""
        import logging
        logging.basicConfig(level=logging.WARNING)
        from senclip.checkpoints import load
        from senclip.core import get_preset
        from senclip.model import build_senclip
        zs = load({str(tmp_path / 'rn.pt')!r}, norm="senclip")
        m = build_senclip(get_preset("tiny", arch="senclip-tiny-rn", pretrained={str(tmp_path / 'rn.pt')!r}))
        print("archs", zs.arch, m.arch)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "archs senclip-tiny-rn senclip-tiny-rn" in out.stdout
    assert "No pretrained weights" not in out.stderr, out.stderr
