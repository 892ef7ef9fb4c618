"""Base of families whose pretrained model already ends in the joint space (CLIP, BLIP's ITC path, HF CLIP/SigLIP)."""

from __future__ import annotations

import torch
from bench.adapters.protocol import AdapterBase, Features

__all__ = ["WholeModelAdapter"]


class WholeModelAdapter(AdapterBase):
    """Stage 1 is the model's own embedding ``{"emb": [B, D]}``; the head is empty, so fine-tuning trains the model.

    Subclasses set ``backbone`` (the model), ``head`` (an empty module) and ``_key`` (the weights' name or path).
    """

    _key: str = ""

    def embed_image(self, feats: Features) -> torch.Tensor:
        return feats["emb"]

    def embed_text(self, feats: Features) -> torch.Tensor:
        return feats["emb"]

    def backbone_key(self) -> str:
        return self._key
