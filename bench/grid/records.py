"""Result records: one self-describing JSON file per grid cell, written atomically.

A cell is (model, dataset, split, method, seed). Its file lives at
``<results_dir>/runs/<model>/<dataset>/<split>/<method>-seed<seed>.json``. A record looks like::

    {
      "schema": 1,
      "model": "vse_infty", "adapter": "vse_infty", "dataset": "synthetic", "split": "test",
      "method": "contrastive", "seed": 0,
      "metrics": {                      # the selected checkpoint (best on val), evaluated on `split`
        "i2t": {"r1": 41.0, "r5": 80.5, "r10": 90.0, "mrr": .., "ndcg10": .., "map_at_r": ..,
                "r_precision": .., "medr": 2.0, "meanr": 5.3, "n_queries": 1000} | null,   # null: "n/a"
        "t2i": {...} | null,
        "rsum": 420.1 | null,           # i2t + t2i R@1/5/10
        "t2t": {...} | null,            # caption -> sibling captions
        "i2i": {...} | null             # image -> same-label images (datasets with labels)
      },
      "metrics_last": {...} | null,     # last epoch, same layout (trained methods only)
      "extra_metrics": {"test_1k": {...}},   # optional further protocols (COCO 1K = mean over 5 folds)
      "per_query": {"file": "contrastive-seed0.queries.npz", "sha256": "...", "topk": 10},   # beside the record
      "ci95": {"i2t": {"r1": [lo, hi], ...}, ..., "rsum": [lo, hi]},   # image bootstrap (bench.stats.bootstrap)
      "bootstrap": {"resamples": 1000, "seed": 0, "level": 0.95, "unit": "image"},
      "precision": {"encoding": "fp32", "features": "fp32" | null, "scoring": "fp32"},  # encoders' autocast,
                                        # stored stage-1 features (null: end to end, none stored), similarities
      "selected_epoch": 7, "history": [{"epoch": 1, "loss": .., "val_rsum": ..}, ...],
      "trained_parts": ["img_enc.image_encoder", ...],
      "config": {...}, "config_hash": "1a2b3c4d",
      "tie_rule": "...", "versions": {...}, "git_sha": "...", "device": "cpu", "wall_time_s": 12.3,
      "created": "2026-11-27T02:00:00+00:00"
    }

A cell of an eval-only task kind (:mod:`bench.tasks`: image retrieval, STS, a plug-in's) has the same layout with
its task's metric blocks and three more keys (the built-in kinds' shown)::

    {
      ...,
      "task": "image_retrieval" | "sts",   # the task kind's name; image-text records have no "task"
      "embedding": "uni_heads" | "joint" | "backbone" | "towers",   # what was scored: a method's uni heads, the
                                       # joint space (after cross heads, or before them: backbone), the towers' own
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
from typing import Any, Literal, TypedDict

from bench.atomic import atomic_open, remove_stale_temporaries
from bench.errors import BenchError
from bench.names import safe_name

__all__ = [
    "SCHEMA",
    "RecordStatus",
    "ResultRecord",
    "cell_parts",
    "cell_path",
    "cell_stem",
    "config_hash",
    "iter_records",
    "per_query_path",
    "read_record",
    "prepare_results_dir",
    "record_problem",
    "write_record",
]

log = logging.getLogger(__name__)
SCHEMA = 1
RecordStatus = Literal["ok", "failed", "unavailable"]  # what a record file on disk can say


def config_hash(config: dict[str, Any]) -> str:
    """Eight hex digits identifying a cell's full configuration (sorted-key JSON)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def cell_stem(method: str, seed: int) -> str:
    """A cell's file stem in every folder it owns: ``<method>-seed<seed>``; a sweep variant's method id
    ``cusa[alpha=0.1,beta=1.0]`` is written ``cusa@alpha=0.1,beta=1.0`` (no brackets for a shell to glob)."""
    base, sep, values = method.partition("[")
    if not sep:
        return f"{safe_name(method)}-seed{seed}"
    values = re.sub(r"[^A-Za-z0-9_.+=,-]+", "_", values.removesuffix("]"))
    return f"{safe_name(base)}@{values}-seed{seed}"


def cell_parts(model: str, dataset: str, split: str, method: str, seed: int) -> tuple[str, str, str, str]:
    """The names a cell's files live under, in ``runs/``, ``checkpoints/`` and ``shards/`` alike: its model, dataset
    and split folders and its stem (:func:`cell_stem`), each safe as a file name."""
    return safe_name(model), safe_name(dataset), safe_name(split), cell_stem(method, seed)


def cell_path(results_dir: Path, model: str, dataset: str, split: str, method: str, seed: int) -> Path:
    """Where the result of one cell is stored (a record's own fields name it; a planned cell has
    :attr:`bench.grid.plan.Plan.record_path`)."""
    *folder, stem = cell_parts(model, dataset, split, method, seed)
    return Path(results_dir).joinpath("runs", *folder, f"{stem}.json")


def per_query_path(record: Path) -> Path:
    """Where the per-query file of the record at ``record`` lives: beside it, ``<method>-seed<s>.queries.npz``."""
    return Path(record).with_suffix(".queries.npz")


def write_record(path: Path, record: ResultRecord | dict[str, Any]) -> None:
    """Write ``record`` to ``path`` atomically: a reader sees the old file or the new one, never half of one."""
    with atomic_open(path) as f:
        json.dump(record, f, indent=1, sort_keys=False, default=str)
        f.write("\n")


class ResultRecord(TypedDict, total=False):
    """One cell's result record, as this module's docstring shows it (schema :data:`SCHEMA`).

    Every record has ``schema``, ``status`` and the cell keys; an ``ok`` one ``metrics`` and its provenance; a
    ``failed`` or ``unavailable`` one its ``reason``. Readers use ``.get`` for the keys only some records hold.
    """

    schema: int
    status: RecordStatus
    model: str
    adapter: str
    dataset: str
    split: str
    method: str
    seed: int
    language: str  # one language of a multilingual set
    task: str  # cells of eval-only task kinds: the kind's name (bench.tasks); image-text records have none
    embedding: str | None  # uni-modal cells: what was scored
    train_dataset: str | None  # uni-modal cells: what a trained method fine-tuned on
    metrics: dict[str, Any]  # the selected state's metrics on the split
    metrics_last: dict[str, Any] | None  # the last epoch's (trained methods)
    extra_metrics: dict[str, Any]  # further protocols, e.g. COCO 1K
    per_query: dict[str, Any]  # {"file", "sha256", "topk"}; a choice set's per-item file: {"file", "sha256", "unit"}
    long_text: dict[str, Any]  # image-text cells: {"rule", "context", "captions" | "sentences", "truncated", "share"}
    scored_by: str | None  # choice sets: embedding cosine or the adapter's pair scorer
    regions: dict[str, Any]  # precomp sets: what the region features are (grid cells of a backbone, or unstated)
    bootstrap: dict[str, Any]  # {"resamples", "seed", "level", "unit"}; intervals under ci_key(level), e.g. "ci95"
    precision: dict[str, str | None]  # {"encoding", "features", "scoring"}
    selected_epoch: int | None
    resumed_from_epoch: int
    selected_on: str
    select_metric: str
    history: list[dict[str, float]]
    trained_parts: list[str]
    method_settings: dict[str, Any]
    frozen_backbone: bool
    trained_store: str  # the training's folder (bench.train.store)
    reused_training: str  # the stored training a uni-modal cell reused
    sharded: dict[str, Any]  # how a sharded evaluation was cut
    config: dict[str, Any]
    config_hash: str
    fingerprints: dict[str, Any]
    tie_rule: str
    versions: dict[str, str]
    git_sha: str | None
    device: str
    world_size: int
    wall_time_s: float
    created: str
    reason: str  # failed and unavailable records
    traceback: str
    job_id: str
    log: str
    _path: str  # where iter_records read it from (not stored)


_CELL_KEYS = ("model", "dataset", "split", "method", "seed")


_TABLE_GROUPS = ("i2t", "t2i", "rsum", "t2t", "i2i")


def _non_numeric(block: Any, where: str) -> str | None:
    """The first metric value of ``block`` (nested dicts) that is not a number, null or a list of numbers (an
    interval); None when all are."""
    if isinstance(block, dict):
        for key, value in block.items():
            problem = _non_numeric(value, f"{where}.{key}")
            if problem is not None:
                return problem
        return None
    if isinstance(block, list):
        return next((p for i, v in enumerate(block) if (p := _non_numeric(v, f"{where}[{i}]")) is not None), None)
    if block is None or (isinstance(block, int | float) and not isinstance(block, bool)):
        return None
    return f"{where} is not a number ({block!r})"


def record_problem(rec: Any) -> str | None:
    """Why ``rec`` is not a complete record for its status, or None: an ``ok`` record needs its metrics, a
    ``failed`` or ``unavailable`` one its reason, every record its cell keys."""
    if not isinstance(rec, dict) or rec.get("schema") != SCHEMA:
        return f"not an itr-bench result record (schema {SCHEMA})"
    missing = [k for k in _CELL_KEYS if rec.get(k) is None]
    if missing:
        return f"no {', '.join(missing)}"
    for key in _CELL_KEYS:  # they name the record's file: text, and an integer seed
        want = int if key == "seed" else str
        if not isinstance(rec[key], want) or isinstance(rec[key], bool):
            return f"{key} must be {'an integer' if want is int else 'text'}, got {rec[key]!r}"
    status = rec.get("status")
    if status == "ok":
        if not isinstance(rec.get("metrics"), dict) or not rec["metrics"]:
            return "status ok but no metrics"
        for group in _TABLE_GROUPS:  # what the tables read as numbers (other blocks carry descriptive text too)
            bad = _non_numeric(rec["metrics"].get(group), f"metrics.{group}")
            if bad is not None:
                return bad
    elif status in ("failed", "unavailable"):
        if not isinstance(rec.get("reason"), str):
            return f"status {status} but no reason"
    else:
        return f"unknown status {status!r}"
    return None


def read_record(path: Path) -> ResultRecord:
    """Read one record; a file that is not a complete record (see :func:`record_problem`) raises ``ValueError``
    naming it, so it counts as not done and its cell runs again."""
    with open(path) as f:
        rec = json.load(f)
    problem = record_problem(rec)
    if problem is not None:
        raise ValueError(f"{path}: invalid record: {problem}")
    return rec


def iter_records(results_dir: Path) -> Iterator[ResultRecord]:
    """All readable records under ``results_dir/runs``, in path order; unreadable files are logged and skipped."""
    for p in sorted((Path(results_dir) / "runs").rglob("*.json")):
        try:
            rec = read_record(p)
        except (OSError, ValueError) as e:
            why = str(e) if str(e).startswith(str(p)) else f"{p}: {e}"  # name the file once
            log.warning("skipping %s", why)
            continue
        rec["_path"] = str(p)
        yield rec


def prepare_results_dir(cfg: Any) -> None:
    """Before a grid runs: the results folder must be writable (else one line, and nothing runs), and temporary files
    that earlier killed runs left there or in the work folder are removed."""
    runs = Path(cfg.paths.results_dir) / "runs"
    try:
        runs.mkdir(parents=True, exist_ok=True)
        with atomic_open(runs / ".write-probe") as f:
            f.write("")
        (runs / ".write-probe").unlink()
    except OSError as e:
        raise BenchError(f"{runs}: the results folder is not writable ({e.strerror or e})") from None
    for path in remove_stale_temporaries(cfg.paths.results_dir, cfg.paths.work_dir):
        log.info("removed %s, left by an interrupted run", path)
