"""Within-modality ranks where an item's positives are the other members of its group (t2t: the captions of one
image; i2i: the images of one label), whole (:func:`sibling_scan`) or in parts that separate tasks run
(:func:`sibling_scan_part`, :func:`merge_sibling_parts`).

The score matrix is symmetric, so only one triangle of tiles is computed. A part owns a contiguous range of block
rows of that triangle and computes exactly the tiles the whole scan computes for them (same shapes, same order), so
the merged ranks are the whole scan's, bit for bit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench.scoring import common
from bench.scoring.common import (
    BYTES_PER_SCORE,
    ArrayLike,
    as_index_array,
    as_matrix,
    full_fp32_matmul,
    group_siblings,
    scoring_device,
    strip_rows,
    tile_floats,
)
from bench.scoring.strips import ranks_and_topk, retrieval_ranks
from bench.scoring.tiles import check_part, count_tile, merge_both, merge_lists, part_ranges
from bench.scoring.topk import QueryLists, RunningTopK

__all__ = ["SiblingPart", "SiblingScan", "merge_sibling_parts", "sibling_queries", "sibling_scan", "sibling_scan_part"]

log = logging.getLogger(__name__)

_CPU_TILE_SIDE = 1024  # the symmetric scan's square tiles: 1024 x 1024 measured ~10% faster than 2048 x 2048


@dataclass(frozen=True)
class SiblingScan:
    """What :func:`sibling_scan` returns."""

    queries: np.ndarray  # int64: the items that have at least one sibling, ascending
    ranks: np.ndarray  # int64 0-based rank of each
    lists: QueryLists | None  # their top-k lists (gallery: every other item), when asked for


@dataclass(frozen=True)
class SiblingPart:
    """One part of :func:`sibling_scan` (:func:`sibling_scan_part`); :func:`merge_sibling_parts` adds them up."""

    counts: np.ndarray  # int64 [N]: this part's share of each item's rank (input order)
    lists: QueryLists | None  # [N, k]: each item's best other items among this part's tiles


def sibling_queries(groups: ArrayLike | Sequence[int]) -> np.ndarray:
    """The items that have at least one sibling (another item of their group), ascending: the queries of a sibling
    scan."""
    g = as_index_array(groups, "groups").reshape(-1)
    if g.size == 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse, sizes = np.unique(g, return_inverse=True, return_counts=True)
    return np.flatnonzero(sizes[inverse] >= 2).astype(np.int64)


def sibling_scan(
    emb: ArrayLike,
    groups: ArrayLike | Sequence[int],
    *,
    topk: int = 0,
    memory_mb: float = 256.0,
    device: torch.device | str | None = None,
    name: str = "emb",
) -> SiblingScan:
    """Within-modality ranks where an item's positives are the other members of its group, the item itself excluded
    from its gallery, under :data:`~bench.scoring.TIE_RULE`.

    Items are ordered by group and cut into blocks that each hold whole groups; the diagonal blocks fix every item's
    best sibling score, and each tile above the diagonal is counted for its rows and, transposed, for its columns.
    Half the products of :func:`~bench.scoring.strips.retrieval_ranks` with ``exclude``, which it falls back to when
    one group is larger than a tile's side.

    Args:
        emb: [N, D] embeddings (scored as float32 dot products, not normalised here).
        groups: int [N] group id of each item.
        topk: also keep each query's ``topk`` best other items, from the same tiles; 0: ranks only.
        memory_mb: budget for one float32 tile of scores; the N x N matrix is never built.
        device: where to score; defaults to the device of ``emb`` if it is a tensor, else CPU.
        name: how errors name ``emb``.
    """
    part = sibling_scan_part(emb, groups, part=0, parts=1, topk=topk, memory_mb=memory_mb, device=device, name=name)
    return merge_sibling_parts([part], groups)


def sibling_scan_part(
    emb: ArrayLike,
    groups: ArrayLike | Sequence[int],
    *,
    part: int,
    parts: int,
    topk: int = 0,
    memory_mb: float = 256.0,
    device: torch.device | str | None = None,
    name: str = "emb",
) -> SiblingPart:
    """Part ``part`` of ``parts`` of :func:`sibling_scan` (arguments as there): a contiguous range of the triangle's
    block rows, cut so that the parts compute about equal numbers of scores. Every part computes all diagonal blocks
    (for every item's threshold) but counts only its own."""
    check_part(part, parts, topk)
    budget = tile_floats(memory_mb)
    device = scoring_device(emb, device)
    x = as_matrix(emb, name, device)
    g = as_index_array(groups, "groups").reshape(-1)
    if g.shape[0] != x.shape[0]:
        raise ValueError(f"groups has {g.shape[0]} entries but {name} has {x.shape[0]} rows")
    n = g.size
    if sibling_queries(g).size == 0:
        return SiblingPart(np.zeros(n, dtype=np.int64), None)
    order = np.argsort(g, kind="stable")
    sorted_groups = g[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    sizes = np.diff(np.r_[starts, n])
    k = min(topk, n - 1)

    side = math.isqrt(budget) if device.type == "cuda" else min(math.isqrt(budget), _CPU_TILE_SIDE)
    if sizes.max() > side:
        log.debug("sibling_scan: a group of %d items exceeds the %d-item tile side; scanning in strips", sizes.max(),
                  side)  # fmt: skip
        return _strips_part(x, g, k, part, parts, memory_mb, device)
    # Blocks of whole groups, at most `side` items each.
    block_starts, filled = [0], 0
    for start, size in zip(starts.tolist(), sizes.tolist(), strict=True):
        if filled + size > side:
            block_starts.append(start)
            filled = 0
        filled += size
    bounds = np.asarray([*block_starts, n], dtype=np.int64)
    n_blocks = len(bounds) - 1
    heights = np.diff(bounds)
    # Block row r computes its diagonal block and the tiles to its right: height x (items from its start on).
    b0, b1 = part_ranges(heights * (n - bounds[:-1]), parts)[part]
    order_t = torch.from_numpy(order).to(device)
    xs = x if np.array_equal(order, np.arange(n)) else x.index_select(0, order_t)
    gs = torch.from_numpy(sorted_groups).to(device)
    thr = torch.empty(n, device=device)
    cnt = torch.zeros(n, dtype=torch.int64, device=device)
    top = RunningTopK(n, k, device) if k else None  # in sorted order
    log.debug("sibling_scan: %d items in %d blocks on %s (part %d of %d: blocks %d-%d)", n, n_blocks, device,
              part + 1, parts, b0, b1)  # fmt: skip

    with torch.inference_mode(), full_fp32_matmul():
        for b in range(n_blocks):  # diagonal blocks: every sibling score, hence every threshold
            s0, s1 = int(bounds[b]), int(bounds[b + 1])
            scores = common.strip_scores(xs[s0:s1], xs[s0:s1].T)
            scores.fill_diagonal_(-math.inf)  # the item itself is no candidate
            sibling = gs[s0:s1, None] == gs[None, s0:s1]
            sibling.fill_diagonal_(False)
            best = torch.where(sibling, scores, -math.inf).amax(dim=1)
            best = torch.where(sibling.any(dim=1), best, math.inf)  # items without a sibling count nothing
            thr[s0:s1] = best
            if b0 <= b < b1:
                # Siblings counted here are exactly those equal to best; they are not competitors.
                cnt[s0:s1] = ((scores >= best[:, None]) & ~sibling).sum(dim=1)
                if top is not None:
                    top.add(slice(s0, s1), scores, order_t[s0:s1], sibling)
            del scores, sibling
        for r in range(b0, b1):  # tiles above the diagonal: negatives only, each counted for both its items
            r0, r1 = int(bounds[r]), int(bounds[r + 1])
            for c in range(r + 1, n_blocks):
                c0, c1 = int(bounds[c]), int(bounds[c + 1])
                on_tile = None if top is None else merge_both(top, top, r0, c0, c1, order_t[c0:c1], order_t)
                count_tile(xs[r0:r1], xs[c0:c1], thr[r0:r1], thr[c0:c1], cnt[r0:r1], cnt[c0:c1], side * side,
                           on_tile)  # fmt: skip
    counts = torch.empty(n, dtype=torch.int64, device=device)
    counts[order_t] = cnt
    return SiblingPart(counts.cpu().numpy(), None if top is None else top.lists(order_t))


def _strips_part(
    x: torch.Tensor, g: np.ndarray, k: int, part: int, parts: int, memory_mb: float, device: torch.device
) -> SiblingPart:
    """The strip fallback (a group wider than a tile): this part's strips of the sibling queries, each strip the one
    the whole scan scores (a strip's rows start at a multiple of the strip height)."""
    n = g.size
    q_sorted, indptr, indices = group_siblings(g)
    height = strip_rows(n, memory_mb, 13 if k else BYTES_PER_SCORE)  # as strips._scan cuts its strips
    n_strips = -(-q_sorted.size // height)
    s0, s1 = part_ranges(np.ones(n_strips), parts)[part]
    a, b = min(s0 * height, q_sorted.size), min(s1 * height, q_sorted.size)
    mine, sub_ptr = q_sorted[a:b], indptr[a : b + 1] - indptr[a]
    sub_idx = indices[indptr[a] : indptr[b]]
    q_t = torch.from_numpy(mine).to(device)
    kw: dict[str, Any] = {"exclude": mine, "memory_mb": memory_mb, "device": device}
    counts = np.zeros(n, dtype=np.int64)
    if not k:
        counts[mine] = retrieval_ranks(x[q_t], x, (sub_ptr, sub_idx), **kw)
        return SiblingPart(counts, None)
    ranked = ranks_and_topk(x[q_t], x, (sub_ptr, sub_idx), k, **kw)
    assert ranked.indices is not None and ranked.scores is not None and ranked.positive is not None
    counts[mine] = ranked.ranks
    index = np.full((n, k), -1, dtype=np.int64)
    score = np.full((n, k), -math.inf, dtype=np.float32)
    positive = np.zeros((n, k), dtype=bool)
    index[mine], score[mine], positive[mine] = (ranked.indices.cpu().numpy(), ranked.scores.cpu().numpy(),
                                                ranked.positive.cpu().numpy())  # fmt: skip
    return SiblingPart(counts, QueryLists(index, score, positive))


def merge_sibling_parts(parts: Iterable[SiblingPart], groups: ArrayLike | Sequence[int]) -> SiblingScan:
    """The :class:`SiblingScan` of the whole scan from all of its parts (:func:`sibling_scan_part`, in any order),
    folded in one at a time: memory holds the result and one part, however many parts there are."""
    queries = sibling_queries(groups)
    counts: np.ndarray | None = None
    lists: QueryLists | None = None
    with_lists = True
    for p in parts:
        counts = p.counts.astype(np.int64) if counts is None else counts + p.counts
        if p.lists is None:
            with_lists = False
        elif with_lists:
            lists = p.lists if lists is None else merge_lists([lists, p.lists])
    ranks = counts[queries] if counts is not None else np.zeros(0, dtype=np.int64)
    if not (queries.size and with_lists and lists is not None):
        return SiblingScan(queries, ranks.astype(np.int64), None)
    return SiblingScan(queries, ranks.astype(np.int64),
                       QueryLists(lists.index[queries], lists.score[queries], lists.positive[queries]))  # fmt: skip
