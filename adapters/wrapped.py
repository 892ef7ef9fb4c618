"""Any model object with ``encode_image`` / ``encode_text`` as an adapter, for :func:`bench.evaluate` from Python.

The object is duck-typed: an open_clip or OpenAI CLIP model, a transformers wrapper, or a user's own class. Nothing
is subclassed and nothing is registered: this adapter is built around an object, never from a config table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from bench.adapters.protocol import AdapterBase, Features
from torch import nn

__all__ = ["WrappedModel"]


class WrappedModel(AdapterBase):
    """Stage 1 is the whole model (``{"emb": model.encode_image(images)}``); the head is empty.

    Args:
        model: Has ``encode_image(images [B, 3, H, W]) -> [B, D]`` and ``encode_text(tokens) -> [B, D]``.
        transform: PIL image -> ``[3, H, W]`` tensor (open_clip's ``preprocess``).
        tokenizer: ``list[str]`` -> a token tensor (open_clip's tokenizer), which ``encode_text`` receives as is, or a
            mapping of tensors (a transformers tokenizer), which ``encode_text`` receives as keyword arguments.
        joint_space: False for towers whose image and text embeddings are not comparable.
    """

    def __init__(
        self,
        model: Any,
        transform: Callable[[Any], torch.Tensor],
        tokenizer: Callable[[list[str]], Any],
        *,
        joint_space: bool = True,
    ) -> None:
        super().__init__()
        for hook in ("encode_image", "encode_text"):
            if not callable(getattr(model, hook, None)):
                raise TypeError(f"{type(model).__qualname__} has no {hook}(); bench.evaluate needs both")
        self.backbone = model if isinstance(model, nn.Module) else nn.Module()  # so .to(device) moves its weights
        self.head = nn.Identity()
        self._model, self._transform, self._tokenizer = model, transform, tokenizer
        self.joint_space = joint_space
        self.name = type(model).__qualname__

    @classmethod
    def build(cls, **options: Any) -> WrappedModel:
        raise TypeError("WrappedModel wraps a Python object; construct it with WrappedModel(model, transform, ...)")

    def image_transform(self) -> Callable[[Any], torch.Tensor]:
        return self._transform

    def tokenize(self, texts: Sequence[str]) -> Features:
        out = self._tokenizer(list(texts))
        if isinstance(out, torch.Tensor):
            return {"tokens": out}
        if isinstance(out, Mapping):
            return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}
        raise TypeError(f"the tokenizer returned {type(out).__name__}; expected a tensor or a mapping of tensors")

    def image_features(self, images: torch.Tensor) -> Features:
        return {"emb": self._model.encode_image(images)}

    def text_features(self, tokens: Features) -> Features:
        if set(tokens) == {"tokens"}:  # what tokenize() made of a plain token tensor
            return {"emb": self._model.encode_text(tokens["tokens"])}
        return {"emb": self._model.encode_text(**tokens)}

    def embed_image(self, feats: Features) -> torch.Tensor:
        return feats["emb"]

    def embed_text(self, feats: Features) -> torch.Tensor:
        return feats["emb"]

    def backbone_key(self) -> str:
        return f"python:{type(self._model).__module__}.{type(self._model).__qualname__}"

    def forward(self, *args: Any, **kwargs: Any) -> Any:  # nn.Module's; the harness calls the stage methods
        raise NotImplementedError("call encode_image / encode_text")
