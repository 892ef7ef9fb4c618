"""Write any image-text split in SCAN's precomp layout, with a timm backbone's grid cells as its "regions".

Region features of real photos come from a Visual Genome Faster R-CNN, which cannot be had offline. The region models
(SCAN, SGR, SAF) read any set of local features, so a CNN's last feature map serves, as VSE∞ treats grid features:
EfficientNet-Lite0 gives 7 x 7 cells of 1280 values, written as 49 "regions" per image. The folder then holds, per
split, ``<split>_ims.npy`` (float32, written through a memory map), ``<split>_caps.txt``, ``<split>_ids.txt`` and
``<split>_photos.txt`` (each row's photo, so a CUSA image teacher and the HTML report can read it), and
``precomp.json``: what the features are (``grid cells``, not detector regions), the backbone, its weights and
transform, and the source split's fingerprint. Records of cells on such a folder carry that description.

The layout gives every image the same number of captions ``k``: the split's most common count. Images with fewer are
left out and captions past the k-th dropped; the manifest and the log say how many.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.atomic import atomic_write_bytes
from bench.data.base import RetrievalSplit
from bench.encode.features import iter_image_batches
from bench.errors import DataError

__all__ = ["MANIFEST", "read_manifest", "write_grid_precomp", "write_vocab"]

log = logging.getLogger(__name__)

MANIFEST = "precomp.json"


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The folder's ``precomp.json`` (what wrote its features), or None for a folder as downloaded."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a readable manifest ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def _write(path: Path, lines: list[str]) -> None:
    atomic_write_bytes(path, "".join(line + "\n" for line in lines).encode("utf-8"))


def _kept(split: RetrievalSplit) -> tuple[int, list[int], list[list[int]]]:
    """The captions per image ``k``, the images kept and each one's first ``k`` caption rows."""
    per_image = split.image_to_captions()
    counts = Counter(len(c) for c in per_image if len(c))
    if not counts:
        raise DataError(f"{split.dataset}/{split.split}: no captions to write")
    k = max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]
    rows = [i for i, caps in enumerate(per_image) if len(caps) >= k]
    return k, rows, [list(per_image[i][:k]) for i in rows]


@torch.inference_mode()
def write_grid_precomp(split: RetrievalSplit, root: Path, name: str, *, backbone: str = "tf_efficientnet_lite0",
                       weights: str = "auto", batch_size: int = 32, device: torch.device | str = "cpu",
                       progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """Write ``split`` as precomp split ``name`` in ``root`` (see the module docstring); returns its manifest entry.

    Raises:
        WeightsUnavailableError: the backbone's weights cannot be had.
        DataError: a photo cannot be read (named), or the split has no captions.
    """
    from bench.adapters.backbones import build_timm_tower
    from bench.grid.fingerprint import content_key

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    tower = build_timm_tower(backbone, weights).to(device).eval()
    k, rows, captions = _kept(split)
    first = next(iter(iter_image_batches(split, tower.transform(), 1, rows=rows[:1])))
    grid = tower(first.to(device))["grid"]
    cells, dim = int(grid.shape[1]), int(grid.shape[2])
    ims = np.lib.format.open_memmap(root / f"{name}_ims.npy", mode="w+", dtype=np.float32,
                                    shape=(len(rows), cells, dim))  # fmt: skip
    done = 0
    for images in iter_image_batches(split, tower.transform(), batch_size, rows=rows):
        ims[done : done + len(images)] = tower(images.to(device))["grid"].float().cpu().numpy()
        done += len(images)
    ims.flush()
    del ims
    _write(root / f"{name}_caps.txt", [split.captions[j].replace("\n", " ") for caps in captions for j in caps])
    _write(root / f"{name}_ids.txt", [str(split.image_ids[i]) for i in rows])
    photos = [split.image_paths[i] for i in rows]
    if all(isinstance(p, str | Path) for p in photos):
        _write(root / f"{name}_photos.txt", [str(Path(p).resolve()) for p in photos])
    layout = getattr(tower, "_layout", None) or ("tokens", 0, 0)
    entry = {
        "features": "grid cells",
        "backbone": backbone,
        "weights": tower.weights,
        "grid": [int(layout[1]), int(layout[2])] if layout[0] != "tokens" else None,
        "regions": cells,
        "dim": dim,
        "transform": json.loads(tower.transform_key()),
        "source": {"dataset": split.dataset, "split": split.split, "fingerprint": content_key(split)},
        "images": len(rows),
        "captions_per_image": k,
        "images_left_out": split.n_images - len(rows),
        "captions_left_out": split.n_captions - k * len(rows),
    }
    manifest = read_manifest(root) or {"splits": {}}
    manifest.setdefault("splits", {})[name] = entry
    atomic_write_bytes(root / MANIFEST, (json.dumps(manifest, indent=1, default=str) + "\n").encode("utf-8"))
    log.info("%s/%s -> %s (%s): %d images x %d cells x %d; %d images and %d captions left out (k = %d)",
             split.dataset, split.split, root, name, len(rows), cells, dim, entry["images_left_out"],
             entry["captions_left_out"], k)  # fmt: skip
    return entry


def write_vocab(root: Path, splits: tuple[str, ...] = ("train", "dev"), threshold: int = 4) -> Path:
    """Build the folder's vocabulary as SCAN's ``vocab.py`` does (the words of the train and dev captions seen at
    least ``threshold`` times, after ``<pad>``, ``<start>``, ``<end>``, ``<unk>``; tokens as
    :class:`~bench.adapters.region_text.Vocabulary` makes them) and write it in SGRAF's JSON layout as
    ``<folder>_vocab.json``.

    Raises:
        DataError: none of ``splits`` has a caption file in ``root``.
    """
    from bench.adapters.region_text import Vocabulary

    root = Path(root)
    files = [root / f"{s}_caps.txt" for s in splits if (root / f"{s}_caps.txt").is_file()]
    if not files:
        raise DataError(f"{root}: no {' or '.join(f'{s}_caps.txt' for s in splits)} to build a vocabulary from")
    specials = ["<pad>", "<start>", "<end>", "<unk>"]
    tokens = Vocabulary({w: i for i, w in enumerate(specials)}, root)  # tokenisation only
    counts: Counter[str] = Counter()
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            counts.update(tokens.words(line))
    words = specials + [w for w, c in counts.items() if c >= threshold and w not in specials]
    data = {"word2idx": {w: i for i, w in enumerate(words)}, "idx2word": {str(i): w for i, w in enumerate(words)},
            "idx": len(words)}  # fmt: skip
    path = root / f"{root.name}_vocab.json"
    atomic_write_bytes(path, json.dumps(data).encode("utf-8"))
    log.info("%s: %d words seen %d+ times in %s", path, len(words), threshold, ", ".join(f.name for f in files))
    return path
