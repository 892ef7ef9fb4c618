"""Uni-modal evaluation in the grid: image-to-image retrieval and STS for any adapter, with or without a method's heads.

Uni-modal datasets are eval-only. A zero-shot cell scores the adapter as built; a trained cell fine-tunes on the ITR
dataset its table names (``train_on``) exactly as that dataset's own cell would, then scores the selected state here.

Which embedding is scored (recorded in each result as ``embedding``), following the CUSA paper (§3.4-3.5 of the spec):

* ``uni_heads``: the method added uni-modal heads (USA, CUSA); its ``views(...)["uni"]`` are scored.
* ``joint``: the adapter's joint embedding, through the method's cross heads when it has them.
* ``backbone``: the adapter's joint embedding before the method's cross heads (``uni_embedding = "backbone"``, the
  CUSA reference's choice for rows without uni heads: the baseline and +CSA rows of Tables 10-11).
* ``towers``: an adapter without a joint space (``towers``): each tower's own pooled feature, i.e. the uni-modal
  teachers' rows when the towers are the teachers.

Image sets use only the image side of the adapter and STS only the text side.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from bench.adapters.protocol import Adapter
from bench.config import EvalConfig
from bench.data.image_sets import ImageRetrievalSplit
from bench.data.sts import STSSplit
from bench.encode.cache import cache_path, load_or_compute
from bench.encode.features import (
    FeatureSet,
    embed_features,
    encoding_precision,
    extract_image_features,
    for_storage,
    map_images,
    map_texts,
    pad_cat,
    storage_dtype,
)
from bench.methods.base import Objective
from bench.scoring.unimodal import image_retrieval_metrics, sts_metrics

__all__ = ["UnimodalScorer"]

log = logging.getLogger(__name__)


def _embedding_kind(adapter: Adapter, views: dict[str, Any] | None, objective: Objective | None = None) -> str:
    kind = objective.embedding_kind if objective is not None else "joint"
    if views is not None and kind != "joint":
        return kind  # "uni_heads", or "backbone" (the method's uni_embedding option)
    if views is not None and views["uni"] is not views["cross"]:
        return "uni_heads"
    return "joint" if adapter.joint_space else "towers"


class UnimodalScorer:
    """Scores an adapter, and optionally a method's heads, on one uni-modal split.

    With a frozen backbone the stage-1 features are computed once (images are cached on disk like ITR features) and
    every call runs only the heads; otherwise every call encodes end to end.

    Args:
        adapter: The adapter.
        split: An :class:`ImageRetrievalSplit` or :class:`STSSplit`.
        cfg: ``[eval]`` settings (batch size, scorer memory budget).
        device: Where to encode and score.
        frozen: Whether the backbone is frozen (so stage-1 features may be reused).
        cache_dir: Feature cache folder, or None for no disk cache.
        num_workers: DataLoader workers for image decoding.
        progress: Show progress bars.

    Attributes:
        embedding: Which embedding the last call scored (``uni_heads``, ``joint`` or ``towers``).
    """

    def __init__(
        self, adapter: Adapter, split: ImageRetrievalSplit | STSSplit, cfg: EvalConfig, *, device: torch.device,
        frozen: bool, cache_dir: Path | None, num_workers: int = 0, progress: bool = True,
    ) -> None:  # fmt: skip
        if not isinstance(split, ImageRetrievalSplit | STSSplit):
            raise TypeError(f"UnimodalScorer needs an image-retrieval or STS split, got {type(split).__name__}")
        self.adapter, self.split, self.cfg, self.device = adapter, split, cfg, device
        self.frozen, self.cache_dir, self.num_workers, self.progress = frozen, cache_dir, num_workers, progress
        self.embedding: str | None = None
        self._features: FeatureSet | None = None

    @property
    def task(self) -> str:
        """``image_retrieval`` or ``sts``."""
        return self.split.task

    def _stage1(self) -> FeatureSet | None:
        if not self.frozen:
            return None
        if self._features is None:
            if isinstance(self.split, ImageRetrievalSplit):
                self._features = self._image_features()
            else:
                self._features = self._text_features()
        return self._features

    def _image_features(self) -> FeatureSet:
        images = self.split.images()  # type: ignore[union-attr]
        precision = encoding_precision(self.device, self.cfg.precision)
        stored = storage_dtype(precision, self.cfg.feature_dtype)
        path = cache_path(self.adapter, images, "image", self.cache_dir, precision, stored) if self.cache_dir else None
        return load_or_compute(path, images.n_images, lambda: extract_image_features(
            self.adapter, images, device=self.device, batch_size=self.cfg.batch_size, num_workers=self.num_workers,
            progress=self.progress, precision=precision, feature_dtype=stored,
        ))  # fmt: skip

    def _text_batches(self, fn: Any) -> list[Any]:
        sentences = list(self.split.sentences()[0])  # type: ignore[union-attr]
        return map_texts(self.adapter, sentences, fn, device=self.device, batch_size=2 * self.cfg.batch_size,
                         precision=self.cfg.precision)  # fmt: skip

    @torch.inference_mode()
    def _text_features(self) -> FeatureSet:
        self.adapter.eval()
        stored = storage_dtype(encoding_precision(self.device, self.cfg.precision), self.cfg.feature_dtype)
        return pad_cat(self._text_batches(lambda t: for_storage(self.adapter.text_features(t), stored)))

    @torch.inference_mode()
    def _embed(self) -> torch.Tensor:
        """Embeddings ``[N, D]`` (float32, CPU) of the split's images or distinct sentences."""
        self.adapter.eval()
        feats = self._stage1()
        image_side = isinstance(self.split, ImageRetrievalSplit)
        if feats is not None:
            fn = self.adapter.embed_image if image_side else self.adapter.embed_text
            return embed_features(fn, feats, device=self.device)
        if image_side:
            rows = map_images(
                self.adapter, self.split.images(), lambda x: self.adapter.encode_image(x).float().cpu(),  # type: ignore[union-attr]
                device=self.device, batch_size=self.cfg.batch_size, num_workers=self.num_workers,
                progress=self.progress, desc="encode images", precision=self.cfg.precision,
            )  # fmt: skip
        else:
            rows = self._text_batches(lambda t: self.adapter.encode_text(t).float().cpu())
        return torch.cat(rows)

    @torch.inference_mode()
    def __call__(self, objective: Objective | None = None, **_: Any) -> dict[str, Any]:
        """The metrics block: ``{"i2i": {r1, r2, r4, r8, map_at_r, r_precision, n_queries}}`` for image sets,
        ``{"sts": {<file>: rho, ..., "mean": rho}}`` for STS (Spearman x 100)."""
        emb = self._embed().to(self.device)
        views = None
        if objective is not None:
            objective.eval()
            other = emb.new_zeros((0, emb.shape[1]))  # the modality this set does not have
            image_side = isinstance(self.split, ImageRetrievalSplit)
            views = objective.views(emb, other) if image_side else objective.views(other, emb)
            emb = views["uni"][0 if image_side else 1]
        self.embedding = _embedding_kind(self.adapter, views, objective)
        emb = emb.float()
        if isinstance(self.split, ImageRetrievalSplit):
            block = image_retrieval_metrics(
                emb, self.split.labels, query_rows=self.split.query_rows, gallery_rows=self.split.gallery_rows,
                memory_mb=self.cfg.memory_mb, device=self.device,
            )  # fmt: skip
            return {"i2i": block}
        _, a, b = self.split.sentences()
        emb = emb.cpu()
        return {"sts": sts_metrics(emb[a], emb[b], self.split.scores, self.split.groups)}
