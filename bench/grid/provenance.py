"""Provenance of a result record: the config it ran, the code and library versions, the device, when and how long."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import bench
from bench.grid.records import config_hash
from bench.scoring import TIE_RULE
from bench.train.distributed import current as current_dist

__all__ = ["VERSIONED", "device_name", "git_sha", "provenance", "versions"]

VERSIONED = ["torch", "torchvision", "timm", "open_clip_torch", "transformers", "sentence-transformers", "numpy"]


def versions() -> dict[str, str]:
    """itr-bench's, Python's and the numeric libraries' versions."""
    out = {"itr-bench": bench.__version__, "python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_sha() -> str | None:
    """The commit of the itr-bench checkout, or None for an installed wheel."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(bench.__file__).parent, capture_output=True, text=True, timeout=5
        )
        return sha.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: torch.device) -> str:
    """``cuda:<GPU name>`` or ``cpu:<arch>x<cores> threads=<n>``."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.machine()}x{os.cpu_count()} threads={torch.get_num_threads()}"


def provenance(snapshot: dict[str, Any], device: torch.device, started: float) -> dict[str, Any]:
    """The record fields that say what ran where: ``started`` is the cell's ``time.perf_counter()`` at its start."""
    return {
        "config": snapshot,
        "config_hash": config_hash(snapshot),
        "tie_rule": TIE_RULE,
        "versions": versions(),
        "git_sha": git_sha(),
        "device": device_name(device),
        "world_size": current_dist().world_size,  # processes that trained it (data-parallel ranks)
        "wall_time_s": round(time.perf_counter() - started, 2),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
