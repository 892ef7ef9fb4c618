"""Scoring a choice set in the grid: every (image, caption) pair of every item, by embedding cosine or by the
adapter's pair scorer, then each item's outcome (:mod:`bench.scoring.choice`).

``scorer = "embedding"`` (the default, as CLIP_benchmark and the papers score dual encoders) compares the
L2-normalised joint embeddings, through a trained method's cross heads; a frozen backbone's stage-1 features are
cached like an image-text split's. ``scorer = "pair"`` scores each pair with the adapter's pair scorer (BLIP's ITM
head), which dual-encoder tools cannot run on these sets. The record says which (``scored_by``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bench.adapters.protocol import Adapter, PairScorer
from bench.data.choice import ChoiceSplit
from bench.encode.features import encode_split
from bench.errors import ConfigError
from bench.evaluation.itr import normalized
from bench.methods.base import Objective
from bench.scoring.choice import ChoiceOutcomes, accuracies, item_outcomes

if TYPE_CHECKING:
    from bench.grid.plan import Plan

__all__ = ["SCORERS", "ChoiceScorer"]

log = logging.getLogger(__name__)

SCORERS = ("embedding", "pair")


class ChoiceScorer:
    """Scores an adapter (with a method's heads) on a :class:`ChoiceSplit`.

    Attributes:
        embedding: ``joint`` when embeddings are compared, None for a pair scorer.
        scored_by: What a pair's score is, for the record.
        outcomes: The per-item outcomes of the latest call.
        scores: The latest call's pair scores and the items' offsets into them.
    """

    def __init__(self, plan: Plan, adapter: Adapter, split: ChoiceSplit, scorer: str = "embedding") -> None:
        name = adapter.name or type(adapter).__name__
        if scorer not in SCORERS:
            raise ConfigError(f"[datasets.{split.dataset}] scorer must be one of {', '.join(SCORERS)}, got {scorer!r}")
        if scorer == "pair" and not isinstance(adapter, PairScorer):
            raise ConfigError(f"[datasets.{split.dataset}] scorer = \"pair\": adapter {name!r} has no pair scorer")
        self.plan, self.adapter, self.split, self.scorer = plan, adapter, split, scorer
        self.pairs = split.pairs()
        self.embedding: str | None = "joint" if scorer == "embedding" else None
        self.scored_by = ("cosine of the joint embeddings" if scorer == "embedding"
                          else f"pair scorer: {getattr(adapter, 'pair_score_kind', '')}")  # fmt: skip
        self.features: Any = None
        if scorer == "embedding" and adapter.joint_space:
            from bench.grid.pipeline import stage1

            self.features = stage1(plan, adapter, split.retrieval())
        self.outcomes: ChoiceOutcomes | None = None
        self.scores = np.zeros(0, dtype=np.float32)

    @torch.inference_mode()
    def _pair_scores(self, objective: Objective | None) -> np.ndarray | None:
        img_rows, cap_rows, _ = self.pairs
        ev, device = self.plan.cfg.eval, self.plan.device
        retrieval = self.split.retrieval()
        if self.scorer == "pair":
            from bench.evaluation.rerank import score_pairs

            self.adapter.eval()
            return score_pairs(self.adapter, retrieval, img_rows, cap_rows, batch_size=ev.batch_size,
                               device=device).numpy()  # fmt: skip
        img, txt = encode_split(self.adapter, retrieval, device=device, batch_size=ev.batch_size,
                                features=self.features, progress=self.plan.progress,
                                precision=ev.precision)  # fmt: skip
        if objective is not None:
            objective.eval()
            img, txt = objective.views(img.to(device), txt.to(device))["cross"]
        elif not self.adapter.joint_space:
            return None
        img, txt = normalized(img.float().cpu()), normalized(txt.float().cpu())
        i, c = torch.from_numpy(img_rows), torch.from_numpy(cap_rows)
        return (img[i] * txt[c]).sum(dim=1).numpy()

    def __call__(self, objective: Objective | None = None, **_: Any) -> dict[str, Any]:
        """The metrics block ``{"choice": {kind: {subset: acc, average: acc, "mean": acc}, "n_items", "scored_by"}}``
        (accuracies x 100); ``{"choice": None}`` for an adapter without a joint space and no method heads."""
        scores = self._pair_scores(objective)
        if scores is None:
            self.outcomes = None
            return {"choice": None}
        items = self.split.items
        outcomes = item_outcomes(scores, self.pairs[2], [(len(it.images), len(it.captions)) for it in items],
                                 [it.truth for it in items])  # fmt: skip
        subsets = np.asarray([it.subset for it in items])
        groups = {k: tuple(v) for k, v in self.split.groups.items()}
        self.outcomes = ChoiceOutcomes(np.asarray([it.id for it in items]), subsets, outcomes, groups,
                                       self.plan.cell.seed, objective is not None)  # fmt: skip
        self.scores = scores
        accs = accuracies(outcomes, subsets, self.split.groups)
        block: dict[str, Any] = {kind: {name: float(v[0]) for name, v in a.items()} for kind, a in accs.items()}
        block["averages"] = list(self.split.groups)
        block["subsets"] = self.split.subsets()
        block["n_items"] = len(items)
        block["scored_by"] = self.scored_by
        return {"choice": block}
