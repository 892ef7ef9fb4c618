"""Image-to-image retrieval sets (eval-only) from their published folder layouts: CUB, Cars196, SOP, In-Shop,
iNaturalist; each loader returns an :class:`~bench.data.image_sets.ImageRetrievalSplit`.

Formats (``format = ...`` in a dataset table), each given ``root``, the folder the archive extracts to:

* ``cub``: CUB-200-2011. ``images.txt`` (``<image_id> <class folder>/<file>``), ``image_class_labels.txt``
  (``<image_id> <class_id>``), ``classes.txt`` (``<class_id> <name>``) and ``images/``. Retrieval split (not the
  classification one in ``train_test_split.txt``): train = classes 1-100, test = classes 101-200.
* ``cars196``: Stanford Cars, the ``cars_annos.mat`` layout (``car_ims/`` beside it; reading the ``.mat`` needs
  scipy). Without scipy, a CSV export of the same ``annotations`` table is read instead: ``cars_annos.csv`` with a
  header holding ``relative_im_path`` and ``class`` (other columns, such as the bounding box and ``test``, are
  ignored), plus ``class_names.txt`` (one name per line, class 1 first) when present. Train = classes 1-98,
  test = classes 99-196.
* ``sop``: Stanford Online Products. ``Ebay_train.txt`` / ``Ebay_test.txt``: a header line, then
  ``<image_id> <class_id> <super_class_id> <path>``.
* ``inshop``: In-Shop Clothes Retrieval. ``list_eval_partition.txt`` (in root or ``root/Eval``): a count line, a header
  line, then ``<image_name> <item_id> <train|query|gallery>``; images under root (``img/...``). Test = query images
  against gallery images; train = the train images as one set.
* ``inaturalist``: iNaturalist 2018 as ROADMAP splits it (the CUSA paper's Table 10):
  ``Inat_dataset_splits/Inaturalist_{train,test}_set1.txt``, one image path per line relative to root; the class is
  the species folder (``.../<species id>/<file>``).

Single-set splits (all but In-Shop test) use every image as a query against all the others. Every listed image is
checked to exist at load time. Errors are :class:`~bench.errors.DataError` naming the file, the line (1-based, as
an editor shows it) and the field.
"""


from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bench.data.base import text_rows
from bench.data.image_sets import ImageRetrievalSplit
from bench.data.registry import register_format
from bench.errors import DataError, SplitNotFoundError

__all__ = ["load_cars196", "load_cub", "load_inaturalist", "load_inshop", "load_sop"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------------
# helpers


def _int(value: str, path: Path, line: int, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{path.name} line {line}: field {name!r} must be an integer, got {value!r}") from None


def _fields(parts: list[str], n: int, path: Path, line: int, names: str) -> list[str]:
    if len(parts) < n:
        raise DataError(f"{path.name} line {line}: expected {n} fields ({names}), got {len(parts)}")
    return parts


def _existing(path: Path, list_file: Path, line: int) -> Path:
    if not os.path.exists(path):
        raise DataError(f"{list_file.name} line {line}: image {path} is listed but does not exist")
    return path


def _class_split(split: str, n_classes: int, source: Path) -> tuple[int, int]:
    """Inclusive class-id range of ``split`` when the first half of the classes trains and the second half tests."""
    half = n_classes // 2
    ranges = {"train": (1, half), "test": (half + 1, n_classes)}
    if split not in ranges:
        raise SplitNotFoundError(f"{source}: unknown split {split!r}; available splits: train, test")
    return ranges[split]


def _dataset_root(root: Path, marker: str, sub: str) -> Path:
    """``root``, or ``root/sub`` when only that holds ``marker`` (an archive extracted one level up)."""
    if not (root / marker).exists() and (root / sub / marker).exists():
        return root / sub
    return root


# --------------------------------------------------------------------------------------------------------------------
# CUB-200-2011


def _cub_classes(path: Path) -> dict[int, str]:
    classes: dict[int, str] = {}
    for line, parts in text_rows(path, "class list (classes.txt)"):
        _fields(parts, 2, path, line, "class_id, name")
        cid = _int(parts[0], path, line, "class_id")
        if cid in classes:
            raise DataError(f"{path.name} line {line}: class_id {cid} is listed twice")
        classes[cid] = parts[1]
    if not classes:
        raise DataError(f"{path}: no classes listed")
    return classes


@register_format("cub", task="image_retrieval")
def load_cub(root: Path, split: str, *, name: str = "cub", n_classes: int = 200) -> ImageRetrievalSplit:
    """CUB-200-2011 for retrieval: train = classes 1-100, test = classes 101-200 (5,924 images).

    Args:
        root: The ``CUB_200_2011`` folder (or the folder holding it).
        split: ``train`` or ``test``.
        name: Dataset name stamped on the split.
        n_classes: Classes of the full set; the first half trains, the second half tests.

    Returns:
        The split, images in ``images.txt`` order.
    """
    root = _dataset_root(root, "images.txt", "CUB_200_2011")
    lo, hi = _class_split(split, n_classes, root)
    classes = _cub_classes(root / "classes.txt")
    labels_file = root / "image_class_labels.txt"
    label_of: dict[str, tuple[int, int]] = {}
    for line, parts in text_rows(labels_file, "label list (image_class_labels.txt)"):
        _fields(parts, 2, labels_file, line, "image_id, class_id")
        cid = _int(parts[1], labels_file, line, "class_id")
        if cid not in classes:
            raise DataError(f"{labels_file.name} line {line}: unknown class_id {cid} (not in classes.txt)")
        label_of[parts[0]] = (cid, line)
    images_file = root / "images.txt"
    paths, ids, labels = [], [], []
    for line, parts in text_rows(images_file, "image list (images.txt)"):
        _fields(parts, 2, images_file, line, "image_id, path")
        if parts[0] not in label_of:
            raise DataError(f"{images_file.name} line {line}: image_id {parts[0]} has no class in {labels_file.name}")
        cid = label_of[parts[0]][0]
        if lo <= cid <= hi:
            paths.append(_existing(root / "images" / parts[1], images_file, line))
            ids.append(parts[1])
            labels.append(cid)
    return ImageRetrievalSplit(name, split, paths, ids, np.asarray(labels), source=images_file)


# --------------------------------------------------------------------------------------------------------------------
# Cars196


def _mat_rows(path: Path) -> Iterator[tuple[int, str, int]]:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError(
            f"{path}: reading cars_annos.mat needs scipy (pip install scipy), or provide the CSV export "
            "cars_annos.csv (columns relative_im_path, class) beside it"
        ) from None
    try:
        mat = loadmat(str(path), squeeze_me=True)
    except Exception as e:  # scipy raises several types for a truncated or foreign file
        raise DataError(f"{path}: cannot read MATLAB file ({e})") from None
    if "annotations" not in mat:
        raise DataError(f"{path}: no 'annotations' variable (found: {', '.join(k for k in mat if k[0] != '_')})")
    annos = np.atleast_1d(mat["annotations"])
    names = annos.dtype.names or ()
    for key in ("relative_im_path", "class"):
        if key not in names:
            raise DataError(f"{path}: annotations have no field {key!r} (fields: {', '.join(names)})")
    for i, a in enumerate(annos, start=1):
        yield i, str(a["relative_im_path"]), int(a["class"])


def _csv_rows(path: Path) -> Iterator[tuple[int, str, int]]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            for col in ("relative_im_path", "class"):
                if col not in header:
                    raise DataError(f"{path}: no column {col!r} in header; columns: {', '.join(header) or '(none)'}")
            for row in reader:
                line = reader.line_num
                yield line, (row["relative_im_path"] or "").strip(), _int(row["class"] or "", path, line, "class")
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None


@register_format("cars196", task="image_retrieval")
def load_cars196(root: Path, split: str, *, name: str = "cars196", n_classes: int = 196) -> ImageRetrievalSplit:
    """Stanford Cars (Cars196) for retrieval: train = classes 1-98, test = classes 99-196 (8,131 images).

    Args:
        root: The folder holding ``cars_annos.mat`` (or ``cars_annos.csv``) and ``car_ims/``.
        split: ``train`` or ``test``.
        name: Dataset name stamped on the split.
        n_classes: Classes of the full set; the first half trains, the second half tests.

    Returns:
        The split, images in annotation order.
    """
    lo, hi = _class_split(split, n_classes, root)
    mat, csv_file = root / "cars_annos.mat", root / "cars_annos.csv"
    if mat.is_file():
        source, rows, where = mat, _mat_rows(mat), "annotation {}"
    elif csv_file.is_file():
        source, rows, where = csv_file, _csv_rows(csv_file), "line {}"
    else:
        raise DataError(f"{mat}: annotation file not found (nor its CSV export {csv_file.name})")
    paths, ids, labels = [], [], []
    for i, rel, cid in rows:
        at = f"{source.name} {where.format(i)}"
        if not 1 <= cid <= n_classes:
            raise DataError(f"{at}: unknown class {cid} (classes are 1-{n_classes})")
        if not rel:
            raise DataError(f"{at}: field 'relative_im_path' is empty")
        if lo <= cid <= hi:
            if not os.path.exists(root / rel):
                raise DataError(f"{at}: image {root / rel} is listed but does not exist")
            paths.append(root / rel)
            ids.append(rel)
            labels.append(cid)
    return ImageRetrievalSplit(name, split, paths, ids, np.asarray(labels), source=source)


# --------------------------------------------------------------------------------------------------------------------
# Stanford Online Products


@register_format("sop", task="image_retrieval")
def load_sop(root: Path, split: str, *, name: str = "sop") -> ImageRetrievalSplit:
    """Stanford Online Products: ``Ebay_test.txt`` (60,502 images, 11,316 classes) or ``Ebay_train.txt``.

    Args:
        root: The ``Stanford_Online_Products`` folder (or the folder holding it).
        split: ``train`` or ``test``.
        name: Dataset name stamped on the split.

    Returns:
        The split; labels are the product ``class_id``.
    """
    root = _dataset_root(root, "Ebay_test.txt", "Stanford_Online_Products")
    if split not in ("train", "test"):
        raise SplitNotFoundError(f"{root}: unknown split {split!r}; available splits: train, test")
    path = root / f"Ebay_{split}.txt"
    paths, ids, labels = [], [], []
    super_of: dict[int, tuple[int, int]] = {}
    for line, parts in text_rows(path, f"image list (Ebay_{split}.txt)"):
        if line == 1 and parts[:2] == ["image_id", "class_id"]:
            continue
        _fields(parts, 4, path, line, "image_id, class_id, super_class_id, path")
        cid = _int(parts[1], path, line, "class_id")
        sup = _int(parts[2], path, line, "super_class_id")
        if cid < 1 or sup < 1:
            raise DataError(f"{path.name} line {line}: unknown class_id {cid} / super_class_id {sup} (ids start at 1)")
        first = super_of.setdefault(cid, (sup, line))
        if first[0] != sup:
            raise DataError(
                f"{path.name} line {line}: class_id {cid} has super_class_id {sup}, but line {first[1]} gave {first[0]}"
            )
        paths.append(_existing(root / parts[3], path, line))
        ids.append(parts[3])
        labels.append(cid)
    return ImageRetrievalSplit(name, split, paths, ids, np.asarray(labels), source=path)


# --------------------------------------------------------------------------------------------------------------------
# In-Shop Clothes


_ITEM_ID = re.compile(r"^id_\d+$")


@register_format("inshop", task="image_retrieval")
def load_inshop(root: Path, split: str, *, name: str = "inshop") -> ImageRetrievalSplit:
    """In-Shop Clothes Retrieval: test = 14,218 query against 12,612 gallery images (3,985 items), or train.

    Args:
        root: The folder holding ``img/`` and ``list_eval_partition.txt`` (or ``Eval/list_eval_partition.txt``).
        split: ``test`` (query against gallery) or ``train``.
        name: Dataset name stamped on the split.

    Returns:
        The split; labels number the item ids (``id_00000001``) in sorted order.
    """
    path = root / "list_eval_partition.txt"
    if not path.is_file() and (root / "Eval" / "list_eval_partition.txt").is_file():
        path = root / "Eval" / "list_eval_partition.txt"
    wanted = {"test": ("query", "gallery"), "train": ("train",)}
    if split not in wanted:
        raise SplitNotFoundError(f"{root}: unknown split {split!r}; available splits: train, test")
    rows: list[tuple[int, str, str, str]] = []
    for line, parts in text_rows(path, "partition list (list_eval_partition.txt)"):
        if line <= 2 and (len(parts) == 1 or parts[:2] == ["image_name", "item_id"]):
            continue  # the image count and the header
        _fields(parts, 3, path, line, "image_name, item_id, evaluation_status")
        image, item, status = parts[:3]
        if not _ITEM_ID.match(item):
            raise DataError(f"{path.name} line {line}: unknown item_id {item!r} (expected id_<digits>)")
        if status not in ("train", "query", "gallery"):
            raise DataError(f"{path.name} line {line}: evaluation_status {status!r} is not train, query or gallery")
        if status in wanted[split]:
            rows.append((line, image, item, status))
    if not rows:
        raise DataError(f"{path}: no {' or '.join(wanted[split])} images listed")
    gallery_items = {item for _, _, item, status in rows if status == "gallery"}
    for line, _, item, status in rows:
        if status == "query" and item not in gallery_items:
            raise DataError(f"{path.name} line {line}: query item_id {item} has no gallery image")
    codes = {item: k for k, item in enumerate(sorted({r[2] for r in rows}))}
    paths = [_existing(root / image, path, line) for line, image, _, _ in rows]
    ids = [image for _, image, _, _ in rows]
    labels = np.asarray([codes[item] for _, _, item, _ in rows])
    status = np.asarray([r[3] for r in rows])
    query = gallery = None
    if split == "test":
        query, gallery = np.flatnonzero(status == "query"), np.flatnonzero(status == "gallery")
    return ImageRetrievalSplit(name, split, paths, ids, labels, query, gallery, source=path)


# --------------------------------------------------------------------------------------------------------------------
# iNaturalist 2018 (ROADMAP's retrieval split)


@register_format("inaturalist", task="image_retrieval")
def load_inaturalist(root: Path, split: str, *, name: str = "inaturalist", set_index: int = 1) -> ImageRetrievalSplit:
    """iNaturalist 2018 image retrieval as ROADMAP (Ramzi et al.) splits it and the CUSA paper scores it:
    ``Inat_dataset_splits/Inaturalist_{split}_set{set_index}.txt`` lists image paths relative to root, one per line
    (e.g. ``train_val2018/Plantae/7477/<hash>.jpg``); an image's class is the species folder it sits in (the
    test list: 136,093 images of 2,452 species).

    Args:
        root: The folder holding ``Inat_dataset_splits/`` and the images (``train_val2018/``).
        split: ``train`` or ``test``.
        name: Dataset name stamped on the split.
        set_index: Which of ROADMAP's splits (1).

    Returns:
        The split; labels are the species ids.
    """
    if split not in ("train", "test"):
        raise SplitNotFoundError(f"{root}: unknown split {split!r}; available splits: train, test")
    path = root / "Inat_dataset_splits" / f"Inaturalist_{split}_set{set_index}.txt"
    paths, ids, labels = [], [], []
    for line, parts in text_rows(path, f"image list (Inaturalist_{split}_set{set_index}.txt)"):
        if len(parts) != 1:
            raise DataError(f"{path.name} line {line}: expected one image path, got {len(parts)} fields")
        rel = parts[0]
        folders = rel.split("/")
        if len(folders) < 2:
            raise DataError(f"{path.name} line {line}: {rel!r} is not <...>/<species id>/<file>")
        species = _int(folders[-2], path, line, "species folder")
        paths.append(_existing(root / rel, path, line))
        ids.append(rel)
        labels.append(species)
    return ImageRetrievalSplit(name, split, paths, ids, np.asarray(labels), source=path)
