"""Uni-modal towers: a timm image model and a sentence-transformers text model, each with its own pooled feature.

Without a projection there is no joint space: the towers give image->image and text->text rows, and their i2t/t2i
cells read "n/a". With ``projection_dim > 0`` a linear map per tower into a shared space is added and trained, which is
the linear-probe baseline for fine-tuning methods on the same frozen towers.
"""

from __future__ import annotations

import torch
from bench.adapters.backbones import TowerPairAdapter, build_text_tower, build_timm_tower
from bench.adapters.protocol import Features
from bench.adapters.registry import register_adapter
from torch import nn

__all__ = ["Towers"]


@register_adapter("towers")
class Towers(TowerPairAdapter):
    """A timm image tower and a sentence-transformers text tower.

    Args:
        image_tower: Image backbone; its pooled feature is the image embedding.
        text_tower: Text encoder; its sentence pooling is the text embedding.
        projection_dim: 0 for none (no joint space), else the size of trainable linear maps into a joint space.
    """

    default_loss = "infonce"

    def __init__(self, image_tower: nn.Module, text_tower: nn.Module, projection_dim: int = 0) -> None:
        super().__init__()
        self.backbone = nn.ModuleDict({"image": image_tower, "text": text_tower})
        self.joint_space = projection_dim > 0
        if self.joint_space:
            self.head = nn.ModuleDict(
                {
                    "image": nn.Linear(image_tower.num_features, projection_dim),
                    "text": nn.Linear(text_tower.hidden_size, projection_dim),
                }
            )
            self.embed_dim = projection_dim
        else:
            self.head = nn.ModuleDict({"image": nn.Identity(), "text": nn.Identity()})
            self.embed_dim = image_tower.num_features

    @classmethod
    def build(
        cls,
        *,
        image_model: str = "tf_efficientnet_lite0",
        image_weights: str = "auto",
        text_model: str = "all-MiniLM-L6-v2",
        text_weights: str = "auto",
        max_length: int | None = None,
        projection_dim: int = 0,
        allow_pickle: bool = False,
    ) -> Towers:
        """Build from a timm name and a sentence-transformers name (or local paths); ``allow_pickle`` loads an
        ``image_weights`` file that pickles more than tensors (it runs code from the file)."""
        return cls(
            build_timm_tower(image_model, image_weights, allow_pickle),
            build_text_tower(text_model, max_length, text_weights),
            projection_dim,
        )

    def embed_image(self, feats: Features) -> torch.Tensor:
        return self.head["image"](self.backbone["image"].pool(feats))

    def embed_text(self, feats: Features) -> torch.Tensor:
        return self.head["text"](self.backbone["text"].pool(feats))
