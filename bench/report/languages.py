"""The languages of a multilingual set side by side: one table per (set, split), a row per model and method, a column
per language (the records' ``language``) and their mean.

The value is the mean over seeds of one metric (RSUM by default, or any ``collect`` column such as ``t2i_r1``);
a language a row has no number for shows ``–`` and leaves that row's mean out (``–``), so a mean always covers every
language of the table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
from tabulate import tabulate

from bench.report.collect import DASH, collect
from bench.report.escape import latex_escape, markdown_escape

__all__ = ["language_groups", "render_languages"]


def language_groups(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Set name -> {dataset id: language} of the records that name a language (``xm3600-de`` -> ``xm3600``)."""
    out: dict[str, dict[str, str]] = {}
    for r in records:
        lang, ds = r.get("language"), str(r.get("dataset"))
        if isinstance(lang, str):
            group = ds[: -len(lang) - 1] if ds.endswith(f"-{lang}") else ds
            out.setdefault(group, {})[ds] = lang
    return out


def _frame(records: list[Mapping[str, Any]], metric: str) -> list[tuple[str, str, list[str], pd.DataFrame]]:
    groups = {g: m for g, m in language_groups(records).items() if len(set(m.values())) > 1}
    if not groups:
        return []
    df = collect([r for r in records if r.get("dataset") in {d for m in groups.values() for d in m}])
    if metric not in df.columns:
        from bench.report.collect import METRIC_COLUMNS, TableError

        raise TableError(f"no metric {metric!r} in these records; metrics: {', '.join(METRIC_COLUMNS)}")
    out = []
    for group, members in groups.items():
        sub = df[df["dataset"].isin(list(members))]
        for split, part in sub.groupby("split", sort=False):
            langs = list(dict.fromkeys(members[d] for d in part["dataset"]))
            wide = part.assign(language=part["dataset"].map(members)).pivot_table(
                index=["model", "method"], columns="language", values=metric, aggfunc="first", sort=False)
            wide = wide.reindex(columns=langs)
            wide["mean"] = wide[langs].mean(axis=1, skipna=False)
            out.append((group, str(split), langs, wide))
    return out


def _cell(v: Any) -> str:
    return DASH if pd.isna(v) else f"{float(v):.1f}"


def render_languages(records: Iterable[Mapping[str, Any]], fmt: str = "markdown", metric: str = "rsum") -> str:
    """The language tables of ``records`` as Markdown, CSV or LaTeX (booktabs); empty when no set has records in
    two or more languages."""
    parts = []
    for group, split, langs, wide in _frame(list(records), metric):
        rows = [[m, meth, *(_cell(wide.loc[(m, meth), c]) for c in [*langs, "mean"])] for m, meth in wide.index]
        if fmt == "csv":
            frame = wide.reset_index()
            frame.insert(0, "split", split)
            frame.insert(0, "set", group)
            parts.append(frame.round(6).to_csv(index=False))
        elif fmt == "latex":
            spec = "ll" + "r" * (len(langs) + 1)
            head = " & ".join(latex_escape(c) for c in ["Model", "Method", *langs, "Mean"]) + r" \\"
            body = "\n".join(" & ".join(latex_escape(c).replace(DASH, "--") for c in r) + r" \\" for r in rows)
            parts.append(
                "\\begin{table}[t]\n\\centering\n"
                f"\\caption{{{latex_escape(group)} ({latex_escape(split)}): {latex_escape(metric)} per language}}\n"
                f"\\begin{{tabular}}{{{spec}}}\n\\toprule\n{head}\n\\midrule\n{body}\n\\bottomrule\n"
                "\\end{tabular}\n\\end{table}\n"
            )
        else:
            cells = [[markdown_escape(c) for c in r] for r in rows]
            table = tabulate(cells, headers=["Model", "Method", *map(markdown_escape, langs), "mean"], tablefmt="pipe",
                             disable_numparse=True, colalign=["left", "left", *(["right"] * (len(langs) + 1))])
            parts.append(f"### {markdown_escape(group)} ({markdown_escape(split)}): {metric} per language\n\n{table}\n")
    return "\n".join(parts)
