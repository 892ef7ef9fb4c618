"""Image-to-image retrieval on labelled image sets (CUB, Cars196, SOP, In-Shop, iNaturalist): eval-only, scored
with Recall@K and mAP@R as the metric-learning literature reports them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from bench.data.image_sets import ImageRetrievalSplit
from bench.data.stamps import file_stamp
from bench.tasks import register_task
from bench.tasks.base import Column
from bench.tasks.unimodal import UnimodalTask

__all__ = ["ImageRetrievalTask"]

# (metric key, Markdown/CSV label, LaTeX sub-header, shown in Markdown/LaTeX)
_METRICS = (
    ("r1", "R@1", "R@1", True),
    ("r2", "R@2", "R@2", False),
    ("r4", "R@4", "R@4", False),
    ("r8", "R@8", "R@8", False),
    ("map_at_r", "mAP@R", "mAP@R", True),
    ("r_precision", "R-P", "R-P", False),
)


@register_task
class ImageRetrievalTask(UnimodalTask):
    """Image-to-image retrieval on an :class:`ImageRetrievalSplit`; records hold ``metrics["i2i"]``."""

    name = "image_retrieval"
    title = "image retrieval"
    report_order = 1  # the paper's Table 10 before its Table 11 (STS)
    legend = "image retrieval R@1 and mAP@R"

    def card(self, split: ImageRetrievalSplit) -> dict[str, Any]:
        """Images and classes."""
        return {"images": len(split.image_paths), "classes": len(set(split.labels.tolist()))}

    def fingerprint(self, split: ImageRetrievalSplit) -> dict[str, str]:
        """The image paths with each file's stamp (:func:`bench.data.stamps.file_stamp`), and the labels."""
        h = hashlib.sha256()
        for p in split.image_paths:
            h.update(f"{p}\0{file_stamp(p)}\n".encode())
        h.update(np.asarray(split.labels, dtype=np.int64).tobytes())
        return {"images": h.hexdigest()[:16]}

    def values(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        """The ``i2i`` block's recalls, mAP@R and R-Precision."""
        block = metrics.get("i2i") or {}
        return {key: float(block[key]) for key, *_ in _METRICS if block.get(key) is not None}

    def columns(self, keys: Iterable[str]) -> list[Column]:
        """R@1 and mAP@R shown; R@2/4/8 and R-Precision in CSV."""
        return [Column(key, label, tex, shown) for key, label, tex, shown in _METRICS]
