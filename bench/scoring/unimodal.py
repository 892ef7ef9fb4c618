"""Uni-modal metrics: image-to-image retrieval by class label (Recall@K, mAP@R) and STS Spearman correlation.

Retrieval is scored exactly and in row strips, like :func:`bench.scoring.itr.retrieval_ranks`: the full query x gallery
matrix is never built, and one strip with its working copies stays within ``memory_mb``. Ties follow the harness's
pessimistic :data:`~bench.scoring.itr.TIE_RULE`: in the ranking of a query, a negative that ties with a positive is
placed
before it, so an exact duplicate image of another class always costs the query, and a model that maps every image
to one point scores Recall@K ~ 0 and mAP@R ~ 0.

* Recall@K (the metric-learning convention: a query counts when any of its K nearest neighbours shares its label)
  is ``100 * mean(rank < K)`` where ``rank`` is the 0-based rank of the query's best positive.
* mAP@R (Musgrave et al., "A Metric Learning Reality Check", 2020): with R the number of positives of a query,
  ``AP@R = (1/R) * sum_{i<=R} P(i) * rel(i)`` over the top R of its ranking; R-Precision is the share of positives in
  the top R. Both are averaged over queries, in percent.
* STS: Spearman's rho (average ranks for ties, as ``scipy.stats.spearmanr``) between the cosine similarity of each
  pair and its gold score, times 100, per group and the mean over groups.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from bench.scoring import common
from bench.scoring.common import (
    ArrayLike,
    as_index_array,
    as_matrix,
    full_fp32_matmul,
    query_gallery,
    scoring_device,
    strip_rows,
)

__all__ = ["image_retrieval_metrics", "label_retrieval", "spearman", "sts_metrics"]

log = logging.getLogger(__name__)

# Bytes per score while a strip is alive: the float32 scores, a bool comparison and top-k's working copy.
_BYTES_PER_SCORE = 10
KS = (1, 2, 4, 8)


def label_retrieval(
    queries: ArrayLike,
    gallery: ArrayLike,
    query_labels: ArrayLike | Sequence[int],
    gallery_labels: ArrayLike | Sequence[int],
    *,
    exclude: ArrayLike | Sequence[int] | None = None,
    memory_mb: float = 256.0,
    device: torch.device | str | None = None,
) -> dict[str, np.ndarray]:
    """Per-query rank, AP@R and R-Precision of label-based retrieval, under the pessimistic tie rule.

    Args:
        queries: [Nq, D] query embeddings (scored as float32 dot products; normalise first for cosine).
        gallery: [Ng, D] gallery embeddings.
        query_labels: int [Nq] class of each query.
        gallery_labels: int [Ng] class of each gallery item; same class = positive.
        exclude: optional int [Nq]: a gallery row removed from query i's gallery (the query itself), -1 = none.
        memory_mb: budget for one strip of scores with its working copies (rows x Ng x 10 bytes).
        device: where to score; defaults to the device of ``queries`` if it is a tensor, else CPU.

    Returns:
        ``{"queries": int64 rows of the queries scored (those with at least one positive), "rank": 0-based rank of
        each one's best positive, "ap_at_r": AP@R in [0, 1], "r_precision": R-Precision in [0, 1], "n_positives":
        R}``.
    """
    q, g, device = query_gallery(queries, gallery, device)
    n_q, n_g = q.shape[0], g.shape[0]
    ql = as_index_array(query_labels, "query_labels").reshape(-1)
    gl = as_index_array(gallery_labels, "gallery_labels").reshape(-1)
    if ql.shape[0] != n_q or gl.shape[0] != n_g:
        raise ValueError(f"labels: {ql.shape[0]} query and {gl.shape[0]} gallery labels for {n_q} x {n_g} rows")
    excl = np.full(n_q, -1, dtype=np.int64) if exclude is None else as_index_array(exclude, "exclude").reshape(-1)
    if excl.shape[0] != n_q or (excl.size and (excl.min() < -1 or excl.max() >= n_g)):
        raise ValueError(f"exclude must hold {n_q} gallery rows in [-1, {n_g})")

    # Each query's positives are its label's block of the label-sorted gallery, minus the excluded row.
    order = np.argsort(gl, kind="stable")
    sorted_labels = gl[order]
    start = np.searchsorted(sorted_labels, ql, side="left")
    size = np.searchsorted(sorted_labels, ql, side="right") - start
    self_pos = (excl >= 0) & (gl[np.maximum(excl, 0)] == ql)
    n_pos = size - self_pos
    keep = np.flatnonzero(n_pos > 0)
    if keep.shape[0] < n_q:
        log.info("label retrieval: %d of %d queries have no positive and are skipped", n_q - keep.shape[0], n_q)
    out = {
        "queries": keep,
        "rank": np.zeros(keep.shape[0], dtype=np.int64),
        "ap_at_r": np.zeros(keep.shape[0]),
        "r_precision": np.zeros(keep.shape[0]),
        "n_positives": n_pos[keep],
    }
    if keep.size == 0:
        return out

    rows = strip_rows(n_g, memory_mb, _BYTES_PER_SCORE)
    order_t = torch.from_numpy(order).to(device)
    gallery_t = g.T
    neg_inf = torch.tensor(-math.inf, device=device)
    with torch.inference_mode(), full_fp32_matmul():
        for s in range(0, keep.shape[0], rows):
            idx = keep[s : s + rows]
            h = idx.shape[0]
            scores = common.strip_scores(q[torch.from_numpy(idx).to(device)], gallery_t)  # [h, Ng]
            ex = torch.from_numpy(excl[idx]).to(device)
            has = ex >= 0
            scores[torch.arange(h, device=device)[has], ex[has]] = neg_inf
            # Positive scores [h, G] (G = largest label block here), padded with -inf; the excluded row is -inf too.
            width = int(size[idx].max())
            offs = torch.arange(width, device=device)
            sz = torch.from_numpy(size[idx]).to(device)
            cols = order_t[(torch.from_numpy(start[idx]).to(device)[:, None] + offs).clamp_max(n_g - 1)]
            pos = scores.gather(1, cols).masked_fill(offs >= sz[:, None], -math.inf)
            pos = pos.sort(dim=1, descending=True).values  # the R real positives first, best first
            # A top-(2R+2) pass instead of a full sort (see _ap_at_r): 4x less time at 20,000 images.
            r_max = int(n_pos[idx].max())
            k = min(n_g, 2 * r_max + 2)
            top = scores.topk(k, dim=1).values
            # The rank needs the exact count of items at or above the best positive. The top k give it wherever it
            # is below k; only the other rows take a comparison pass (as costly as the GEMM when run on every row).
            n_ge_best = k - torch.searchsorted(top.flip(1).contiguous(), pos[:, :1].contiguous(), side="left")[:, 0]
            deep = torch.nonzero(n_ge_best >= k).flatten()
            if deep.numel():
                n_ge_best[deep] = (scores[deep] >= pos[deep, :1]).sum(dim=1)
            del scores
            r = torch.from_numpy(n_pos[idx]).to(device)
            ap, rp, n_pos_best = _ap_at_r(top, pos, r)
            out["rank"][s : s + h] = (n_ge_best - n_pos_best).cpu().numpy()
            out["ap_at_r"][s : s + h] = ap.cpu().numpy()
            out["r_precision"][s : s + h] = rp.cpu().numpy()
    return out


def _ap_at_r(top: torch.Tensor, pos: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """AP@R, R-Precision and the number of positives at or above the best one, of queries whose ``top`` [h, k]
    holds their k best gallery scores (best first) and ``pos`` [h, w] their positives' scores (best first, -inf
    padded), R = ``r``.

    Gallery items scoring >= each positive are counted among the top k only. The count is exact below k; a positive
    with k >= 2R + 2 or more items at or above it sits past R whatever the true count (at least k - (R + 1) >= R + 1
    of them are negatives), and the capped count places it past R as well, so AP@R and R-Precision need no more.
    """
    k, width = top.shape[1], pos.shape[1]
    offs = torch.arange(width, device=pos.device)
    n_ge = k - torch.searchsorted(top.flip(1).contiguous(), pos, side="left")
    n_pos_ge = width - torch.searchsorted(pos.flip(1).contiguous(), pos, side="left")  # positives >= each positive
    # Pessimistic order: every tied negative before a positive; tied positives fill the next slots.
    position = offs[None, :] + 1 + (n_ge - n_pos_ge)  # 1-based position of the j-th best positive
    valid = offs[None, :] < r[:, None]
    hit = valid & (position <= r[:, None])
    prec = (offs[None, :] + 1).double() / position.double()
    return (prec * hit).sum(1) / r, hit.sum(1).double() / r, n_pos_ge[:, 0]


def _summary(scored: dict[str, np.ndarray], ks: Sequence[int]) -> dict[str, Any]:
    n = int(scored["queries"].shape[0])
    if n == 0:
        return {**{f"r{k}": None for k in ks}, "map_at_r": None, "r_precision": None, "n_queries": 0}
    out: dict[str, Any] = {f"r{k}": float(100.0 * np.mean(scored["rank"] < k)) for k in ks}
    out["map_at_r"] = float(100.0 * np.mean(scored["ap_at_r"]))
    out["r_precision"] = float(100.0 * np.mean(scored["r_precision"]))
    out["n_queries"] = n
    return out


def image_retrieval_metrics(
    emb: ArrayLike,
    labels: ArrayLike | Sequence[int],
    *,
    query_rows: ArrayLike | Sequence[int] | None = None,
    gallery_rows: ArrayLike | Sequence[int] | None = None,
    ks: Sequence[int] = KS,
    normalize: bool = True,
    memory_mb: float = 256.0,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Recall@K, mAP@R and R-Precision (percent) of image-to-image retrieval by label.

    Args:
        emb: [N, D] image embeddings.
        labels: int [N] class of each image.
        query_rows: rows used as queries against ``gallery_rows`` (In-Shop); None: every image queries all the
            others, itself excluded.
        gallery_rows: the gallery rows, with ``query_rows``.
        ks: Recall cut-offs; key ``f"r{k}"``.
        normalize: L2-normalise rows first (cosine similarity).
        memory_mb: strip budget, see :func:`label_retrieval`.
        device: where to score.

    Returns:
        ``{"r1", "r2", "r4", "r8", "map_at_r", "r_precision", "n_queries"}``; the values are None when no query
        has a positive.
    """
    device = scoring_device(emb, device)
    x = as_matrix(emb, "emb", device)
    if normalize:
        x = torch.nn.functional.normalize(x, dim=1)
    lab = as_index_array(labels, "labels").reshape(-1)
    if lab.shape[0] != x.shape[0]:
        raise ValueError(f"labels has {lab.shape[0]} rows but emb has {x.shape[0]}")
    kw: dict[str, Any] = {"memory_mb": memory_mb, "device": device}
    if query_rows is None:
        if gallery_rows is not None:
            raise ValueError("gallery_rows needs query_rows")
        scored = label_retrieval(x, x, lab, lab, exclude=np.arange(x.shape[0]), **kw)
    else:
        qr = as_index_array(query_rows, "query_rows").reshape(-1)
        gr = as_index_array(gallery_rows, "gallery_rows").reshape(-1)
        qt, gt = torch.from_numpy(qr).to(x.device), torch.from_numpy(gr).to(x.device)
        scored = label_retrieval(x[qt], x[gt], lab[qr], lab[gr], **kw)
    return _summary(scored, ks)


# --------------------------------------------------------------------------------------------------------------------
# STS


def _rankdata(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (``scipy.stats.rankdata(method="average")``)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new = np.concatenate([[True], xs[1:] != xs[:-1]])
    starts = np.flatnonzero(new)
    ends = np.concatenate([starts[1:], [x.shape[0]]])
    ranks = np.empty(x.shape[0], dtype=np.float64)
    ranks[order] = ((starts + ends + 1) / 2.0)[np.cumsum(new) - 1]
    return ranks


def spearman(x: ArrayLike | Sequence[float], y: ArrayLike | Sequence[float]) -> float:
    """Spearman's rank correlation of ``x`` and ``y`` (average ranks for ties); NaN when either is constant."""
    a = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64).reshape(-1)
    b = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y, dtype=np.float64).reshape(-1)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"spearman needs two equal-length series of at least 2 values, got {a.size} and {b.size}")
    ra, rb = _rankdata(a) - (a.size + 1) / 2.0, _rankdata(b) - (b.size + 1) / 2.0
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float("nan") if denom == 0 else float(ra @ rb) / denom


def sts_metrics(
    emb1: ArrayLike, emb2: ArrayLike, gold: ArrayLike | Sequence[float], groups: Sequence[str]
) -> dict[str, float]:
    """Spearman x 100 between cosine similarities and gold scores, per group and their mean.

    Args:
        emb1: [N, D] embeddings of the first sentence of each pair.
        emb2: [N, D] embeddings of the second sentence.
        gold: [N] gold similarity scores.
        groups: [N] group (file) of each pair.

    Returns:
        ``{<group>: rho, ..., "mean": rho}``. A group whose similarities are all equal (a collapsed model) has no
        ranking to correlate; it scores 0, never NaN, and a warning is logged.
    """
    cpu = torch.device("cpu")  # a few thousand pairs: scored on the CPU, wherever the embeddings live
    a = torch.nn.functional.normalize(as_matrix(emb1, "emb1", cpu), dim=1)
    b = torch.nn.functional.normalize(as_matrix(emb2, "emb2", cpu), dim=1)
    if a.shape != b.shape:
        raise ValueError(f"emb1 has shape {tuple(a.shape)} but emb2 has {tuple(b.shape)}")
    sim = (a * b).sum(1).numpy().astype(np.float64)
    gold_np = np.asarray(gold, dtype=np.float64).reshape(-1)
    grp = np.asarray(list(groups), dtype=object)
    if gold_np.shape[0] != sim.shape[0] or grp.shape[0] != sim.shape[0]:
        raise ValueError(f"{sim.shape[0]} pairs but {gold_np.shape[0]} gold scores and {grp.shape[0]} groups")
    out: dict[str, float] = {}
    for name in dict.fromkeys(grp.tolist()):
        rows = grp == name
        rho = spearman(sim[rows], gold_np[rows])
        if math.isnan(rho):
            log.warning("STS group %s: similarities or gold scores are constant; Spearman scored 0", name)
            rho = 0.0
        out[str(name)] = 100.0 * rho
    out["mean"] = float(np.mean(list(out.values())))
    return out
