"""The two-way image-text scan: image-to-text and text-to-image ranks (and top-k lists) from one pass over the caption
x image scores, whole (:func:`itr_scan`) or cut into parts that separate tasks run (:func:`itr_scan_part`,
:func:`merge_itr_parts`).

A part owns a contiguous range of the scan's image groups: it computes the tiles of those groups' captions against
every image, exactly the tiles (same shapes, same order) the whole scan computes for them. Its captions' ranks are
final; its share of each image's count is added to the other parts' shares. So the merged ranks are the whole scan's,
bit for bit, however many parts there are: GEMM results depend on the tile's shape, so that is the only way to get
identical numbers (a query slice scored against the gallery in strips of other shapes differs in the last bit, and a
tie then falls the other way).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bench.scoring import common
from bench.scoring.common import (
    ArrayLike,
    as_index_array,
    check_caption_to_image,
    full_fp32_matmul,
    query_gallery,
    tile_floats,
)
from bench.scoring.tiles import check_part, count_tile, merge_both, merge_lists, part_ranges
from bench.scoring.topk import QueryLists, RunningTopK

__all__ = ["ItrPart", "ItrScan", "itr_scan", "itr_scan_part", "merge_itr_parts"]

log = logging.getLogger(__name__)

# CPU tiles of the two-way scan: up to 512 images wide (narrower or ragged widths slow MKL's GEMM by up to 25%) and
# at most 16 MiB, so a tile's two comparisons run from cache (a 13k-row strip of 5,000 scores counts 3x slower than the
# same scores in tiles). GPUs take tiles as large as the budget allows.
_CPU_TILE_WIDTH = 512
_CPU_TILE_FLOATS = 1 << 22


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


@dataclass(frozen=True)
class ItrScan:
    """What :func:`itr_scan` returns: both directions' ranks and, when asked for, their top-k lists."""

    i2t: np.ndarray  # int64 0-based ranks of the images that have a caption, in image order
    t2i: np.ndarray  # int64 0-based ranks of every caption
    i2t_lists: QueryLists | None  # caption rows of each captioned image's top k
    t2i_lists: QueryLists | None  # image rows of each caption's top k


@dataclass(frozen=True)
class ItrPart:
    """One part of the two-way scan (:func:`itr_scan_part`); :func:`merge_itr_parts` adds the parts up."""

    rows: np.ndarray  # int64: the caption rows this part ranked (its image groups' captions)
    t2i: np.ndarray  # int64: their 0-based ranks (final)
    t2i_lists: QueryLists | None  # their top-k lists (final)
    image_counts: np.ndarray  # int64 [N_img]: this part's share of each image's rank
    i2t_lists: QueryLists | None  # [N_img, k]: each image's best captions among this part's rows


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
    :func:`~bench.scoring.strips.retrieval_ranks` calls cost two; ranks follow the same
    :data:`~bench.scoring.TIE_RULE`. Images are cut into contiguous
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
    part = itr_scan_part(image_emb, text_emb, caption_to_image, part=0, parts=1, topk=topk, memory_mb=memory_mb,
                         device=device)  # fmt: skip
    return merge_itr_parts([part], caption_to_image, part.image_counts.shape[0])


def itr_scan_part(
    image_emb: ArrayLike,
    text_emb: ArrayLike,
    caption_to_image: ArrayLike | Sequence[int],
    *,
    part: int,
    parts: int,
    topk: int = 0,
    memory_mb: float = 256.0,
    device: torch.device | str | None = None,
) -> ItrPart:
    """Part ``part`` of ``parts`` of :func:`itr_scan` (arguments as there): the tiles of a contiguous range of image
    groups' captions against every image, cut so that the parts hold about equal numbers of captions.

    Every part computes all diagonal tiles (to know each image's best positive score: a pass over N_txt x group
    width scores, small beside its share of the N_txt x N_img ones) but counts only its own.
    """
    check_part(part, parts, topk)
    budget = tile_floats(memory_mb)
    img, txt, device = query_gallery(image_emb, text_emb, device, ("image_emb", "text_emb"))
    n_img, n_txt = img.shape[0], txt.shape[0]
    c2i = check_caption_to_image(caption_to_image, n_txt, n_img)
    counts = np.bincount(c2i, minlength=n_img)
    if n_txt == 0:
        empty = np.zeros(0, dtype=np.int64)
        return ItrPart(empty, empty, None, np.zeros(n_img, dtype=np.int64), None)
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
    n_groups = len(bounds) - 1
    g0, g1 = part_ranges(np.diff(row_bounds), parts)[part]
    lo, hi = int(row_bounds[g0]), int(row_bounds[g1])  # this part's caption rows, in grouped order
    identity = bool(np.array_equal(order, np.arange(n_txt)))
    order_t = torch.from_numpy(order).to(device)
    c2i_t = torch.from_numpy(c2i).to(device)

    def caption_rows(r0: int, r1: int) -> torch.Tensor:
        return txt[r0:r1] if identity else txt.index_select(0, order_t[r0:r1])

    # Per caption of this part (grouped order, offset lo) and per image: best positive score, how many scores reach it.
    thr_t = torch.empty(hi - lo, device=device)
    cnt_t = torch.zeros(hi - lo, dtype=torch.int64, device=device)
    thr_i = torch.full((n_img,), math.inf, device=device)  # +inf: captionless images count nothing
    cnt_i = torch.zeros(n_img, dtype=torch.int64, device=device)
    pos_at_best = torch.zeros(n_img, dtype=torch.int64, device=device)
    # Top-k lists: this part's captions (grouped order) over images, and every image over this part's captions.
    t2i_top = RunningTopK(hi - lo, min(topk, n_img), device) if topk else None
    i2t_top = RunningTopK(n_img, min(topk, n_txt), device) if topk else None
    log.debug("itr_scan: %d images x %d captions in %d groups on %s (part %d of %d: groups %d-%d)", n_img, n_txt,
              n_groups, device, part + 1, parts, g0, g1)  # fmt: skip

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
            best = torch.full((c1 - c0,), -math.inf, device=device).scatter_reduce(
                0, col, pos, reduce="amax", include_self=True
            )
            best = torch.where(has_caption[c0:c1], best, math.inf)
            thr_i[c0:c1] = best
            if not g0 <= k < g1:  # another part's group: its thresholds only
                del scores
                continue
            thr_t[r0 - lo : r1 - lo] = pos
            cnt_t[r0 - lo : r1 - lo] = (scores >= pos[:, None]).sum(dim=1)
            cnt_i[c0:c1] = (scores >= best[None, :]).sum(dim=0)
            pos_at_best[c0:c1] = torch.zeros(c1 - c0, dtype=torch.int64, device=device).index_add_(
                0, col, (pos >= best[col]).to(torch.int64)
            )
            if t2i_top is not None and i2t_top is not None:
                mask = torch.zeros_like(scores, dtype=torch.bool)
                mask[rows, col] = True
                t2i_top.add(slice(r0 - lo, r1 - lo), scores, c0, mask)
                i2t_top.add(slice(c0, c1), scores.T, order_t[r0:r1], mask.T)
                del mask
            del scores
        # Off-diagonal tiles: negatives only, counted against the thresholds fixed above.
        for r in range(g0, g1):
            r0, r1 = int(row_bounds[r]), int(row_bounds[r + 1])
            if r0 == r1:
                continue
            rows_t = caption_rows(r0, r1)
            for c in range(n_groups):
                if c != r:
                    c0, c1 = int(bounds[c]), int(bounds[c + 1])
                    on_tile = None
                    if t2i_top is not None and i2t_top is not None:
                        on_tile = merge_both(t2i_top, i2t_top, r0 - lo, c0, c1, c0, order_t[lo:hi])
                    count_tile(rows_t, img[c0:c1], thr_t[r0 - lo : r1 - lo], thr_i[c0:c1], cnt_t[r0 - lo : r1 - lo],
                               cnt_i[c0:c1], tile, on_tile)  # fmt: skip
    # A caption's own image reaches its threshold exactly once; an image's positives at its best are no competitors.
    return ItrPart(
        rows=order[lo:hi].astype(np.int64),
        t2i=(cnt_t - 1).cpu().numpy(),
        t2i_lists=None if t2i_top is None else t2i_top.lists(),
        image_counts=(cnt_i - pos_at_best).cpu().numpy(),
        i2t_lists=None if i2t_top is None else i2t_top.lists(),
    )


def merge_itr_parts(
    parts: Iterable[ItrPart], caption_to_image: ArrayLike | Sequence[int], n_images: int
) -> ItrScan:
    """The :class:`ItrScan` of the whole scan from all of its parts (:func:`itr_scan_part`, in any order), folded
    in one at a time: memory holds the result and one part, however many parts there are."""
    c2i = as_index_array(caption_to_image, "caption_to_image").reshape(-1)
    n_txt = c2i.shape[0]
    check_caption_to_image(c2i, n_txt, n_images)
    counts = np.bincount(c2i, minlength=n_images)
    seen = np.zeros(n_txt, dtype=np.int64)
    t2i = np.empty(n_txt, dtype=np.int64)
    image_counts = np.zeros(n_images, dtype=np.int64)
    t2i_lists: QueryLists | None = None
    i2t_lists: QueryLists | None = None
    with_lists = True
    for p in parts:
        t2i[p.rows] = p.t2i
        seen[p.rows] += 1
        image_counts += p.image_counts
        if p.t2i_lists is None or p.i2t_lists is None:
            with_lists = False
            continue
        if t2i_lists is None:
            k = p.t2i_lists.index.shape[1]
            t2i_lists = QueryLists(np.empty((n_txt, k), dtype=np.int64), np.empty((n_txt, k), dtype=np.float32),
                                   np.empty((n_txt, k), dtype=bool))  # fmt: skip
        t2i_lists.index[p.rows], t2i_lists.score[p.rows], t2i_lists.positive[p.rows] = (p.t2i_lists.index,
                                                                                      p.t2i_lists.score,
                                                                                      p.t2i_lists.positive)  # fmt: skip
        i2t_lists = p.i2t_lists if i2t_lists is None else merge_lists([i2t_lists, p.i2t_lists])
    if n_txt == 0:
        empty = np.zeros(0, dtype=np.int64)
        return ItrScan(empty, empty, None, None)
    if not (seen == 1).all():
        raise ValueError(f"the parts rank caption {int(np.flatnonzero(seen != 1)[0])} {int(seen.max())} times, "
                         "not once: they are not the parts of one scan")  # fmt: skip
    keep = counts > 0
    i2t = image_counts[keep]
    if not with_lists or t2i_lists is None or i2t_lists is None:
        return ItrScan(i2t, t2i, None, None)
    kept = QueryLists(i2t_lists.index[keep], i2t_lists.score[keep], i2t_lists.positive[keep])
    return ItrScan(i2t, t2i, kept, t2i_lists)
