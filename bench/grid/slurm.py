"""Launchers: run a grid's missing cells in this process (``local``) or through submitit (``debug``, ``slurm``).

With ``slurm`` every missing cell becomes one element of a job array (one ``sbatch``). Each element runs
:func:`bench.grid.execute.execute_cell`, so the cell writes its own record atomically whatever happens, and the
submitting
``bench run`` can be killed at any time: a marker file beside each cell's record (``<method>-seed<N>.job``, JSON)
remembers its job, and the next ``bench run`` submits only cells that are neither done nor queued/running.

Preemption and time limits: :class:`CellJob` is a ``submitit.helpers.Checkpointable``, so SLURM's warning signal
requeues it (up to ``launcher.max_requeues`` times after time-outs); ``scontrol requeue`` restarts it too. Training
saves a checkpoint after every epoch (:func:`bench.train.fit.fit`), so the requeued job resumes where it stopped.

A cell that asks for several GPUs gets one task per GPU; the tasks join a ``torch.distributed`` group through
submitit's ``TorchDistributedEnvironment`` (never ``torchrun`` inside submitit: submitit#1764).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from bench.atomic import atomic_open
from bench.config import BenchConfig, LauncherConfig
from bench.errors import BenchError, ConfigError
from bench.grid.cell import Cell
from bench.grid.execute import execute_cell, is_done, record_path
from bench.grid.fingerprint import DigestCache, cell_fingerprints, forget_splits
from bench.grid.jobstate import slurm_state, slurm_states
from bench.grid.plan import Plan, plan_cell
from bench.grid.records import prepare_results_dir, read_record
from bench.train.fit import checkpoint_epoch

__all__ = [
    "CellJob",
    "CellStatus",
    "LAUNCHERS",
    "Submission",
    "grid_status",
    "job_folder",
    "match_slurm_cpus",
    "slurm_state",
    "submit_grid",
    "wait_for",
]

log = logging.getLogger(__name__)
LAUNCHERS = ("local", "debug", "slurm")
# sacct states -> what `bench status` says
QUEUED = {"PENDING", "REQUEUED", "CONFIGURING", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
_FAILED = {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED", "INTERRUPTED"}


class CellFailedError(RuntimeError):
    """Raised inside a job whose cell failed, so SLURM and sacct report the job as FAILED."""


def match_slurm_cpus() -> None:
    """Inside a SLURM job, run torch on the task's CPUs (``SLURM_CPUS_PER_TASK``): by default it starts a thread per
    core of the node, and threads that outnumber the task's cores slow every GEMM down several-fold."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if cpus.isdigit() and int(cpus) > 0:
        import torch

        torch.set_num_threads(int(cpus))


class CellJob:
    """The callable a submitit job runs: one grid cell, by :func:`~bench.grid.execute.execute_cell`.

    Checkpointable: on preemption or time-out submitit calls :meth:`checkpoint` and requeues the same call; the cell
    then resumes from its last epoch checkpoint on disk.
    """

    def __init__(self, cfg: BenchConfig, *, force: bool = False, cwd: str | None = None) -> None:
        self.cfg = cfg
        self.force = force
        self.cwd = cwd or os.getcwd()  # relative paths in the config resolve where `bench run` was called
        # On SLURM a failed cell fails its job (sacct says FAILED). The debug executor would open pdb on the
        # re-raised error, after the fact; there the failed record is the report.
        self.raise_on_failure = cfg.launcher.name == "slurm"

    def __call__(self, cell: Cell) -> dict[str, Any]:
        import submitit

        os.chdir(self.cwd)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
        env = submitit.JobEnvironment()
        match_slurm_cpus()
        os.environ["BENCH_JOB_ID"] = str(env.job_id)  # stamped on the record: which job wrote it
        if "SUBMITIT_FOLDER" in os.environ:  # unset under the debug executor
            os.environ["BENCH_JOB_LOG"] = str(env.paths.stderr)
        if env.num_tasks > 1:
            import torch

            from bench.train.distributed import init_from_env

            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=True)
            init_from_env(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        log.info("job %s (task %d/%d): %s", env.job_id, env.global_rank, env.num_tasks, cell.label)
        out = execute_cell(self.cfg, cell, force=self.force, progress=False)
        if out.status == "failed" and self.raise_on_failure:
            raise CellFailedError(f"{cell.label}: {out.reason}")
        return {"cell": cell.label, "status": out.status, "path": str(out.path), "reason": out.reason}

    def checkpoint(self, cell: Cell) -> Any:
        """Requeue the same cell (its training state is already on disk, saved after every epoch)."""
        import submitit

        log.warning("%s: preempted or timed out; requeueing (resumes from its last epoch checkpoint)", cell.label)
        return submitit.helpers.DelayedSubmission(self, cell)


def job_folder(cfg: BenchConfig) -> Path:
    """Where submitit writes job scripts, pickles and logs."""
    return Path(cfg.launcher.folder or Path(cfg.paths.work_dir) / "jobs").absolute()


def _marker(cfg: BenchConfig, cell: Cell) -> Path:
    return record_path(cfg, cell).with_suffix(".job")


def _executor_params(launcher: LauncherConfig) -> dict[str, Any]:
    gpus = launcher.gpus_per_node
    params: dict[str, Any] = {
        "timeout_min": launcher.timeout_min,
        "cpus_per_task": launcher.cpus_per_task,
        "mem_gb": launcher.mem_gb,
        "nodes": 1,
        "tasks_per_node": launcher.tasks_per_node or max(1, gpus),  # one task per GPU: torch.distributed over them
        "slurm_array_parallelism": launcher.array_parallelism,
    }
    if gpus:
        params["gpus_per_node"] = gpus
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(launcher, key)
        if value:
            params[f"slurm_{key}"] = value
    if launcher.setup:
        params["slurm_setup"] = list(launcher.setup)
    if launcher.sbatch:
        params["slurm_additional_parameters"] = dict(launcher.sbatch)
    return params


def make_executor(cfg: BenchConfig) -> Any:
    """A submitit executor for ``cfg.launcher`` (``cluster=`` always explicit: auto-detection picks SLURM whenever
    ``srun`` is on PATH)."""
    import submitit

    name = cfg.launcher.name
    if name not in ("debug", "slurm"):
        raise ConfigError(f"{cfg.source}: [launcher] name: {name!r} has no executor; use one of {', '.join(LAUNCHERS)}")
    folder = job_folder(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    kwargs = {"slurm_max_num_timeout": cfg.launcher.max_requeues} if name == "slurm" else {}
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster=name, **kwargs)
    if name == "slurm":
        try:
            ex.update_parameters(**_executor_params(cfg.launcher))
        except (NameError, ValueError, TypeError) as e:  # submitit lists the valid parameters
            raise ConfigError(f"{cfg.source}: [launcher]: {e}") from None
    ex.update_parameters(name="bench")
    return ex


@dataclass
class Submission:
    """What :func:`submit_grid` sent: the jobs of the cells it submitted, and the cells it left alone."""

    jobs: list[tuple[Cell, Any]] = field(default_factory=list)
    done: list[Cell] = field(default_factory=list)
    active: list[tuple[Cell, str]] = field(default_factory=list)  # already queued or running: (cell, job id)


def submit_grid(cfg: BenchConfig, cells: list[Cell], *, force: bool = False) -> Submission:
    """Submit every cell that is not done and not already queued or running, as one job array."""
    prepare_results_dir(cfg)  # an unwritable results folder is one line here, not a failure in every job
    forget_splits()  # fingerprints of what is on disk now
    sub = Submission()
    todo = []
    states = _grid_states(cfg, cells)
    for cell in cells:
        st = cell_status(cfg, cell, states)
        if not force and st.state == "done":
            sub.done.append(cell)
        elif st.state in ("queued", "running"):
            sub.active.append((cell, st.job_id or "?"))
        else:
            todo.append(cell)
    if not todo:
        return sub
    ex = make_executor(cfg)
    job = CellJob(cfg, force=force)
    if cfg.launcher.name == "debug":
        jobs = [ex.submit(job, c) for c in todo]  # the debug executor runs each job when its result is asked for
    else:
        jobs = map_array(ex, job, todo)
    for cell, j in zip(todo, jobs, strict=True):
        _write_marker(cfg, cell, j)
        sub.jobs.append((cell, j))
    return sub


def map_array(ex: Any, fn: Any, *iterables: Any) -> list[Any]:
    """``ex.map_array(fn, ...)``, with sbatch's refusal (the controller down, an unknown partition or account) as one
    line naming sbatch's own error, instead of submitit's traceback.

    Raises:
        BenchError: sbatch did not accept the array.
    """
    from submitit.core.utils import FailedJobError

    try:
        return list(ex.map_array(fn, *iterables))
    except (FailedJobError, OSError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        said = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else repr(e))
        raise BenchError(f"sbatch did not accept the job array ({said}); is the cluster up (`sinfo`)?") from None


def _write_marker(cfg: BenchConfig, cell: Cell, job: Any) -> None:
    path = _marker(cfg, cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "job_id": str(job.job_id),
        "cluster": cfg.launcher.name,
        "folder": str(job_folder(cfg)),
        "stderr": str(job.paths.stderr),
        "config_hash": plan_cell(cell, cfg).config_hash,
        "submitted": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with atomic_open(path) as f:
        f.write(json.dumps(info, indent=1) + "\n")


CellState = Literal["done", "queued", "running", "resumable", "failed", "cancelled", "unavailable", "missing"]


@dataclass(frozen=True)
class CellStatus:
    """One row of ``bench status``."""

    cell: Cell
    state: CellState
    job_id: str | None = None
    detail: str = ""  # the record path, or the log path and last error line
    log: str | None = None


def _last_error_line(path: str | None) -> str:
    if not path or not Path(path).is_file():
        return ""
    lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error:" in ln or "FAILED" in ln]
    return (errors or lines or [""])[-1][:300]


def _grid_states(cfg: BenchConfig, cells: list[Cell]) -> dict[str, str]:
    # One sacct call for every job the grid's markers name, instead of one per cell.
    ids = []
    for cell in cells:
        try:
            info = json.loads(_marker(cfg, cell).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and info.get("cluster") == "slurm" and isinstance(info.get("job_id"), str):
            ids.append(info["job_id"])
    return slurm_states(ids) if ids else {}


def cell_status(cfg: BenchConfig, cell: Cell, states: Mapping[str, str] | None = None) -> CellStatus:
    """Where ``cell`` stands: its record first (done, failed, unavailable), then its job's SLURM state (from
    ``states``, :func:`slurm_states` of the grid's jobs, when it has the job; else asked for alone)."""
    plan = plan_cell(cell, cfg)
    path, chash = plan.record_path, plan.config_hash
    digests = DigestCache(plan.work / "digests.json")
    done = is_done(path, chash, lambda: cell_fingerprints(plan, digests))
    digests.save()
    if done:
        return CellStatus(cell, "done", detail=str(path))
    marker = _marker(cfg, cell)
    info: dict[str, Any] = {}
    if marker.is_file():
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):
            info = {}
        if info.get("config_hash") != chash:
            info = {}  # a job of an older configuration says nothing about this one
    job_id, log_path = info.get("job_id"), info.get("stderr")
    rec: dict[str, Any] = {}
    if path.is_file():
        try:
            rec = read_record(path)
        except (OSError, ValueError):
            rec = {}
    final = rec.get("config_hash") == chash and rec.get("status") in ("failed", "unavailable")
    if final and (not info or rec.get("job_id") == job_id):
        # written by the marker's job (or no job at all): final, whatever sacct still says
        return _record_status(cell, rec, job_id, log_path)
    if info and info.get("cluster") == "slurm":
        state = (states or {}).get(job_id) or slurm_state(job_id, info["folder"])
        if state in QUEUED:
            return CellStatus(cell, "queued", job_id, state.lower(), log_path)
        if state in RUNNING:
            return CellStatus(cell, "running", job_id, log_path or "", log_path)
        if state.startswith("CANCELLED"):
            return CellStatus(cell, "cancelled", job_id, f"{state}; log {log_path}", log_path)
        if state in _FAILED and rec.get("config_hash") != chash:
            return CellStatus(cell, "failed", job_id, f"{state}: {_last_error_line(log_path)}; log {log_path}",
                              log_path)  # fmt: skip
    if final:  # a failure of an earlier job of this configuration, and no live job since
        return _record_status(cell, rec, job_id, log_path)
    resumable = _resumable(plan)
    if resumable:
        return CellStatus(cell, "resumable", job_id, resumable, log_path)
    if info:
        return CellStatus(cell, "failed", job_id, f"job ended without a result; log {log_path}", log_path)
    return CellStatus(cell, "missing")


def _resumable(plan: Plan) -> str:
    # A cell interrupted mid-training (Ctrl-C, a kill, a time-out) left its epoch checkpoint: the next run resumes it.
    path = plan.checkpoint_path
    epoch = checkpoint_epoch(path) if path.is_file() else None
    if epoch is None:
        return ""
    return f"after epoch {epoch} of {plan.train.epochs}; `bench run` resumes it ({path})"


def _record_status(cell: Cell, rec: dict[str, Any], job_id: str | None, log_path: str | None) -> CellStatus:
    where = rec.get("log") or log_path
    detail = f"{rec.get('reason', '')}" + (f"; log {where}" if where else "")
    return CellStatus(cell, str(rec["status"]), job_id, detail, where)


def grid_status(cfg: BenchConfig, cells: list[Cell]) -> list[CellStatus]:
    """:func:`cell_status` of every cell of a grid (the SLURM states of all their jobs read at once)."""
    states = _grid_states(cfg, cells)
    return [cell_status(cfg, c, states) for c in cells]


def wait_for(sub: Submission, *, poll_s: float = 2.0, progress: bool = True) -> None:
    """Block until every submitted job has ended, with a progress bar over cells."""
    from tqdm.auto import tqdm

    pending = list(sub.jobs)
    with tqdm(total=len(pending), desc="cells", unit="cell", disable=not progress) as bar:
        while pending:
            still = []
            for cell, job in pending:
                try:
                    finished = job.done()
                except Exception:  # the debug executor runs the job inside done() and re-raises its error
                    finished = True
                if finished:
                    bar.update(1)
                else:
                    still.append((cell, job))
            pending = still
            if pending:
                time.sleep(poll_s)


def check_launcher(cfg: BenchConfig, name: str | None = None) -> str:
    """The launcher to use (``--launcher`` or ``[launcher] name``), checked."""
    name = name or cfg.launcher.name
    if name not in LAUNCHERS:
        raise BenchError(f"--launcher / [launcher] name: unknown launcher {name!r}; valid: {', '.join(LAUNCHERS)}")
    return name
