"""A leaderboard of the stored rows (model × method) of one dataset and split, with rank intervals and tie groups
(:mod:`bench.stats.ranks`), from the per-query files: nothing is re-scored.

Only rows scored on the same queries are ranked together: the largest set of rows that agree is ranked, and each
other row is named with the reason it was left out (other queries, no such metric, no per-query file).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.errors import BenchError
from bench.report.escape import latex_escape, markdown_escape
from bench.stats.bootstrap import BootstrapConfig

__all__ = ["Board", "BoardRow", "leaderboard", "render_board"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BoardRow:
    """One ranked row."""

    model: str
    method: str
    seeds: list[int]
    value: float
    ci: list[float]
    rank: int
    rank_ci: tuple[int, int]
    group: int
    p_next: float | None


@dataclass
class Board:
    """A ranked board and what it could not rank."""

    dataset: str
    split: str
    metric: str
    rows: list[BoardRow]
    left_out: dict[str, str] = field(default_factory=dict)  # "model:method" -> why
    config: BootstrapConfig = field(default_factory=BootstrapConfig)
    alpha: float = 0.05

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "dataset": self.dataset, "split": self.split, "metric": self.metric, "alpha": self.alpha,
            "rows": [vars(r) | {"rank_ci": list(r.rank_ci)} for r in self.rows], "left_out": self.left_out,
            "bootstrap": {"resamples": self.config.resamples, "seed": self.config.seed, "level": self.config.level,
                          "unit": "image", "tie_groups": "Holm step-down over adjacent paired bootstrap tests"},
        }  # fmt: skip


def leaderboard(records: Sequence[Mapping[str, Any]], dataset: str, split: str, metric: str, cfg: BootstrapConfig,
                *, alpha: float = 0.05, ks: Sequence[int] = (1, 5, 10)) -> Board:  # fmt: skip
    """Rank every model × method with ``ok`` records of ``dataset``/``split`` by ``metric``.

    Raises:
        BenchError: fewer than two rows can be ranked (one line saying why).
    """
    from bench.report.uncertainty import row_values
    from bench.stats.ranks import rank_rows

    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        if r.get("dataset") == dataset and r.get("split") == split and r.get("status") == "ok":
            groups.setdefault((str(r.get("model")), str(r.get("method"))), []).append(r)
    if not groups:
        raise BenchError(f"no ok record for dataset {dataset!r}, split {split!r}")
    left_out: dict[str, str] = {}
    cells: dict[tuple[str, str], list[Any]] = {}
    for key, recs in groups.items():
        try:
            values = row_values(recs, ks)
        except BenchError as e:
            left_out[":".join(key)] = str(e)
            continue
        direction = metric.split("_", 1)[0] if metric != "rsum" else "i2t"
        needs = ("i2t", "t2i") if metric == "rsum" else (direction,)
        if not values or any(d not in c.values for c in values for d in needs):
            left_out[":".join(key)] = f"no {metric}"
            continue
        cells[key] = values
    by_queries: dict[str, list[tuple[str, str]]] = {}
    for key, values in cells.items():
        kinds = {c.queries_key for c in values}
        if len(kinds) != 1:
            left_out[":".join(key)] = "its seeds were scored on different queries"
            continue
        by_queries.setdefault(kinds.pop(), []).append(key)
    if not by_queries:
        raise BenchError(f"no row of {dataset}/{split} can be ranked by {metric}: "
                         + "; ".join(f"{k}: {v}" for k, v in left_out.items()))  # fmt: skip
    chosen = max(by_queries.values(), key=len)
    for keys in by_queries.values():
        if keys is not chosen:
            left_out.update({":".join(k): "scored on other queries than the ranked rows" for k in keys})
    if len(chosen) < 2:
        why = "; ".join(f"{k}: {v}" for k, v in left_out.items())
        raise BenchError(f"only one row of {dataset}/{split} can be ranked by {metric}" + (f" ({why})" if why else ""))
    first = cells[chosen[0]][0].values
    known = sorted({f"{d}_{m}" for d, qv in first.items() for m in qv.values} | ({"rsum"} if "t2i" in first else set()))
    if metric not in known:
        raise BenchError(f"no metric {metric!r} in the rows of {dataset}/{split}; known: {', '.join(known)}")
    try:
        ranked = rank_rows([[c.values for c in cells[k]] for k in chosen], cells[chosen[0]][0].n_images, metric, cfg,
                           alpha, higher_is_better=not metric.endswith("meanr"))  # fmt: skip
    except (KeyError, ValueError) as e:
        raise BenchError(f"bench leaderboard: {e}") from None
    rows = []
    for r in ranked:
        model, method = chosen[r.index]
        rows.append(BoardRow(model=model, method=method, seeds=[c.seed for c in cells[(model, method)]], value=r.value,
                             ci=r.ci, rank=r.rank, rank_ci=r.rank_ci, group=r.group, p_next=r.p_next))  # fmt: skip
    return Board(dataset, split, metric, rows, left_out, cfg, alpha)


def _caption(note: str) -> str:
    """``note`` escaped for LaTeX, keeping its one math span ($\\alpha$)."""
    left, math, right = note.partition(r"$\alpha$")
    return latex_escape(left) + math + latex_escape(right)


def _rank_range(r: BoardRow, dash: str) -> str:
    return str(r.rank_ci[0]) if r.rank_ci[0] == r.rank_ci[1] else f"{r.rank_ci[0]}{dash}{r.rank_ci[1]}"


def render_board(board: Board, fmt: str = "markdown") -> str:
    """The board as Markdown, LaTeX (booktabs), CSV or an HTML table (the report's)."""
    tex = fmt == "latex"
    dash, alpha = ("--", r"$\alpha$") if tex else ("–", "α")
    pct = f"{100 * board.config.level:g}%"
    head = ["Rank", "Model", "Method", "Seeds", board.metric, f"{pct} CI", "Rank CI", "Group", "p (next, Holm)"]
    body = [[str(r.rank), r.model, r.method, str(len(r.seeds)), f"{r.value:.2f}", f"{r.ci[0]:.2f}{dash}{r.ci[1]:.2f}",
             _rank_range(r, dash), str(r.group), "" if r.p_next is None else f"{r.p_next:.3g}"]
            for r in board.rows]  # fmt: skip
    note = (f"{board.dataset}/{board.split}, ranked by {board.metric}: {pct} intervals over {board.config.resamples} "
            f"image resamples (seed {board.config.seed}), all rows on the same draws; rows of one group are not "
            f"separated at {alpha} = {board.alpha:g} (paired bootstrap tests of adjacent rows, Holm step-down).")
    if board.left_out:
        note += " Left out: " + "; ".join(f"{k} ({v})" for k, v in board.left_out.items()) + "."
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["rank", "model", "method", "seeds", board.metric, "ci_low", "ci_high", "rank_low", "rank_high",
                    "group", "p_next_holm"])  # fmt: skip
        for r in board.rows:
            w.writerow([r.rank, r.model, r.method, len(r.seeds), r.value, r.ci[0], r.ci[1], *r.rank_ci, r.group,
                        "" if r.p_next is None else r.p_next])  # fmt: skip
        return buf.getvalue()
    if fmt == "latex":
        lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{rllrrcccr}", r"\toprule",
                 " & ".join(latex_escape(h) for h in head) + r" \\", r"\midrule"]  # fmt: skip
        for i, cells in enumerate(body):
            if i and board.rows[i].group != board.rows[i - 1].group:
                lines.append(r"\midrule")
            lines.append(" & ".join(latex_escape(c) if j in (1, 2) else c for j, c in enumerate(cells)) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_caption(note)}}}", r"\end{table}"]
        return "\n".join(lines) + "\n"
    if fmt == "html":
        import html

        cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        trs = [f"<tr>{cells}</tr>"]
        for i, row in enumerate(body):
            split = ' class="group-start"' if i and board.rows[i].group != board.rows[i - 1].group else ""
            trs.append(f"<tr{split}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
        return (f'<table class="leaderboard">{"".join(trs)}</table><p>{html.escape(note)}</p>')
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    rows += ["| " + " | ".join(markdown_escape(c) for c in cells) + " |" for cells in body]
    return "\n".join(rows) + "\n\n" + note + "\n"
