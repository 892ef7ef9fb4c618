"""Long-caption retrieval sets: one image and one long description each (Long-CLIP, LoTLIP, FLAIR and FG-CLIP report
them). Image-text formats; a description longer than a model's text context is handled by the dataset table's
``long_text`` rule (:mod:`bench.encode.long_text`) and the record says how many were cut.

Formats (``format = ...`` in a dataset table):

* ``urban1k``: Urban1K as Long-CLIP evaluates it: ``image/<name>.jpg`` and ``caption/<name>.txt`` (the file's first
  line), 1,000 pairs in file-name order. Split ``test``.
* ``docci``: DOCCI's ``docci_descriptions.jsonlines`` (``example_id``, ``split``, ``image_file``, ``description``) with
  the photos in ``images/``; the split is the rows' ``split`` (``test``: 5,000; ``train``, ``qual_dev``, ``qual_test``).
* ``sharegpt4v``: ShareGPT4V's caption JSON (a list of ``{"image", "conversations"}``; the description is the
  ``gpt`` turn, newlines made spaces as Long-CLIP does), images under root. Options ``file`` (default: the one
  ``*.json`` in root), ``count`` (1,000 or 10,000: ShareGPT4V-1k/10k) and ``sam_only`` (default true: the first
  ``count`` entries whose image is an SA-1B photo, ``sam/...``; false: the first ``count`` entries of the file, as
  Long-CLIP's ``train/sharegpt4v.py`` reads its validation set). Split ``test``.
* ``jsonl``: any JSON-lines file of one image and one caption a line (ImageInWords, a DCI export): options ``files``
  (split -> file, default ``{split}.jsonl``), ``image_dir``, ``image_field`` and ``caption_field`` (a dotted path
  into the row, ``a.b.0``).

Errors name the file, the line or entry, and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.data.base import RetrievalSplit, json_lines, only_test_split, read_json, read_text
from bench.data.gallery import GalleryBuilder
from bench.data.registry import register_format
from bench.errors import ConfigError, DataError, SplitNotFoundError

__all__ = ["load_docci", "load_jsonl", "load_sharegpt4v", "load_urban1k"]


def _text(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {field!r} is missing or empty")
    return value.strip()


@register_format("urban1k")
def load_urban1k(root: Path, split: str, *, name: str = "urban1k", images: str = "image",
                 captions: str = "caption") -> RetrievalSplit:  # fmt: skip
    """Urban1K (Long-CLIP): 1,000 urban photos with one long description each.

    Args:
        root: Folder holding ``image/`` and ``caption/``.
        split: ``test``.
        name: Dataset name stamped on the split.
        images: The image folder, relative to root.
        captions: The caption folder, relative to root.
    """
    only_test_split(root, split, "urban1k")
    cap_dir, img_dir = root / captions, root / images
    if not cap_dir.is_dir():
        raise DataError(f"{cap_dir}: Urban1K caption folder not found")
    files = sorted(cap_dir.glob("*.txt"))
    if not files:
        raise DataError(f"{cap_dir}: no caption .txt files")
    gallery = GalleryBuilder(cap_dir)
    for path in files:
        lines = [x for x in read_text(path, "caption file").splitlines() if x.strip()]
        if not lines:
            raise DataError(f"{path}: caption file is empty")
        i = gallery.image(path.stem, img_dir / f"{path.stem}.jpg", path.stem, str(path))
        gallery.captions[i].append(lines[0].strip())
    return gallery.build(name, split)


@register_format("docci")
def load_docci(root: Path, split: str, *, name: str = "docci", file: str = "docci_descriptions.jsonlines",
               images: str = "images") -> RetrievalSplit:  # fmt: skip
    """DOCCI (Onoe et al., 2024): photos with long human descriptions; ``test`` has 5,000.

    Args:
        root: Folder holding the descriptions file and ``images/``.
        split: A value of the rows' ``split`` field: ``test``, ``train``, ``qual_dev`` or ``qual_test``.
        name: Dataset name stamped on the split.
        file: The descriptions file, relative to root.
        images: The image folder, relative to root.
    """
    path = root / file
    gallery = GalleryBuilder(path)
    seen: set[str] = set()
    for line, row in json_lines(path, "DOCCI descriptions file"):
        where = f"{path} line {line}"
        row_split = _text(row.get("split"), where, "split")
        seen.add(row_split)
        if row_split != split:
            continue
        image = _text(row.get("image_file"), where, "image_file")
        i = gallery.image(image, root / images / image, row.get("example_id", image), where)
        gallery.captions[i].append(_text(row.get("description"), where, "description"))
    if not gallery.image_paths:
        raise SplitNotFoundError(f"{path}: no rows of split {split!r}; splits there: {', '.join(sorted(seen))}")
    return gallery.build(name, split)


@register_format("sharegpt4v")
def load_sharegpt4v(root: Path, split: str, *, name: str = "sharegpt4v", file: str | None = None, count: int = 1000,
                    sam_only: bool = True) -> RetrievalSplit:  # fmt: skip
    """ShareGPT4V-1k / -10k: the first ``count`` entries of ShareGPT4V's caption JSON (SA-1B photos by default).

    Args:
        root: Folder holding the caption JSON; image paths in it are relative to root.
        split: ``test``.
        name: Dataset name stamped on the split.
        file: The caption JSON, relative to root (default: the only ``*.json`` there).
        count: How many entries (1,000 or 10,000).
        sam_only: Only entries whose image is under ``sam/`` (SA-1B).
    """
    only_test_split(root, split, "sharegpt4v")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ConfigError(f"option 'count' must be a positive integer, got {count!r}")
    if file is None:
        found = sorted(root.glob("*.json"))
        if len(found) != 1:
            raise DataError(f"{root}: expected one ShareGPT4V caption *.json, found {len(found)}; set file = \"...\"")
        path = found[0]
    else:
        path = root / file
    rows = read_json(path, "ShareGPT4V caption file")
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of entries, got {type(rows).__name__}")
    gallery = GalleryBuilder(path)
    taken = 0
    for k, row in enumerate(rows):
        where = f"{path} entry {k}"
        if not isinstance(row, Mapping):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        image = _text(row.get("image"), where, "image")
        if sam_only and not image.startswith("sam/"):
            continue
        turns = row.get("conversations")
        answer = next((t.get("value") for t in turns if isinstance(t, Mapping) and t.get("from") == "gpt"), None) \
            if isinstance(turns, list) else None  # fmt: skip
        caption = _text(answer, where, "conversations[gpt].value").replace("\n", " ")
        i = gallery.image(image, root / image, image, where)
        gallery.captions[i].append(caption)
        taken += 1
        if taken == count:
            break
    if taken < count:
        what = "SA-1B entries" if sam_only else "entries"
        raise DataError(f"{path}: {taken} {what}, fewer than count = {count}")
    return gallery.build(name, split)


def _dig(row: Mapping[str, Any], dotted: str, where: str) -> Any:
    value: Any = row
    for part in dotted.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise DataError(f"{where}: field {dotted!r} is missing")
    return value


@register_format("jsonl")
def load_jsonl(root: Path, split: str, *, name: str = "jsonl", files: dict[str, str] | None = None,
               image_dir: str | None = None, image_field: str = "image",
               caption_field: str = "caption") -> RetrievalSplit:  # fmt: skip
    """A JSON-lines file of one image and one caption a line (rows of one image may repeat it with more captions).

    Args:
        root: Dataset folder.
        split: Split name.
        name: Dataset name stamped on the split.
        files: Split -> file name relative to root; default ``{split}.jsonl``.
        image_dir: Folder the image paths are relative to; default root.
        image_field: Dotted path of the image file in a row.
        caption_field: Dotted path of the caption in a row.
    """
    if files is not None and not (isinstance(files, Mapping) and all(isinstance(v, str) for v in files.values())):
        raise ConfigError(f"option 'files' must map split names to file names, got {files!r}")
    if files is not None and split not in files:
        raise SplitNotFoundError(f"{root}: no file for split {split!r}; available splits: {', '.join(sorted(files))}")
    path = root / (files[split] if files is not None else f"{split}.jsonl")
    if not path.is_file():
        raise SplitNotFoundError(f"{path}: file of split {split!r} not found")
    img_root = root / image_dir if image_dir is not None else root
    gallery = GalleryBuilder(path)
    for line, row in json_lines(path, "JSON-lines file"):
        where = f"{path} line {line}"
        image = _text(_dig(row, image_field, where), where, image_field)
        i = gallery.image(image, img_root / image, image, where)
        gallery.captions[i].append(_text(_dig(row, caption_field, where), where, caption_field))
    return gallery.build(name, split)
