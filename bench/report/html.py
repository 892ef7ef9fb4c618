"""``bench report --html DIR``: a static error-analysis page per dataset, read from disk (no server, no network).

Each page holds the dataset's table (mean ± std over seeds, with bootstrap intervals where per-query files exist),
the R@K plot, and, for one model/method (the best RSUM row unless chosen), from its stored per-query results:

* failing queries of each direction: the query (caption text, or a thumbnail) and its top 5, positives marked;
* queries that this row gets right at R@1 and a second method of the same model gets wrong (and the reverse count);
* likely false negatives: a wrong top 1 that nearly duplicates a labelled positive: an image whose difference hash
  is within a few bits of the query's own image (t2i), or a caption sharing at least half of its content words
  (stop words left out) with one of the image's own captions (i2t). A near-duplicate by pixels or by words, not by
  a model.

Thumbnails are small JPEG files written under ``DIR/thumbs``; the page links them by relative path.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.report.collect import collect
from bench.report.plots import plot_recall_at_k
from bench.report.sweeps import plot_sweep, render_variants, swept_records
from bench.report.uncertainty import read_per_query, row_intervals, row_values
from bench.report.unimodal import is_unimodal
from bench.scoring.perquery import PerQuery
from bench.stats.bootstrap import BootstrapConfig

__all__ = ["Thumbs", "write_report"]

log = logging.getLogger(__name__)

TOP = 5
_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
table.metrics{border-collapse:collapse;font-size:13px}
table.metrics td,table.metrics th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right}
table.metrics td:nth-child(-n+2),table.metrics th:nth-child(-n+2){text-align:left}
table.leaderboard{border-collapse:collapse;font-size:13px}
table.leaderboard td,table.leaderboard th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right}
table.leaderboard td:nth-child(2),table.leaderboard td:nth-child(3){text-align:left}
table.leaderboard tr.group-start td{border-top:2px solid #888}
.ci{color:#777;font-size:11px}
.q{display:flex;gap:10px;align-items:flex-start;margin:8px 0;padding:6px;border:1px solid #eee}
.q .text{width:260px;font-size:13px}
.q figure{margin:0;width:112px;font-size:11px;text-align:center}
.q img{width:112px;height:112px;object-fit:cover;border:3px solid #bbb}
.q img.pos{border-color:#2a2}.q img.neg{border-color:#c33}
ol.caps{font-size:12px;margin:0;padding-left:18px;width:520px}
li.pos{color:#185;font-weight:600}
table.item td.pos{color:#185;font-weight:600;background:#e8f6ea}table.item th{max-width:260px;font-weight:normal}
.missing{width:112px;height:112px;background:#eee;display:flex;align-items:center;justify-content:center}
"""
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.body.dataset.images = imgs.length;
  document.body.dataset.imagesOk = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
});
"""


_MISSING = '<div class="missing">?</div>'


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "_"


class Thumbs:
    """Thumbnails of split images (``paths``, by row), written once each under ``out/thumbs/<folder>``."""

    def __init__(self, out: Path, folder: str, paths: np.ndarray | None, size: int) -> None:
        self.out, self.folder, self.paths, self.size = out, folder, paths, size
        self.made: dict[int, str | None] = {}

    def src(self, row: int) -> str | None:
        if row in self.made:
            return self.made[row]
        from PIL import Image

        rel = f"thumbs/{self.folder}/{row}.jpg"
        self.made[row] = None
        if self.paths is None:
            return None
        try:
            with Image.open(str(self.paths[row])) as im:
                im = im.convert("RGB")
                im.thumbnail((self.size, self.size))
                (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
                im.save(self.out / rel, "JPEG", quality=80)
        except (OSError, ValueError) as e:
            log.info("no thumbnail for %s: %s", self.paths[row], e)
            return None
        self.made[row] = rel
        return rel

    def figure(self, row: int, positive: bool | None, label: str = "") -> str:
        src = self.src(row)
        cls = "" if positive is None else ("pos" if positive else "neg")
        img = f'<img class="{cls}" src="{html.escape(src)}" alt="image {row}">' if src else _MISSING
        return f"<figure>{img}<figcaption>{html.escape(label)}</figcaption></figure>"


def _dhash(path: str) -> int | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            px = np.asarray(im.convert("L").resize((9, 8)), dtype=np.int16)
    except (OSError, ValueError):
        return None
    bits = (px[:, 1:] > px[:, :-1]).reshape(-1)
    return int("".join("1" if b else "0" for b in bits), 2)


# Words too common in captions to say two captions describe the same scene.
_STOPWORDS = frozenset(
    "a an the of on in at to and with is are its it this that there some two three near next by for from"
    " into onto up down over under while as his her their has have".split()
)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower())) - _STOPWORDS


def _table(records: Sequence[Mapping[str, Any]], cis: Mapping[tuple[str, str], dict[str, Any]]) -> str:
    df = collect(records)
    cols = [("i2t", "r1"), ("i2t", "r5"), ("i2t", "r10"), ("t2i", "r1"), ("t2i", "r5"), ("t2i", "r10"),
            ("rsum", ""), ("t2t", "r1")]  # fmt: skip
    head = "".join(f"<th>{d} R@{k[1:]}</th>" if k else "<th>RSUM</th>" for d, k in cols)
    rows = []
    for _, r in df.iterrows():
        cells = [html.escape(str(r["model"])), html.escape(str(r["method"])), str(r["seeds"])]
        ci = cis.get((str(r["model"]), str(r["method"])), {})
        for d, k in cols:
            col = f"{d}_{k}" if k else d
            v = r.get(col)
            if v is None or (isinstance(v, float) and np.isnan(v)):
                cells.append("–")
                continue
            text = f"{v:.1f}"
            if not np.isnan(r.get(f"{col}_std", np.nan)):
                text += f" ± {r[f'{col}_std']:.1f}"
            bounds = ci.get("rsum") if not k else (ci.get(d) or {}).get(k)
            if bounds:
                text += f' <span class="ci">[{bounds[0]:.1f}, {bounds[1]:.1f}]</span>'
            cells.append(text)
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f'<table class="metrics" id="results"><tr><th>Model</th><th>Method</th><th>Seeds</th>{head}</tr>'
            + "".join(rows) + "</table>")  # fmt: skip


def _t2i_block(pq: PerQuery, thumbs: Thumbs, rows: Iterable[int], note: dict[int, str] | None = None) -> str:
    q = pq.queries.get("t2i")
    if q is None or q.lists is None:  # a row without image-text metrics (uni-modal towers)
        return ""
    at = {int(r): i for i, r in enumerate(q.queries)}
    out = []
    for row in rows:
        i = at[int(row)]
        true = int(pq.caption_image[row])
        text = html.escape(str(pq.caption_text[row])) if pq.caption_text is not None else f"caption {row}"
        extra = f"<br><em>{html.escape(note[row])}</em>" if note and row in note else ""
        figs = [thumbs.figure(true, True, "labelled")] + [
            thumbs.figure(int(g), bool(p), f"#{j + 1}")
            for j, (g, p) in enumerate(zip(q.lists.index[i, :TOP], q.lists.positive[i, :TOP], strict=True))  # type: ignore[union-attr]
            if g >= 0
        ]
        out.append(f'<div class="q t2i"><div class="text">“{text}”<br>rank {int(q.ranks[i]) + 1}{extra}</div>'
                   + "".join(figs) + "</div>")  # fmt: skip
    return "".join(out)


def _i2t_block(pq: PerQuery, thumbs: Thumbs, rows: Iterable[int], note: dict[int, str] | None = None) -> str:
    q = pq.queries.get("i2t")
    if q is None or q.lists is None:
        return ""
    at = {int(r): i for i, r in enumerate(q.queries)}
    out = []
    for row in rows:
        i = at[int(row)]
        items = []
        for g, p in zip(q.lists.index[i, :TOP], q.lists.positive[i, :TOP], strict=True):  # type: ignore[union-attr]
            if g < 0:
                continue
            text = str(pq.caption_text[g]) if pq.caption_text is not None else f"caption {g}"
            items.append(f'<li class="{"pos" if p else "neg"}">{html.escape(text)}</li>')
        extra = f"<br><em>{html.escape(note[row])}</em>" if note and row in note else ""
        out.append(f'<div class="q i2t">{thumbs.figure(int(row), None, f"rank {int(q.ranks[i]) + 1}")}'
                   f'<ol class="caps">{"".join(items)}</ol>{extra}</div>')  # fmt: skip
    return "".join(out)


def _false_negatives(pq: PerQuery, limit: int, max_checked: int = 400) -> tuple[dict[int, str], dict[int, str]]:
    """Wrong top-1s that nearly duplicate a labelled positive: (t2i rows -> why, i2t rows -> why)."""
    t2i, i2t = {}, {}
    q = pq.queries.get("t2i")
    if q is not None and q.lists is not None and pq.image_path is not None:
        hashes: dict[int, int | None] = {}

        def h(row: int) -> int | None:
            if row not in hashes:
                hashes[row] = _dhash(str(pq.image_path[row]))  # type: ignore[index]
            return hashes[row]

        for i in np.flatnonzero(q.ranks > 0)[:max_checked]:
            top, true = int(q.lists.index[i, 0]), int(pq.caption_image[q.queries[i]])
            a, b = h(top), h(true)
            if a is not None and b is not None and bin(a ^ b).count("1") <= 6:
                bits = bin(a ^ b).count("1")
                t2i[int(q.queries[i])] = f"top-1 image is within {bits} of 64 hash bits of the labelled one"
            if len(t2i) >= limit:
                break
    q = pq.queries.get("i2t")
    if q is not None and q.lists is not None and pq.caption_text is not None:
        own: dict[int, list[set[str]]] = {}
        for j, img in enumerate(pq.caption_image):
            own.setdefault(int(img), []).append(_words(str(pq.caption_text[j])))
        for i in np.flatnonzero(q.ranks > 0)[:max_checked]:
            row, top = int(q.queries[i]), int(q.lists.index[i, 0])
            words = _words(str(pq.caption_text[top]))
            best = max((len(words & w) / max(1, len(words | w)) for w in own.get(row, [])), default=0.0)
            if best >= 0.5:
                i2t[row] = f"top-1 caption shares {best:.0%} of its words with one of the image's own captions"
            if len(i2t) >= limit:
                break
    return t2i, i2t


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}"
            f"<script>{_SCRIPT}</script></body></html>\n")  # fmt: skip


def write_report(
    records: Sequence[Mapping[str, Any]],
    out: Path,
    *,
    model: str | None = None,
    method: str | None = None,
    against: str | None = None,
    examples: int = 8,
    thumb_px: int = 112,
    bootstrap: BootstrapConfig | None = None,
) -> list[Path]:
    """Write ``out/index.html`` and one page per (dataset, split) of the image-text ``records``; returns the pages.

    ``model``/``method`` choose the row whose queries are shown (default: the best RSUM row with per-query files);
    ``against`` the method it is compared with (default: another method of the same model, the ablation's baseline
    ``contrastive`` first, then zero-shot).
    """
    cfg = bootstrap or BootstrapConfig()
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        if not is_unimodal(r):
            groups.setdefault((str(r.get("dataset")), str(r.get("split"))), []).append(r)
    pages = []
    for (dataset, split), recs in groups.items():
        slug = _slug(f"{dataset}-{split}")
        rows: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for r in recs:
            if r.get("status") == "ok" and isinstance(r.get("per_query"), dict):
                rows.setdefault((str(r["model"]), str(r["method"])), []).append(r)
        cis = {}
        for key, rs in rows.items():
            try:
                cis[key] = row_intervals(row_values(rs), cfg)
            except Exception as e:  # a stale file costs its intervals, not the page
                log.warning("%s: no intervals (%s)", "/".join(key), e)
        body = [f"<h2>Results</h2>{_table(recs, cis)}"]
        plot = plot_recall_at_k(recs, out / f"{slug}-recall.png")
        body.append(f'<h2>Recall@K</h2><img id="plot" src="{plot.name}" alt="R@K plot" style="max-width:900px">')
        if swept_records(recs):  # a sweep: its variants side by side, and the metrics against each swept value
            sweep_plot = plot_sweep(recs, out / f"{slug}-sweep.png")
            body.append(f"<h2>Sweep</h2>{render_variants(recs, 'html')}<img id=\"sweep\" src=\"{sweep_plot.name}\" "
                        'alt="sweep plot" style="max-width:900px">')  # fmt: skip
        body.append(f"<h2>Leaderboard</h2>{_board(recs, dataset, split, cfg)}")
        focus = (model, method) if model and method else None
        if focus is None and rows:
            focus = max(rows, key=lambda k: np.mean([r["metrics"].get("rsum") or -1 for r in rows[k]]))
        if focus in rows:
            rec = min(rows[focus], key=lambda r: int(r.get("seed", 0)))
            pq = read_per_query(rec)
            thumbs = Thumbs(out, slug, pq.image_path, thumb_px)
            label = f"{focus[0]} / {focus[1]} (seed {rec.get('seed')})"
            body.append(f"<h2>Failing queries of {html.escape(label)}</h2>")
            if "t2i" in pq.queries and pq.queries["t2i"].lists is not None:
                q = pq.queries["t2i"]
                worst = q.queries[np.argsort(-q.ranks, kind="stable")[:examples]]
                body.append(f"<h3>Text → image ({int(np.sum(q.ranks > 0))} of {q.ranks.size} miss R@1)</h3>")
                body.append(_t2i_block(pq, thumbs, worst))
            if "i2t" in pq.queries and pq.queries["i2t"].lists is not None:
                q = pq.queries["i2t"]
                worst = q.queries[np.argsort(-q.ranks, kind="stable")[:examples]]
                body.append(f"<h3>Image → text ({int(np.sum(q.ranks > 0))} of {q.ranks.size} miss R@1)</h3>")
                body.append(_i2t_block(pq, thumbs, worst))
            body.append(_versus(pq, thumbs, rows, focus, against, rec, examples))
            fn_t2i, fn_i2t = _false_negatives(pq, examples)
            body.append("<h2>Likely false negatives</h2><p>A wrong top 1 that nearly duplicates a labelled "
                        "positive (by image hash or by caption words).</p>")  # fmt: skip
            body.append(_t2i_block(pq, thumbs, list(fn_t2i), fn_t2i) or "<p>none found (text → image)</p>")
            body.append(_i2t_block(pq, thumbs, list(fn_i2t), fn_i2t) or "<p>none found (image → text)</p>")
        else:
            body.append("<p>No row has per-query results ([eval] per_query = true writes them).</p>")
        page = out / f"{slug}.html"
        page.write_text(_page(f"itr-bench: {dataset} ({split})", "".join(body)), encoding="utf-8")
        pages.append(page)
    pages += _task_pages(records, out, model=model, method=method, examples=examples, thumb_px=thumb_px)
    links = "".join(f'<li><a href="{p.name}">{html.escape(p.stem)}</a></li>' for p in pages)
    (out / "index.html").write_text(_page("itr-bench report", f"<ul>{links}</ul>"), encoding="utf-8")
    return pages


def _task_pages(records: Sequence[Mapping[str, Any]], out: Path, **options: Any) -> list[Path]:
    """A page per (dataset, split) of each eval-only task that draws its own (choice sets)."""
    from bench.tasks import get_task, task_of_record

    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        if is_unimodal(r):
            groups.setdefault((task_of_record(r), str(r.get("dataset")), str(r.get("split"))), []).append(r)
    pages = []
    for (task, dataset, split), recs in groups.items():
        try:
            body = get_task(task).report_section(recs, out, dataset, split, **options)
        except BenchError as e:  # a task that is not installed here
            log.warning("%s/%s: no page (%s)", dataset, split, e)
            continue
        if body is None:
            continue
        page = out / f"{_slug(f'{dataset}-{split}')}.html"
        page.write_text(_page(f"itr-bench: {dataset} ({split})", body), encoding="utf-8")
        pages.append(page)
    return pages


def _board(records: Sequence[Mapping[str, Any]], dataset: str, split: str, cfg: BootstrapConfig) -> str:
    """The page's rows ranked by RSUM with rank intervals and tie groups, or why they cannot be."""
    from bench.report.leaderboard import leaderboard, render_board

    try:
        return render_board(leaderboard(records, dataset, split, "rsum", cfg), "html")
    except BenchError as e:
        return f"<p>{html.escape(str(e))}</p>"


def _versus(
    pq: PerQuery,
    thumbs: Thumbs,
    rows: Mapping[tuple[str, str], list[Mapping[str, Any]]],
    focus: tuple[str, str],
    against: str | None,
    rec: Mapping[str, Any],
    examples: int,
) -> str:
    others = [m for (mod, m) in rows if mod == focus[0] and m != focus[1]]
    # By default the ablation's baseline (contrastive), then zero-shot: random heads tell nothing.
    baseline_first = sorted(others, key=lambda m: (m != "contrastive", m != "zeroshot"))
    other = against if against in others else (baseline_first[0] if others else None)
    if other is None:
        return ""
    cands = rows[(focus[0], other)]
    rec_b = next((r for r in cands if r.get("seed") == rec.get("seed")), cands[0])
    pq_b = read_per_query(rec_b)
    qa, qb = pq.queries.get("t2i"), pq_b.queries.get("t2i")
    if qa is None or qb is None or not np.array_equal(qa.queries, qb.queries):
        return ""
    a_only = qa.queries[(qa.ranks == 0) & (qb.ranks > 0)]
    b_only = qa.queries[(qa.ranks > 0) & (qb.ranks == 0)]
    head = (f"<h2>{html.escape(focus[1])} right, {html.escape(other)} wrong (text → image R@1)</h2>"
            f"<p>{a_only.size} captions {html.escape(focus[1])} alone gets right; {b_only.size} the reverse. "
            "Each pair: the first list's top 5, then the second's.</p>")  # fmt: skip
    pairs = [
        _t2i_block(pq, thumbs, [row], {int(row): focus[1]}) + _t2i_block(pq_b, thumbs, [row], {int(row): other})
        for row in a_only[:examples]
    ]
    return head + "".join(pairs)
