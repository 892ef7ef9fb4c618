"""One dataset/split group of the result frame formatted to table cells, for Markdown or LaTeX: which metric groups
and uni-modal columns show, which values are bold (the largest, or significantly best), the ``n/a`` and ``–`` cells,
seeds, ΔRSUM and intervals. :mod:`bench.report.tables` lays the cells out as Markdown, :mod:`bench.report.latex` as
booktabs LaTeX."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.report.collect import DASH, GROUPS, K_LABEL, NA, group_columns, uni_columns, visible_groups
from bench.report.escape import latex_escape, markdown_escape
from bench.report.significance import Significance
from bench.report.unimodal import UniColumn
from bench.tasks import get_task

__all__ = [
    "LATEX",
    "MARKDOWN",
    "FormattedTable",
    "Style",
    "format_delta",
    "format_table",
    "legend",
    "table_groups",
    "uni_legends",
]


@dataclass(frozen=True)
class Style:
    """How one output format writes bold, a std, an interval, a missing value, escapes and a minus sign."""

    bold: Callable[[str], str]
    std: Callable[[str], str]
    ci: Callable[[str], str]
    dash: str
    escape: Callable[[str], str]
    minus: str


MARKDOWN = Style(
    bold=lambda s: f"**{s}**", std=lambda s: f" ± {s}", ci=lambda s: f" [{s}]", dash=DASH, escape=markdown_escape,
    minus="-",
)  # fmt: skip
# A small std keeps a 2-group table with seeds within a landscape page, as papers typeset it.
LATEX = Style(
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
class FormattedTable:
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
    no_ci: list[str] = field(default_factory=list)  # rows shown without intervals (no readable per-query file)


def _interval_text(bounds: list[float] | None, style: Style) -> str:
    if bounds is None:
        return ""
    return style.ci(f"{bounds[0]:.1f}, {bounds[1]:.1f}".replace("-", style.minus))


def _number(r: pd.Series, col: str, bold: bool, style: Style, bounds: list[float] | None = None) -> str:
    text = f"{r[col]:.1f}"
    text = style.bold(text) if bold else text
    if not pd.isna(r[f"{col}_std"]):
        text += style.std(f"{r[f'{col}_std']:.1f}")
    return text + _interval_text(bounds, style)


def format_table(
    sub: pd.DataFrame, style: Style, *, delta: bool, sig: Significance | None = None, baseline: str | None = None
) -> FormattedTable:
    """One dataset/split group ``sub`` of the collected frame as cells in ``style``: bold by the significance rule
    where ``sig`` covers every row (else the largest value), intervals where ``sig`` has them, ΔRSUM against
    ``baseline`` when ``delta``."""
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
    # Intervals for every row that has per-query values; the legend names the rows without (never all dropped).
    shown_sig = sig if sig is not None and sig.intervals and any(k in sig.cells for k in keys) else None
    no_ci = [f"{k[2]} / {k[3]}" for k in keys if shown_sig is not None and k not in shown_sig.cells]

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
                cells.append(format_delta(r["delta_rsum"], style) + _interval_text(bounds, style))
        for c in uni:
            missing = problem or pd.isna(r[c.name])
            cells.append(style.dash if missing else _number(r, c.name, idx in best[c.name], style))
        rows.append(cells)
    return FormattedTable(
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
        no_ci=no_ci,
    )


def format_delta(value: float, style: Style) -> str:
    """A ΔRSUM cell: signed, one decimal, never ``-0.0``; empty for a missing value."""
    if pd.isna(value):
        return ""
    value = round(float(value), 1) + 0.0  # + 0.0 turns -0.0 into 0.0, so a tiny loss prints "+0.0", not "-0.0"
    return f"{value:+.1f}".replace("-", style.minus)


def table_groups(df: pd.DataFrame) -> Iterable[pd.DataFrame]:
    """The frame's (dataset, split) groups, in the frame's order: one table each."""
    for _, sub in df.groupby(["dataset", "split"], sort=False):
        yield sub


def legend(t: FormattedTable, delta_label: str = "ΔRSUM") -> str:
    """The sentence under a table that states its bold rule and interval level (empty when there is neither)."""
    parts = []
    if t.rule:
        parts.append(t.rule[0].upper() + t.rule[1:])
    if t.ci_level is not None:
        parts.append(f"[lo, hi]: {100 * t.ci_level:g}% percentile interval")
    if t.rule and t.show_delta:
        parts.append(f"{delta_label}'s interval: paired bootstrap against the baseline row")
    if t.rule and t.uni:
        parts.append("in the other sets' columns bold is the largest value, untested")
    if t.no_ci:
        parts.append(f"no interval for {', '.join(t.no_ci)}: no readable per-query file")
    return "; ".join(parts) + "." if parts else ""


def uni_legends(columns: Iterable[UniColumn]) -> list[str]:
    """What each task's uni-modal columns show, in the tables' task order."""
    tasks = sorted({get_task(c.task) for c in columns}, key=lambda t: t.report_order)
    return [t.legend or t.title for t in tasks]
