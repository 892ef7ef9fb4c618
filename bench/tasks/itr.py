"""Image-text retrieval: the harness's main task. Its splits (:class:`~bench.data.base.RetrievalSplit`) are trained
on and scored in both directions (i2t, t2i, and the uni-modal i2i/t2t beside them), with per-query files, bootstrap
intervals and sharded evaluation; its records form the rows of the result tables."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.data.base import RetrievalSplit
from bench.tasks import register_task
from bench.tasks.base import Column, Task

if TYPE_CHECKING:
    from bench.adapters.protocol import Adapter
    from bench.grid.pipeline import Plan, SplitScorer

__all__ = ["ImageTextTask"]


@register_task
class ImageTextTask(Task):
    """Image-text retrieval on a :class:`RetrievalSplit`."""

    name = "itr"
    title = "image-text retrieval"
    eval_only = False
    shardable = True
    report_order = 0

    def table_options(self, loader_params: Iterable[str]) -> dict[str, Any]:
        """The evaluation-protocol keys (``pre_caption``, ``max_words``, ``captions_per_image``) that the format's
        loader does not take itself: applied to the loaded split by :meth:`finish`."""
        from bench.data.protocol import PROTOCOL_OPTIONS

        params = set(loader_params)
        return {k: v for k, v in PROTOCOL_OPTIONS.items() if k not in params}

    def finish(self, split: RetrievalSplit, options: Mapping[str, Any], where: str) -> RetrievalSplit:
        """The split with the table's protocol keys applied (:func:`bench.data.protocol.apply_protocol`)."""
        if not options:
            return split
        from bench.data.protocol import apply_protocol

        return apply_protocol(split, dict(options), where)

    def card(self, split: RetrievalSplit) -> dict[str, Any]:
        """Images, captions, the histogram of captions per image and the number of distinct labels."""
        counts = np.bincount(split.caption_to_image, minlength=split.n_images)
        labels = None if split.image_labels is None else len(set(split.image_labels.tolist()))
        return {"images": int(split.n_images), "captions": int(split.n_captions),
                "captions_per_image": {int(k): int(v) for k, v in sorted(Counter(counts.tolist()).items())},
                "labels": labels}  # fmt: skip

    def fingerprint(self, split: RetrievalSplit) -> dict[str, str]:
        """The split's own image and caption keys (:meth:`RetrievalSplit.fingerprint`)."""
        return {"images": split.fingerprint("images"), "captions": split.fingerprint("captions")}

    def scorer(self, plan: Plan, adapter: Adapter, split: RetrievalSplit) -> SplitScorer:
        """An :class:`~bench.grid.pipeline.ItrScorer` (with the 1K folds of a split that declares them)."""
        from bench.grid.pipeline import ItrScorer

        return ItrScorer(plan, adapter, split)

    def record_fields(self, plan: Plan, score: SplitScorer, split: Any, per_query: Path | None) -> dict[str, Any]:
        """The per-query file and the bootstrap intervals, from the ranks the scorer kept (a one-process
        :class:`ItrScorer` and the merge of a sharded evaluation both keep them), and how captions longer than the
        model's context were handled (``long_text``). No ``task`` field: a record without one is image-text."""
        from bench.grid.pipeline import uncertainty

        out = uncertainty(plan, split, score.scored, per_query)  # type: ignore[attr-defined]
        long_text = getattr(score, "long_text", None)
        if long_text is not None:
            out["long_text"] = long_text
        from bench.adapters.registry import get_adapter_class
        from bench.data.precomp import region_description

        # A model that read the region features: what they are (grid cells of a named backbone, or unstated). A
        # pixel model on the same folder read its photos.
        if callable(getattr(get_adapter_class(plan.family), "score_matrix", None)):
            regions = region_description(split)
            if regions is not None:
                out["regions"] = regions
        return out

    def values(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        """Image-text records are the table's rows (:mod:`bench.report.collect`), not columns joined onto them."""
        return {}

    def columns(self, keys: Iterable[str]) -> list[Column]:
        """None: see :meth:`values`."""
        return []
