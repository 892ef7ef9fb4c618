"""The stage-1 feature cache: a frozen backbone's features of a split, computed once and kept on disk.

Features are cached under ``<work_dir>/features/`` in a file whose name hashes the tower's key, a fingerprint of its
weights, the split's content, the encoding precision and the dtype the features are stored in: a changed checkpoint,
transform, tokenizer, dataset file or precision never reuses stale rows, and several methods or adapters sharing a
frozen backbone encode once. A file that is unreadable or does not match the split is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.adapters.protocol import Adapter
from bench.atomic import atomic_torch_save
from bench.data.base import RetrievalSplit
from bench.encode.features import (
    FeatureSet,
    encoding_precision,
    extract_image_features,
    extract_text_features,
    storage_dtype,
)
from bench.encode.refresh import must_rebuild

__all__ = ["backbone_fingerprint", "cache_path", "cached_features", "load_or_compute"]

log = logging.getLogger(__name__)


def backbone_fingerprint(module: torch.nn.Module) -> str:
    """A hash of every parameter and buffer of ``module`` (names, shapes and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(module.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _valid(feats: Any, n: int) -> bool:
    return (
        isinstance(feats, dict)
        and bool(feats)
        and all(isinstance(v, torch.Tensor) and v.shape[0] == n for v in feats.values())
    )



def cache_path(
    adapter: Adapter, split: RetrievalSplit, modality: str, cache_dir: Path, precision: str = "fp32",
    stored: str | None = None,
) -> Path:  # fmt: skip
    """Where ``modality``'s stage-1 features of ``split`` are cached: keyed by the tower's key and weights, by the
    split's content for that modality, by the encoding precision (:func:`encoding_precision`) and by the dtype the
    features are stored in (``stored``, :func:`storage_dtype`; default: the encoding precision)."""
    part = "images" if modality == "image" else "captions"
    weights = backbone_fingerprint(adapter.backbone_part(modality))
    blob = "|".join([adapter.modality_key(modality), weights, split.fingerprint(part), precision,
                     f"stored={stored or precision}"])  # fmt: skip
    digest = hashlib.sha256(blob.encode()).hexdigest()[:20]
    return Path(cache_dir) / f"{split.dataset}-{split.split}-{modality}-{digest}.pt"


def load_or_compute(path: Path | None, n: int, compute: Callable[[], FeatureSet]) -> FeatureSet:
    """The cached features at ``path`` when valid for ``n`` rows, else ``compute()`` written there (always computed
    the first time a forced run asks: :mod:`bench.encode.refresh`)."""
    rebuild = path is not None and must_rebuild(path)
    if path is not None and path.is_file() and not rebuild:
        try:
            feats = torch.load(path, map_location="cpu", weights_only=True)
            if _valid(feats, n):
                log.info("backbone features from cache %s", path)
                return feats
            log.warning("feature cache %s does not match the split (%d rows expected); rebuilding", path, n)
        except Exception as e:  # a truncated or foreign file: rebuild it, never trust it
            log.warning("feature cache %s unreadable (%s); rebuilding", path, e)
    feats = compute()
    if path is not None:
        atomic_torch_save(feats, path)
    return feats


def cached_features(
    adapter: Adapter,
    split: RetrievalSplit,
    cache_dir: Path | None,
    *,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    precision: str = "fp32",
    feature_dtype: str = "auto",
) -> tuple[FeatureSet, FeatureSet]:
    """Stage-1 image and caption features of ``split``, read from / written to ``cache_dir`` when given.

    Each modality is cached on its own, so two adapters sharing one tower share its features. A cache file that is
    unreadable or whose row count does not match the split is rebuilt, never used. ``precision``
    (:func:`encoding_precision`) and ``feature_dtype`` (:func:`storage_dtype`) are part of the key: features encoded
    or stored another way are never served.
    """
    precision = encoding_precision(device, precision)
    stored = storage_dtype(precision, feature_dtype)
    img_path = cache_path(adapter, split, "image", cache_dir, precision, stored) if cache_dir is not None else None
    txt_path = cache_path(adapter, split, "text", cache_dir, precision, stored) if cache_dir is not None else None
    img = load_or_compute(
        img_path,
        split.n_images,
        lambda: extract_image_features(
            adapter,
            split,
            device=device,
            batch_size=batch_size,
            num_workers=num_workers,
            progress=progress,
            precision=precision,
            feature_dtype=stored,
        ),
    )
    txt = load_or_compute(
        txt_path,
        split.n_captions,
        lambda: extract_text_features(adapter, split, device=device, batch_size=2 * batch_size, progress=progress,
                                      precision=precision, feature_dtype=stored),  # fmt: skip
    )
    return img, txt
