"""ECCV Caption and CxC on COCO's 5K test images, with the harness's own exact scorer.

The annotations come from the ``eccv-caption`` package (naver-ai/eccv-caption; ``pip install eccv_caption``), which
ships ECCV Caption's and CxC's positives as COCO image ids and caption annotation ids. Rows of the embeddings are
matched to them by id, so any model's embeddings of the 5K test images and their captions can be scored:

* ECCV Caption (Chun et al., ECCV 2022): mAP@R, R-Precision and R@1 in both directions, over its 1,261 image and
  1,332 caption queries, each against the whole gallery;
* CxC (Parekh et al., EACL 2021): R@1/5/10 of every image and caption with its extended positives.

Unlike ``eccv_caption.Metrics``, which reads ranked id lists the user cuts to some top K (cut them shorter than a
query's R and its metrics are wrong, eccv-caption's issue tracker shows), every query here is ranked against the
whole gallery in one exact scan: ranks follow the harness's :data:`~bench.scoring.TIE_RULE`, and the top-R list that
mAP@R and R-Precision read comes from the same pass. All values are in percent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np
import torch

from bench.errors import DataError
from bench.scoring.common import ArrayLike, as_matrix, scoring_device
from bench.scoring.queries import QueryRanks, per_query_values
from bench.scoring.strips import ranks_and_topk, retrieval_ranks
from bench.scoring.topk import QueryLists

__all__ = ["ECCV_FILES", "eccv_annotations", "eccv_cxc_metrics"]

log = logging.getLogger(__name__)

ECCV_FILES = {
    "eccv": ("eccv_image_to_caption.json", "eccv_caption_to_image.json"),
    "cxc": ("cxc_image_to_caption.json", "cxc_caption_to_image.json"),
}


def eccv_annotations() -> dict[str, dict[str, dict[int, list[int]]]]:
    """``{"eccv"|"cxc": {"i2t": {image id: [caption ids]}, "t2i": {caption id: [image ids]}}}`` from the
    ``eccv-caption`` package's data files.

    Raises:
        DataError: the package is not installed (one line saying how to install it).
    """
    try:
        data = resources.files("eccv_caption") / "data"
    except ModuleNotFoundError:
        raise DataError("ECCV Caption and CxC need the eccv-caption package: pip install eccv_caption") from None
    out: dict[str, dict[str, dict[int, list[int]]]] = {}
    for name, (i2t_file, t2i_file) in ECCV_FILES.items():
        out[name] = {}
        for direction, file in (("i2t", i2t_file), ("t2i", t2i_file)):
            raw = json.loads((data / file).read_text())
            out[name][direction] = {int(k): [int(x) for x in v] for k, v in raw.items()}
    return out


def _positives(
    gts: dict[int, list[int]], query_rows: dict[int, int], gallery_rows: dict[int, int], what: str
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Query rows and CSR positives of the annotated queries present in the rows (positives outside them dropped)."""
    queries, indptr, indices = [], [0], []
    dropped_q = dropped_p = 0
    for qid, pos in gts.items():
        row = query_rows.get(qid)
        rows = sorted({gallery_rows[p] for p in pos if p in gallery_rows})
        dropped_p += len(pos) - len(rows)
        if row is None or not rows:
            dropped_q += 1
            continue
        queries.append(row)
        indices.extend(rows)
        indptr.append(len(indices))
    if dropped_q or dropped_p:
        log.warning("%s: %d annotated queries and %d positives are not among the given ids and are left out",
                    what, dropped_q, dropped_p)  # fmt: skip
    if not queries:
        raise DataError(f"{what}: none of the annotated queries is among the given ids (COCO 5K test ids expected)")
    return np.asarray(queries, dtype=np.int64), (np.asarray(indptr, dtype=np.int64), np.asarray(indices, np.int64))


def eccv_cxc_metrics(
    image_emb: ArrayLike,
    text_emb: ArrayLike,
    image_ids: Sequence[int],
    caption_ids: Sequence[int],
    *,
    normalize: bool = True,
    memory_mb: float = 256.0,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """ECCV Caption (mAP@R, R-Precision, R@1) and CxC (R@1/5/10) of i2t and t2i, in percent.

    Args:
        image_emb: [N_img, D] image embeddings; row i is COCO image ``image_ids[i]``.
        text_emb: [N_txt, D] caption embeddings; row j is COCO caption annotation ``caption_ids[j]``.
        image_ids: COCO image ids of the rows.
        caption_ids: COCO caption annotation ids of the rows.
        normalize: L2-normalise rows first (cosine similarity).
        memory_mb: strip budget of the exact scorer.
        device: where to score.

    Returns:
        ``{"eccv": {"i2t": {"map_at_r", "r_precision", "r1", "n_queries"}, "t2i": {...}},
        "cxc": {"i2t": {"r1", "r5", "r10", "n_queries"}, "t2i": {...}}}``.
    """
    device = scoring_device(image_emb, device)
    img = as_matrix(image_emb, "image_emb", device)
    txt = as_matrix(text_emb, "text_emb", device)
    if img.shape[0] != len(image_ids) or txt.shape[0] != len(caption_ids):
        raise DataError(f"{len(image_ids)} image ids for {img.shape[0]} image rows, {len(caption_ids)} caption ids for "
                        f"{txt.shape[0]} caption rows")  # fmt: skip
    for name, ids in (("image ids", image_ids), ("caption ids", caption_ids)):
        if len(set(ids)) != len(ids):
            raise DataError(f"{name}: an id is listed twice")
    if normalize:
        img, txt = torch.nn.functional.normalize(img, dim=1), torch.nn.functional.normalize(txt, dim=1)
    img_rows = {int(x): i for i, x in enumerate(image_ids)}
    cap_rows = {int(x): j for j, x in enumerate(caption_ids)}
    ann = eccv_annotations()
    sides = {"i2t": (img, txt, img_rows, cap_rows), "t2i": (txt, img, cap_rows, img_rows)}
    out: dict[str, Any] = {"eccv": {}, "cxc": {}}
    for direction, (q_emb, g_emb, q_rows, g_rows) in sides.items():
        queries, (indptr, indices) = _positives(ann["eccv"][direction], q_rows, g_rows, f"ECCV Caption {direction}")
        n_pos = np.diff(indptr)
        q_t = torch.from_numpy(queries).to(device)
        ranked = ranks_and_topk(q_emb[q_t], g_emb, (indptr, indices), int(n_pos.max()), memory_mb=memory_mb,
                                device=device)  # fmt: skip
        assert ranked.indices is not None and ranked.scores is not None and ranked.positive is not None
        lists = QueryLists(ranked.indices.cpu().numpy(), ranked.scores.cpu().numpy(), ranked.positive.cpu().numpy())
        qr = QueryRanks(queries, ranked.ranks, n_pos, queries, g_emb.shape[0], lists)
        values = per_query_values(qr, "i2t")  # a multi-positive direction: mAP@R and R-Precision from the lists
        out["eccv"][direction] = {"map_at_r": float(np.mean(values["map_at_r"])),
                                  "r_precision": float(np.mean(values["r_precision"])),
                                  "r1": float(np.mean(values["r1"])), "n_queries": int(queries.size)}  # fmt: skip
        queries, positives = _positives(ann["cxc"][direction], q_rows, g_rows, f"CxC {direction}")
        ranks = retrieval_ranks(q_emb[torch.from_numpy(queries).to(device)], g_emb, positives, memory_mb=memory_mb,
                                device=device)  # fmt: skip
        out["cxc"][direction] = {f"r{k}": float(100.0 * np.mean(ranks < k)) for k in (1, 5, 10)}
        out["cxc"][direction]["n_queries"] = int(queries.size)
    return out
