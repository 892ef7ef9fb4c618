"""Unicom ViTs (deepglint/unicom), the CUSA paper's image teacher, built as the reference builds them.

The architecture follows ``unicom/vision_transformer.py`` so that the released checkpoints (``FP16-ViT-B-32.pt``
...) load with ``strict=True`` and ``weights_only=True``: a patch embedding and learned positions with **no class
token**, pre-norm blocks whose attention has a ``qkv`` projection **without bias** and whose MLP uses **ReLU6**, a
final LayerNorm, and the ``feature`` head (flattened tokens -> Linear -> BatchNorm1d -> Linear -> BatchNorm1d) that
gives Unicom's embedding. Images get CLIP's preprocessing (bicubic resize of the short side, centre crop, CLIP mean
and std).

As a teacher (``[teachers] image_model = "unicom:ViT-B/32"``, ``image_weights = "<checkpoint>"``):
``image_mode = "patchflat"`` stores the final-LayerNorm tokens flattened, 49 x 768 = 37,632 values for ViT-B/32,
exactly what the reference's ``forward_features`` stores; ``"pooled"`` stores the ``feature`` head's embedding.
The weights are not on PyPI, so they must be a local file (or ``random`` in tests).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench.adapters.protocol import Features
from bench.adapters.weights import load_checkpoint
from torch import nn

from bench.errors import ConfigError, WeightsUnavailableError

__all__ = ["UNICOM_ARCHS", "UnicomImageTower", "UnicomViT", "build_unicom_tower"]

# name -> (input size, patch, width, embedding size, depth, heads), as unicom's build_model defines them.
UNICOM_ARCHS: dict[str, tuple[int, int, int, int, int, int]] = {
    "ViT-B/32": (224, 32, 768, 512, 12, 12),
    "ViT-B/16": (224, 16, 768, 768, 12, 12),
    "ViT-L/14": (224, 14, 1024, 768, 24, 16),
    "ViT-L/14@336px": (336, 14, 1024, 768, 24, 16),
}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class _PatchEmbed(nn.Module):
    def __init__(self, size: int, patch: int, width: int) -> None:
        super().__init__()
        self.num_patches = (size // patch) ** 2
        self.proj = nn.Conv2d(3, width, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).float()
        weights = ((q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5).softmax(dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, n, d).to(x.dtype))


class _Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(width, hidden), nn.ReLU6(), nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn, self.mlp = _Attention(width, heads), _Mlp(width, 4 * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class UnicomViT(nn.Module):
    """A Unicom vision transformer with the reference's parameter names (so its checkpoints load strictly)."""

    def __init__(self, size: int = 224, patch: int = 32, width: int = 768, embedding: int = 512, depth: int = 12,
                 heads: int = 12) -> None:  # fmt: skip
        super().__init__()
        self.width = width
        self.patch_embed = _PatchEmbed(size, patch, width)
        n = self.patch_embed.num_patches
        self.pos_embed = nn.Parameter(torch.zeros(1, n, width))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList([_Block(width, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.feature = nn.Sequential(
            nn.Linear(width * n, width, bias=False),
            nn.BatchNorm1d(width, eps=2e-5),
            nn.Linear(width, embedding, bias=False),
            nn.BatchNorm1d(embedding, eps=2e-5),
        )
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The final-LayerNorm tokens ``[B, N, width]`` (no class token)."""
        x = self.patch_embed(images) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x.float())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Unicom's embedding ``[B, embedding]``."""
        return self.feature(self.forward_tokens(images).flatten(1))


class UnicomImageTower(nn.Module):
    """A Unicom ViT as an image tower of the teachers (``grid``: its tokens; ``pool``: its embedding)."""

    def __init__(self, model: UnicomViT, name: str, weights: str, size: int) -> None:
        super().__init__()
        self.model, self.name, self.weights, self.size = model, name, weights, size
        self.num_features = model.width

    def transform(self) -> Callable[[Any], torch.Tensor]:
        """CLIP's preprocessing at the model's input size."""
        from torchvision import transforms as T

        return T.Compose([
            T.Resize(self.size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(self.size),
            T.Lambda(lambda im: im.convert("RGB")), T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD),
        ])  # fmt: skip

    def transform_key(self) -> str:
        """The preprocessing, part of feature-cache keys."""
        return f"clip-bicubic-{self.size}"

    def cache_key(self) -> str:
        """Name, weights and preprocessing: the stage-1 cache key of this tower."""
        return f"unicom:{self.name}:{self.weights}:{self.transform_key()}"

    def forward(self, images: torch.Tensor) -> Features:
        return {"grid": self.model.forward_tokens(images)}

    def pool(self, feats: Features) -> torch.Tensor:
        """Unicom's embedding from the tokens (the ``feature`` head)."""
        return self.model.feature(feats["grid"].flatten(1))


def build_unicom_tower(name: str, weights: str, allow_pickle: bool = False) -> UnicomImageTower:
    """A Unicom ViT (``ViT-B/32``, ``ViT-B/16``, ``ViT-L/14``, ``ViT-L/14@336px``) with its released weights from a
    local file (``weights_only=True`` unless ``allow_pickle``), or ``random`` ones for tests.

    Raises:
        ConfigError: an unknown architecture, or a file that is not a checkpoint of it.
        WeightsUnavailableError: no local file (Unicom's weights are not on PyPI).
    """
    if name not in UNICOM_ARCHS:
        raise ConfigError(f"unicom: unknown architecture {name!r}; known: {', '.join(UNICOM_ARCHS)}")
    size, patch, width, embedding, depth, heads = UNICOM_ARCHS[name]
    model = UnicomViT(size, patch, width, embedding, depth, heads)
    if weights != "random":
        path = Path(weights).expanduser()
        if weights in ("auto", "hub") or not path.is_file():
            raise WeightsUnavailableError(
                f"weights unavailable: unicom {name} (not on PyPI); set [teachers] image_weights to the released "
                f"checkpoint file (deepglint/unicom, e.g. FP16-{name.replace('/', '-')}.pt)"
            )
        sd = load_checkpoint(path, allow_pickle=allow_pickle)
        sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0].strip()
            raise ConfigError(f"{path}: not a Unicom {name} checkpoint ({first})") from None
    return UnicomImageTower(model.float().eval(), name, weights, size)
