"""Encode task ``k`` of a sharded evaluation: embed its slice of images and captions exactly as the one-process
evaluation embeds those rows, and write them atomically, marker last."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from bench.adapters.protocol import Adapter, Features, FeatureSupplier
from bench.atomic import atomic_open, atomic_write_bytes
from bench.config import BenchConfig
from bench.data import load_split
from bench.data.base import RetrievalSplit
from bench.encode.features import (
    embed_features,
    encoding_precision,
    extract_image_features,
    extract_text_features,
)
from bench.encode.long_text import context_report
from bench.errors import BenchError
from bench.grid.cell import Cell
from bench.grid.pipeline import Plan, build_adapter, plan_cell
from bench.shard.plan import ShardDir, ShardPlan, shard_dir

__all__ = ["encode_done", "encode_shard"]

log = logging.getLogger(__name__)


def encode_done(d: ShardDir, plan: ShardPlan, k: int) -> bool:
    """Encode task ``k`` finished for this plan: its marker is there and both arrays have the slice's rows."""
    marker = d.read_marker(d.encode_marker(k))
    if marker is None:
        return False
    for path, rows in ((d.images(k), plan.image_rows(k)), (d.captions(k), plan.caption_rows(k))):
        try:
            if np.load(path, mmap_mode="r").shape[0] != len(rows):
                return False
        except (OSError, ValueError):
            return False
    return True


def _save(path: Path, arr: np.ndarray) -> None:
    try:
        with atomic_open(path, "wb") as f:
            np.save(f, arr)
    except OSError as e:  # a full disk: the task's one line; the slices written before it stay
        raise BenchError(f"cannot write {path}: {e.strerror or e}") from None


def _embed(adapter: Adapter, split: RetrievalSplit, cfg: BenchConfig, cp: Plan, modality: str, rows: range,
           supplied: Features | None) -> torch.Tensor:  # fmt: skip
    """Embeddings of ``rows`` of one modality, computed as the one-process evaluation computes them: the adapter's
    own features of the split (``supplied``: precomputed embeddings), or backbone features in the encode loop's
    batches, then the heads."""
    if not len(rows):
        return torch.zeros(0, 0)
    image = modality == "image"
    if supplied is not None:
        feats = {key: v[rows.start : rows.stop] for key, v in supplied.items()}
    else:
        ev, precision = cfg.eval, encoding_precision(cp.device, cfg.eval.precision)
        if image:
            feats = extract_image_features(adapter, split, device=cp.device, batch_size=ev.batch_size,
                                           num_workers=cp.train.num_workers, progress=False, precision=precision,
                                           rows=rows, feature_dtype=ev.feature_dtype)  # fmt: skip
        else:
            feats = extract_text_features(adapter, split, device=cp.device, batch_size=2 * ev.batch_size,
                                          progress=False, precision=precision, rows=rows,
                                          feature_dtype=ev.feature_dtype)  # fmt: skip
    return embed_features(adapter.embed_image if image else adapter.embed_text, feats, device=cp.device)


@torch.inference_mode()
def encode_shard(cfg: BenchConfig, cell: Cell, k: int) -> bool:
    """Run encode task ``k`` of ``cell`` (its plan must exist); False when it had already finished."""
    d = shard_dir(cfg, cell)
    plan = d.read_plan()
    if plan is None:
        raise BenchError(f"{d.plan_file}: no shard plan; `bench run --shards N` makes it")
    if encode_done(d, plan, k):
        log.info("%s: encode task %d already done", cell.label, k)
        return False
    cp = plan_cell(cell, cfg, progress=False)
    split = load_split(cell.dataset, cfg.datasets[cell.dataset], cell.split, work_dir=cp.work)
    if split.fingerprint() != plan.data:
        raise BenchError(f"{cell.label}: the split changed since the shard plan {d.plan_file} was made; run again")
    adapter = build_adapter(cp)
    adapter.eval()
    img_rows, cap_rows = plan.image_rows(k), plan.caption_rows(k)
    supplied = adapter.split_features(split) if isinstance(adapter, FeatureSupplier) else (None, None)
    img = _embed(adapter, split, cfg, cp, "image", img_rows, supplied[0])
    txt = _embed(adapter, split, cfg, cp, "text", cap_rows, supplied[1])
    _save(d.images(k), img.numpy())
    _save(d.captions(k), txt.numpy())
    # how many of this slice's captions the model's context cuts (the merge sums the slices: the record's long_text)
    long_text = context_report(adapter, list(split.captions[cap_rows.start : cap_rows.stop]), "truncate")
    marker = {"images": [img_rows.start, img_rows.stop], "captions": [cap_rows.start, cap_rows.stop],
              "joint": bool(adapter.joint_space), "job": os.environ.get("BENCH_JOB_ID"),
              "long_text": long_text}  # fmt: skip
    atomic_write_bytes(d.encode_marker(k), json.dumps(marker).encode())
    log.info("%s: encode task %d: %d images, %d captions", cell.label, k, len(img_rows), len(cap_rows))
    return True
