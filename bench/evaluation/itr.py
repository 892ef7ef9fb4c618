"""Evaluation: embed a split, L2-normalise once, score exactly, return the metrics block of a result record."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.adapters.protocol import Adapter, CrossScorer, FeatureSupplier
from bench.config import EvalConfig
from bench.data.base import RetrievalSplit
from bench.encode.features import FeatureSet, encode_split
from bench.errors import ConfigError
from bench.evaluation.rerank import check_rerank, rerank_metrics, resolve_k_test
from bench.methods.base import Objective
from bench.scoring.itr import itr_queries, recall_ks, summarize
from bench.scoring.queries import QueryRanks

__all__ = [
    "Scored", "Views", "eccv_blocks", "evaluate", "fold_captions", "fold_mean", "fold_metrics", "metric_value",
    "normalized",
]  # fmt: skip

log = logging.getLogger(__name__)

Views = dict[str, tuple[torch.Tensor, torch.Tensor]]


def normalized(x: torch.Tensor) -> torch.Tensor:
    """Rows L2-normalised in float32: what every score is computed from."""
    return F.normalize(x.float(), dim=-1)


@dataclass
class Scored:
    """What one :func:`evaluate` call scored, query by query (filled in when passed as ``keep``)."""

    queries: dict[str, QueryRanks | None] = field(default_factory=dict)  # i2t, t2i, t2t, i2i
    rerank: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # direction -> (rows, ranks)


def _queries(
    views: Views, c2i: np.ndarray, labels: Any, joint: bool, cfg: EvalConfig, device: torch.device, topk: int
) -> dict[str, QueryRanks | None]:
    kw = {"memory_mb": cfg.memory_mb, "device": device, "normalize": False, "topk": topk}
    c_img, c_txt = views["cross"]
    u_img, u_txt = views["uni"]
    same = u_img is c_img and u_txt is c_txt
    cross = itr_queries(c_img, c_txt, c2i, labels if same else None, joint=joint, **kw)
    if same:
        return cross
    uni = itr_queries(u_img, u_txt, c2i, labels, joint=False, **kw)
    return {**cross, "t2t": uni["t2t"], "i2i": uni["i2i"]}


@torch.inference_mode()
def evaluate(
    adapter: Adapter,
    split: RetrievalSplit,
    cfg: EvalConfig,
    *,
    device: torch.device,
    objective: Objective | None = None,
    features: tuple[FeatureSet, FeatureSet] | None = None,
    folds: list[np.ndarray] | None = None,
    progress: bool = True,
    rerank: bool = True,
    topk: int | None = None,
    keep: Scored | None = None,
    sentences: tuple[RetrievalSplit, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Metrics of ``adapter`` (and the heads of ``objective``, if it adds any) on ``split``.

    i2t/t2i use the objective's ``cross`` view and i2i/t2t its ``uni`` view (the same embeddings unless a method adds
    uni-modal heads). Adapters without a joint space get ``None`` ("n/a") for i2t, t2i and RSUM. With ``folds`` (lists
    of image rows, e.g. COCO's five 1K folds) the result also carries ``"folds"``: the metrics of each fold, scored
    on the same embeddings.

    With ``cfg.rerank_k > 0`` (and ``rerank``; validation passes False to skip the cost) the result also carries
    ``"rerank"``: the i2t/t2i metrics of two-stage retrieval by the adapter's pair scorer
    (:mod:`bench.evaluation.rerank`);
    the ITC metrics stay the main ones. With ``sentences`` (:func:`bench.encode.long_text.sentence_split` of
    ``split``, and ``features`` of it) the captions are encoded sentence by sentence and each caption's embedding is
    the mean of its normalised sentences'. An adapter that can supply a split's stage-1 features itself
    (``split_features(split)``, e.g. precomputed embeddings) gives them here.

    Recall@K is reported for ``cfg.ks``; ``topk`` (default ``cfg.topk``; validation passes 0) is the length of the
    top-k lists kept from the scan. ``keep`` receives the per-query results of the whole split.
    """
    k_test = resolve_k_test(cfg.rerank_k, split) if cfg.rerank_k and rerank else 0
    if isinstance(adapter, CrossScorer) and (k_test or sentences is not None):  # fail before any encoding
        what = "scores every pair already; set [eval] rerank_k = 0" if k_test else (
            'scores pairs by cross-attention; long_text = "sentences" needs caption embeddings to average')
        raise ConfigError(f"adapter {adapter.name!r} {what}")
    if k_test:
        check_rerank(adapter, k_test, cfg.rerank_fusion)  # fail before any encoding
    if isinstance(adapter, FeatureSupplier):
        features = adapter.split_features(split)
    encoded = split if sentences is None else sentences[0]
    img, txt = encode_split(adapter, encoded, device=device, batch_size=cfg.batch_size, features=features,
                            progress=progress, precision=cfg.precision)  # fmt: skip
    if isinstance(adapter, CrossScorer):
        return _evaluate_pairs(adapter, split, img, txt, cfg, device=device, objective=objective, folds=folds,
                               topk=cfg.topk if topk is None else topk, keep=keep)  # fmt: skip
    if objective is not None:
        objective.eval()
        raw = objective.views(img.to(device), txt.to(device))
    else:
        raw = {"cross": (img, txt), "uni": (img, txt)}
    views: Views = {"cross": tuple(normalized(t) for t in raw["cross"])}  # type: ignore[dict-item]
    views["uni"] = views["cross"] if raw["uni"] is raw["cross"] else tuple(normalized(t) for t in raw["uni"])  # type: ignore[assignment]
    if sentences is not None:
        from bench.encode.long_text import pool_sentences

        owner = sentences[1]
        pooled = {k: (v[0], normalized(pool_sentences(v[1], owner, split.n_captions))) for k, v in views.items()}
        views = {"cross": pooled["cross"], "uni": pooled["cross"] if views["uni"] is views["cross"] else pooled["uni"]}  # type: ignore[assignment]
    labels = split.image_labels
    ks = recall_ks(cfg.ks)
    k = cfg.topk if topk is None else topk
    queries = _queries(views, split.caption_to_image, labels, adapter.joint_space, cfg, device, k)
    out = summarize(queries, ks)
    if keep is not None:
        keep.queries = queries
    if rerank and split.caption_ids is not None and split.split == "test":
        eccv = eccv_blocks(views["cross"], split, cfg, device)
        if eccv is not None:
            out.update(eccv)
    if k_test:
        c_img, c_txt = views["cross"]
        out["rerank"] = rerank_metrics(
            adapter,
            split,
            c_img,
            c_txt,
            k_test=k_test,
            fusion=cfg.rerank_fusion,
            batch_size=cfg.batch_size,
            device=device,
            memory_mb=cfg.memory_mb,
            ranks=None if keep is None else keep.rerank,
        )
    if folds:
        out["folds"] = fold_metrics(views, split, adapter.joint_space, cfg, device, k, folds)
    return out


def _evaluate_pairs(
    adapter: CrossScorer, split: RetrievalSplit, img: torch.Tensor, txt: torch.Tensor, cfg: EvalConfig, *,
    device: torch.device, objective: Objective | None, folds: list[np.ndarray] | None, topk: int,
    keep: Scored | None,
) -> dict[str, Any]:  # fmt: skip
    """:func:`evaluate` for a cross-attention model: every pair scored (:mod:`bench.evaluation.pairs`), i2t and t2i
    ranked from the score matrix; t2t and i2i are n/a (a pair score compares an image with a caption only)."""
    from bench.evaluation.pairs import score_all_pairs
    from bench.scoring.matrix import matrix_queries

    if objective is not None:  # a method's objective adds no cross heads here: the adapter's pair scores rank
        objective.eval()
    cost: dict[str, Any] = {}
    scores = score_all_pairs(adapter, img, txt, memory_mb=cfg.memory_mb, device=device, cost=cost)
    c2i = split.caption_to_image
    queries = matrix_queries(scores, c2i, topk=topk)
    out = summarize(queries, recall_ks(cfg.ks))
    out["pairs"] = {**cost, "pair_score": adapter.pair_score_kind}
    if keep is not None:
        keep.queries = queries
    if folds:
        out["folds"] = []
        for rows in folds:
            caps, fold_c2i = fold_captions(split, rows)
            sub = scores[torch.from_numpy(np.asarray(rows))][:, torch.from_numpy(caps)]
            out["folds"].append(summarize(matrix_queries(sub, fold_c2i, topk=topk), recall_ks(cfg.ks)))
    return out


def fold_metrics(
    views: Views, split: RetrievalSplit, joint: bool, cfg: EvalConfig, device: torch.device, topk: int,
    folds: list[np.ndarray],
) -> list[dict[str, Any]]:  # fmt: skip
    """The metrics block of each evaluation fold (lists of image rows, e.g. COCO's five 1K folds), scored on the
    split's normalised embeddings ``views``."""
    labels, ks = split.image_labels, recall_ks(cfg.ks)
    out = []
    for rows in folds:
        caps, c2i = fold_captions(split, rows)
        sub = {key: (v[0][rows], v[1][caps]) for key, v in views.items()}
        if views["uni"] is views["cross"]:
            sub["uni"] = sub["cross"]
        sub_labels = None if labels is None else np.asarray(labels)[rows]
        out.append(summarize(_queries(sub, c2i, sub_labels, joint, cfg, device, topk), ks))
    return out


def fold_captions(split: RetrievalSplit, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The caption rows of a fold's images (``rows``), and each one's image as a row of the fold."""
    remap = -np.ones(split.n_images, dtype=np.int64)
    remap[rows] = np.arange(len(rows))
    caps = np.flatnonzero(remap[split.caption_to_image] >= 0)
    return caps, remap[split.caption_to_image[caps]]


def eccv_blocks(cross: tuple[torch.Tensor, torch.Tensor], split: RetrievalSplit, cfg: EvalConfig,
                 device: torch.device) -> dict[str, Any] | None:  # fmt: skip
    """ECCV Caption and CxC of a split whose captions carry COCO ids, from its normalised ``cross`` embeddings (None
    without the eccv-caption package)."""
    import importlib.util

    from bench.scoring.eccv import eccv_cxc_metrics

    if importlib.util.find_spec("eccv_caption") is None:
        log.warning("%s/%s has COCO caption ids but eccv-caption is not installed (pip install eccv_caption): "
                    "no ECCV Caption / CxC metrics", split.dataset, split.split)  # fmt: skip
        return None
    assert split.caption_ids is not None
    return eccv_cxc_metrics(*cross, [int(i) for i in split.image_ids], list(split.caption_ids), normalize=False,
                            memory_mb=cfg.memory_mb, device=device)  # fmt: skip


def fold_mean(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean over folds of a metrics block (COCO 1K is reported as the mean of its five folds)."""
    out: dict[str, Any] = {}
    for key in ("i2t", "t2i", "t2t", "i2i"):
        blocks = [f[key] for f in folds]
        out[key] = (
            None if any(b is None for b in blocks) else {k: float(np.mean([b[k] for b in blocks])) for k in blocks[0]}
        )
    rs = [f["rsum"] for f in folds]
    out["rsum"] = None if any(r is None for r in rs) else float(np.mean(rs))
    return out


def metric_value(metrics: dict[str, Any], name: str) -> float:
    """A scalar from a metrics block: ``rsum``, or ``<direction>_<key>`` such as ``t2t_r1``; missing -> -inf."""
    if name == "rsum":
        v = metrics.get("rsum")
    else:
        direction, _, key = name.partition("_")
        v = (metrics.get(direction) or {}).get(key)
    return float("-inf") if v is None else float(v)
