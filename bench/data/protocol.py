"""Caption protocols the anchors differ on, as options of any image-text dataset table.

* ``pre_caption = true``: the CUSA reference's caption normalisation (``dataset/utils.py``): lower-case; the
  punctuation ``, . ' ! ? " ( ) * # : ; ~`` and the characters ``-`` and ``/`` become spaces; ``<person>`` becomes
  ``person``; runs of spaces collapse; cut to ``max_words`` words (64, the reference's default). Raw captions stay
  the default (CLIP_benchmark, open_clip).
* ``captions_per_image = 5``: keep only each image's first five captions, as VSE∞ (``evaluation.py``) and ECCV
  Caption (25,000 COCO 5K captions) do; 0, the default, keeps all (25,010 at COCO 5K, as ALBEF, LAVIS,
  CLIP_benchmark and CUSA).
* ``long_text = "sentences"``: a caption longer than a model's text context is scored as the mean of its sentences'
  normalised embeddings instead of being cut at the context (``"truncate"``, the default); applied when the split
  is scored (:mod:`bench.encode.long_text`), and recorded.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import numpy as np

from bench.data.base import RetrievalSplit
from bench.errors import ConfigError, DataError

__all__ = ["PROTOCOL_OPTIONS", "apply_protocol", "pre_caption"]

PROTOCOL_OPTIONS: dict[str, Any] = {"pre_caption": False, "max_words": 64, "captions_per_image": 0,
                                    "long_text": "truncate"}  # fmt: skip

_PUNCTUATION = re.compile(r"[,.'!?\"()*#:;~]")
_SPACES = re.compile(r"\s{2,}")


def pre_caption(caption: str, max_words: int = 64) -> str:
    """The CUSA reference's normalisation of one caption (see the module docstring); never empty."""
    text = _PUNCTUATION.sub(" ", caption.lower()).replace("-", " ").replace("/", " ").replace("<person>", "person")
    text = _SPACES.sub(" ", text).rstrip("\n").strip(" ")
    words = text.split(" ")
    if len(words) > max_words:
        text = " ".join(words[:max_words])
    return text


def apply_protocol(split: RetrievalSplit, options: dict[str, Any], where: str) -> RetrievalSplit:
    """``split`` with the protocol ``options`` applied (none given: unchanged)."""
    max_words = options.get("max_words", PROTOCOL_OPTIONS["max_words"])
    per_image = options.get("captions_per_image", PROTOCOL_OPTIONS["captions_per_image"])
    if max_words < 1:
        raise ConfigError(f"{where}: max_words must be >= 1, got {max_words}")
    if per_image < 0:
        raise ConfigError(f"{where}: captions_per_image must be >= 0 (0 = all), got {per_image}")
    rule = options.get("long_text", PROTOCOL_OPTIONS["long_text"])
    if rule not in ("truncate", "sentences"):  # applied when the split is scored (bench.encode.long_text)
        raise ConfigError(f'{where}: long_text must be "truncate" or "sentences", got {rule!r}')
    out = split
    if per_image:
        c2i = np.asarray(out.caption_to_image)
        order = np.argsort(c2i, kind="stable")
        first = np.r_[0, np.flatnonzero(np.diff(c2i[order])) + 1]
        position = np.arange(c2i.size) - np.repeat(first, np.diff(np.r_[first, c2i.size]))
        keep = np.sort(order[position < per_image])  # each image's first captions, in file order
        ids = None if out.caption_ids is None else [out.caption_ids[j] for j in keep]
        out = replace(out, captions=[out.captions[j] for j in keep], caption_to_image=c2i[keep], caption_ids=ids,
                      _fingerprint=[])  # fmt: skip
    if options.get("pre_caption", PROTOCOL_OPTIONS["pre_caption"]):
        captions = [pre_caption(c, max_words) for c in out.captions]
        empty = next((j for j, c in enumerate(captions) if not c), None)
        if empty is not None:
            raise DataError(f"{where}: caption {empty} ({out.captions[empty]!r}) is empty after pre_caption")
        out = replace(out, captions=captions, _fingerprint=[])
    return out
