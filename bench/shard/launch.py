"""Run sharded evaluations: plan each cell, then its encode tasks, score tasks and merge, here one after another
(``local``) or as three SLURM job arrays chained by ``afterok`` dependencies (``slurm``; ``debug`` runs the same
jobs in this process through submitit)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.adapters.registry import get_adapter_class
from bench.atomic import atomic_write_bytes
from bench.config import BenchConfig
from bench.data import load_split
from bench.errors import BenchError, ConfigError, interrupt_behind
from bench.grid.cell import Cell
from bench.grid.execute import Outcome, is_done, record_failure
from bench.grid.fingerprint import DigestCache, cell_fingerprints
from bench.grid.plan import plan_cell
from bench.grid.records import prepare_results_dir
from bench.grid.slurm import QUEUED, RUNNING, job_folder, make_executor, map_array, match_slurm_cpus, slurm_state
from bench.methods import get_method
from bench.shard.encode import encode_done, encode_shard
from bench.shard.merge import merge_cell
from bench.shard.plan import ShardDir, make_plan, shard_dir
from bench.shard.score import score_done, score_part
from bench.tasks import task_of

__all__ = ["ShardJob", "ShardRun", "check_shardable", "plan_cells", "run_sharded"]

log = logging.getLogger(__name__)
FAILED = "failed: "  # how a debug job reports its failure
PHASES: dict[str, Callable[[BenchConfig, Cell, int], Any]] = {
    "encode": encode_shard,
    "score": score_part,
    "merge": lambda cfg, cell, _: merge_cell(cfg, cell),
}


def check_shardable(cfg: BenchConfig, cells: list[Cell]) -> None:
    """Sharded evaluation scores image-text cells whose method does not train, from embeddings alone: anything else
    is one line naming the cell (exit 2), before anything runs."""
    if cfg.eval.rerank_k:
        raise ConfigError(f"{cfg.source}: [eval] rerank_k = {cfg.eval.rerank_k}: sharded evaluation scores "
                          "embeddings only; set rerank_k = 0 (or run without --shards)")  # fmt: skip
    for cell in cells:
        if cfg.datasets[cell.dataset].get("long_text", "truncate") != "truncate":
            raise ConfigError(f'--shards: {cell.label}: long_text = "sentences" is scored in one process; run '
                              "without --shards")  # fmt: skip
        if get_method(cell.method).trains:
            raise ConfigError(f"--shards: {cell.label}: method {cell.method!r} trains; sharded evaluation scores "
                              "methods that do not train (zeroshot); pick them with --methods")  # fmt: skip
        if callable(getattr(get_adapter_class(cfg.models[cell.model]["adapter"]), "score_matrix", None)):
            raise ConfigError(f"--shards: {cell.label}: model {cell.model!r} scores pairs by cross-attention, which "
                              "is scored in one process; run without --shards")  # fmt: skip
        task = task_of(cfg, cell.dataset)
        if not task.shardable:
            raise ConfigError(f"--shards: {cell.label}: {cell.dataset!r} is a {task.title} set; sharded evaluation "
                              "scores image-text splits")  # fmt: skip


@dataclass
class ShardRun:
    """What :func:`run_sharded` did: cells already done, and per cell the tasks left to run (or the jobs sent)."""

    done: list[Cell] = field(default_factory=list)
    active: list[tuple[Cell, str]] = field(default_factory=list)  # still queued or running: (cell, merge job id)
    todo: dict[str, list[tuple[Cell, int]]] = field(default_factory=lambda: {p: [] for p in PHASES})
    jobs: dict[str, list[tuple[Cell, int, Any]]] = field(default_factory=dict)  # phase -> (cell, task, job)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (task, reason)
    failed_cells: set[Cell] = field(default_factory=set)


def plan_cells(cfg: BenchConfig, cells: list[Cell], shards: int, *, force: bool = False) -> ShardRun:
    """Plan every cell that is not done (or all, with ``force``) and list the tasks each phase still has to run."""
    prepare_results_dir(cfg)
    run = ShardRun()
    digests = DigestCache(os.path.join(cfg.paths.work_dir, "digests.json"))
    for cell in cells:
        cp = plan_cell(cell, cfg)
        if not force and is_done(cp.record_path, cp.config_hash, lambda cp=cp: cell_fingerprints(cp, digests)):
            run.done.append(cell)
            continue
        d = ShardDir(cp.shard_path)
        in_flight = None if force else _in_flight(d)
        if in_flight is not None:
            run.active.append((cell, in_flight))
            continue
        split = load_split(cell.dataset, cfg.datasets[cell.dataset], cell.split, work_dir=cfg.paths.work_dir)
        plan = make_plan(cell, cfg, split, cp.config_hash, shards, shards)
        d.adopt(plan, fresh=force)  # --force: every task runs again
        run.todo["encode"] += [(cell, k) for k in range(plan.encode_tasks) if not encode_done(d, plan, k)]
        run.todo["score"] += [(cell, p) for p in range(plan.parts) if not score_done(d, p)]
        run.todo["merge"].append((cell, 0))
    digests.save()
    return run


def _in_flight(d: ShardDir) -> str | None:
    """The merge job of an earlier submission of this cell if it is still queued or running (its encode and score
    tasks then are too, or are done): submitting again would run them twice."""
    info = d.read_marker(d.submitted_file)
    if not info or info.get("cluster") != "slurm":
        return None
    state = slurm_state(str(info["merge_job"]), str(info["folder"]))
    return str(info["merge_job"]) if state in QUEUED | RUNNING else None


class ShardJob:
    """The callable of one sharded-evaluation task in a submitit job: ``phase`` of ``cell``, task ``index``.

    Checkpointable: a preempted or timed-out task is requeued and runs again (its files appear only when complete).
    """

    def __init__(self, cfg: BenchConfig, phase: str, cwd: str | None = None) -> None:
        self.cfg, self.phase, self.cwd = cfg, phase, cwd or os.getcwd()

    def __call__(self, cell: Cell, index: int) -> str:
        import submitit

        os.chdir(self.cwd)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
        os.environ["BENCH_JOB_ID"] = str(submitit.JobEnvironment().job_id)
        match_slurm_cpus()
        try:
            out = PHASES[self.phase](self.cfg, cell, index)
            if isinstance(out, Outcome) and out.status == "failed":  # the merge wrote a failed record: fail the job
                raise BenchError(f"{cell.label}: {out.reason}")
        except Exception as e:
            if self.cfg.launcher.name == "slurm":
                raise  # sacct says FAILED, and tasks that need this one are cancelled
            # The debug executor would open pdb on a raised error: the failure comes back as the job's result.
            return FAILED + (str(e) if isinstance(e, BenchError) else f"{type(e).__name__}: {e}")
        return f"{self.phase} {index} of {cell.label}: {'done' if out is not False else 'already done'}"

    def checkpoint(self, cell: Cell, index: int) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, cell, index)


def _task(phase: str, cell: Cell, index: int) -> str:
    return f"{phase} task {index} of {cell.label}" if phase != "merge" else f"merge of {cell.label}"


def _run_here(cfg: BenchConfig, run: ShardRun) -> None:
    for phase, fn in PHASES.items():
        for cell, index in run.todo[phase]:
            if cell in run.failed_cells:
                continue  # an earlier task of this cell failed: its later phases cannot run
            try:
                out = fn(cfg, cell, index)
            except Exception as e:  # one line per failed task; the traceback goes to the debug log (-v)
                interrupt = interrupt_behind(e)
                if interrupt is not None:  # an interrupt that cleanup code turned into an error: stop
                    raise interrupt from None
                reason = str(e) if isinstance(e, BenchError) else f"{type(e).__name__}: {e}"
                log.error("%s: %s", _task(phase, cell, index), reason)
                log.debug("%s failed", _task(phase, cell, index), exc_info=True)
                _failed(cfg, run, cell, _task(phase, cell, index), reason)
                continue
            if isinstance(out, Outcome) and out.status == "failed":  # the merge wrote its failed record itself
                run.failed.append((_task(phase, cell, index), out.reason))
                run.failed_cells.add(cell)


def _executor(cfg: BenchConfig, phase: str, after: list[Any]) -> Any:
    # One process on at most one GPU per task: the parallelism is the array's.
    launcher = dataclasses.replace(cfg.launcher, gpus_per_node=min(1, cfg.launcher.gpus_per_node), tasks_per_node=1)
    ex = make_executor(dataclasses.replace(cfg, launcher=launcher))
    ex.update_parameters(name=f"bench-{phase}")
    if after and cfg.launcher.name == "slurm":
        ids = sorted({str(j.job_id).split("_")[0] for j in after})
        deps = {"dependency": "afterok:" + ":".join(ids), "kill_on_invalid_dep": "yes"}
        ex.update_parameters(slurm_additional_parameters={**dict(cfg.launcher.sbatch), **deps})
    return ex


def _submit(cfg: BenchConfig, run: ShardRun) -> None:
    after: list[Any] = []
    for phase in PHASES:
        todo = run.todo[phase]
        if not todo:
            continue
        ex = _executor(cfg, phase, after)
        job = ShardJob(cfg, phase)
        if cfg.launcher.name == "debug":  # the debug executor runs a job when its result is asked for: in order
            todo = [(c, i) for c, i in todo if c not in run.failed_cells]  # a failed cell's later phases cannot run
            jobs = [ex.submit(job, c, i) for c, i in todo]
            for (c, i), j in zip(todo, jobs, strict=True):
                _collect(cfg, run, phase, c, i, j)
        else:
            jobs = map_array(ex, job, [c for c, _ in todo], [i for _, i in todo])
        run.jobs[phase] = [(c, i, j) for (c, i), j in zip(todo, jobs, strict=True)]
        after = jobs
    if cfg.launcher.name == "slurm":
        for cell, _, job in run.jobs.get("merge", []):
            info = {"cluster": "slurm", "merge_job": str(job.job_id), "folder": str(job_folder(cfg))}
            atomic_write_bytes(shard_dir(cfg, cell).submitted_file, json.dumps(info).encode())


def _collect(cfg: BenchConfig, run: ShardRun, phase: str, cell: Cell, index: int, job: Any) -> None:
    where = getattr(getattr(job, "paths", None), "stderr", None)
    try:
        result = job.result()
    except Exception as e:  # the task's own error line is in its log; submitit's message names the log files
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        result = FAILED + (_logged_error(where) or (lines[-1] if lines else type(e).__name__))
    if isinstance(result, str) and result.startswith(FAILED):
        log_hint = f" (log {where})" if where else ""
        _failed(cfg, run, cell, _task(phase, cell, index), result.removeprefix(FAILED) + log_hint)


_RAISED = re.compile(r"^(?:[\w.]+\.)?\w+(?:Error|Exception): (.+)$")


def _logged_error(log_file: Any) -> str:
    """The message of the last exception a job's log shows (``bench.errors.DataError: <this>``), or ''."""
    try:
        lines = Path(log_file).read_text(errors="replace").splitlines() if log_file else []
    except OSError:
        return ""
    found = [m.group(1) for m in map(_RAISED.match, lines) if m]
    return found[-1][:300] if found else ""


def _failed(cfg: BenchConfig, run: ShardRun, cell: Cell, task: str, reason: str) -> None:
    """A task of ``cell`` failed: said once, and the cell gets a ``failed`` record (`bench status` shows it)."""
    run.failed.append((task, reason))
    run.failed_cells.add(cell)
    record_failure(cfg, cell, f"{task}: {reason}")


def wait_sharded(cfg: BenchConfig, run: ShardRun) -> None:
    """Block until every submitted task has ended; a cell's first failed task is listed in ``run.failed`` (the tasks
    SLURM then cancels because they need it are not listed again)."""
    for phase, jobs in run.jobs.items():
        for cell, index, job in jobs:
            if cell in run.failed_cells:  # cancelled by SLURM because a task it needs failed: said once already
                with contextlib.suppress(Exception):
                    job.result()
                continue
            _collect(cfg, run, phase, cell, index, job)


def run_sharded(
    cfg: BenchConfig, cells: list[Cell], shards: int, *, force: bool = False, wait: bool = True
) -> ShardRun:
    """Evaluate ``cells`` sharded over ``shards`` encode tasks and ``shards`` score tasks each, with
    ``cfg.launcher``; the records land where ``bench run`` puts them."""
    if shards < 1:
        raise ConfigError(f"--shards: must be >= 1, got {shards}")
    check_shardable(cfg, cells)
    run = plan_cells(cfg, cells, shards, force=force)
    if cfg.launcher.name == "local":
        _run_here(cfg, run)
    else:
        _submit(cfg, run)
        if wait and cfg.launcher.name == "slurm":
            wait_sharded(cfg, run)
    return run
