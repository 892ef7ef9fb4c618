"""The one in-memory form every dataset loader produces: a :class:`RetrievalSplit`."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bench.data.refs import ImageRef
from bench.data.stamps import file_stamp
from bench.errors import DataError

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "RetrievalSplit",
    "holdout",
    "json_lines",
    "load_image",
    "max_image_pixels",
    "only_test_split",
    "read_json",
    "read_text",
    "subset",
    "text_rows",
    "to_rgb",
]


# Images larger than this are refused (a decompression bomb, or a file that is not what it says), as PIL's default
# limit; BENCH_MAX_IMAGE_PIXELS raises or lowers it.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485


def max_image_pixels() -> int:
    """The pixel limit of :func:`load_image` (``BENCH_MAX_IMAGE_PIXELS``, else PIL's default of about 89.5 MP)."""
    value = os.environ.get("BENCH_MAX_IMAGE_PIXELS", "")
    try:
        return int(value) if value else DEFAULT_MAX_IMAGE_PIXELS
    except ValueError:
        raise DataError(f"BENCH_MAX_IMAGE_PIXELS={value!r}: expected an integer number of pixels") from None


def to_rgb(im: Any) -> Any:
    """A PIL image of any mode as 8-bit RGB: 16- and 32-bit greyscale scaled to 0-255 (not clipped), transparency
    composited on white (as transformers' image processors do), palette, CMYK and the rest through PIL."""
    from PIL import Image

    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16"):
            top = 65535.0
        else:  # 32-bit integer or float: 16-bit data often arrives as "I"; else scale by the image's own maximum
            top = 65535.0 if arr.max(initial=0) <= 65535 and arr.min(initial=0) >= 0 and im.mode == "I" else arr.max()
        scaled = np.clip(np.round(arr / max(float(top), 1e-12) * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def load_image(path: Path | ImageRef):  # -> PIL.Image.Image (PIL imported lazily)
    """Open an image file, or an image inside a container (:class:`~bench.data.refs.ImageRef`), as RGB
    (:func:`to_rgb`), raising :class:`DataError` that names it when it is missing, a symlink loop, unreadable, or over
    the pixel limit (:func:`max_image_pixels`)."""
    from PIL import Image, UnidentifiedImageError

    limit = max_image_pixels()
    Image.MAX_IMAGE_PIXELS = limit  # PIL refuses twice the limit itself; the check below refuses the rest
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(path.read_bytes()) if isinstance(path, ImageRef) else path)
        with im:
            if im.width * im.height > limit:
                raise DataError(
                    f"{path}: {im.width}x{im.height} = {im.width * im.height:,} pixels is over the limit of {limit:,} "
                    "(a decompression bomb, or set BENCH_MAX_IMAGE_PIXELS)"
                )
            return to_rgb(im)
    except UnidentifiedImageError:  # an OSError whose text names an in-memory buffer, not the file
        raise DataError(f"{path}: cannot decode image (not a format PIL reads, or truncated)") from None
    except FileNotFoundError:
        if os.path.islink(path):
            raise DataError(f"{path}: image is a broken symlink (to {os.readlink(path)})") from None
        raise DataError(f"{path}: image file not found") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise DataError(f"{path}: image path is a symlink loop") from None
        raise DataError(f"{path}: cannot decode image ({e})") from None
    except Image.DecompressionBombError:
        raise DataError(
            f"{path}: over the limit of {limit:,} pixels (a decompression bomb, or set BENCH_MAX_IMAGE_PIXELS)"
        ) from None
    except (SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot decode image ({e})") from None


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of ``path``; :class:`DataError` naming the file and ``what`` it is when it is missing, a
    directory, not UTF-8 or unreadable."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")  # a BOM (editors on Windows) is not part of the text
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: {what} is a directory") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read {what} ({e.strerror})") from None


def read_json(path: Path, what: str = "annotation file") -> Any:
    """The parsed JSON of ``path``; :class:`DataError` naming the file, and the line and column of a syntax error."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno} column {e.colno} (char {e.pos}): {e.msg}") from None


def only_test_split(root: Path, split: str, fmt: str) -> None:
    """Raise :class:`~bench.errors.SplitNotFoundError` unless ``split`` is ``test``: the one split of an evaluation
    set (``fmt`` names its format in the message)."""
    if split != "test":
        from bench.errors import SplitNotFoundError

        raise SplitNotFoundError(f"{root}: {fmt} has only the split 'test', not {split!r}")


def json_lines(path: Path, what: str) -> list[tuple[int, Any]]:
    """(1-based line number, JSON object) of each non-blank line of a JSON-lines file; :class:`DataError` naming the
    file and the line for a line that is not JSON or not an object."""
    rows = []
    for line, text in enumerate(read_text(path, what).splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {line}: malformed JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {line}: expected a JSON object, got {type(row).__name__}")
        rows.append((line, row))
    return rows


def text_rows(path: Path, what: str, sep: str | None = None) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, fields split on ``sep``, whitespace by default) of each non-blank line of a UTF-8 list
    file; :class:`DataError` naming the file and ``what`` it is when it cannot be read (see :func:`read_text`)."""
    text = read_text(path, what)
    for i, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield i, line.split(sep)


@dataclass(frozen=True)
class RetrievalSplit:
    """One split of an image-text retrieval dataset.

    Captions per image vary; nothing assumes five. Images are listed once each, captions once each, and
    ``caption_to_image[j]`` is the row of caption ``j``'s image.

    Attributes:
        dataset: Dataset name (``synthetic``, ``coco``, ...).
        split: Split name (``train``, ``val``, ``test``).
        image_paths: One entry per image: a file path, or an :class:`~bench.data.refs.ImageRef` for an image inside
            a container (a tar shard, a parquet or Arrow file).
        image_ids: One stable id per image (file name or dataset id), same order as ``image_paths``.
        captions: Caption strings, one per caption row.
        caption_to_image: int64 array ``[n_captions]`` of image rows.
        image_labels: Optional int64 array ``[n_images]`` of class labels, used for image-to-image retrieval.
        source: The file the split was read from, named in errors.
        fold_size: Set by a dataset whose protocol also reports the mean over folds of this many consecutive images
            (COCO's 5K test: five 1K folds); None for one gallery.
        k_test: The re-ranking depth its protocol uses (LAVIS: 256 for COCO, 128 for Flickr30K), read by
            ``[eval] rerank_k = "auto"``; None where no protocol sets one.
    """

    task: ClassVar[str] = "itr"  # the task kind whose splits these are (bench.tasks)

    dataset: str
    split: str
    image_paths: Sequence[Path]
    image_ids: Sequence[str]
    captions: Sequence[str]
    caption_to_image: np.ndarray
    image_labels: np.ndarray | None = None
    source: Path | None = None
    fold_size: int | None = None
    k_test: int | None = None
    caption_ids: Sequence[int] | None = None  # COCO caption annotation ids (the coco preset's captions_file)
    _fingerprint: list[str] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = str(self.source or f"{self.dataset}/{self.split}")
        n_img = len(self.image_paths)
        if len(self.image_ids) != n_img:
            raise DataError(f"{where}: {len(self.image_ids)} image ids for {n_img} images")
        if n_img == 0:
            raise DataError(f"{where}: split {self.split!r} has no images")
        c2i = np.asarray(self.caption_to_image)
        if c2i.shape != (len(self.captions),):
            raise DataError(f"{where}: caption_to_image has shape {c2i.shape}, expected ({len(self.captions)},)")
        if not np.issubdtype(c2i.dtype, np.integer):
            raise DataError(f"{where}: caption_to_image must hold integers, got {c2i.dtype}")
        bad = np.flatnonzero((c2i < 0) | (c2i >= n_img))
        if bad.size:
            j = int(bad[0])
            raise DataError(f"{where}: caption {j} has image id {int(c2i[j])} out of range [0, {n_img})")
        for j, cap in enumerate(self.captions):
            if not isinstance(cap, str) or not cap.strip():
                raise DataError(f"{where}: caption {j} (field 'caption') is empty")
        if self.image_labels is not None and np.asarray(self.image_labels).shape != (n_img,):
            raise DataError(f"{where}: image_labels has shape {np.shape(self.image_labels)}, expected ({n_img},)")
        object.__setattr__(self, "caption_to_image", c2i.astype(np.int64, copy=False))

    def fold_rows(self) -> list[np.ndarray] | None:
        """The image rows of each evaluation fold the dataset declares (``fold_size``), or None."""
        if not self.fold_size:
            return None
        n = self.n_images // self.fold_size
        return [np.arange(k * self.fold_size, (k + 1) * self.fold_size) for k in range(n)]

    @property
    def n_images(self) -> int:
        """Number of images."""
        return len(self.image_paths)

    @property
    def n_captions(self) -> int:
        """Number of captions."""
        return len(self.captions)

    def image_to_captions(self) -> list[np.ndarray]:
        """Caption rows of each image (an image with no caption gets an empty array)."""
        order = np.argsort(self.caption_to_image, kind="stable")
        bounds = np.searchsorted(self.caption_to_image[order], np.arange(self.n_images + 1))
        return [order[bounds[i] : bounds[i + 1]] for i in range(self.n_images)]

    def load_image(self, i: int):  # -> PIL.Image.Image
        """Image ``i`` as an RGB PIL image; a missing or corrupt file raises :class:`DataError` naming it."""
        p = self.image_paths[i]
        return load_image(p if isinstance(p, ImageRef) else Path(p))

    def fingerprint(self, part: str = "all") -> str:
        """A content key of the images (``part="images"``: ids, paths, each file's stamp), the captions
        (``"captions"``: texts and the caption map, labels) or both (``"all"``).

        Caches key on it, so an edited caption or a replaced image never reuses stale rows, and a caption edit does
        not invalidate cached image features.
        """
        if part not in ("all", "images", "captions"):
            raise ValueError(f"fingerprint part must be all, images or captions, got {part!r}")
        if not self._fingerprint:
            img, cap = hashlib.sha256(), hashlib.sha256()
            for p, iid in zip(self.image_paths, self.image_ids, strict=True):
                # a file's size and mtime, or its sha256 ([eval] fingerprint = "content"); a container's, with the
                # image's place in it
                stamp = p.stamp() if isinstance(p, ImageRef) else file_stamp(p)
                img.update(f"{iid}\0{p}\0{stamp}\n".encode())
            for c in self.captions:
                cap.update(c.encode() + b"\n")
            cap.update(self.caption_to_image.tobytes())
            if self.image_labels is not None:
                img.update(np.asarray(self.image_labels, dtype=np.int64).tobytes())
            i, c = img.hexdigest()[:16], cap.hexdigest()[:16]
            self._fingerprint.extend([hashlib.sha256(f"{i}{c}".encode()).hexdigest()[:16], i, c])
        return self._fingerprint[("all", "images", "captions").index(part)]


def holdout(train: RetrievalSplit, fraction: float, seed: int = 0) -> tuple[RetrievalSplit, RetrievalSplit]:
    """Split train images (with all their captions) into train and val; deterministic, shared by every method."""
    n_val = max(1, int(round(train.n_images * fraction)))
    perm = np.random.default_rng(seed).permutation(train.n_images)
    val_rows, train_rows = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return subset(train, train_rows, train.split), subset(train, val_rows, "val-heldout")


def subset(split: RetrievalSplit, image_rows: np.ndarray, name: str) -> RetrievalSplit:
    """The images ``image_rows`` of ``split`` with their captions, renumbered."""
    remap = -np.ones(split.n_images, dtype=np.int64)
    remap[image_rows] = np.arange(len(image_rows))
    keep = np.flatnonzero(remap[split.caption_to_image] >= 0)
    return RetrievalSplit(
        dataset=split.dataset,
        split=name,
        image_paths=[split.image_paths[i] for i in image_rows],
        image_ids=[split.image_ids[i] for i in image_rows],
        captions=[split.captions[j] for j in keep],
        caption_to_image=remap[split.caption_to_image[keep]],
        image_labels=None if split.image_labels is None else np.asarray(split.image_labels)[image_rows],
        source=split.source,
    )
