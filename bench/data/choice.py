"""Choice sets (eval-only): items of k images and m captions with the correct assignment, for compositional tests.

A model passes an item's *text* test when every image of the item scores its own caption strictly above each other
caption of the item, its *image* test (items of two or more images) when every such caption scores its own image
strictly above each other image, and the *group* test when it passes both (Winoground's three scores; SugarCrepe's
accuracy is the text test of one image and two captions). Ties fail (:mod:`bench.scoring.choice`).

Formats (``format = ...`` in a dataset table):

* ``sugarcrepe``: SugarCrepe's seven JSON files (``{"<n>": {"filename", "caption", "negative_caption"}}``) in root
  or ``root/data``, over COCO val2017 (option ``images``, default ``val2017``, relative to root). Option ``subsets``
  reads fewer than the seven. Split ``test``. Averages: replace, swap and add, the means of their subsets.
* ``winoground``: the release's ``examples.jsonl`` (``id, image_0, image_1, caption_0, caption_1, ...``) in root or
  ``root/data``, with the ``<image_0>.png`` files in ``images`` (default: ``images`` beside the jsonl). Split
  ``test``. One subset, all 400 items.
* ``caption_swaps``: a choice set made from an image-text split (option ``base``: its format, default
  ``flat_json``, read from the same root and split with ``base_options``): for each caption, a negative that swaps
  two object words (``swap_obj``) or two attribute words (``swap_att``) of the caption, chosen with ``seed``;
  captions with no such pair give no item (:mod:`bench.data.swaps`).

ARO's tests (:mod:`bench.data.aro`) and VALSE (:mod:`bench.data.valse`) build their items with the same
:class:`ItemBuilder`. Every image path is checked to exist when the split loads; errors name the file and the item.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bench.data.base import RetrievalSplit, json_lines, only_test_split, read_json
from bench.data.refs import ImageRef
from bench.data.registry import register_format
from bench.data.stamps import file_stamp
from bench.errors import ConfigError, DataError

__all__ = [
    "ChoiceItem",
    "ChoiceSplit",
    "ItemBuilder",
    "load_caption_swaps",
    "load_sugarcrepe",
    "load_winoground",
    "text_field",
]

SUGARCREPE_GROUPS = {
    "replace": ("replace_obj", "replace_att", "replace_rel"),
    "swap": ("swap_obj", "swap_att"),
    "add": ("add_obj", "add_att"),
}


@dataclass(frozen=True)
class ChoiceItem:
    """One item: images and captions (rows of the split's lists) and, for each image, its correct caption.

    Attributes:
        id: The item's id in its file (SugarCrepe's key, Winoground's ``id``).
        subset: The subset it is scored in (SugarCrepe's file, ``swap_obj``...).
        images: Rows into :attr:`ChoiceSplit.image_paths`.
        captions: Rows into :attr:`ChoiceSplit.captions`.
        truth: ``truth[a]`` is the position in ``captions`` of image ``a``'s correct caption.
    """

    id: str
    subset: str
    images: tuple[int, ...]
    captions: tuple[int, ...]
    truth: tuple[int, ...]


@dataclass(frozen=True)
class ChoiceSplit:
    """A choice set: distinct images and captions, and the items that choose among them.

    Attributes:
        dataset: Dataset name.
        split: Split name.
        image_paths: Each distinct image once.
        captions: Each distinct caption once.
        items: The items, in file order.
        groups: The paper's averages: a name -> the subsets it is the mean of.
        source: The file (or folder) read, named in errors.
    """

    task: ClassVar[str] = "choice"

    dataset: str
    split: str
    image_paths: Sequence[Path | ImageRef]
    captions: Sequence[str]
    items: Sequence[ChoiceItem]
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    source: Path | None = None
    _retrieval: list[RetrievalSplit] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = str(self.source or f"{self.dataset}/{self.split}")
        if not self.items:
            raise DataError(f"{where}: split {self.split!r} has no items")
        n_img, n_cap = len(self.image_paths), len(self.captions)
        for item in self.items:
            at = f"{where}: item {item.id!r}"
            if len(item.images) + len(item.captions) < 3:
                raise DataError(f"{at}: an item needs two captions or two images to choose among")
            if len(item.truth) != len(item.images) or len(set(item.truth)) != len(item.truth):
                raise DataError(f"{at}: field 'truth' must give each image its own caption")
            if any(not 0 <= t < len(item.captions) for t in item.truth):
                raise DataError(f"{at}: field 'truth' is out of range of its {len(item.captions)} captions")
            if any(not 0 <= i < n_img for i in item.images) or any(not 0 <= c < n_cap for c in item.captions):
                raise DataError(f"{at}: an image or caption row is out of range")
        subsets = set(self.subsets())
        for name, parts in self.groups.items():
            if not set(parts) <= subsets:
                missing = ", ".join(sorted(set(parts) - subsets))
                raise DataError(f"{where}: average {name!r} needs subset(s) {missing}, which the split does not have")

    def __str__(self) -> str:
        return f"{len(self.items)} items over {len(self.image_paths)} images and {len(self.captions)} captions"

    def subsets(self) -> list[str]:
        """The subsets, in order of first appearance."""
        return list(dict.fromkeys(item.subset for item in self.items))

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (image row, caption row) pair the items score, item by item, image-major: int64 ``[P]`` image rows,
        ``[P]`` caption rows and ``[n_items + 1]`` offsets of each item's pairs."""
        img, cap, offsets = [], [], [0]
        for item in self.items:
            for i in item.images:
                img.extend([i] * len(item.captions))
                cap.extend(item.captions)
            offsets.append(len(img))
        return np.asarray(img, dtype=np.int64), np.asarray(cap, dtype=np.int64), np.asarray(offsets, dtype=np.int64)

    def retrieval(self) -> RetrievalSplit:
        """The images and captions as a :class:`RetrievalSplit`, for the harness's encoders and feature cache (a
        caption's image is the first image of the first item that holds it)."""
        if not self._retrieval:
            owner = np.zeros(len(self.captions), dtype=np.int64)
            seen = np.zeros(len(self.captions), dtype=bool)
            for item in self.items:
                for c in item.captions:
                    if not seen[c]:
                        owner[c], seen[c] = item.images[0], True
            self._retrieval.append(RetrievalSplit(
                dataset=self.dataset, split=self.split, image_paths=list(self.image_paths),
                image_ids=[str(p) for p in self.image_paths], captions=list(self.captions), caption_to_image=owner,
                source=self.source,
            ))  # fmt: skip
        return self._retrieval[0]

    def fingerprint(self) -> dict[str, str]:
        """Content keys: the images (paths and file stamps) and the items (captions, truth, subsets, averages)."""
        img, items = hashlib.sha256(), hashlib.sha256()
        for p in self.image_paths:
            img.update(f"{p}\0{p.stamp() if isinstance(p, ImageRef) else file_stamp(p)}\n".encode())
        for it in self.items:
            caps = "\0".join(self.captions[c] for c in it.captions)
            items.update(f"{it.id}\0{it.subset}\0{it.images}\0{it.truth}\0{caps}\n".encode())
        items.update(repr(sorted(self.groups.items())).encode())  # the averages a table reports
        return {"images": img.hexdigest()[:16], "items": items.hexdigest()[:16]}


class ItemBuilder:
    """Collects items, listing each image path and caption once; checks that every image exists."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.paths: dict[Path | ImageRef, int] = {}
        self.captions: dict[str, int] = {}
        self.items: list[ChoiceItem] = []

    def add(self, item_id: str, subset: str, images: Sequence[Path | ImageRef], captions: Sequence[str],
            truth: Sequence[int]) -> None:  # fmt: skip
        """Add one item (its images, files or boxes of files, and captions by value)."""
        rows = []
        for p in images:
            if p not in self.paths:
                file = p.container if isinstance(p, ImageRef) else p
                if not file.is_file():
                    raise DataError(f"{self.source}: item {item_id!r}: image {file} not found")
                self.paths[p] = len(self.paths)
            rows.append(self.paths[p])
        caps = []
        for c in captions:
            if not isinstance(c, str) or not c.strip():
                raise DataError(f"{self.source}: item {item_id!r}: a caption is empty or not a string")
            caps.append(self.captions.setdefault(c, len(self.captions)))
        if len(set(caps)) != len(caps):
            raise DataError(f"{self.source}: item {item_id!r}: two of its captions are the same text")
        self.items.append(ChoiceItem(str(item_id), subset, tuple(rows), tuple(caps), tuple(truth)))

    def build(self, dataset: str, split: str, groups: Mapping[str, tuple[str, ...]],
              source: Path | None = None) -> ChoiceSplit:  # fmt: skip
        """The split."""
        return ChoiceSplit(dataset, split, list(self.paths), list(self.captions), self.items, dict(groups),
                           source=source or self.source)  # fmt: skip


def _find(root: Path, name: str, what: str) -> Path:
    for folder in (root, root / "data"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{root}: {what} {name} not found (looked in {root} and {root / 'data'})")


def text_field(row: Any, key: str, path: Path, item: str) -> str:
    """``row[key]``, a non-empty string; :class:`DataError` naming the file, the item and the field otherwise."""
    if not isinstance(row, Mapping):
        raise DataError(f"{path}: item {item!r} is not a JSON object")
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{path}: item {item!r}: field {key!r} is missing or empty")
    return value


@register_format("sugarcrepe", task="choice")
def load_sugarcrepe(root: Path, split: str, *, name: str = "sugarcrepe", images: str = "val2017",
                    subsets: list[str] | None = None) -> ChoiceSplit:  # fmt: skip
    """SugarCrepe (Hsieh et al., NeurIPS 2023): 7,512 items of one COCO val2017 photo, its caption and a hard negative.

    Args:
        root: Folder with the seven ``<subset>.json`` files (or ``root/data``).
        split: ``test``.
        name: Dataset name stamped on the split.
        images: The COCO val2017 image folder, relative to root (or absolute).
        subsets: The subsets to read (default all seven); an average whose subsets are not all read is left out.

    Returns:
        The split: one item per entry, captions ``(caption, negative_caption)``, truth ``(0,)``.
    """
    only_test_split(root, split, "sugarcrepe")
    known = [s for parts in SUGARCREPE_GROUPS.values() for s in parts]
    chosen = known if subsets is None else subsets
    if not isinstance(chosen, list) or not chosen or any(s not in known for s in chosen):
        raise ConfigError(f"option 'subsets' must be a non-empty list of {', '.join(known)}; got {subsets!r}")
    image_dir = root / images
    builder = ItemBuilder(root)
    for subset in chosen:
        path = _find(root, f"{subset}.json", "SugarCrepe file")
        rows = read_json(path)
        if not isinstance(rows, Mapping):
            raise DataError(f"{path}: expected a JSON object of items, got {type(rows).__name__}")
        builder.source = path
        for key, row in rows.items():
            file = text_field(row, "filename", path, key)
            pos, neg = text_field(row, "caption", path, key), text_field(row, "negative_caption", path, key)
            builder.add(f"{subset}/{key}", subset, [image_dir / file], [pos, neg], [0])
    groups = {g: parts for g, parts in SUGARCREPE_GROUPS.items() if set(parts) <= set(chosen)}
    return builder.build(name, split, groups, source=root)


@register_format("winoground", task="choice")
def load_winoground(root: Path, split: str, *, name: str = "winoground", images: str | None = None) -> ChoiceSplit:
    """Winoground (Thrush et al., CVPR 2022): 400 items of two images and two captions with the same words.

    Args:
        root: Folder with the release's ``examples.jsonl`` (or ``root/data``).
        split: ``test``.
        name: Dataset name stamped on the split.
        images: Folder of ``<image_0>.png`` files, relative to root; default ``images`` beside the jsonl.

    Returns:
        The split: images ``(image_0, image_1)``, captions ``(caption_0, caption_1)``, truth ``(0, 1)``.
    """

    only_test_split(root, split, "winoground")
    path = _find(root, "examples.jsonl", "Winoground file")
    image_dir = root / images if images is not None else path.parent / "images"
    builder = ItemBuilder(path)
    for line, row in json_lines(path, "Winoground file"):
        item = str(row.get("id", line - 1))
        imgs = [image_dir / f"{text_field(row, f'image_{k}', path, item)}.png" for k in (0, 1)]
        caps = [text_field(row, f"caption_{k}", path, item) for k in (0, 1)]
        builder.add(item, "all", imgs, caps, [0, 1])
    return builder.build(name, split, {})


@register_format("caption_swaps", task="choice")
def load_caption_swaps(root: Path | None = None, split: str = "test", *, name: str = "caption_swaps",
                       base: str = "flat_json", base_options: dict[str, Any] | None = None, seed: int = 0,
                       kinds: list[str] | None = None, work_dir: Path | None = None) -> ChoiceSplit:  # fmt: skip
    """A choice set from an image-text split: each caption against a copy with two of its words swapped.

    Args:
        root: The image-text set's root (None for a generated set such as ``synthetic``).
        split: Its split.
        name: Dataset name stamped on the split.
        base: The image-text format that reads root (``flat_json``: coco-sample's).
        base_options: That format's options (``{n_test = 24}`` for ``synthetic``).
        seed: Which pair of words is swapped where a caption has several.
        kinds: ``swap_obj`` and/or ``swap_att`` (default both).

    Returns:
        The split: items ``(caption, swapped)`` of one image, truth ``(0,)``, subset the kind.
    """
    from bench.data import load_split
    from bench.data.registry import format_task
    from bench.data.swaps import KINDS, swapped

    chosen = list(KINDS) if kinds is None else kinds
    if not isinstance(chosen, list) or not chosen or any(k not in KINDS for k in chosen):
        raise ConfigError(f"option 'kinds' must be a non-empty list of {', '.join(KINDS)}; got {kinds!r}")
    if not isinstance(base, str) or format_task(base) != "itr":
        raise ConfigError(f"option 'base' must name an image-text format, got {base!r}")
    if base_options is not None and not isinstance(base_options, Mapping):
        raise ConfigError(f"option 'base_options' must be a table of {base}'s options, got {base_options!r}")
    spec = {"format": base, **(base_options or {})} | ({"root": str(root)} if root is not None else {})
    source = load_split(name, spec, split, work_dir=work_dir or Path("work_dir"))
    assert isinstance(source, RetrievalSplit)
    rng = np.random.default_rng(seed)
    builder = ItemBuilder(Path(source.source or root or base))
    for j, caption in enumerate(source.captions):
        for kind in chosen:
            negative = swapped(caption, kind, rng)
            if negative is not None:
                path = Path(source.image_paths[int(source.caption_to_image[j])])
                builder.add(f"{kind}/{j}", kind, [path], [caption, negative], [0])
    if not builder.items:
        raise DataError(f"{source.source}: no caption of split {split!r} has two words to swap")
    return builder.build(name, split, {})

