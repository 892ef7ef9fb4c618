"""Each query's top-k gallery list, kept while a tiled scan streams its score tiles (no second pass over the gallery).

The lists follow the stage-one order of :func:`bench.scoring.strips.pessimistic_order_key`: higher float32 score
first, among equal scores negatives before positives (so a list agrees with the pessimistic rank: a query's best
positive sits at list position ``rank`` or later), then lower gallery rows first. The order is total, so a list is a
function of the scores alone: the tiles it was gathered from, and their order, do not change it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from bench.scoring.strips import pessimistic_order_key

__all__ = ["QueryLists", "RunningTopK"]


@dataclass(frozen=True)
class QueryLists:
    """Top-k lists of a set of queries, on the CPU."""

    index: np.ndarray  # int64 [Nq, k]: gallery rows, best first (-1 past the end of a gallery smaller than k)
    score: np.ndarray  # float32 [Nq, k]: their scores (-inf past the end)
    positive: np.ndarray  # bool [Nq, k]: which of them are positives of the query


class RunningTopK:
    """The ``k`` best gallery items seen so far for each of ``n_queries`` queries, merged tile by tile."""

    # Tiles of negatives wait in a buffer and are merged this many at a time: one merge instead of eight.
    FLUSH_EVERY = 8

    def __init__(self, n_queries: int, k: int, device: torch.device) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self._pending: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.score = torch.full((n_queries, k), -math.inf, device=device)
        self.index = torch.full((n_queries, k), -1, dtype=torch.int64, device=device)
        self.positive = torch.zeros((n_queries, k), dtype=torch.bool, device=device)

    def add(
        self,
        rows: slice,
        scores: torch.Tensor,
        columns: torch.Tensor | int,
        positive: torch.Tensor | None = None,
    ) -> None:
        """Merge a tile of scores into the lists of queries ``rows``.

        Args:
            rows: the queries of the tile's rows (a slice of this accumulator's queries).
            scores: float32 [h, w] scores of those queries against ``w`` gallery items (-inf: excluded).
            columns: the gallery row of each column: an int64 [w] tensor, or the row of column 0 when contiguous.
            positive: bool [h, w], True where the item is a positive of the row's query; None for a tile of negatives.
        """
        w = scores.shape[1]
        kk = min(self.k, w)
        ids = columns if isinstance(columns, torch.Tensor) else None
        if positive is None:  # negatives only: a plain top-k of the scores is the stage-one order, but for ties
            if kk < w:
                # One more than needed, sorted: where the (k+1)-th score equals the k-th, the float top-k chose
                # among tied items arbitrarily; those rows (rare) take the lowest gallery rows, by the full key.
                vals, idx = scores.topk(kk + 1, dim=1)
                ragged = torch.nonzero(vals[:, kk - 1] == vals[:, kk]).flatten()
                vals, idx = vals[:, :kk], idx[:, :kk]
                if ragged.numel():
                    if ids is None:
                        ids = torch.arange(w, device=scores.device) + int(columns)
                    sub = scores.index_select(0, ragged)
                    neg = torch.zeros_like(sub, dtype=torch.bool)
                    fixed = pessimistic_order_key(sub, neg, ids).topk(kk, dim=1).indices
                    idx[ragged], vals[ragged] = fixed, sub.gather(1, fixed)
            else:  # the whole tile fits: nothing to choose
                vals, idx = scores.topk(kk, dim=1, sorted=False)
            gallery_rows = idx + columns if isinstance(columns, int) else columns[idx]
            key = (rows.start, rows.stop)
            waiting = self._pending.setdefault(key, [])
            waiting.append((vals, gallery_rows))
            if len(waiting) >= self.FLUSH_EVERY:
                self._flush(key)
            return
        if ids is None:
            ids = torch.arange(w, device=scores.device) + int(columns)
        idx = pessimistic_order_key(scores, positive, ids).topk(kk, dim=1).indices
        vals, pos = scores.gather(1, idx), positive.gather(1, idx)
        gallery_rows = idx + columns if isinstance(columns, int) else columns[idx]
        self._merge(rows, vals, pos, gallery_rows)

    def _flush(self, key: tuple[int, int]) -> None:
        waiting = self._pending.pop(key, [])
        if waiting:
            vals = torch.cat([v for v, _ in waiting], dim=1)
            gallery_rows = torch.cat([g for _, g in waiting], dim=1)
            self._merge(slice(*key), vals, torch.zeros_like(gallery_rows, dtype=torch.bool), gallery_rows)

    def _merge(self, rows: slice, vals: torch.Tensor, pos: torch.Tensor, gallery_rows: torch.Tensor) -> None:
        cat_s = torch.cat([self.score[rows], vals], dim=1)
        cat_p = torch.cat([self.positive[rows], pos], dim=1)
        cat_i = torch.cat([self.index[rows], gallery_rows], dim=1)
        top = pessimistic_order_key(cat_s, cat_p, cat_i).topk(self.k, dim=1).indices
        self.score[rows] = cat_s.gather(1, top)
        self.positive[rows] = cat_p.gather(1, top)
        self.index[rows] = cat_i.gather(1, top)

    def lists(self, order: torch.Tensor | None = None) -> QueryLists:
        """The lists as numpy arrays; ``order`` (int64 [Nq]) puts accumulator row ``i`` at output row ``order[i]``."""
        for key in list(self._pending):
            self._flush(key)
        s, i, p = self.score, self.index, self.positive
        if order is not None:
            s, i, p = torch.empty_like(s), torch.empty_like(i), torch.empty_like(p)
            s[order], i[order], p[order] = self.score, self.index, self.positive
        return QueryLists(i.cpu().numpy(), s.cpu().numpy(), p.cpu().numpy())
