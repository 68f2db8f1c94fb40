"""Issue 13, item 4: JPEG decoding on the device (`embed_images(decode='device')`, nvjpeg on CUDA).

On the CPU, `decode='device'` runs the same code as on a GPU with torchvision's libjpeg decoder in place of nvjpeg:
the dataset hands out the files' bytes (`EuroSAT(decode=False)`), a batch is decoded by
`torchvision.io.decode_jpeg(list, device=...)` and resized on the device with `resize_like_pil`. Here the pixels and
the embeddings are checked EQUAL (no tolerance) to the host path (PIL decode + PIL bicubic resize): torchvision's
libjpeg and Pillow's give the same pixels on the sample JPEGs, and resize_like_pil is PIL's resize to the bit.
nvjpeg (another IDCT) is checked within a tolerance by tests/gpu_check_eval.py on a GPU."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, features
from torchvision.io import ImageReadMode, decode_jpeg

from senclip.core import UserError, sample_dir
from senclip.datasets import BadSampleError, BigEarthNet, EuroSAT, decode_image, read_jpeg_bytes
from senclip.zeroshot.classify import embed_images, embedding_key, load_model, resolve_decode


@pytest.fixture(scope="module")
def model():
    return load_model("senclip-tiny-vit")


@pytest.fixture(scope="module")
def eurosat():
    return EuroSAT(sample_dir("eurosat"))


def test_decoded_pixels_equal_pils(eurosat):
    "torchvision's CPU decoder (libjpeg-turbo bundled with torchvision) gives Pillow's pixels on every sample JPEG."
    paths = [eurosat.source(i) for i in range(len(eurosat))]
    got = decode_jpeg([read_jpeg_bytes(p) for p in paths], device="cpu", mode=ImageReadMode.RGB)
    differ = [p for p, g in zip(paths, got) if not torch.equal(g, decode_image(p))]
    assert not differ, (f"{len(differ)} of {len(paths)} JPEGs decode differently in torchvision and Pillow "
                        f"(Pillow's libjpeg {features.version('jpg')}): {differ[:3]}")


def test_device_decode_equals_host(model, eurosat):
    "Same embeddings, labels and validity as the host path, for PIL's resize and torch's; same cache entry."
    for resize in ("pil", "torch"):
        host = embed_images(model, eurosat, batch_size=48, cache=False, progress=False, resize=resize, decode="host")
        dev = embed_images(model, eurosat, batch_size=48, cache=False, progress=False, resize=resize, decode="device")
        assert torch.equal(dev.emb, host.emb), (resize, (dev.emb - host.emb).abs().max())
        assert torch.equal(dev.labels, host.labels) and torch.equal(dev.valid, host.valid)
        assert dev.key == host.key  # CPU decoding gives PIL's pixels: it shares the host's cache entry
    assert eurosat.decode and eurosat.transform is None  # the dataset is left as it was


def test_cache_key_names_nvjpeg_only(model, eurosat):
    "The decoder enters the key only where its pixels may differ from PIL's (nvjpeg on CUDA)."
    args = (model, eurosat, 32, "pil", "fp32", model.mean, model.std)
    k, parts = embedding_key(*args)
    assert "decoder" not in parts
    k2, parts2 = embedding_key(*args, decoder="nvjpeg")
    assert k2 != k and parts2["decoder"] == "nvjpeg"


def test_auto_is_host_on_cpu(eurosat):
    "'auto' decodes on the device only on CUDA and only for datasets that can hand out JPEG bytes."
    assert resolve_decode("auto", eurosat, "cpu") == "host"
    assert resolve_decode("auto", eurosat, "cuda:0") == "device"
    ben = BigEarthNet(sample_dir("bigearthnet"), split="all")
    assert resolve_decode("auto", ben, "cuda") == "host"
    with pytest.raises(UserError, match="use decode='host'"):
        resolve_decode("device", ben, "cpu")
    with_tf = EuroSAT(sample_dir("eurosat"), transform=lambda x: x)
    assert resolve_decode("auto", with_tf, "cuda") == "host"
    with pytest.raises(ValueError, match="decode must be one of"):
        resolve_decode("gpu", eurosat, "cpu")


def _broken_copy(tmp_path):
    "Two EuroSAT classes with three bad files: truncated, garbage between JPEG markers, and trailing data (readable)."
    for c in ("Forest", "River"):
        shutil.copytree(sample_dir("eurosat", "2750", c), tmp_path / "2750" / c)
    files = sorted((tmp_path / "2750" / "Forest").glob("*.jpg"))
    files[0].write_bytes(files[0].read_bytes()[:300])  # truncated: no end-of-image marker
    files[1].write_bytes(b"\xff\xd8" + b"\x00\x11" * 200 + b"\xff\xd9")  # markers, nothing decodable between
    files[2].write_bytes(files[2].read_bytes() + b"trailing bytes")  # PIL and libjpeg both read it
    return files[:2]


def test_unreadable_jpeg_follows_on_error(model, tmp_path):
    "A bad file is raised with on_error='raise' and skipped with on_error='skip', as on the host: same mask, same names."
    bad = _broken_copy(tmp_path)
    with pytest.raises(BadSampleError, match="can't decode"):
        embed_images(model, EuroSAT(tmp_path), cache=False, progress=False, decode="device")
    with pytest.raises(BadSampleError, match="can't decode"):
        EuroSAT(tmp_path, decode=False)[0]  # the truncated one, caught when its bytes are read
    host_ds, dev_ds = EuroSAT(tmp_path, on_error="skip"), EuroSAT(tmp_path, on_error="skip")
    host = embed_images(model, host_ds, batch_size=16, cache=False, progress=False, decode="host")
    dev = embed_images(model, dev_ds, batch_size=16, cache=False, progress=False, decode="device")
    assert host.skipped == dev.skipped == 2
    assert torch.equal(host.valid, dev.valid) and torch.equal(host.emb, dev.emb)
    assert sorted(s["path"] for s in dev_ds.skipped) == sorted(map(str, bad))
    assert any("on cpu" in s["reason"] for s in dev_ds.skipped)  # the garbage one failed in the device decoder


def test_bytes_mode_refuses_other_files(tmp_path):
    "decode=False hands out JPEG bytes only: a folder with a PNG is a clear error at construction."
    shutil.copytree(sample_dir("eurosat", "2750", "Forest"), tmp_path / "2750" / "Forest")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "2750" / "Forest" / "x.png")
    with pytest.raises(ValueError, match="some files are not .jpg"):
        EuroSAT(tmp_path, decode=False)
    assert not EuroSAT(tmp_path).jpeg_files


def test_device_decode_with_loader_workers(model, eurosat):
    "Bytes packed per batch by collate_jpeg cross from worker processes; the embeddings stay the host path's."
    host = embed_images(model, eurosat, batch_size=64, cache=False, progress=False, decode="host")
    dev = embed_images(model, eurosat, batch_size=64, num_workers=2, cache=False, progress=False, decode="device")
    assert torch.equal(dev.emb, host.emb) and torch.equal(dev.labels, host.labels)
