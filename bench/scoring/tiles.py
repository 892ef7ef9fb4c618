"""What the tiled scans share: counting a tile against thresholds, merging it into top-k lists, cutting a scan into
parts for several tasks, and merging the parts' lists."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from bench.scoring import common
from bench.scoring.strips import pessimistic_order_key
from bench.scoring.topk import QueryLists, RunningTopK

__all__ = ["check_part", "count_tile", "merge_both", "merge_lists", "part_ranges"]


def count_tile(
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


def merge_both(
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


def check_part(part: int, parts: int, topk: int) -> None:
    """The arguments every scan part takes: ``part`` in ``[0, parts)`` and ``topk >= 0``."""
    if topk < 0:
        raise ValueError(f"topk must be >= 0, got {topk}")
    if not 0 <= part < parts:
        raise ValueError(f"part must be in [0, {parts}), got {part}")


def part_ranges(weights: Sequence[int] | np.ndarray, parts: int) -> list[tuple[int, int]]:
    """Cut ``len(weights)`` units (a scan's row groups or blocks) into ``parts`` contiguous ranges of about equal total
    weight (some empty when there are fewer units than parts)."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    w = np.asarray(weights, dtype=np.float64)
    cum = np.concatenate([[0.0], np.cumsum(w)])
    total = cum[-1]
    cuts = [0]
    for j in range(1, parts):
        cuts.append(max(cuts[-1], int(np.searchsorted(cum, total * j / parts, side="left"))))
    cuts.append(len(w))
    return [(cuts[j], cuts[j + 1]) for j in range(parts)]


def merge_lists(lists: Sequence[QueryLists]) -> QueryLists:
    """The top-k lists of the union of several parts' lists of the same queries (the k best by the stage-one order of
    :func:`~bench.scoring.strips.pessimistic_order_key`): what one scan over every part's tiles would have kept."""
    if len(lists) == 1:
        return lists[0]
    k = lists[0].index.shape[1]
    score = torch.from_numpy(np.concatenate([part.score for part in lists], axis=1))
    positive = torch.from_numpy(np.concatenate([part.positive for part in lists], axis=1))
    index = np.concatenate([part.index for part in lists], axis=1)
    top = pessimistic_order_key(score, positive, torch.from_numpy(index)).topk(k, dim=1).indices.numpy()
    return QueryLists(
        np.take_along_axis(index, top, 1),
        np.take_along_axis(score.numpy(), top, 1),
        np.take_along_axis(positive.numpy(), top, 1),
    )
