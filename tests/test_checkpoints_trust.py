"""Issue 10, checkpoints: a TorchScript archive is read without running its code (OpenAI's format bit-identical,
code in `__setstate__` never run unless the file is trusted), the `clip` package's architecture names mean its
QuickGELU models, truncated files fail with a message that names them, and `dir(senclip)` lists what it offers.
Fixtures are built here with the real writers (torch.jit.trace/script + save, torch.save, safetensors) from the
seeded models of tests/data/checkpoints/make.py."""
import hashlib
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Tuple

import pytest
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "data" / "checkpoints"))
import make  # noqa: E402

import senclip  # noqa: E402
from senclip.checkpoints import (CLIP_ARCHS, TRUSTED_TORCHSCRIPT, ArchitectureWarning,  # noqa: E402
                                 CorruptCheckpointError, UnsafeCheckpointError, export_safetensors, load,
                                 read_checkpoint, read_torchscript, resolve_arch)
from senclip.core import UserError  # noqa: E402


class Payload(nn.Module):
    "A TorchScript module whose `__setstate__` (run by torch.jit.load) writes a file before restoring its tensors."

    def __init__(self, marker: str):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(2, 3))
        self.register_buffer("buf", torch.arange(4.0))
        self.marker = marker

    def forward(self, x):
        return x @ self.weight.t()

    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, torch.Tensor, str, bool]:
        return (self.weight, self.buf, self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, torch.Tensor, str, bool]) -> None:
        torch.save(state[1], state[2])  # any side effect: this one writes a file
        self.weight = state[0]
        self.buf = state[1]
        self.marker = state[2]
        self.training = state[3]


def _payload_archive(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "MARKER"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(Payload(str(marker))).save(str(tmp_path / "model.pt"))
    assert not marker.exists()
    return tmp_path / "model.pt", marker


def _jit_state_dict(path) -> dict:
    "The oracle: what torch.jit.load gives (only ever called here on archives this test wrote)."
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dict(torch.jit.load(str(path), map_location="cpu").state_dict())


def test_torchscript_code_never_runs_unless_trusted(tmp_path):
    path, marker = _payload_archive(tmp_path)
    for how, call in (("read_checkpoint", lambda: read_checkpoint(path)), ("senclip.load", lambda: senclip.load(path))):
        with pytest.raises(UnsafeCheckpointError) as e:
            call()
        assert not marker.exists(), f"{how} ran the archive's __setstate__"
        msg = str(e.value)
        assert str(path) in msg and "__setstate__" in msg, msg
        assert "trust_torchscript=True" in msg and "torch.jit.load(" in msg and "state_dict()" in msg, msg  # the fix
        assert isinstance(e.value, UserError)  # console commands print it as one line
    # trusted by the caller: torch.jit.load runs (and so does the file's code), the tensors come out
    sd, meta = read_checkpoint(path, trust_torchscript=True)
    assert marker.exists() and meta["reader"] == "torch.jit.load"
    marker.unlink()
    assert list(sd) == ["weight", "buf"] and torch.equal(sd["buf"], torch.arange(4.0))
    # trusted by its sha256 (OpenAI's published files are registered; here the test registers this one)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    TRUSTED_TORCHSCRIPT[sha] = "test archive"
    try:
        sd2, meta = read_checkpoint(path)
    finally:
        TRUSTED_TORCHSCRIPT.pop(sha)
    assert meta["reader"] == "torch.jit.load" and torch.equal(sd2["weight"], sd["weight"])
    for name, sha in (("ViT-B/32", "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"),
                      ("RN50", "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762")):
        assert name in TRUSTED_TORCHSCRIPT[sha]


def _openai_archive(arch: str, path: Path, seed: int = 1):
    """An archive in the format of OpenAI's released ViT-B-32.pt / RN50.pt: the clip-layout model with OpenAI's fp16
    conversion (convert_weights) and the input_resolution/context_length/vocab_size tensors, traced and saved."""
    import open_clip

    src = make.random_clip(arch, seed=seed)
    open_clip.model.convert_weights_to_lp(src, torch.float16)  # = clip.model.convert_weights
    size = src.visual.image_size
    for k, v in (("input_resolution", size[0] if isinstance(size, tuple) else size), ("context_length", 77),
                 ("vocab_size", 49408)):
        if k in vars(src):  # open_clip keeps two of them as plain ints (unused by forward)
            delattr(src, k)
        src.register_buffer(k, torch.tensor(v))
    x, t = torch.randn(1, 3, 224, 224, dtype=torch.float16), torch.randint(0, 49407, (1, 77))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(src, (x, t), strict=False, check_trace=False).save(str(path))
    return src


@pytest.mark.slow  # over ~10 s on 2 cores: make test-slow (CI runs it)
@pytest.mark.parametrize("clip_name", ["ViT-B/32", pytest.param("RN50", marks=pytest.mark.slow)])
def test_openai_torchscript_read_safely_bit_identical(clip_name, tmp_path, monkeypatch):
    arch = make.ARCH_OF[clip_name]
    path = tmp_path / (clip_name.replace("/", "-") + ".pt")
    src = _openai_archive(arch, path)
    ref = _jit_state_dict(path)
    assert {k: list(v.shape) for k, v in ref.items() if k not in ("input_resolution", "context_length", "vocab_size",
                                                                   "attn_mask")} == make.CLIP_KEYS[clip_name]
    assert ref["visual.conv1.weight"].dtype == torch.float16  # OpenAI's mixed fp16/fp32 layout

    def refuse(*a, **k):
        raise AssertionError("torch.jit.load was called")

    monkeypatch.setattr(torch.jit, "load", refuse)
    sd = read_torchscript(path)  # the same state dict torch.jit.load gives: names, order, dtypes, values
    assert list(sd) == list(ref)
    assert all(sd[k].dtype == ref[k].dtype and torch.equal(sd[k], ref[k]) for k in ref)
    sd2, meta = read_checkpoint(path)
    assert meta == {"format": "torchscript", "reader": "restricted unpickler"} and sd2.keys() == sd.keys()
    zs = load(path, norm="clip")  # through senclip.load: exact fp32 weights, QuickGELU architecture
    assert zs.arch == arch
    want = {k: v.float() for k, v in src.state_dict().items()
            if k not in ("input_resolution", "context_length", "vocab_size")}
    got = zs.model.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_torchscript_unknown_global_is_refused(tmp_path):
    "A data.pkl that names any callable other than the tensor rebuilders is refused before anything is called."
    import pickle
    import zipfile

    src = tmp_path / "tiny.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(nn.Linear(2, 2)).save(str(src))
    marker = tmp_path / "MARKER2"

    class Evil:
        def __reduce__(self):
            return (os.makedirs, (str(marker),))

    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for n in zin.namelist():
            data = pickle.dumps(Evil(), protocol=2) if n.endswith("/data.pkl") else zin.read(n)
            zout.writestr(n, data)
    with pytest.raises(UnsafeCheckpointError, match="os.makedirs"):
        read_checkpoint(bad)
    assert not marker.exists()


@pytest.mark.slow  # over ~10 s on 2 cores: make test-slow (CI runs it)
def test_clip_names_mean_quickgelu(tmp_path):
    import open_clip

    from senclip.core import register_model_configs

    register_model_configs()
    for name, arch in CLIP_ARCHS.items():  # every clip package name -> an open_clip QuickGELU architecture
        assert resolve_arch(name) == arch and open_clip.get_model_config(arch).get("quick_gelu") is True, name
    assert resolve_arch("ViT-B-32") == "ViT-B-32" and resolve_arch(None) is None
    src = make.random_clip("ViT-B-32-quickgelu", seed=4)
    ckpt = make.write_authors_ckpt(src, tmp_path / "SenCLIP_AvgPool_ViTB32.ckpt")
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = src.encode_image(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ArchitectureWarning)
        zs = load(ckpt, arch="ViT-B/32")  # the authors' (and clip's) name
    assert zs.arch == "ViT-B-32-quickgelu"
    with torch.no_grad():
        torch.testing.assert_close(zs.encode_image(x), ref, rtol=0, atol=1e-6)
    # plain GELU forced onto an OpenAI-format state dict: loads (the user asked), with a warning saying what differs
    with pytest.warns(ArchitectureWarning, match=r"plain GELU.*QuickGELU.*embedding"):
        zs = load(ckpt, arch="ViT-B-32")
    assert zs.arch == "ViT-B-32"
    with torch.no_grad():
        diff = (zs.encode_image(x) - ref).norm(dim=-1) / ref.norm(dim=-1)
    assert (diff > 1e-3).all()  # what the warning is about


@pytest.mark.slow  # over ~3.5 s on a slow 2-core machine (torch imports in 4 s): make test-slow (CI runs it)
def test_rn50_clip_name(tmp_path):
    src = make.random_clip("RN50-quickgelu", seed=5)
    ckpt = make.write_authors_ckpt(src, tmp_path / "SenCLIP_AvgPool_RN50.ckpt")
    zs = load(ckpt, arch="RN50")
    assert zs.arch == "RN50-quickgelu"
    tokens = zs.tokenizer(["a field of wheat"])
    with torch.no_grad():
        torch.testing.assert_close(zs.encode_text(tokens), src.encode_text(tokens), rtol=0, atol=1e-6)


def test_truncated_files_name_the_file(tmp_path):
    src = make.random_clip("senclip-tiny-vit", seed=6)
    files = {
        "safetensors": export_safetensors(src, tmp_path / "ok" / "model.safetensors", arch="senclip-tiny-vit"),
        "authors": make.write_authors_ckpt(src, tmp_path / "ok" / "SenCLIP_AvgPool.ckpt"),
        "legacy": tmp_path / "ok" / "legacy.pt",
        "torchscript": tmp_path / "ok" / "ViT-tiny.pt",
    }
    torch.save(src.state_dict(), files["legacy"], _use_new_zipfile_serialization=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(src, (torch.randn(1, 3, 32, 32), torch.randint(0, 49407, (1, 77))), strict=False,
                        check_trace=False).save(str(files["torchscript"]))
    (tmp_path / "cut").mkdir()
    for kind, good in files.items():
        load(good, norm="clip")  # the whole file loads
        data = good.read_bytes()
        for frac in (0.5, 0.99):
            bad = tmp_path / "cut" / good.name
            bad.write_bytes(data[: int(len(data) * frac)])
            with pytest.raises(CorruptCheckpointError) as e:
                load(bad, norm="clip")
            msg = str(e.value)
            assert str(bad) in msg and "truncated or corrupt" in msg and "download" in msg, (kind, msg)
            assert isinstance(e.value, UserError)
    # damaged inside (a stored record of the archive no longer matches its CRC)
    data = bytearray(files["torchscript"].read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    bad = tmp_path / "cut" / "damaged.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="damaged.pt.*truncated or corrupt"):
        load(bad, norm="clip")


@pytest.mark.slow  # over ~3.5 s on a slow 2-core machine (torch imports in 4 s): make test-slow (CI runs it)
def test_dir_senclip_lists_what_resolves():
    code = ("import sys, senclip\n"
            "names = dir(senclip)\n"
            "assert 'torch' not in sys.modules, 'dir() imported torch'\n"
            "missing = {'load', 'get_preset', 'Preset', 'PRESETS', 'list_checkpoints', 'read_checkpoint'} - set(names)\n"
            "assert not missing, missing\n"
            "for n in names:\n"
            "    getattr(senclip, n)\n"
            "assert senclip.load is senclip.checkpoints.load and callable(senclip.list_checkpoints)\n"
            "print(len(names))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
