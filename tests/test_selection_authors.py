"""Prompt selection and the Fig. 2 sweep against the authors' code, written out by hand.

The authors' `zeroshot_eurosat_prompt_score.py` computes per-sentence logits `(image_features @ prompts)/2+1`
(N, P) with the sentences in class blocks, ranks them with `prompt_sim_rank` (columns normalised over sentences,
M = S S^T, class mean / global mean, `.view(C, n)`, `topk` / `argsort`), and scores each selection with
`result_log`: ensembled class embeddings, cos/2+1, divided by each class's mean over the images, top-1.
Here that is re-done step by step on the real EuroSAT sample with the tiny model and the shipped prompts."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from senclip.datasets import EuroSAT
from senclip.core import sample_dir
from senclip.zeroshot.prompts import DATASET_CLASSNAMES, get_prompts
from senclip.zeroshot.selection import AUTHORS_SWEEP, prompt_sweep, prompt_weights, select_prompts
from senclip.zeroshot.classify import PromptBank, embed_images, load_model


def authors_sim_rank(logits: torch.Tensor, C: int, n: int) -> torch.Tensor:
    "prompt_sim_rank(similarity_scores, None, n, C) of the authors' prompt_selection.py."
    S = logits.transpose(-1, 0).float()
    S = S / (S.sum(dim=0, keepdim=True) + 1e-6)
    M = S @ S.T
    mean_all = M.mean(dim=1)
    classes = torch.arange(C).repeat_interleave(n).long()
    mean_class = M.view(C, n, -1).mean(dim=1)[classes, torch.arange(classes.shape[0])]
    return (mean_class / (mean_all + 1e-6)).view(C, n)


def authors_top1(img, emb_by_class: list[torch.Tensor], labels) -> float:
    "zeroshot_classifier(stack_emb=True) + compute_logits + result_log of the authors' script (top-1, fraction)."
    W = []
    for e in emb_by_class:
        e = e / e.norm(dim=-1, keepdim=True)
        m = e.mean(dim=0)
        W.append(m / m.norm())
    logits = img @ torch.stack(W).T / 2 + 1
    logits = logits / (logits.mean(0, keepdim=True) + 1e-6)
    return (logits.argmax(1) == labels).float().mean().item()


def same_selection(ours: np.ndarray, theirs: np.ndarray, R: torch.Tensor, tol: float = 1e-6) -> bool:
    "Equal index sets, up to swaps between sentences whose authors' weights tie within `tol` (float rounding)."
    if np.array_equal(ours, theirs):
        return True
    r = R.flatten().numpy()
    a, b = np.setdiff1d(ours, theirs), np.setdiff1d(theirs, ours)
    return len(a) == len(b) and np.allclose(np.sort(r[a]), np.sort(r[b]), rtol=0, atol=tol)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    torch.set_num_threads(1)
    model = load_model("senclip-tiny-vit")
    E = embed_images(model, EuroSAT(sample_dir("eurosat")), cache=tmp_path_factory.mktemp("emb"), progress=False)
    names = DATASET_CLASSNAMES["eurosat"]
    bank = PromptBank.build(model, get_prompts("eurosat", "aerial", "short"), names)
    return E.emb.float(), E.labels, bank


def test_selected_prompts_equal_authors(sample):
    img, labels, bank = sample
    C = bank.n_classes
    n = len(bank.texts) // C
    assert (np.bincount(bank.cls) == n).all() and (np.diff(bank.cls) >= 0).all()  # class blocks, as their reshape needs
    R = authors_sim_rank(img @ bank.emb.T / 2 + 1, C, n)  # their logits: cos/2+1
    w = prompt_weights(bank, "alpha-beta-image", img)
    np.testing.assert_allclose(w.reshape(C, n), R.numpy(), rtol=1e-5)
    offset = n * torch.arange(C)[:, None]
    changed = 0
    for k in (1, 2, 5, 10, 15, 25):
        best = np.sort((R.topk(k, dim=1).indices + offset).flatten().numpy())
        worst = np.sort((R.argsort(dim=1)[:, :k] + offset).flatten().numpy())
        assert same_selection(select_prompts(w, bank.cls, k, "best"), best, R), k
        assert same_selection(select_prompts(w, bank.cls, k, "worst"), worst, R), k
        old = prompt_weights(bank, "alpha-beta-image", img, sim_map="unit")  # the project's former (1+cos)/2
        changed += not same_selection(select_prompts(old, bank.cls, k, "best"), best, R)
    assert changed > 0  # the map matters here: the former selection differs from the authors' for some K


def test_sweep_authors_configuration(sample):
    img, labels, bank = sample
    C = bank.n_classes
    n = len(bank.texts) // C
    R = authors_sim_rank(img @ bank.emb.T / 2 + 1, C, n)
    ks = (1, 5, 25)
    sw = prompt_sweep(img, labels, bank, ks=ks, n_random=0, **AUTHORS_SWEEP)
    w = prompt_weights(bank, "alpha-beta-image", img)
    for k in ks:
        for mode, idx in (("best", R.topk(k, dim=1).indices), ("worst", R.argsort(dim=1)[:, :k])):
            theirs = np.sort((idx + n * torch.arange(C)[:, None]).flatten().numpy())
            ours = select_prompts(w, bank.cls, k, mode)
            assert same_selection(ours, theirs, R)
            # score the sentences the sweep used (a float-rounding tie may swap one with an equal-weight sentence)
            by_class = [bank.emb[[i for i in ours if bank.cls[i] == c]] for c in range(C)]
            want = authors_top1(img, by_class, labels)
            got = sw[(sw.k == k) & (sw["mode"] == mode)]["accuracy"].item()
            assert got == pytest.approx(want, abs=1e-6), (k, mode)
    assert sw.attrs["rule"] == "class-mean" and sw.attrs["shift"] is True


def test_mean_and_hhi_equal_authors(sample):
    "The authors' mean_calc and prompt_score_conc_level(hhi_calc=True) on their cos/2+1 logits."
    img, labels, bank = sample
    S = (img @ bank.emb.T / 2 + 1).transpose(-1, 0).float()  # (P, N)
    top = 100
    mean = S.topk(top, dim=1).values.mean(dim=1) / (S.sum(dim=1) + 1e-6)
    share = S / (S.sum(dim=1, keepdim=True) + 1e-6)
    hhi = (share.gather(1, share.topk(top, dim=1).indices) ** 2).sum(dim=1)
    np.testing.assert_allclose(prompt_weights(bank, "mean", img, topk_images=top), mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(prompt_weights(bank, "hhi", img, topk_images=top), hhi.numpy(), rtol=1e-5)
