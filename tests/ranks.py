"""Ranks counted plainly from a score matrix, for the tests that compare the harness with a peer's own embeddings."""

from __future__ import annotations

import numpy as np

__all__ = ["pessimistic_ranks"]


def pessimistic_ranks(scores: np.ndarray, caption_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based ranks ``(i2t, t2i)`` from ``scores[caption, image]``: each query's best positive, with every negative
    that ties it counted first (the harness's documented tie rule)."""
    n_captions, n_images = scores.shape
    rows = np.arange(n_captions)
    positive = scores[rows, caption_image]
    negatives = scores.astype(np.float64, copy=True)
    negatives[rows, caption_image] = -np.inf
    t2i = (negatives >= positive[:, None]).sum(1)
    i2t = np.empty(n_images, dtype=np.int64)
    for i in range(n_images):
        column = scores[:, i]
        i2t[i] = (column[caption_image != i] >= column[caption_image == i].max()).sum()
    return i2t, t2i
