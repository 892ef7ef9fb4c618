"""Presets of the standard benchmarks: Karpathy Flickr30K (1K test) and COCO (5K test, with the 1K protocol's folds
declared on it), over the ``karpathy`` format."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from bench.data.base import RetrievalSplit
from bench.data.formats import load_karpathy
from bench.data.registry import register_format
from bench.errors import DataError

__all__ = ["COCO_FOLD", "coco_1k_folds", "coco_caption_ids", "load_coco", "load_flickr30k"]

log = logging.getLogger(__name__)


COCO_K_TEST = 256  # re-ranking depth of LAVIS's BLIP retrieval configs (retrieval_coco_eval.yaml)
FLICKR_K_TEST = 128  # (retrieval_flickr_eval.yaml)
DEFAULT_K_TEST = 128  # datasets without a protocol of their own


@register_format("flickr30k")
def load_flickr30k(
    root: Path,
    split: str,
    *,
    name: str = "flickr30k",
    file: str = "dataset_flickr30k.json",
    image_dir: str | None = None,
) -> RetrievalSplit:
    """Karpathy Flickr30K: 29K train / 1K val / 1K test images, 5 captions each.

    Args:
        root: Folder holding ``dataset_flickr30k.json`` and the images.
        split: ``train``, ``val`` or ``test``.
        name: Dataset name stamped on the split.
        file: The Karpathy JSON file, relative to root.
        image_dir: Image folder; default ``root/flickr30k-images``, else ``root/images`` (whichever exists).

    Returns:
        The split.
    """
    if image_dir is None:
        candidates = [root / "flickr30k-images", root / "images"]
        found = next((c for c in candidates if c.is_dir()), None)
        if found is None:
            raise DataError(
                f"{root}: no image folder; expected {candidates[0]} or {candidates[1]} (or set 'image_dir')"
            )
        image_dir = str(found)
    out = load_karpathy(root, split, name=name, file=file, image_dir=image_dir, restval_in_train=True)
    return dataclasses.replace(out, k_test=FLICKR_K_TEST)  # LAVIS's retrieval_flickr k_test


COCO_FOLD = 1000  # images per fold of the COCO 1K protocol


@register_format("coco")
def load_coco(
    root: Path,
    split: str,
    *,
    name: str = "coco",
    file: str = "dataset_coco.json",
    image_dir: str | None = None,
    restval_in_train: bool = True,
    captions_file: str = "",
) -> RetrievalSplit:
    """Karpathy COCO: 113K train (with restval) / 5K val / 5K test images; see :func:`coco_1k_folds` for 1K test.

    Args:
        root: Folder holding ``dataset_coco.json`` and ``train2014/``, ``val2014/``.
        split: ``train``, ``val`` or ``test``.
        name: Dataset name stamped on the split.
        file: The Karpathy JSON file, relative to root.
        image_dir: Folder holding ``train2014/`` and ``val2014/``; default root.
        restval_in_train: Count the 30K ``restval`` images as train.
        captions_file: COCO's ``captions_val2014.json`` (relative to root): gives every caption of a split whose
            images all come from it (the 5K test) its COCO annotation id, matched by image id and caption text, so
            ECCV Caption and CxC can be scored (:mod:`bench.scoring.eccv`).

    Returns:
        The split.
    """
    out = load_karpathy(root, split, name=name, file=file, image_dir=image_dir, restval_in_train=restval_in_train)
    if captions_file:
        out = dataclasses.replace(out, caption_ids=coco_caption_ids(out, root / captions_file))
    out = dataclasses.replace(out, k_test=COCO_K_TEST)  # LAVIS's retrieval_coco k_test
    if split == "test" and out.n_images == 5 * COCO_FOLD:
        # The COCO protocol reports the 5K test and, beside it, the mean over its five 1K folds (VSE∞, CUSA).
        out = dataclasses.replace(out, fold_size=COCO_FOLD)
    return out


def coco_1k_folds(split: RetrievalSplit, n_folds: int = 5, fold_size: int = 1000) -> list[RetrievalSplit]:
    """Cut the COCO 5K test split into folds of consecutive images with their captions (the COCO 1K protocol).

    As VSE∞ evaluates it: fold ``k`` holds images ``[k*1000, (k+1)*1000)`` and every caption of those images; the
    reported 1K numbers are the mean over the folds.

    Args:
        split: The 5K split.
        n_folds: Number of folds.
        fold_size: Images per fold.

    Returns:
        ``n_folds`` splits named ``{split}_1k_fold{k}``.

    Raises:
        DataError: the split does not hold exactly ``n_folds * fold_size`` images.
    """
    if n_folds < 1 or fold_size < 1:
        raise ValueError(f"n_folds and fold_size must be positive, got {n_folds} and {fold_size}")
    if split.n_images != n_folds * fold_size:
        raise DataError(
            f"{split.source or split.dataset}: {split.split} has {split.n_images} images; "
            f"{n_folds} folds of {fold_size} need exactly {n_folds * fold_size}"
        )
    c2i = split.caption_to_image
    folds = []
    for k in range(n_folds):
        lo, hi = k * fold_size, (k + 1) * fold_size
        rows = np.flatnonzero((c2i >= lo) & (c2i < hi))
        folds.append(
            RetrievalSplit(
                dataset=split.dataset,
                split=f"{split.split}_1k_fold{k}",
                image_paths=list(split.image_paths[lo:hi]),
                image_ids=list(split.image_ids[lo:hi]),
                captions=[split.captions[j] for j in rows],
                caption_to_image=c2i[rows] - lo,
                image_labels=None if split.image_labels is None else np.asarray(split.image_labels)[lo:hi],
                source=split.source,
            )
        )
    return folds


def _caption_key(text: str) -> str:
    return " ".join(text.split()).lower()


def coco_caption_ids(split: RetrievalSplit, path: Path) -> list[int] | None:
    """COCO annotation ids of ``split``'s captions from a COCO captions file, matched by image id and caption text
    (whitespace and case ignored); None when some of the split's images are not in the file (a train split).

    Raises:
        DataError: the file cannot be read, or an image of the file has a caption the file does not hold.
    """
    import json

    from bench.data.base import read_text

    try:
        annotations = json.loads(read_text(path, "COCO captions file"))["annotations"]
        by_key: dict[tuple[int, str], list[int]] = {}
        for a in annotations:
            by_key.setdefault((int(a["image_id"]), _caption_key(str(a["caption"]))), []).append(int(a["id"]))
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a COCO captions file ({type(e).__name__}: {e})") from None
    images = {iid for iid, _ in by_key}
    try:
        split_images = [int(i) for i in split.image_ids]
    except ValueError:
        raise DataError(f"{path}: split {split.split!r} has image ids that are not COCO ids") from None
    if not set(split_images) <= images:
        log.info("%s: not every %s image is in %s; no caption ids", split.dataset, split.split, path.name)
        return None
    out = []
    for j, caption in enumerate(split.captions):
        iid = split_images[int(split.caption_to_image[j])]
        ids = by_key.get((iid, _caption_key(caption)))
        if not ids:
            raise DataError(f"{path}: image {iid} has no caption {caption!r} (caption {j} of {split.split})")
        out.append(ids.pop(0))
    return out
