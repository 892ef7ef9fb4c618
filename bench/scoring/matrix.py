"""Image-to-text and text-to-image ranks (and top-k lists) of a score matrix that a model computed pair by pair.

Cross-attention models (SCAN, SGR, SAF) have no embeddings to take dot products of: their scores come as an
``[N_img, N_txt]`` matrix (:mod:`bench.evaluation.pairs`). The ranks here follow the same
:data:`~bench.scoring.TIE_RULE` as the embedding scans (a query's rank counts every negative scoring at least its best
positive) and the lists the same order (:func:`~bench.scoring.strips.pessimistic_order_key`), so the per-query
results, records, intervals and tables downstream are the embedding path's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from bench.scoring.common import ArrayLike, as_index_array, check_caption_to_image
from bench.scoring.itr import query_ranks
from bench.scoring.itr_scan import ItrScan
from bench.scoring.queries import QueryRanks
from bench.scoring.topk import QueryLists, RunningTopK

__all__ = ["matrix_queries", "matrix_scan"]

_ROWS = 256  # queries per step: the step's mask and comparison are [rows, gallery]


def _ranks(scores: torch.Tensor, positive_of: Callable[[int, int], torch.Tensor], topk: int
           ) -> tuple[np.ndarray, QueryLists | None]:  # fmt: skip
    """Ranks (and lists) of every row of ``scores`` [Nq, Ng]; ``positive_of(r0, r1)`` is the bool mask of rows
    ``r0:r1``'s positives (a row without one gets rank 0; the caller drops it)."""
    n_q, n_g = scores.shape
    ranks = np.zeros(n_q, dtype=np.int64)
    top = RunningTopK(n_q, min(topk, n_g), scores.device) if topk else None
    for r0 in range(0, n_q, _ROWS):
        r1 = min(r0 + _ROWS, n_q)
        block, positive = scores[r0:r1], positive_of(r0, r1)
        best = block.masked_fill(~positive, -torch.inf).amax(dim=1)
        ranks[r0:r1] = ((block >= best[:, None]) & ~positive).sum(dim=1).numpy()
        if top is not None:
            top.add(slice(r0, r1), block, 0, positive)
    return ranks, None if top is None else top.lists()


def matrix_scan(
    scores: torch.Tensor, caption_to_image: ArrayLike | Sequence[int], *, topk: int = 0
) -> ItrScan:
    """The :class:`~bench.scoring.itr_scan.ItrScan` of a float32 score matrix ``[N_img, N_txt]``: what
    :func:`~bench.scoring.itr_scan.itr_scan` gives for embeddings whose dot products are ``scores``.

    Raises:
        ValueError: ``scores`` is not 2-D, not finite, or its shape does not match ``caption_to_image``.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be [N_img, N_txt], got shape {tuple(scores.shape)}")
    scores = scores.detach().float().cpu()
    n_img, n_txt = scores.shape
    c2i = check_caption_to_image(caption_to_image, n_txt, n_img)
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("scores hold a nan or inf")
    counts = np.bincount(c2i, minlength=n_img)
    with_caption = np.flatnonzero(counts > 0)
    c2i_t = torch.from_numpy(c2i)
    # t2i: caption c's one positive is image c2i[c]; i2t: image i's are the captions c with c2i[c] == i.
    t2i, t2i_lists = _ranks(scores.T.contiguous(), lambda r0, r1: torch.arange(n_img)[None, :] == c2i_t[r0:r1, None],
                            topk)  # fmt: skip
    i2t_all, i2t_lists = _ranks(scores, lambda r0, r1: c2i_t[None, :] == torch.arange(r0, r1)[:, None], topk)
    i2t = i2t_all[with_caption]
    if i2t_lists is not None:
        i2t_lists = QueryLists(i2t_lists.index[with_caption], i2t_lists.score[with_caption],
                               i2t_lists.positive[with_caption])  # fmt: skip
    return ItrScan(i2t=i2t, t2i=t2i, i2t_lists=i2t_lists, t2i_lists=t2i_lists)


def matrix_queries(
    scores: torch.Tensor, caption_to_image: ArrayLike | Sequence[int], *, topk: int = 0
) -> dict[str, QueryRanks | None]:
    """Per-query i2t and t2i results of a score matrix ``[N_img, N_txt]`` (t2t and i2i None: a pair score says nothing
    about two captions or two images)."""
    c2i = as_index_array(caption_to_image, "caption_to_image").reshape(-1)
    scan = matrix_scan(scores, c2i, topk=topk)
    return query_ranks(scan, None, None, c2i, scores.shape[0])
