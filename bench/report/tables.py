"""Result records -> paper tables (Markdown, CSV, LaTeX booktabs) and a Recall@K plot.

Records are the JSON dicts documented in :mod:`bench.grid.records` (one per model, dataset, split, method, seed; recall
in
percent). :func:`collect` aggregates them into one row per (dataset, split, model, method): the mean over seeds, the
sample standard deviation when there is more than one seed, and the seed count. :func:`render` turns that frame into
text, :func:`plot_recall_at_k` into a PNG.

Conventions shared by every format:

* A metric block that is ``null`` in a record (``metrics["i2t"] = null``: the model has no joint space) prints ``n/a``
  and is never bold and never 0. A value that is simply missing from one row prints ``–`` (``--`` in LaTeX).
* A metric group (i2t, t2i, RSUM, t2t, i2i) with no number in any row of a table is dropped from that table.
* Bold marks the best value of a column (compared at the one decimal shown; ties are all bold) when at least two rows
  of the table have a value there.
* A record whose ``status`` is ``"unavailable"`` or ``"failed"`` becomes a row of ``–`` explained by its ``reason``
  (a Note column in Markdown, a footnote in LaTeX, a ``note`` column in CSV).
* Uni-modal records (image retrieval, STS) add columns to the ITR rows of their model and method, per uni-modal
  dataset (see :mod:`bench.report.unimodal`); a row without that dataset shows ``–``.

The LaTeX fragment needs only ``\\usepackage{booktabs}``; ``standalone=True`` adds a preamble (article, geometry,
booktabs) that compiles with pdflatex.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from bench.errors import BenchError, UnknownNameError
from bench.report.unimodal import (
    UniColumn,
    is_unimodal,
    orphan_cells,
    train_dataset_of,
    uni_column,
    unimodal_columns,
    unimodal_rows,
)

__all__ = ["FORMATS", "TableError", "UnknownFormatError", "collect", "plot_recall_at_k", "render"]

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("csv", "latex", "markdown")
ZEROSHOT = "zeroshot"
PROBLEM_STATUSES: frozenset[str] = frozenset({"unavailable", "failed"})

# (record key, Markdown label, LaTeX label, recall keys); RSUM is a single column with no recall keys.
_GROUPS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("i2t", "i2t", r"Image $\to$ Text", ("r1", "r5", "r10")),
    ("t2i", "t2i", r"Text $\to$ Image", ("r1", "r5", "r10")),
    ("rsum", "RSUM", "RSUM", ()),
    ("t2t", "t2t", r"Text $\to$ Text", ("r1", "r5", "r10")),
    ("i2i", "i2i", r"Image $\to$ Image", ("r1", "r5", "r10")),
)
_K_LABEL = {"r1": "R@1", "r5": "R@5", "r10": "R@10"}
_KEY_COLUMNS = ["dataset", "split", "model", "method"]
_DASH = "–"  # en dash: "no value here", as opposed to "n/a" (cannot exist for this model)
_NA = "n/a"


class TableError(BenchError, ValueError):
    """Records that cannot be tabulated (none at all, no match for a filter, a record without its cell keys)."""


class UnknownFormatError(UnknownNameError, ValueError):
    """An output format :func:`render` does not know; the message lists the valid ones."""


def _group_columns(group: str) -> list[str]:
    ks = next(g[3] for g in _GROUPS if g[0] == group)
    return [f"{group}_{k}" for k in ks] if ks else [group]


_METRIC_COLUMNS: list[str] = [c for g in _GROUPS for c in _group_columns(g[0])]


# --------------------------------------------------------------------------------------------------------------------
# collect


def _cell_key(rec: Mapping[str, Any]) -> tuple[str, str, str, str]:
    missing = [k for k in _KEY_COLUMNS if rec.get(k) is None]
    if missing:
        raise TableError(f"record {rec.get('_path', '(in memory)')} lacks {', '.join(missing)}")
    return (str(rec["dataset"]), str(rec["split"]), str(rec["model"]), str(rec["method"]))


def _record_values(rec: Mapping[str, Any]) -> tuple[dict[str, float], set[str]]:
    """The numeric metric values of one record, and the groups it marks n/a (``null``)."""
    metrics = rec.get("metrics") or {}
    values: dict[str, float] = {}
    na: set[str] = set()
    for group, _, _, ks in _GROUPS:
        if group not in metrics:
            continue
        block = metrics[group]
        if block is None:
            na.add(group)
        elif not ks:
            values[group] = float(block)
        else:
            for k in ks:
                if isinstance(block, Mapping) and block.get(k) is not None:
                    values[f"{group}_{k}"] = float(block[k])
    if "rsum" not in metrics:
        # Older or hand-written records may omit RSUM; it is fully determined by i2t and t2i R@1/5/10.
        parts = _group_columns("i2t") + _group_columns("t2i")
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


def _aggregate(key: tuple[str, str, str, str], recs: list[Mapping[str, Any]]) -> dict[str, Any]:
    recs = _dedupe_seeds(recs, key)
    bad = [r for r in recs if r.get("status") in PROBLEM_STATUSES]
    ok = [r for r in recs if r.get("status") not in PROBLEM_STATUSES]
    row: dict[str, Any] = dict(zip(_KEY_COLUMNS, key, strict=True))
    row["status"] = "ok" if ok or not bad else str(bad[0]["status"])  # no records: a row of uni-modal columns only
    row["seeds"] = len(ok)
    parsed = [_record_values(r) for r in ok]
    for col in _METRIC_COLUMNS:
        nums = [v[col] for v, _ in parsed if col in v]
        row[col] = float(np.mean(nums)) if nums else math.nan
        row[f"{col}_std"] = float(np.std(nums, ddof=1)) if len(nums) > 1 else math.nan
    for group, *_ in _GROUPS:
        n_na = sum(group in na for _, na in parsed)
        if 0 < n_na < len(parsed):
            log.warning(
                "cell %s: %s is null in %d of %d seeds; averaging the others", "/".join(key), group, n_na, len(parsed)
            )
        row[f"{group}_na"] = bool(parsed) and n_na == len(parsed)
    row["note"] = _problem_note(recs, bad) if bad else ""
    return row


def _frame_columns() -> list[str]:
    cols = [*_KEY_COLUMNS, "status", "seeds"]
    for c in _METRIC_COLUMNS:
        cols += [c, f"{c}_std"]
    return [*cols, *(f"{g[0]}_na" for g in _GROUPS), "note"]


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


def _uni_columns(df: pd.DataFrame, *, shown_only: bool) -> list[UniColumn]:
    """The uni-modal columns of ``df`` that hold a number (and are shown in Markdown/LaTeX, with ``shown_only``)."""
    out = []
    for name in df.columns:
        if name.startswith("uni|") and not name.endswith("_std"):
            col = uni_column(name)
            if (col.shown or not shown_only) and df[name].notna().any():
                out.append(col)
    return out


def _with_delta(df: pd.DataFrame, baseline: str) -> pd.DataFrame:
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


def _visible_groups(df: pd.DataFrame) -> list[str]:
    """Metric groups with at least one number in ``df`` (a group that is all n/a or absent says nothing)."""
    return [g[0] for g in _GROUPS if df[_group_columns(g[0])].notna().to_numpy().any()]


# --------------------------------------------------------------------------------------------------------------------
# text tables


@dataclass(frozen=True)
class _Style:
    bold: Callable[[str], str]
    std: Callable[[str], str]
    dash: str
    escape: Callable[[str], str]
    minus: str


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    # OT1 fonts (pdflatex's default) print < > | as other glyphs.
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
}
_LATEX_SPECIALS_RE = re.compile("|".join(re.escape(c) for c in _LATEX_SPECIALS))


def _latex_escape(text: str) -> str:
    return _LATEX_SPECIALS_RE.sub(lambda m: _LATEX_SPECIALS[m.group()], text)


def _markdown_escape(text: str) -> str:
    # A pipe would end the cell; a newline would end the row.
    return text.replace("|", r"\|").replace("\n", " ")


_MARKDOWN = _Style(bold=lambda s: f"**{s}**", std=lambda s: f" ± {s}", dash=_DASH, escape=_markdown_escape, minus="-")
# A small std keeps a 2-group table with seeds within a landscape page, as papers typeset it.
_LATEX = _Style(
    bold=lambda s: rf"\textbf{{{s}}}",
    std=lambda s: rf" {{\scriptsize$\pm${s}}}",
    dash="--",
    escape=_latex_escape,
    minus="$-$",
)


def _best_rows(values: pd.Series) -> set[Any]:
    """Index labels holding the column's best value at the shown precision (none with fewer than two values)."""
    shown = values.dropna().round(1)
    if len(shown) < 2:
        return set()
    return set(shown.index[shown == shown.max()])


@dataclass
class _Table:
    """One dataset/split group, formatted to cells for one style."""

    dataset: str
    split: str
    groups: list[str]
    show_seeds: bool
    show_delta: bool
    header_cells: list[str]
    rows: list[list[str]]
    models: list[str]
    notes: list[str]
    any_na: bool
    any_bold: bool
    uni: list[UniColumn]


def _number(r: pd.Series, col: str, bold: bool, style: _Style) -> str:
    text = f"{r[col]:.1f}"
    text = style.bold(text) if bold else text
    if not pd.isna(r[f"{col}_std"]):
        text += style.std(f"{r[f'{col}_std']:.1f}")
    return text


def _format_table(sub: pd.DataFrame, style: _Style, *, delta: bool) -> _Table:
    groups = _visible_groups(sub)
    show_seeds = bool((sub["seeds"] > 1).any())
    # A ΔRSUM column with no number (no baseline run on this dataset) would only be noise.
    show_delta = delta and "rsum" in groups and bool(sub["delta_rsum"].notna().any())
    uni = _uni_columns(sub, shown_only=True)
    cols = [c for g in groups for c in _group_columns(g)] + [c.name for c in uni]
    best = {c: _best_rows(sub.loc[sub["status"] == "ok", c]) for c in cols}

    headers = ["Model", "Method", *(["Seeds"] if show_seeds else [])]
    for group, md_label, _, ks in _GROUPS:
        if group not in groups:
            continue
        headers += [f"{md_label} {_K_LABEL[k]}" for k in ks] or [md_label]
        if group == "rsum" and show_delta:
            headers.append("ΔRSUM")
    headers += [f"{c.dataset} {c.label}" for c in uni]

    rows: list[list[str]] = []
    any_na = False
    for idx, r in sub.iterrows():
        problem = r["status"] != "ok"
        cells = [style.escape(str(r["model"])), style.escape(str(r["method"]))]
        if show_seeds:
            cells.append(style.dash if problem else str(r["seeds"]))
        for group in groups:
            for c in _group_columns(group):
                if problem:
                    cells.append(style.dash)
                elif r[f"{group}_na"]:
                    any_na = True
                    cells.append(_NA)
                elif pd.isna(r[c]):
                    cells.append(style.dash)
                else:
                    cells.append(_number(r, c, idx in best[c], style))
            if group == "rsum" and show_delta:
                cells.append(_format_delta(r["delta_rsum"], style))
        for c in uni:
            missing = problem or pd.isna(r[c.name])
            cells.append(style.dash if missing else _number(r, c.name, idx in best[c.name], style))
        rows.append(cells)
    return _Table(
        dataset=str(sub["dataset"].iloc[0]),
        split=str(sub["split"].iloc[0]),
        groups=groups,
        show_seeds=show_seeds,
        show_delta=show_delta,
        header_cells=headers,
        rows=rows,
        models=[str(m) for m in sub["model"]],
        notes=[str(n) for n in sub["note"]],
        any_na=any_na,
        any_bold=any(best.values()),
        uni=uni,
    )


def _format_delta(value: float, style: _Style) -> str:
    if pd.isna(value):
        return ""
    value = round(float(value), 1) + 0.0  # + 0.0 turns -0.0 into 0.0, so a tiny loss prints "+0.0", not "-0.0"
    return f"{value:+.1f}".replace("-", style.minus)


def _iter_groups(df: pd.DataFrame) -> Iterable[pd.DataFrame]:
    for _, sub in df.groupby(["dataset", "split"], sort=False):
        yield sub


def _render_markdown(df: pd.DataFrame, *, delta: bool) -> str:
    parts = []
    for sub in _iter_groups(df):
        t = _format_table(sub, _MARKDOWN, delta=delta)
        headers, rows = list(t.header_cells), [list(r) for r in t.rows]
        if any(t.notes):
            headers.append("Note")
            for row, note in zip(rows, t.notes, strict=True):
                row.append(_markdown_escape(note))
        align = ["left", "left", *(["right"] * (len(headers) - 2))]
        if any(t.notes):
            align[-1] = "left"
        table = tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=align)
        parts.append(f"### {_markdown_escape(t.dataset)} ({_markdown_escape(t.split)})\n\n{table}\n")
    return "\n".join(parts)


def _render_csv(df: pd.DataFrame) -> str:
    groups = _visible_groups(df)
    keep = [*_KEY_COLUMNS, "status", "seeds"]
    out = df.copy()
    for group, *_ in _GROUPS:
        if group not in groups:
            continue
        for c in _group_columns(group):
            # "n/a" (not empty) keeps "cannot exist" apart from "missing"; pandas.read_csv still reads it as NaN.
            out[c] = out[c].round(6).astype(object).where(~out[f"{group}_na"], _NA)
            out[f"{c}_std"] = out[f"{c}_std"].round(6)
            keep += [c, f"{c}_std"]
        if group == "rsum" and "delta_rsum" in out:
            out["delta_rsum"] = out["delta_rsum"].round(6)
            keep.append("delta_rsum")
    for col in _uni_columns(df, shown_only=False):
        # Uni-modal columns are named <dataset>_<metric> in CSV (e.g. cub_r1, stsb_rho_mean, stsb_rho_sts-test).
        name = (
            f"{col.dataset}_{col.name.rsplit('|', 1)[1]}"
            if col.task != "sts"
            else f"{col.dataset}_rho_" + (col.name.rsplit("|", 1)[1])
        )
        out[name] = out[col.name].round(6)
        out[f"{name}_std"] = out[f"{col.name}_std"].round(6)
        keep += [name, f"{name}_std"]
    return out[[*keep, "note"]].to_csv(index=False, lineterminator="\n")


_LATEX_LABEL_RE = re.compile(r"[^A-Za-z0-9]+")


def _latex_table(t: _Table) -> str:
    # Column layout: Model, Method, [Seeds], then the metric groups; RSUM (and ΔRSUM) are single columns.
    spec = "ll" + ("c" if t.show_seeds else "")
    top = ["", "", *([""] if t.show_seeds else [])]
    bottom = ["Model", "Method", *(["Seeds"] if t.show_seeds else [])]
    rules = []
    col = len(top) + 1  # 1-based index of the next column
    for group, _, tex_label, ks in _GROUPS:
        if group not in t.groups:
            continue
        if ks:
            spec += "r" * len(ks)
            top.append(rf"\multicolumn{{{len(ks)}}}{{c}}{{{tex_label}}}")
            rules.append(rf"\cmidrule(lr){{{col}-{col + len(ks) - 1}}}")
            bottom += [_K_LABEL[k] for k in ks]
            col += len(ks)
        else:
            spec += "r"
            top.append("")
            bottom.append(tex_label)
            col += 1
        if group == "rsum" and t.show_delta:
            spec += "r"
            top.append("")
            bottom.append(r"$\Delta$RSUM")
            col += 1
    for dataset in dict.fromkeys(c.dataset for c in t.uni):
        subs = [c.tex for c in t.uni if c.dataset == dataset]
        spec += "r" * len(subs)
        top.append(rf"\multicolumn{{{len(subs)}}}{{c}}{{{_latex_escape(dataset)}}}")
        rules.append(rf"\cmidrule(lr){{{col}-{col + len(subs) - 1}}}")
        bottom += subs
        col += len(subs)

    marks: dict[str, str] = {}  # note -> footnote letter, so equal reasons share one footnote
    body = []
    for i, (cells, note) in enumerate(zip(t.rows, t.notes, strict=True)):
        cells = list(cells)
        if note:
            mark = marks.setdefault(note, chr(ord("a") + len(marks) % 26) * (1 + len(marks) // 26))
            cells[1] += rf"\textsuperscript{{{mark}}}"
        if i and t.models[i] != t.models[i - 1]:
            body.append(r"\addlinespace")
        body.append(" & ".join(cells) + r" \\")

    caption = (
        rf"Image-text retrieval on {_latex_escape(t.dataset)} ({_latex_escape(t.split)} split), Recall@K in \%"
        + (r", mean $\pm$ sample std over seeds" if t.show_seeds else "")
        + ("; best per column in bold" if t.any_bold else "")
        + ("; n/a: the model has no joint image-text space" if t.any_na else "")
        + (r"; uni-modal sets: image retrieval R@1 and mAP@R, STS Spearman $\rho\times100$" if t.uni else "")
        + "."
    )
    label = "tab:itr-" + _LATEX_LABEL_RE.sub("-", f"{t.dataset}-{t.split}").strip("-").lower()
    lines = [
        r"\begin{table}[htbp]",
        r"\centering",
        rf"\caption{{{caption}}}",
        rf"\label{{{label}}}",
        r"\small",
        r"\setlength{\tabcolsep}{4pt}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(top) + r" \\",
        " ".join(rules),
        " & ".join(bottom) + r" \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
    ]
    if marks:
        lines.append(r"\par\smallskip\footnotesize")
        lines += [rf"\textsuperscript{{{m}}}\,{_latex_escape(n)}\par" for n, m in marks.items()]
    lines.append(r"\end{table}")
    return "\n".join(line for line in lines if line) + "\n"


_LATEX_PREAMBLE = r"""\documentclass{article}
\usepackage[landscape,margin=1.5cm]{geometry}
\usepackage{booktabs}
\begin{document}
"""


def _render_latex(df: pd.DataFrame, *, delta: bool, standalone: bool) -> str:
    body = "\n".join(_latex_table(_format_table(sub, _LATEX, delta=delta)) for sub in _iter_groups(df))
    return f"{_LATEX_PREAMBLE}{body}\\end{{document}}\n" if standalone else body


def render(
    records: Iterable[Mapping[str, Any]],
    fmt: str = "markdown",
    *,
    standalone: bool = False,
    baseline_method: str | None = None,
    dataset: str | None = None,
) -> str:
    """Render result records as tables, one per (dataset, split).

    Args:
        records: Result records (see :mod:`bench.grid.records`).
        fmt: ``"markdown"`` (a pipe table under a ``### dataset (split)`` heading per group), ``"csv"`` (one flat,
            machine-readable table: plain numbers, ``*_std`` columns, ``n/a`` for null metrics) or ``"latex"``
            (booktabs, one ``table`` environment per group).
        standalone: LaTeX only: wrap the tables in a complete document that compiles with pdflatex.
        baseline_method: Add a ΔRSUM column: RSUM minus the same model's RSUM under this method.
        dataset: Only tabulate records of this dataset.

    Returns:
        The rendered text.

    Raises:
        UnknownFormatError: ``fmt`` is not one of :data:`FORMATS` (a ``ValueError``).
        TableError: There are no records (for ``dataset``) or a record lacks its cell keys (a ``ValueError``).
    """
    if fmt not in FORMATS:
        raise UnknownFormatError("table format", fmt, list(FORMATS))
    records = list(records)
    if dataset is not None:
        known = sorted({str(r.get("dataset")) for r in records})
        matched = [r for r in records if str(r.get("dataset")) == dataset]
        if not matched:
            raise TableError(f"no records for dataset {dataset!r}; datasets present: {', '.join(known) or '(none)'}")
        if not any(is_unimodal(r) for r in matched):  # an ITR table keeps the uni-modal columns of its rows
            matched += [r for r in records if is_unimodal(r) and train_dataset_of(r) in (dataset, None)]
        records = matched
    if not records:
        raise TableError("no records to tabulate")
    if standalone and fmt != "latex":
        log.debug("standalone=True only affects LaTeX output; ignored for %s", fmt)
    df = collect(records)
    if baseline_method is not None:
        df = _with_delta(df, baseline_method)
    if fmt == "csv":
        return _render_csv(df)
    if fmt == "markdown":
        return _render_markdown(df, delta=baseline_method is not None)
    return _render_latex(df, delta=baseline_method is not None, standalone=standalone)


# --------------------------------------------------------------------------------------------------------------------
# plot


def plot_recall_at_k(records: Iterable[Mapping[str, Any]], out: Path) -> Path:
    """Plot R@K against K (1, 5, 10) for every table row, image->text and text->image side by side.

    Colour follows the model (the method when there is one model), line style the method, marker the dataset/split;
    error bars show the std over seeds.
    Rows without recall values (n/a, unavailable, failed) are left out.

    Args:
        records: Result records (see :mod:`bench.grid.records`).
        out: Where to write the PNG; parent folders are created.

    Returns:
        ``out``.

    Raises:
        TableError: There are no records.
    """
    # Lazy and pyplot-free: importing this module must not need matplotlib, and an Agg canvas on our own Figure
    # leaves the caller's global backend (a notebook, say) alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    df = collect(records)
    if df.empty:
        raise TableError("no records to plot")
    ks = (1, 5, 10)
    recall_cols = [f"{d}_r{k}" for d in ("i2t", "t2i") for k in ks]
    shown = df[(df["status"] == "ok") & df[recall_cols].notna().any(axis=1)]
    several_groups = shown[["dataset", "split"]].drop_duplicates().shape[0] > 1
    palette = [f"C{i}" for i in range(10)]
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D", "v", "P", "X"]
    model_ix = {m: i for i, m in enumerate(dict.fromkeys(shown["model"]))}
    method_ix = {m: i for i, m in enumerate(dict.fromkeys(shown["method"]))}
    # Colour tells models apart; with a single model it is better spent on methods.
    colour_by, colour_ix = ("model", model_ix) if len(model_ix) > 1 else ("method", method_ix)
    group_ix = {g: i for i, g in enumerate(dict.fromkeys(zip(shown["dataset"], shown["split"], strict=True)))}

    fig = Figure(figsize=(11, 5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    plotted = 0
    for ax, direction, title in zip(axes, ("i2t", "t2i"), (r"Image $\to$ Text", r"Text $\to$ Image"), strict=True):
        for _, r in shown.iterrows():
            ys = np.array([r[f"{direction}_r{k}"] for k in ks], dtype=float)
            if np.isnan(ys).all():
                continue
            err = np.nan_to_num(np.array([r[f"{direction}_r{k}_std"] for k in ks], dtype=float))
            label = f"{r['model']} / {r['method']}" + (f" — {r['dataset']} ({r['split']})" if several_groups else "")
            ax.errorbar(
                ks, ys, yerr=err if err.any() else None, label=label, capsize=3,
                color=palette[colour_ix[r[colour_by]] % len(palette)],
                linestyle=styles[method_ix[r["method"]] % len(styles)],
                marker=markers[group_ix[(r["dataset"], r["split"])] % len(markers)],
            )  # fmt: skip
            plotted += 1
        ax.set_title(title)
        ax.set_xlabel("K")
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Recall@K (%)")
    axes[0].set_ylim(bottom=0)
    if plotted:
        seen: dict[str, Any] = {}  # a row drawn in both panels needs one legend entry
        for ax in axes:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                seen.setdefault(label, handle)
        fig.legend(
            list(seen.values()),
            list(seen.keys()),
            loc="outside lower center",
            ncol=min(3, len(seen)),
            fontsize="small",
            frameon=False,
        )
    else:
        log.warning("no i2t/t2i recall values to plot; writing an empty figure to %s", out)
        for ax in axes:
            ax.text(0.5, 0.5, "no R@K values", ha="center", va="center", transform=ax.transAxes)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=120)
    log.info("wrote %s", out)
    return out
