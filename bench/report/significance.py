"""Which table values are bold, and the intervals a table shows, from the rows' per-query results.

With per-query files for every row of a table, a column's best value is bold only when it is ahead of the runner-up
in a paired bootstrap over images (two-level over seeds when both rows have several) at ``p < alpha``; the ΔRSUM
column carries the paired interval of the difference to its baseline row; and ``intervals`` adds each value's
interval (one seed: the image bootstrap; several: the two-level one). A table with a row that has no per-query file
(records from before they existed, or ``[eval] per_query = false``) keeps the plain rule: the largest value is bold.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.errors import BenchError
from bench.report.uncertainty import CellValues, compare_cells, row_intervals, row_values
from bench.report.unimodal import is_unimodal
from bench.stats.bootstrap import BootstrapConfig
from bench.stats.paired import Comparison

__all__ = ["Significance", "build_significance"]

log = logging.getLogger(__name__)

Key = tuple[str, str, str, str]  # dataset, split, model, method


@dataclass
class Significance:
    """Per-query values of the table rows that have them, and the tests between them (computed on demand)."""

    alpha: float | None  # None: no tests, the largest value is bold (intervals only)
    cfg: BootstrapConfig
    intervals: bool
    cells: dict[Key, list[CellValues]]
    _pairs: dict[tuple[Key, Key], Comparison | None] = field(default_factory=dict)
    _cis: dict[Key, dict[str, Any]] = field(default_factory=dict)

    def covers(self, keys: Iterable[Key]) -> bool:
        """Every one of ``keys`` has per-query values."""
        return all(k in self.cells for k in keys)

    def comparison(self, a: Key, b: Key) -> Comparison | None:
        """A minus B (None when they cannot be paired: other queries, no common seed)."""
        if (a, b) not in self._pairs:
            try:
                self._pairs[(a, b)] = compare_cells(self.cells[a], self.cells[b], self.cfg)
            except BenchError as e:
                log.warning("%s vs %s: not compared (%s)", "/".join(a), "/".join(b), e)
                self._pairs[(a, b)] = None
        return self._pairs[(a, b)]

    def best_rows(self, sub: pd.DataFrame, col: str) -> set[Any]:
        """The row whose ``col`` is largest, if significantly ahead of the runner-up; else none."""
        values = sub[col].dropna()
        if len(values) < 2:
            return set()
        order = values.sort_values(ascending=False)
        best, runner = order.index[0], order.index[1]
        result = self.comparison(_key(sub.loc[best]), _key(sub.loc[runner]))
        if result is None or col not in result.p:
            return set()
        alpha = 0.0 if self.alpha is None else self.alpha
        return {best} if result.delta[col] > 0 and result.p[col] < alpha else set()

    def delta_interval(self, row: pd.Series, baseline: str) -> list[float] | None:
        """The interval of ``row``'s ΔRSUM against the same model's ``baseline`` row."""
        key = _key(row)
        base = (key[0], key[1], key[2], baseline)
        if key == base or key not in self.cells or base not in self.cells:
            return None
        result = self.comparison(key, base)
        return None if result is None or "rsum" not in result.ci else result.ci["rsum"]

    def interval(self, row: pd.Series, col: str) -> list[float] | None:
        """``col``'s interval for ``row`` (``i2t_r1``, ``rsum``, ...), when intervals are shown."""
        key = _key(row)
        if not self.intervals or key not in self.cells:
            return None
        if key not in self._cis:
            self._cis[key] = row_intervals(self.cells[key], self.cfg)
        ci = self._cis[key]
        if col == "rsum":
            return ci.get("rsum")  # type: ignore[return-value]
        direction, _, metric = col.partition("_")
        return (ci.get(direction) or {}).get(metric)

    def rule(self) -> str:
        """The bold rule, for captions."""
        return (
            f"bold: the best value, only where it is ahead of the runner-up at p < {self.alpha:g} (paired bootstrap "
            f"over images, {self.cfg.resamples} resamples; over seeds and images for several seeds)"
        )


def _key(row: pd.Series) -> Key:
    return str(row["dataset"]), str(row["split"]), str(row["model"]), str(row["method"])


def build_significance(
    records: Iterable[Mapping[str, Any]], *, alpha: float | None, cfg: BootstrapConfig, intervals: bool
) -> Significance:
    """Load the per-query values of every table row whose ``ok`` records all have a readable per-query file."""
    rows: dict[Key, list[Mapping[str, Any]]] = {}
    for rec in records:
        if rec.get("status") == "ok" and not is_unimodal(rec):  # the table's rows: image-text records
            key = (str(rec["dataset"]), str(rec["split"]), str(rec["model"]), str(rec["method"]))
            rows.setdefault(key, []).append(rec)
    cells: dict[Key, list[CellValues]] = {}
    for key, recs in rows.items():
        if not all(isinstance(r.get("per_query"), dict) for r in recs):
            continue
        try:
            cells[key] = row_values(recs)
        except BenchError as e:
            log.warning("%s: %s; its table marks the largest values instead", "/".join(key), e)
    return Significance(alpha=alpha, cfg=cfg, intervals=intervals, cells=cells)
