"""Benchmark datasets on real data: the full EuroSAT folder (when ../shared/data is present), the bundled sample,
the 6 real BigEarthNet v1 patches (labels and band order checked independently), bad files, and the EuroSAT
download path against a real HTTP server on 127.0.0.1."""
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch.utils.data import DataLoader

from senclip.datasets import (BEN43_TO_19, BEN19_CLASSES, BEN_AUTHORS_CONFIG, BEN_OFFICIAL_BANDS, BEN_SPLITS, BadSampleError, BigEarthNet,
                                EuroSAT, EUROSAT_COUNTS, LucasLandCover, SenclipDataset, collate_skip, download_eurosat,
                                make_lucas_fixture, official_subset)
from senclip.core import UserError, sample_dir

ROOT = Path(__file__).resolve().parent.parent
SHARED_EUROSAT = ROOT.parent / "shared" / "data" / "eurosat"


@pytest.mark.skipif(not (SHARED_EUROSAT / "2750").is_dir(), reason="the full EuroSAT copy (../shared/data) is not here")
def test_full_eurosat_folder():
    ds = EuroSAT(SHARED_EUROSAT)
    assert len(ds) == 27000
    assert ds.class_counts() == EUROSAT_COUNTS
    rng = np.random.default_rng(0)
    for i in rng.choice(len(ds), 200, replace=False):  # a random subset decodes as 64x64 RGB with the right label
        s = ds[int(i)]
        assert s["image"].shape == (3, 64, 64) and s["image"].dtype == torch.uint8
        assert Path(s["meta"]["path"]).parent.name == ds.classes[s["label"]]
    # the mirror's split file (CSV with a Filename column)
    split = SHARED_EUROSAT / "splits" / "test.csv"
    if split.exists():
        te = EuroSAT(SHARED_EUROSAT, split=split)
        assert len(te) == 2700 and te[0]["image"].shape == (3, 64, 64)


def test_sample_eurosat_matches_folder():
    ds = EuroSAT(sample_dir("eurosat"))
    assert len(ds) == 200 and set(ds.class_counts().values()) == {20}
    from PIL import Image

    s = ds[57]
    ref = np.asarray(Image.open(s["meta"]["path"]).convert("RGB"))
    assert np.array_equal(s["image"].permute(1, 2, 0).numpy(), ref)


# the real labels of the 6 bundled patches (from their labels_metadata.json), mapped by hand to BigEarthNet-19
BEN_EXPECTED = {
    "S2A_MSIL2A_20170613T101031_87_48": ["Arable land", "Land principally occupied by agriculture, with significant areas of natural vegetation"],
    "S2A_MSIL2A_20170617T113321_36_85": ["Arable land", "Pastures"],
    "S2A_MSIL2A_20170617T113321_4_55": ["Pastures"],
    "S2A_MSIL2A_20171221T112501_56_35": ["Complex cultivation patterns", "Land principally occupied by agriculture, with significant areas of natural vegetation", "Broad-leaved forest", "Transitional woodland, shrub"],
    "S2B_MSIL2A_20170924T93020_69_24": ["Coniferous forest", "Mixed forest", "Transitional woodland, shrub", "Inland wetlands", "Inland waters"],
    "S2B_MSIL2A_20180204T94161_57_38": ["Arable land", "Coniferous forest", "Mixed forest"],
}


def test_bigearthnet_labels_19():
    ds = BigEarthNet(sample_dir("bigearthnet"), split="all")
    assert sorted(ds.patches) == sorted(BEN_EXPECTED)
    for i, name in enumerate(ds.patches):
        got = [BEN19_CLASSES[j] for j in ds[i]["label"].nonzero().flatten().tolist()]
        assert got == BEN_EXPECTED[name], name


def test_bigearthnet_mapping_table():
    assert len(BEN43_TO_19) == 43
    dropped = sorted(k for k, v in BEN43_TO_19.items() if v is None)
    assert dropped == sorted(["Road and rail networks and associated land", "Port areas", "Airports",
                              "Mineral extraction sites", "Dump sites", "Construction sites", "Green urban areas",
                              "Sport and leisure facilities", "Bare rock", "Burnt areas", "Intertidal flats"])
    assert set(v for v in BEN43_TO_19.values() if v) == set(BEN19_CLASSES)


def _stretch(x):
    "cv2.normalize(x, None, 0, 255, NORM_MINMAX) in float64, then np.uint8 (the authors' stretch)."
    x = x.astype(np.float64)
    scale = 255.0 / (x.max() - x.min())
    return np.clip(x * scale - x.min() * scale, 0, 255).astype(np.uint8)


def test_bigearthnet_rgb_order_band_by_band():
    root = sample_dir("bigearthnet")
    ds = BigEarthNet(root, split="all")
    off = BigEarthNet(root, split="all", bands=BEN_OFFICIAL_BANDS)
    for i, name in enumerate(ds.patches):
        bands = {}
        for b in ("B02", "B03", "B04"):
            with rasterio.open(root / name / f"{name}_{b}.tif") as src:
                bands[b] = src.read(1)
        rgb = _stretch(np.stack([bands["B04"], bands["B03"], bands["B02"]]))
        bgr = _stretch(np.stack([bands["B02"], bands["B03"], bands["B04"]]))
        assert np.array_equal(ds[i]["image"].numpy(), rgb), name
        assert np.array_equal(off[i]["image"].numpy(), bgr), name


def test_bigearthnet_subset_and_split(tmp_path):
    root = sample_dir("bigearthnet")
    sub = BigEarthNet(root, split="all", subset=4, seed=42)
    all_ = BigEarthNet(root, split="all")
    assert sub.patches == [all_.patches[i] for i in official_subset(6, 4, 42)]
    # the authors' subset is torch.utils.data.random_split after torch.manual_seed(42)
    torch.manual_seed(42)
    a, _ = torch.utils.data.random_split(list(range(6)), [4, 2])
    assert list(a.indices) == official_subset(6, 4, 42)
    (tmp_path / "test.csv").write_text("S2B_MSIL2A_20170924T93020_69_24,S1x\nS2A_MSIL2A_20170617T113321_4_55,S1y\n")
    assert BigEarthNet(root, split=tmp_path / "test.csv").patches == ["S2B_MSIL2A_20170924T93020_69_24", "S2A_MSIL2A_20170617T113321_4_55"]


def test_bad_files(tmp_path):
    # a truncated JPEG: a clear error, or a counted skip
    d = tmp_path / "eu" / "2750" / "River"
    shutil.copytree(sample_dir("eurosat", "2750", "River"), d)
    f = sorted(d.glob("*.jpg"))[3]
    f.write_bytes(f.read_bytes()[:200])
    strict = EuroSAT(tmp_path / "eu")
    i = strict.files.index(f"River/{f.name}")
    with pytest.raises(BadSampleError, match=f.name):
        strict[i]
    skip = EuroSAT(tmp_path / "eu", on_error="skip")
    batches = list(DataLoader(skip, batch_size=8, collate_fn=collate_skip))
    assert sum(b["skipped"] for b in batches) == 1 and sum(len(b["label"]) for b in batches) == 19
    # the skipped file is named, with the reason, on the dataset (so an evaluation can write it out)
    assert [(s["index"], s["path"]) for s in skip.skipped] == [(i, str(f))]
    assert "can't decode" in skip.skipped[0]["reason"]
    # through the embedding path, the skipped image is flagged and excluded
    from senclip.zeroshot.classify import embed_images, load_model

    ds = EuroSAT(tmp_path / "eu", on_error="skip")
    E = embed_images(load_model("senclip-tiny-vit"), ds, cache=False, progress=False)
    assert E.skipped == 1 and not E.valid[i] and len(E.good()[0]) == 19
    assert [s["path"] for s in ds.skipped] == [str(f)]
    # named from the valid mask too, when the skip happened elsewhere (a DataLoader worker, a cached run)
    assert [s["path"] for s in EuroSAT(tmp_path / "eu", on_error="skip").skipped_files(E.valid.numpy())] == [str(f)]
    # a patch missing a band
    ben = tmp_path / "ben"
    shutil.copytree(sample_dir("bigearthnet"), ben)
    name = "S2A_MSIL2A_20170617T113321_4_55"
    (ben / name / f"{name}_B03.tif").unlink()
    ds = BigEarthNet(ben, split="all")
    k = ds.patches.index(name)
    with pytest.raises(BadSampleError, match="band B03 missing"):
        ds[k]
    skip = BigEarthNet(ben, split="all", on_error="skip")
    assert skip[k] is None
    assert skip.skipped == [{"index": k, "path": str(ben / name), "reason": skip.skipped[0]["reason"]}]
    assert "band B03 missing" in skip.skipped[0]["reason"]
    # a corrupt band file
    (ben / name / f"{name}_B03.tif").write_bytes(b"not a tiff")
    with pytest.raises(BadSampleError, match="can't read band B03"):
        BigEarthNet(ben, split="all")[k]


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("SENCLIP_OFFLINE", raising=False)


def _eurosat_zip(path: Path) -> bytes:
    "A small archive in the official layout (2750/<Class>/*.jpg), made from the sample."
    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(sample_dir("eurosat", "2750").glob("*/*.jpg"))[::10]:
            z.write(f, f"2750/{f.parent.name}/{f.name}")
    return path.read_bytes()


def test_download_eurosat(http_server, tmp_path, online):
    url, www, _ = http_server
    data = _eurosat_zip(www / "EuroSAT.zip")
    md5 = hashlib.md5(data).hexdigest()
    root = download_eurosat(tmp_path / "data", source=f"{url}/EuroSAT.zip", sha256=hashlib.sha256(data).hexdigest(), md5=md5)
    assert root == tmp_path / "data" / "2750"
    ds = EuroSAT(tmp_path / "data")
    assert len(ds) == 20 and ds[0]["image"].shape == (3, 64, 64)
    # already there: no second download
    assert download_eurosat(tmp_path / "data", source=f"{url}/missing.zip") == root
    # a wrong md5 is rejected and the file moved aside
    with pytest.raises(RuntimeError, match="md5"):
        download_eurosat(tmp_path / "other", source=f"{url}/EuroSAT.zip", md5="0" * 32)
    assert not (tmp_path / "other" / "2750").exists()


def test_download_eurosat_offline(tmp_path, monkeypatch):
    from senclip.core import OfflineError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError):
        EuroSAT(tmp_path / "none", download=True)


def test_lucas_skipped_files_are_named(tmp_path):
    man = make_lucas_fixture(tmp_path, n=4)
    bad = tmp_path / "patches" / "00000002.tif"
    bad.write_bytes(b"not a tiff")
    ds = LucasLandCover(man, on_error="skip")
    assert [ds[i] is None for i in range(4)] == [False, False, True, False]
    assert [(s["index"], s["path"]) for s in ds.skipped] == [(2, str(bad))]


def test_every_dataset_shares_the_base_interface(tmp_path):
    "One base class: callers ask the dataset (benchmark, classes, source, fingerprint, skipped_files, plot), never its name or attributes."
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [EuroSAT(sample_dir("eurosat")), BigEarthNet(sample_dir("bigearthnet"), split="all"),
                LucasLandCover(make_lucas_fixture(tmp_path, n=8))]
    assert [d.benchmark for d in datasets] == ["eurosat", "bigearthnet19", "lucas-lc1"]
    assert [d.multilabel for d in datasets] == [False, True, False]
    for d in datasets:
        assert isinstance(d, SenclipDataset) and d.on_error == "raise" and d.skipped == []
        assert len(d.classes) == len(d.classnames) > 1
        assert Path(d.source(0)).exists()
        assert len(d.fingerprint()) == 16 and d.fingerprint() == d.fingerprint()
        assert d.skipped_files() == [] and d.skipped_files(np.ones(len(d), bool)) == []
        s = d[0]
        assert s["image"].dtype == torch.uint8 and s["image"].shape[0] == 3
        ax = d.plot(s, prediction=s["label"])
        assert d.label_text(s["label"]) in ax.get_title() and "pred:" in ax.get_title()
        plt.close("all")
    with pytest.raises(ValueError, match="'raise' or 'skip'"):
        EuroSAT(sample_dir("eurosat"), on_error="warn")


# ---- BigEarthNet: the official test split by default, and the authors' subset --------------------------------------
SAMPLE_NAMES = sorted(BEN_EXPECTED)


def _split_rows(names):
    "torchgeo's split-list format: '<S2 patch>,<S1 patch>' per row, no header (S1 names made up in the real pattern)."
    return "".join(f"{n},S1A_IW_GRDH_1SDV_20170613T165043_33UUP_{'_'.join(n.split('_')[-2:])}\n" for n in names)


@pytest.fixture
def ben_split_server(http_server, monkeypatch, tmp_path, online):
    "Serves a format-faithful bigearthnet-test.csv (4 of the 6 sample patches, in a non-sorted order) from 127.0.0.1."
    url, www, handler = http_server
    names = [SAMPLE_NAMES[4], SAMPLE_NAMES[1], SAMPLE_NAMES[5], SAMPLE_NAMES[0]]
    data = _split_rows(names).encode()
    (www / "test.csv").write_bytes(data)
    monkeypatch.setitem(BEN_SPLITS, "test", {"url": f"{url}/test.csv", "filename": "bigearthnet-test.csv",
                                             "md5": hashlib.md5(data).hexdigest()})
    monkeypatch.setenv("SENCLIP_CACHE", str(tmp_path / "cache"))
    return names, handler


def test_bigearthnet_defaults_to_official_test_split(ben_split_server, tmp_path, monkeypatch):
    names, handler = ben_split_server
    ds = BigEarthNet(sample_dir("bigearthnet"))  # no split: the official test list, downloaded and cached
    assert ds.patches == names  # only the listed patches, in the list's order (torchgeo's indices)
    assert ds.protocol["split"] == "test" and ds.protocol["split_length"] == 4
    cached = tmp_path / "cache" / "bigearthnet" / "bigearthnet-test.csv"
    assert ds.split_file == cached and cached.is_file()
    # later runs use the cached copy, offline too
    monkeypatch.setenv("SENCLIP_OFFLINE", "1")
    n_requests = len(handler.requests_seen)
    assert BigEarthNet(sample_dir("bigearthnet")).patches == names
    assert len(handler.requests_seen) == n_requests
    # a damaged cached copy is fetched again
    monkeypatch.delenv("SENCLIP_OFFLINE")
    cached.write_text("garbage\n")
    assert BigEarthNet(sample_dir("bigearthnet")).patches == names
    assert len(handler.requests_seen) == n_requests + 1
    # the whole archive only on request
    assert len(BigEarthNet(sample_dir("bigearthnet"), split="all")) == 6


def test_bigearthnet_split_checksum(ben_split_server, http_server, tmp_path, monkeypatch):
    url, www, _ = http_server
    (www / "test.csv").write_text(_split_rows(SAMPLE_NAMES))  # not the file whose md5 is expected
    with pytest.raises(UserError, match="md5"):
        BigEarthNet(sample_dir("bigearthnet"))
    assert not (tmp_path / "cache" / "bigearthnet" / "bigearthnet-test.csv").exists()


def test_bigearthnet_split_beside_root(tmp_path, monkeypatch):
    "torchgeo's layout: <root>/bigearthnet-test.csv next to <root>/BigEarthNet-v1.0/<patch>/ (no download needed)."
    monkeypatch.setenv("SENCLIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SENCLIP_OFFLINE", "1")
    root = tmp_path / "BigEarthNet-v1.0"
    shutil.copytree(sample_dir("bigearthnet"), root)
    data = _split_rows(SAMPLE_NAMES[:3]).encode()
    (tmp_path / "bigearthnet-test.csv").write_bytes(data)
    monkeypatch.setitem(BEN_SPLITS, "test", dict(BEN_SPLITS["test"], md5=hashlib.md5(data).hexdigest()))
    assert BigEarthNet(root).patches == SAMPLE_NAMES[:3]


def test_bigearthnet_offline_refuses(tmp_path, monkeypatch):
    monkeypatch.setenv("SENCLIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SENCLIP_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        BigEarthNet(sample_dir("bigearthnet"))
    msg = str(e.value)
    assert "bigearthnet-test.csv" in msg and "split='all'" in msg and "split='<path" in msg
    with pytest.raises(UserError, match="neither one of"):
        BigEarthNet(sample_dir("bigearthnet"), split="tset")


N_TEST = 125_866  # rows of torchgeo's bigearthnet-test.csv (BigEarthNet v1 test split)


def test_official_subset_is_random_split():
    "The authors: set_seed(42) (torch.manual_seed) then random_split(dataset, [27000, rest]) with the default generator."
    a, _ = torch.utils.data.random_split(range(N_TEST), [27000, N_TEST - 27000], generator=torch.Generator().manual_seed(42))
    assert official_subset(N_TEST, 27000, 42) == list(a.indices)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(42)
        b, _ = torch.utils.data.random_split(range(N_TEST), [27000, N_TEST - 27000])
    finally:
        torch.random.set_rng_state(state)
    assert list(b.indices) == list(a.indices)
    kept = official_subset(N_TEST, 27000, 42, batch_size=32)  # DataLoader(batch_size=32, drop_last=True)
    assert len(kept) == 26_976 == 27000 // 32 * 32 and kept == list(a.indices)[:26_976]


def test_bigearthnet_authors_subset(tmp_path, monkeypatch):
    """A test list of the real length holding the 6 sample patches among made-up names: subset=27000, seed=42,
    drop_last=True keeps 26,976 patches at random_split's indices; drop_unlabelled leaves the other indices alone."""
    monkeypatch.setenv("SENCLIP_CACHE", str(tmp_path / "cache"))
    drawn = official_subset(N_TEST, 27000, 42)
    root = tmp_path / "BigEarthNet-v1.0"
    shutil.copytree(sample_dir("bigearthnet"), root)
    names = [f"S2A_MSIL2A_20170701T000000_{i // 1000}_{i % 1000}" for i in range(N_TEST)]
    for k, n in zip(drawn[:6], SAMPLE_NAMES):  # real patches at drawn positions
        names[k] = n
    for k in drawn[10:13]:  # three drawn patches with no 19-class label (only dropped CORINE classes)
        (root / names[k]).mkdir()
        (root / names[k] / f"{names[k]}_labels_metadata.json").write_text(json.dumps({"labels": ["Port areas"]}))
    split = tmp_path / "bigearthnet-test.csv"
    split.write_text(_split_rows(names))
    cfg = dict(BEN_AUTHORS_CONFIG, split=split)  # the authors' configuration on this list
    with pytest.warns(UserWarning, match="3 of the 26976 selected patches have no 19-class label"):
        ds = BigEarthNet(root, **cfg)
    kept = [k for k in drawn[:26_976] if k not in drawn[10:13]]
    assert ds.indices == kept and ds.patches == [names[k] for k in kept]
    assert ds.dropped == [names[k] for k in drawn[10:13]]
    assert len(ds) == 26_976 - 3
    assert ds.protocol["drop_last"] and ds.protocol["unlabelled_dropped"] == 3
    assert ds.patches[:6] == SAMPLE_NAMES and ds[0]["label"].sum() > 0  # real patches read at their drawn place
    # without drop_unlabelled the draw is the same, nothing left out
    with pytest.warns(UserWarning, match="not in"):
        full = BigEarthNet(root, split=split, subset=27000, seed=42, drop_last=True, drop_unlabelled=False)
    assert full.indices == drawn[:26_976]
