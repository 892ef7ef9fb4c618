"""Stage-1 (backbone) feature extraction over a split, with an on-disk cache, and stage-2 embedding.

The encode loop lives here once, for every adapter (the anchors copy it into each model wrapper). Frozen backbone
features are cached under ``<work_dir>/features/<key>/`` where the key hashes the adapter's ``backbone_key()``, a
fingerprint of the backbone weights, and the split's content fingerprint: a changed checkpoint, transform, tokenizer
or dataset file never reuses stale rows, and several methods or adapters sharing a frozen backbone encode once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from bench.data.base import RetrievalSplit
from bench.protocol import Features

__all__ = [
    "FeatureSet",
    "backbone_fingerprint",
    "embed_features",
    "encode_split",
    "extract_features",
    "iter_image_batches",
]

log = logging.getLogger(__name__)
FeatureSet = dict[str, torch.Tensor]  # batch-first tensors over a whole split, padded along dim 1


class _ImageDataset(Dataset):
    def __init__(self, split: RetrievalSplit, transform: Callable[[Any], torch.Tensor], rows: Any = None) -> None:
        self.split, self.transform = split, transform
        self.rows = list(range(split.n_images)) if rows is None else list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.split.load_image(self.rows[i]))


def iter_image_batches(
    split: RetrievalSplit,
    transform: Callable[[Any], torch.Tensor],
    batch_size: int,
    num_workers: int = 0,
    rows: Any = None,
    pin_memory: bool = False,
) -> Iterator[torch.Tensor]:
    """Transformed image batches ``[B, 3, H, W]`` of ``split`` (all images, or ``rows``), in order."""
    ds = _ImageDataset(split, transform, rows)
    yield from DataLoader(ds, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)


def _pad_cat(chunks: list[Features]) -> FeatureSet:
    out: FeatureSet = {}
    for key in chunks[0]:
        parts = [c[key] for c in chunks]
        if parts[0].ndim >= 2:
            width = max(p.shape[1] for p in parts)
            parts = [F.pad(p, [0, 0] * (p.ndim - 2) + [0, width - p.shape[1]]) for p in parts]
        out[key] = torch.cat(parts)
    return out


def _to(feats: Features, device: torch.device, dtype: torch.dtype | None = None) -> Features:
    return {
        k: v.to(device=device, dtype=dtype if (dtype is not None and v.is_floating_point()) else v.dtype)
        for k, v in feats.items()
    }


def _storage(feats: Features) -> Features:
    # fp16 halves the cache; backbone activations are well inside its range and cosines do not notice.
    return {
        k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu())
        for k, v in feats.items()
    }


@torch.inference_mode()
def extract_features(
    adapter: Any,
    split: RetrievalSplit,
    *,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
) -> tuple[FeatureSet, FeatureSet]:
    """Stage-1 features of every image and caption of ``split`` (on CPU, fp16)."""
    adapter.eval()
    transform = adapter.image_transform()
    img_chunks = []
    bar = tqdm(
        total=split.n_images, desc=f"backbone images {split.dataset}/{split.split}", disable=not progress, leave=False
    )
    for images in iter_image_batches(split, transform, batch_size, num_workers, pin_memory=device.type == "cuda"):
        img_chunks.append(_storage(adapter.image_features(images.to(device, non_blocking=True))))
        bar.update(len(images))
    bar.close()
    txt_chunks = []
    caps = list(split.captions)
    for s in tqdm(
        range(0, len(caps), batch_size * 2),
        desc=f"backbone captions {split.dataset}/{split.split}",
        disable=not progress,
        leave=False,
    ):
        tokens = _to(adapter.tokenize(caps[s : s + batch_size * 2]), device)
        txt_chunks.append(_storage(adapter.text_features(tokens)))
    return _pad_cat(img_chunks), _pad_cat(txt_chunks)


def backbone_fingerprint(module: torch.nn.Module) -> str:
    """A hash of every parameter and buffer of ``module`` (names, shapes and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(module.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _cache_key(adapter: Any, split: RetrievalSplit) -> str:
    blob = f"{adapter.backbone_key()}|{backbone_fingerprint(adapter.backbone)}|{split.fingerprint()}"
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _valid(feats: Any, n: int) -> bool:
    return (
        isinstance(feats, dict)
        and bool(feats)
        and all(isinstance(v, torch.Tensor) and v.shape[0] == n for v in feats.values())
    )


def cached_features(
    adapter: Any,
    split: RetrievalSplit,
    cache_dir: Path | None,
    *,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
) -> tuple[FeatureSet, FeatureSet]:
    """:func:`extract_features`, read from / written to ``cache_dir`` when given.

    A cache file that is unreadable or whose row counts do not match the split is rebuilt, never trusted.
    """
    if cache_dir is None:
        return extract_features(
            adapter, split, device=device, batch_size=batch_size, num_workers=num_workers, progress=progress
        )
    path = Path(cache_dir) / f"{split.dataset}-{split.split}-{_cache_key(adapter, split)}.pt"
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if _valid(blob.get("image"), split.n_images) and _valid(blob.get("text"), split.n_captions):
                log.info("backbone features from cache %s", path)
                return blob["image"], blob["text"]
            log.warning("feature cache %s does not match %s/%s; rebuilding", path, split.dataset, split.split)
        except Exception as e:  # a truncated or foreign file: rebuild it
            log.warning("feature cache %s unreadable (%s); rebuilding", path, e)
    img, txt = extract_features(
        adapter, split, device=device, batch_size=batch_size, num_workers=num_workers, progress=progress
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"image": img, "text": txt}, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return img, txt


def _slice(feats: FeatureSet, idx: Any) -> Features:
    return {k: v[idx] for k, v in feats.items()}


def embed_features(
    embed: Callable[[Features], torch.Tensor],
    feats: FeatureSet,
    *,
    device: torch.device,
    batch_size: int = 512,
) -> torch.Tensor:
    """Stage 2 over a cached feature set: ``[N, D]`` float32 embeddings on CPU."""
    n = next(iter(feats.values())).shape[0]
    out = []
    with torch.inference_mode():
        for s in range(0, n, batch_size):
            out.append(embed(_to(_slice(feats, slice(s, s + batch_size)), device, torch.float32)).float().cpu())
    return torch.cat(out)


@torch.inference_mode()
def encode_split(
    adapter: Any,
    split: RetrievalSplit,
    *,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
    features: tuple[FeatureSet, FeatureSet] | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and caption embeddings of ``split`` (float32, CPU, unnormalised).

    With ``features`` (cached stage-1 outputs) only the heads run; otherwise images and captions go end to end.
    """
    adapter.eval()
    if features is not None:
        img_feats, txt_feats = features
        return (
            embed_features(adapter.embed_image, img_feats, device=device),
            embed_features(adapter.embed_text, txt_feats, device=device),
        )
    img = []
    bar = tqdm(
        total=split.n_images, desc=f"encode images {split.dataset}/{split.split}", disable=not progress, leave=False
    )
    for images in iter_image_batches(
        split, adapter.image_transform(), batch_size, num_workers, pin_memory=device.type == "cuda"
    ):
        img.append(adapter.encode_image(images.to(device, non_blocking=True)).float().cpu())
        bar.update(len(images))
    bar.close()
    txt = []
    caps = list(split.captions)
    for s in range(0, len(caps), batch_size * 2):
        txt.append(adapter.encode_text(_to(adapter.tokenize(caps[s : s + batch_size * 2]), device)).float().cpu())
    return torch.cat(img), torch.cat(txt)
