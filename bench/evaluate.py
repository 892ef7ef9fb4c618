"""Evaluation: embed a split, L2-normalise once, score exactly, return the metrics block of a result record."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from bench.config import EvalConfig
from bench.data.base import RetrievalSplit
from bench.features import FeatureSet, encode_split
from bench.methods import Objective
from bench.metrics import itr_metrics

__all__ = ["evaluate", "metric_value"]


def _norm(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)


@torch.inference_mode()
def evaluate(
    adapter: Any,
    split: RetrievalSplit,
    cfg: EvalConfig,
    *,
    device: torch.device,
    objective: Objective | None = None,
    features: tuple[FeatureSet, FeatureSet] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Metrics of ``adapter`` (and the heads of ``objective``, if it adds any) on ``split``.

    i2t/t2i use the objective's ``cross`` view and i2i/t2t its ``uni`` view (the same embeddings unless a method adds
    uni-modal heads). Adapters without a joint space get ``None`` ("n/a") for i2t, t2i and RSUM.
    """
    img, txt = encode_split(
        adapter, split, device=device, batch_size=cfg.batch_size, features=features, progress=progress
    )
    if objective is not None:
        objective.eval()
        views = objective.views(img.to(device), txt.to(device))
    else:
        views = {"cross": (img, txt), "uni": (img, txt)}
    labels = split.image_labels
    kw = {"memory_mb": cfg.memory_mb, "device": device}
    c_img, c_txt = (_norm(t) for t in views["cross"])
    u_img, u_txt = (_norm(t) for t in views["uni"])
    same = views["uni"] is views["cross"] or (torch.equal(c_img, u_img) and torch.equal(c_txt, u_txt))
    cross = itr_metrics(
        c_img, c_txt, split.caption_to_image, labels if same else None, joint=adapter.joint_space, normalize=False, **kw
    )
    if same:
        return cross
    uni = itr_metrics(u_img, u_txt, split.caption_to_image, labels, joint=False, normalize=False, **kw)
    return {**cross, "t2t": uni["t2t"], "i2i": uni["i2i"]}


def metric_value(metrics: dict[str, Any], name: str) -> float:
    """A scalar from a metrics block: ``rsum``, or ``<direction>_<key>`` such as ``t2t_r1``; missing -> -inf."""
    if name == "rsum":
        v = metrics.get("rsum")
    else:
        direction, _, key = name.partition("_")
        v = (metrics.get(direction) or {}).get(key)
    return float("-inf") if v is None else float(v)
