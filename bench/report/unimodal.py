"""Uni-modal columns of the result tables: records of eval-only tasks (image retrieval, STS) pivoted onto the ITR rows.

A uni-modal record (its task is eval-only, :attr:`bench.tasks.Task.eval_only`) belongs to the row of its model and
method in the table of the image-text dataset it was trained on (``train_dataset``); a zero-shot record belongs to its
model's zero-shot row in every table. Each uni-modal dataset becomes the columns its task names
(:meth:`bench.tasks.Task.columns`): ``<dataset> R@1`` and ``<dataset> mAP@R`` for image retrieval, ``<dataset> ρ``
(mean Spearman x 100 over its files) for STS; CSV also carries R@2/4/8, R-Precision and each file's ρ. A row without a
record for a dataset shows "–". A record whose row has no ITR result adds that row (ITR columns "–"); with no ITR
records at all, the rows form one table named ``uni-modal``. Records of a task kind that is not installed are left
out, with a warning.

Frame columns are named ``uni|<task>|<dataset>|<metric>`` (plus ``_std``), so the renderers can find them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import UnknownNameError
from bench.tasks import get_task, list_tasks, task_of_record

log = logging.getLogger(__name__)

__all__ = [
    "UniColumn",
    "is_unimodal",
    "orphan_cells",
    "train_dataset_of",
    "uni_column",
    "unimodal_columns",
    "unimodal_rows",
]

_PROBLEMS = frozenset({"unavailable", "failed"})
UNIMODAL_GROUP = "uni-modal"  # table name when there are no ITR records to join


def is_unimodal(rec: Mapping[str, Any]) -> bool:
    """Whether a record is of an eval-only task (image retrieval, STS, a plug-in's): its numbers are columns joined
    onto the image-text rows, not rows of their own."""
    try:
        return get_task(task_of_record(rec)).eval_only
    except UnknownNameError:  # a plug-in's task that is not installed here: not an image-text row either
        return True


def train_dataset_of(rec: Mapping[str, Any]) -> str | None:
    """The image-text dataset a uni-modal record's model was trained on (None: zero-shot)."""
    if rec.get("train_dataset") is not None:
        return str(rec["train_dataset"])
    snap = (rec.get("config") or {}).get("train_dataset")
    return str(snap["name"]) if isinstance(snap, Mapping) and "name" in snap else None


@dataclass(frozen=True)
class UniColumn:
    """One uni-modal frame column."""

    name: str  # frame column, "uni|<task>|<dataset>|<metric>"
    dataset: str  # dataset label (with the split when it is not the first split seen)
    task: str
    label: str  # Markdown header suffix: "R@1", "mAP@R", "ρ"
    tex: str  # LaTeX sub-header
    shown: bool  # in Markdown and LaTeX (CSV shows every column)
    csv: str  # CSV column: "<dataset>_<metric>" (cub_r1, stsb_rho_mean)


def _record_values(rec: Mapping[str, Any], label: str, task: str) -> dict[str, float]:
    values = get_task(task).values(rec.get("metrics") or {})
    return {f"uni|{task}|{label}|{key}": value for key, value in values.items()}


def _columns(task: str, label: str, keys: Iterable[str]) -> list[UniColumn]:
    return [
        UniColumn(f"uni|{task}|{label}|{c.key}", label, task, c.label, c.tex, c.shown, f"{label}_{c.csv or c.key}")
        for c in get_task(task).columns(keys)
    ]


def uni_column(name: str) -> UniColumn:
    """The :class:`UniColumn` of a frame column name ``uni|<task>|<dataset>|<metric>``."""
    _, task, dataset, metric = name.split("|", 3)
    return next(c for c in _columns(task, dataset, [metric]) if c.name == name)


def unimodal_rows(records: Iterable[Mapping[str, Any]]) -> tuple[dict[tuple[str, str, str | None], dict], list]:
    """Aggregate uni-modal records over seeds, per (model, method, train dataset).

    Returns:
        ``(rows, columns)``: ``rows[(model, method, train_dataset or None)]`` holds the mean (``<col>``) and sample
        std (``<col>_std``) of every column, ``seeds``, ``split`` and ``note`` (problems, one per dataset); columns
        are :class:`UniColumn`, image sets before STS sets, each in order of first appearance.
    """
    by_cell: dict[tuple[str, str, str | None], dict[str, dict[Any, Mapping[str, Any]]]] = {}
    labels: dict[tuple[str, str], tuple[str, str]] = {}  # (dataset, split) -> (label, task)
    first_split: dict[str, str] = {}
    known = set(list_tasks())
    for rec in records:
        if task_of_record(rec) not in known:
            log.warning("%s/%s: task %r is not installed here; its record is left out of the tables",
                        rec.get("dataset"), rec.get("split"), task_of_record(rec))  # fmt: skip
            continue
        dataset, split = str(rec.get("dataset")), str(rec.get("split"))
        first_split.setdefault(dataset, split)
        label = dataset if first_split[dataset] == split else f"{dataset} ({split})"
        labels.setdefault((dataset, split), (label, task_of_record(rec)))
        key = (str(rec.get("model")), str(rec.get("method")), train_dataset_of(rec))
        # Keep one record per seed and dataset (the later one, as ITR aggregation does).
        by_cell.setdefault(key, {}).setdefault(label, {})[rec.get("seed")] = rec
    rows: dict[tuple[str, str, str | None], dict] = {}
    keys_seen: dict[str, set[str]] = {}
    for key, per_dataset in by_cell.items():
        row: dict[str, Any] = {"seeds": 0, "note": [], "split": None, "ok": False}
        for label, seeds in per_dataset.items():
            task = next(t for (lab, t) in labels.values() if lab == label)
            ok = [r for r in seeds.values() if r.get("status") not in _PROBLEMS]
            for r in seeds.values():
                row["split"] = row["split"] or str(r.get("split"))
                if r.get("status") in _PROBLEMS:
                    reason = f"{r['status']}: {r['reason']}" if r.get("reason") else str(r["status"])
                    row["note"].append(f"{label}: {reason}")
            values = [_record_values(r, label, task) for r in ok]
            row["ok"] = row["ok"] or bool(ok)
            row["seeds"] = max(row["seeds"], len(ok))
            for col in {c for v in values for c in v}:
                nums = [v[col] for v in values if col in v]
                row[col] = float(np.mean(nums))
                row[f"{col}_std"] = float(np.std(nums, ddof=1)) if len(nums) > 1 else math.nan
                keys_seen.setdefault(label, set()).add(col.rsplit("|", 1)[1])
        row["note"] = "; ".join(dict.fromkeys(row["note"]))
        rows[key] = row
    # Tasks by their report_order (image sets before STS, as the paper's Tables 10 and 11); datasets of a task in
    # order of first appearance.
    sets = sorted(dict.fromkeys(labels.values()), key=lambda lt: get_task(lt[1]).report_order)
    columns = [c for lab, task in sets for c in _columns(task, lab, keys_seen.get(lab, ()))]
    return rows, columns


def orphan_cells(
    rows: Mapping[tuple[str, str, str | None], dict], itr_cells: Iterable[tuple[str, str, str, str]]
) -> list[tuple[str, str, str, str]]:
    """Table cells (dataset, split, model, method) to add for uni-modal rows that join no ITR row."""
    itr_cells = list(itr_cells)
    groups = list(dict.fromkeys((d, s) for d, s, _, _ in itr_cells))
    have = {(m, meth, d) for d, _, m, meth in itr_cells}
    split_of = dict(reversed(groups))  # dataset -> its first split
    out: list[tuple[str, str, str, str]] = []
    for (model, method, train), row in rows.items():
        if train is not None:
            if (model, method, train) not in have:
                out.append((train, split_of.get(train, row["split"] or "test"), model, method))
    trained_groups = list(dict.fromkeys((d, s) for d, s, _, _ in out))
    targets = groups + [g for g in trained_groups if g not in groups] or [(UNIMODAL_GROUP, "test")]
    for model, method, train in rows:
        if train is None and not any(m == model and meth == method for _, _, m, meth in itr_cells):
            out += [(d, s, model, method) for d, s in targets]
    return list(dict.fromkeys(out))


def unimodal_columns(df: pd.DataFrame, columns: list[UniColumn], rows: Mapping) -> pd.DataFrame:
    """Add the uni-modal columns to the ITR frame ``df``, joined on (model, method, train dataset).

    A row looks for the record trained on its own dataset first, then for a zero-shot (untrained) one.
    """
    df = df.copy()
    values: dict[str, list[float]] = {c: [] for col in columns for c in (col.name, f"{col.name}_std")}
    notes, seeds = list(df["note"]), list(df["seeds"])
    for i, (dataset, model, method) in enumerate(zip(df["dataset"], df["model"], df["method"], strict=True)):
        row = rows.get((model, method, dataset)) or rows.get((model, method, None)) or {}
        for c in values:
            values[c].append(row.get(c, math.nan))
        if row.get("note"):
            notes[i] = "; ".join(n for n in (notes[i], row["note"]) if n)
        if row.get("ok") and df["status"].iloc[i] == "ok":
            seeds[i] = max(seeds[i], row["seeds"])
    for c, v in values.items():
        df[c] = v
    df["note"], df["seeds"] = notes, seeds
    return df
