"""Exact retrieval ranks and recall metrics for image-text retrieval.

All metrics here come from two exact scans that never build the full score matrix, so memory stays bounded (about
``memory_mb``) however large the gallery is: :func:`itr_ranks` computes image-to-text and text-to-image ranks from one
pass over caption x image tiles (each score computed once, serving both directions), and :func:`retrieval_ranks`
scores any queries against any gallery in row strips (within-modality t2t and i2i, top-k lists). Both break ties
pessimistically (see :data:`TIE_RULE`): a model that maps everything to one point scores R@K ~ 0, never 100.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import torch

__all__ = [
    "TIE_RULE",
    "RankedLists",
    "itr_metrics",
    "itr_ranks",
    "pessimistic_order_key",
    "ranks_and_topk",
    "recall_summary",
    "retrieval_ranks",
    "sibling_ranks",
]

log = logging.getLogger(__name__)

ArrayLike: TypeAlias = torch.Tensor | np.ndarray
Positives: TypeAlias = Sequence[Any] | tuple[Any, Any]

TIE_RULE = (
    "pessimistic: a query's 0-based rank is the number of non-positive, non-excluded gallery items whose score "
    "(float32 dot product) is >= the query's best positive score; ties never help a query"
)

_BYTES_PER_SCORE = 4  # the strip score matrix is float32
_COUNT_COLS = 2048  # columns per block when counting scores at or above a query's best positive


def _strip_rows(n_gallery: int, memory_mb: float, bytes_per_score: int = _BYTES_PER_SCORE) -> int:
    """Rows per strip so that a strip of ``bytes_per_score`` bytes per score, rows x n_gallery, fits in
    ``memory_mb`` MiB (4: the float32 scores alone; more when a pass keeps masks, keys or sort buffers alive)."""
    if not memory_mb > 0:
        raise ValueError(f"memory_mb must be > 0, got {memory_mb}")
    # The small epsilon keeps a budget computed as exactly k rows from rounding down to k - 1.
    return max(1, math.floor(memory_mb * 2**20 / (bytes_per_score * max(n_gallery, 1)) + 1e-9))


def _tile_floats(memory_mb: float) -> int:
    """How many float32 scores fit in ``memory_mb`` MiB (at least one): the size of one tile of the tiled scans."""
    if not memory_mb > 0:
        raise ValueError(f"memory_mb must be > 0, got {memory_mb}")
    return max(1, math.floor(memory_mb * 2**20 / _BYTES_PER_SCORE + 1e-9))


def _scoring_device(x: ArrayLike, device: torch.device | str | None) -> torch.device:
    """``device``, by default the device of ``x`` if it is a tensor, else CPU."""
    if device is None:
        return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    return torch.device(device)


def _strip_scores(q_strip: torch.Tensor, gallery_t: torch.Tensor) -> torch.Tensor:
    """Scores of one strip of queries against the whole gallery (a seam the tests use to watch strip sizes)."""
    return q_strip @ gallery_t


@contextlib.contextmanager
def _full_fp32_matmul() -> Iterator[None]:
    # Exact ranks need real float32 products: TF32/bf16 matmuls (set elsewhere for training) would create or break ties.
    backends = [torch.backends.cuda.matmul, torch.backends.mkldnn.matmul]
    if all(hasattr(b, "fp32_precision") for b in backends):
        # The per-backend API; the legacy global getter raises once anyone has mixed the two, so do not touch it.
        previous = [b.fp32_precision for b in backends]
        try:
            for b in backends:
                b.fp32_precision = "ieee"
            yield
        finally:
            for b, p in zip(backends, previous, strict=True):
                b.fp32_precision = p
    else:
        previous_legacy = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(previous_legacy)


def _as_matrix(x: ArrayLike, name: str, device: torch.device | None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {tuple(t.shape)}")
    if not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise ValueError(f"{name} must be a float array, got dtype {t.dtype}")
    t = t.detach().to(device=device, dtype=torch.float32)
    if not bool(torch.isfinite(t).all()):
        bad = int(torch.nonzero(~torch.isfinite(t).all(dim=1))[0, 0])
        raise ValueError(f"{name} row {bad} has a non-finite value (nan or inf)")
    return t


def _query_gallery(
    queries: ArrayLike,
    gallery: ArrayLike,
    device: torch.device | str | None,
    names: tuple[str, str] = ("queries", "gallery"),
) -> tuple[torch.Tensor, torch.Tensor, torch.device]:
    """Checked float32 query and gallery matrices on one device (default: the queries' device if a tensor, else
    CPU), with the same dimension; errors call them ``names``."""
    device = _scoring_device(queries, device)
    q = _as_matrix(queries, names[0], device)
    g = _as_matrix(gallery, names[1], device)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"{names[0]} has dimension {q.shape[1]} but {names[1]} has {g.shape[1]}")
    return q, g, device


def _caption_to_image(caption_to_image: Any, n_txt: int, n_img: int) -> np.ndarray:
    """Checked int64 [N_txt] image row of each caption."""
    c2i = _as_index_array(caption_to_image, "caption_to_image").reshape(-1)
    if c2i.shape[0] != n_txt:
        raise ValueError(f"caption_to_image has {c2i.shape[0]} rows but text_emb has {n_txt}")
    if c2i.size and (c2i.min() < 0 or c2i.max() >= n_img):
        bad = int(np.flatnonzero((c2i < 0) | (c2i >= n_img))[0])
        raise ValueError(f"caption_to_image[{bad}] = {c2i[bad]}, out of range [0, {n_img}) (image_emb rows)")
    return c2i


def _as_index_array(x: Any, name: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.size == 0:
        return np.zeros(a.shape, dtype=np.int64)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _positives_csr(positives: Positives, n_queries: int, n_gallery: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated, de-duplicated CSR ``(indptr [Nq+1], indices)`` of each query's positive gallery rows, sorted."""
    if isinstance(positives, tuple) and len(positives) == 2:
        indptr = _as_index_array(positives[0], "positives indptr").reshape(-1)
        indices = _as_index_array(positives[1], "positives indices").reshape(-1)
        if indptr.shape[0] != n_queries + 1:
            raise ValueError(
                f"positives given as a CSR pair (indptr, indices) need len(indptr) == n_queries + 1 = {n_queries + 1},"
                f" got {indptr.shape[0]} (pass a list, not a tuple, for one array per query)"
            )
        if indptr[0] != 0 or indptr[-1] != indices.shape[0] or np.any(np.diff(indptr) < 0):
            raise ValueError(
                "positives indptr must start at 0, never decrease and end at len(indices) "
                f"({indices.shape[0]}), got start {indptr[0]} and end {indptr[-1]}"
            )
    else:
        if len(positives) != n_queries:
            raise ValueError(f"positives has {len(positives)} entries but there are {n_queries} queries")
        per_query = [_as_index_array(p, f"positives[{i}]").reshape(-1) for i, p in enumerate(positives)]
        counts = np.fromiter((p.shape[0] for p in per_query), dtype=np.int64, count=n_queries)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        indices = np.concatenate(per_query) if per_query else np.zeros(0, dtype=np.int64)
    counts = np.diff(indptr)
    if np.any(counts == 0):
        first = int(np.flatnonzero(counts == 0)[0])
        raise ValueError(f"query {first} has no positive gallery item; every query needs at least one")
    if indices.size and (indices.min() < 0 or indices.max() >= n_gallery):
        pos = int(np.flatnonzero((indices < 0) | (indices >= n_gallery))[0])
        query = int(np.searchsorted(indptr, pos, side="right") - 1)
        raise ValueError(f"query {query} has positive {indices[pos]}, out of range [0, {n_gallery})")
    # A positive listed twice would be subtracted twice from the tie count below, so de-duplicate once up front.
    query_of = np.repeat(np.arange(n_queries, dtype=np.int64), counts)
    keys = np.unique(query_of * n_gallery + indices)
    indices = keys % n_gallery
    indptr = np.concatenate([[0], np.cumsum(np.bincount(keys // n_gallery, minlength=n_queries))]).astype(np.int64)
    return indptr, indices


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
    positives), so a list is consistent with the ranks: a positive sits at position ``rank`` or later. Used for
    two-stage re-ranking candidates and for list-based metrics (ECCV-style mAP@R, R-Precision). ``k`` is capped at
    the gallery size. Strips are sized for the extra mask and sort key (about 13 bytes per score).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return _scan(queries, gallery, positives, exclude=exclude, memory_mb=memory_mb, device=device, topk=k)


def pessimistic_order_key(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """An int64 key whose descending order is the stage-one order: higher float32 score first, and among equal
    scores negatives before positives.

    Args:
        scores: float32 scores (finite, or -inf for excluded items).
        positive: bool mask of the same shape, True where the item is a positive of the row's query.
    """
    # Read as signed ints, float32 bits order the non-negative floats; flipping the magnitude bits of negative floats
    # extends the order to all of them. Exact, unlike any epsilon. Adding 0.0 turns -0.0 into +0.0 (equal floats).
    bits = (scores.float() + 0.0).contiguous().view(torch.int32).to(torch.int64)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return ordered * 2 + (~positive).to(torch.int64)


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
    q, g, device = _query_gallery(queries, gallery, device)
    n_q, n_g = q.shape[0], g.shape[0]
    if n_g == 0 and n_q > 0:
        raise ValueError("gallery is empty")
    indptr_np, indices_np = _positives_csr(positives, n_q, n_g)

    excl_np: np.ndarray | None = None
    if exclude is not None:
        excl_np = _as_index_array(exclude, "exclude").reshape(-1)
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
    rows = _strip_rows(n_g, memory_mb, 13 if k else _BYTES_PER_SCORE)
    log.debug("retrieval_ranks: %d queries x %d gallery, %d rows per strip on %s", n_q, n_g, rows, device)

    indptr = torch.from_numpy(indptr_np).to(device)
    indices = torch.from_numpy(indices_np).to(device)
    query_of_pos = torch.repeat_interleave(torch.arange(n_q, device=device), indptr[1:] - indptr[:-1])
    excl = torch.from_numpy(excl_np).to(device) if excl_np is not None else None
    gallery_t = g.T
    neg_inf = torch.tensor(-math.inf, device=device)

    with torch.inference_mode(), _full_fp32_matmul():
        for start in range(0, n_q, rows):
            stop = min(start + rows, n_q)
            height = stop - start
            scores = _strip_scores(q[start:stop], gallery_t)
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
                top = pessimistic_order_key(scores, mask).topk(k, dim=1).indices
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
) -> None:
    """Score ``rows`` against ``cols`` in tiles of at most ``tile_floats`` scores (whole rows of ``cols``) and add, in
    place, how many scores reach each row's threshold to ``row_cnt`` and each column's to ``col_cnt``."""
    step = max(1, tile_floats // max(cols.shape[0], 1))
    cols_t = cols.T
    for s0 in range(0, rows.shape[0], step):
        s1 = min(s0 + step, rows.shape[0])
        scores = _strip_scores(rows[s0:s1], cols_t)
        # int32 sums: the int64 default costs a third more, and a tile never holds 2**31 scores.
        row_cnt[s0:s1] += (scores >= row_thr[s0:s1, None]).sum(dim=1, dtype=torch.int32)
        col_cnt += (scores >= col_thr[None, :]).sum(dim=0, dtype=torch.int32)
        del scores


def itr_ranks(
    image_emb: ArrayLike,
    text_emb: ArrayLike,
    caption_to_image: ArrayLike | Sequence[int],
    *,
    memory_mb: float = 256.0,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Image-to-text and text-to-image ranks from one pass over the caption x image scores.

    Each score is computed once and serves both directions, so this costs one matrix product where two
    :func:`retrieval_ranks` calls cost two; ranks follow the same :data:`TIE_RULE`. Images are cut into contiguous
    groups and captions ordered by image, so that every positive score lies in a diagonal tile (a group's captions x
    the group's images). The diagonal tiles come first and fix each caption's and each image's best positive score;
    the off-diagonal tiles are then counted against those thresholds. No tile is computed twice, so a positive and
    the negatives it is compared with are the same float32 products.

    Args:
        image_emb: [N_img, D] image embeddings (scored as float32 dot products, not normalised here).
        text_emb: [N_txt, D] caption embeddings.
        caption_to_image: int [N_txt]: the image row of each caption.
        memory_mb: budget for one float32 tile of scores; the N_txt x N_img matrix is never built. A single image's
            captions x 1 column may exceed it.
        device: where to score; defaults to the device of ``image_emb`` if it is a tensor, else CPU.

    Returns:
        ``(i2t, t2i)``: int64 0-based ranks of the images that have at least one caption (in image order) and of
        every caption.
    """
    budget = _tile_floats(memory_mb)
    img, txt, device = _query_gallery(image_emb, text_emb, device, ("image_emb", "text_emb"))
    n_img, n_txt = img.shape[0], txt.shape[0]
    c2i = _caption_to_image(caption_to_image, n_txt, n_img)
    counts = np.bincount(c2i, minlength=n_img)
    if n_txt == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
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
    n_groups = len(bounds) - 1
    log.debug("itr_ranks: %d images x %d captions in %d groups on %s", n_img, n_txt, n_groups, device)

    with torch.inference_mode(), _full_fp32_matmul():
        # Diagonal tiles: every positive score, hence every threshold, plus the counts inside the tile.
        for k in range(n_groups):
            c0, c1, r0, r1 = int(bounds[k]), int(bounds[k + 1]), int(row_bounds[k]), int(row_bounds[k + 1])
            if r0 == r1:
                continue
            scores = _strip_scores(caption_rows(r0, r1), img[c0:c1].T)
            col = c2i_t[order_t[r0:r1]] - c0
            pos = scores[torch.arange(r1 - r0, device=device), col]
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
                    _count_tile(rows_t, img[c0:c1], thr_t[r0:r1], thr_i[c0:c1], cnt_t[r0:r1], cnt_i[c0:c1], tile)
    # A caption's own image reaches its threshold exactly once; an image's positives at its best are no competitors.
    t2i = torch.empty(n_txt, dtype=torch.int64, device=device)
    t2i[order_t] = cnt_t - 1
    i2t = (cnt_i - pos_at_best)[has_caption]
    return i2t.cpu().numpy(), t2i.cpu().numpy()


def sibling_ranks(
    emb: ArrayLike,
    groups: ArrayLike | Sequence[int],
    *,
    memory_mb: float = 256.0,
    device: torch.device | str | None = None,
    name: str = "emb",
) -> tuple[np.ndarray, np.ndarray]:
    """Within-modality ranks where an item's positives are the other members of its group, the item itself excluded
    from its gallery (t2t: the captions of one image; i2i: the images of one label), under :data:`TIE_RULE`.

    The score matrix is symmetric, so only one triangle of tiles is computed: items are ordered by group and cut into
    blocks that each hold whole groups; the diagonal blocks fix every item's best sibling score, and each tile above
    the diagonal is counted for its rows and, transposed, for its columns. Half the products of
    :func:`retrieval_ranks` with ``exclude``, which it falls back to when one group is larger than a tile's side.

    Args:
        emb: [N, D] embeddings (scored as float32 dot products, not normalised here).
        groups: int [N] group id of each item.
        memory_mb: budget for one float32 tile of scores; the N x N matrix is never built.
        device: where to score; defaults to the device of ``emb`` if it is a tensor, else CPU.
        name: how errors name ``emb``.

    Returns:
        ``(queries, ranks)``: the items that have at least one sibling (ascending) and their int64 0-based ranks.
    """
    budget = _tile_floats(memory_mb)
    device = _scoring_device(emb, device)
    x = _as_matrix(emb, name, device)
    g = _as_index_array(groups, "groups").reshape(-1)
    if g.shape[0] != x.shape[0]:
        raise ValueError(f"groups has {g.shape[0]} entries but {name} has {x.shape[0]} rows")
    order = np.argsort(g, kind="stable")
    sorted_groups = g[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]]) if g.size else np.zeros(0, int)
    sizes = np.diff(np.r_[starts, g.size])
    queries = np.sort(order[np.repeat(sizes, sizes) >= 2]) if g.size else np.zeros(0, dtype=np.int64)
    if queries.size == 0:
        return queries.astype(np.int64), np.zeros(0, dtype=np.int64)

    side = math.isqrt(budget) if device.type == "cuda" else min(math.isqrt(budget), _CPU_TILE_SIDE)
    if sizes.max() > side:
        log.debug(
            "sibling_ranks: a group of %d items exceeds the %d-item tile side; scanning in strips", sizes.max(), side
        )
        q_sorted, indptr, indices = _group_siblings(g)
        q_t = torch.from_numpy(q_sorted).to(device)
        ranks = retrieval_ranks(x[q_t], x, (indptr, indices), exclude=q_sorted, memory_mb=memory_mb, device=device)
        return q_sorted, ranks
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
    n_blocks = len(bounds) - 1
    log.debug("sibling_ranks: %d items in %d blocks on %s", g.size, n_blocks, device)

    with torch.inference_mode(), _full_fp32_matmul():
        for b in range(n_blocks):  # diagonal blocks: every sibling score, hence every threshold
            b0, b1 = int(bounds[b]), int(bounds[b + 1])
            scores = _strip_scores(xs[b0:b1], xs[b0:b1].T)
            scores.fill_diagonal_(-math.inf)  # the item itself is no candidate
            sibling = gs[b0:b1, None] == gs[None, b0:b1]
            sibling.fill_diagonal_(False)
            best = torch.where(sibling, scores, -math.inf).amax(dim=1)
            best = torch.where(sibling.any(dim=1), best, math.inf)  # items without a sibling count nothing
            thr[b0:b1] = best
            # Siblings counted here are exactly those equal to best; they are not competitors.
            cnt[b0:b1] = ((scores >= best[:, None]) & ~sibling).sum(dim=1)
            del scores, sibling
        for r in range(n_blocks):  # tiles above the diagonal: negatives only, each counted for both its items
            r0, r1 = int(bounds[r]), int(bounds[r + 1])
            for c in range(r + 1, n_blocks):
                c0, c1 = int(bounds[c]), int(bounds[c + 1])
                _count_tile(xs[r0:r1], xs[c0:c1], thr[r0:r1], thr[c0:c1], cnt[r0:r1], cnt[c0:c1], side * side)
    ranks = torch.empty(g.size, dtype=torch.int64, device=device)
    ranks[order_t] = cnt
    return queries.astype(np.int64), ranks.cpu().numpy()[queries]


def recall_summary(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K (percent) plus median and mean rank (1-based, as VSE-infinity reports them) from 0-based ranks.

    Args:
        ranks: 0-based ranks, e.g. from :func:`retrieval_ranks`.
        ks: cut-offs; key ``f"r{k}"`` holds ``100 * mean(ranks < k)``.

    Returns:
        ``{"r1": .., "r5": .., "r10": .., "medr": .., "meanr": ..}`` as Python floats.
    """
    r = np.asarray(ranks).reshape(-1)
    if r.size == 0:
        raise ValueError("recall_summary needs at least one rank")
    out = {f"r{k}": float(100.0 * np.mean(r < k)) for k in ks}
    out["medr"] = float(np.median(r + 1))
    out["meanr"] = float(np.mean(r + 1))
    return out


def _group_siblings(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For items grouped by id: (queries = items with a sibling, CSR indptr, CSR indices of each query's siblings)."""
    order = np.argsort(groups, kind="stable")
    _, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    queries = np.flatnonzero(sizes[inverse] >= 2)
    q_size = sizes[inverse[queries]]
    # Each query takes its whole group, then drops itself: sum of group sizes squared entries, small in practice.
    owner = np.repeat(np.arange(queries.shape[0]), q_size)
    within = np.arange(owner.shape[0]) - np.repeat(np.cumsum(q_size) - q_size, q_size)
    members = order[starts[inverse[queries]][owner] + within]
    keep = members != queries[owner]
    indptr = np.concatenate([[0], np.cumsum(q_size - 1)]).astype(np.int64)
    return queries, indptr, members[keep].astype(np.int64)


def itr_metrics(
    image_emb: ArrayLike,
    text_emb: ArrayLike,
    caption_to_image: ArrayLike | Sequence[int],
    image_labels: ArrayLike | Sequence[int] | None = None,
    *,
    joint: bool = True,
    normalize: bool = True,
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
        memory_mb: tile/strip budget for :func:`itr_ranks` (i2t and t2i, one pass) and :func:`retrieval_ranks`.
        device: where to score; defaults to the embeddings' device if they are tensors, else CPU.

    Returns:
        ``{"i2t", "t2i", "rsum", "t2t", "i2i"}``: :func:`recall_summary` dicts (percent), rsum a float, or None
        where a protocol does not apply (never 0 for "n/a").
    """
    device = _scoring_device(image_emb, device)
    img = _as_matrix(image_emb, "image_emb", device)
    txt = _as_matrix(text_emb, "text_emb", device)
    n_img, n_txt = img.shape[0], txt.shape[0]
    c2i = _caption_to_image(caption_to_image, n_txt, n_img)
    labels: np.ndarray | None = None
    if image_labels is not None:
        labels = _as_index_array(image_labels, "image_labels").reshape(-1)
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

    kw: dict[str, Any] = {"memory_mb": memory_mb, "device": device}
    out: dict[str, Any] = {"i2t": None, "t2i": None, "rsum": None, "t2t": None, "i2i": None}
    if joint and n_txt > 0:
        n_captionless = n_img - int(np.count_nonzero(np.bincount(c2i, minlength=n_img)))
        if n_captionless:
            log.info("i2t: %d of %d images have no caption and are skipped", n_captionless, n_img)
        i2t, t2i = itr_ranks(img, txt, c2i, **kw)
        out["i2t"], out["t2i"] = recall_summary(i2t), recall_summary(t2i)
        out["rsum"] = float(sum(out[d][f"r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)))

    if n_txt > 0:
        queries, ranks = sibling_ranks(txt, c2i, name="text_emb", **kw)
        if queries.size:
            out["t2t"] = recall_summary(ranks)
        else:
            log.info("t2t: no image has two captions; t2t is n/a")
    if labels is not None and n_img > 0:
        queries, ranks = sibling_ranks(img, labels, name="image_emb", **kw)
        if queries.size:
            out["i2i"] = recall_summary(ranks)
        else:
            log.info("i2i: no label has two images; i2i is n/a")
    return out
