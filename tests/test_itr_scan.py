"""The two-way scan (:func:`bench.scoring.itr.itr_ranks`) against the brute-force reference and the one-way scorer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_metrics import brute_force_ranks, caption_lists, tie_heavy_problem, watch_tiles

import bench.scoring.itr_scan as itr_scan_mod
from bench.scoring.itr import itr_ranks, retrieval_ranks, sibling_ranks


def reference(image: np.ndarray, text: np.ndarray, c2i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    caps = caption_lists(c2i, len(image))
    with_caps = [i for i in range(len(image)) if len(caps[i])]
    i2t = brute_force_ranks(image[with_caps], text, [caps[i] for i in with_caps])
    t2i = brute_force_ranks(text, image, [np.array([m]) for m in c2i])
    return i2t, t2i


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(("memory_mb", "width"), [(1e-9, 512), (0.0005, 512), (0.002, 7), (0.01, 16), (256.0, 512)])
def test_equals_brute_force_with_ties(seed: int, memory_mb: float, width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Shuffled captions (not grouped by image), exact duplicate images and captions, 1-7 captions per image, and
    # two images with no caption; tile widths and budgets that do and do not divide the problem.
    image, text, c2i = tie_heavy_problem(seed)
    keep = (c2i != 5) & (c2i != 40)
    text, c2i = text[keep], c2i[keep]
    monkeypatch.setattr(itr_scan_mod, "_CPU_TILE_WIDTH", width)
    shapes = watch_tiles(monkeypatch)
    i2t, t2i = itr_ranks(image, text, c2i, memory_mb=memory_mb)
    want_i2t, want_t2i = reference(image, text, c2i)
    np.testing.assert_array_equal(t2i, want_t2i)
    np.testing.assert_array_equal(i2t, want_i2t)
    assert i2t.dtype == t2i.dtype == np.int64
    assert want_i2t.max() > 0 and np.any(want_i2t == 0) and want_t2i.max() > 0  # neither trivial nor hopeless
    # One pass: every caption x image score is computed exactly once, whatever the tiling.
    assert sum(r * c for r, c in shapes) == len(text) * len(image)
    if memory_mb < 256:
        assert len(shapes) > 1


def test_grouped_captions_take_the_view_path_and_agree() -> None:
    image, text, c2i = tie_heavy_problem(4)
    order = np.argsort(c2i, kind="stable")
    text, c2i = text[order], c2i[order]
    want_i2t, want_t2i = reference(image, text, c2i)
    for memory_mb in (1e-9, 0.003, 256.0):
        i2t, t2i = itr_ranks(image, text, c2i, memory_mb=memory_mb)
        np.testing.assert_array_equal(i2t, want_i2t)
        np.testing.assert_array_equal(t2i, want_t2i)


def test_tiles_stay_within_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    image, text, c2i = tie_heavy_problem(0, n_img=120)
    shapes = watch_tiles(monkeypatch)
    for floats in (64, 300, 1000):
        shapes.clear()
        itr_ranks(image, text, c2i, memory_mb=floats * 4 / 2**20)
        max_caps = np.bincount(c2i).max()
        # A tile holds at most the budget, except a lone image's captions x 1 column when they alone exceed it.
        assert all(r * c <= max(floats, max_caps) for r, c in shapes), (floats, max(shapes, key=lambda s: s[0] * s[1]))
    shapes.clear()
    itr_ranks(image, text, c2i, memory_mb=1e-9)
    assert {c for _, c in shapes} == {1}


def test_matches_two_one_way_scans_on_real_valued_embeddings() -> None:
    rng = np.random.default_rng(5)
    image = rng.standard_normal((700, 32)).astype(np.float32)
    c2i = rng.permutation(np.repeat(np.arange(700), rng.integers(1, 8, size=700)))
    text = image[c2i] + 2.0 * rng.standard_normal((len(c2i), 32)).astype(np.float32)
    i2t, t2i = itr_ranks(image, text, c2i, memory_mb=0.05)
    np.testing.assert_array_equal(t2i, retrieval_ranks(text, image, [np.array([m]) for m in c2i]))
    np.testing.assert_array_equal(i2t, retrieval_ranks(image, text, caption_lists(c2i, 700)))
    assert 0 < np.mean(t2i == 0) < 1


def test_collapsed_embeddings_rank_last() -> None:
    c2i = np.repeat(np.arange(30), 4)
    i2t, t2i = itr_ranks(np.ones((30, 8), np.float32), np.ones((120, 8), np.float32), c2i, memory_mb=0.001)
    assert set(t2i.tolist()) == {29} and set(i2t.tolist()) == {116}


def test_errors_name_the_field() -> None:
    image, text, c2i = tie_heavy_problem(0)
    with pytest.raises(ValueError, match="caption_to_image has 3 rows but text_emb has"):
        itr_ranks(image, text, c2i[:3])
    bad = c2i.copy()
    bad[4] = len(image)
    with pytest.raises(ValueError, match=r"caption_to_image\[4\] = 60, out of range"):
        itr_ranks(image, text, bad)
    with pytest.raises(ValueError, match="image_emb has dimension 6 but text_emb has 5"):
        itr_ranks(image, text[:, :5], c2i)
    with pytest.raises(ValueError, match="memory_mb must be > 0"):
        itr_ranks(image, text, c2i, memory_mb=0)
    nan = text.copy()
    nan[2, 1] = np.nan
    with pytest.raises(ValueError, match="text_emb row 2"):
        itr_ranks(image, nan, c2i)
    i2t, t2i = itr_ranks(image, text[:0], c2i[:0])
    assert i2t.shape == t2i.shape == (0,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    image, text, c2i = tie_heavy_problem(2)
    want_i2t, want_t2i = reference(image, text, c2i)
    i2t, t2i = itr_ranks(torch.from_numpy(image).cuda(), torch.from_numpy(text).cuda(), c2i, memory_mb=0.001)
    np.testing.assert_array_equal(i2t, want_i2t)
    np.testing.assert_array_equal(t2i, want_t2i)


# ---------------------------------------------------------------------------------------------------------------------
# sibling_ranks: the symmetric within-modality scan (t2t, i2i)


def sibling_reference(emb: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    queries = np.array([j for j in range(len(groups)) if np.count_nonzero(groups == groups[j]) >= 2], dtype=np.int64)
    positives = [np.array([k for k in np.flatnonzero(groups == groups[j]) if k != j]) for j in queries]
    return queries, brute_force_ranks(emb[queries], emb, positives, queries)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("memory_mb", [1e-9, 0.0003, 0.002, 0.01, 256.0])
def test_sibling_ranks_equal_brute_force(seed: int, memory_mb: float, monkeypatch: pytest.MonkeyPatch) -> None:
    # Captions grouped by (shuffled) image id, exact duplicates across groups, groups of 1-7 (singletons are no
    # queries); the smallest budget has tiles narrower than a group, so the strip fallback answers.
    _, text, c2i = tie_heavy_problem(seed)
    shapes = watch_tiles(monkeypatch)
    queries, ranks = sibling_ranks(text, c2i, memory_mb=memory_mb)
    want_q, want = sibling_reference(text, c2i)
    np.testing.assert_array_equal(queries, want_q)
    np.testing.assert_array_equal(ranks, want)
    assert want.max() > 0 and np.any(want == 0)
    if memory_mb > 1e-6:  # the tiled path: diagonal blocks plus one triangle of tiles, about half of N x N
        n, widest = len(text), max(c for _, c in shapes)
        assert sum(r * c for r, c in shapes) <= (n * n + n * widest) / 2


def test_sibling_ranks_on_labels_with_singletons() -> None:
    rng = np.random.default_rng(9)
    emb = rng.integers(-2, 3, size=(90, 5)).astype(np.float32)
    labels = rng.integers(0, 30, size=90)
    labels[[3, 10]] = [100, 101]  # labels with one image: no query
    queries, ranks = sibling_ranks(emb, labels, memory_mb=0.001)
    want_q, want = sibling_reference(emb, labels)
    assert 3 not in queries and 10 not in queries
    np.testing.assert_array_equal(queries, want_q)
    np.testing.assert_array_equal(ranks, want)
    none_q, none_r = sibling_ranks(emb, np.arange(90))
    assert none_q.size == none_r.size == 0
    with pytest.raises(ValueError, match="groups has 3 entries but image_emb has 90 rows"):
        sibling_ranks(emb, labels[:3], name="image_emb")
