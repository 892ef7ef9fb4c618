"""Exact retrieval ranks and recall metrics for image-text retrieval.

All metrics here come from two exact scans that never build the full score matrix, so memory stays bounded (about
``memory_mb``) however large the gallery is: :func:`itr_ranks` computes image-to-text and text-to-image ranks from one
pass over caption x image tiles (each score computed once, serving both directions; :mod:`.itr_scan`), the
within-modality t2t and i2i ranks come from one triangle of symmetric tiles (:mod:`.sibling_scan`), and
:func:`retrieval_ranks` scores any queries against any gallery in row strips (top-k lists, re-ranking). All break ties
pessimistically (see :data:`TIE_RULE`): a model that maps everything to one point scores R@K ~ 0, never 100.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from bench.scoring.common import (
    TIE_RULE,
    ArrayLike,
    as_index_array,
    as_matrix,
    check_caption_to_image,
    recall_summary,
    scoring_device,
)
from bench.scoring.itr_scan import ItrScan, itr_scan
from bench.scoring.queries import DEFAULT_KS, NDCG_AT, QueryRanks, direction_summary, rsum
from bench.scoring.sibling_scan import SiblingScan, sibling_scan
from bench.scoring.strips import RankedLists, pessimistic_order_key, ranks_and_topk, retrieval_ranks
from bench.scoring.topk import QueryLists

__all__ = [
    "TIE_RULE",
    "ItrScan",
    "QueryLists",
    "RankedLists",
    "SiblingScan",
    "itr_metrics",
    "itr_queries",
    "itr_ranks",
    "itr_scan",
    "pessimistic_order_key",
    "query_ranks",
    "ranks_and_topk",
    "recall_ks",
    "recall_summary",
    "retrieval_ranks",
    "sibling_ranks",
    "sibling_scan",
    "summarize",
]

log = logging.getLogger(__name__)

def itr_ranks(
    image_emb: ArrayLike,
    text_emb: ArrayLike,
    caption_to_image: ArrayLike | Sequence[int],
    *,
    memory_mb: float = 256.0,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Image-to-text and text-to-image ranks from one pass over the caption x image scores (see :func:`itr_scan`).

    Returns:
        ``(i2t, t2i)``: int64 0-based ranks of the images that have at least one caption (in image order) and of
        every caption.
    """
    scan = itr_scan(image_emb, text_emb, caption_to_image, memory_mb=memory_mb, device=device)
    return scan.i2t, scan.t2i


def sibling_ranks(
    emb: ArrayLike,
    groups: ArrayLike | Sequence[int],
    *,
    memory_mb: float = 256.0,
    device: torch.device | str | None = None,
    name: str = "emb",
) -> tuple[np.ndarray, np.ndarray]:
    """Within-modality ranks where an item's positives are the other members of its group (see :func:`sibling_scan`).

    Returns:
        ``(queries, ranks)``: the items that have at least one sibling (ascending) and their int64 0-based ranks.
    """
    scan = sibling_scan(emb, groups, memory_mb=memory_mb, device=device, name=name)
    return scan.queries, scan.ranks


def itr_queries(
    image_emb: ArrayLike,
    text_emb: ArrayLike,
    caption_to_image: ArrayLike | Sequence[int],
    image_labels: ArrayLike | Sequence[int] | None = None,
    *,
    joint: bool = True,
    normalize: bool = True,
    topk: int = 0,
    memory_mb: float = 256.0,
    device: torch.device | str | None = None,
) -> dict[str, QueryRanks | None]:
    """Per-query ranks (and top-k lists) of i2t, t2i, t2t and i2i: what :func:`itr_metrics` summarises.

    Arguments as :func:`itr_metrics`; ``topk`` keeps each query's ``topk`` best gallery rows from the same scans.
    A direction that does not apply is None.
    """
    device = scoring_device(image_emb, device)
    img = as_matrix(image_emb, "image_emb", device)
    txt = as_matrix(text_emb, "text_emb", device)
    n_img, n_txt = img.shape[0], txt.shape[0]
    c2i = check_caption_to_image(caption_to_image, n_txt, n_img)
    labels: np.ndarray | None = None
    if image_labels is not None:
        labels = as_index_array(image_labels, "image_labels").reshape(-1)
        if labels.shape[0] != n_img:
            raise ValueError(f"image_labels has {labels.shape[0]} rows but image_emb has {n_img}")
    if joint and img.shape[1] != txt.shape[1]:
        raise ValueError(
            f"image_emb has dimension {img.shape[1]} but text_emb has {txt.shape[1]}; pass joint=False for towers "
            "without a joint space"
        )
    if normalize:
        img = torch.nn.functional.normalize(img, dim=1)
        txt = torch.nn.functional.normalize(txt, dim=1)

    kw: dict[str, Any] = {"memory_mb": memory_mb, "device": device, "topk": topk}
    if joint and n_txt > 0:
        n_captionless = n_img - int(np.count_nonzero(np.bincount(c2i, minlength=n_img)))
        if n_captionless:
            log.info("i2t: %d of %d images have no caption and are skipped", n_captionless, n_img)
    scan = itr_scan(img, txt, c2i, **kw) if joint and n_txt > 0 else None
    t2t = sibling_scan(txt, c2i, name="text_emb", **kw) if n_txt > 0 else None
    i2i = sibling_scan(img, labels, name="image_emb", **kw) if labels is not None and n_img > 0 else None
    return query_ranks(scan, t2t, i2i, c2i, n_img, labels)


def query_ranks(
    scan: ItrScan | None,
    t2t: SiblingScan | None,
    i2i: SiblingScan | None,
    caption_to_image: ArrayLike | Sequence[int],
    n_images: int,
    image_labels: ArrayLike | Sequence[int] | None = None,
) -> dict[str, QueryRanks | None]:
    """Each direction's :class:`~bench.scoring.queries.QueryRanks` from the scans that ranked it (None: not scored):
    the two-way scan (i2t, t2i), the captions' sibling scan (t2t) and the images' by label (i2i)."""
    c2i = as_index_array(caption_to_image, "caption_to_image").reshape(-1)
    n_txt = c2i.shape[0]
    counts = np.bincount(c2i, minlength=n_images)
    out: dict[str, QueryRanks | None] = {"i2t": None, "t2i": None, "t2t": None, "i2i": None}
    if scan is not None:
        with_caption = np.flatnonzero(counts > 0)
        out["i2t"] = QueryRanks(with_caption, scan.i2t, counts[with_caption], with_caption, n_txt, scan.i2t_lists)
        every = np.arange(n_txt, dtype=np.int64)
        out["t2i"] = QueryRanks(every, scan.t2i, np.ones(n_txt, dtype=np.int64), c2i, n_images, scan.t2i_lists)
    if t2t is not None:
        if t2t.queries.size:
            cl = c2i[t2t.queries]
            out["t2t"] = QueryRanks(t2t.queries, t2t.ranks, counts[cl] - 1, cl, n_txt - 1, t2t.lists)
        else:
            log.info("t2t: no image has two captions; t2t is n/a")
    if i2i is not None and image_labels is not None:
        if i2i.queries.size:
            labels = as_index_array(image_labels, "image_labels").reshape(-1)
            _, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
            n_pos = sizes[inverse[i2i.queries]] - 1
            out["i2i"] = QueryRanks(i2i.queries, i2i.ranks, n_pos, i2i.queries, n_images - 1, i2i.lists)
        else:
            log.info("i2i: no label has two images; i2i is n/a")
    return out


def summarize(queries: dict[str, QueryRanks | None], ks: Sequence[int] = DEFAULT_KS) -> dict[str, Any]:
    """The metrics block of per-query results: each direction's :func:`~bench.scoring.queries.direction_summary`
    (None where n/a) and RSUM."""
    out: dict[str, Any] = {d: None if q is None else direction_summary(q, d, ks) for d, q in queries.items()}
    out["rsum"] = rsum(out)
    return {k: out[k] for k in ("i2t", "t2i", "rsum", "t2t", "i2i")}


def itr_metrics(
    image_emb: ArrayLike,
    text_emb: ArrayLike,
    caption_to_image: ArrayLike | Sequence[int],
    image_labels: ArrayLike | Sequence[int] | None = None,
    *,
    joint: bool = True,
    normalize: bool = True,
    ks: Sequence[int] = DEFAULT_KS,
    topk: int = NDCG_AT,
    memory_mb: float = 256.0,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Image-text retrieval metrics: i2t, t2i, rsum, and within-modality t2t and i2i.

    Args:
        image_emb: [N_img, D] image embeddings.
        text_emb: [N_txt, D] caption embeddings (row j is caption j).
        caption_to_image: int [N_txt]: the image row of each caption.
        image_labels: optional int [N_img] class labels; enables i2i (same-label images are positives).
        joint: False for towers without a shared space (dims may differ): i2t, t2i and rsum are then None.
        normalize: L2-normalise each row once before scoring (pass False if already normalised).
        ks: the Recall@K cut-offs (RSUM always sums R@1, 5 and 10, which are added when missing).
        topk: length of the top-k lists the list metrics (nDCG@10, mAP@R) are read from; 0 skips them where a
            direction has several positives.
        memory_mb: tile/strip budget for :func:`itr_scan` (i2t and t2i, one pass) and :func:`sibling_scan`.
        device: where to score; defaults to the embeddings' device if they are tensors, else CPU.

    Returns:
        ``{"i2t", "t2i", "rsum", "t2t", "i2i"}``: :func:`~bench.scoring.queries.direction_summary` dicts (percent),
        rsum a float, or None where a protocol does not apply (never 0 for "n/a").
    """
    queries = itr_queries(image_emb, text_emb, caption_to_image, image_labels, joint=joint, normalize=normalize,
                          topk=topk, memory_mb=memory_mb, device=device)  # fmt: skip
    return summarize(queries, recall_ks(ks))


def recall_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """``ks`` with RSUM's 1, 5 and 10 added, sorted and de-duplicated."""
    return tuple(sorted({*DEFAULT_KS, *(int(k) for k in ks)}))
