"""What every exact scorer shares: the tie rule, memory budgets, IEEE-fp32 products and input checks.

Scores are float32 dot products computed under :func:`full_fp32_matmul` (never TF32 or bf16) in strips or tiles
sized from ``memory_mb``, so the N x M matrix is never held. The tie rule (:data:`TIE_RULE`) is pessimistic: a model
that maps everything to one point scores R@K ~ 0, never 100.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias

import numpy as np
import torch

from bench.scoring import TIE_RULE

__all__ = [
    "BYTES_PER_SCORE",
    "TIE_RULE",
    "ArrayLike",
    "Positives",
    "as_index_array",
    "as_matrix",
    "check_caption_to_image",
    "full_fp32_matmul",
    "group_siblings",
    "positives_csr",
    "query_gallery",
    "recall_summary",
    "scoring_device",
    "strip_rows",
    "strip_scores",
    "tile_floats",
]


ArrayLike: TypeAlias = torch.Tensor | np.ndarray
Positives: TypeAlias = Sequence[Any] | tuple[Any, Any]


BYTES_PER_SCORE = 4  # the strip score matrix is float32


def strip_rows(n_gallery: int, memory_mb: float, bytes_per_score: int = BYTES_PER_SCORE) -> int:
    """Rows per strip so that a strip of ``bytes_per_score`` bytes per score, rows x n_gallery, fits in
    ``memory_mb`` MiB (4: the float32 scores alone; more when a pass keeps masks, keys or sort buffers alive)."""
    if not memory_mb > 0:
        raise ValueError(f"memory_mb must be > 0, got {memory_mb}")
    # The small epsilon keeps a budget computed as exactly k rows from rounding down to k - 1.
    return max(1, math.floor(memory_mb * 2**20 / (bytes_per_score * max(n_gallery, 1)) + 1e-9))


def tile_floats(memory_mb: float) -> int:
    """How many float32 scores fit in ``memory_mb`` MiB (at least one): the size of one tile of the tiled scans."""
    if not memory_mb > 0:
        raise ValueError(f"memory_mb must be > 0, got {memory_mb}")
    return max(1, math.floor(memory_mb * 2**20 / BYTES_PER_SCORE + 1e-9))


def scoring_device(x: ArrayLike, device: torch.device | str | None) -> torch.device:
    """``device``, by default the device of ``x`` if it is a tensor, else CPU."""
    if device is None:
        return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    return torch.device(device)


def strip_scores(q_strip: torch.Tensor, gallery_t: torch.Tensor) -> torch.Tensor:
    """Scores of one strip of queries against the whole gallery (a seam the tests use to watch strip sizes)."""
    return q_strip @ gallery_t


@contextlib.contextmanager
def full_fp32_matmul() -> Iterator[None]:
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


def as_matrix(x: ArrayLike, name: str, device: torch.device | None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = np.asarray(x)
        if not x.dtype.isnative:  # big-endian arrays: torch takes native byte order only
            x = x.astype(x.dtype.newbyteorder("="))
        if x.dtype.kind == "f" and x.size and np.abs(x).max() > np.finfo(np.float32).max:
            raise ValueError(f"{name} has values beyond float32's range (scores are float32)")
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


def query_gallery(
    queries: ArrayLike,
    gallery: ArrayLike,
    device: torch.device | str | None,
    names: tuple[str, str] = ("queries", "gallery"),
) -> tuple[torch.Tensor, torch.Tensor, torch.device]:
    """Checked float32 query and gallery matrices on one device (default: the queries' device if a tensor, else
    CPU), with the same dimension; errors call them ``names``."""
    device = scoring_device(queries, device)
    q = as_matrix(queries, names[0], device)
    g = as_matrix(gallery, names[1], device)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"{names[0]} has dimension {q.shape[1]} but {names[1]} has {g.shape[1]}")
    return q, g, device


def check_caption_to_image(caption_to_image: Any, n_txt: int, n_img: int) -> np.ndarray:
    """Checked int64 [N_txt] image row of each caption."""
    c2i = as_index_array(caption_to_image, "caption_to_image").reshape(-1)
    if c2i.shape[0] != n_txt:
        raise ValueError(f"caption_to_image has {c2i.shape[0]} rows but text_emb has {n_txt}")
    if c2i.size and (c2i.min() < 0 or c2i.max() >= n_img):
        bad = int(np.flatnonzero((c2i < 0) | (c2i >= n_img))[0])
        raise ValueError(f"caption_to_image[{bad}] = {c2i[bad]}, out of range [0, {n_img}) (image_emb rows)")
    return c2i


def as_index_array(x: Any, name: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.size == 0:
        return np.zeros(a.shape, dtype=np.int64)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def positives_csr(positives: Positives, n_queries: int, n_gallery: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated, de-duplicated CSR ``(indptr [Nq+1], indices)`` of each query's positive gallery rows, sorted."""
    if isinstance(positives, tuple) and len(positives) == 2:
        indptr = as_index_array(positives[0], "positives indptr").reshape(-1)
        indices = as_index_array(positives[1], "positives indices").reshape(-1)
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
        per_query = [as_index_array(p, f"positives[{i}]").reshape(-1) for i, p in enumerate(positives)]
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


def group_siblings(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


