"""CLIP and SigLIP dual encoders through transformers (``CLIPModel``, ``SiglipModel``).

``checkpoint`` is a hub name (``openai/clip-vit-base-patch32``, ``google/siglip-base-patch16-224``; needs network or
a cached copy) or a local folder written by ``save_pretrained`` holding the model and its processor. Stage 1 is the
model's own ``get_image_features`` / ``get_text_features`` (projected, unnormalised); the head is empty, so
fine-tuning trains the towers (``train.freeze_backbone = false``), as with the open_clip ``clip`` family.

Captions are tokenised as each family was trained: CLIP pads to the longest caption (its causal text tower pools the
end-of-text token, so padding never changes a row); SigLIP pads to its full context (it pools the last position, and
the reference usage is ``padding="max_length"``). Both truncate at ``max_length`` (default: the text tower's
context), and the attention mask is passed only where the tokenizer produces one.

Fine-tuning with ``[train] loss = "auto"`` uses each family's own base loss: InfoNCE for CLIP, the sigmoid loss for
SigLIP, starting from the checkpoint's ``logit_scale`` and ``logit_bias``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from bench.adapters.hf_loading import ProcessorTransform, export_pretrained, hf_source, loading_errors
from bench.adapters.protocol import Exported, Features, hf_text_lengths
from bench.adapters.registry import register_adapter
from bench.adapters.whole import WholeModelAdapter
from torch import nn

from bench.errors import ConfigError

__all__ = ["HFClip"]

_FAMILIES = ("clip", "siglip")


def _pooled(out: Any) -> torch.Tensor:
    # transformers 5 returns a BaseModelOutputWithPooling (projected features in pooler_output); 4.x a tensor.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _load(checkpoint: str) -> tuple[nn.Module, Any]:
    from transformers import AutoConfig, AutoModel, AutoProcessor

    source, folder = hf_source(checkpoint)
    with loading_errors(checkpoint, folder, "CLIP/SigLIP", "the model and its processor (save_pretrained)"):
        config = AutoConfig.from_pretrained(source)
        if config.model_type not in _FAMILIES:
            raise ConfigError(
                f"hf_clip checkpoint {checkpoint}: model type {config.model_type!r} is not one of "
                f"{', '.join(_FAMILIES)}"
            )
        model = AutoModel.from_pretrained(source, dtype=torch.float32)
        processor = AutoProcessor.from_pretrained(source)
    return model, processor


@register_adapter("hf_clip")
class HFClip(WholeModelAdapter):
    """A transformers ``CLIPModel`` or ``SiglipModel`` behind the adapter interface.

    Args:
        model: The dual encoder.
        processor: Its processor (image processor and tokenizer).
        key: Identifies the weights and tokenisation for the feature cache.
        max_length: Caption truncation length in tokens.
    """

    default_loss = "infonce"

    def __init__(self, model: nn.Module, processor: Any, key: str, max_length: int) -> None:
        super().__init__()
        self.backbone = model
        self.head = nn.Module()
        self._processor, self._key, self.max_length = processor, key, int(max_length)
        self.family = str(model.config.model_type)
        text_cfg = model.config.text_config
        # CLIP projects both towers to projection_dim; SigLIP's text head maps to projection_size (its vision width).
        width = model.config.projection_dim if self.family == "clip" else getattr(text_cfg, "projection_size", None)
        self.embed_dim = int(width or text_cfg.hidden_size)
        # Fine-tuning starts from the model's own temperature rather than a fresh one.
        if hasattr(model, "logit_scale"):
            self.init_temperature = float(1.0 / model.logit_scale.detach().exp().item())
        # SigLIP fine-tunes with its own sigmoid loss under [train] loss = "auto", from its own scale and bias.
        if getattr(model, "logit_bias", None) is not None:
            self.default_loss = "sigmoid"
            self.init_logit_bias = float(model.logit_bias.detach().reshape(-1)[0])

    @classmethod
    def build(cls, *, checkpoint: str, max_length: int | None = None) -> HFClip:
        """Load ``checkpoint`` (hub name or local folder); ``max_length`` defaults to the text tower's context."""
        model, processor = _load(checkpoint)
        limit = int(model.config.text_config.max_position_embeddings)
        max_length = limit if max_length is None else max_length
        if not isinstance(max_length, int) or not 2 <= max_length <= limit:
            raise ConfigError(
                f"hf_clip max_length must be an integer in [2, {limit}] for {checkpoint}, got {max_length!r}"
            )
        return cls(
            model.eval(), processor, f"hf-{model.config.model_type}:{checkpoint}:max_length={max_length}", max_length
        )

    def export_native(self, out: Path) -> Exported:
        """A ``save_pretrained`` folder: the model (safetensors and config) and its processor."""
        return export_pretrained(self.backbone, self._processor, out, "hf_clip")

    def image_transform(self) -> Callable[[Any], torch.Tensor]:
        return ProcessorTransform(self._processor.image_processor)

    def tokenize(self, texts: Sequence[str]) -> Features:
        padding = "max_length" if self.family == "siglip" else "longest"
        tok = self._processor.tokenizer
        enc = tok(list(texts), padding=padding, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {k: enc[k] for k in ("input_ids", "attention_mask") if k in enc}

    def text_lengths(self, texts: Sequence[str]) -> tuple[list[int], int]:
        """Tokens each text needs, and ``max_length`` (:class:`~bench.adapters.protocol.TextContext`)."""
        return hf_text_lengths(self._processor.tokenizer, texts, self.max_length)

    def image_features(self, images: torch.Tensor) -> Features:
        return {"emb": _pooled(self.backbone.get_image_features(pixel_values=images))}

    def text_features(self, tokens: Features) -> Features:
        return {"emb": _pooled(self.backbone.get_text_features(**tokens))}
