"""The Recall@K plot of a set of result records (a PNG beside the paper tables)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bench.report.collect import TableError, collect

__all__ = ["plot_recall_at_k"]

log = logging.getLogger(__name__)

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
