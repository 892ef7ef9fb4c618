"""Top-k lists from the exact scorer's pass: equal to a brute-force sort by (score desc, negatives first)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.scoring.itr import ranks_and_topk, retrieval_ranks


def _problem(seed: int, n_q: int, n_g: int, dim: int = 4):
    rng = np.random.default_rng(seed)
    # Few distinct values: many exact ties between positives and negatives.
    q = rng.integers(-2, 3, size=(n_q, dim)).astype(np.float32)
    g = rng.integers(-2, 3, size=(n_g, dim)).astype(np.float32)
    positives = [rng.choice(n_g, size=rng.integers(1, 4), replace=False) for _ in range(n_q)]
    exclude = np.array([rng.choice(np.setdiff1d(np.arange(n_g), p)) if rng.random() < 0.5 else -1
                        for p in positives])  # fmt: skip
    return q, g, positives, exclude


def _brute(q, g, positives, exclude, k):
    scores = q @ g.T
    lists, ranks = [], []
    for i in range(len(q)):
        pos = np.zeros(g.shape[0], dtype=bool)
        pos[positives[i]] = True
        s = scores[i].astype(np.float64)
        keep = np.ones(g.shape[0], dtype=bool)
        if exclude[i] >= 0:
            keep[exclude[i]] = False
        best = s[pos].max()
        ranks.append(int(((s >= best) & ~pos & keep).sum()))
        s = np.where(keep, s, -np.inf)
        # Descending score, negatives before positives on ties; lexsort's last key is the primary one.
        order = np.lexsort((pos, -s))
        lists.append((order[:k], s[order[:k]], pos[order[:k]]))
    return np.array(ranks), lists


@pytest.mark.parametrize("memory_mb", [1e-4, 3e-4, 1.0])  # 1 row per strip, strips that do not divide, one strip
@pytest.mark.parametrize("seed", [0, 1])
def test_topk_lists_and_ranks_equal_brute_force(seed: int, memory_mb: float) -> None:
    q, g, positives, exclude = _problem(seed, n_q=37, n_g=23)
    k = 6
    got = ranks_and_topk(q, g, positives, k, exclude=exclude, memory_mb=memory_mb)
    want_ranks, lists = _brute(q, g, positives, exclude, k)
    np.testing.assert_array_equal(got.ranks, want_ranks)
    np.testing.assert_array_equal(got.ranks, retrieval_ranks(q, g, positives, exclude=exclude, memory_mb=memory_mb))
    scores = q @ g.T
    for i, (idx, sc, pos) in enumerate(lists):
        np.testing.assert_array_equal(got.scores[i].numpy(), sc.astype(np.float32))
        np.testing.assert_array_equal(got.positive[i].numpy(), pos)
        mine = got.indices[i].numpy()
        assert len(set(mine.tolist())) == k  # no item twice
        finite = sc > -np.inf
        # each listed item has the listed score and positivity (ties may list equal-key items in another order)
        np.testing.assert_array_equal(scores[i, mine[finite]], sc[finite])
        np.testing.assert_array_equal(np.isin(mine, positives[i]), pos)
        # items strictly above the k-th key are the same set as brute force's
        above = sc > sc[-1]
        assert set(mine[above].tolist()) == set(idx[above].tolist())
        # the first positive in the list sits exactly at the query's rank (if within the list)
        first = np.flatnonzero(pos)
        if first.size:
            assert first[0] == want_ranks[i]
        else:
            assert want_ranks[i] >= k - int((~finite).sum())


def test_k_is_capped_at_the_gallery_and_must_be_positive() -> None:
    q, g, positives, exclude = _problem(3, n_q=5, n_g=4)
    out = ranks_and_topk(q, g, positives, 10)
    assert out.indices.shape == (5, 4)
    with pytest.raises(ValueError, match="k must be >= 1"):
        ranks_and_topk(q, g, positives, 0)


def test_topk_runs_on_torch_inputs_and_keeps_their_device() -> None:
    q, g, positives, _ = _problem(4, n_q=6, n_g=9)
    out = ranks_and_topk(torch.from_numpy(q), torch.from_numpy(g), positives, 3)
    assert out.indices.device == torch.device("cpu") and out.indices.dtype == torch.int64
