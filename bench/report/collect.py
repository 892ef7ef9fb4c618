"""Result records -> one frame: a row per (dataset, split, model, method), seeds aggregated (mean, sample std, count).

The conventions every table format shares (n/a versus –, dropped empty groups, problem rows) are described in
:mod:`bench.report.tables`; the constants here name the metric groups and columns those formats print.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.report.unimodal import (
    UniColumn,
    is_unimodal,
    orphan_cells,
    uni_column,
    unimodal_columns,
    unimodal_rows,
)

__all__ = [
    "DASH",
    "GROUPS",
    "KEY_COLUMNS",
    "K_LABEL",
    "METRIC_COLUMNS",
    "NA",
    "PROBLEM_STATUSES",
    "ZEROSHOT",
    "TableError",
    "collect",
    "group_columns",
    "uni_columns",
    "visible_groups",
    "with_delta",
]

log = logging.getLogger(__name__)

ZEROSHOT = "zeroshot"
PROBLEM_STATUSES: frozenset[str] = frozenset({"unavailable", "failed"})

# (record key, Markdown label, LaTeX label, recall keys); RSUM is a single column with no recall keys.
GROUPS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("i2t", "i2t", r"Image $\to$ Text", ("r1", "r5", "r10")),
    ("t2i", "t2i", r"Text $\to$ Image", ("r1", "r5", "r10")),
    ("rsum", "RSUM", "RSUM", ()),
    ("t2t", "t2t", r"Text $\to$ Text", ("r1", "r5", "r10")),
    ("i2i", "i2i", r"Image $\to$ Image", ("r1", "r5", "r10")),
)
K_LABEL = {"r1": "R@1", "r5": "R@5", "r10": "R@10"}
KEY_COLUMNS = ["dataset", "split", "model", "method"]
DASH = "–"  # en dash: "no value here", as opposed to "n/a" (cannot exist for this model)
NA = "n/a"


class TableError(BenchError, ValueError):
    """Records that cannot be tabulated (none at all, no match for a filter, a record without its cell keys)."""


def group_columns(group: str) -> list[str]:
    ks = next(g[3] for g in GROUPS if g[0] == group)
    return [f"{group}_{k}" for k in ks] if ks else [group]


METRIC_COLUMNS: list[str] = [c for g in GROUPS for c in group_columns(g[0])]


# --------------------------------------------------------------------------------------------------------------------
# collect


def _cell_key(rec: Mapping[str, Any]) -> tuple[str, str, str, str]:
    missing = [k for k in KEY_COLUMNS if rec.get(k) is None]
    if missing:
        raise TableError(f"record {rec.get('_path', '(in memory)')} lacks {', '.join(missing)}")
    return (str(rec["dataset"]), str(rec["split"]), str(rec["model"]), str(rec["method"]))


def _number(rec: Mapping[str, Any], key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TableError(f"record {rec.get('_path', '(in memory)')}: metrics.{key} is not a number ({value!r})")
    return float(value)


def _record_values(rec: Mapping[str, Any]) -> tuple[dict[str, float], set[str]]:
    """The numeric metric values of one record, and the groups it marks n/a (``null``)."""
    metrics = rec.get("metrics") or {}
    values: dict[str, float] = {}
    na: set[str] = set()
    for group, _, _, ks in GROUPS:
        if group not in metrics:
            continue
        block = metrics[group]
        if block is None:
            na.add(group)
        elif not ks:
            values[group] = _number(rec, group, block)
        else:
            for k in ks:
                if isinstance(block, Mapping) and block.get(k) is not None:
                    values[f"{group}_{k}"] = _number(rec, f"{group}.{k}", block[k])
    if "rsum" not in metrics:
        # Older or hand-written records may omit RSUM; it is fully determined by i2t and t2i R@1/5/10.
        parts = group_columns("i2t") + group_columns("t2i")
        if all(c in values for c in parts):
            values["rsum"] = sum(values[c] for c in parts)
        elif {"i2t", "t2i"} & na:
            na.add("rsum")
    return values, na


def _dedupe_seeds(recs: list[Mapping[str, Any]], key: tuple[str, ...]) -> list[Mapping[str, Any]]:
    by_seed: dict[Any, Mapping[str, Any]] = {}
    unseeded: list[Mapping[str, Any]] = []
    for r in recs:
        seed = r.get("seed")
        if seed is None:
            unseeded.append(r)
            continue
        if seed in by_seed:
            log.warning("cell %s has two records for seed %s; keeping the later one", "/".join(key), seed)
        by_seed[seed] = r
    return [*by_seed.values(), *unseeded]


def _problem_note(recs: list[Mapping[str, Any]], bad: list[Mapping[str, Any]]) -> str:
    notes: list[str] = []
    for r in bad:
        text = f"{r['status']}: {r['reason']}" if r.get("reason") else str(r["status"])
        if len(bad) < len(recs):
            text = f"seed {r.get('seed', '?')} {text}"
        notes.append(text)
    return "; ".join(dict.fromkeys(notes))


def long_text_note(recs: list[Mapping[str, Any]]) -> str:
    """What a row's records say of captions longer than the model's context, when any was cut or split (the first
    seed's counts: every seed reads the same captions with the same tokenizer)."""
    lt = next((r["long_text"] for r in recs if isinstance(r.get("long_text"), Mapping)), None)
    if lt is None or (lt.get("rule") == "truncate" and not lt.get("truncated")):
        return ""
    if "context" not in lt:
        return "long captions: sentence means" if lt.get("rule") == "sentences" else ""
    unit = "sentences" if lt.get("rule") == "sentences" else "captions"
    share = 100 * lt.get("share", 0)
    cut = f"{lt['truncated']:,} of {lt.get(unit, 0):,} {unit} ({share:.1f}%) cut at {lt['context']} tokens"
    return f"long captions: sentence means; {cut}" if lt.get("rule") == "sentences" else f"long captions: {cut}"


def regions_note(recs: list[Mapping[str, Any]]) -> str:
    """What a row's region features are, where its records say they are not detector regions: grid cells of a
    backbone written by ``bench precomp`` (numbers not comparable with detector-region papers)."""
    reg = next((r["regions"] for r in recs if isinstance(r.get("regions"), Mapping)), None)
    if reg is None or reg.get("features") != "grid cells":
        return ""
    grid = reg.get("grid")
    shape = f" {grid[0]}x{grid[1]}" if isinstance(grid, list) and len(grid) == 2 else ""
    return f"regions: {reg.get('backbone', 'a backbone')}{shape} grid cells, not detector regions"


def _aggregate(key: tuple[str, str, str, str], recs: list[Mapping[str, Any]]) -> dict[str, Any]:
    recs = _dedupe_seeds(recs, key)
    bad = [r for r in recs if r.get("status") in PROBLEM_STATUSES]
    ok = [r for r in recs if r.get("status") not in PROBLEM_STATUSES]
    row: dict[str, Any] = dict(zip(KEY_COLUMNS, key, strict=True))
    row["status"] = "ok" if ok or not bad else str(bad[0]["status"])  # no records: a row of uni-modal columns only
    row["seeds"] = len(ok)
    parsed = [_record_values(r) for r in ok]
    for col in METRIC_COLUMNS:
        nums = [v[col] for v, _ in parsed if col in v]
        row[col] = float(np.mean(nums)) if nums else math.nan
        row[f"{col}_std"] = float(np.std(nums, ddof=1)) if len(nums) > 1 else math.nan
    for group, *_ in GROUPS:
        n_na = sum(group in na for _, na in parsed)
        if 0 < n_na < len(parsed):
            log.warning(
                "cell %s: %s is null in %d of %d seeds; averaging the others", "/".join(key), group, n_na, len(parsed)
            )
        row[f"{group}_na"] = bool(parsed) and n_na == len(parsed)
    notes = [_problem_note(recs, bad) if bad else "", long_text_note(ok), regions_note(ok)]
    row["note"] = "; ".join(n for n in notes if n)
    return row


def _frame_columns() -> list[str]:
    cols = [*KEY_COLUMNS, "status", "seeds"]
    for c in METRIC_COLUMNS:
        cols += [c, f"{c}_std"]
    return [*cols, *(f"{g[0]}_na" for g in GROUPS), "note"]


def collect(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Aggregate result records over seeds into one row per (dataset, split, model, method).

    Args:
        records: Result records as documented in :mod:`bench.grid.records` (e.g. from ``iter_records``).

    Returns:
        A frame with key columns ``dataset, split, model, method``, ``status`` (``ok`` when any seed succeeded, else
        the problem status), ``seeds`` (successful seeds), each metric (``i2t_r1`` ... ``rsum`` ... ``i2i_r10``) as
        the mean over seeds with a ``<metric>_std`` sample std (NaN for one seed), boolean ``<group>_na`` columns
        (the group is null, i.e. n/a, in every seed) and ``note`` (why a seed or the whole cell is missing). Rows
        follow first appearance of dataset/split, then model, then method, with ``zeroshot`` first. Uni-modal
        records add ``uni|<task>|<dataset>|<metric>`` columns (and ``_std``) to the rows they join.

    Raises:
        TableError: A record lacks one of its cell keys.
    """
    cells: dict[tuple[str, str, str, str], list[Mapping[str, Any]]] = {}
    uni: list[Mapping[str, Any]] = []
    for rec in records:
        if is_unimodal(rec):
            _cell_key(rec)
            uni.append(rec)
        else:
            cells.setdefault(_cell_key(rec), []).append(rec)
    uni_rows, uni_cols = unimodal_rows(uni)
    for key in orphan_cells(uni_rows, list(cells)):
        cells.setdefault(key, [])
    # Insertion order of `cells` is first appearance, so the ranks below are too.
    group_rank: dict[tuple[str, ...], int] = {}
    model_rank: dict[tuple[str, ...], int] = {}
    method_rank: dict[tuple[str, ...], int] = {}
    for d, s, m, meth in cells:
        group_rank.setdefault((d, s), len(group_rank))
        model_rank.setdefault((d, s, m), len(model_rank))
        method_rank.setdefault((d, s, meth), len(method_rank))

    def rank(c: tuple[str, str, str, str]) -> tuple[int, int, bool, int]:
        return group_rank[c[:2]], model_rank[c[:3]], c[3] != ZEROSHOT, method_rank[(c[0], c[1], c[3])]

    rows = [_aggregate(key, cells[key]) for key in sorted(cells, key=rank)]
    df = pd.DataFrame(rows, columns=_frame_columns()).astype({"seeds": int})
    return unimodal_columns(df, uni_cols, uni_rows) if uni_cols else df


def uni_columns(df: pd.DataFrame, *, shown_only: bool) -> list[UniColumn]:
    """The uni-modal columns of ``df`` that hold a number (and are shown in Markdown/LaTeX, with ``shown_only``)."""
    out = []
    for name in df.columns:
        if name.startswith("uni|") and not name.endswith("_std"):
            col = uni_column(name)
            if (col.shown or not shown_only) and df[name].notna().any():
                out.append(col)
    return out


def with_delta(df: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Add ``delta_rsum``: RSUM minus the same model's ``baseline``-method RSUM on the same dataset/split."""
    base = df[(df["method"] == baseline) & (df["status"] == "ok")].set_index(["dataset", "split", "model"])["rsum"]
    if base.empty:
        log.warning("no records of baseline method %r; the ΔRSUM column stays blank", baseline)
    lookup = base.reindex(pd.MultiIndex.from_frame(df[["dataset", "split", "model"]])).to_numpy()
    delta = df["rsum"].to_numpy(dtype=float) - lookup
    delta[(df["method"] == baseline).to_numpy()] = math.nan
    df = df.copy()
    df.insert(df.columns.get_loc("rsum_std") + 1, "delta_rsum", delta)
    return df


def visible_groups(df: pd.DataFrame) -> list[str]:
    """Metric groups with at least one number in ``df`` (a group that is all n/a or absent says nothing)."""
    return [g[0] for g in GROUPS if df[group_columns(g[0])].notna().to_numpy().any()]
