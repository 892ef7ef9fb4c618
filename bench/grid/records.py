"""Result records: one self-describing JSON file per grid cell, written atomically.

A cell is (model, dataset, split, method, seed). Its file lives at
``<results_dir>/runs/<model>/<dataset>/<split>/<method>-seed<seed>.json``. A record looks like::

    {
      "schema": 1,
      "model": "vse_infty", "adapter": "vse_infty", "dataset": "synthetic", "split": "test",
      "method": "contrastive", "seed": 0,
      "metrics": {                      # the selected checkpoint (best on val), evaluated on `split`
        "i2t": {"r1": 41.0, "r5": 80.5, "r10": 90.0, "medr": 2.0, "meanr": 5.3} | null,   # null: "n/a"
        "t2i": {...} | null,
        "rsum": 420.1 | null,           # i2t + t2i R@1/5/10
        "t2t": {...} | null,            # caption -> sibling captions
        "i2i": {...} | null             # image -> same-label images (datasets with labels)
      },
      "metrics_last": {...} | null,     # last epoch, same layout (trained methods only)
      "extra_metrics": {"test_1k": {...}},   # optional further protocols (COCO 1K = mean over 5 folds)
      "selected_epoch": 7, "history": [{"epoch": 1, "loss": .., "val_rsum": ..}, ...],
      "trained_parts": ["img_enc.image_encoder", ...],
      "config": {...}, "config_hash": "1a2b3c4d",
      "tie_rule": "...", "versions": {...}, "git_sha": "...", "device": "cpu", "wall_time_s": 12.3,
      "created": "2026-11-27T02:00:00+00:00"
    }

A uni-modal cell (an eval-only image-retrieval or STS dataset, see :mod:`bench.evaluation.unimodal`) has the same
layout with
other metric blocks and three more keys::

    {
      ...,
      "task": "image_retrieval" | "sts",
      "embedding": "uni_heads" | "joint" | "towers",   # what was scored: a method's uni heads, the joint space,
                                                       # or the towers' own features (no joint space)
      "train_dataset": "coco" | null,   # the ITR dataset a trained method fine-tuned on (the table's train_on)
      "metrics": {"i2i": {"r1": .., "r2": .., "r4": .., "r8": .., "map_at_r": .., "r_precision": ..,
                          "n_queries": 5924}},           # image retrieval, the query itself excluded
               | {"sts": {"sts-test": 76.2, "mean": 76.2}}   # STS: Spearman x 100 per file and their mean
    }

Its ``config`` also holds ``train_dataset`` (that dataset's table) for trained methods. All recall values, mAP@R and
Spearman coefficients are in percent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from bench.atomic import atomic_open

__all__ = [
    "SCHEMA",
    "RecordStatus",
    "cell_path",
    "config_hash",
    "iter_records",
    "read_record",
    "safe_name",
    "write_record",
]

log = logging.getLogger(__name__)
SCHEMA = 1
RecordStatus = Literal["ok", "failed", "unavailable"]  # what a record file on disk can say


def safe_name(name: str) -> str:
    """A file-system safe form of a model or dataset name (like timm's ``safe_model_name``)."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") or "_"


def config_hash(config: dict[str, Any]) -> str:
    """Eight hex digits identifying a cell's full configuration (sorted-key JSON)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def cell_path(results_dir: Path, model: str, dataset: str, split: str, method: str, seed: int) -> Path:
    """Where the result of one cell is stored."""
    return (
        Path(results_dir)
        / "runs"
        / safe_name(model)
        / safe_name(dataset)
        / safe_name(split)
        / f"{safe_name(method)}-seed{seed}.json"
    )


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` to ``path`` atomically: a reader sees the old file or the new one, never half of one."""
    with atomic_open(path) as f:
        json.dump(record, f, indent=1, sort_keys=False, default=str)
        f.write("\n")


def read_record(path: Path) -> dict[str, Any]:
    """Read one record."""
    with open(path) as f:
        rec = json.load(f)
    if not isinstance(rec, dict) or rec.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not an itr-bench result record (schema {SCHEMA})")
    return rec


def iter_records(results_dir: Path) -> Iterator[dict[str, Any]]:
    """All readable records under ``results_dir/runs``, in path order; unreadable files are logged and skipped."""
    for p in sorted((Path(results_dir) / "runs").rglob("*.json")):
        try:
            rec = read_record(p)
        except (OSError, ValueError) as e:
            log.warning("skipping %s: %s", p, e)
            continue
        rec["_path"] = str(p)
        yield rec
