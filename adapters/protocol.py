"""The adapter interface: what every model family implements, and a base class that composes the two stages.

An adapter encodes in two stages so the harness can freeze and cache the expensive part:

* stage 1, the *backbone* (``image_features`` / ``text_features``): pretrained towers, frozen on CPU runs; its
  outputs are dicts of batch-first tensors that the feature cache stores, keyed by :meth:`Adapter.backbone_key`.
* stage 2, the *head* (``embed_image`` / ``embed_text``): pooling and projection into the joint space; always
  trainable.

``encode_image(x) == embed_image(image_features(x))``. Embeddings come back unnormalised; the harness
L2-normalises once, in :mod:`bench.evaluation.itr`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = [
    "Adapter",
    "AdapterBase",
    "CrossScorer",
    "Exportable",
    "Exported",
    "FeatureSupplier",
    "Features",
    "Modality",
    "PairScorer",
    "TextContext",
    "hf_text_lengths",
]

Features = dict[str, torch.Tensor]
Modality = Literal["image", "text"]


@runtime_checkable
class Adapter(Protocol):
    """What the harness calls on every model family: the whole contract, checked for each registered family by
    ``tests/test_adapter_contract.py``. :class:`AdapterBase` gives every hook below a default except the six stage
    methods and ``build``, so a family implements those and overrides the rest only where it differs."""

    name: ClassVar[str]  # set by @register_adapter
    embed_dim: int
    joint_space: bool  # False: image and text live in different spaces (uni-modal towers), i2t/t2i are "n/a"
    default_loss: str  # what [train] loss = "auto" picks: "infonce", "triplet" or "sigmoid"
    # The checkpoint's own contrastive temperature and sigmoid bias (CLIP, SigLIP), or None: what the methods may
    # start from when the config asks for the model's own (see bench.methods.cusa).
    init_temperature: float | None
    init_logit_bias: float | None

    @classmethod
    def build(cls, **options: Any) -> Adapter: ...  # the only code that reads weights; options: [models.<id>] keys
    def image_transform(self) -> Callable[[Any], torch.Tensor]: ...  # PIL image -> [3, H, W]
    def tokenize(self, texts: Sequence[str]) -> Features: ...
    def image_features(self, images: torch.Tensor) -> Features: ...  # stage 1 (backbone), cached when frozen
    def text_features(self, tokens: Features) -> Features: ...
    def embed_image(self, feats: Features) -> torch.Tensor: ...  # stage 2 (head), always trainable
    def embed_text(self, feats: Features) -> torch.Tensor: ...
    def encode_image(self, images: torch.Tensor) -> torch.Tensor: ...
    def encode_text(self, tokens: Features) -> torch.Tensor: ...
    def trainable_module(self, freeze_backbone: bool) -> nn.Module: ...
    def trained_parts(self, freeze_backbone: bool) -> list[str]: ...
    def backbone_key(self) -> str: ...
    def modality_key(self, modality: Modality) -> str: ...
    def backbone_part(self, modality: Modality) -> nn.Module: ...
    # nn.Module's, used by the harness as is.
    def to(self, *args: Any, **kwargs: Any) -> Any: ...
    def train(self, mode: bool = True) -> Any: ...
    def eval(self) -> Any: ...


@runtime_checkable
class PairScorer(Protocol):
    """Optional: adapters that score (image, caption) pairs jointly, for two-stage re-ranking (BLIP's ITM head)."""

    pair_score_kind: str  # what a pair score is, recorded with re-ranked metrics

    def pair_image_state(self, images: torch.Tensor) -> torch.Tensor: ...
    def pair_scores(self, image_state: torch.Tensor, tokens: Features) -> torch.Tensor: ...


@runtime_checkable
class CrossScorer(Protocol):
    """Optional: adapters whose similarity needs the image and the caption at once (cross-attention over regions and
    words: SCAN, SGR, SAF), so every pair of a split is scored (:mod:`bench.evaluation.pairs`).

    Their ``embed_image`` gives each image's local states ``[B, R, D]`` and ``embed_text`` each caption's ``[B, L, D]``
    (its words first, zero rows after, so a block of captions can be cut to its longest).
    """

    pair_score_kind: str  # what a pair score is, recorded with the metrics

    def score_matrix(self, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor: ...  # -> [Bi, Bc] float
    def pair_floats(self, regions: int, words: int) -> int: ...  # working floats of one pair, to size the blocks


@runtime_checkable
class TextContext(Protocol):
    """Optional: adapters whose text encoder reads a fixed number of tokens: how many tokens each text needs (special
    tokens included) and that context, or None where the tokenizer cannot say (for :mod:`bench.encode.long_text`)."""

    def text_lengths(self, texts: Sequence[str]) -> tuple[list[int], int] | None: ...


def hf_text_lengths(tokenizer: Any, texts: Sequence[str], context: int) -> tuple[list[int], int]:
    """:meth:`TextContext.text_lengths` through a transformers tokenizer (special tokens counted)."""
    ids = tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
    return [len(x) for x in ids], int(context)


@runtime_checkable
class FeatureSupplier(Protocol):
    """Optional: adapters that hold a split's stage-1 features themselves (precomputed embeddings), so the harness
    runs no backbone pass."""

    def split_features(self, split: Any) -> tuple[Features, Features]: ...


@dataclass(frozen=True)
class Exported:
    """What :meth:`Exportable.export_native` wrote: how the family's own library loads it, and the ``[models.<id>]``
    options that load it in itr-bench."""

    load: str
    options: dict[str, Any]


@runtime_checkable
class Exportable(Protocol):
    """Optional: adapters that can write their model, as it is now, in their family's native form (``bench
    export``): the files the family's own library loads."""

    def export_native(self, out: Path) -> Exported: ...  # writes into the folder ``out``


class AdapterBase(nn.Module):
    """Shared plumbing: subclasses set ``backbone`` and ``head`` modules and implement the four stage methods.

    Attributes:
        backbone: Module holding the pretrained towers (stage 1).
        head: Module holding pooling/projection (stage 2); may be empty.
    """

    name: ClassVar[str] = ""
    # The base loss of [train] loss = "auto"; a family sets it on the class, and an instance may refine it (the
    # clip and hf_clip families pick "sigmoid" for SigLIP checkpoints).
    default_loss: str = "infonce"
    joint_space: bool = True
    embed_dim: int = 0
    init_temperature: float | None = None
    init_logit_bias: float | None = None

    backbone: nn.Module
    head: nn.Module

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` to embeddings ``[B, D]`` (unnormalised)."""
        return self.embed_image(self.image_features(images))

    def encode_text(self, tokens: Features) -> torch.Tensor:
        """Tokenised captions to embeddings ``[B, D]`` (unnormalised)."""
        return self.embed_text(self.text_features(tokens))

    def trainable_module(self, freeze_backbone: bool) -> nn.Module:
        """What fine-tuning updates: the head alone, or head and backbone."""
        if freeze_backbone:
            return self.head
        return self

    def trained_parts(self, freeze_backbone: bool) -> list[str]:
        """Names of the top-level submodules fine-tuning updates, recorded in each result."""
        mod = self.trainable_module(freeze_backbone)
        prefix = "head" if mod is self.head else ""
        names = sorted({n.split(".")[0] for n, p in mod.named_parameters() if p.requires_grad})
        return [f"{prefix}.{n}" if prefix else n for n in names]

    def backbone_key(self) -> str:
        """Identifies stage 1 (weights, transform, tokenizer) for the feature cache."""
        raise NotImplementedError

    def modality_key(self, modality: Modality) -> str:
        """Identifies the stage-1 path of one modality (``image`` or ``text``), so that adapters sharing a tower
        (say VSE∞ and the uni-modal towers over one EfficientNet) share its cached features."""
        part = self.backbone_part(modality)
        key = getattr(part, "cache_key", None)
        return key() if callable(key) else f"{self.backbone_key()}#{modality}"

    def backbone_part(self, modality: Modality) -> nn.Module:
        """The module computing ``modality``'s stage-1 features (whose weights key its cache)."""
        if isinstance(self.backbone, nn.ModuleDict) and modality in self.backbone:
            return self.backbone[modality]
        return self.backbone

    @classmethod
    def build(cls, **options: Any) -> AdapterBase:  # pragma: no cover - abstract
        """Construct the adapter from its ``[models.<id>]`` options (keyword-only parameters of the override)."""
        raise NotImplementedError

    # Subclasses implement these six.
    def image_transform(self) -> Callable[[Any], torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def tokenize(self, texts: Sequence[str]) -> Features:  # pragma: no cover - abstract
        raise NotImplementedError

    def image_features(self, images: torch.Tensor) -> Features:  # pragma: no cover - abstract
        raise NotImplementedError

    def text_features(self, tokens: Features) -> Features:  # pragma: no cover - abstract
        raise NotImplementedError

    def embed_image(self, feats: Features) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def embed_text(self, feats: Features) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
