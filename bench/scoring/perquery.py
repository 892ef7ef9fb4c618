"""Per-query results on disk: one compressed ``.npz`` per cell (or per ``bench score --per-query``), written atomically.

Arrays (``d`` is ``i2t``, ``t2i``, ``t2t`` or ``i2i``; rows are indexed like the inputs: images for i2t and i2i,
captions for t2i and t2t)::

    caption_image      int32 [N_txt]      image row of each caption
    image_label        int32 [N_img]      class labels (only where i2i was scored)
    d_rank             int32 [rows]       0-based rank of the row's best positive; -1: the row is not a query
    d_topk_index       int32 [rows, k]    its top-k gallery rows in stage-one order (-1: none)
    d_topk_score       float32 [rows, k]  their scores
    rerank_d_rank      int32 [rows]       two-stage retrieval's rank (where re-ranking ran; stage one is d_rank)
    image_id           str [N_img]        the images' ids (file names or dataset ids), when known
    image_path         str [N_img]        the image files as read, when known
    caption_text       str [N_txt]        the captions, when known
    meta               str                JSON: format, cell, tie rule, k

Which list entries are positives follows from ``caption_image`` and ``image_label``, so it is not stored. Nothing
here scores anything: :func:`load_per_query` gives back the :class:`~bench.scoring.queries.QueryRanks` that the
bootstrap, the paired tests and the report read.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.atomic import atomic_write_bytes
from bench.scoring import TIE_RULE
from bench.scoring.queries import QueryRanks
from bench.scoring.topk import QueryLists

__all__ = ["FORMAT", "PerQuery", "load_per_query", "save_per_query", "sha256_of"]

FORMAT = 1
DIRECTIONS = ("i2t", "t2i", "t2t", "i2i")
_IMAGE_ROWS = ("i2t", "i2i")


@dataclass(frozen=True)
class PerQuery:
    """A per-query file read back."""

    queries: dict[str, QueryRanks]  # the directions that were scored
    caption_image: np.ndarray
    n_images: int
    image_label: np.ndarray | None = None
    image_id: np.ndarray | None = None
    image_path: np.ndarray | None = None
    caption_text: np.ndarray | None = None
    rerank: dict[str, np.ndarray] = field(default_factory=dict)  # direction -> two-stage ranks, indexed like d_rank
    meta: dict[str, Any] = field(default_factory=dict)


def _full(n_rows: int, rows: np.ndarray, values: np.ndarray, fill: float | int, dtype: Any) -> np.ndarray:
    out = np.full((n_rows, *values.shape[1:]), fill, dtype=dtype)
    out[rows] = values
    return out


def save_per_query(
    path: Path,
    queries: Mapping[str, QueryRanks | None],
    caption_image: np.ndarray,
    n_images: int,
    *,
    image_label: np.ndarray | None = None,
    image_id: Sequence[str] | None = None,
    image_path: Sequence[str] | None = None,
    caption_text: Sequence[str] | None = None,
    rerank: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> str:
    """Write the per-query file of one scoring pass to ``path`` (atomically) and return its sha256.

    ``rerank`` maps a direction to ``(query rows, two-stage ranks)``.
    """
    c2i = np.asarray(caption_image, dtype=np.int64)
    rows_of = {"i2t": n_images, "i2i": n_images, "t2i": c2i.shape[0], "t2t": c2i.shape[0]}
    arrays: dict[str, np.ndarray] = {"caption_image": c2i.astype(np.int32)}
    k = 0
    for d, q in queries.items():
        if q is None:
            continue
        arrays[f"{d}_rank"] = _full(rows_of[d], q.queries, q.ranks, -1, np.int32)
        if q.lists is not None:
            k = q.lists.index.shape[1]
            arrays[f"{d}_topk_index"] = _full(rows_of[d], q.queries, q.lists.index, -1, np.int32)
            arrays[f"{d}_topk_score"] = _full(rows_of[d], q.queries, q.lists.score, -np.inf, np.float32)
    if image_label is not None and queries.get("i2i") is not None:
        arrays["image_label"] = np.asarray(image_label, dtype=np.int32)
    for d, (rows, ranks) in (rerank or {}).items():
        arrays[f"rerank_{d}_rank"] = _full(rows_of[d], np.asarray(rows), np.asarray(ranks), -1, np.int32)
    if image_id is not None:
        arrays["image_id"] = np.asarray([str(x) for x in image_id])
    if image_path is not None:
        arrays["image_path"] = np.asarray([str(x) for x in image_path])
    if caption_text is not None:
        arrays["caption_text"] = np.asarray([str(x) for x in caption_text])
    info = {"format": FORMAT, "n_images": n_images, "topk": k, "tie_rule": TIE_RULE, **(meta or {})}
    arrays["meta"] = np.asarray(json.dumps(info, default=str))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    blob = buf.getvalue()
    atomic_write_bytes(Path(path), blob)
    return hashlib.sha256(blob).hexdigest()


def sha256_of(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _positives(d: str, q: np.ndarray, idx: np.ndarray, c2i: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    valid = idx >= 0
    safe = np.where(valid, idx, 0)
    if d == "i2t":
        pos = c2i[safe] == q[:, None]
    elif d == "t2i":
        pos = safe == c2i[q][:, None]
    elif d == "t2t":
        pos = (c2i[safe] == c2i[q][:, None]) & (safe != q[:, None])
    else:
        assert labels is not None
        pos = (labels[safe] == labels[q][:, None]) & (safe != q[:, None])
    return pos & valid


def load_per_query(path: Path) -> PerQuery:
    """Read a per-query file.

    Raises:
        ValueError: the file is not a per-query file of this format, or an array is missing or malformed (the
            message names the file and the array).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path}: not a readable per-query .npz file ({e})") from None
    try:
        meta = json.loads(str(arrays["meta"]))
        c2i = arrays["caption_image"].astype(np.int64)
    except KeyError as e:
        raise ValueError(f"{path}: no {e.args[0]} array; not an itr-bench per-query file") from None
    except (TypeError, ValueError) as e:  # a meta that is not JSON text, a caption_image that is not integers
        raise ValueError(f"{path}: its meta or caption_image array is malformed ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("n_images"), int):
        raise ValueError(f"{path}: its meta array is not the JSON object of a per-query file")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: meta.format is {meta.get('format')!r}, this version reads format {FORMAT}")
    try:
        return _read_arrays(arrays, meta, c2i)
    except (IndexError, KeyError, TypeError, ValueError) as e:  # arrays of other shapes than their meta says
        what = f"no {e.args[0]} array" if isinstance(e, KeyError) else str(e)
        raise ValueError(f"{path}: malformed per-query arrays ({what})") from None


def _read_arrays(arrays: dict[str, np.ndarray], meta: dict[str, Any], c2i: np.ndarray) -> PerQuery:
    n_img = int(meta["n_images"])
    if c2i.ndim != 1:
        raise ValueError(f"caption_image has shape {c2i.shape}, expected one row per caption")
    n_txt = c2i.shape[0]
    if n_txt and (c2i.min() < 0 or c2i.max() >= n_img):
        raise ValueError(f"caption_image has rows outside [0, {n_img})")
    counts = np.bincount(c2i, minlength=n_img)
    labels = arrays["image_label"].astype(np.int64) if "image_label" in arrays else None
    if labels is not None and labels.shape != (n_img,):
        raise ValueError(f"image_label has shape {labels.shape}, expected ({n_img},)")
    rows_of = {"i2t": n_img, "i2i": n_img, "t2i": n_txt, "t2t": n_txt}
    out: dict[str, QueryRanks] = {}
    for d in DIRECTIONS:
        if f"{d}_rank" not in arrays:
            continue
        full = arrays[f"{d}_rank"].astype(np.int64)
        if full.shape != (rows_of[d],):
            raise ValueError(f"{d}_rank has shape {full.shape}, expected ({rows_of[d]},)")
        if d == "i2i" and labels is None:
            raise ValueError("i2i_rank without image_label")
        q = np.flatnonzero(full >= 0)
        if d == "i2t":
            n_pos, cluster, gallery = counts[q], q, n_txt
        elif d == "t2i":
            n_pos, cluster, gallery = np.ones(q.size, dtype=np.int64), c2i[q], n_img
        elif d == "t2t":
            n_pos, cluster, gallery = counts[c2i[q]] - 1, c2i[q], n_txt - 1
        else:
            assert labels is not None
            _, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
            n_pos, cluster, gallery = sizes[inverse[q]] - 1, q, n_img - 1
        lists = None
        if f"{d}_topk_index" in arrays:
            idx = arrays[f"{d}_topk_index"].astype(np.int64)[q]
            score = arrays[f"{d}_topk_score"].astype(np.float32)[q]
            if idx.ndim != 2 or score.shape != idx.shape:
                raise ValueError(f"{d}_topk_index and {d}_topk_score are not one list per query")
            lists = QueryLists(idx, score, _positives(d, q, idx, c2i, labels))
        out[d] = QueryRanks(q, full[q], n_pos, cluster, gallery, lists)
    rerank = {d: arrays[f"rerank_{d}_rank"].astype(np.int64) for d in ("i2t", "t2i") if f"rerank_{d}_rank" in arrays}
    for name, rows in (("image_id", n_img), ("image_path", n_img), ("caption_text", n_txt),
                       *((f"rerank_{d}_rank", rows_of[d]) for d in rerank)):  # fmt: skip
        if name in arrays and arrays[name].shape != (rows,):
            raise ValueError(f"{name} has shape {arrays[name].shape}, expected ({rows},)")
    return PerQuery(
        queries=out,
        caption_image=c2i,
        n_images=n_img,
        image_label=labels,
        image_id=arrays.get("image_id"),
        image_path=arrays.get("image_path"),
        caption_text=arrays.get("caption_text"),
        rerank=rerank,
        meta=meta,
    )
