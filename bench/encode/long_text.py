"""Captions longer than a model's text context: an explicit rule per dataset (``long_text`` in its table), recorded.

* ``truncate`` (the default): the tokenizer cuts each caption at the model's context, as open_clip, CLIP_benchmark and
  Long-CLIP's baselines do. The record's ``long_text`` says how many captions were cut.
* ``sentences``: each caption is split into sentences, every sentence is embedded (and cut, should one alone exceed
  the context), and the caption's embedding is the mean of its L2-normalised sentence embeddings (normalised again
  by the scorer). The record says how many sentences there were and how many of them were cut.

The counts need the adapter's tokenizer (:class:`~bench.adapters.protocol.TextContext`); an adapter without one
records the rule alone.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.adapters.protocol import Adapter, TextContext
from bench.data.base import RetrievalSplit

__all__ = ["LONG_TEXT_RULES", "context_report", "pool_sentences", "sentence_split", "sentences"]

LONG_TEXT_RULES = ("truncate", "sentences")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")


def sentences(caption: str) -> list[str]:
    """The sentences of ``caption``: split after ``.``, ``!`` or ``?`` followed by white space; never empty."""
    parts = [p.strip() for p in _SENTENCE_END.split(caption.strip())]
    return [p for p in parts if p] or [caption.strip()]


def sentence_split(split: RetrievalSplit) -> tuple[RetrievalSplit, np.ndarray]:
    """``split`` with one caption row per sentence (each on its caption's image), and int64 ``[n_sentences]``: the
    caption row each sentence came from."""
    texts: list[str] = []
    owner: list[int] = []
    for j, caption in enumerate(split.captions):
        parts = sentences(caption)
        texts.extend(parts)
        owner.extend([j] * len(parts))
    rows = np.asarray(owner, dtype=np.int64)
    out = replace(split, captions=texts, caption_to_image=split.caption_to_image[rows], caption_ids=None,
                  split=f"{split.split}-sentences", _fingerprint=[])  # fmt: skip
    return out, rows


def pool_sentences(emb: torch.Tensor, owner: np.ndarray, n_captions: int) -> torch.Tensor:
    """Each caption's mean of its L2-normalised sentence embeddings ``[n_captions, D]`` (float32)."""
    unit = F.normalize(emb.float(), dim=-1)
    index = torch.from_numpy(owner).to(unit.device)
    out = torch.zeros((n_captions, unit.shape[1]), dtype=unit.dtype, device=unit.device).index_add_(0, index, unit)
    counts = torch.bincount(index, minlength=n_captions).clamp_min(1).to(unit.dtype)
    return out / counts[:, None]


def context_report(adapter: Adapter, texts: list[str], rule: str) -> dict[str, Any]:
    """The record's ``long_text``: the rule, the text context, how many of ``texts`` (captions, or sentences under
    ``sentences``) exceed it and their share; the rule alone for an adapter that cannot count its tokens."""
    out: dict[str, Any] = {"rule": rule}
    if not isinstance(adapter, TextContext) or not texts:
        return out
    counted = adapter.text_lengths(texts)
    if counted is None:
        return out
    lengths, context = counted
    over = int(np.sum(np.asarray(lengths) > context))
    unit = "sentences" if rule == "sentences" else "captions"
    out.update({"context": int(context), unit: len(texts), "truncated": over, "share": over / len(texts)})
    return out
