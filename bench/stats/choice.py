"""Bootstrap intervals over items and paired tests for choice sets (:mod:`bench.scoring.choice`).

The unit is the item: a resample draws items with replacement (:func:`bench.stats.bootstrap.resample_counts`), and
every accuracy and average of the resample is computed from the same draw, so two models scored on the same items
share their draws and their difference is paired. Across seeds the interval is two-level, as for image-text cells.
McNemar's exact test compares two cells' outcomes item by item.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bench.scoring.choice import ChoiceOutcomes, accuracies
from bench.stats.bootstrap import BootstrapConfig, interval, resample_counts, seed_draws, two_level
from bench.stats.paired import bootstrap_p_value, mcnemar_exact

__all__ = ["choice_intervals", "compare_choice", "flat_accuracies"]


def flat_accuracies(c: ChoiceOutcomes, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """:func:`~bench.scoring.choice.accuracies` with ``kind/name`` keys: ``{"text/swap_obj": [B], ...}``."""
    return {f"{kind}/{name}": v for kind, block in accuracies(c.outcomes, c.subsets, c.groups, weights).items()
            for name, v in block.items()}  # fmt: skip


def _nested(flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        kind, _, name = key.partition("/")
        out.setdefault(kind, {})[name] = value
    return out


def choice_intervals(cells: ChoiceOutcomes | Sequence[ChoiceOutcomes], cfg: BootstrapConfig) -> dict[str, Any]:
    """Percentile intervals of every accuracy, nested as the record's ``metrics["choice"]``; several cells (one per
    seed, the same items) get the two-level interval over seeds and items."""
    per_seed = [cells] if isinstance(cells, ChoiceOutcomes) else list(cells)
    counts = resample_counts(len(per_seed[0].item_ids), cfg.resamples, cfg.seed)
    samples = [flat_accuracies(c, counts) for c in per_seed]
    boot = samples[0] if len(samples) == 1 else two_level(samples, seed_draws(len(samples), cfg.resamples, cfg.seed))
    return _nested({name: interval(s, cfg.level) for name, s in boot.items()})


def _check_items(a: ChoiceOutcomes, b: ChoiceOutcomes) -> None:
    if not np.array_equal(a.item_ids, b.item_ids) or not np.array_equal(a.subsets, b.subsets):
        raise ValueError("the two sides were scored on different items; they are not the same problem")


def compare_choice(a: Sequence[ChoiceOutcomes], b: Sequence[ChoiceOutcomes], cfg: BootstrapConfig) -> dict[str, Any]:
    """A minus B on the same items (per-seed cells paired by position): for every accuracy the observed values,
    the difference, its paired-bootstrap interval and p-value; and McNemar's exact test on each test's outcomes.

    Returns:
        ``{"metrics": {"text/mean": {a, b, delta, ci, p}, ...}, "mcnemar": {kind: {a_only, b_only, p}}, "n_seeds",
        "bootstrap": {..., "unit": "item"}}``; McNemar holds lists (one entry per seed pair) for several seeds.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"paired seeds: {len(a)} cells against {len(b)}")
    for x, y in zip(a, b, strict=True):
        _check_items(x, y)
    counts = resample_counts(len(a[0].item_ids), cfg.resamples, cfg.seed)
    boot, observed = [], []
    for x, y in zip(a, b, strict=True):
        ra, rb = flat_accuracies(x, counts), flat_accuracies(y, counts)
        oa, ob = flat_accuracies(x), flat_accuracies(y)
        names = [n for n in ra if n in rb]
        boot.append({n: ra[n] - rb[n] for n in names})
        observed.append({n: (float(oa[n][0]), float(ob[n][0])) for n in names})
    samples = boot[0] if len(boot) == 1 else two_level(boot, seed_draws(len(boot), cfg.resamples, cfg.seed))
    metrics = {
        n: {"a": float(np.mean([o[n][0] for o in observed])), "b": float(np.mean([o[n][1] for o in observed])),
            "delta": float(np.mean([o[n][0] - o[n][1] for o in observed])), "ci": interval(s, cfg.level),
            "p": bootstrap_p_value(s)}
        for n, s in samples.items()
    }  # fmt: skip
    mcnemar: dict[str, dict[str, Any]] = {}
    for kind in a[0].outcomes:
        if np.isnan(a[0].outcomes[kind]).all():
            continue
        tests = []
        for x, y in zip(a, b, strict=True):
            keep = ~np.isnan(x.outcomes[kind]) & ~np.isnan(y.outcomes[kind])
            tests.append(mcnemar_exact(x.outcomes[kind][keep] > 0, y.outcomes[kind][keep] > 0))
        mcnemar[kind] = tests[0] if len(tests) == 1 else {k: [t[k] for t in tests] for k in tests[0]}
    bootstrap = {"resamples": cfg.resamples, "seed": cfg.seed, "level": cfg.level, "unit": "item"}
    return {"metrics": metrics, "mcnemar": mcnemar, "n_seeds": len(a), "bootstrap": bootstrap}
