"""Exhaustive pair scoring: every (image, caption) pair of a split scored by a cross-attention model.

A :class:`~bench.adapters.protocol.CrossScorer` (SCAN, SGR, SAF) has no embeddings whose dot products rank a gallery;
its score of a pair needs both inputs. The reference repositories loop over captions in Python, each against a shard
of images. Here each call scores a block of many images x many captions:

* captions are ordered by length and cut into blocks, each block cut to its longest caption, so padding costs little;
* a block's size follows the memory budget: ``images x captions x`` the adapter's working floats per pair
  (:meth:`~bench.adapters.protocol.CrossScorer.pair_floats`) stays within ``memory_mb``;
* the ``[N_img, N_txt]`` float32 score matrix is kept (4 bytes a pair: 500 MB for COCO 5K) and ranked by
  :func:`bench.scoring.matrix.matrix_queries`, with the embedding path's tie rule, lists and per-query results.

The block plan depends only on the captions' lengths and the budget, so the same split and budget give the same
calls, hence the same float32 scores, however the work is spread.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench.adapters.protocol import CrossScorer

__all__ = ["PairBlock", "plan_blocks", "score_all_pairs", "word_counts"]

log = logging.getLogger(__name__)

_MAX_CAPTIONS = 256  # captions per block: beyond this a call gains nothing and the padding of long tails grows


@dataclass(frozen=True)
class PairBlock:
    """A block of captions (rows of the split) of at most ``words`` words, scored ``images`` images per call."""

    captions: np.ndarray
    words: int
    images: int


def word_counts(texts: torch.Tensor) -> np.ndarray:
    """Words of each caption's local states ``[N, L, D]`` (its non-zero rows, which come first)."""
    return (texts != 0).any(dim=-1).sum(dim=1).cpu().numpy().astype(np.int64)


def plan_blocks(lengths: np.ndarray, n_images: int, regions: int, adapter: CrossScorer, memory_mb: float
                ) -> list[PairBlock]:  # fmt: skip
    """Cut the captions, ordered by length, into blocks whose calls fit ``memory_mb`` (see the module docstring)."""
    budget = max(1, int(memory_mb * 2**20 / 4))
    order = np.argsort(lengths, kind="stable")
    blocks: list[PairBlock] = []
    start, n = 0, len(order)
    while start < n:
        size = _MAX_CAPTIONS
        while True:
            stop = min(start + size, n)
            words = max(1, int(lengths[order[stop - 1]]))
            pairs = max(1, budget // max(1, adapter.pair_floats(regions, words)))
            fit = max(1, min(_MAX_CAPTIONS, math.isqrt(pairs)))
            if stop - start <= fit:
                break
            size = fit
        blocks.append(PairBlock(order[start:stop], words, max(1, min(n_images, pairs // (stop - start)))))
        start = stop
    return blocks


@torch.inference_mode()
def score_all_pairs(
    adapter: CrossScorer,
    images: torch.Tensor,
    texts: torch.Tensor,
    *,
    memory_mb: float,
    device: torch.device,
    cost: dict[str, Any] | None = None,
) -> torch.Tensor:
    """The score of every (image, caption) pair: float32 ``[N_img, N_txt]`` on the CPU.

    Args:
        adapter: The cross-attention model (in eval mode).
        images: Local image states ``[N_img, R, D]`` (its ``embed_image``).
        texts: Local caption states ``[N_txt, L, D]`` (its ``embed_text``: words first, zero rows after).
        memory_mb: Budget of one call's working set.
        device: Where the calls run.
        cost: If given, receives ``pairs``, ``calls`` and ``seconds``.
    """
    t0 = time.perf_counter()
    n_img, n_txt = images.shape[0], texts.shape[0]
    out = torch.empty(n_img, n_txt, dtype=torch.float32)
    lengths = word_counts(texts)
    blocks = plan_blocks(lengths, n_img, images.shape[1], adapter, memory_mb)
    imgs = images.to(device=device, dtype=torch.float32)
    calls = 0
    for block in blocks:
        idx = torch.from_numpy(block.captions)
        txt = texts[idx, : block.words].to(device=device, dtype=torch.float32)
        scores = torch.empty(n_img, len(idx), dtype=torch.float32)
        for i0 in range(0, n_img, block.images):
            i1 = min(i0 + block.images, n_img)
            scores[i0:i1] = adapter.score_matrix(imgs[i0:i1], txt).float().cpu()
            calls += 1
        out[:, idx] = scores
    if cost is not None:
        cost.update(pairs=n_img * n_txt, calls=calls, seconds=round(time.perf_counter() - t0, 3))
    log.info("scored %d x %d pairs in %d calls (%.1f s)", n_img, n_txt, calls, time.perf_counter() - t0)
    return out
