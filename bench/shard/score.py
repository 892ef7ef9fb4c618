"""Score task ``p`` of a sharded evaluation: part ``p`` of every scan the one-process evaluation runs (i2t and t2i
in one two-way scan, t2t and i2i in sibling scans), over the whole split's embeddings read from the encode tasks'
memory-mapped slices; written atomically, marker last."""

from __future__ import annotations

import json
import logging
import os
import zipfile
from typing import Any

import numpy as np
import torch

from bench.atomic import atomic_open, atomic_write_bytes
from bench.config import BenchConfig
from bench.data import load_split
from bench.data.base import RetrievalSplit
from bench.errors import BenchError
from bench.evaluation.itr import normalized
from bench.grid.cell import Cell
from bench.grid.pipeline import plan_cell
from bench.scoring.itr_scan import ItrPart, itr_scan_part
from bench.scoring.sibling_scan import SiblingPart, sibling_scan_part
from bench.scoring.topk import QueryLists
from bench.shard.encode import encode_done
from bench.shard.plan import ShardDir, ShardPlan, shard_dir

__all__ = ["ScoredPart", "load_embeddings", "load_part", "part_arrays", "score_done", "score_part"]

log = logging.getLogger(__name__)
ScoredPart = tuple[ItrPart | None, SiblingPart | None, SiblingPart | None]  # (i2t/t2i, t2t, i2i)


def _stack(paths: list[Any]) -> torch.Tensor:
    slices = [np.load(p, mmap_mode="r") for p in paths]
    slices = [s for s in slices if s.shape[0]]  # a task past the end of the data embedded nothing
    return torch.from_numpy(np.concatenate(slices)) if slices else torch.zeros(0, 0)


def load_embeddings(d: ShardDir, plan: ShardPlan) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The split's normalised image and caption embeddings from every encode task's slice, and whether the model
    has a joint space; a task that has not finished is named."""
    for k in range(plan.encode_tasks):
        if not encode_done(d, plan, k):
            raise BenchError(f"{d.encode_marker(k)}: encode task {k} has not finished; `bench run --shards` runs it")
    marker = d.read_marker(d.encode_marker(0)) or {}
    img = _stack([d.images(k) for k in range(plan.encode_tasks)])
    txt = _stack([d.captions(k) for k in range(plan.encode_tasks)])
    # Normalised over the whole matrix, as the one-process evaluation does.
    return normalized(img), normalized(txt), bool(marker.get("joint", True))


def part_arrays(d: ShardDir, p: int) -> list[str] | None:
    """The array names in score task ``p``'s part file (read from its index, no array loaded); None if it does not
    open."""
    try:
        with np.load(d.score_part(p), allow_pickle=False) as z:
            return list(z.files)
    except (OSError, ValueError, zipfile.BadZipFile):
        return None


def score_done(d: ShardDir, p: int) -> bool:
    """Score task ``p`` finished: its marker is there and its part file opens (a truncated one is scored again)."""
    return d.read_marker(d.score_marker(p)) is not None and bool(part_arrays(d, p))


def _lists(prefix: str, lists: QueryLists | None, out: dict[str, np.ndarray]) -> None:
    if lists is not None:
        out[f"{prefix}_index"], out[f"{prefix}_score"], out[f"{prefix}_positive"] = (lists.index, lists.score,
                                                                                    lists.positive)  # fmt: skip


def _read_lists(prefix: str, z: Any) -> QueryLists | None:
    if f"{prefix}_index" not in z:
        return None
    return QueryLists(z[f"{prefix}_index"], z[f"{prefix}_score"], z[f"{prefix}_positive"])


def _arrays(part: ScoredPart) -> dict[str, np.ndarray]:
    itr, t2t, i2i = part
    out: dict[str, np.ndarray] = {}
    if itr is not None:
        out.update(itr_rows=itr.rows, itr_t2i=itr.t2i, itr_image_counts=itr.image_counts)
        _lists("itr_t2i", itr.t2i_lists, out)
        _lists("itr_i2t", itr.i2t_lists, out)
    for name, sib in (("t2t", t2t), ("i2i", i2i)):
        if sib is not None:
            out[f"{name}_counts"] = sib.counts
            _lists(name, sib.lists, out)
    return out


def load_part(d: ShardDir, p: int, scan: str) -> ItrPart | SiblingPart | None:
    """Score task ``p``'s part of one scan (``itr``: i2t/t2i, ``t2t`` or ``i2i``), read back; None if it has none."""
    path = d.score_part(p)
    try:
        with np.load(path, allow_pickle=False) as z:
            if scan == "itr":
                if "itr_rows" not in z:
                    return None
                return ItrPart(z["itr_rows"], z["itr_t2i"], _read_lists("itr_t2i", z), z["itr_image_counts"],
                               _read_lists("itr_i2t", z))  # fmt: skip
            return SiblingPart(z[f"{scan}_counts"], _read_lists(scan, z)) if f"{scan}_counts" in z else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise BenchError(f"{path}: cannot read score part {p} ({e}); delete it and run again") from None


def scan_parts(img: torch.Tensor, txt: torch.Tensor, joint: bool, split: RetrievalSplit, cfg: BenchConfig,
               device: torch.device, p: int, parts: int) -> ScoredPart:  # fmt: skip
    """Part ``p`` of each scan that the one-process evaluation (:func:`bench.evaluation.itr.evaluate`) runs on these
    embeddings, with its settings."""
    kw: dict[str, Any] = {"part": p, "parts": parts, "topk": cfg.eval.topk, "memory_mb": cfg.eval.memory_mb,
                          "device": device}  # fmt: skip
    c2i, labels = split.caption_to_image, split.image_labels
    n_img, n_txt = img.shape[0], txt.shape[0]
    itr = itr_scan_part(img, txt, c2i, **kw) if joint and n_txt > 0 else None
    t2t = sibling_scan_part(txt, c2i, name="text_emb", **kw) if n_txt > 0 else None
    i2i = sibling_scan_part(img, labels, name="image_emb", **kw) if labels is not None and n_img > 0 else None
    return itr, t2t, i2i


def score_part(cfg: BenchConfig, cell: Cell, p: int) -> bool:
    """Run score task ``p`` of ``cell``; False when it had already finished."""
    d = shard_dir(cfg, cell)
    plan = d.read_plan()
    if plan is None:
        raise BenchError(f"{d.plan_file}: no shard plan; `bench run --shards N` makes it")
    if score_done(d, p):
        log.info("%s: score task %d already done", cell.label, p)
        return False
    cp = plan_cell(cell, cfg, progress=False)
    split = load_split(cell.dataset, cfg.datasets[cell.dataset], cell.split, work_dir=cp.work)
    img, txt, joint = load_embeddings(d, plan)
    part = scan_parts(img, txt, joint, split, cfg, cp.device, p, plan.parts)
    path = d.score_part(p)
    try:
        with atomic_open(path, "wb") as f:
            np.savez(f, **_arrays(part))
    except OSError as e:
        raise BenchError(f"cannot write {path}: {e.strerror or e}") from None
    atomic_write_bytes(d.score_marker(p), json.dumps({"part": p, "job": os.environ.get("BENCH_JOB_ID")}).encode())
    log.info("%s: score task %d of %d done", cell.label, p, plan.parts)
    return True
