"""Test helpers: write one loaded split as webdataset shards, a saved Hugging Face dataset and parquet files, the
forms people keep retrieval sets in, and a toy model whose metrics depend on every pixel and every caption."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.data.base import RetrievalSplit


def image_bytes(split: RetrievalSplit, i: int) -> bytes:
    """The encoded bytes of image ``i`` of a split whose images are files."""
    return Path(split.image_paths[i]).read_bytes()


def write_shards(split: RetrievalSplit, folder: Path, *, maxcount: int = 64, ext: str = "jpg") -> list[Path]:
    """``split`` in CLIP_benchmark's layout: ``folder/<split>/<n>.tar``, one sample per image (the image under ``ext``,
    every caption in ``txt``, one per line), written with webdataset's own ShardWriter."""
    import webdataset as wds

    out = folder / split.split
    out.mkdir(parents=True, exist_ok=True)
    per_image = split.image_to_captions()
    with wds.ShardWriter(str(out / "%d.tar"), maxcount=maxcount, verbose=0) as sink:
        for i in range(split.n_images):
            sink.write({"__key__": f"s{i:07d}", ext: image_bytes(split, i),
                        "txt": "\n".join(split.captions[j] for j in per_image[i])})  # fmt: skip
    return sorted(out.glob("*.tar"))


def hf_rows(split: RetrievalSplit, *, embed: bool = True) -> dict[str, list[Any]]:
    """One row per image: ``image`` (an Image struct with the bytes, or only the path), ``caption`` (the list),
    ``image_id``."""
    per_image = split.image_to_captions()
    images = [{"bytes": image_bytes(split, i) if embed else None, "path": str(split.image_paths[i])}
              for i in range(split.n_images)]  # fmt: skip
    return {"image": images, "caption": [[split.captions[j] for j in per_image[i]] for i in range(split.n_images)],
            "image_id": list(split.image_ids)}  # fmt: skip


def save_hf(split: RetrievalSplit, folder: Path) -> Path:
    """``split`` as a ``DatasetDict`` saved with ``save_to_disk`` (images embedded), under its split name."""
    import datasets

    ds = datasets.Dataset.from_dict(hf_rows(split)).cast_column("image", datasets.Image())
    datasets.DatasetDict({split.split: ds}).save_to_disk(str(folder))
    return folder


def write_parquet(split: RetrievalSplit, path: Path, *, embed: bool = True, row_group_size: int = 50) -> Path:
    """``split`` as one parquet file in the Hub's form (Image struct column, caption list), through ``datasets``."""
    import datasets
    import pyarrow.parquet as pq

    ds = datasets.Dataset.from_dict(hf_rows(split, embed=embed)).cast_column("image", datasets.Image())
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(ds.data.table, path, row_group_size=row_group_size)
    return path


class ToyModel:
    """Image: a fixed projection of its 12x12 RGB thumbnail; text: of its hashed character trigrams."""

    def __init__(self, dim: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.wi = torch.randn(3 * 12 * 12, dim, generator=g)
        self.wt = torch.randn(512, dim, generator=g)

    @staticmethod
    def transform(image: Any) -> torch.Tensor:
        arr = np.asarray(image.resize((12, 12)), dtype=np.float32) / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()

    @staticmethod
    def tokenizer(texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), 512)
        for r, t in enumerate(texts):
            for k in range(len(t) - 2):
                out[r, zlib.crc32(t[k : k + 3].lower().encode()) % 512] += 1
        return out

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.wi

    def encode_text(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.wt
