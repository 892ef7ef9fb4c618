"""Paired comparison of two cells (or two methods across their seeds) on the same queries.

* Paired bootstrap: both sides are resampled with the *same* image draws (:mod:`bench.stats.bootstrap`), so the
  spread of a difference excludes what the two share (the hard queries are hard for both). The p-value is the
  two-sided bootstrap one, ``min(1, 2 * min(1 + #(delta* <= 0), 1 + #(delta* >= 0)) / (B + 1))``: 1 for two
  identical models, and never below ``2 / (B + 1)`` (B resamples cannot show a smaller one).
  Across seeds, seeds are paired by position and the resample is two-level (seeds and images).
* Exact McNemar test on the R@1 hits of each direction: with ``b`` queries that only A gets right and ``c`` that only
  B does, ``p = min(1, 2 * P(Binomial(b + c, 1/2) <= min(b, c)))`` (1 when ``b + c = 0``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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

__all__ = ["Comparison", "compare", "mcnemar_exact", "bootstrap_p_value"]

Side = Mapping[str, QueryValues]


@dataclass(frozen=True)
class Comparison:
    """A minus B for every shared metric: the observed difference, its interval and p-value, and McNemar on R@1."""

    delta: dict[str, float]
    a: dict[str, float]  # each side's observed metric, the mean over its seeds
    b: dict[str, float]
    ci: dict[str, list[float]]
    p: dict[str, float]
    mcnemar: dict[str, dict[str, Any]]  # direction -> {"a_only", "b_only", "p"} (per seed pair: lists)
    n_seeds: int
    config: BootstrapConfig

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        metrics = {
            name: {"a": self.a[name], "b": self.b[name], "delta": self.delta[name], "ci": self.ci[name],
                   "p": self.p[name]}
            for name in self.delta
        }
        return {
            "metrics": metrics,
            "mcnemar_r1": self.mcnemar,
            "n_seeds": self.n_seeds,
            "bootstrap": {"resamples": self.config.resamples, "seed": self.config.seed, "level": self.config.level,
                          "unit": "image"},
        }  # fmt: skip


def bootstrap_p_value(samples: np.ndarray) -> float:
    """Two-sided bootstrap p-value of a difference being 0."""
    s = samples[~np.isnan(samples)]
    if s.size == 0:
        return float("nan")
    below, above = int(np.sum(s <= 0)), int(np.sum(s >= 0))
    return float(min(1.0, 2.0 * (1 + min(below, above)) / (s.size + 1)))


def mcnemar_exact(hits_a: np.ndarray, hits_b: np.ndarray) -> dict[str, Any]:
    """Exact (binomial) McNemar test of two paired 0/1 outcome vectors."""
    a, b = np.asarray(hits_a, dtype=bool), np.asarray(hits_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"McNemar needs paired outcomes, got {a.shape} and {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n, m = only_a + only_b, min(only_a, only_b)
    # P(X <= m) for X ~ Binomial(n, 1/2), summed in log space so large n cannot overflow.
    if n == 0:
        p = 1.0
    else:
        log_n = math.lgamma(n + 1) - n * math.log(2)
        logs = [log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(m + 1)]
        top = max(logs)
        p = min(1.0, 2.0 * math.exp(top) * sum(math.exp(x - top) for x in logs))
    return {"a_only": only_a, "b_only": only_b, "p": p}


def _check_paired(a: Side, b: Side, where: str) -> list[str]:
    shared = [d for d in a if d in b]
    for d in shared:
        if not np.array_equal(a[d].queries, b[d].queries):
            raise ValueError(f"{where}: {d} queries differ between the two sides; they are not the same problem")
    return shared


def compare(a: Side | Sequence[Side], b: Side | Sequence[Side], n_images: int, cfg: BootstrapConfig) -> Comparison:
    """A minus B on the same queries: one cell each, or a sequence of per-seed cells each (paired by position)."""
    side_a = [a] if isinstance(a, Mapping) else list(a)
    side_b = [b] if isinstance(b, Mapping) else list(b)
    if len(side_a) != len(side_b) or not side_a:
        raise ValueError(f"paired seeds: {len(side_a)} cells against {len(side_b)}")
    pairs = list(zip(side_a, side_b, strict=True))
    shared = [_check_paired(x, y, f"seed pair {i}") for i, (x, y) in enumerate(pairs)][0]
    counts = resample_counts(n_images, cfg.resamples, cfg.seed)
    ones = np.ones((1, n_images))
    boot, observed = [], []
    for x, y in pairs:
        ra, rb = resampled_metrics(x, counts), resampled_metrics(y, counts)
        oa, ob = resampled_metrics(x, ones), resampled_metrics(y, ones)
        names = [n for n in ra if n in rb]
        boot.append({n: ra[n] - rb[n] for n in names})
        observed.append({n: (float(oa[n][0]), float(ob[n][0])) for n in names})
    samples = boot[0] if len(boot) == 1 else two_level(boot, seed_draws(len(boot), cfg.resamples, cfg.seed))
    mean_a = {n: float(np.mean([o[n][0] for o in observed])) for n in samples}
    mean_b = {n: float(np.mean([o[n][1] for o in observed])) for n in samples}
    delta = {n: float(np.mean([o[n][0] - o[n][1] for o in observed])) for n in samples}
    mcnemar: dict[str, dict[str, Any]] = {}
    for d in shared:
        if "r1" not in side_a[0][d].values:
            continue
        tests = [mcnemar_exact(x[d].values["r1"] > 0, y[d].values["r1"] > 0) for x, y in pairs]
        mcnemar[d] = tests[0] if len(tests) == 1 else {k: [t[k] for t in tests] for k in tests[0]}
    return Comparison(
        delta=delta,
        a=mean_a,
        b=mean_b,
        ci={n: interval(s, cfg.level) for n, s in samples.items()},
        p={n: bootstrap_p_value(s) for n, s in samples.items()},
        mcnemar=mcnemar,
        n_seeds=len(side_a),
        config=cfg,
    )
