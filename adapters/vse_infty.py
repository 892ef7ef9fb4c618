"""VSE∞: a timm image backbone's grid features and a transformer's token features, each pooled by GPO.

Chen, Deng, Wang, Lin. *Learning the Best Pooling Strategy for Visual Semantic Embedding*, CVPR 2021.
Image: backbone grid ``[B, N, C]`` -> ``fc`` (C -> D) [+ residual 2-layer MLP] -> GPO -> ``[B, D]``.
Text: token states ``[B, L, H]`` -> ``linear`` (H -> D) -> GPO over the real tokens -> ``[B, D]``.
Module names follow the official code (``image_encoder.fc``, ``image_encoder.gpool``, ``txt_linear``) so that a
key map onto the authors' checkpoints stays one table.

The offline default pairs the packaged EfficientNet-Lite0 (7x7x1280 grid) with all-MiniLM-L6-v2 (384-d tokens); the
paper setting is ``image_backbone = "resnext101_32x8d.fb_wsl_ig1b_ft_in1k"``,
``text_backbone = "google-bert/bert-base-uncased"``. ``checkpoint = "/path/model_best.pth"`` loads the authors' released
(or any official-code) grid checkpoint; the key map is in :mod:`bench.adapters.vse_official`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from bench.adapters.backbones import TowerPairAdapter, build_text_tower, build_timm_tower
from bench.adapters.gpo import GPO
from bench.adapters.protocol import Exported, Features
from bench.adapters.registry import register_adapter
from torch import nn

__all__ = ["VSEInfty"]


class MLP(nn.Module):
    """VSE∞'s residual MLP (Linear-BN-ReLU blocks) applied per set element."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        self.output_dim, self.num_layers = output_dim, num_layers
        h = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + h, h + [output_dim], strict=True))
        self.bns = nn.ModuleList(nn.BatchNorm1d(k) for k in h + [output_dim])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        x = x.reshape(b * n, d)
        for i, (bn, layer) in enumerate(zip(self.bns, self.layers, strict=True)):
            x = F.relu(bn(layer(x))) if i < self.num_layers - 1 else layer(x)
        return x.view(b, n, self.output_dim)


class ImageAggr(nn.Module):
    """``EncoderImageAggr`` of VSE∞: projection then GPO."""

    def __init__(self, img_dim: int, embed_dim: int, mlp: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(img_dim, embed_dim)
        self.mlp = MLP(img_dim, embed_dim // 2, embed_dim, 2) if mlp else None
        self.gpool = GPO(32, 32)
        # Xavier init as in the official code.
        r = (6.0 / (self.fc.in_features + self.fc.out_features)) ** 0.5
        nn.init.uniform_(self.fc.weight, -r, r)
        nn.init.zeros_(self.fc.bias)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        feats = self.fc(grid)
        if self.mlp is not None:
            feats = self.mlp(grid) + feats
        lengths = torch.full((grid.size(0),), grid.size(1), device=grid.device)
        return self.gpool(feats, lengths)


class TextAggr(nn.Module):
    """The trainable part of VSE∞'s ``EncoderText``: token projection then GPO over the real tokens."""

    def __init__(self, hidden: int, embed_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, embed_dim)
        self.gpool = GPO(32, 32)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(1).long()
        return self.gpool(self.linear(tokens), lengths)


@register_adapter("vse_infty")
class VSEInfty(TowerPairAdapter):
    """VSE∞ with GPO pooling over a timm image backbone and a transformer text encoder.

    Args:
        image_tower: Stage-1 image backbone.
        text_tower: Stage-1 text encoder.
        embed_dim: Joint space size.
        image_mlp: Add the residual MLP branch of VSE∞'s ``precomp_enc_type = basic``.
    """

    default_loss = "triplet"

    def __init__(self, image_tower: nn.Module, text_tower: nn.Module, embed_dim: int = 1024, image_mlp: bool = False):
        super().__init__()
        self.embed_dim = embed_dim
        self.backbone = nn.ModuleDict({"image": image_tower, "text": text_tower})
        self.head = nn.ModuleDict(
            {
                "image": ImageAggr(image_tower.num_features, embed_dim, image_mlp),
                "text": TextAggr(text_tower.hidden_size, embed_dim),
            }
        )

    def export_native(self, out: Path) -> Exported:
        """The authors' layout: ``model_best.pth`` as woodfrog/vse_infty's ``train.py`` saves it
        (:func:`bench.adapters.vse_official.write_official`)."""
        from bench.adapters.vse_official import write_official

        return write_official(self, out / "model_best.pth")

    @classmethod
    def build(
        cls,
        *,
        image_backbone: str | None = None,
        image_weights: str = "auto",
        text_backbone: str | None = None,
        text_weights: str = "auto",
        max_length: int | None = None,
        embed_dim: int | None = None,
        image_mlp: bool | None = None,
        checkpoint: str | None = None,
        allow_pickle: bool = False,
    ) -> VSEInfty:
        """Build from timm / transformers names, or from an official VSE∞ checkpoint.

        Args:
            image_backbone: timm name (default ``tf_efficientnet_lite0``; with ``checkpoint``, the architecture of
                its ``backbone_source``).
            image_weights: See :func:`bench.adapters.backbones.build_timm_tower` (leave unset with ``checkpoint``).
            text_backbone: Text encoder name or folder (default ``all-MiniLM-L6-v2``; with ``checkpoint``,
                ``google-bert/bert-base-uncased``, whose config and tokenizer are needed, not its weights).
            text_weights: See :func:`bench.adapters.backbones.build_text_tower` (leave unset with ``checkpoint``).
            max_length: Caption truncation in tokens.
            embed_dim: Joint space size (default 1024; with ``checkpoint``, its ``embed_size``).
            image_mlp: The residual MLP branch of ``precomp_enc_type = "basic"`` (default off).
            checkpoint: Path of a ``model_best.pth`` saved by woodfrog/vse_infty's ``train.py``
                (see :mod:`bench.adapters.vse_official`).
            allow_pickle: Load a checkpoint (or ``image_weights`` file) that pickles more than tensors and its
                argparse options with ``weights_only=False``. Only for files you trust.
        """
        if checkpoint is not None:
            from bench.adapters.vse_official import build_from_official

            return build_from_official(
                cls, checkpoint, image_backbone=image_backbone, image_weights=image_weights,
                text_backbone=text_backbone, text_weights=text_weights, max_length=max_length, embed_dim=embed_dim,
                image_mlp=image_mlp, allow_pickle=allow_pickle,
            )  # fmt: skip
        image = build_timm_tower(image_backbone or "tf_efficientnet_lite0", image_weights, allow_pickle)
        text = build_text_tower(text_backbone or "all-MiniLM-L6-v2", max_length, text_weights)
        return cls(image, text, 1024 if embed_dim is None else embed_dim, bool(image_mlp))

    def embed_image(self, feats: Features) -> torch.Tensor:
        return self.head["image"](feats["grid"])

    def embed_text(self, feats: Features) -> torch.Tensor:
        return self.head["text"](feats["tokens"], feats["mask"])
