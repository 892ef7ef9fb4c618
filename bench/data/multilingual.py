"""Multilingual image-text sets: Crossmodal-3600 (``format = "xm3600"``) and Multi30K (``format = "multi30k"``).

Each split is read in one ``language``. A dataset table with ``languages = ["en", "de", ...]`` instead of
``language`` stands for one dataset per language (``<id>-<lang>``, see :func:`bench.config.expand_languages`): one
grid cell per language, each record naming its ``language``, and ``bench table`` puts the languages side by side.

* ``xm3600``: Google's release: ``captions.jsonl`` (one line per image: ``"image/key"`` and, per language code, an
  object whose ``caption`` is the list of that language's captions) and ``images/<key>.jpg``. All captions of the
  language are kept (CLIP_benchmark keeps only the first; ``first_caption_only`` does as it does). Test only.
* ``multi30k``: the ``multi30k/dataset`` repository: ``data/task1/raw/<set>.<lang>[.gz]`` (one caption per line)
  line-aligned with ``data/task1/image_splits/<set>.txt`` (Flickr30K file names), images in ``image_dir``.
  ``train``/``val`` read the sets of those names; ``test`` reads ``test_set`` (default ``test_2016_flickr``).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from bench.data.base import RetrievalSplit, read_text
from bench.data.gallery import GalleryBuilder
from bench.data.registry import register_format
from bench.errors import ConfigError, DataError, SplitNotFoundError

__all__ = ["load_multi30k", "load_xm3600"]


def _check_language(language: str, fmt: str) -> str:
    if not isinstance(language, str) or not language.strip():
        raise ConfigError(f"format {fmt!r}: option 'language' must be a language code, got {language!r}")
    return language


@register_format("xm3600")
def load_xm3600(
    root: Path,
    split: str,
    *,
    name: str = "xm3600",
    language: str = "en",
    captions_file: str = "captions.jsonl",
    image_dir: str = "images",
    first_caption_only: bool = False,
) -> RetrievalSplit:
    """Load Crossmodal-3600 in one language.

    Args:
        root: The release folder.
        split: ``test`` (the only split).
        name: Dataset name stamped on the split.
        language: Language code (``en``, ``de``, ``zh``, ... 36 in all).
        captions_file: The JSON-lines caption file, relative to root.
        image_dir: The image folder, relative to root; image ``<key>.jpg``.
        first_caption_only: Keep only each image's first caption in the language (CLIP_benchmark's protocol).

    Returns:
        The split; image ids are the image keys, in file order.
    """
    language = _check_language(language, "xm3600")
    if split != "test":
        raise SplitNotFoundError(f"{root}: XM3600 has only a test split, not {split!r}")
    path = root / captions_file
    b = GalleryBuilder(path)
    langs: set[str] = set()
    for lineno, line in enumerate(read_text(path, "caption file").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name}: line {lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: malformed JSON ({e.msg})") from None
        key = row.get("image/key") if isinstance(row, dict) else None
        if not isinstance(key, str) or not key:
            raise DataError(f"{where} has no field 'image/key'")
        langs.update(k for k, v in row.items() if isinstance(v, dict))
        entry = row.get(language)
        if not isinstance(entry, dict):
            continue  # checked below: a language no line has is a config error, one image without it is not
        caps = entry.get("caption")
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            raise DataError(f"{where} field '{language}.caption' is not a list of strings")
        caps = [c for c in caps if c.strip()][: 1 if first_caption_only else None]
        if caps:
            k = b.image(key, root / image_dir / f"{key}.jpg", key, where)
            b.captions[k].extend(caps)
    if not b.image_paths:
        have = ", ".join(sorted(langs)) or "(none)"
        raise ConfigError(f"{path}: no captions in language {language!r} (option 'language'); languages: {have}")
    return b.build(name, split)


def _lines(path: Path) -> list[str]:
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            if candidate.suffix == ".gz":
                try:
                    with gzip.open(candidate, "rt", encoding="utf-8") as f:
                        return f.read().splitlines()
                except UnicodeDecodeError as e:
                    raise DataError(f"{candidate}: not UTF-8 text (byte {e.start})") from None
                except (OSError, EOFError) as e:
                    raise DataError(f"{candidate}: cannot read ({e})") from None
            return read_text(candidate, "caption file").splitlines()
    raise SplitNotFoundError(f"{path}: file not found (nor {path.name}.gz)")


@register_format("multi30k")
def load_multi30k(
    root: Path,
    split: str,
    *,
    name: str = "multi30k",
    language: str = "en",
    image_dir: str = "images",
    test_set: str = "test_2016_flickr",
    captions: str = "data/task1/raw/{set}.{language}",
    image_list: str = "data/task1/image_splits/{set}.txt",
) -> RetrievalSplit:
    """Load Multi30K (task 1: one caption per image per language).

    Args:
        root: The repository folder.
        split: ``train``, ``val`` or ``test`` (the set ``test_set``), or any set name of the release.
        name: Dataset name stamped on the split.
        language: ``en``, ``de``, ``fr`` or ``cs``.
        image_dir: Folder of the Flickr30K images, relative to root.
        test_set: The set ``test`` reads: ``test_2016_flickr``, ``test_2017_flickr``, ``test_2018_flickr``...
        captions: Caption file pattern (``{set}``, ``{language}``); a ``.gz`` beside it is read too.
        image_list: Image list pattern (``{set}``), line-aligned with the captions.

    Returns:
        The split; image ids are the Flickr30K file names, in list order.
    """
    language = _check_language(language, "multi30k")
    name_of_set = test_set if split == "test" else split
    cap_path = root / captions.format(set=name_of_set, language=language)
    list_path = root / image_list.format(set=name_of_set)
    files = [line.strip() for line in _lines(list_path)]
    caps = _lines(cap_path)
    while files and not files[-1]:
        files.pop()
    while caps and not caps[-1].strip():
        caps.pop()
    if len(caps) != len(files):
        raise DataError(f"{cap_path}: {len(caps)} captions for the {len(files)} images of {list_path.name}; "
                        "the files are line-aligned")  # fmt: skip
    b = GalleryBuilder(cap_path)
    for i, (file, cap) in enumerate(zip(files, caps, strict=True), start=1):
        where = f"{cap_path.name}: line {i}"
        if not file:
            raise DataError(f"{list_path.name}: line {i} is empty")
        if not cap.strip():
            raise DataError(f"{where} is empty")
        k = b.image(file, root / image_dir / file, file, where)
        b.captions[k].append(cap)
    return b.build(name, split)
