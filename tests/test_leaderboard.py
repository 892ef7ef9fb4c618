"""Rank intervals and tie groups (``bench.stats.ranks``): Holm against statsmodels, the rank intervals against a
plain loop over the documented image draws, the adjacent test against ``bench compare``'s paired test."""

from __future__ import annotations

import numpy as np
import pytest

from bench.scoring.queries import QueryRanks
from bench.stats.bootstrap import BootstrapConfig, query_values
from bench.stats.paired import compare
from bench.stats.ranks import holm, rank_rows

N_IMAGES, CAPTIONS = 60, 3


def _cell(rng: np.random.Generator, skill: float) -> dict:
    """An image-text cell on N_IMAGES images with CAPTIONS captions each: ranks drawn so that a higher ``skill``
    retrieves better."""
    c2i = np.repeat(np.arange(N_IMAGES), CAPTIONS)

    def ranks(n: int) -> np.ndarray:
        return np.minimum(rng.geometric(skill, size=n) - 1, 40)

    i2t = QueryRanks(np.arange(N_IMAGES), ranks(N_IMAGES), np.full(N_IMAGES, CAPTIONS), np.arange(N_IMAGES),
                     N_IMAGES * CAPTIONS)  # fmt: skip
    t2i = QueryRanks(np.arange(c2i.size), ranks(c2i.size), np.ones(c2i.size, dtype=np.int64), c2i, N_IMAGES)
    return query_values({"i2t": i2t, "t2i": t2i})


def test_holm_is_statsmodels_holm() -> None:
    from statsmodels.stats.multitest import multipletests
    rng = np.random.default_rng(0)
    for m in (1, 2, 5, 12):
        p = rng.uniform(0, 0.2, size=m).tolist()
        assert holm(p) == pytest.approx(multipletests(p, method="holm")[1].tolist())
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # by hand: 3·0.01, max(2·0.03, ·), 0.04


def test_rank_intervals_are_the_ranks_of_the_documented_draws() -> None:
    """Recompute every resample by hand: images drawn by ``default_rng(seed).integers`` (one call per resample),
    each row's RSUM as the weighted mean of its per-query hits, ranks 1 + rows strictly ahead."""
    rng = np.random.default_rng(1)
    rows = [[_cell(rng, s)] for s in (0.5, 0.45, 0.2, 0.19)]
    cfg = BootstrapConfig(resamples=200, seed=3, level=0.9)
    board = rank_rows(rows, N_IMAGES, "rsum", cfg)

    draws = np.random.default_rng(cfg.seed)
    by_hand = np.zeros((len(rows), cfg.resamples))
    for b in range(cfg.resamples):
        w = np.bincount(draws.integers(0, N_IMAGES, N_IMAGES), minlength=N_IMAGES).astype(float)
        for i, (cell,) in enumerate(rows):
            total = 0.0
            for d in ("i2t", "t2i"):
                qv = cell[d]
                weights = w[qv.cluster]
                total += sum(float(np.sum(weights * qv.values[f"r{k}"]) / np.sum(weights)) for k in (1, 5, 10))
            by_hand[i, b] = total
    ranks = 1 + (by_hand[None, :, :] > by_hand[:, None, :]).sum(axis=1)
    for r in board:
        lo, hi = np.percentile(ranks[r.index], [5, 95])
        assert r.rank_ci == (int(np.floor(lo)), int(np.ceil(hi)))
    assert [r.value for r in board] == sorted((r.value for r in board), reverse=True)
    assert [r.rank for r in board] == [1, 2, 3, 4]
    groups = {r.index: r.group for r in board}  # two pairs of near twins, far apart
    assert groups[0] == groups[1] < groups[2] == groups[3]


def test_two_rows_get_bench_compares_paired_p_and_twins_tie() -> None:
    rng = np.random.default_rng(2)
    a, b = _cell(rng, 0.5), _cell(rng, 0.3)
    cfg = BootstrapConfig(resamples=300, seed=0)
    board = rank_rows([[a], [b]], N_IMAGES, "rsum", cfg)
    assert board[0].p_next == pytest.approx(compare(a, b, N_IMAGES, cfg).p["rsum"])  # one pair: Holm changes nothing
    twins = rank_rows([[a], [a]], N_IMAGES, "rsum", cfg)
    assert [r.rank for r in twins] == [1, 1] and [r.rank_ci for r in twins] == [(1, 1), (1, 1)]
    assert {r.group for r in twins} == {1} and twins[0].p_next == 1.0


def test_rows_on_other_queries_or_without_the_metric_are_refused() -> None:
    rng = np.random.default_rng(3)
    a = _cell(rng, 0.5)
    other = dict(a)
    qv = a["t2i"]
    other["t2i"] = type(qv)(qv.values, qv.cluster, qv.queries[::-1].copy())
    cfg = BootstrapConfig(resamples=50)
    with pytest.raises(ValueError, match="queries differ"):
        rank_rows([[a], [other]], N_IMAGES, "rsum", cfg)
    with pytest.raises(KeyError):
        rank_rows([[a], [a]], N_IMAGES, "t2t_r1", cfg)
    with pytest.raises(ValueError, match="two rows"):
        rank_rows([[a]], N_IMAGES, "rsum", cfg)


def test_a_mean_rank_ranks_the_lowest_first() -> None:
    rng = np.random.default_rng(4)
    good, bad = _cell(rng, 0.6), _cell(rng, 0.1)
    cfg = BootstrapConfig(resamples=100)
    assert [r.index for r in rank_rows([[bad], [good]], N_IMAGES, "rsum", cfg)] == [1, 0]
    by_meanr = rank_rows([[bad], [good]], N_IMAGES, "t2i_meanr", cfg, higher_is_better=False)
    assert [r.index for r in by_meanr] == [1, 0] and by_meanr[0].value < by_meanr[1].value
