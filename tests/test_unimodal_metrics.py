"""Uni-modal metrics against brute force: Recall@K and mAP@R on random labelled embeddings with ties and exact
duplicates (pessimistic tie rule), Spearman against ``scipy.stats.spearmanr``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import bench.scoring.common as scoring_common
import bench.scoring.unimodal as um
from bench.scoring.unimodal import image_retrieval_metrics, label_retrieval, spearman, sts_metrics


def _brute(q: np.ndarray, g: np.ndarray, ql: np.ndarray, gl: np.ndarray, exclude: np.ndarray) -> dict[int, tuple]:
    """Per query (with a positive): rank of the best positive, AP@R, R-Precision, from a full sort per query in
    which a negative tied with a positive comes first (the pessimistic rule)."""
    scores = q.astype(np.float32) @ g.astype(np.float32).T
    out = {}
    for i in range(q.shape[0]):
        keep = np.arange(g.shape[0]) != exclude[i]
        s, pos = scores[i][keep], gl[keep] == ql[i]
        r = int(pos.sum())
        if r == 0:
            continue
        ranked = pos[np.lexsort((pos, -s))]  # by score descending, then negatives (False) before positives
        hits = np.cumsum(ranked)
        ap = sum(hits[k] / (k + 1) for k in range(r) if ranked[k]) / r
        out[i] = (int(np.argmax(ranked)), ap, ranked[:r].sum() / r)
    return out


def _labelled(rng: np.random.Generator, n: int, dim: int, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    # Small integer coordinates make many dot products tie exactly; a few rows are exact copies of others.
    x = rng.integers(-2, 3, size=(n, dim)).astype(np.float32)
    dup = rng.choice(n, size=n // 6, replace=False)
    x[dup] = x[rng.integers(0, n, size=dup.shape[0])]
    return x, rng.integers(0, n_labels, size=n)


@pytest.mark.parametrize("seed", range(12))
def test_single_set_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, labels = _labelled(rng, int(rng.integers(8, 70)), int(rng.integers(1, 4)), int(rng.integers(2, 9)))
    expected = _brute(x, x, labels, labels, np.arange(len(x)))
    got = label_retrieval(x, x, labels, labels, exclude=np.arange(len(x)), memory_mb=float(rng.choice([1e-4, 1.0])))
    assert got["queries"].tolist() == sorted(expected)
    np.testing.assert_array_equal(got["rank"], [expected[i][0] for i in got["queries"]])
    np.testing.assert_allclose(got["ap_at_r"], [expected[i][1] for i in got["queries"]], atol=1e-12)
    np.testing.assert_allclose(got["r_precision"], [expected[i][2] for i in got["queries"]], atol=1e-12)

    summary = image_retrieval_metrics(x, labels, normalize=False, memory_mb=0.01)
    ranks = np.array([expected[i][0] for i in sorted(expected)])
    for k in (1, 2, 4, 8):
        assert summary[f"r{k}"] == pytest.approx(100 * np.mean(ranks < k))
    assert summary["map_at_r"] == pytest.approx(100 * np.mean([v[1] for v in expected.values()]))
    assert summary["n_queries"] == len(expected)


@pytest.mark.parametrize("seed", range(6))
def test_query_gallery_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    x, labels = _labelled(rng, 60, 2, 6)
    perm = rng.permutation(60)
    qr, gr = perm[:25], perm[25:]
    expected = _brute(x[qr], x[gr], labels[qr], labels[gr], -np.ones(25, dtype=np.int64))
    got = image_retrieval_metrics(x, labels, query_rows=qr, gallery_rows=gr, normalize=False, memory_mb=1e-3)
    ranks = np.array([expected[i][0] for i in sorted(expected)])
    assert got["r1"] == pytest.approx(100 * np.mean(ranks < 1)) and got["r8"] == pytest.approx(100 * np.mean(ranks < 8))
    assert got["map_at_r"] == pytest.approx(100 * np.mean([v[1] for v in expected.values()]))
    assert got["r_precision"] == pytest.approx(100 * np.mean([v[2] for v in expected.values()]))


def test_an_exact_duplicate_of_another_class_costs_the_query() -> None:
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], dtype=np.float32)
    # Image 1 duplicates image 0 exactly but belongs to another class; image 2 is image 0's only positive.
    got = label_retrieval(x, x, [0, 1, 0, 1], [0, 1, 0, 1], exclude=np.arange(4))
    assert got["rank"][0] == 1 and got["ap_at_r"][0] == pytest.approx(0.0)
    # Same duplicate, same class: the tie is between positives and costs nothing.
    got = label_retrieval(x, x, [0, 0, 1, 1], [0, 0, 1, 1], exclude=np.arange(4))
    assert got["rank"][0] == 0 and got["ap_at_r"][0] == pytest.approx(1.0)


def test_collapsed_embeddings_score_zero_not_hundred() -> None:
    x = np.ones((40, 8), dtype=np.float32)
    labels = np.repeat(np.arange(10), 4)
    m = image_retrieval_metrics(x, labels)
    assert m["r1"] == 0.0 and m["r8"] == 0.0
    assert m["map_at_r"] < 15.0  # every positive sits after all 36 tied negatives


def test_queries_without_positives_are_skipped_and_none_when_no_query_has_one() -> None:
    x = np.eye(4, dtype=np.float32)
    m = image_retrieval_metrics(x, [0, 0, 1, 2])
    assert m["n_queries"] == 2 and m["r1"] == 0.0  # the two class-0 images are orthogonal: tied with the others
    none = image_retrieval_metrics(x, [0, 1, 2, 3])
    assert none["n_queries"] == 0 and none["r1"] is None and none["map_at_r"] is None


def test_strips_stay_within_the_memory_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    heights = []
    real = scoring_common.strip_scores

    def spy(q: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        heights.append(q.shape[0])
        return real(q, g)

    monkeypatch.setattr(scoring_common, "strip_scores", spy)
    rng = np.random.default_rng(0)
    x, labels = rng.normal(size=(500, 16)).astype(np.float32), rng.integers(0, 20, size=500)
    budget_mb = 0.5
    m = image_retrieval_metrics(x, labels, memory_mb=budget_mb)
    assert len(heights) > 1 and max(heights) * 500 * um._BYTES_PER_SCORE <= budget_mb * 2**20
    assert m == image_retrieval_metrics(x, labels, memory_mb=64.0)  # the strip size never changes a number


def test_the_rank_pass_runs_only_on_rows_whose_best_positive_is_past_the_top_k(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The exact rank comes from the top-(2R+2) values where the best positive is among them; the other rows take
    the comparison pass. Both kinds occur here, and every rank matches brute force."""
    rng = np.random.default_rng(3)
    x, labels = _labelled(rng, 400, 3, 60)
    expected = _brute(x, x, labels, labels, np.arange(len(x)))
    got = label_retrieval(x, x, labels, labels, exclude=np.arange(len(x)))
    ranks = np.asarray([expected[i][0] for i in got["queries"]])
    k = 2 * int(got["n_positives"].max()) + 2
    assert (ranks < k).any() and (ranks >= k).any()
    np.testing.assert_array_equal(got["rank"], ranks)


def test_spearman_matches_scipy_with_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in (2, 3, 10, 57, 400):
        a, b = rng.integers(0, 6, n).astype(float), rng.normal(size=n)
        b[: n // 3] = b[0]  # ties on both sides
        assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert math.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="equal-length"):
        spearman([1.0, 2.0], [1.0])


def test_sts_metrics_per_group_and_mean() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    e1, e2 = rng.normal(size=(30, 8)), rng.normal(size=(30, 8))
    gold = rng.uniform(0, 5, 30)
    groups = ["a"] * 12 + ["b"] * 18
    got = sts_metrics(e1, e2, gold, groups)
    cos = (e1 * e2).sum(1) / np.linalg.norm(e1, axis=1) / np.linalg.norm(e2, axis=1)
    want = {g: 100 * stats.spearmanr(cos[s], gold[s]).statistic for g, s in (("a", slice(0, 12)), ("b", slice(12, 30)))}
    assert got["a"] == pytest.approx(want["a"]) and got["b"] == pytest.approx(want["b"])
    assert got["mean"] == pytest.approx((want["a"] + want["b"]) / 2)
    ones = np.ones((30, 8))
    same = sts_metrics(ones, 3.0 * ones, gold, groups)  # a collapsed model: every cosine equal, no ranking
    assert same["a"] == 0.0 and same["mean"] == 0.0
