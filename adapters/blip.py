"""BLIP image-text retrieval models through transformers (``BlipForImageTextRetrieval``).

``checkpoint`` is a hub name such as ``Salesforce/blip-itm-base-coco`` (needs network or a cached copy) or a local
folder written by ``save_pretrained`` holding the model and its ``BlipProcessor``.

Stage 1 is BLIP's ITC (contrastive) path, exactly what ``BlipForImageTextRetrieval.forward(use_itm_head=False)``
computes before it normalises: ``vision_proj(vision_model(pixel_values)[0][:, 0])`` for images and
``text_proj(text_encoder(input_ids, attention_mask)[0][:, 0])`` for captions. The model is the backbone and the head
is empty, so fine-tuning BLIP trains the ITC path (``train.freeze_backbone = false``).

The adapter also declares pair scoring for two-stage retrieval (:mod:`bench.evaluation.rerank`):
:meth:`Blip.pair_image_state` gives the vision tokens of a batch of images and :meth:`Blip.pair_scores` the ITM
score of row-aligned (image, caption) pairs, as BLIP and LAVIS compute it (``blip_retrieval.py``,
``compute_sim_matrix``):

* the caption's first token is BLIP's ``[ENC]`` (``itm_token = "enc"``; the id from the checkpoint's own tokenizer,
  or, for a tokenizer that does not list it, the row after ``[DEC]`` that BLIP appends to BERT's vocabulary), not
  the ``[CLS]`` that transformers' ``BlipForImageTextRetrieval`` feeds (``itm_token = "cls"``; transformers#25629);
* the score is the ITM head's match logit ``logit[:, 1]`` (``itm_score = "match"``), which re-ranking adds to the
  ITC cosine as LAVIS does (``score + topk_sim``); ``itm_score = "logodds"`` gives ``logit[:, 1] - logit[:, 0]``.

The ITM parts (cross-attention and ``itm_head``) are frozen: only re-ranking reads them, and fine-tuning the ITC
path would give them no gradient anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from bench.adapters.hf_loading import ProcessorTransform, export_pretrained, hf_source, loading_errors
from bench.adapters.protocol import Exported, Features, hf_text_lengths
from bench.adapters.registry import register_adapter
from bench.adapters.whole import WholeModelAdapter
from torch import nn

from bench.errors import ConfigError

__all__ = ["Blip", "enc_token_id"]


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
    ITM_TOKENS: ClassVar[tuple[str, ...]] = ("enc", "cls")
    ITM_SCORES: ClassVar[tuple[str, ...]] = ("match", "logodds")

    def __init__(
        self, model: nn.Module, processor: Any, key: str, max_length: int, itm_token: str = "enc",
        itm_score: str = "match",
    ) -> None:  # fmt: skip
        super().__init__()
        self.backbone = model
        self.head = nn.Module()
        self._processor, self._key, self.max_length = processor, key, int(max_length)
        if itm_token not in self.ITM_TOKENS:
            raise ConfigError(f"blip itm_token must be one of {', '.join(self.ITM_TOKENS)}, got {itm_token!r}")
        if itm_score not in self.ITM_SCORES:
            raise ConfigError(f"blip itm_score must be one of {', '.join(self.ITM_SCORES)}, got {itm_score!r}")
        self.itm_score = itm_score
        self.itm_first_id = enc_token_id(processor.tokenizer, model.config.text_config) if itm_token == "enc" else None
        first = "[CLS]" if self.itm_first_id is None else f"[ENC] (id {self.itm_first_id})"
        score = "match logit" if itm_score == "match" else "log-odds (match - no match)"
        self.pair_score_kind = f"itm {score}, first token {first}"
        self.embed_dim = int(model.config.image_text_hidden_size)
        for layer in model.text_encoder.encoder.layer:
            if getattr(layer, "crossattention", None) is not None:
                layer.crossattention.requires_grad_(False)
        model.itm_head.requires_grad_(False)

    @classmethod
    def build(cls, *, checkpoint: str, max_length: int = 35, itm_token: str = "enc", itm_score: str = "match") -> Blip:
        """Load ``checkpoint`` (hub name or local folder); ``max_length`` is LAVIS's retrieval truncation (35);
        ``itm_token`` and ``itm_score`` choose the ITM input and score (BLIP's by default, see the module)."""
        if not isinstance(max_length, int) or max_length < 2:
            raise ConfigError(f"blip max_length must be an integer >= 2, got {max_length!r}")
        model, processor = _load(checkpoint)
        limit = int(model.config.text_config.max_position_embeddings)
        if max_length > limit:
            raise ConfigError(f"blip max_length {max_length} exceeds the model's {limit} positions ({checkpoint})")
        key = f"hf-blip:{checkpoint}:max_length={max_length}"
        return cls(model.eval(), processor, key, max_length, itm_token=itm_token, itm_score=itm_score)

    def export_native(self, out: Path) -> Exported:
        """A ``save_pretrained`` folder: the model (safetensors and config) and its processor."""
        return export_pretrained(self.backbone, self._processor, out, "blip")

    def image_transform(self) -> Callable[[Any], torch.Tensor]:
        return ProcessorTransform(self._processor.image_processor)

    def tokenize(self, texts: Sequence[str]) -> Features:
        enc = self._processor.tokenizer(
            list(texts), padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def text_lengths(self, texts: Sequence[str]) -> tuple[list[int], int]:
        """Tokens each text needs, and ``max_length`` (:class:`~bench.adapters.protocol.TextContext`)."""
        return hf_text_lengths(self._processor.tokenizer, texts, self.max_length)

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

        As BLIP scores a pair: the caption's first token replaced by ``[ENC]`` (unless ``itm_token = "cls"``), all
        image tokens attended to, and the ITM head's match logit (or, with ``itm_score = "logodds"``, the match
        minus the no-match logit).
        """
        if image_state.shape[0] != tokens["input_ids"].shape[0]:
            raise ValueError(
                f"pair_scores needs row-aligned pairs: {image_state.shape[0]} images, "
                f"{tokens['input_ids'].shape[0]} captions"
            )
        m = self.backbone
        image_mask = torch.ones(image_state.shape[:-1], dtype=torch.long, device=image_state.device)
        input_ids = tokens["input_ids"]
        if self.itm_first_id is not None:
            input_ids = input_ids.clone()
            input_ids[:, 0] = self.itm_first_id
        out = m.text_encoder(
            input_ids=input_ids,
            attention_mask=tokens["attention_mask"],
            encoder_hidden_states=image_state,
            encoder_attention_mask=image_mask,
        )
        logits = m.itm_head(out.last_hidden_state[:, 0, :])
        return logits[:, 1] if self.itm_score == "match" else logits[:, 1] - logits[:, 0]


def enc_token_id(tokenizer: Any, text_config: Any) -> int:
    """BLIP's ``[ENC]`` id: the tokenizer's own, or, where the tokenizer does not list it (transformers' BLIP
    checkpoints), the row BLIP's layout puts after ``[DEC]`` (the text config's ``bos_token_id``) at the end of
    BERT's vocabulary.

    Raises:
        ConfigError: neither is there (``itm_token = "cls"`` scores as transformers does).
    """
    vocab = tokenizer.get_vocab()
    if "[ENC]" in vocab:
        return int(vocab["[ENC]"])
    n_vocab, size = len(tokenizer), int(text_config.vocab_size)
    bos = getattr(text_config, "bos_token_id", None)
    if bos == n_vocab and size == n_vocab + 2:  # BERT's vocabulary, then [DEC] and [ENC], as BLIP adds them
        return n_vocab + 1
    raise ConfigError(
        f"blip: the tokenizer has no [ENC] token and the text model's vocabulary ({size} rows, bos {bos}, tokenizer "
        f"{n_vocab}) is not BLIP's layout; set itm_token = \"cls\" to score pairs as transformers does"
    )
