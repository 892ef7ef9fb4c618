"""SLURM job states: one job's (submitit's ``sacct``, then ``squeue``), or many at once (one ``sacct`` call for a
whole grid, array rows expanded), for ``bench status`` and the "already queued?" check of a re-run."""

from __future__ import annotations

import logging
from collections.abc import Iterable

__all__ = ["slurm_state", "slurm_states"]

log = logging.getLogger(__name__)


def slurm_state(job_id: str, folder: str) -> str:
    """A SLURM job's state word (``PENDING``, ``RUNNING``, ``COMPLETED``, ...; ``UNKNOWN`` when neither sacct nor
    squeue knows it)."""
    from submitit.slurm.slurm import SlurmJob

    try:
        state = str(SlurmJob(folder=folder, job_id=job_id).state).split()[0].upper()
    except Exception as e:  # sacct unreachable: ask squeue below
        log.warning("cannot read the state of job %s from sacct: %s", job_id, e)
        state = "UNKNOWN"
    if state == "UNKNOWN":
        # Right after sbatch, accounting lags by about a second; squeue already knows the job.
        state = _squeue_states({job_id}).get(job_id, state)
    return state


def _squeue_states(wanted: set[str]) -> dict[str, str]:
    # squeue -r lists each array element on its own line; jobs that have left the queue are not listed.
    import subprocess

    arrays = sorted({j.split("_")[0] for j in wanted})
    try:
        text = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(arrays), "-o", "%i %T"],
                              capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    out = {}
    for line in text.splitlines():
        jid, _, state = line.strip().partition(" ")
        if jid in wanted and state:
            out[jid] = state.split()[0].upper()
    return out


def _array_ids(job_id: str) -> list[str]:
    # sacct shows an array's pending elements as one row: 123_[6-200] or 123_[6-8,10%4] (%4: the throttle).
    base, sep, spec = job_id.partition("_[")
    if not sep:
        return [job_id]
    out = []
    for part in spec.rstrip("]").split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            out += [f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def slurm_states(job_ids: Iterable[str]) -> dict[str, str]:
    """The state words of many SLURM jobs (array elements ``123_4`` included) from one ``sacct`` call, and one
    ``squeue`` call for those accounting does not know yet; a job neither knows is left out."""
    import subprocess

    wanted = set(job_ids)
    arrays = sorted({j.split("_")[0] for j in wanted})
    out: dict[str, str] = {}
    if not arrays:
        return out
    try:
        text = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(arrays)],
                              capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        text = ""
    for line in text.splitlines():
        jid, _, state = line.partition("|")
        for one in _array_ids(jid.strip()):
            if one in wanted and state.strip():
                out[one] = state.split()[0].upper()
    if wanted - set(out):  # right after sbatch, accounting lags; squeue already knows the jobs
        out.update(_squeue_states(wanted - set(out)))
    return out
