"""Precomputed embeddings: an external model's image and caption vectors (``.npy``) scored in the same grid and table.

Options: ``image_emb`` and ``text_emb`` (``.npy`` files, ``[rows, D]``). Rows follow the evaluated split's image and
caption order, unless ``image_ids`` / ``caption_ids`` (``.npy`` or ``.txt``, one id per row) align them by id:
image ids are the split's ``image_ids``, caption ids are ``"<image id>#<k>"`` with ``k`` the caption's position among
its image's captions (Flickr30K's token convention). Id files may hold more rows than the split (say every split
of a dataset); every split item needs one.

How it plugs into the harness: the adapter has no image or text model, so

* :meth:`Embeddings.split_features` gives a split's stage-1 features itself, the stored row of each image and
  caption (:func:`bench.evaluation.itr.evaluate` asks every adapter for it), and stage 2 reads those rows in float32, so
  the harness scores exactly the stored vectors (no fp16 feature cache in between);
* for raw inputs (``image_transform`` / ``tokenize``, which the harness's feature extraction still runs) stage 1 is
  a 128-bit content key of the decoded pixels or caption text, and stage 2 maps keys to rows after
  :meth:`Embeddings.bind` has seen the split's content. Identical content maps to its first row.

The stored vectors are the frozen backbone. With ``projection_dim`` a linear head per modality maps them into a
joint space; training it needs stored rows for the training split's content, which only :meth:`Embeddings.bind`
provides, so in ``bench run`` precomputed embeddings are for evaluation (``--methods zeroshot``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench.adapters.protocol import AdapterBase, Features
from bench.adapters.registry import register_adapter
from torch import nn

from bench.data.base import RetrievalSplit
from bench.errors import ConfigError, DataError

__all__ = ["Embeddings", "caption_ids_of", "image_key", "text_key"]

log = logging.getLogger(__name__)


def _digest(parts: Sequence[bytes]) -> torch.Tensor:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p)
    return torch.from_numpy(np.frombuffer(h.digest(), dtype=np.int64).copy())


def image_key(image: Any) -> torch.Tensor:
    """The content key (int64 ``[2]``) of a PIL image: a hash of its mode, size and pixels."""
    return _digest([f"image:{image.mode}:{image.size[0]}x{image.size[1]}:".encode(), image.tobytes()])


def text_key(text: str) -> torch.Tensor:
    """The content key (int64 ``[2]``) of a caption: a hash of its UTF-8 text."""
    return _digest([b"text:", text.encode("utf-8")])


def caption_ids_of(split: RetrievalSplit) -> list[str]:
    """``"<image id>#<k>"`` for each caption of ``split``: ``k`` counts the image's captions in split order."""
    seen: dict[int, int] = {}
    out = []
    for row in split.caption_to_image.tolist():
        k = seen.get(row, 0)
        seen[row] = k + 1
        out.append(f"{split.image_ids[row]}#{k}")
    return out


class _ContentKey:
    """Image transform of the raw path: PIL image -> content key (a class so DataLoader workers can pickle it)."""

    def __call__(self, image: Any) -> torch.Tensor:
        return image_key(image)


def _load_matrix(path: Path, option: str) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: {option} file not found")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: cannot read {option} as a .npy array ({e})") from None
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{path}: {option} must be a non-empty 2-D array [rows, dim], got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise DataError(f"{path}: {option} must hold numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if bad.size:
        raise DataError(f"{path}: {option} row {int(bad[0])} has a non-finite value (nan or inf)")
    return arr


def _load_ids(path: Path, option: str, n_rows: int, rows_file: Path) -> dict[str, int]:
    if not path.is_file():
        raise DataError(f"{path}: {option} file not found")
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DataError(f"{path}: cannot read {option} as a .npy array of numbers or strings ({e})") from None
        ids = [str(x) for x in arr.reshape(-1).tolist()] if arr.ndim == 1 else None
        if ids is None:
            raise DataError(f"{path}: {option} must be a 1-D array, got shape {arr.shape}")
    else:
        ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        if ids and not ids[-1]:
            ids.pop()
        empty = [i for i, v in enumerate(ids) if not v]
        if empty:
            raise DataError(f"{path}: {option} line {empty[0] + 1} is empty")
    if len(ids) != n_rows:
        raise DataError(f"{path}: {len(ids)} ids for the {n_rows} rows of {rows_file}")
    index: dict[str, int] = {}
    for row, v in enumerate(ids):
        if v in index:
            raise DataError(f"{path}: {option} has id {v!r} twice (rows {index[v]} and {row})")
        index[v] = row
    return index


class _Table(nn.Module):
    """One modality's stored vectors (a frozen parameter, so the feature cache keys on them) and its key index."""

    def __init__(self, rows: np.ndarray, path: Path, option: str, ids: dict[str, int] | None, ids_path: Path | None):
        super().__init__()
        self.weight = nn.Parameter(torch.from_numpy(rows), requires_grad=False)
        self.path, self.option, self.ids, self.ids_path = path, option, ids, ids_path
        self.index: dict[tuple[int, int], int] = {}

    def rows_for(self, ids: Sequence[str], what: str, where: str) -> np.ndarray:
        """Stored row of each item of a split, by position or by id."""
        if self.ids is None:
            if len(ids) != self.weight.shape[0]:
                raise DataError(
                    f"{self.path}: {self.weight.shape[0]} rows, but {where} has {len(ids)} {what}s; rows must follow "
                    f"the split's {what} order, or pass {what}_ids to align them by id"
                )
            return np.arange(len(ids), dtype=np.int64)
        out = np.empty(len(ids), dtype=np.int64)
        for i, v in enumerate(ids):
            row = self.ids.get(v)
            if row is None:
                raise DataError(f"{self.ids_path}: no row for {what} id {v!r} ({where} {what} {i})")
            out[i] = row
        return out

    def register(self, keys: torch.Tensor, rows: np.ndarray) -> None:
        for key, row in zip(keys.tolist(), rows.tolist(), strict=True):
            self.index.setdefault((key[0], key[1]), row)

    def lookup(self, keys: torch.Tensor, what: str) -> torch.Tensor:
        try:
            rows = [self.index[(a, b)] for a, b in keys.tolist()]
        except KeyError:
            raise DataError(
                f"embeddings adapter: a {what} whose content is not among the bound rows of {self.path}; stored "
                "embeddings cover the split they were computed on (bind(split) first), so train no method on them "
                "(use --methods zeroshot)"
            ) from None
        return torch.tensor(rows, dtype=torch.int64, device=self.weight.device)


@register_adapter("embeddings")
class Embeddings(AdapterBase):
    """Stored image and caption embeddings behind the adapter interface.

    Args:
        image: The image table.
        text: The caption table.
        projection_dim: Width of an optional trainable linear head per modality (None: the stored vectors as they are).
        key: Identifies the files for the feature cache.
    """

    default_loss = "infonce"

    def __init__(self, image: _Table, text: _Table, projection_dim: int | None, key: str) -> None:
        super().__init__()
        self.backbone = nn.ModuleDict({"image": image, "text": text})
        d_img, d_txt = int(image.weight.shape[1]), int(text.weight.shape[1])
        if projection_dim:
            self.head = nn.ModuleDict(
                {"image": nn.Linear(d_img, projection_dim), "text": nn.Linear(d_txt, projection_dim)}
            )
            self.embed_dim, self.joint_space = int(projection_dim), True
        else:
            self.head = nn.Module()
            self.embed_dim, self.joint_space = d_img, d_img == d_txt
        self._key = key

    @classmethod
    def build(
        cls,
        *,
        image_emb: str,
        text_emb: str,
        image_ids: str | None = None,
        caption_ids: str | None = None,
        projection_dim: int | None = None,
    ) -> Embeddings:
        """Read the ``.npy`` files (and id files); errors name the file at fault."""
        if projection_dim is not None and (not isinstance(projection_dim, int) or projection_dim < 1):
            raise ConfigError(f"embeddings projection_dim must be a positive integer, got {projection_dim!r}")
        tables = []
        for option, emb, ids_option, ids in (
            ("image_emb", image_emb, "image_ids", image_ids),
            ("text_emb", text_emb, "caption_ids", caption_ids),
        ):
            path = Path(emb).expanduser()
            rows = _load_matrix(path, option)
            ids_path = Path(ids).expanduser() if ids else None
            index = _load_ids(ids_path, ids_option, rows.shape[0], path) if ids_path else None
            tables.append(_Table(rows, path, option, index, ids_path))
        key = f"embeddings:content-key:{tables[0].path}:{tables[1].path}"
        return cls(tables[0], tables[1], projection_dim, key)

    # Harness path: a split's rows, by order or by id

    def split_features(self, split: RetrievalSplit) -> tuple[Features, Features]:
        """Stage-1 features of ``split``: ``{"row": stored row}`` of each image and each caption, in split order.

        Raises:
            DataError: a row count that does not match the split, or an id missing from an id file (named).
        """
        where = f"{split.dataset}/{split.split}"
        img = self.backbone["image"].rows_for([str(i) for i in split.image_ids], "image", where)
        txt = self.backbone["text"].rows_for(caption_ids_of(split), "caption", where)
        return {"row": torch.from_numpy(img)}, {"row": torch.from_numpy(txt)}

    def bind(self, split: RetrievalSplit) -> None:
        """Let raw images and captions of ``split`` encode: index their content keys (reads every image once)."""
        img_rows, txt_rows = (f["row"].numpy() for f in self.split_features(split))
        keys = torch.stack([image_key(split.load_image(i)) for i in range(split.n_images)])
        self.backbone["image"].register(keys, img_rows)
        self.backbone["text"].register(torch.stack([text_key(c) for c in split.captions]), txt_rows)

    # The four stages

    def image_transform(self) -> Callable[[Any], torch.Tensor]:
        return _ContentKey()

    def tokenize(self, texts: Sequence[str]) -> Features:
        return {"key": torch.stack([text_key(t) for t in texts])}

    def image_features(self, images: torch.Tensor) -> Features:
        return {"key": images}

    def text_features(self, tokens: Features) -> Features:
        return {"key": tokens["key"]}

    def _embed(self, modality: str, feats: Features) -> torch.Tensor:
        table = self.backbone[modality]
        rows = feats["row"] if "row" in feats else table.lookup(feats["key"], modality)
        x = table.weight[rows.to(table.weight.device)]
        return self.head[modality](x) if isinstance(self.head, nn.ModuleDict) else x

    def embed_image(self, feats: Features) -> torch.Tensor:
        return self._embed("image", feats)

    def embed_text(self, feats: Features) -> torch.Tensor:
        return self._embed("text", feats)

    def backbone_key(self) -> str:
        return self._key
