"""Booktabs LaTeX of the result tables: one ``table`` environment per dataset/split group (with the metric groups as
column spans, uni-modal datasets as their own spans, problems as footnotes), and the preamble of a standalone
document."""

from __future__ import annotations

import re

import pandas as pd

from bench.report.cells import LATEX, FormattedTable, format_table, legend, table_groups, uni_legends
from bench.report.collect import GROUPS, K_LABEL
from bench.report.escape import latex_escape
from bench.report.significance import Significance

__all__ = ["LATEX_PREAMBLE", "latex_table", "render_latex"]

_LATEX_LABEL_RE = re.compile(r"[^A-Za-z0-9]+")


def latex_table(t: FormattedTable) -> str:
    """One group as a ``table`` environment with caption, label and footnotes."""
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
        + (f"; {latex_escape(legend(t, 'DELTA').rstrip('.'))}".replace("DELTA", r"$\Delta$RSUM")
           if t.rule or t.ci_level else "")  # fmt: skip
        + ("; best per column in bold" if t.any_bold and not t.rule else "")
        + ("; n/a: the model has no joint image-text space" if t.any_na else "")
        + ("; other sets: " + ", ".join(uni_legends(t.uni)) if t.uni else "")
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


LATEX_PREAMBLE = r"""\documentclass{article}
\usepackage[landscape,margin=1.5cm]{geometry}
\usepackage{booktabs}
\begin{document}
"""


def render_latex(df: pd.DataFrame, *, delta: bool, sig: Significance | None, baseline: str | None) -> str:
    """Every dataset/split group of ``df`` as a LaTeX table."""
    tables = (format_table(sub, LATEX, delta=delta, sig=sig, baseline=baseline) for sub in table_groups(df))
    return "\n".join(latex_table(t) for t in tables)
