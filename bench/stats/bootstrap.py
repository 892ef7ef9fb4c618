"""Percentile bootstrap intervals over images, for one cell or for a method across seeds.

Queries are clustered by image: a caption query belongs to its image, and the five captions of one photo succeed or
fail together far more often than five independent draws would. Resampling captions one by one would therefore
understate the spread, so a resample draws *images* with replacement (as many as there are) and a drawn image brings
every query that belongs to it, in every direction. One draw of images serves all directions and metrics of a
resample, and two cells compared on the same queries (:mod:`bench.stats.paired`) share the draws.

Every metric is a mean over queries of a per-query value (:func:`bench.scoring.queries.per_query_values`), so a
resample's metric is ``sum_q w[cluster(q)] v_q / sum_q w[cluster(q)]`` with ``w`` the image counts of the draw: one
[B, images] x [images, metrics] product per direction instead of B gathers.

Across seeds the interval is two-level (the crossed, "pigeonhole" bootstrap): each resample draws seeds with
replacement and images with replacement, and averages the drawn seeds' metrics on the drawn images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.scoring.queries import DEFAULT_KS, QueryRanks, per_query_values

__all__ = [
    "BootstrapConfig",
    "QueryValues",
    "ci_key",
    "confidence_intervals",
    "interval",
    "nest",
    "query_values",
    "resample_counts",
    "resampled_metrics",
    "seed_draws",
    "two_level",
]

RSUM_PARTS = tuple((d, f"r{k}") for d in ("i2t", "t2i") for k in DEFAULT_KS)


@dataclass(frozen=True)
class BootstrapConfig:
    """How intervals are drawn: ``resamples`` draws from ``seed``, a ``level`` two-sided percentile interval."""

    resamples: int = 1000
    seed: int = 0
    level: float = 0.95

    def __post_init__(self) -> None:
        if self.resamples < 1:
            raise ValueError(f"bootstrap resamples must be >= 1, got {self.resamples}")
        if not 0 < self.level < 1:
            raise ValueError(f"bootstrap level must be in (0, 1), got {self.level}")

    @classmethod
    def of(cls, ev: Any) -> BootstrapConfig:
        """The ``[eval]`` table's ``bootstrap``, ``bootstrap_seed`` and ``ci_level`` (1,000 resamples where
        ``bootstrap = 0`` turned the record's intervals off: tables and reports still draw them)."""
        return cls(resamples=ev.bootstrap or 1000, seed=ev.bootstrap_seed, level=ev.ci_level)


@dataclass(frozen=True)
class QueryValues:
    """One direction's per-query metric values and the image (cluster) of each query."""

    values: dict[str, np.ndarray]  # metric -> float64 [Nq]
    cluster: np.ndarray  # int64 [Nq]
    queries: np.ndarray  # int64 [Nq]: the query rows, to check that two cells are compared on the same queries


def query_values(queries: Mapping[str, QueryRanks | None], ks: Sequence[int] = DEFAULT_KS) -> dict[str, QueryValues]:
    """The per-query values of every direction that applies."""
    return {
        d: QueryValues(per_query_values(q, d, ks), q.cluster, q.queries) for d, q in queries.items() if q is not None
    }


def resample_counts(n_clusters: int, resamples: int, seed: int) -> np.ndarray:
    """float64 [resamples, n_clusters]: how often each image is drawn in each resample.

    Resample ``b`` is ``numpy.random.default_rng(seed)``'s ``b``-th call of ``integers(0, n_clusters, n_clusters)``,
    so a plain loop with the same generator draws the same images.
    """
    if n_clusters < 1:
        raise ValueError("the bootstrap needs at least one image")
    rng = np.random.default_rng(seed)
    counts = np.empty((resamples, n_clusters), dtype=np.float64)
    for b in range(resamples):
        counts[b] = np.bincount(rng.integers(0, n_clusters, n_clusters), minlength=n_clusters)
    return counts


def seed_draws(n_seeds: int, resamples: int, seed: int) -> np.ndarray:
    """int64 [resamples, n_seeds]: the seeds each two-level resample draws (a generator apart from the images')."""
    rng = np.random.default_rng([seed, 1])
    return rng.integers(0, n_seeds, size=(resamples, n_seeds))


def resampled_metrics(values: Mapping[str, QueryValues], counts: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of every direction under each resample: ``{"i2t_r1": [B], ..., "rsum": [B]}``.

    ``counts`` is :func:`resample_counts` (or a single row of ones: the metrics themselves).
    """
    n_clusters = counts.shape[1]
    out: dict[str, np.ndarray] = {}
    for direction, qv in values.items():
        if qv.cluster.size and (qv.cluster.min() < 0 or qv.cluster.max() >= n_clusters):
            raise ValueError(f"{direction}: a query's image is outside the {n_clusters} resampled images")
        names = list(qv.values)
        per_cluster = np.zeros((n_clusters, len(names)))
        for j, name in enumerate(names):
            per_cluster[:, j] = np.bincount(qv.cluster, weights=qv.values[name], minlength=n_clusters)
        queries_per_cluster = np.bincount(qv.cluster, minlength=n_clusters).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):  # a resample without any query of this direction: nan
            means = (counts @ per_cluster) / (counts @ queries_per_cluster)[:, None]
        for j, name in enumerate(names):
            out[f"{direction}_{name}"] = means[:, j]
    if all(f"{d}_{m}" in out for d, m in RSUM_PARTS):
        out["rsum"] = sum(out[f"{d}_{m}"] for d, m in RSUM_PARTS)
    return out


def two_level(per_seed: Sequence[Mapping[str, np.ndarray]], draws: np.ndarray) -> dict[str, np.ndarray]:
    """Average, per resample, the metrics of the seeds ``draws`` picks (each seed's metrics on the same images)."""
    names = set(per_seed[0]).intersection(*per_seed[1:])
    out = {}
    for name in sorted(names):
        stacked = np.stack([s[name] for s in per_seed])  # [S, B]
        out[name] = stacked[draws.T, np.arange(draws.shape[0])[None, :]].mean(axis=0)
    return out


def nest(flat: Mapping[str, object]) -> dict[str, object]:
    """``{"i2t_r1": x, "rsum": y}`` -> ``{"i2t": {"r1": x}, "rsum": y}``, the record's layout."""
    out: dict[str, object] = {}
    for name, value in flat.items():
        direction, sep, metric = name.partition("_")
        if sep:
            out.setdefault(direction, {})[metric] = value  # type: ignore[index]
        else:
            out[name] = value
    return out


def confidence_intervals(
    values: Mapping[str, QueryValues] | Sequence[Mapping[str, QueryValues]], n_images: int, cfg: BootstrapConfig
) -> dict[str, object]:
    """Percentile intervals of every mean metric and RSUM, nested as the record's ``ci95``; a sequence of per-seed
    values (the same queries, one entry per seed) gets the two-level interval over seeds and images."""
    per_seed = [values] if isinstance(values, Mapping) else list(values)
    counts = resample_counts(n_images, cfg.resamples, cfg.seed)
    samples = [resampled_metrics(v, counts) for v in per_seed]
    boot = samples[0] if len(samples) == 1 else two_level(samples, seed_draws(len(samples), cfg.resamples, cfg.seed))
    return nest({name: interval(s, cfg.level) for name, s in boot.items()})


def ci_key(level: float) -> str:
    """The record key of intervals at ``level``: ``ci95`` for 0.95."""
    return f"ci{100 * level:g}"


def interval(samples: np.ndarray, level: float) -> list[float]:
    """The two-sided percentile interval ``[lo, hi]`` of bootstrap ``samples`` (nan resamples ignored)."""
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.nanpercentile(samples, [tail, 100.0 - tail])
    return [float(lo), float(hi)]
