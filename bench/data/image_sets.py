"""The split of an image-to-image retrieval set (eval-only, task ``image_retrieval``): labelled images, and which of
them query which gallery. The published layouts that produce it (CUB, Cars196, SOP, In-Shop, iNaturalist) are read by
:mod:`bench.data.image_formats`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from bench.data.base import RetrievalSplit
from bench.errors import DataError

__all__ = ["ImageRetrievalSplit"]

@dataclass(frozen=True)
class ImageRetrievalSplit:
    """One split of an image-to-image retrieval set: images with class labels.

    Attributes:
        dataset: Dataset name.
        split: Split name (``train``, ``test``).
        image_paths: One absolute path per image.
        image_ids: One stable id per image (the file's path as listed).
        labels: int64 ``[n_images]`` class ids (same id = same class; positives of each other).
        query_rows: int64 rows that are queries, with ``gallery_rows`` (In-Shop); None: every image queries all
            the others (the query itself excluded).
        gallery_rows: int64 rows that form the gallery; None with ``query_rows`` None.
        source: The list file the split was read from, named in errors.
    """

    task: ClassVar[str] = "image_retrieval"

    dataset: str
    split: str
    image_paths: Sequence[Path]
    image_ids: Sequence[str]
    labels: np.ndarray
    query_rows: np.ndarray | None = None
    gallery_rows: np.ndarray | None = None
    source: Path | None = None
    _images: list[RetrievalSplit] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = str(self.source or f"{self.dataset}/{self.split}")
        n = len(self.image_paths)
        if n == 0:
            raise DataError(f"{where}: split {self.split!r} has no images")
        if len(self.image_ids) != n or np.shape(self.labels) != (n,):
            raise DataError(f"{where}: {n} images but {len(self.image_ids)} ids and {np.shape(self.labels)} labels")
        object.__setattr__(self, "labels", np.asarray(self.labels, dtype=np.int64))
        if (self.query_rows is None) != (self.gallery_rows is None):
            raise DataError(f"{where}: query_rows and gallery_rows must be given together")
        for name in ("query_rows", "gallery_rows"):
            rows = getattr(self, name)
            if rows is not None:
                rows = np.asarray(rows, dtype=np.int64)
                if rows.size == 0 or rows.min() < 0 or rows.max() >= n:
                    raise DataError(f"{where}: {name} is empty or out of range [0, {n})")
                object.__setattr__(self, name, rows)

    def __str__(self) -> str:
        q = "" if self.query_rows is None else f", {len(self.query_rows)} queries / {len(self.gallery_rows)} gallery"
        return f"{self.n_images} images, {len(np.unique(self.labels))} classes{q}"

    @property
    def n_images(self) -> int:
        """Number of images."""
        return len(self.image_paths)

    def images(self) -> RetrievalSplit:
        """The images as a caption-less :class:`RetrievalSplit`, for the harness's encoders and feature cache."""
        if not self._images:
            self._images.append(
                RetrievalSplit(
                    dataset=self.dataset,
                    split=self.split,
                    image_paths=list(self.image_paths),
                    image_ids=list(self.image_ids),
                    captions=[],
                    caption_to_image=np.zeros(0, dtype=np.int64),
                    image_labels=self.labels,
                    source=self.source,
                )
            )
        return self._images[0]
