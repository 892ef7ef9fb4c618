"""Per-query results of one scoring pass, and every metric read from them.

A :class:`QueryRanks` holds, for one direction (i2t, t2i, t2t, i2i), each query's 0-based rank under the
:data:`~bench.scoring.TIE_RULE`, its number of positives, the image it belongs to (the cluster the bootstrap resamples)
and, when kept, its top-k list. Every metric the two communities read is a mean over queries of a per-query value,
computed here from those arrays alone (:func:`per_query_values`), so the record's numbers, their bootstrap intervals
and paired tests all come from the same stored ranks:

* Recall@K: ``rank < K`` (any positive in the top K), for every K of ``ks``.
* MRR: ``1 / (rank + 1)`` of the best positive (MTEB's retrieval view).
* nDCG@10 with binary relevance: ``sum_{i<10} rel_i / log2(i + 2)`` over the ideal ``sum_{i<min(R,10)}``.
* mAP@R and R-Precision (Musgrave et al. 2020; ECCV Caption's metric) for the multi-positive directions (i2t, t2t,
  i2i): from the top R of the list, R the query's number of positives, so they need lists of at least R items.
* mean rank (1-based); the median rank is reported too but is not a mean, so it gets no interval.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.scoring.topk import QueryLists

__all__ = ["DEFAULT_KS", "MULTI_POSITIVE", "NDCG_AT", "QueryRanks", "direction_summary", "per_query_values", "rsum"]

log = logging.getLogger(__name__)

DEFAULT_KS = (1, 5, 10)
NDCG_AT = 10
_SAID: set[tuple[str, int, int]] = set()  # the short-lists notes already logged
MULTI_POSITIVE = ("i2t", "t2t", "i2i")  # directions whose queries have several positives: mAP@R and R-Precision


@dataclass(frozen=True)
class QueryRanks:
    """One direction's per-query results."""

    queries: np.ndarray  # int64 [Nq]: the query rows (images for i2t/i2i, captions for t2i/t2t) that were scored
    ranks: np.ndarray  # int64 [Nq]: 0-based rank of each query's best positive
    n_positives: np.ndarray  # int64 [Nq]: R, each query's number of positives
    cluster: np.ndarray  # int64 [Nq]: the image each query belongs to (itself for image queries)
    gallery_size: int  # items each query ranks (the query itself excluded for t2t and i2i)
    lists: QueryLists | None = None  # top-k lists, when kept


def _ndcg(qr: QueryRanks, at: int) -> np.ndarray | None:
    r = qr.n_positives
    discounts = 1.0 / np.log2(np.arange(at) + 2.0)
    ideal = np.cumsum(discounts)[np.minimum(r, at) - 1]
    need = min(at, qr.gallery_size)  # list positions that can hold a gain
    if qr.lists is not None and qr.lists.positive.shape[1] >= need:
        dcg = (qr.lists.positive[:, :need] * discounts[:need]).sum(axis=1)
        return dcg / ideal
    if np.all(r == 1):  # one positive: its rank alone fixes the list's gain
        return np.where(qr.ranks < at, 1.0 / np.log2(np.minimum(qr.ranks, at - 1) + 2.0), 0.0)
    return None


def _ap_at_r(qr: QueryRanks) -> tuple[np.ndarray, np.ndarray] | None:
    r = qr.n_positives
    if qr.lists is None or qr.lists.positive.shape[1] < int(r.max()):
        return None
    width = int(r.max())
    hit = qr.lists.positive[:, :width]
    within = np.arange(width)[None, :] < r[:, None]
    hits = np.cumsum(hit, axis=1)
    precision = hits / np.arange(1, width + 1)[None, :]
    ap = (precision * (hit & within)).sum(axis=1) / r
    r_precision = hits[np.arange(len(r)), r - 1] / r
    return ap, r_precision


def per_query_values(qr: QueryRanks, direction: str, ks: Sequence[int] = DEFAULT_KS) -> dict[str, np.ndarray]:
    """Each metric's per-query value (percent where the metric is), whose mean over queries is the metric.

    Metrics a direction's lists are too short for (mAP@R with lists shorter than a query's R) are left out.
    """
    ranks = qr.ranks
    out: dict[str, np.ndarray] = {f"r{k}": 100.0 * (ranks < k) for k in ks}
    out["mrr"] = 100.0 / (ranks + 1.0)
    ndcg = _ndcg(qr, NDCG_AT)
    if ndcg is not None:
        out[f"ndcg{NDCG_AT}"] = 100.0 * ndcg
    if direction in MULTI_POSITIVE:
        ap = _ap_at_r(qr)
        if ap is not None:
            out["map_at_r"], out["r_precision"] = 100.0 * ap[0], 100.0 * ap[1]
        elif qr.lists is not None:
            said = (direction, qr.lists.positive.shape[1], int(qr.n_positives.max()))
            if said not in _SAID:  # once per process: every cell and table of a grid would say it again
                _SAID.add(said)
                log.info("%s: lists of %d < the largest R (%d): no mAP@R; raise [eval] topk", *said)
    out["meanr"] = ranks + 1.0
    return out


def direction_summary(qr: QueryRanks, direction: str, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """A direction's metrics block: Recall@K for ``ks``, MRR, nDCG@10, mAP@R/R-Precision where defined, median and
    mean rank (1-based), and the number of queries."""
    if qr.ranks.size == 0:
        raise ValueError(f"{direction}: no queries to summarise")
    values = per_query_values(qr, direction, ks)
    out = {name: float(np.mean(v)) for name, v in values.items() if name != "meanr"}
    out["medr"] = float(np.median(qr.ranks + 1))
    out["meanr"] = float(np.mean(values["meanr"]))
    out["n_queries"] = int(qr.ranks.size)
    return out


def rsum(metrics: dict[str, Any]) -> float | None:
    """R@1 + R@5 + R@10 of i2t and t2i, or None when either direction is n/a."""
    if metrics.get("i2t") is None or metrics.get("t2i") is None:
        return None
    return float(sum(metrics[d][f"r{k}"] for d in ("i2t", "t2i") for k in DEFAULT_KS))
