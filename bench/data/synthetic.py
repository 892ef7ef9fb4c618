"""The built-in ``synthetic`` dataset: rendered shape scenes with five paraphrased captions each.

Every image is a plain or lightly textured background with one or two *groups* of objects. A group is ``count``
(1-3) objects of one colour (6), one shape (4) and one size (small/large), placed in one region (left, right, top,
bottom, centre). Each image gets five captions from five different templates, with synonyms ("square"/"box",
"red"/"crimson"), number words and group order varied, so paraphrases exist. The image label (for image-to-image
retrieval) is the ``(colour, shape)`` class of the first group, which is the largest.

About 15% of the scenes of each split are near-duplicates: copies of an earlier scene of the same split with
re-drawn positions, sizes and colour jitter. Half of them also copy the captions verbatim, the rest re-word them.
So, as in COCO, a caption often matches images other than its own (false negatives). The index JSON records this
as ``duplicate_of`` (the row of the original scene, or null).

The data is generated on first use into ``<work_dir>/synthetic/v1-seed{seed}-{n_train}-{n_val}-{n_test}-{size}``:
one PNG per image, then ``index.json`` written last and atomically, so a folder without a valid index (an
interrupted run) is regenerated. Everything derives from ``seed`` through numpy Generators, one independent
stream per split, so the splits are disjoint draws from the same distribution and a split does not change when
another split's size does. Objects stay within [0.13, 0.87] of each side, so a 224 centre crop of a 256 resize
keeps them whole.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.atomic import atomic_write_bytes
from bench.data.base import RetrievalSplit
from bench.data.registry import register_format
from bench.data.scenes import (
    COLOURS,
    LABEL_NAMES,
    SHAPES,
    near_duplicate,
    new_scene,
    render_scene,
    scene_captions,
    scene_label,
)
from bench.errors import ConfigError, SplitNotFoundError

__all__ = [
    "COLOURS",
    "LABEL_NAMES",
    "SHAPES",
    "VERSION",
    "ensure_generated",
    "load_synthetic",
    "render_scene",
    "synthetic_dir",
]

log = logging.getLogger(__name__)

VERSION = 1
SPLITS = ("train", "val", "test")
_SPLIT_STREAM = {"train": 1, "val": 2, "test": 3}
DUPLICATE_FRACTION = 0.15


# ---------------------------------------------------------------------------------------------------------------
# generation and cache


def synthetic_dir(base: Path, seed: int, n_train: int, n_val: int, n_test: int, image_size: int) -> Path:
    """The cache folder of one synthetic configuration under ``base`` (``<work_dir>/synthetic``)."""
    return Path(base) / f"v{VERSION}-seed{seed}-{n_train}-{n_val}-{n_test}-{image_size}"


def _generate_split(seed: int, split: str, n: int, size: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng([seed, _SPLIT_STREAM[split]])
    n_dup = max(1, round(DUPLICATE_FRACTION * n)) if n >= 2 else 0
    dups = set(int(i) for i in rng.choice(np.arange(1, n), size=n_dup, replace=False)) if n_dup else set()
    rows: list[dict[str, Any]] = []
    originals: list[int] = []
    n_seen_dups = 0
    for i in range(n):
        if i in dups:
            src = originals[int(rng.integers(len(originals)))]
            scene = near_duplicate(rng, rows[src]["scene"], size)
            # Alternate verbatim and re-worded captions, so both kinds of false negatives exist in every split.
            caps = list(rows[src]["captions"]) if n_seen_dups % 2 == 0 else scene_captions(rng, scene)
            n_seen_dups += 1
            dup_of: int | None = src
        else:
            scene = new_scene(rng, size)
            caps = scene_captions(rng, scene)
            dup_of = None
            originals.append(i)
        rows.append(
            {
                "file": f"{split}/{i:06d}.png",
                "captions": caps,
                "label": scene_label(scene),
                "duplicate_of": dup_of,
                "scene": scene,
            }
        )
    return rows


def _params(seed: int, n_train: int, n_val: int, n_test: int, image_size: int) -> dict[str, int]:
    return {"seed": seed, "n_train": n_train, "n_val": n_val, "n_test": n_test, "image_size": image_size}


def _read_index(folder: Path, params: dict[str, int]) -> dict[str, Any] | None:
    """The index when the folder is complete and matches ``params``; None when it must be (re)generated."""
    try:
        index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or index.get("version") != VERSION or index.get("params") != params:
        return None
    splits = index.get("splits")
    if not isinstance(splits, dict) or any(len(splits.get(s, ())) != params[f"n_{s}"] for s in SPLITS):
        return None
    if not all(os.path.exists(folder / row["file"]) for s in SPLITS for row in splits[s]):
        return None
    return index


def ensure_generated(
    base: Path, *, seed: int = 0, n_train: int = 1000, n_val: int = 200, n_test: int = 200, image_size: int = 224
) -> Path:
    """Generate the synthetic dataset under ``base`` unless a complete copy is there; return its folder.

    Raises:
        ConfigError: a size is negative or the image size is below 32.
    """
    return _ensure(base, _params(seed, n_train, n_val, n_test, image_size))[0]


def _ensure(base: Path, params: dict[str, int]) -> tuple[Path, dict[str, Any]]:
    for key in ("n_train", "n_val", "n_test"):
        if params[key] < 0:
            raise ConfigError(f"synthetic: option {key!r} must be >= 0, got {params[key]}")
    if params["image_size"] < 32:
        raise ConfigError(f"synthetic: option 'image_size' must be >= 32, got {params['image_size']}")
    seed, image_size = params["seed"], params["image_size"]
    folder = synthetic_dir(base, seed, params["n_train"], params["n_val"], params["n_test"], image_size)
    index = _read_index(folder, params)
    if index is not None:
        return folder, index

    t0 = time.perf_counter()
    log.info("generating synthetic dataset into %s", folder)
    splits = {s: _generate_split(seed, s, params[f"n_{s}"], image_size) for s in SPLITS}
    for s, rows in splits.items():
        (folder / s).mkdir(parents=True, exist_ok=True)
        for row in rows:
            buf = io.BytesIO()
            # compress_level 1: several times faster than the default and the flat scenes still compress well.
            render_scene(row["scene"], image_size).save(buf, format="PNG", compress_level=1)
            atomic_write_bytes(folder / row["file"], buf.getvalue())
    index = {
        "format": "itr-bench synthetic",
        "version": VERSION,
        "params": params,
        "label_names": LABEL_NAMES,
        "splits": splits,
    }
    # Written last: its presence marks the folder complete.
    atomic_write_bytes(folder / "index.json", json.dumps(index, indent=1).encode())
    log.info("generated %d synthetic images in %.1f s", sum(len(r) for r in splits.values()), time.perf_counter() - t0)
    return folder, index


@register_format("synthetic")
def load_synthetic(
    root: Path | None = None,
    split: str = "test",
    *,
    name: str = "synthetic",
    work_dir: Path | None = None,
    seed: int = 0,
    n_train: int = 1000,
    n_val: int = 200,
    n_test: int = 200,
    image_size: int = 224,
) -> RetrievalSplit:
    """Load (generating on first use) a split of the synthetic shapes dataset.

    Args:
        root: Folder to cache the data in instead of ``work_dir/synthetic``.
        split: ``train``, ``val`` or ``test``.
        name: Dataset name stamped on the split.
        work_dir: The run's work folder; the data goes to ``work_dir/synthetic/v1-seed...``.
        seed: Seed of everything: scenes, captions, duplicates.
        n_train: Train images.
        n_val: Validation images.
        n_test: Test images.
        image_size: Side of the square PNG images.

    Returns:
        The split, five captions per image, with ``image_labels`` (index into :data:`LABEL_NAMES`).
    """
    if split not in SPLITS:
        raise SplitNotFoundError(f"synthetic: unknown split {split!r}; available splits: {', '.join(SPLITS)}")
    if root is None:
        if work_dir is None:
            raise ConfigError("synthetic: needs a work_dir (or a 'root') to generate its images in")
        root = Path(work_dir) / "synthetic"
    folder, index = _ensure(Path(root), _params(seed, n_train, n_val, n_test, image_size))
    index_path = folder / "index.json"
    rows = index["splits"][split]
    captions = [c for row in rows for c in row["captions"]]
    c2i = np.repeat(np.arange(len(rows), dtype=np.int64), [len(row["captions"]) for row in rows])
    return RetrievalSplit(
        dataset=name,
        split=split,
        image_paths=[folder / row["file"] for row in rows],
        image_ids=[row["file"].removesuffix(".png") for row in rows],
        captions=captions,
        caption_to_image=c2i,
        image_labels=np.asarray([row["label"] for row in rows], dtype=np.int64),
        source=index_path,
    )
