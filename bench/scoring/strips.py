"""Any queries against any gallery, in row strips: ranks with excluded self matches, and top-k lists.

The general scorer behind within-modality retrieval with exclusions and the candidate lists of re-ranking; the
image-text and symmetric uni-modal problems have faster dedicated scans in :mod:`bench.scoring.itr`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bench.scoring import common
from bench.scoring.common import (
    BYTES_PER_SCORE,
    ArrayLike,
    Positives,
    as_index_array,
    full_fp32_matmul,
    positives_csr,
    query_gallery,
    strip_rows,
)

__all__ = ["INDEX_BITS", "RankedLists", "pessimistic_order_key", "ranks_and_topk", "retrieval_ranks"]

log = logging.getLogger(__name__)

_COUNT_COLS = 2048  # columns per block when counting scores at or above a query's best positive

def retrieval_ranks(
    queries: ArrayLike,
    gallery: ArrayLike,
    positives: Positives,
    *,
    exclude: ArrayLike | Sequence[int] | None = None,
    memory_mb: float = 256.0,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """0-based rank of each query's best positive in the gallery, under the pessimistic :data:`TIE_RULE`.

    Args:
        queries: [Nq, D] query embeddings (torch or numpy; scored as float32 dot products).
        gallery: [Ng, D] gallery embeddings.
        positives: each query's correct gallery rows: a list with one int array per query, or a CSR pair
            ``(indptr [Nq+1], indices)`` given as a tuple. Every query needs at least one.
        exclude: optional int [Nq]: one gallery row to remove from query i's gallery (e.g. the query itself), -1 = none.
        memory_mb: budget for one float32 strip of scores (rows x Ng); the full Nq x Ng matrix is never built.
        device: where to score; defaults to the device of ``queries`` if it is a tensor, else CPU.

    Returns:
        int64 array [Nq] of ranks: 0 means the best positive beats every negative.
    """
    return _scan(queries, gallery, positives, exclude=exclude, memory_mb=memory_mb, device=device, topk=0).ranks


@dataclass(frozen=True)
class RankedLists:
    """What :func:`ranks_and_topk` returns, all on the scoring device except ``ranks``."""

    ranks: np.ndarray  # int64 [Nq]: 0-based rank of the best positive (the same as retrieval_ranks)
    indices: torch.Tensor | None  # int64 [Nq, k]: gallery rows in stage-one order (score, then negatives first)
    scores: torch.Tensor | None  # float32 [Nq, k]: their scores
    positive: torch.Tensor | None  # bool [Nq, k]: which of them are positives of the query


def ranks_and_topk(
    queries: ArrayLike,
    gallery: ArrayLike,
    positives: Positives,
    k: int,
    *,
    exclude: ArrayLike | Sequence[int] | None = None,
    memory_mb: float = 256.0,
    device: torch.device | str | None = None,
) -> RankedLists:
    """:func:`retrieval_ranks` plus each query's top-``k`` gallery list, from the same pass over score strips.

    The lists follow :func:`pessimistic_order_key` (higher score first; among equal scores, negatives before
    positives, then lower gallery rows first), so a list is consistent with the ranks: a positive sits at position
    ``rank`` or later. Used for
    two-stage re-ranking candidates and for list-based metrics (ECCV-style mAP@R, R-Precision). ``k`` is capped at
    the gallery size. Strips are sized for the extra mask and sort key (about 13 bytes per score).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return _scan(queries, gallery, positives, exclude=exclude, memory_mb=memory_mb, device=device, topk=k)


INDEX_BITS = 30  # the order key's tie-break field: galleries of up to 2**30 items


def pessimistic_order_key(
    scores: torch.Tensor, positive: torch.Tensor, index: torch.Tensor | None = None
) -> torch.Tensor:
    """An int64 key whose descending order is the stage-one order: higher float32 score first, among equal
    scores negatives before positives, and (given ``index``) among those the lower gallery row first.

    With ``index`` the order is total, so a top-k list is a function of the scores alone, whatever tiles or parts
    it was gathered from (a sharded evaluation's lists equal the one-process ones).

    Args:
        scores: float32 scores (finite, or -inf for excluded items).
        positive: bool mask of the same shape, True where the item is a positive of the row's query.
        index: optional int64 gallery row of each score (broadcast against ``scores``), below ``2**INDEX_BITS``;
            -1 (no item) sorts with row 0.
    """
    # Read as signed ints, float32 bits order the non-negative floats; flipping the magnitude bits of negative floats
    # extends the order to all of them. Exact, unlike any epsilon. Adding 0.0 turns -0.0 into +0.0 (equal floats).
    bits = (scores.float() + 0.0).contiguous().view(torch.int32).to(torch.int64)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    key = ordered * 2 + (~positive).to(torch.int64)
    if index is None:
        return key
    return key * (1 << INDEX_BITS) + ((1 << INDEX_BITS) - 1 - index.clamp(min=0))


def _scan(
    queries: ArrayLike,
    gallery: ArrayLike,
    positives: Positives,
    *,
    exclude: ArrayLike | Sequence[int] | None,
    memory_mb: float,
    device: torch.device | str | None,
    topk: int,
) -> RankedLists:
    q, g, device = query_gallery(queries, gallery, device)
    n_q, n_g = q.shape[0], g.shape[0]
    if n_g == 0 and n_q > 0:
        raise ValueError("gallery is empty")
    indptr_np, indices_np = positives_csr(positives, n_q, n_g)

    excl_np: np.ndarray | None = None
    if exclude is not None:
        excl_np = as_index_array(exclude, "exclude").reshape(-1)
        if excl_np.shape[0] != n_q:
            raise ValueError(f"exclude has {excl_np.shape[0]} entries but there are {n_q} queries")
        if excl_np.size and (excl_np.min() < -1 or excl_np.max() >= n_g):
            bad = int(np.flatnonzero((excl_np < -1) | (excl_np >= n_g))[0])
            raise ValueError(f"exclude[{bad}] = {excl_np[bad]}, out of range [-1, {n_g})")
        query_of = np.repeat(np.arange(n_q, dtype=np.int64), np.diff(indptr_np))
        clash = excl_np[query_of] == indices_np
        if np.any(clash):
            bad = int(query_of[np.flatnonzero(clash)[0]])
            raise ValueError(f"query {bad}: gallery row {excl_np[bad]} is both excluded and a positive")

    ranks = torch.empty(n_q, dtype=torch.int64, device=device)
    k = min(topk, n_g)
    top_idx = torch.empty(n_q, k, dtype=torch.int64, device=device) if k else None
    top_scores = torch.empty(n_q, k, dtype=torch.float32, device=device) if k else None
    top_pos = torch.empty(n_q, k, dtype=torch.bool, device=device) if k else None
    if n_q == 0:
        return RankedLists(ranks.cpu().numpy(), top_idx, top_scores, top_pos)
    # With top-k lists a strip also holds a bool mask and an int64 sort key: 13 bytes per score instead of 4.
    rows = strip_rows(n_g, memory_mb, 13 if k else BYTES_PER_SCORE)
    log.debug("retrieval_ranks: %d queries x %d gallery, %d rows per strip on %s", n_q, n_g, rows, device)

    indptr = torch.from_numpy(indptr_np).to(device)
    indices = torch.from_numpy(indices_np).to(device)
    query_of_pos = torch.repeat_interleave(torch.arange(n_q, device=device), indptr[1:] - indptr[:-1])
    excl = torch.from_numpy(excl_np).to(device) if excl_np is not None else None
    gallery_t = g.T
    neg_inf = torch.tensor(-math.inf, device=device)
    columns = torch.arange(n_g, device=device) if k else None

    with torch.inference_mode(), full_fp32_matmul():
        for start in range(0, n_q, rows):
            stop = min(start + rows, n_q)
            height = stop - start
            scores = common.strip_scores(q[start:stop], gallery_t)
            if excl is not None:
                strip_excl = excl[start:stop]
                keep = strip_excl >= 0
                scores[torch.arange(height, device=device)[keep], strip_excl[keep]] = neg_inf
            # Positive scores come from this same strip, so a positive tied with a negative compares bit-for-bit.
            p0, p1 = int(indptr_np[start]), int(indptr_np[stop])
            local = query_of_pos[p0:p1] - start
            pos_scores = scores.reshape(-1)[local * n_g + indices[p0:p1]]
            best = torch.full((height,), -math.inf, device=device).scatter_reduce(
                0, local, pos_scores, reduce="amax", include_self=True
            )
            # Count in column blocks: a whole-strip comparison would allocate a bool strip plus an int64 copy
            # (9 bytes per score, over twice the budget) before summing.
            n_at_or_above = torch.zeros(height, dtype=torch.int64, device=device)
            threshold = best[:, None]
            for c0 in range(0, n_g, _COUNT_COLS):
                n_at_or_above += (scores[:, c0 : c0 + _COUNT_COLS] >= threshold).sum(dim=1)
            # Positives counted above are exactly those equal to best; they are not competitors.
            n_pos_at_best = torch.zeros(height, dtype=torch.int64, device=device).index_add_(
                0, local, (pos_scores >= best[local]).to(torch.int64)
            )
            ranks[start:stop] = n_at_or_above - n_pos_at_best
            if k:
                mask = torch.zeros(height, n_g, dtype=torch.bool, device=device)
                mask[local, indices[p0:p1]] = True
                top = pessimistic_order_key(scores, mask, columns).topk(k, dim=1).indices
                top_idx[start:stop], top_scores[start:stop], top_pos[start:stop] = (  # type: ignore[index]
                    top,
                    scores.gather(1, top),
                    mask.gather(1, top),
                )
                del mask, top
            # Free this strip before the next one is allocated, so at most one strip is alive at a time.
            del scores, pos_scores, n_at_or_above
    return RankedLists(ranks.cpu().numpy(), top_idx, top_scores, top_pos)


# CPU tiles of the two-way scan: up to 512 images wide (narrower or ragged widths slow MKL's GEMM by up to 25%) and
# at most 16 MiB, so a tile's two comparisons run from cache (a 13k-row strip of 5,000 scores counts 3x slower than the
# same scores in tiles). GPUs take tiles as large as the budget allows.
