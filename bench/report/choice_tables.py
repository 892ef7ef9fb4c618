"""Each choice set in the form its paper prints it: one table per (set, split), a row per model, method and train set,
a column per subset with the paper's averages after their subsets, then the mean over subsets; where the set has an
image test (Winoground), the text, image and group scores side by side.

Values are the mean over seeds (± the sample std for several seeds), in %; a column a row has no number for shows
``–``. The same numbers join the image-text tables as the ``<set> text`` columns (:mod:`bench.tasks.choice`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from tabulate import tabulate

from bench.report.collect import DASH
from bench.report.escape import latex_escape, markdown_escape
from bench.report.unimodal import train_dataset_of

__all__ = ["render_choice"]

_KINDS = ("text", "image", "group")


def _columns(block: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(label, kind, name) of a set's columns, in the paper's order."""
    subsets = list(block.get("subsets") or [])
    averages = list(block.get("averages") or [])
    kinds = [k for k in _KINDS if isinstance(block.get(k), Mapping)]
    if len(kinds) > 1 or len(subsets) == 1:  # Winoground's form: one score per test
        return [(k, k, "mean") for k in kinds]
    cols: list[tuple[str, str, str]] = []
    placed: set[str] = set()
    for avg in (a for a in averages if a != "mean"):
        parts = [s for s in subsets if s.startswith(f"{avg}_")] or []
        cols += [(s, "text", s) for s in parts] + [(f"{avg} avg", "text", avg)]
        placed.update(parts)
    cols += [(s, "text", s) for s in subsets if s not in placed]
    return cols + [("mean", "text", "mean")]


def _cell(values: list[float], fmt: str) -> str:
    if not values:
        return "--" if fmt == "latex" else DASH
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.1f}"
    pm = r" $\pm$ " if fmt == "latex" else " ± "
    return f"{mean:.1f}{pm}{float(np.std(values, ddof=1)):.1f}"


def _tables(records: list[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        block = (r.get("metrics") or {}).get("choice") if r.get("status") == "ok" else None
        if not isinstance(block, Mapping):
            continue
        t = out.setdefault((str(r["dataset"]), str(r["split"])), {"columns": _columns(block), "rows": {}})
        trained = train_dataset_of(r)
        row = t["rows"].setdefault((str(r["model"]), str(r["method"]), trained or ""), {})
        for _, kind, name in t["columns"]:
            v = (block.get(kind) or {}).get(name)
            if v is not None:
                row.setdefault((kind, name), []).append(float(v))
        row.setdefault("seeds", set()).add(r.get("seed"))
    return out


def render_choice(records: Iterable[Mapping[str, Any]], fmt: str = "markdown") -> str:
    """The tables of ``records`` (choice-set records) as Markdown, LaTeX (booktabs) or HTML; empty when none is
    ``ok``."""
    parts = []
    for (dataset, split), t in _tables(list(records)).items():
        labels = [label for label, _, _ in t["columns"]]
        trained = any(key[2] for key in t["rows"])
        rows = []
        for (model, method, train), values in t["rows"].items():
            cells = [_cell(values.get((kind, name), []), fmt) for _, kind, name in t["columns"]]
            rows.append([model, method, *([train or DASH] if trained else []), str(len(values["seeds"])), *cells])
        head = ["Model", "Method", *(["Trained on"] if trained else []), "Seeds", *labels]
        if fmt == "html":
            import html

            th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
            trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
            parts.append(f"<table><tr>{th}</tr>{trs}</table>")
        elif fmt == "latex":
            spec = "l" * (3 if trained else 2) + "r" * (len(labels) + 1)
            line = " & ".join(latex_escape(c) for c in head) + r" \\"
            body = "\n".join(" & ".join(c if "$" in c else latex_escape(c).replace(DASH, "--") for c in r) + r" \\"
                             for r in rows)  # fmt: skip
            parts.append(
                "\\begin{table}[t]\n\\centering\n"
                f"\\caption{{{latex_escape(dataset)} ({latex_escape(split)}): accuracy in \\% per subset, the "
                "paper's averages and the mean over subsets; a tie is not a correct choice}\n"
                f"\\begin{{tabular}}{{{spec}}}\n\\toprule\n{line}\n\\midrule\n{body}\n\\bottomrule\n"
                "\\end{tabular}\n\\end{table}\n"
            )
        else:
            cells = [[markdown_escape(c) for c in r] for r in rows]
            align = ["left"] * (3 if trained else 2) + ["right"] * (len(labels) + 1)
            table = tabulate(cells, headers=[markdown_escape(h) for h in head], tablefmt="pipe", disable_numparse=True,
                             colalign=align)  # fmt: skip
            parts.append(f"### {markdown_escape(dataset)} ({markdown_escape(split)}): choice accuracy (%)\n\n{table}\n")
    return "\n".join(parts)
