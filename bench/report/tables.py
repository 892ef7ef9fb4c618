"""Result records -> paper tables (Markdown, CSV, LaTeX booktabs).

Records are the JSON dicts documented in :mod:`bench.grid.records` (one per model, dataset, split, method, seed;
recall in percent). :func:`collect` aggregates them into one row per (dataset, split, model, method): the mean over
seeds, the sample standard deviation when there is more than one seed, and the seed count. :func:`render` turns that
frame into text (each group's cells from :mod:`bench.report.cells`, laid out here as Markdown and CSV and by
:mod:`bench.report.latex` as LaTeX), :func:`bench.report.plots.plot_recall_at_k` into a PNG.

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
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
from tabulate import tabulate

from bench.errors import UnknownNameError
from bench.report.cells import MARKDOWN, format_table, legend, table_groups
from bench.report.collect import (
    GROUPS,
    KEY_COLUMNS,
    NA,
    TableError,
    collect,
    group_columns,
    uni_columns,
    visible_groups,
    with_delta,
)
from bench.report.escape import markdown_escape
from bench.report.languages import language_groups, render_languages
from bench.report.latex import LATEX_PREAMBLE, render_latex
from bench.report.plots import plot_recall_at_k
from bench.report.significance import Significance, build_significance
from bench.report.unimodal import is_unimodal, train_dataset_of
from bench.stats.bootstrap import BootstrapConfig

__all__ = ["FORMATS", "TableError", "UnknownFormatError", "collect", "plot_recall_at_k", "render"]

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("csv", "latex", "markdown")


class UnknownFormatError(UnknownNameError, ValueError):
    """An output format :func:`render` does not know; the message lists the valid ones."""


def _render_markdown(df: pd.DataFrame, *, delta: bool, sig: Significance | None, baseline: str | None) -> str:
    parts = []
    for sub in table_groups(df):
        t = format_table(sub, MARKDOWN, delta=delta, sig=sig, baseline=baseline)
        headers, rows = list(t.header_cells), [list(r) for r in t.rows]
        if any(t.notes):
            headers.append("Note")
            for row, note in zip(rows, t.notes, strict=True):
                row.append(markdown_escape(note))
        align = ["left", "left", *(["right"] * (len(headers) - 2))]
        if any(t.notes):
            align[-1] = "left"
        table = tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=align)
        rule = legend(t)
        parts.append(f"### {markdown_escape(t.dataset)} ({markdown_escape(t.split)})\n\n{table}\n"
                     + (f"\n{rule}\n" if rule else ""))  # fmt: skip
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


def _task_tables(records: list[Mapping[str, Any]], fmt: str) -> str:
    from bench.tasks import get_task, list_tasks, task_of_record

    by_task: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        by_task.setdefault(task_of_record(r), []).append(r)
    parts = [get_task(t).render_tables(by_task[t], fmt) for t in list_tasks() if t in by_task]
    return "\n".join(p for p in parts if p)


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
    # A multilingual set's languages side by side, after the per-language tables; then the tables tasks print of
    # their own (each choice set in its paper's form).
    languages = render_languages(records, fmt) + _task_tables(records, fmt)
    if fmt == "markdown":
        out = _render_markdown(df, delta=delta, sig=sig, baseline=baseline_method)
        return f"{out}\n{languages}" if languages else out
    body = render_latex(df, delta=delta, sig=sig, baseline=baseline_method) + languages
    return f"{LATEX_PREAMBLE}{body}\\end{{document}}\n" if standalone else body
