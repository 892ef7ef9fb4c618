"""Sweep results: the variant chosen on validation, every variant side by side, and the metric against each value.

A sweep's records (:mod:`bench.grid.sweep`) share a model, dataset, split and method and differ in ``variant``. Three
views read them:

* :func:`select_variants` keeps, per (dataset, split, model, method), the variant whose mean validation score over
  its seeds is best: the score training selects its epoch by (``select_metric``, RSUM by default), read from the
  record's history at its selected epoch. The test split plays no part in the choice.
* :func:`render_variants` tabulates every variant, its swept values as columns, with its validation score, its test
  numbers and which one :func:`select_variants` picks.
* :func:`plot_sweep` draws validation and test metric against each swept value, one line per setting of the other
  keys, seeds as a band (min to max).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from bench.errors import BenchError
from bench.grid.sweep import base_method, format_value, value_sort_key, variant_sort_key
from bench.report.escape import latex_escape

__all__ = ["Choice", "plot_sweep", "render_variants", "select_variants", "swept_records", "val_score"]

Record = Mapping[str, Any]
_TEST_COLUMNS = (
    ("i2t R@1", ("i2t", "r1")), ("t2i R@1", ("t2i", "r1")), ("RSUM", ("rsum",)), ("t2t R@1", ("t2t", "r1")),
)  # fmt: skip


@dataclass(frozen=True)
class Choice:
    """The variant :func:`select_variants` kept for one (dataset, split, model, method)."""

    dataset: str
    split: str
    model: str
    method: str  # the registered method
    chosen: str  # the chosen variant's id
    variants: int  # how many variants it was chosen from
    metric: str  # the validation metric (the records' select_metric)
    val: float  # the chosen variant's mean validation score

    @property
    def note(self) -> str:
        """One line saying what was chosen, from how many, on what."""
        return (f"{self.model} {self.method} on {self.dataset} ({self.split}): {self.chosen}, best of "
                f"{self.variants} variants on val {self.metric} ({self.val:.1f}); test not used")  # fmt: skip


def val_score(record: Record) -> float | None:
    """The record's validation score at its selected epoch (the number its epoch was chosen by); None for a method
    that does not train."""
    history, epoch = record.get("history"), record.get("selected_epoch")
    if not isinstance(history, list) or not isinstance(epoch, int) or not 1 <= epoch <= len(history):
        return None
    value = history[epoch - 1].get("val") if isinstance(history[epoch - 1], dict) else None
    return float(value) if isinstance(value, int | float) else None


def _group(record: Record) -> tuple[str, str, str, str]:
    return (str(record.get("dataset")), str(record.get("split")), str(record.get("model")),
            base_method(str(record.get("method"))))  # fmt: skip


def swept_records(records: Iterable[Record]) -> list[Record]:
    """The ``ok`` records that belong to a sweep (of a group whose records carry a ``variant``)."""
    records = [r for r in records if r.get("status") == "ok"]
    swept = {_group(r) for r in records if r.get("variant")}
    return [r for r in records if _group(r) in swept]


def _by_variant(records: Iterable[Record]) -> dict[tuple[str, str, str, str], dict[str, list[Record]]]:
    out: dict[tuple[str, str, str, str], dict[str, list[Record]]] = {}
    for r in swept_records(records):
        out.setdefault(_group(r), {}).setdefault(str(r.get("method")), []).append(r)
    return out


def _mean_val(recs: list[Record]) -> float | None:
    vals = [val_score(r) for r in recs]
    return None if not vals or any(v is None for v in vals) else float(np.mean(vals))


def select_variants(records: Iterable[Record]) -> tuple[list[Record], list[Choice]]:
    """Per (dataset, split, model, method) with sweep variants, only the records of the variant best on validation
    (mean over its seeds; ties go to the variant listed first); every other record as it is.

    Raises:
        BenchError: a variant without a validation score (a method that does not train) in a group to choose from.
    """
    records = list(records)
    groups = _by_variant(records)
    drop: set[tuple[str, str, str, str]] = set()  # (dataset, split, model, variant id) of the variants not kept
    choices = []
    for (dataset, split, model, method), variants in groups.items():
        if len(variants) < 2:
            continue
        scored = {}
        for vid, recs in variants.items():
            mean = _mean_val(recs)
            if mean is None:
                raise BenchError(f"--select val: {model} {vid} on {dataset} has no validation score (its method does "
                                 "not train); use --all-variants")  # fmt: skip
            scored[vid] = mean
        best = max(scored, key=lambda v: scored[v])  # the first of equal scores (dicts keep the listed order)
        metric = str(variants[best][0].get("select_metric") or "rsum")
        choices.append(Choice(dataset, split, model, method, best, len(variants), metric, scored[best]))
        drop |= {(dataset, split, model, v) for v in variants if v != best}
    kept = [r for r in records
            if (str(r.get("dataset")), str(r.get("split")), str(r.get("model")), str(r.get("method"))) not in drop]
    return kept, choices


def _metric(record: Record, path: tuple[str, ...]) -> float | None:
    node: Any = record.get("metrics")
    for p in path:
        node = node.get(p) if isinstance(node, dict) else None
    return float(node) if isinstance(node, int | float) else None


def _stat(values: list[float | None]) -> tuple[float, float] | None:
    vals = [v for v in values if v is not None]
    if not vals or len(vals) < len(values):
        return None
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan


def _text(stat: tuple[float, float] | None, fmt: str) -> str:
    if stat is None:
        return "–" if fmt == "markdown" else ("--" if fmt == "latex" else "")
    mean, std = stat
    if fmt == "csv":
        return f"{mean:.6g}"
    if math.isnan(std):
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {std:.1f}"


def render_variants(records: Iterable[Record], fmt: str = "markdown") -> str:
    """Every sweep variant as a row, its swept values as columns: validation score, test numbers (mean ± std over
    seeds) and the variant :func:`select_variants` picks (``*``). One table per (dataset, split, model, method), in
    ``markdown``, ``latex``, ``csv`` (one table, plain numbers) or ``html``.

    Raises:
        BenchError: no stored record belongs to a sweep.
    """
    groups = _by_variant(records)
    if not groups:
        raise BenchError("no sweep results: no stored record has a variant (run a grid with [sweep] or --sweep)")
    parts = []
    csv_rows: list[list[str]] = []
    csv_header: list[str] = []
    for (dataset, split, model, method), variants in groups.items():
        keys = list(dict.fromkeys(k for recs in variants.values() for r in recs for k in (r.get("variant") or {})))
        short = [k.rsplit(".", 1)[-1] if k.startswith(f"methods.{method}.") else k for k in keys]
        order = sorted(variants, key=lambda v: variant_sort_key(variants[v][0].get("variant")))
        vals = {v: _mean_val(variants[v]) for v in order}
        ranked = [v for v in order if vals[v] is not None]
        best = max(ranked, key=lambda v: vals[v]) if len(ranked) > 1 and len(ranked) == len(order) else None
        metric = str(variants[order[0]][0].get("select_metric") or "rsum")
        header = ["Model", "Method", *short, "Seeds", f"val {metric}", *(c for c, _ in _TEST_COLUMNS), "Selected"]
        rows = []
        for v in order:
            recs = variants[v]
            values = recs[0].get("variant") or {}
            row = [model, method, *(format_value(values[k]) if k in values else "–" for k in keys), str(len(recs)),
                   _text(_stat([val_score(r) for r in recs]), fmt),
                   *(_text(_stat([_metric(r, p) for r in recs]), fmt) for _, p in _TEST_COLUMNS),
                   "*" if v == best else ""]  # fmt: skip
            rows.append(row)
        if fmt == "csv":
            head = ["dataset", "split", "model", "method", "variant", *keys, "seeds", f"val_{metric}",
                    *(c.lower().replace(" ", "_").replace("@", "") for c, _ in _TEST_COLUMNS), "selected"]  # fmt: skip
            csv_header = csv_header or head
            for v, row in zip(order, rows, strict=True):
                csv_rows.append([dataset, split, model, method, v, *row[2:-1], "1" if v == best else "0"])
            continue
        title = f"{dataset} ({split}): {model} {method}, {len(order)} variants"
        note = (f"* best on val {metric} (mean over seeds), the variant `bench table --select val` shows; "
                "test was not used to choose.")  # fmt: skip
        if fmt == "latex":
            parts.append(f"% {title}\n{_latex(header, rows)}% {note}\n")
        elif fmt == "html":
            import html

            head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
            table = f'<table class="metrics"><tr>{head}</tr>{body}</table>'
            parts.append(f'<h3>{html.escape(title)}</h3><div class="sweep">{table}</div><p>{html.escape(note)}</p>')
        else:
            align = ["left", "left", *(["right"] * (len(header) - 3)), "center"]
            table = tabulate(rows, headers=header, tablefmt="pipe", disable_numparse=True, colalign=align)
            parts.append(f"### {title}\n\n{table}\n\n{note}\n")
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(csv_header)
        writer.writerows(csv_rows)
        return buf.getvalue()
    return "\n".join(parts)


def _latex(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return latex_escape(text).replace("±", "$\\pm$").replace("–", "--")

    lines = ["\\begin{tabular}{ll" + "r" * (len(header) - 3) + "c}", "\\toprule",
             " & ".join(cell(h) for h in header) + " \\\\", "\\midrule",
             *(" & ".join(cell(c) for c in row) + " \\\\" for row in rows),
             "\\bottomrule", "\\end{tabular}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def plot_sweep(records: Iterable[Record], out: Path, *, test_metric: tuple[str, ...] = ("rsum",)) -> Path:
    """For each swept key of each (dataset, split, model, method): validation score and test ``test_metric`` (RSUM)
    against the key's values, one line per setting of the other keys, the seeds' mean with a min-max band.

    Raises:
        BenchError: no stored record belongs to a sweep.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = _by_variant(records)
    if not groups:
        raise BenchError("no sweep results to plot: no stored record has a variant")
    panels = []  # (title, key, {other-values label: [(x, val list, test list)]})
    for (dataset, split, model, method), variants in groups.items():
        keys = list(dict.fromkeys(k for recs in variants.values() for r in recs for k in (r.get("variant") or {})))
        for key in keys:
            lines: dict[str, list[tuple[Any, list[float | None], list[float | None]]]] = {}
            for recs in variants.values():
                values = recs[0].get("variant") or {}
                if key not in values:
                    continue
                rest = ", ".join(f"{k.rsplit('.', 1)[-1]}={format_value(v)}" for k, v in values.items() if k != key)
                lines.setdefault(rest or "all seeds", []).append(
                    (values[key], [val_score(r) for r in recs], [_metric(r, test_metric) for r in recs]))
            panels.append((f"{model} {method}, {dataset} ({split})", key, lines))
    fig = Figure(figsize=(10, 3.6 * len(panels)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(len(panels), 2, squeeze=False))
    metric = str(next(iter(next(iter(groups.values())).values()))[0].get("select_metric") or "rsum")
    for (title, key, lines), row in zip(panels, axes, strict=True):
        xs_all = [x for pts in lines.values() for x, _, _ in pts]
        numeric = _numeric(xs_all)
        cats = list(dict.fromkeys(sorted(xs_all, key=lambda x: value_sort_key(x))))
        for col, (ax, which) in enumerate(zip(row, (f"val {metric}", f"test {'/'.join(test_metric)}"), strict=True)):
            for i, (label, pts) in enumerate(lines.items()):
                pts = sorted(pts, key=lambda p: value_sort_key(p[0]))
                x = np.array([p[0] if numeric else cats.index(p[0]) for p in pts], dtype=float)
                ys = [[v for v in (p[1] if col == 0 else p[2]) if v is not None] for p in pts]
                keep = [j for j, y in enumerate(ys) if y]
                if not keep:
                    continue
                mean = np.array([np.mean(ys[j]) for j in keep])
                lo, hi = np.array([min(ys[j]) for j in keep]), np.array([max(ys[j]) for j in keep])
                ax.plot(x[keep], mean, marker="o", color=f"C{i % 10}", label=label)
                ax.fill_between(x[keep], lo, hi, color=f"C{i % 10}", alpha=0.2)
            if not numeric:
                ax.set_xticks(range(len(cats)), [format_value(c) for c in cats])
            elif len(set(xs_all)) > 2 and min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 100:
                ax.set_xscale("log")
            ax.set_xlabel(key)
            ax.set_ylabel(which)
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3)
        if len(lines) > 1:
            row[1].legend(fontsize=7)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out
