"""The adapter interface: what every model family implements, and a base class that composes the two stages.

An adapter encodes in two stages so the harness can freeze and cache the expensive part:

* stage 1, the *backbone* (``image_features`` / ``text_features``): pretrained towers, frozen on CPU runs; its
  outputs are dicts of batch-first tensors that the feature cache stores, keyed by :meth:`Adapter.backbone_key`.
* stage 2, the *head* (``embed_image`` / ``embed_text``): pooling and projection into the joint space; always
  trainable.

``encode_image(x) == embed_image(image_features(x))``. Embeddings come back unnormalised; the harness
L2-normalises once, in :mod:`bench.evaluate`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["Adapter", "AdapterBase", "Features"]

Features = dict[str, torch.Tensor]


@runtime_checkable
class Adapter(Protocol):
    """What the harness needs from a model family."""

    name: ClassVar[str]
    embed_dim: int
    joint_space: bool  # False: image and text live in different spaces (uni-modal towers), i2t/t2i are "n/a"
    default_loss: str  # what [train] loss = "auto" picks: "infonce", "triplet" or "sigmoid"

    def image_transform(self) -> Callable[[Any], torch.Tensor]: ...
    def tokenize(self, texts: Sequence[str]) -> Features: ...
    def image_features(self, images: torch.Tensor) -> Features: ...
    def text_features(self, tokens: Features) -> Features: ...
    def embed_image(self, feats: Features) -> torch.Tensor: ...
    def embed_text(self, feats: Features) -> torch.Tensor: ...
    def encode_image(self, images: torch.Tensor) -> torch.Tensor: ...
    def encode_text(self, tokens: Features) -> torch.Tensor: ...
    def trainable_module(self, freeze_backbone: bool) -> nn.Module: ...
    def backbone_key(self) -> str: ...


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

    def modality_key(self, modality: str) -> str:
        """Identifies the stage-1 path of one modality (``image`` or ``text``), so that adapters sharing a tower
        (say VSE∞ and the uni-modal towers over one EfficientNet) share its cached features."""
        part = self.backbone_part(modality)
        key = getattr(part, "cache_key", None)
        return key() if callable(key) else f"{self.backbone_key()}#{modality}"

    def backbone_part(self, modality: str) -> nn.Module:
        """The module computing ``modality``'s stage-1 features (whose weights key its cache)."""
        if isinstance(self.backbone, nn.ModuleDict) and modality in self.backbone:
            return self.backbone[modality]
        return self.backbone

    # Subclasses implement these four.
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
