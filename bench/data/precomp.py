"""Region features as a dataset: SCAN's "precomp" layout, as researchers download it for SCAN, SGRAF and VSE∞.

A split is three files in ``root``:

* ``<split>_ims.npy``: float32 ``[N, regions, dim]`` (36 x 2048 bottom-up-attention regions per image), opened
  memory-mapped and never loaded whole;
* ``<split>_caps.txt``: one caption a line, the captions of image ``i`` at lines ``k*i ... k*i + k - 1`` (``k`` = 5
  for COCO and Flickr30K). The older files that repeat each image row ``k`` times (as many rows as captions) are
  read as one image per ``k`` rows, as SCAN's evaluation does (``img_embs[::5]``), after checking that the first
  and last groups of rows really are repeats;
* ``<split>_ids.txt`` (optional): one image id a line, one per image row.

Split names are the files' own: COCO's 5K test is ``testall`` (scored with the 1K-fold protocol as well: option
``folds = {testall = 1000}``, which the ``coco-precomp`` preset sets) and its 1K test is ``test``; a request for one
that the folder lacks names what it has, so the two cannot be confused (SGRAF#7). Flickr30K's is ``test``.

Images of such a split are :class:`RegionRows` references, not pixels: a model that reads pixels cannot score them
(its error names the file), and a region-feature model reads the rows it needs through :func:`region_features`.
Vocabularies (option ``vocab``: SGRAF's ``*_precomp_vocab.json``, ``{"word2idx": {...}, ...}``) are checked here
and read by the models that need them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.base import RetrievalSplit, read_text
from bench.data.refs import ImageRef
from bench.data.registry import register_format
from bench.data.stamps import file_stamp
from bench.errors import ConfigError, DataError, SplitNotFoundError

__all__ = ["RegionRows", "load_precomp", "read_vocab", "region_description", "region_features", "region_rows"]


@dataclass(frozen=True)
class RegionRows(ImageRef):
    """One image of a precomp split: row ``row`` of the region-feature array ``container``."""

    row: int = 0
    photo: Path | None = None  # the photo the row was computed from, where the folder says (``<split>_photos.txt``)

    def read_bytes(self) -> bytes:
        """The photo's bytes, where the folder names it (teachers and reports read it); region models read the row."""
        if self.photo is None:
            raise DataError(f"{self.container}: row {self.row} holds region features, not an image; score this "
                            "dataset with a region-feature model (sgraf, scan), not one that reads pixels")  # fmt: skip
        try:
            return self.photo.read_bytes()
        except OSError as e:
            raise DataError(f"{self.photo}: cannot read the photo of row {self.row} of {self.container} "
                            f"({e.strerror or e})") from None  # fmt: skip

    def stamp(self) -> str:
        photo = f"\0{self.photo}\0{file_stamp(self.photo)}" if self.photo is not None else ""
        return f"{self.container}\0{self.row}\0{file_stamp(self.container)}{photo}"


def region_description(split: RetrievalSplit) -> dict[str, Any] | None:
    """What a precomp split's features are, for its records: the folder's ``precomp.json`` entry of the split (grid
    cells of a named backbone, written by :mod:`bench.data.precomp_write`), or ``unstated`` for a folder as
    downloaded; None for a split of photos."""
    from bench.data.precomp_write import read_manifest

    first = split.image_paths[0] if len(split.image_paths) else None
    if not isinstance(first, RegionRows):
        return None
    manifest = read_manifest(first.container.parent) or {}
    entry = (manifest.get("splits") or {}).get(first.container.name[: -len("_ims.npy")])
    if entry is None:
        return {"features": "unstated (no precomp.json: as downloaded, e.g. bottom-up-attention detector regions)"}
    keep = ("features", "backbone", "weights", "grid", "regions", "dim", "source", "images_left_out",
            "captions_left_out")  # fmt: skip
    return {k: entry[k] for k in keep if k in entry}


def region_features(paths: Sequence[Any]) -> np.ndarray:
    """The region features ``[len(paths), regions, dim]`` (float32, read now) of a precomp split's images (or of any
    subset of them, all from one array).

    Raises:
        DataError: an entry is not a :class:`RegionRows`, or they come from more than one array.
    """
    array, rows = _rows_of(paths)
    return np.asarray(array[rows], dtype=np.float32)


def region_rows(paths: Sequence[Any]) -> np.ndarray:
    """The region features of a precomp split's images as a read-only memory map where they are evenly spaced rows of
    their array (a split as loaded, repeated rows included), read as they are used; otherwise read now.
    The dtype is the file's.

    Raises:
        DataError: as :func:`region_features`.
    """
    array, rows = _rows_of(paths)
    step = rows[1] - rows[0] if len(rows) > 1 else 1
    if step > 0 and rows == list(range(rows[0], rows[0] + step * len(rows), step)):  # a view, read lazily
        return array[rows[0] : rows[0] + step * len(rows) : step]
    return np.asarray(array[rows])


def _rows_of(paths: Sequence[Any]) -> tuple[np.ndarray, list[int]]:
    if not paths:
        raise DataError("no images to read region features of")
    if not all(isinstance(p, RegionRows) for p in paths):
        bad = next(p for p in paths if not isinstance(p, RegionRows))
        raise DataError(f"{bad}: not a region-feature row; this model needs a precomp dataset (format = \"precomp\")")
    files = {p.container for p in paths}
    if len(files) != 1:
        raise DataError(f"region features from {len(files)} arrays at once: {', '.join(map(str, sorted(files)))}")
    return _open(paths[0].container), [p.row for p in paths]


def _open(path: Path) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: region-feature file not found") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a .npy array ({e})") from None
    if array.ndim != 3:
        raise DataError(f"{path}: expected an array of images x regions x features (rank 3), got shape "
                        f"{tuple(array.shape)}")  # fmt: skip
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{path}: expected float features, got {array.dtype}")
    return array


def read_vocab(path: Path) -> dict[str, int]:
    """SGRAF's vocabulary file: ``{"word2idx": {word: index}, ...}``; its ``word2idx``.

    Raises:
        DataError: the file is missing, not JSON, or has no ``word2idx`` table of integer indices.
    """
    text = read_text(path, "vocabulary file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno} ({e.msg})") from None
    table = data.get("word2idx") if isinstance(data, Mapping) else None
    if not isinstance(table, Mapping) or not all(isinstance(v, int) for v in table.values()):
        raise DataError(f"{path}: field 'word2idx' must map words to integer indices")
    return dict(table)


def _have(root: Path) -> list[str]:
    return sorted(p.name[: -len("_ims.npy")] for p in root.glob("*_ims.npy"))


@register_format("precomp")
def load_precomp(root: Path, split: str, *, name: str = "precomp", captions_per_image: int = 5,
                 folds: dict[str, int] | None = None, vocab: str | None = None) -> RetrievalSplit:  # fmt: skip
    """A split in SCAN's precomp layout (see the module docstring).

    Args:
        root: Folder holding ``<split>_ims.npy`` and ``<split>_caps.txt``.
        split: The files' split name: ``train``, ``dev``, ``test``, ``testall`` (``val`` reads ``dev`` where the folder
            has no ``val``: training validates on it, as the reference repositories do).
        name: Dataset name stamped on the split.
        captions_per_image: Captions of each image (5); how a file of repeated rows is grouped.
        folds: Split -> fold size: also score consecutive folds of this many images (``{testall = 1000}``: COCO's
            1K protocol on its 5K test).
        vocab: A vocabulary file relative to root, checked here (SGRAF's ``*_precomp_vocab.json``).

    Returns:
        The split: :class:`RegionRows` images, the captions in file order.
    """
    if not isinstance(captions_per_image, int) or isinstance(captions_per_image, bool) or captions_per_image < 1:
        raise ConfigError(f"option 'captions_per_image' must be a positive integer, got {captions_per_image!r}")
    if split == "val" and not (root / "val_ims.npy").is_file() and (root / "dev_ims.npy").is_file():
        split = "dev"  # the reference repositories validate on "dev"
    ims, caps = root / f"{split}_ims.npy", root / f"{split}_caps.txt"
    if not ims.is_file():
        have = _have(root)
        hint = f"splits here: {', '.join(have)}" if have else "no *_ims.npy files here"
        if split == "test" and "testall" in have:
            hint += ' (COCO\'s 5K test is "testall"; "test" is its 1K)'
        raise SplitNotFoundError(f"{ims}: region features of split {split!r} not found; {hint}")
    if vocab is not None:
        read_vocab(root / vocab)
    array = _open(ims)
    captions = [line.strip() for line in read_text(caps, "caption file").splitlines()]
    while captions and not captions[-1]:
        captions.pop()
    empty = next((i for i, c in enumerate(captions) if not c), None)
    if empty is not None:
        raise DataError(f"{caps} line {empty + 1}: caption is empty")
    rows, k = int(array.shape[0]), captions_per_image
    if rows == len(captions) and k > 1:  # one row per caption: each image's row repeated k times
        if rows % k:
            raise DataError(f"{ims}: {rows} rows, one per caption, is not a multiple of captions_per_image = {k}")
        for first in (0, rows - k):
            if not all(np.array_equal(array[first], array[first + j]) for j in range(1, k)):
                raise DataError(f"{ims}: as many rows as captions ({rows}), but rows {first}-{first + k - 1} are not "
                                "one image repeated; set captions_per_image to each image's caption count")  # fmt: skip
        image_rows = list(range(0, rows, k))
    elif len(captions) % rows == 0:
        image_rows = list(range(rows))
        k = len(captions) // rows
    else:
        raise DataError(f"{caps}: {len(captions)} captions is not a multiple of the {rows} images in {ims.name}")
    ids_file = root / f"{split}_ids.txt"
    if ids_file.is_file():
        ids = [x.strip() for x in read_text(ids_file, "image id file").splitlines() if x.strip()]
        if len(ids) not in (rows, len(image_rows)):
            raise DataError(f"{ids_file}: {len(ids)} ids for {rows} image rows")
        ids = ids[:: rows // len(image_rows)] if len(ids) == rows else ids
    else:
        ids = [f"{split}:{r}" for r in image_rows]
    if folds is not None and not isinstance(folds, Mapping):
        raise ConfigError(f"option 'folds' must map split names to fold sizes, got {folds!r}")
    fold_size = (folds or {}).get(split)
    if fold_size is not None and (not isinstance(fold_size, int) or fold_size < 1 or len(image_rows) % fold_size):
        raise ConfigError(f"option 'folds': {split} = {fold_size!r} must divide its {len(image_rows)} images")
    photos: list[Path | None] = [None] * len(image_rows)
    photos_file = root / f"{split}_photos.txt"
    if photos_file.is_file():
        listed = [x.strip() for x in read_text(photos_file, "photo list").splitlines() if x.strip()]
        if len(listed) != len(image_rows):
            raise DataError(f"{photos_file}: {len(listed)} photos for {len(image_rows)} images")
        photos = [Path(x) for x in listed]
    return RetrievalSplit(
        dataset=name, split=split,
        image_paths=[RegionRows(ims, str(r), row=r, photo=p) for r, p in zip(image_rows, photos, strict=True)],
        image_ids=ids, captions=captions, caption_to_image=np.repeat(np.arange(len(image_rows)), k), source=caps,
        fold_size=fold_size,
    )  # fmt: skip
