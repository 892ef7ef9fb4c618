"""Building an image-text gallery from caption rows: images in order of first appearance, each listed once.

Every image-text format reads its rows into a :class:`GalleryBuilder`, so the gallery's integrity is checked in one
place: a missing file, one file under two ids, two files under one id, or a null/empty id is an error naming both
rows (a gallery that lists an image twice changes i2t and t2i silently).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.base import RetrievalSplit
from bench.data.refs import ImageRef
from bench.errors import DataError

__all__ = ["GalleryBuilder"]


@dataclass
class GalleryBuilder:
    """Groups caption rows by an image key, keeping images in order of first appearance."""

    source: Path
    image_paths: list[Path | ImageRef] = field(default_factory=list)
    image_ids: list[str] = field(default_factory=list)
    captions: list[list[str]] = field(default_factory=list)
    index: dict[Any, int] = field(default_factory=dict)
    path_keys: dict[Any, str] = field(default_factory=dict)
    first_seen: list[str] = field(default_factory=list)  # where each image was first listed, for errors
    by_path: dict[str, int] = field(default_factory=dict)
    by_id: dict[str, int] = field(default_factory=dict)

    def image(self, key: Any, path: Path | ImageRef, image_id: Any, where: str) -> int:
        """Row of the image ``key``, adding it on first sight after checking that its file exists (a container's images
        are checked by their loader) and that neither its
        file nor its id is another image's (a gallery listing one image twice changes i2t and t2i silently)."""
        i = self.index.get(key)
        if i is not None:
            if self.image_paths[i] != path:
                raise DataError(
                    f"{where}: image {image_id!r} has path {path}, but an earlier row gave {self.image_paths[i]}"
                )
            return i
        if image_id is None or (isinstance(image_id, str) and not image_id.strip()):
            raise DataError(f"{where}: image id is {'null' if image_id is None else 'empty'}")
        norm = os.path.normpath(path)
        if norm in self.by_path:
            j = self.by_path[norm]
            raise DataError(
                f"{where}: image file {path} is already image {self.image_ids[j]!r} ({self.first_seen[j]}); "
                "a gallery lists each image once"
            )
        if str(image_id) in self.by_id:
            j = self.by_id[str(image_id)]
            raise DataError(
                f"{where}: image id {image_id!r} is already {self.image_paths[j]} ({self.first_seen[j]}); "
                "two files cannot share an id"
            )
        if not isinstance(path, ImageRef) and not os.path.exists(path):
            if os.path.islink(path):
                raise DataError(f"{where} references image {path}, a broken symlink or a symlink loop")
            raise DataError(f"{where} references image {path}, which does not exist")
        i = self.index[key] = len(self.image_paths)
        self.by_path[norm], self.by_id[str(image_id)] = i, i
        self.first_seen.append(where)
        self.image_paths.append(path)
        self.image_ids.append(str(image_id))
        self.captions.append([])
        return i

    def build(
        self, dataset: str, split: str, *, sort_images: bool = False, labels: Iterable[int] | None = None
    ) -> RetrievalSplit:
        order = list(range(len(self.image_paths)))
        if sort_images:
            order.sort(key=lambda i: self.image_ids[i])
        caps: list[str] = []
        c2i: list[int] = []
        for new, old in enumerate(order):
            caps.extend(self.captions[old])
            c2i.extend([new] * len(self.captions[old]))
        if not order:
            raise DataError(f"{self.source}: split {split!r} has no images")
        return RetrievalSplit(
            dataset=dataset,
            split=split,
            image_paths=[self.image_paths[i] for i in order],
            image_ids=[self.image_ids[i] for i in order],
            captions=caps,
            caption_to_image=np.asarray(c2i, dtype=np.int64),
            image_labels=None if labels is None else np.asarray(list(labels), dtype=np.int64),
            source=self.source,
        )
