"""Run one cell and store its outcome: the step every launcher (local loop, submitit debug, SLURM array) shares.

Whatever happens, the cell leaves one record file: ``ok`` with metrics, ``unavailable`` (weights cannot be had) or
``failed`` (the error, its last line and the job's log path), written atomically. A finished cell's training
checkpoint (``<results_dir>/checkpoints/...``) is removed once its record is on disk; an interrupted one keeps it,
and the next run resumes from it.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bench.config import BenchConfig
from bench.encode.refresh import refreshing
from bench.errors import BenchError, WeightsUnavailableError, interrupt_behind
from bench.grid.cell import Cell
from bench.grid.fingerprint import DigestCache, cell_fingerprints, changed
from bench.grid.pipeline import ScorerFactory, run_plan
from bench.grid.plan import checkpoint_path, plan_cell
from bench.grid.records import (
    SCHEMA,
    RecordStatus,
    cell_path,
    config_hash,
    per_query_path,
    read_record,
    write_record,
)
from bench.grid.sweep import variant_fields
from bench.scoring.perquery import sha256_of
from bench.train.distributed import current as current_dist

__all__ = ["Outcome", "checkpoint_path", "execute_cell", "is_done", "record_failure", "record_path"]

log = logging.getLogger(__name__)


# "worker": a non-zero distributed rank, which writes nothing.
OutcomeStatus = Literal["ran", "skipped", "unavailable", "failed", "worker"]


@dataclass(frozen=True)
class Outcome:
    """What :func:`execute_cell` did with one cell."""

    cell: Cell
    status: OutcomeStatus
    path: Path
    reason: str = ""
    wall_time_s: float = 0.0


def record_path(cfg: BenchConfig, cell: Cell) -> Path:
    """Where ``cell``'s record lives."""
    return cell_path(Path(cfg.paths.results_dir), cell.model, cell.dataset, cell.split, cell.method_id, cell.seed)


def is_done(path: Path, expected_hash: str, current: Callable[[], dict[str, Any]] | None = None) -> bool:
    """``path`` holds an ``ok`` record of the same configuration, with its per-query file intact if it names one, and
    (given ``current``, the cell's fingerprints now: :func:`bench.grid.fingerprint.cell_fingerprints`) read the same
    data and weights."""
    if not path.is_file():
        return False
    try:
        rec = read_record(path)
    except (OSError, ValueError) as e:  # a truncated, hand-edited or foreign file: the cell runs again
        log.warning("%s; the cell runs again", e)
        return False
    if rec.get("status") != "ok" or rec.get("config_hash") != expected_hash:
        return False
    pq = rec.get("per_query")
    if isinstance(pq, dict):
        companion = per_query_path(path)
        if not companion.is_file() or sha256_of(companion) != pq.get("sha256"):
            log.warning("%s: its per-query file %s is missing or changed; the cell runs again", path, companion.name)
            return False
    if current is not None:
        try:
            why = changed(rec.get("fingerprints"), current())
        except (BenchError, OSError) as e:  # the data cannot be read now: the cell runs and fails with its own line
            why = f"its inputs cannot be read now ({e})"
        if why is not None:
            log.info("%s: %s; the cell runs again", path, why)
            return False
    return True


def record_failure(cfg: BenchConfig, cell: Cell, reason: str) -> None:
    """Write a ``failed`` record for ``cell`` that failed outside :func:`execute_cell` (a task of a sharded
    evaluation), unless an earlier ``ok`` record is there: that one is kept."""
    path = record_path(cfg, cell)
    if _has_ok_record(path):
        log.warning("%s: keeping the earlier ok result %s; this failure is not written over it", cell.label, path)
        return
    _write(path, status_record(cell, plan_cell(cell, cfg).snapshot, "failed", reason), cell)


def _has_ok_record(path: Path) -> bool:
    try:
        return read_record(path).get("status") == "ok"
    except (OSError, ValueError):
        return False


def execute_cell(
    cfg: BenchConfig, cell: Cell, *, force: bool = False, progress: bool = True, scorer: ScorerFactory | None = None,
    extra: dict[str, Any] | None = None,
) -> Outcome:  # fmt: skip
    """Run ``cell`` unless an ``ok`` record with its config hash exists (or ``force``) and write its record.

    ``scorer`` scores it instead of its adapter (see :func:`~bench.grid.pipeline.run_cell`); ``extra`` fields are
    added to an ``ok`` record (how it was scored)."""
    plan = plan_cell(cell, cfg, progress=progress)
    path, snapshot = plan.record_path, plan.snapshot
    digests = DigestCache(plan.work / "digests.json")
    try:
        if not force and is_done(path, plan.config_hash, lambda: cell_fingerprints(plan, digests)):
            return Outcome(cell, "skipped", path)
    finally:
        digests.save()
    ckpt = plan.checkpoint_path
    try:
        with refreshing(force):  # a forced cell recomputes its features too (inside a forced grid: once per run)
            record = run_plan(plan, checkpoint=ckpt, per_query=per_query_path(path), scorer=scorer)
    except WeightsUnavailableError as e:
        log.info("%s: %s", cell.label, e)  # the launcher's summary states it once, as the run's last lines
        failed_write = _write(path, status_record(cell, snapshot, "unavailable", str(e)), cell)
        return failed_write or Outcome(cell, "unavailable", path, str(e))
    except Exception as e:  # one broken cell must not lose the rest of the grid
        interrupt = interrupt_behind(e)
        if interrupt is not None:  # an interrupt that cleanup code turned into an error: stop, as for the interrupt
            raise interrupt from None
        if isinstance(e, BenchError):
            log.error("%s: %s", cell.label, e)
            reason = str(e)
        else:
            log.exception("%s failed", cell.label)
            reason = f"{type(e).__name__}: {e}"
        rec = status_record(cell, snapshot, "failed", reason)
        rec["traceback"] = traceback.format_exc(limit=20)
        if _has_ok_record(path):
            log.warning("%s: keeping the earlier ok result %s; this failure is not written over it", cell.label, path)
        else:
            _write(path, rec, cell)
        return Outcome(cell, "failed", path, reason)
    if record.get("status") == "worker" or not current_dist().is_main:  # rank 0 alone writes
        return Outcome(cell, "worker", path)
    try:
        record["fingerprints"] = cell_fingerprints(plan, digests)
    except (BenchError, OSError) as e:  # read a moment ago; if it cannot be now, the record says so (and re-runs)
        log.warning("%s: no fingerprints of its inputs (%s)", cell.label, e)
    digests.save()
    failed_write = _write(path, {**record, **(extra or {}), **_job_fields()}, cell)
    if failed_write is not None:
        return failed_write  # the checkpoint stays: the next run resumes instead of training again
    ckpt.unlink(missing_ok=True)
    return Outcome(cell, "ran", path, wall_time_s=float(record.get("wall_time_s", 0.0)))


def _write(path: Path, record: dict[str, Any], cell: Cell) -> Outcome | None:
    """Write a record; a write that fails (disk full, read-only folder) is the cell's failure, as one line, and the
    grid goes on with the next cell."""
    try:
        write_record(path, record)
    except OSError as e:
        reason = f"cannot write {path}: {e.strerror or e}"
        log.error("%s: %s", cell.label, reason)
        return Outcome(cell, "failed", path, reason)
    return None


def _job_fields() -> dict[str, str]:
    # Set by bench.grid.slurm.CellJob inside a submitit job: which job wrote a record, and its log.
    out = {"job_id": os.environ.get("BENCH_JOB_ID"), "log": os.environ.get("BENCH_JOB_LOG")}
    return {k: v for k, v in out.items() if v}


def status_record(cell: Cell, snapshot: dict[str, Any], status: RecordStatus, reason: str) -> dict[str, Any]:
    """A record for a cell that produced no metrics (``unavailable`` or ``failed``), with the reason."""
    return {
        "schema": SCHEMA,
        "status": status,
        "reason": reason,
        "model": cell.model,
        "adapter": snapshot["model"].get("adapter"),
        "dataset": cell.dataset,
        "split": cell.split,
        "method": cell.method_id,
        "seed": cell.seed,
        **variant_fields(cell.variant),
        "metrics": None,
        "config": snapshot,
        "config_hash": config_hash(snapshot),
        **({"language": snapshot["dataset"]["language"]} if "language" in snapshot.get("dataset", {}) else {}),
        **_job_fields(),
    }
