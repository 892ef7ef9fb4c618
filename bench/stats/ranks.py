"""Ranks with intervals: where each of several models would rank if the test images were drawn again.

Every row is resampled with the *same* image draws (:func:`bench.stats.bootstrap.resample_counts`), as the paired
test does, so what the rows share (the hard images) moves them together and only their differences move the ranks.
A row with several seeds is resampled over seeds too (the two-level bootstrap). In each resample the rows are ranked
by the metric (1 = best; equal values share the better rank), and a row's rank interval is the percentile interval
of its ranks.

Tie groups come from paired tests, not from overlapping intervals: with the rows in order of their observed metric,
each adjacent pair gets the two-sided paired bootstrap p-value of its difference, the p-values are adjusted by
Holm's step-down (family: the adjacent pairs), and a pair that is not separated at ``alpha`` joins one group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bench.stats.bootstrap import (
    BootstrapConfig,
    QueryValues,
    interval,
    resample_counts,
    resampled_metrics,
    seed_draws,
    two_level,
)
from bench.stats.paired import bootstrap_p_value

__all__ = ["RankedRow", "holm", "rank_rows"]

Row = Sequence[Mapping[str, QueryValues]]  # one entry per seed, all on the same queries


@dataclass(frozen=True)
class RankedRow:
    """One row's place: its observed metric (the mean over its seeds) and interval, its rank (1 = best) and rank
    interval, its tie group (1 = the top group), and the Holm-adjusted p-value against the next row (None for the
    last)."""

    index: int  # the row's position in the input
    value: float
    ci: list[float]
    rank: int
    rank_ci: tuple[int, int]
    group: int
    p_next: float | None


def holm(p: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``p`` (in input order): ``max_{k<=j} min(1, (m - k + 1) p_(k))``."""
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * float(p[i])))
        adjusted[i] = running
    return adjusted.tolist()


def _row_samples(row: Row, metric: str, counts: np.ndarray, cfg: BootstrapConfig) -> tuple[float, np.ndarray]:
    ones = np.ones((1, counts.shape[1]))
    observed = [resampled_metrics(v, ones) for v in row]
    if any(metric not in o for o in observed):
        raise KeyError(metric)
    samples = [resampled_metrics(v, counts) for v in row]
    boot = samples[0] if len(samples) == 1 else two_level(samples, seed_draws(len(samples), cfg.resamples, cfg.seed))
    return float(np.mean([o[metric][0] for o in observed])), boot[metric]


def rank_rows(rows: Sequence[Row], n_images: int, metric: str, cfg: BootstrapConfig, alpha: float = 0.05,
              *, higher_is_better: bool = True) -> list[RankedRow]:  # fmt: skip
    """Rank ``rows`` (each a list of per-seed query values on the same ``n_images`` images) by ``metric`` (a
    resampled-metric name: ``rsum``, ``i2t_r1``, ``t2t_map_at_r``...), best first (the lowest first where not
    ``higher_is_better``: a mean rank).

    Raises:
        KeyError: a row has no such metric.
        ValueError: fewer than two rows, or the rows' queries differ.
    """
    if len(rows) < 2:
        raise ValueError(f"a ranking needs two rows or more, got {len(rows)}")
    first = rows[0][0]
    for row in rows:
        for cell in row:
            for d, qv in cell.items():
                if d in first and not np.array_equal(qv.queries, first[d].queries):
                    raise ValueError(f"{d} queries differ between rows; they are not the same problem")
    counts = resample_counts(n_images, cfg.resamples, cfg.seed)
    observed, samples = zip(*(_row_samples(r, metric, counts, cfg) for r in rows), strict=True)
    sign = 1.0 if higher_is_better else -1.0
    boot = np.stack(samples)  # [rows, B]
    better = sign * boot
    # rank in a resample: 1 + the rows strictly ahead (nan, a resample without this metric's queries: not ranked)
    ahead = (better[None, :, :] > better[:, None, :]).sum(axis=1)
    ranks = np.where(np.isnan(boot), np.nan, 1.0 + ahead)
    order = sorted(range(len(rows)), key=lambda i: -sign * observed[i])
    p = [bootstrap_p_value(boot[a] - boot[b]) for a, b in zip(order, order[1:], strict=False)]
    adjusted = holm(p) if p else []
    out: dict[int, RankedRow] = {}
    group = 1
    for pos, i in enumerate(order):
        if pos and adjusted[pos - 1] < alpha:
            group += 1
        lo, hi = interval(ranks[i], cfg.level)
        rank = 1 + sum(sign * observed[j] > sign * observed[i] for j in range(len(rows)))
        out[i] = RankedRow(index=i, value=observed[i], ci=interval(boot[i], cfg.level), rank=rank,
                           rank_ci=(int(np.floor(lo)), int(np.ceil(hi))), group=group,
                           p_next=adjusted[pos] if pos < len(adjusted) else None)  # fmt: skip
    return [out[i] for i in order]
