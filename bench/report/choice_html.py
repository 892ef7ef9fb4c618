"""A choice set's page of ``bench report --html``: its table in the paper's form, then the items the chosen row
fails, each with thumbnails of its images and the score of every (image, caption) pair, the correct pairs marked.

The items come from the row's per-item file (checked against its record's sha256), which holds each item's image
paths, captions and correct assignment besides its outcomes and scores, so nothing is re-scored.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.errors import BenchError
from bench.report.choice_tables import render_choice
from bench.report.uncertainty import checked_per_query_file

if TYPE_CHECKING:
    from bench.report.html import Thumbs

__all__ = ["choice_page"]

def _focus(records: Sequence[Mapping[str, Any]], model: str | None, method: str | None) -> Mapping[str, Any] | None:
    rows = [r for r in records if r.get("status") == "ok" and isinstance(r.get("per_query"), dict)
            and isinstance((r.get("metrics") or {}).get("choice"), Mapping)]  # fmt: skip
    if model and method:
        rows = [r for r in rows if (r.get("model"), r.get("method")) == (model, method)]
    if not rows:
        return None
    best = max(rows, key=lambda r: (r["metrics"]["choice"].get("text") or {}).get("mean", -1.0))
    same = [r for r in rows if (r["model"], r["method"]) == (best["model"], best["method"])]
    return min(same, key=lambda r: int(r.get("seed", 0)))


def _item(thumbs: Thumbs, first: int, item: Mapping[str, Any], scores: np.ndarray, subset: str, item_id: str) -> str:
    """One item's table: a row per image (its thumbnail is row ``first + a`` of ``thumbs``), a column per caption."""
    images, captions, truth = item["images"], item["captions"], item["truth"]
    s = scores.reshape(len(images), len(captions))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in captions)
    rows = []
    for a, path in enumerate(images):
        src = thumbs.src(first + a)
        img = f'<img src="{src}" alt="">' if src else html.escape(Path(path).name)
        cells = "".join(f"<td class=\"{'pos' if truth[a] == b else ''}\">{s[a, b]:.4f}</td>"
                        for b in range(len(captions)))  # fmt: skip
        rows.append(f"<tr><td>{img}</td>{cells}</tr>")
    return (f"<h3>{html.escape(subset)} / {html.escape(item_id)}</h3><table class=\"item\"><tr><th></th>{head}</tr>"
            f"{''.join(rows)}</table>")


def choice_page(records: Sequence[Mapping[str, Any]], out: Path, dataset: str, split: str, *,
                model: str | None = None, method: str | None = None, examples: int = 8,
                thumb_px: int = 112) -> str:  # fmt: skip
    """The page body (HTML) of one choice set: the table, then up to ``examples`` failed items of the focus row
    (``model``/``method``, default the best mean text accuracy), thumbnails written under ``out/thumbs``."""
    from bench.report.html import Thumbs

    body = [f"<h2>Results</h2>{render_choice(records, 'html')}"]
    rec = _focus(records, model, method)
    if rec is None:
        return "".join(body) + "<p>No row has per-item results ([eval] per_query = true writes them).</p>"
    try:
        path = checked_per_query_file(rec)
        with np.load(path, allow_pickle=False) as z:
            items = json.loads(str(z["items"])) if "items" in z else []
            text, scores, offsets = z["outcome_text"], z["scores"], z["offsets"]
            subsets, ids = z["subset"], z["item_id"]
    except (BenchError, OSError, KeyError, ValueError) as e:
        return "".join(body) + f"<p>{html.escape(str(e))}</p>"
    failed = np.flatnonzero(text == 0)
    label = f"{rec['model']} / {rec['method']} (seed {rec.get('seed')})"
    body.append(f"<h2>Failed items of {html.escape(label)}</h2><p>{failed.size} of {text.size} items fail the text "
                "test; each table's rows are the item's images, its columns the captions, the correct pairs in "
                "green.</p>")  # fmt: skip
    if not items:
        return "".join(body) + "<p>This per-item file predates stored items; re-run the cell to see them.</p>"
    shown = failed[:examples].tolist()
    paths = [p for k in shown for p in items[k]["images"]]
    thumbs = Thumbs(out, f"{dataset}-{split}", np.asarray(paths, dtype=object), thumb_px)
    first = 0
    for k in shown:
        body.append(_item(thumbs, first, items[k], scores[offsets[k] : offsets[k + 1]], str(subsets[k]), str(ids[k])))
        first += len(items[k]["images"])
    return "".join(body)
