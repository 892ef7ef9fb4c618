"""The cut of one cell's sharded evaluation (:class:`ShardPlan`) and where its files live (:class:`ShardDir`)."""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.atomic import atomic_write_bytes
from bench.config import BenchConfig
from bench.data.base import RetrievalSplit
from bench.encode.features import HEAD_BATCH
from bench.grid.cell import Cell
from bench.grid.plan import shard_path

__all__ = ["ShardDir", "ShardPlan", "aligned_bounds", "make_plan", "shard_dir"]

log = logging.getLogger(__name__)
PLAN_FORMAT = 1


def aligned_bounds(n: int, unit: int, shards: int) -> list[int]:
    """Boundaries [shards+1] of ``shards`` contiguous slices of ``n`` rows, cut at multiples of ``unit``.

    The encode loop batches rows from the start of the split; a slice that starts at a multiple of every batch size
    is encoded in exactly the batches the one-process loop forms, so its embeddings are the same numbers (a model's
    output depends, in the last bits, on the shape of its batch). Slices past the data are empty.
    """
    units = math.ceil(n / unit) if n else 0
    return [min(n, unit * (units * j // shards)) for j in range(shards + 1)]


@dataclass(frozen=True)
class ShardPlan:
    """What one cell's sharded evaluation computes, task by task, and for which inputs."""

    cell: str  # the cell's label
    config_hash: str
    data: str  # the split's content fingerprint
    n_images: int
    n_captions: int
    image_bounds: list[int]  # encode task k embeds images [image_bounds[k], image_bounds[k+1])
    caption_bounds: list[int]  # ... and captions [caption_bounds[k], caption_bounds[k+1])
    parts: int  # score tasks: each runs part p of every scan
    format: int = PLAN_FORMAT

    @property
    def encode_tasks(self) -> int:
        return len(self.image_bounds) - 1

    def image_rows(self, k: int) -> range:
        return range(self.image_bounds[k], self.image_bounds[k + 1])

    def caption_rows(self, k: int) -> range:
        return range(self.caption_bounds[k], self.caption_bounds[k + 1])


def make_plan(cell: Cell, cfg: BenchConfig, split: RetrievalSplit, chash: str, shards: int, parts: int) -> ShardPlan:
    """The plan of ``cell`` on ``split``: ``shards`` encode tasks with slices aligned to the encode loop's batches
    (images: the backbone batch and the head batch; captions: twice the backbone batch, as the loop uses), and
    ``parts`` score tasks."""
    bs = cfg.eval.batch_size
    return ShardPlan(
        cell=cell.label,
        config_hash=chash,
        data=split.fingerprint(),
        n_images=split.n_images,
        n_captions=split.n_captions,
        image_bounds=aligned_bounds(split.n_images, math.lcm(bs, HEAD_BATCH), shards),
        caption_bounds=aligned_bounds(split.n_captions, math.lcm(2 * bs, HEAD_BATCH), shards),
        parts=parts,
    )


@dataclass(frozen=True)
class ShardDir:
    """The folder of one cell's sharded evaluation."""

    root: Path

    @property
    def plan_file(self) -> Path:
        return self.root / "plan.json"

    def images(self, k: int) -> Path:
        return self.root / f"images-{k:05d}.npy"

    def captions(self, k: int) -> Path:
        return self.root / f"captions-{k:05d}.npy"

    def encode_marker(self, k: int) -> Path:
        return self.root / f"encode-{k:05d}.json"

    def score_part(self, p: int) -> Path:
        return self.root / f"score-{p:05d}.npz"

    def score_marker(self, p: int) -> Path:
        return self.root / f"score-{p:05d}.json"

    @property
    def submitted_file(self) -> Path:
        return self.root / "submitted.json"

    def read_plan(self) -> ShardPlan | None:
        """The stored plan, or None when there is none (or it cannot be read: it is then made again)."""
        try:
            raw = json.loads(self.plan_file.read_text(encoding="utf-8"))
            return ShardPlan(**raw) if raw.get("format") == PLAN_FORMAT else None
        except (OSError, ValueError, TypeError):
            return None

    def adopt(self, plan: ShardPlan, *, fresh: bool = False) -> bool:
        """Make ``plan`` this folder's plan; files of another plan (other inputs, config or cut), or with ``fresh``
        of any plan, are removed first. Returns whether a stored plan was kept (its finished tasks stay finished)."""
        if not fresh and self.read_plan() == plan:
            return True
        if self.root.exists():
            log.info("%s: the shards there were made for other inputs or another cut; removing them", self.root)
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.plan_file, json.dumps(asdict(plan), indent=1).encode())
        return False

    def read_marker(self, path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None


def shard_dir(cfg: BenchConfig, cell: Cell) -> ShardDir:
    """Where ``cell``'s sharded evaluation keeps its files."""
    return ShardDir(shard_path(cfg, cell))
