"""BLIP image-text retrieval models through transformers (``BlipForImageTextRetrieval``).

``checkpoint`` is a hub name such as ``Salesforce/blip-itm-base-coco`` (needs network or a cached copy) or a local
folder written by ``save_pretrained`` holding the model and its ``BlipProcessor``.

Stage 1 is BLIP's ITC (contrastive) path, exactly what ``BlipForImageTextRetrieval.forward(use_itm_head=False)``
computes before it normalises: ``vision_proj(vision_model(pixel_values)[0][:, 0])`` for images and
``text_proj(text_encoder(input_ids, attention_mask)[0][:, 0])`` for captions. The model is the backbone and the head
is empty, so fine-tuning BLIP trains the ITC path (``train.freeze_backbone = false``).

The adapter also declares pair scoring for two-stage retrieval (:mod:`bench.evaluation.rerank`):
:meth:`Blip.pair_image_state`
gives the vision tokens of a batch of images and :meth:`Blip.pair_scores` the ITM score of row-aligned
(image, caption) pairs, defined as the ITM head's logit difference ``logit[match] - logit[no match]``. That is the
log-odds of "match": it ranks pairs exactly as the softmax probability does, but never saturates to a tie at 1.0,
which the harness's pessimistic tie rule would punish. (LAVIS adds the raw match logit ``logit[:, 1]`` to the ITC
cosine instead; the two differ by the no-match logit.) The ITM parts (cross-attention and ``itm_head``) are frozen:
only re-ranking reads them, and fine-tuning the ITC path would give them no gradient anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from bench.adapters.hf_loading import ProcessorTransform, hf_source, loading_errors
from bench.adapters.protocol import Features
from bench.adapters.registry import register_adapter
from bench.adapters.whole import WholeModelAdapter
from torch import nn

from bench.errors import ConfigError

__all__ = ["Blip"]


def _load(checkpoint: str) -> tuple[nn.Module, Any]:
    """``(model, processor)`` from a local folder or a hub name; errors name the checkpoint."""
    from transformers import BlipForImageTextRetrieval, BlipProcessor

    source, folder = hf_source(checkpoint)
    hint = "BlipForImageTextRetrieval.save_pretrained and its BlipProcessor"
    with loading_errors(checkpoint, folder, "BLIP retrieval", hint):
        model, info = BlipForImageTextRetrieval.from_pretrained(source, output_loading_info=True, dtype=torch.float32)
        processor = BlipProcessor.from_pretrained(source)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        # A captioning or VQA checkpoint loads with random ITM/ITC heads: refuse rather than score noise.
        raise ConfigError(
            f"blip checkpoint {checkpoint}: no weights for {missing[0]!r} ({len(missing)} missing); use an "
            "image-text retrieval checkpoint such as Salesforce/blip-itm-base-coco"
        )
    return model, processor


@register_adapter("blip")
class Blip(WholeModelAdapter):
    """A transformers ``BlipForImageTextRetrieval`` behind the adapter interface, with ITM pair scoring.

    Args:
        model: The retrieval model.
        processor: Its ``BlipProcessor`` (image processor and tokenizer).
        key: Identifies the weights and text truncation for the feature cache.
        max_length: Caption truncation length in tokens.
    """

    default_loss = "infonce"
    pair_score_kind: ClassVar[str] = "itm logit difference (match - no match)"

    def __init__(self, model: nn.Module, processor: Any, key: str, max_length: int) -> None:
        super().__init__()
        self.backbone = model
        self.head = nn.Module()
        self._processor, self._key, self.max_length = processor, key, int(max_length)
        self.embed_dim = int(model.config.image_text_hidden_size)
        for layer in model.text_encoder.encoder.layer:
            if getattr(layer, "crossattention", None) is not None:
                layer.crossattention.requires_grad_(False)
        model.itm_head.requires_grad_(False)

    @classmethod
    def build(cls, *, checkpoint: str, max_length: int = 35) -> Blip:
        """Load ``checkpoint`` (hub name or local folder); ``max_length`` is LAVIS's retrieval truncation (35)."""
        if not isinstance(max_length, int) or max_length < 2:
            raise ConfigError(f"blip max_length must be an integer >= 2, got {max_length!r}")
        model, processor = _load(checkpoint)
        limit = int(model.config.text_config.max_position_embeddings)
        if max_length > limit:
            raise ConfigError(f"blip max_length {max_length} exceeds the model's {limit} positions ({checkpoint})")
        return cls(model.eval(), processor, f"hf-blip:{checkpoint}:max_length={max_length}", max_length)

    def image_transform(self) -> Callable[[Any], torch.Tensor]:
        return ProcessorTransform(self._processor.image_processor)

    def tokenize(self, texts: Sequence[str]) -> Features:
        enc = self._processor.tokenizer(
            list(texts), padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def image_features(self, images: torch.Tensor) -> Features:
        m = self.backbone
        return {"emb": m.vision_proj(m.vision_model(pixel_values=images).last_hidden_state[:, 0, :])}

    def text_features(self, tokens: Features) -> Features:
        m = self.backbone
        out = m.text_encoder(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return {"emb": m.text_proj(out.last_hidden_state[:, 0, :])}

    # Pair scoring (bench.evaluation.rerank)

    def pair_image_state(self, images: torch.Tensor) -> torch.Tensor:
        """Vision tokens ``[B, N, H]`` of transformed images ``[B, 3, H, W]``: what ITM cross-attends to."""
        return self.backbone.vision_model(pixel_values=images).last_hidden_state

    def pair_scores(self, image_state: torch.Tensor, tokens: Features) -> torch.Tensor:
        """ITM score ``[B]`` of row-aligned pairs: image tokens ``[B, N, H]`` and tokenised captions ``[B, L]``.

        The score is ``itm_head(...)[:, 1] - itm_head(...)[:, 0]``, the log-odds of "match", computed as
        ``BlipForImageTextRetrieval.forward(use_itm_head=True)`` does (all image tokens attended to).
        """
        if image_state.shape[0] != tokens["input_ids"].shape[0]:
            raise ValueError(
                f"pair_scores needs row-aligned pairs: {image_state.shape[0]} images, "
                f"{tokens['input_ids'].shape[0]} captions"
            )
        m = self.backbone
        image_mask = torch.ones(image_state.shape[:-1], dtype=torch.long, device=image_state.device)
        out = m.text_encoder(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            encoder_hidden_states=image_state,
            encoder_attention_mask=image_mask,
        )
        logits = m.itm_head(out.last_hidden_state[:, 0, :])
        return logits[:, 1] - logits[:, 0]
