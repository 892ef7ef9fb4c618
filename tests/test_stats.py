"""Bootstrap intervals and paired tests, against plain loop implementations and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from test_metrics import tie_heavy_problem

from bench.scoring.itr import itr_queries
from bench.scoring.queries import QueryRanks
from bench.stats.bootstrap import (
    BootstrapConfig,
    confidence_intervals,
    interval,
    query_values,
    resample_counts,
    resampled_metrics,
)
from bench.stats.paired import compare, mcnemar_exact


def loop_bootstrap(queries: dict, n_images: int, resamples: int, seed: int) -> dict[str, np.ndarray]:
    """The plain bootstrap: draw images, gather every query of each drawn image (with multiplicity), average."""
    rng = np.random.default_rng(seed)
    values = query_values(queries)
    out: dict[str, list[float]] = {}
    for _ in range(resamples):
        drawn = rng.integers(0, n_images, n_images)
        mult = np.bincount(drawn, minlength=n_images)
        for d, qv in values.items():
            pick = np.repeat(np.arange(len(qv.cluster)), mult[qv.cluster])
            for name, v in qv.values.items():
                out.setdefault(f"{d}_{name}", []).append(v[pick].sum() / pick.size)
        out.setdefault("rsum", []).append(sum(out[f"{d}_r{k}"][-1] for d in ("i2t", "t2i") for k in (1, 5, 10)))
    return {k: np.asarray(v) for k, v in out.items()}


def problem(seed: int = 0, n_img: int = 60):
    image, text, c2i = tie_heavy_problem(seed, n_img=n_img)
    return itr_queries(image, text, c2i, topk=10), n_img


def test_bootstrap_equals_plain_loop_with_the_same_seed() -> None:
    queries, n_img = problem()
    fast = resampled_metrics(query_values(queries), resample_counts(n_img, 200, seed=7))
    slow = loop_bootstrap(queries, n_img, 200, seed=7)
    assert set(fast) == set(slow)
    for name in ("i2t_r1", "i2t_r5", "t2i_r10", "t2t_r1", "rsum"):  # integer hit counts: exactly equal
        np.testing.assert_array_equal(fast[name], slow[name], err_msg=name)
    for name in fast:  # sums of fractions (MRR, mAP@R, nDCG): equal to rounding
        np.testing.assert_allclose(fast[name], slow[name], rtol=1e-12, err_msg=name)
    # The full sample (one resample of ones) gives the metrics themselves.
    point = resampled_metrics(query_values(queries), np.ones((1, n_img)))
    assert point["i2t_r1"][0] == pytest.approx(100 * np.mean(queries["i2t"].ranks < 1))


def test_interval_width_shrinks_as_one_over_root_n() -> None:
    def width(n_img: int) -> float:
        rng = np.random.default_rng(0)
        c2i = np.repeat(np.arange(n_img), 5)
        ranks = rng.integers(0, 3, size=c2i.size)  # each caption a hit with probability 1/3, independently
        q = QueryRanks(np.arange(c2i.size), ranks, np.ones(c2i.size, int), c2i, n_img)
        ci = confidence_intervals(query_values({"t2i": q}), n_img, BootstrapConfig(resamples=2000, seed=1))
        return ci["t2i"]["r1"][1] - ci["t2i"]["r1"][0]

    ratio = width(500) / width(2000)
    assert 1.75 < ratio < 2.3  # 4x the problem: half the width


def test_image_clustered_intervals_are_wider_than_caption_level() -> None:
    # Five captions per image share the image's difficulty: hits are correlated within an image.
    rng = np.random.default_rng(2)
    n_img = 1000
    c2i = np.repeat(np.arange(n_img), 5)
    easy = rng.random(n_img) < 0.5
    hit = np.where(easy[c2i], rng.random(c2i.size) < 0.9, rng.random(c2i.size) < 0.1)
    ranks = np.where(hit, 0, 20)
    cfg = BootstrapConfig(resamples=1000, seed=0)
    clustered = QueryRanks(np.arange(c2i.size), ranks, np.ones(c2i.size, int), c2i, n_img)
    per_caption = QueryRanks(np.arange(c2i.size), ranks, np.ones(c2i.size, int), np.arange(c2i.size), n_img)
    w_img = np.diff(confidence_intervals(query_values({"t2i": clustered}), n_img, cfg)["t2i"]["r1"])[0]
    w_cap = np.diff(confidence_intervals(query_values({"t2i": per_caption}), c2i.size, cfg)["t2i"]["r1"])[0]
    assert w_img > 1.5 * w_cap


def test_identical_models_compare_with_zero_delta_and_p_one() -> None:
    queries, n_img = problem(1)
    values = query_values(queries)
    result = compare(values, values, n_img, BootstrapConfig(resamples=300))
    assert result.delta["rsum"] == 0 and result.ci["rsum"] == [0.0, 0.0] and result.p["rsum"] == 1.0
    assert all(t["p"] == 1.0 and t["a_only"] == 0 for t in result.mcnemar.values())


def test_a_better_model_is_significantly_ahead() -> None:
    rng = np.random.default_rng(3)
    n_img = 400
    image = rng.normal(size=(n_img, 16)).astype(np.float32)
    c2i = np.repeat(np.arange(n_img), 5)
    good = image[c2i] + 0.6 * rng.normal(size=(c2i.size, 16)).astype(np.float32)
    bad = image[c2i] + 1.2 * rng.normal(size=(c2i.size, 16)).astype(np.float32)
    a = query_values(itr_queries(image, good, c2i))
    b = query_values(itr_queries(image, bad, c2i))
    result = compare(a, b, n_img, BootstrapConfig(resamples=500))
    assert result.a["rsum"] - result.b["rsum"] == pytest.approx(result.delta["rsum"])
    assert result.a["t2i_r1"] == pytest.approx(100 * np.mean(a["t2i"].values["r1"] > 0))
    assert result.delta["rsum"] > 0 and result.ci["rsum"][0] > 0 and result.p["rsum"] < 0.01
    assert result.mcnemar["t2i"]["a_only"] > result.mcnemar["t2i"]["b_only"] and result.mcnemar["t2i"]["p"] < 0.01
    # Across seeds: the two-level interval is at least as wide as one seed pair's.
    across = compare([a, a], [b, b], n_img, BootstrapConfig(resamples=500))
    assert across.n_seeds == 2 and across.delta["rsum"] == pytest.approx(result.delta["rsum"])
    assert len(across.mcnemar["t2i"]["p"]) == 2


@pytest.mark.parametrize(("b", "c"), [(0, 0), (1, 0), (3, 9), (20, 31), (250, 200), (0, 40)])
def test_mcnemar_equals_scipy_binomtest(b: int, c: int) -> None:
    a_hits = np.array([1] * b + [0] * c + [1] * 7 + [0] * 5, dtype=bool)
    b_hits = np.array([0] * b + [1] * c + [1] * 7 + [0] * 5, dtype=bool)
    got = mcnemar_exact(a_hits, b_hits)
    want = 1.0 if b + c == 0 else binomtest(min(b, c), b + c, 0.5).pvalue
    assert got["a_only"] == b and got["b_only"] == c
    assert got["p"] == pytest.approx(want, rel=1e-9)


def test_compare_refuses_different_queries() -> None:
    q1, n_img = problem(0)
    q2, _ = problem(2)
    with pytest.raises(ValueError, match="queries differ"):
        compare(query_values(q1), query_values(q2), n_img, BootstrapConfig(resamples=10))


def test_interval_is_percentile() -> None:
    samples = np.arange(1001, dtype=float)
    assert interval(samples, 0.95) == pytest.approx([25.0, 975.0])
