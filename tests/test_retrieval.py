"""senclip.zeroshot.retrieval on the bundled sample pairs: the demo's frozen ground-embedding store and manifest."""
import numpy as np
import pandas as pd
import pytest
import torch

from senclip.core import get_preset
from senclip.embeddings import EmbeddingStore
from senclip.lucas import DIRECTIONS
from senclip.zeroshot.retrieval import (Gallery, class_view_weights, patch_gallery, patch_to_photos, photo_gallery,
                               photo_to_patches, point_gallery, read_pooling, retrieval_caveat, retrieve, search,
                               text_to_patches, view_weights)


@pytest.fixture(scope="module")
def sample():
    "(manifest path, store) of data/sample/pairs, embedded by the demo's frozen tower (built once into the cache)."
    from senclip.train import sample_pairs

    manifest, store = sample_pairs(get_preset("demo"))
    return manifest, EmbeddingStore.load(store)


def test_photo_gallery_ids_and_paths(sample):
    manifest, store = sample
    g = photo_gallery(store, manifest)
    assert len(g) == int(store.mask.sum()) == 213 and g.dim == store.dim
    # every item is the photo of its (point, direction), with that point's embedding row
    for r in g.items.sample(20, random_state=0).itertuples():
        assert r.photo.endswith(f"{r.id}{r.direction}.jpg")
        e, m = store[r.id]
        j = DIRECTIONS.index(r.direction)
        assert m[j]
        torch.testing.assert_close(g.emb[r.Index], torch.nn.functional.normalize(e[j].float(), dim=0))


def test_patch_equal_to_its_points_mean_finds_its_point_first(sample):
    """A patch embedded exactly at the mean of its own photos (what AvgPool trains towards) retrieves its own
    point first, for every point of the sample."""
    manifest, store = sample
    points = point_gallery(store, manifest)
    own = torch.stack([store[i][0][store[i][1]].float().mean(0) for i in points.items.id])
    patches = Gallery(own, pd.DataFrame({"kind": "patch", "id": points.items.id}))
    r = retrieve(patches, points, k=3)
    top = r[r["rank"] == 1]
    assert top["id"].tolist() == top["query_id"].tolist() == points.items.id.tolist()
    np.testing.assert_allclose(top.similarity, 1.0, atol=1e-5)
    assert set(points.items.columns) >= {"id", "n_views", "lc1", "lat", "lon", "path"}


def test_patch_equal_to_a_photo_ranks_that_photo_first(sample):
    manifest, store = sample
    photos = photo_gallery(store, manifest)
    rows = [0, 7, 100, 212]
    fake = Gallery(photos.emb[rows], pd.DataFrame({"kind": "patch", "id": photos.items.id[rows].tolist()}))
    r = patch_to_photos(fake, photos, k=2)
    top = r[r["rank"] == 1]
    assert top.position.tolist() == rows
    assert (top["id"] == top["query_id"]).all() and (top["direction"] == photos.items.direction[rows].to_numpy()).all()
    # leaving out the query's own point: k results, none of them from that point
    r2 = patch_to_photos(fake, photos, k=2, exclude_same_point=True)
    assert len(r2) == 8 and (r2["id"] != r2["query_id"]).all()


def test_query_returns_k_results_sorted_by_similarity(sample):
    manifest, store = sample
    photos = photo_gallery(store, manifest)
    points = point_gallery(store, manifest)
    q = photos.subset(range(10))
    r = photo_to_patches(q, points, k=5)
    assert len(r) == 50 and r.groupby("query").size().eq(5).all()
    assert r["rank"].tolist() == list(range(1, 6)) * 10
    for _, g in r.groupby("query"):
        assert g.similarity.is_monotonic_decreasing
    # the similarities are the cosines of the vectors named in the rows
    for row in r.sample(10, random_state=0).itertuples():
        cos = float(q.emb[row.query] @ points.emb[row.position])
        assert abs(cos - row.similarity) < 1e-5 and points.items.id[row.position] == row.id
    assert r.query_id.tolist() == np.repeat(q.items.id.to_numpy(), 5).tolist()


def test_search_shapes_ties_and_errors():
    s, i = search(torch.randn(4, 8), torch.randn(6, 8), k=3)
    assert s.shape == i.shape == (4, 3)
    s, i = search(torch.ones(1, 2), torch.ones(5, 2), k=5)  # all equal: the gallery's order (stable)
    assert i.tolist() == [[0, 1, 2, 3, 4]]
    assert search(torch.randn(2, 4), torch.randn(3, 4), k=10)[1].shape == (2, 3)
    with pytest.raises(ValueError, match="same D"):
        search(torch.randn(2, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="same CLIP space"):
        retrieve(Gallery(torch.randn(1, 4), pd.DataFrame({"id": ["a"]})), Gallery(torch.randn(1, 5), pd.DataFrame({"id": ["b"]})))


def test_text_and_pair_patches(sample):
    "text -> patches and photo -> patches with the demo's tiny model over the sample pair patches (embedded in memory)."
    from senclip.datasets import LucasLandCover
    from senclip.zeroshot.classify import embed_images, load_model

    manifest, store = sample
    model = load_model("senclip-tiny-vit")
    ds = LucasLandCover(manifest)
    patches = patch_gallery(embed_images(model, ds, cache=False, progress=False, device="cpu"), ds)
    assert len(patches) == len(ds) and {"path", "id", "label", "class"} <= set(patches.items.columns)
    assert patches.items.path[0].endswith(f"{patches.items.id[0]}.tif")
    r = text_to_patches(model, ["aerial view of a forest", "a lake"], patches, k=4)
    assert r.query_text.tolist() == ["aerial view of a forest"] * 4 + ["a lake"] * 4
    assert set(r["id"]) <= set(patches.items.id)
    assert retrieval_caveat(model, store).startswith("untrained")


def _ckpt(pooling: str):
    "A training-checkpoint dict as senclip.train writes it, for the tiny architecture with `pooling`."
    from senclip.model import build_senclip

    p = get_preset("tiny", pooling=pooling)
    torch.manual_seed(0)
    m = build_senclip(p)
    if pooling != "avg":
        torch.nn.init.normal_(m.pool.linear.weight, std=0.5)
    return dict(model=m.state_dict(), preset=p.to_dict(), step=1), m


@pytest.mark.parametrize("pooling", ["attn_image", "attn_dim"])
def test_view_weights_are_the_training_pool(sample, tmp_path, pooling):
    """The per-view weights read back from a training checkpoint pool the store's embeddings into exactly what the
    training module's GroundPool computes; missing views get 0, rows sum to 1."""
    from senclip.train_state import save_checkpoint

    manifest, store = sample
    ck, model = _ckpt(pooling)
    path = save_checkpoint(tmp_path / "last.pt", ck)
    kind, w = read_pooling(path)
    assert kind == pooling
    W = view_weights(store, kind, w)
    v = W[list(DIRECTIONS)].to_numpy()
    np.testing.assert_allclose(v.sum(1), 1, atol=1e-5)
    assert (v[~store.mask.numpy()] == 0).all()
    assert W["id"].tolist() == store.ids
    if pooling == "attn_image":  # one weight per view: pooling with them is GroundPool's output
        pooled = (torch.tensor(v, dtype=torch.float32).unsqueeze(-1) * store.embeddings.float()).sum(1)
        with torch.no_grad():
            torch.testing.assert_close(pooled, model.pool(store.embeddings.float(), store.mask), atol=1e-4, rtol=1e-4)
    t = class_view_weights(W, manifest)
    assert t.n_points.sum() == len(store) and all("(" in c for c in t["class"])
    np.testing.assert_allclose(t[list(DIRECTIONS)].sum(axis=1), 1, atol=1e-5)


def test_avg_pooling_is_uniform(sample):
    manifest, store = sample
    ck, _ = _ckpt("avg")
    kind, w = read_pooling(ck)
    assert kind == "avg" and w is None
    W = view_weights(store, kind, w)
    full = W[W.n_views == 4]
    np.testing.assert_allclose(full[list(DIRECTIONS)].to_numpy(), 0.25)
    three = W[W.n_views == 3].iloc[0]
    np.testing.assert_allclose(sorted(three[list(DIRECTIONS)].astype(float)), [0, 1 / 3, 1 / 3, 1 / 3], atol=1e-6)
    with pytest.raises(ValueError, match="needs the layer's weight"):
        view_weights(store, "attn_image")
