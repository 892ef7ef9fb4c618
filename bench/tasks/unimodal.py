"""What the two built-in eval-only kinds share: they score an adapter's one modality with a
:class:`~bench.evaluation.unimodal.UnimodalScorer` (with or without a method's heads)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.tasks.base import Task

if TYPE_CHECKING:
    from bench.adapters.protocol import Adapter
    from bench.grid.pipeline import Plan, SplitScorer

__all__ = ["UnimodalTask"]


class UnimodalTask(Task):
    """An eval-only task scored by :class:`~bench.evaluation.unimodal.UnimodalScorer`."""

    def scorer(self, plan: Plan, adapter: Adapter, split: Any) -> SplitScorer:
        """The adapter's image side (image sets) or text side (STS), through a method's uni-modal heads if any."""
        from bench.evaluation.unimodal import UnimodalScorer

        return UnimodalScorer(adapter, split, plan.cfg.eval, device=plan.device, frozen=plan.frozen,
                              cache_dir=plan.cache, num_workers=plan.train.num_workers,
                              progress=plan.progress)  # fmt: skip
