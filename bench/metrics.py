"""Exact retrieval ranks and recall metrics for image-text retrieval.

All metrics here come from :func:`retrieval_ranks`, which scores queries against a gallery by dot product in
row strips, so memory stays bounded (about ``memory_mb``) however large the gallery is, and which breaks ties
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
    "pessimistic_order_key",
    "ranks_and_topk",
    "recall_summary",
    "retrieval_ranks",
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
    queries: ArrayLike, gallery: ArrayLike, device: torch.device | str | None
) -> tuple[torch.Tensor, torch.Tensor, torch.device]:
    """Checked float32 query and gallery matrices on one device (default: the queries' device if a tensor, else
    CPU), with the same dimension."""
    if device is None:
        device = queries.device if isinstance(queries, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    q = _as_matrix(queries, "queries", device)
    g = _as_matrix(gallery, "gallery", device)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"queries have dimension {q.shape[1]} but gallery has {g.shape[1]}")
    return q, g, device


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
        memory_mb: strip budget for :func:`retrieval_ranks`.
        device: where to score; defaults to the embeddings' device if they are tensors, else CPU.

    Returns:
        ``{"i2t", "t2i", "rsum", "t2t", "i2i"}``: :func:`recall_summary` dicts (percent), rsum a float, or None
        where a protocol does not apply (never 0 for "n/a").
    """
    if device is None:
        device = image_emb.device if isinstance(image_emb, torch.Tensor) else torch.device("cpu")
    img = _as_matrix(image_emb, "image_emb", torch.device(device))
    txt = _as_matrix(text_emb, "text_emb", torch.device(device))
    n_img, n_txt = img.shape[0], txt.shape[0]
    c2i = _as_index_array(caption_to_image, "caption_to_image").reshape(-1)
    if c2i.shape[0] != n_txt:
        raise ValueError(f"caption_to_image has {c2i.shape[0]} rows but text_emb has {n_txt}")
    if c2i.size and (c2i.min() < 0 or c2i.max() >= n_img):
        bad = int(np.flatnonzero((c2i < 0) | (c2i >= n_img))[0])
        raise ValueError(f"caption_to_image[{bad}] = {c2i[bad]}, out of range [0, {n_img}) (image_emb rows)")
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
        counts = np.bincount(c2i, minlength=n_img)
        has_caption = np.flatnonzero(counts > 0)
        if has_caption.shape[0] < n_img:
            log.info("i2t: %d of %d images have no caption and are skipped", n_img - has_caption.shape[0], n_img)
        caps_by_image = np.argsort(c2i, kind="stable").astype(np.int64)
        i2t_indptr = np.concatenate([[0], np.cumsum(counts[has_caption])]).astype(np.int64)
        i2t_q = img[torch.from_numpy(has_caption).to(img.device)]
        out["i2t"] = recall_summary(retrieval_ranks(i2t_q, txt, (i2t_indptr, caps_by_image), **kw))
        t2i_indptr = np.arange(n_txt + 1, dtype=np.int64)
        out["t2i"] = recall_summary(retrieval_ranks(txt, img, (t2i_indptr, c2i), **kw))
        out["rsum"] = float(sum(out[d][f"r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)))

    if n_txt > 0:
        queries, indptr, indices = _group_siblings(c2i)
        if queries.size:
            q_t = txt[torch.from_numpy(queries).to(txt.device)]
            ranks = retrieval_ranks(q_t, txt, (indptr, indices), exclude=queries, **kw)
            out["t2t"] = recall_summary(ranks)
        else:
            log.info("t2t: no image has two captions; t2t is n/a")
    if labels is not None and n_img > 0:
        queries, indptr, indices = _group_siblings(labels)
        if queries.size:
            q_i = img[torch.from_numpy(queries).to(img.device)]
            out["i2i"] = recall_summary(retrieval_ranks(q_i, img, (indptr, indices), exclude=queries, **kw))
        else:
            log.info("i2i: no label has two images; i2i is n/a")
    return out
