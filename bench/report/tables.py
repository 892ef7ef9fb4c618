"""Result records -> paper tables (Markdown, CSV, LaTeX booktabs).

Records are the JSON dicts documented in :mod:`bench.grid.records` (one per model, dataset, split, method, seed;
recall in percent). :func:`collect` aggregates them into one row per (dataset, split, model, method): the mean over
seeds, the sample standard deviation when there is more than one seed, and the seed count. :func:`render` turns that
frame into text, :func:`bench.report.plots.plot_recall_at_k` into a PNG.

Conventions shared by every format:

* A metric block that is ``null`` in a record (``metrics["i2t"] = null``: the model has no joint space) prints ``n/a``
  and is never bold and never 0. A value that is simply missing from one row prints ``–`` (``--`` in LaTeX).
* A metric group (i2t, t2i, RSUM, t2t, i2i) with no number in any row of a table is dropped from that table.
* Bold marks the best value of a column (compared at the one decimal shown; ties are all bold) when at least two rows
  of the table have a value there.
* A record whose ``status`` is ``"unavailable"`` or ``"failed"`` becomes a row of ``–`` explained by its ``reason``
  (a Note column in Markdown, a footnote in LaTeX, a ``note`` column in CSV).
* Records that name a ``language`` (a multilingual set's languages, one dataset each) also get a table with one
  column per language and their mean (:mod:`bench.report.languages`; Markdown and LaTeX).
* Uni-modal records (image retrieval, STS) add columns to the ITR rows of their model and method, per uni-modal
  dataset (see :mod:`bench.report.unimodal`); a row without that dataset shows ``–``.

The LaTeX fragment needs only ``\\usepackage{booktabs}``; ``standalone=True`` adds a preamble (article, geometry,
booktabs) that compiles with pdflatex.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from tabulate import tabulate

from bench.errors import UnknownNameError
from bench.report.collect import (
    DASH,
    GROUPS,
    K_LABEL,
    KEY_COLUMNS,
    NA,
    TableError,
    collect,
    group_columns,
    uni_columns,
    visible_groups,
    with_delta,
)
from bench.report.escape import latex_escape, markdown_escape
from bench.report.languages import language_groups, render_languages
from bench.report.plots import plot_recall_at_k
from bench.report.significance import Significance, build_significance
from bench.report.unimodal import UniColumn, is_unimodal, train_dataset_of
from bench.stats.bootstrap import BootstrapConfig
from bench.tasks import get_task

__all__ = ["FORMATS", "TableError", "UnknownFormatError", "collect", "plot_recall_at_k", "render"]

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("csv", "latex", "markdown")


class UnknownFormatError(UnknownNameError, ValueError):
    """An output format :func:`render` does not know; the message lists the valid ones."""


# --------------------------------------------------------------------------------------------------------------------
# text tables


@dataclass(frozen=True)
class _Style:
    bold: Callable[[str], str]
    std: Callable[[str], str]
    ci: Callable[[str], str]
    dash: str
    escape: Callable[[str], str]
    minus: str


_MARKDOWN = _Style(
    bold=lambda s: f"**{s}**", std=lambda s: f" ± {s}", ci=lambda s: f" [{s}]", dash=DASH, escape=markdown_escape,
    minus="-",
)  # fmt: skip
# A small std keeps a 2-group table with seeds within a landscape page, as papers typeset it.
_LATEX = _Style(
    bold=lambda s: rf"\textbf{{{s}}}",
    ci=lambda s: rf" {{\scriptsize[{s}]}}",
    std=lambda s: rf" {{\scriptsize$\pm${s}}}",
    dash="--",
    escape=latex_escape,
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
    rule: str | None = None  # the significance bold rule, when the table follows it
    ci_level: float | None = None  # intervals shown at this level


def _interval_text(bounds: list[float] | None, style: _Style) -> str:
    if bounds is None:
        return ""
    return style.ci(f"{bounds[0]:.1f}, {bounds[1]:.1f}".replace("-", style.minus))


def _number(r: pd.Series, col: str, bold: bool, style: _Style, bounds: list[float] | None = None) -> str:
    text = f"{r[col]:.1f}"
    text = style.bold(text) if bold else text
    if not pd.isna(r[f"{col}_std"]):
        text += style.std(f"{r[f'{col}_std']:.1f}")
    return text + _interval_text(bounds, style)


def _format_table(
    sub: pd.DataFrame, style: _Style, *, delta: bool, sig: Significance | None = None, baseline: str | None = None
) -> _Table:
    groups = visible_groups(sub)
    show_seeds = bool((sub["seeds"] > 1).any())
    # A ΔRSUM column with no number (no baseline run on this dataset) would only be noise.
    show_delta = delta and "rsum" in groups and bool(sub["delta_rsum"].notna().any())
    uni = uni_columns(sub, shown_only=True)
    cols = [c for g in groups for c in group_columns(g)] + [c.name for c in uni]
    ok = sub.loc[sub["status"] == "ok"]
    keys = [(str(r["dataset"]), str(r["split"]), str(r["model"]), str(r["method"])) for _, r in ok.iterrows()]
    tested = sig is not None and sig.alpha is not None and sig.covers(keys)
    uni_names = {c.name for c in uni}
    best = {}
    for c in cols:
        best[c] = sig.best_rows(ok, c) if sig is not None and tested and c not in uni_names else _best_rows(ok[c])
    shown_sig = sig if sig is not None and sig.intervals and sig.covers(keys) else None

    headers = ["Model", "Method", *(["Seeds"] if show_seeds else [])]
    for group, md_label, _, ks in GROUPS:
        if group not in groups:
            continue
        headers += [f"{md_label} {K_LABEL[k]}" for k in ks] or [md_label]
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
            for c in group_columns(group):
                if problem:
                    cells.append(style.dash)
                elif r[f"{group}_na"]:
                    any_na = True
                    cells.append(NA)
                elif pd.isna(r[c]):
                    cells.append(style.dash)
                else:
                    bounds = shown_sig.interval(r, c) if shown_sig is not None else None
                    cells.append(_number(r, c, idx in best[c], style, bounds))
            if group == "rsum" and show_delta:
                bounds = None
                if sig is not None and baseline is not None and not problem and not pd.isna(r["delta_rsum"]):
                    bounds = sig.delta_interval(r, baseline)
                cells.append(_format_delta(r["delta_rsum"], style) + _interval_text(bounds, style))
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
        rule=sig.rule() if tested and sig is not None else None,
        ci_level=shown_sig.cfg.level if shown_sig is not None else None,
    )


def _format_delta(value: float, style: _Style) -> str:
    if pd.isna(value):
        return ""
    value = round(float(value), 1) + 0.0  # + 0.0 turns -0.0 into 0.0, so a tiny loss prints "+0.0", not "-0.0"
    return f"{value:+.1f}".replace("-", style.minus)


def _iter_groups(df: pd.DataFrame) -> Iterable[pd.DataFrame]:
    for _, sub in df.groupby(["dataset", "split"], sort=False):
        yield sub


def _legend(t: _Table, delta_label: str = "ΔRSUM") -> str:
    parts = []
    if t.rule:
        parts.append(t.rule[0].upper() + t.rule[1:])
    if t.ci_level is not None:
        parts.append(f"[lo, hi]: {100 * t.ci_level:g}% percentile interval")
    if t.rule and t.show_delta:
        parts.append(f"{delta_label}'s interval: paired bootstrap against the baseline row")
    return "; ".join(parts) + "." if parts else ""


def _render_markdown(df: pd.DataFrame, *, delta: bool, sig: Significance | None, baseline: str | None) -> str:
    parts = []
    for sub in _iter_groups(df):
        t = _format_table(sub, _MARKDOWN, delta=delta, sig=sig, baseline=baseline)
        headers, rows = list(t.header_cells), [list(r) for r in t.rows]
        if any(t.notes):
            headers.append("Note")
            for row, note in zip(rows, t.notes, strict=True):
                row.append(markdown_escape(note))
        align = ["left", "left", *(["right"] * (len(headers) - 2))]
        if any(t.notes):
            align[-1] = "left"
        table = tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=align)
        legend = _legend(t)
        parts.append(f"### {markdown_escape(t.dataset)} ({markdown_escape(t.split)})\n\n{table}\n"
                     + (f"\n{legend}\n" if legend else ""))  # fmt: skip
    return "\n".join(parts)


def _render_csv(df: pd.DataFrame, sig: Significance | None = None) -> str:
    groups = visible_groups(df)
    keep = [*KEY_COLUMNS, "status", "seeds"]
    out = df.copy()
    for group, *_ in GROUPS:
        if group not in groups:
            continue
        for c in group_columns(group):
            # "n/a" (not empty) keeps "cannot exist" apart from "missing"; pandas.read_csv still reads it as NaN.
            out[c] = out[c].round(6).astype(object).where(~out[f"{group}_na"], NA)
            out[f"{c}_std"] = out[f"{c}_std"].round(6)
            keep += [c, f"{c}_std"]
            if sig is not None and sig.intervals:  # the bootstrap interval, from the per-query files
                bounds = [sig.interval(r, c) for _, r in out.iterrows()]
                out[f"{c}_lo"] = [None if b is None else round(b[0], 6) for b in bounds]
                out[f"{c}_hi"] = [None if b is None else round(b[1], 6) for b in bounds]
                keep += [f"{c}_lo", f"{c}_hi"]
        if group == "rsum" and "delta_rsum" in out:
            out["delta_rsum"] = out["delta_rsum"].round(6)
            keep.append("delta_rsum")
    for col in uni_columns(df, shown_only=False):
        name = col.csv  # <dataset>_<metric>: cub_r1, stsb_rho_mean, stsb_rho_sts-test
        out[name] = out[col.name].round(6)
        out[f"{name}_std"] = out[f"{col.name}_std"].round(6)
        keep += [name, f"{name}_std"]
    return out[[*keep, "note"]].to_csv(index=False, lineterminator="\n")


def _legends(columns: Iterable[UniColumn]) -> list[str]:
    """What each task's uni-modal columns show, in the tables' task order."""
    tasks = sorted({get_task(c.task) for c in columns}, key=lambda t: t.report_order)
    return [t.legend or t.title for t in tasks]


_LATEX_LABEL_RE = re.compile(r"[^A-Za-z0-9]+")


def _latex_table(t: _Table) -> str:
    # Column layout: Model, Method, [Seeds], then the metric groups; RSUM (and ΔRSUM) are single columns.
    spec = "ll" + ("c" if t.show_seeds else "")
    top = ["", "", *([""] if t.show_seeds else [])]
    bottom = ["Model", "Method", *(["Seeds"] if t.show_seeds else [])]
    rules = []
    col = len(top) + 1  # 1-based index of the next column
    for group, _, tex_label, ks in GROUPS:
        if group not in t.groups:
            continue
        if ks:
            spec += "r" * len(ks)
            top.append(rf"\multicolumn{{{len(ks)}}}{{c}}{{{tex_label}}}")
            rules.append(rf"\cmidrule(lr){{{col}-{col + len(ks) - 1}}}")
            bottom += [K_LABEL[k] for k in ks]
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
        top.append(rf"\multicolumn{{{len(subs)}}}{{c}}{{{latex_escape(dataset)}}}")
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
        rf"Image-text retrieval on {latex_escape(t.dataset)} ({latex_escape(t.split)} split), Recall@K in \%"
        + (r", mean $\pm$ sample std over seeds" if t.show_seeds else "")
        + (f"; {latex_escape(_legend(t, 'DELTA').rstrip('.'))}".replace("DELTA", r"$\Delta$RSUM")
           if t.rule or t.ci_level else "")  # fmt: skip
        + ("; best per column in bold" if t.any_bold and not t.rule else "")
        + ("; n/a: the model has no joint image-text space" if t.any_na else "")
        + ("; uni-modal sets: " + ", ".join(_legends(t.uni)) if t.uni else "")
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
        lines += [rf"\textsuperscript{{{m}}}\,{latex_escape(n)}\par" for n, m in marks.items()]
    lines.append(r"\end{table}")
    return "\n".join(line for line in lines if line) + "\n"


_LATEX_PREAMBLE = r"""\documentclass{article}
\usepackage[landscape,margin=1.5cm]{geometry}
\usepackage{booktabs}
\begin{document}
"""


def _render_latex(df: pd.DataFrame, *, delta: bool, sig: Significance | None, baseline: str | None) -> str:
    tables = (_format_table(sub, _LATEX, delta=delta, sig=sig, baseline=baseline) for sub in _iter_groups(df))
    return "\n".join(_latex_table(t) for t in tables)


def render(
    records: Iterable[Mapping[str, Any]],
    fmt: str = "markdown",
    *,
    standalone: bool = False,
    baseline_method: str | None = None,
    dataset: str | None = None,
    significance: float | None = 0.05,
    intervals: bool = False,
    bootstrap: BootstrapConfig | None = None,
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
        significance: Where every row of a table has per-query files, bold a best value only when it is ahead of the
            runner-up at ``p <`` this level (paired bootstrap; :mod:`bench.report.significance`); None: always bold
            the largest value.
        intervals: Show each value's bootstrap interval (and ΔRSUM's), from the per-query files.
        bootstrap: Resamples, seed and level of those tests and intervals (default 1000, 0, 0.95).

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
        members = language_groups(records).get(dataset, {})  # a multilingual set's name stands for its languages
        matched = [r for r in records if str(r.get("dataset")) == dataset or r.get("dataset") in members]
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
        df = with_delta(df, baseline_method)
    sig = None
    if (significance is not None or intervals) and any(isinstance(r.get("per_query"), dict) for r in records):
        if fmt != "csv" or intervals:
            sig = build_significance(records, alpha=significance, cfg=bootstrap or BootstrapConfig(),
                                     intervals=intervals)  # fmt: skip
    if fmt == "csv":
        return _render_csv(df, sig)
    delta = baseline_method is not None
    # A multilingual set's languages side by side, after the per-language tables.
    languages = render_languages(records, fmt)
    if fmt == "markdown":
        out = _render_markdown(df, delta=delta, sig=sig, baseline=baseline_method)
        return f"{out}\n{languages}" if languages else out
    body = _render_latex(df, delta=delta, sig=sig, baseline=baseline_method) + languages
    return f"{_LATEX_PREAMBLE}{body}\\end{{document}}\n" if standalone else body
