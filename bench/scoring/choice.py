"""Choice-set scoring: each item's text, image and group outcome from its pair scores, and the accuracies of a set.

For an item with images ``a`` and captions ``b`` and score matrix ``S[a, b]`` (Winoground's notation; CLIP_benchmark's
``image_caption_selection`` uses the same matrix):

* text: every image scores its correct caption strictly above each other caption of the item;
* image (items of two or more images): every image's correct caption scores that image strictly above each other
  image of the item;
* group: both.

A tie is not a correct choice: a model that gives every caption the same score passes nothing (CLIP_benchmark's
``argmax`` credits a tie to the first caption, which is the correct one in every SugarCrepe file). An accuracy is the
mean outcome over a subset's items x 100; an average of a paper (SugarCrepe's replace / swap / add) is the mean of
its subsets' accuracies, and ``mean`` the mean over all subsets (macro, as ARO and VALSE average), or over the
subsets a set's ``groups["mean"]`` lists (ARO leaves out VG-Relation's symmetric relations and VG-Attribution's
attribute pairs with fewer than 25 items).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["KINDS", "ChoiceOutcomes", "accuracies", "item_outcomes", "load_items", "save_items"]

KINDS = ("text", "image", "group")


@dataclass(frozen=True)
class ChoiceOutcomes:
    """One cell's per-item outcomes (``text``/``image``/``group``: 1.0, 0.0 or NaN) with the items' ids, subsets
    and the set's averages."""

    item_ids: np.ndarray
    subsets: np.ndarray
    outcomes: dict[str, np.ndarray]
    groups: dict[str, tuple[str, ...]]
    seed: int = 0
    trained: bool = False  # the cell's method trained, so its seed changes its outcomes


def item_outcomes(scores: np.ndarray, offsets: np.ndarray, shapes: Sequence[tuple[int, int]],
                  truths: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:  # fmt: skip
    """Each item's outcomes: float64 ``[n_items]`` arrays ``text``, ``image`` and ``group`` of 1.0 / 0.0, NaN where a
    test does not apply (the image test of a one-image item).

    Args:
        scores: ``[P]`` pair scores, item by item, image-major (:meth:`bench.data.choice.ChoiceSplit.pairs`).
        offsets: ``[n_items + 1]`` start of each item's scores.
        shapes: ``(images, captions)`` of each item.
        truths: Each item's correct caption of each image.
    """
    n = len(shapes)
    out = {kind: np.full(n, np.nan) for kind in KINDS}
    for i, ((k, m), truth) in enumerate(zip(shapes, truths, strict=True)):
        s = np.asarray(scores[offsets[i] : offsets[i + 1]], dtype=np.float64).reshape(k, m)
        rows = np.arange(k)
        right = s[rows, list(truth)]
        other = s.copy()
        other[rows, list(truth)] = -np.inf
        text = bool(np.all(right > other.max(axis=1)))
        out["text"][i] = text
        if k > 1:
            cols = s[:, list(truth)]  # [k images, k correct captions]: column a holds caption truth[a]'s scores
            rival = cols.copy()
            rival[rows, rows] = -np.inf
            image = bool(np.all(right > rival.max(axis=0)))
            out["image"][i], out["group"][i] = image, text and image
    return out


def accuracies(outcomes: Mapping[str, np.ndarray], subsets: np.ndarray, groups: Mapping[str, Sequence[str]],
               weights: np.ndarray | None = None) -> dict[str, dict[str, np.ndarray]]:  # fmt: skip
    """Accuracies x 100 per test: ``{kind: {subset: [B], group: [B], "mean": [B]}}`` under each row of ``weights``.

    Args:
        outcomes: :func:`item_outcomes`.
        subsets: ``[n_items]`` subset names.
        groups: Average name -> its subsets.
        weights: ``[B, n_items]`` item weights (a bootstrap draw's counts), or None: the accuracies themselves
            (``B = 1``).

    A test that is missing or applies to no item of the set is left out; a subset with no weighted item in a draw
    is NaN.
    """
    subsets = np.asarray(subsets)
    w = np.ones((1, subsets.shape[0])) if weights is None else np.asarray(weights, dtype=np.float64)
    names = list(dict.fromkeys(subsets.tolist()))
    out: dict[str, dict[str, np.ndarray]] = {}
    for kind in (k for k in KINDS if k in outcomes):
        hit = np.asarray(outcomes[kind], dtype=np.float64)
        applies = ~np.isnan(hit)
        if not applies.any():
            continue
        block: dict[str, np.ndarray] = {}
        for name in names:
            mask = (subsets == name) & applies
            with np.errstate(invalid="ignore", divide="ignore"):
                block[name] = 100.0 * (w[:, mask] @ hit[mask]) / w[:, mask].sum(axis=1)
        for group, parts in groups.items():
            if group != "mean":
                block[group] = np.mean([block[p] for p in parts], axis=0)
        block["mean"] = np.mean([block[p] for p in groups.get("mean") or names], axis=0)
        out[kind] = block
    return out


def save_items(path: Path, cell: ChoiceOutcomes, scores: np.ndarray, offsets: np.ndarray, meta: Mapping[str, Any],
               items: Sequence[Mapping[str, Any]] = ()) -> str:  # fmt: skip
    """Write a cell's per-item file (npz: ids, subsets, outcomes, every pair score and the items' offsets, ``meta``
    and each item's ``{"images": [path, ...], "captions": [text, ...], "truth": [...]}`` as JSON) atomically;
    returns its sha256."""
    from bench.atomic import atomic_write_bytes
    from bench.scoring.perquery import sha256_of

    buf = io.BytesIO()
    np.savez_compressed(
        buf, item_id=cell.item_ids.astype(str), subset=cell.subsets.astype(str), scores=np.asarray(scores, np.float32),
        offsets=np.asarray(offsets, np.int64), groups=np.asarray(json.dumps(cell.groups)),
        meta=np.asarray(json.dumps(dict(meta))), items=np.asarray(json.dumps(list(items))),
        **{f"outcome_{k}": v for k, v in cell.outcomes.items()},
    )  # fmt: skip
    atomic_write_bytes(path, buf.getvalue())
    return sha256_of(path)


def load_items(path: str | os.PathLike, seed: int = 0, trained: bool = False) -> ChoiceOutcomes:
    """Read a per-item file written by :func:`save_items`.

    Raises:
        ValueError: the file is not a per-item file (one line naming it).
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            groups = {k: tuple(v) for k, v in json.loads(str(z["groups"])).items()}
            outcomes = {k: z[f"outcome_{k}"].astype(np.float64) for k in KINDS if f"outcome_{k}" in z}
            return ChoiceOutcomes(z["item_id"], z["subset"], outcomes, groups, seed, trained)
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: not an itr-bench per-item file ({e})") from None
