"""Exact retrieval ranks and recall metrics for image-text retrieval.

All metrics here come from two exact scans that never build the full score matrix, so memory stays bounded (about
``memory_mb``) however large the gallery is: :func:`itr_ranks` computes image-to-text and text-to-image ranks from one
pass over caption x image tiles (each score computed once, serving both directions), and :func:`retrieval_ranks`
scores any queries against any gallery in row strips (within-modality t2t and i2i, top-k lists). Both break ties
pessimistically (see :data:`TIE_RULE`): a model that maps everything to one point scores R@K ~ 0, never 100.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench.scoring import common
from bench.scoring.common import (
    TIE_RULE,
    ArrayLike,
    as_index_array,
    as_matrix,
    check_caption_to_image,
    full_fp32_matmul,
    group_siblings,
    query_gallery,
    recall_summary,
    scoring_device,
    tile_floats,
)
from bench.scoring.queries import DEFAULT_KS, NDCG_AT, QueryRanks, direction_summary, rsum
from bench.scoring.strips import RankedLists, pessimistic_order_key, ranks_and_topk, retrieval_ranks
from bench.scoring.topk import QueryLists, RunningTopK

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
    "ranks_and_topk",
    "recall_ks",
    "recall_summary",
    "retrieval_ranks",
    "sibling_ranks",
    "sibling_scan",
    "summarize",
]

log = logging.getLogger(__name__)

_CPU_TILE_WIDTH = 512
_CPU_TILE_FLOATS = 1 << 22
_CPU_TILE_SIDE = 1024  # the symmetric scan's square tiles: 1024 x 1024 measured ~10% faster than 2048 x 2048


def _image_groups(counts: np.ndarray, tile_floats: int, max_width: int) -> np.ndarray:
    """Boundaries [G+1] of contiguous image groups of at most ``max_width`` images whose diagonal tile (their
    captions x their images) holds at most ``tile_floats`` scores; an image whose captions alone exceed it forms a
    group by itself."""
    bounds = [0]
    rows = width = 0
    for i, c in enumerate(counts.tolist()):
        if width and (width == max_width or (rows + c) * (width + 1) > tile_floats):
            bounds.append(i)
            rows = width = 0
        rows += c
        width += 1
    bounds.append(len(counts))
    return np.asarray(bounds, dtype=np.int64)


def _count_tile(
    rows: torch.Tensor,
    cols: torch.Tensor,
    row_thr: torch.Tensor,
    col_thr: torch.Tensor,
    row_cnt: torch.Tensor,
    col_cnt: torch.Tensor,
    tile_floats: int,
    on_tile: Callable[[int, int, torch.Tensor], None] | None = None,
) -> None:
    """Score ``rows`` against ``cols`` in tiles of at most ``tile_floats`` scores (whole rows of ``cols``) and add, in
    place, how many scores reach each row's threshold to ``row_cnt`` and each column's to ``col_cnt``; ``on_tile(s0,
    s1, scores)`` sees each tile (rows ``s0:s1``), for the top-k lists."""
    step = max(1, tile_floats // max(cols.shape[0], 1))
    cols_t = cols.T
    for s0 in range(0, rows.shape[0], step):
        s1 = min(s0 + step, rows.shape[0])
        scores = common.strip_scores(rows[s0:s1], cols_t)
        # int32 sums: the int64 default costs a third more, and a tile never holds 2**31 scores.
        row_cnt[s0:s1] += (scores >= row_thr[s0:s1, None]).sum(dim=1, dtype=torch.int32)
        col_cnt += (scores >= col_thr[None, :]).sum(dim=0, dtype=torch.int32)
        if on_tile is not None:
            on_tile(s0, s1, scores)
        del scores


@dataclass(frozen=True)
class ItrScan:
    """What :func:`itr_scan` returns: both directions' ranks and, when asked for, their top-k lists."""

    i2t: np.ndarray  # int64 0-based ranks of the images that have a caption, in image order
    t2i: np.ndarray  # int64 0-based ranks of every caption
    i2t_lists: QueryLists | None  # caption rows of each captioned image's top k
    t2i_lists: QueryLists | None  # image rows of each caption's top k


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


def itr_scan(
    image_emb: ArrayLike,
    text_emb: ArrayLike,
    caption_to_image: ArrayLike | Sequence[int],
    *,
    topk: int = 0,
    memory_mb: float = 256.0,
    device: torch.device | str | None = None,
) -> ItrScan:
    """Image-to-text and text-to-image ranks (and top-k lists) from one pass over the caption x image scores.

    Each score is computed once and serves both directions, so this costs one matrix product where two
    :func:`retrieval_ranks` calls cost two; ranks follow the same :data:`TIE_RULE`. Images are cut into contiguous
    groups and captions ordered by image, so that every positive score lies in a diagonal tile (a group's captions x
    the group's images). The diagonal tiles come first and fix each caption's and each image's best positive score;
    the off-diagonal tiles are then counted against those thresholds. No tile is computed twice, so a positive and
    the negatives it is compared with are the same float32 products. With ``topk`` each tile is also merged into
    both directions' running top-k lists (:class:`~bench.scoring.topk.RunningTopK`), in the same pass.

    Args:
        image_emb: [N_img, D] image embeddings (scored as float32 dot products, not normalised here).
        text_emb: [N_txt, D] caption embeddings.
        caption_to_image: int [N_txt]: the image row of each caption.
        topk: also keep each query's ``topk`` best gallery rows (capped at the gallery size); 0: ranks only.
        memory_mb: budget for one float32 tile of scores; the N_txt x N_img matrix is never built. A single image's
            captions x 1 column may exceed it.
        device: where to score; defaults to the device of ``image_emb`` if it is a tensor, else CPU.
    """
    if topk < 0:
        raise ValueError(f"topk must be >= 0, got {topk}")
    budget = tile_floats(memory_mb)
    img, txt, device = query_gallery(image_emb, text_emb, device, ("image_emb", "text_emb"))
    n_img, n_txt = img.shape[0], txt.shape[0]
    c2i = check_caption_to_image(caption_to_image, n_txt, n_img)
    counts = np.bincount(c2i, minlength=n_img)
    if n_txt == 0:
        empty = np.zeros(0, dtype=np.int64)
        return ItrScan(empty, empty, None, None)
    has_caption = torch.from_numpy(counts > 0).to(device)

    if device.type == "cpu":
        tile, max_width = min(budget, _CPU_TILE_FLOATS), _CPU_TILE_WIDTH
    else:  # square-ish tiles of the whole budget, widths a multiple of 64 where the budget allows
        tile = budget
        max_width = max(1, math.isqrt(budget * n_img // max(n_txt, 1)))
        max_width = max_width // 64 * 64 or max_width
    bounds = _image_groups(counts, tile, max_width)
    order = np.argsort(c2i, kind="stable")  # captions grouped by image, each group's rows contiguous
    row_bounds = np.searchsorted(c2i[order], bounds, side="left")
    identity = bool(np.array_equal(order, np.arange(n_txt)))
    order_t = torch.from_numpy(order).to(device)
    c2i_t = torch.from_numpy(c2i).to(device)

    def caption_rows(r0: int, r1: int) -> torch.Tensor:
        return txt[r0:r1] if identity else txt.index_select(0, order_t[r0:r1])

    # Per caption (in grouped order) and per image: best positive score, and how many scores reach it.
    thr_t = torch.empty(n_txt, device=device)
    cnt_t = torch.zeros(n_txt, dtype=torch.int64, device=device)
    thr_i = torch.full((n_img,), math.inf, device=device)  # +inf: captionless images count nothing
    cnt_i = torch.zeros(n_img, dtype=torch.int64, device=device)
    pos_at_best = torch.zeros(n_img, dtype=torch.int64, device=device)
    # Top-k lists: captions (grouped order) over images, and images over captions (original caption rows).
    t2i_top = RunningTopK(n_txt, min(topk, n_img), device) if topk else None
    i2t_top = RunningTopK(n_img, min(topk, n_txt), device) if topk else None
    n_groups = len(bounds) - 1
    log.debug("itr_scan: %d images x %d captions in %d groups on %s", n_img, n_txt, n_groups, device)

    with torch.inference_mode(), full_fp32_matmul():
        # Diagonal tiles: every positive score, hence every threshold, plus the counts inside the tile.
        for k in range(n_groups):
            c0, c1, r0, r1 = int(bounds[k]), int(bounds[k + 1]), int(row_bounds[k]), int(row_bounds[k + 1])
            if r0 == r1:
                continue
            scores = common.strip_scores(caption_rows(r0, r1), img[c0:c1].T)
            col = c2i_t[order_t[r0:r1]] - c0
            rows = torch.arange(r1 - r0, device=device)
            pos = scores[rows, col]
            thr_t[r0:r1] = pos
            cnt_t[r0:r1] = (scores >= pos[:, None]).sum(dim=1)
            best = torch.full((c1 - c0,), -math.inf, device=device).scatter_reduce(
                0, col, pos, reduce="amax", include_self=True
            )
            best = torch.where(has_caption[c0:c1], best, math.inf)
            thr_i[c0:c1] = best
            cnt_i[c0:c1] = (scores >= best[None, :]).sum(dim=0)
            pos_at_best[c0:c1] = torch.zeros(c1 - c0, dtype=torch.int64, device=device).index_add_(
                0, col, (pos >= best[col]).to(torch.int64)
            )
            if t2i_top is not None and i2t_top is not None:
                mask = torch.zeros_like(scores, dtype=torch.bool)
                mask[rows, col] = True
                t2i_top.add(slice(r0, r1), scores, c0, mask)
                i2t_top.add(slice(c0, c1), scores.T, order_t[r0:r1], mask.T)
                del mask
            del scores
        # Off-diagonal tiles: negatives only, counted against the thresholds fixed above.
        for r in range(n_groups):
            r0, r1 = int(row_bounds[r]), int(row_bounds[r + 1])
            if r0 == r1:
                continue
            rows_t = caption_rows(r0, r1)
            for c in range(n_groups):
                if c != r:
                    c0, c1 = int(bounds[c]), int(bounds[c + 1])
                    on_tile = None
                    if t2i_top is not None and i2t_top is not None:
                        on_tile = _merge_both(t2i_top, i2t_top, r0, c0, c1, c0, order_t)
                    _count_tile(rows_t, img[c0:c1], thr_t[r0:r1], thr_i[c0:c1], cnt_t[r0:r1], cnt_i[c0:c1], tile,
                                on_tile)  # fmt: skip
    # A caption's own image reaches its threshold exactly once; an image's positives at its best are no competitors.
    t2i = torch.empty(n_txt, dtype=torch.int64, device=device)
    t2i[order_t] = cnt_t - 1
    i2t = (cnt_i - pos_at_best)[has_caption]
    if t2i_top is None or i2t_top is None:
        return ItrScan(i2t.cpu().numpy(), t2i.cpu().numpy(), None, None)
    i2t_lists = i2t_top.lists()
    keep = counts > 0
    i2t_lists = QueryLists(i2t_lists.index[keep], i2t_lists.score[keep], i2t_lists.positive[keep])
    return ItrScan(i2t.cpu().numpy(), t2i.cpu().numpy(), i2t_lists, t2i_top.lists(order_t))


def _merge_both(
    rows_top: RunningTopK,
    cols_top: RunningTopK,
    r0: int,
    c0: int,
    c1: int,
    row_gallery: torch.Tensor | int,
    col_ids: torch.Tensor,
) -> Callable[[int, int, torch.Tensor], None]:
    """A tile callback merging a tile of negatives into its rows' lists (the tile's columns are gallery rows
    ``row_gallery``) and, transposed, into its columns' lists (gallery rows ``col_ids`` of the tile's rows)."""

    def on_tile(s0: int, s1: int, scores: torch.Tensor) -> None:
        rows_top.add(slice(r0 + s0, r0 + s1), scores, row_gallery)
        cols_top.add(slice(c0, c1), scores.T, col_ids[r0 + s0 : r0 + s1])

    return on_tile


@dataclass(frozen=True)
class SiblingScan:
    """What :func:`sibling_scan` returns."""

    queries: np.ndarray  # int64: the items that have at least one sibling, ascending
    ranks: np.ndarray  # int64 0-based rank of each
    lists: QueryLists | None  # their top-k lists (gallery: every other item), when asked for


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
    from its gallery (t2t: the captions of one image; i2i: the images of one label), under :data:`TIE_RULE`.

    The score matrix is symmetric, so only one triangle of tiles is computed: items are ordered by group and cut into
    blocks that each hold whole groups; the diagonal blocks fix every item's best sibling score, and each tile above
    the diagonal is counted for its rows and, transposed, for its columns. Half the products of
    :func:`retrieval_ranks` with ``exclude``, which it falls back to when one group is larger than a tile's side.

    Args:
        emb: [N, D] embeddings (scored as float32 dot products, not normalised here).
        groups: int [N] group id of each item.
        topk: also keep each query's ``topk`` best other items, from the same tiles; 0: ranks only.
        memory_mb: budget for one float32 tile of scores; the N x N matrix is never built.
        device: where to score; defaults to the device of ``emb`` if it is a tensor, else CPU.
        name: how errors name ``emb``.
    """
    if topk < 0:
        raise ValueError(f"topk must be >= 0, got {topk}")
    budget = tile_floats(memory_mb)
    device = scoring_device(emb, device)
    x = as_matrix(emb, name, device)
    g = as_index_array(groups, "groups").reshape(-1)
    if g.shape[0] != x.shape[0]:
        raise ValueError(f"groups has {g.shape[0]} entries but {name} has {x.shape[0]} rows")
    order = np.argsort(g, kind="stable")
    sorted_groups = g[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]]) if g.size else np.zeros(0, int)
    sizes = np.diff(np.r_[starts, g.size])
    queries = np.sort(order[np.repeat(sizes, sizes) >= 2]) if g.size else np.zeros(0, dtype=np.int64)
    if queries.size == 0:
        return SiblingScan(queries.astype(np.int64), np.zeros(0, dtype=np.int64), None)
    k = min(topk, g.size - 1)

    side = math.isqrt(budget) if device.type == "cuda" else min(math.isqrt(budget), _CPU_TILE_SIDE)
    if sizes.max() > side:
        log.debug(
            "sibling_scan: a group of %d items exceeds the %d-item tile side; scanning in strips", sizes.max(), side
        )
        q_sorted, indptr, indices = group_siblings(g)
        q_t = torch.from_numpy(q_sorted).to(device)
        kw: dict[str, Any] = {"exclude": q_sorted, "memory_mb": memory_mb, "device": device}
        if not k:
            return SiblingScan(q_sorted, retrieval_ranks(x[q_t], x, (indptr, indices), **kw), None)
        ranked = ranks_and_topk(x[q_t], x, (indptr, indices), k, **kw)
        assert ranked.indices is not None and ranked.scores is not None and ranked.positive is not None
        lists = QueryLists(ranked.indices.cpu().numpy(), ranked.scores.cpu().numpy(), ranked.positive.cpu().numpy())
        return SiblingScan(q_sorted, ranked.ranks, lists)
    # Blocks of whole groups, at most `side` items each.
    block_starts, filled = [0], 0
    for start, size in zip(starts.tolist(), sizes.tolist(), strict=True):
        if filled + size > side:
            block_starts.append(start)
            filled = 0
        filled += size
    bounds = np.asarray([*block_starts, g.size], dtype=np.int64)
    order_t = torch.from_numpy(order).to(device)
    xs = x if np.array_equal(order, np.arange(g.size)) else x.index_select(0, order_t)
    gs = torch.from_numpy(sorted_groups).to(device)
    thr = torch.empty(g.size, device=device)
    cnt = torch.zeros(g.size, dtype=torch.int64, device=device)
    top = RunningTopK(g.size, k, device) if k else None  # in sorted order
    n_blocks = len(bounds) - 1
    log.debug("sibling_scan: %d items in %d blocks on %s", g.size, n_blocks, device)

    with torch.inference_mode(), full_fp32_matmul():
        for b in range(n_blocks):  # diagonal blocks: every sibling score, hence every threshold
            b0, b1 = int(bounds[b]), int(bounds[b + 1])
            scores = common.strip_scores(xs[b0:b1], xs[b0:b1].T)
            scores.fill_diagonal_(-math.inf)  # the item itself is no candidate
            sibling = gs[b0:b1, None] == gs[None, b0:b1]
            sibling.fill_diagonal_(False)
            best = torch.where(sibling, scores, -math.inf).amax(dim=1)
            best = torch.where(sibling.any(dim=1), best, math.inf)  # items without a sibling count nothing
            thr[b0:b1] = best
            # Siblings counted here are exactly those equal to best; they are not competitors.
            cnt[b0:b1] = ((scores >= best[:, None]) & ~sibling).sum(dim=1)
            if top is not None:
                top.add(slice(b0, b1), scores, order_t[b0:b1], sibling)
            del scores, sibling
        for r in range(n_blocks):  # tiles above the diagonal: negatives only, each counted for both its items
            r0, r1 = int(bounds[r]), int(bounds[r + 1])
            for c in range(r + 1, n_blocks):
                c0, c1 = int(bounds[c]), int(bounds[c + 1])
                on_tile = None if top is None else _merge_both(top, top, r0, c0, c1, order_t[c0:c1], order_t)
                _count_tile(xs[r0:r1], xs[c0:c1], thr[r0:r1], thr[c0:c1], cnt[r0:r1], cnt[c0:c1], side * side,
                            on_tile)  # fmt: skip
    ranks = torch.empty(g.size, dtype=torch.int64, device=device)
    ranks[order_t] = cnt
    lists = None
    if top is not None:
        full = top.lists(order_t)
        lists = QueryLists(full.index[queries], full.score[queries], full.positive[queries])
    return SiblingScan(queries.astype(np.int64), ranks.cpu().numpy()[queries], lists)


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
    counts = np.bincount(c2i, minlength=n_img)
    out: dict[str, QueryRanks | None] = {"i2t": None, "t2i": None, "t2t": None, "i2i": None}
    if joint and n_txt > 0:
        n_captionless = n_img - int(np.count_nonzero(counts))
        if n_captionless:
            log.info("i2t: %d of %d images have no caption and are skipped", n_captionless, n_img)
        scan = itr_scan(img, txt, c2i, **kw)
        with_caption = np.flatnonzero(counts > 0)
        out["i2t"] = QueryRanks(with_caption, scan.i2t, counts[with_caption], with_caption, n_txt, scan.i2t_lists)
        every = np.arange(n_txt, dtype=np.int64)
        out["t2i"] = QueryRanks(every, scan.t2i, np.ones(n_txt, dtype=np.int64), c2i, n_img, scan.t2i_lists)

    if n_txt > 0:
        sib = sibling_scan(txt, c2i, name="text_emb", **kw)
        if sib.queries.size:
            cl = c2i[sib.queries]
            out["t2t"] = QueryRanks(sib.queries, sib.ranks, counts[cl] - 1, cl, n_txt - 1, sib.lists)
        else:
            log.info("t2t: no image has two captions; t2t is n/a")
    if labels is not None and n_img > 0:
        sib = sibling_scan(img, labels, name="image_emb", **kw)
        if sib.queries.size:
            _, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
            n_pos = sizes[inverse[sib.queries]] - 1
            out["i2i"] = QueryRanks(sib.queries, sib.ranks, n_pos, sib.queries, n_img - 1, sib.lists)
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
