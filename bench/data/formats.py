"""Loaders for the common image-text retrieval annotation formats (the COCO / Flickr30K presets: :mod:`.presets`).

Formats (``format = ...`` in a dataset table) and their options:

* ``karpathy``: Karpathy's ``dataset_coco.json`` / ``dataset_flickr30k.json``. Options ``file`` (relative to root;
  default: the single ``dataset_*.json`` in root), ``image_dir`` (default root), ``restval_in_train`` (default true).
* ``albef``: ALBEF/BLIP ``coco_karpathy_{split}.json`` / ``flickr30k_{split}.json`` lists. Options ``files``
  (split -> file name), ``prefix`` (files are ``{prefix}_{split}.json``; default: the one prefix found in root),
  ``image_dir`` (default root).
* ``flat_json``: the CUSA reference format, a JSON list of ``{"image_path", "caption", "image_id"}`` rows, one per
  caption. Options ``files`` (default ``{split}.json``), ``image_dir`` (default root), ``sort_images``.
* ``csv``: a CSV file with a header, one row per caption. Options ``files`` (default ``{split}.csv``),
  ``image_dir``, ``image_column`` (default ``filepath``), ``caption_column`` (default ``caption``).
* ``flickr30k``: Karpathy Flickr30K (1K test); images in ``root/flickr30k-images`` or ``root/images``.
* ``coco``: Karpathy COCO (5K test; :func:`coco_1k_folds` gives the 1K protocol); images under root.

Conventions shared by all loaders: relative ``image_dir`` and file names resolve against ``root``; image paths are
absolute; images are ordered by first appearance in the file and captions are grouped by image in that order (so a
file whose rows of one image are contiguous keeps its caption order exactly). Every image path is checked to exist at
load time, and each image listed once (:mod:`.gallery`). Errors name the file and the row; JSON rows are counted from
0 (the list index), CSV rows from 1 (the first data row after the header) together with their line number.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.data.base import RetrievalSplit, read_json
from bench.data.gallery import GalleryBuilder
from bench.data.registry import register_format
from bench.errors import ConfigError, DataError, SplitNotFoundError

__all__ = [
    "load_albef",
    "load_csv",
    "load_flat_json",
    "load_karpathy",
]

log = logging.getLogger(__name__)

_STANDARD_SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _sub_path(root: Path, value: str | os.PathLike | None, key: str) -> Path:
    """``root / value`` for a relative value, ``value`` itself when absolute, ``root`` when None."""
    if value is None:
        return root
    if not isinstance(value, str | os.PathLike):
        raise ConfigError(f"option {key!r} must be a path string, got {type(value).__name__}")
    p = Path(os.path.expanduser(os.fspath(value)))
    return p if p.is_absolute() else root / p


def _split_file(
    root: Path, split: str, files: Mapping[str, str] | None, pattern: str, *, ext_hint: str
) -> tuple[Path, list[str]]:
    """The annotation file of ``split``, from the ``files`` option or from ``pattern``; DataError for unknown splits."""
    if files is not None:
        if not isinstance(files, Mapping) or not all(isinstance(v, str) for v in files.values()):
            raise ConfigError(f"option 'files' must map split names to file names, got {files!r}")
        available = sorted(files)
        if split not in files:
            raise SplitNotFoundError(
                f"{root}: unknown split {split!r}; available splits (option 'files'): {', '.join(available)}"
            )
        return _sub_path(root, files[split], "files"), available
    available = [s for s in _STANDARD_SPLITS if (root / pattern.format(split=s)).is_file()]
    path = root / pattern.format(split=split)
    if not path.is_file():
        hint = f"available splits: {', '.join(available)}" if available else f"no {ext_hint} files found there"
        raise SplitNotFoundError(f"{path}: annotation file for split {split!r} not found; {hint}")
    return path, available


def _field(row: Any, key: str, where: str) -> Any:
    if not isinstance(row, Mapping):
        raise DataError(f"{where} is not an object (got {type(row).__name__})")
    if key not in row or row[key] is None:
        raise DataError(f"{where} has no field {key!r}")
    return row[key]


def _caption(value: Any, where: str, key: str = "caption") -> str:
    if not isinstance(value, str):
        raise DataError(f"{where} field {key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where} field {key!r} is empty")
    return value


# ---------------------------------------------------------------------------------------------------------------
# karpathy


def _find_karpathy_file(root: Path) -> Path:
    found = sorted(root.glob("dataset_*.json")) if root.is_dir() else []
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataError(f"{root}: no dataset_*.json annotation file found; set option 'file'")
    raise ConfigError(f"{root}: several Karpathy files ({', '.join(p.name for p in found)}); set option 'file'")


@register_format("karpathy")
def load_karpathy(
    root: Path,
    split: str,
    *,
    name: str = "karpathy",
    file: str | None = None,
    image_dir: str | None = None,
    restval_in_train: bool = True,
) -> RetrievalSplit:
    """Load a split of a Karpathy ``dataset_*.json`` file (COCO, Flickr30K, Flickr8K).

    Args:
        root: Dataset folder.
        split: ``train``, ``val``, ``test`` (or ``restval`` when ``restval_in_train`` is false).
        name: Dataset name stamped on the split.
        file: The JSON file, relative to root; default: the single ``dataset_*.json`` in root.
        image_dir: Image folder, relative to root; default root. Image path = image_dir/filepath/filename.
        restval_in_train: Count ``restval`` images (COCO's 30K extra) as train, as VSE++/VSE∞ do.

    Returns:
        The split; image ids are ``cocoid`` when present, else the file name.
    """
    path = _sub_path(root, file, "file") if file is not None else _find_karpathy_file(root)
    data = read_json(path)
    images = data.get("images") if isinstance(data, Mapping) else None
    if not isinstance(images, list):
        raise DataError(f"{path}: expected an object with an 'images' list")
    img_root = _sub_path(root, image_dir, "image_dir")

    def split_of(row: Any, i: int) -> str:
        s = _field(row, "split", f"{path.name}: images[{i}]")
        return "train" if s == "restval" and restval_in_train else str(s)

    present = {split_of(row, i) for i, row in enumerate(images)}
    if split not in present:
        hint = " (restval is counted as train; set restval_in_train = false)" if split == "restval" else ""
        raise SplitNotFoundError(
            f"{path}: unknown split {split!r}{hint}; available splits: {', '.join(sorted(present))}"
        )

    b = GalleryBuilder(path)
    for i, row in enumerate(images):
        if split_of(row, i) != split:
            continue
        where = f"{path.name}: images[{i}]"
        filename = _field(row, "filename", where)
        sub = row.get("filepath") or ""
        image_id = row.get("cocoid", filename)
        k = b.image(i, img_root / sub / filename, image_id, where)
        sentences = _field(row, "sentences", where)
        if not isinstance(sentences, list) or not sentences:
            raise DataError(f"{where} field 'sentences' is empty or not a list")
        for j, sent in enumerate(sentences):
            sw = f"{where}.sentences[{j}]"
            b.captions[k].append(_caption(_field(sent, "raw", sw), sw, "raw"))
    return b.build(name, split)


# ---------------------------------------------------------------------------------------------------------------
# albef


def _find_albef_prefix(root: Path) -> str:
    prefixes = set()
    for s in _STANDARD_SPLITS:
        for p in root.glob(f"*_{s}.json") if root.is_dir() else []:
            prefixes.add(p.name[: -len(f"_{s}.json")])
    if len(prefixes) == 1:
        return prefixes.pop()
    if not prefixes:
        raise DataError(f"{root}: no *_train/_val/_test.json annotation files found; set option 'prefix' or 'files'")
    raise ConfigError(f"{root}: several file prefixes ({', '.join(sorted(prefixes))}); set option 'prefix'")


@register_format("albef")
def load_albef(
    root: Path,
    split: str,
    *,
    name: str = "albef",
    files: dict[str, str] | None = None,
    prefix: str | None = None,
    image_dir: str | None = None,
) -> RetrievalSplit:
    """Load a split of ALBEF/BLIP style annotation lists (``coco_karpathy_test.json``, ``flickr30k_val.json``).

    Rows are ``{"image": path, "caption": str}`` (train: one row per caption) or ``{"image": path, "caption":
    [str, ...]}`` (val/test: one row per image); both shapes are accepted in every split, grouped by image path.

    Args:
        root: Dataset folder.
        split: Split name.
        name: Dataset name stamped on the split.
        files: Split name -> file name relative to root; overrides ``prefix``.
        prefix: Files are ``{prefix}_{split}.json``; default: the one prefix found in root.
        image_dir: Image folder the ``image`` fields are relative to; default root.

    Returns:
        The split; image ids are the row's ``image_id`` when present, else its ``image`` path.
    """
    if files is None and prefix is None:
        prefix = _find_albef_prefix(root)
    path, _ = _split_file(root, split, files, f"{prefix}_{{split}}.json", ext_hint=f"{prefix}_*.json")
    rows = read_json(path)
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of rows, got {type(rows).__name__}")
    img_root = _sub_path(root, image_dir, "image_dir")
    b = GalleryBuilder(path)
    for i, row in enumerate(rows):
        where = f"{path.name}: row {i}"
        image = _field(row, "image", where)
        if not isinstance(image, str) or not image:
            raise DataError(f"{where} field 'image' is empty or not a string")
        caption = _field(row, "caption", where)
        k = b.image(image, img_root / image, row.get("image_id", image), where)
        if isinstance(caption, list):
            if not caption:
                raise DataError(f"{where} field 'caption' is empty")
            for j, c in enumerate(caption):
                b.captions[k].append(_caption(c, f"{where} caption[{j}]"))
        else:
            b.captions[k].append(_caption(caption, where))
    return b.build(name, split)


# ---------------------------------------------------------------------------------------------------------------
# flat_json (CUSA)


@register_format("flat_json")
def load_flat_json(
    root: Path,
    split: str,
    *,
    name: str = "flat_json",
    files: dict[str, str] | None = None,
    image_dir: str | None = None,
    sort_images: bool = False,
) -> RetrievalSplit:
    """Load a split in the CUSA reference format: a JSON list with one row per caption.

    Rows are ``{"image_path": "pics/x.jpg", "caption": "...", "image_id": "x.jpg"}`` (``image_id`` optional,
    default the path). Rows are grouped by ``image_id``; images come in order of first appearance, or sorted by
    ``image_id`` with ``sort_images`` (the order the CUSA reference code uses for val/test).

    Args:
        root: Dataset folder.
        split: Split name.
        name: Dataset name stamped on the split.
        files: Split name -> file name relative to root; default ``{split}.json``.
        image_dir: Folder the ``image_path`` fields are relative to; default root.
        sort_images: Order images by ``image_id`` instead of by first appearance.

    Returns:
        The split.
    """
    path, _ = _split_file(root, split, files, "{split}.json", ext_hint="*.json")
    rows = read_json(path)
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of rows, got {type(rows).__name__}")
    img_root = _sub_path(root, image_dir, "image_dir")
    b = GalleryBuilder(path)
    for i, row in enumerate(rows):
        where = f"{path.name}: row {i}"
        image_path = _field(row, "image_path", where)
        if not isinstance(image_path, str) or not image_path:
            raise DataError(f"{where} field 'image_path' is empty or not a string")
        caption = _caption(_field(row, "caption", where), where)
        image_id = str(row.get("image_id", image_path))
        k = b.image(image_id, img_root / image_path, image_id, where)
        b.captions[k].append(caption)
    return b.build(name, split, sort_images=sort_images)


# ---------------------------------------------------------------------------------------------------------------
# csv


@register_format("csv")
def load_csv(
    root: Path,
    split: str,
    *,
    name: str = "csv",
    files: dict[str, str] | None = None,
    image_dir: str | None = None,
    image_column: str = "filepath",
    caption_column: str = "caption",
) -> RetrievalSplit:
    """Load a split from a CSV file with a header row, one row per caption, grouped by identical image path.

    Args:
        root: Dataset folder.
        split: Split name.
        name: Dataset name stamped on the split.
        files: Split name -> file name relative to root; default ``{split}.csv``.
        image_dir: Folder the image paths are relative to; default root.
        image_column: Header of the image path column.
        caption_column: Header of the caption column.

    Returns:
        The split; image ids are the image paths as written in the file.
    """
    path, _ = _split_file(root, split, files, "{split}.csv", ext_hint="*.csv")
    img_root = _sub_path(root, image_dir, "image_dir")
    b = GalleryBuilder(path)
    try:
        # utf-8-sig: spreadsheet exports often start with a BOM that would otherwise glue onto the first header.
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            for col, key in ((image_column, "image_column"), (caption_column, "caption_column")):
                if col not in header:
                    cols = ", ".join(header) or "(none)"
                    raise DataError(f"{path}: no column {col!r} (option {key!r}) in header; columns: {cols}")
            for i, row in enumerate(reader, start=1):
                where = f"{path.name}: row {i} (line {reader.line_num})"
                image = row.get(image_column)
                if image is None:
                    raise DataError(f"{where} has no field {image_column!r}")
                if not image.strip():
                    raise DataError(f"{where} field {image_column!r} is empty")
                caption = _caption(_field(row, caption_column, where), where, caption_column)
                k = b.image(image, img_root / image, image, where)
                b.captions[k].append(caption)
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV: {e}") from None
    return b.build(name, split)


# ---------------------------------------------------------------------------------------------------------------
# presets
