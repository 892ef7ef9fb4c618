"""What every tracker logs, and how: metric names, the flattening of nested blocks, the run name."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["Tracker", "epoch_scalars", "final_scalars", "flat_params", "flatten", "run_name"]


class Tracker(Protocol):
    """One backend's run of one cell."""

    name: str

    def log_epoch(self, row: dict[str, float]) -> None:
        """Log one epoch's history row at step ``row["epoch"]``."""

    def log_final(self, record: Mapping[str, Any]) -> None:
        """Log the final test metrics of the cell's record."""

    def close(self, failed: bool) -> None:
        """Finish the run."""


def run_name(model: str, dataset: str, split: str, method: str, seed: int) -> str:
    """``model/dataset/split/method-seed<s>``: the cell's result path, so a run and its record are found together."""
    return f"{model}/{dataset}/{split}/{method}-seed{seed}"


def flatten(block: Any, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a nested metrics block as ``a/b/c`` keys (``i2t/r1``, ``folds/mean/rsum``); lists,
    strings and null values are left out."""
    out: dict[str, float] = {}
    if isinstance(block, Mapping):
        for k, v in block.items():
            out.update(flatten(v, f"{prefix}{k}/"))
    elif isinstance(block, bool):
        pass
    elif isinstance(block, int | float) and math.isfinite(block):
        out[prefix.rstrip("/")] = float(block)
    return out


def flat_params(block: Any, prefix: str = "") -> dict[str, str]:
    """Every leaf of a nested config as ``a/b/c`` -> its value as written (``256``, ``true``, ``[1, 5, 10]``)."""
    import json

    if isinstance(block, Mapping):
        out: dict[str, str] = {}
        for k, v in block.items():
            out.update(flat_params(v, f"{prefix}{k}/"))
        return out
    return {prefix.rstrip("/"): block if isinstance(block, str) else json.dumps(block, default=str)}


def epoch_scalars(row: Mapping[str, float], select_metric: str) -> dict[str, float]:
    """An epoch's history row as tracker scalars: ``train/<loss term>``, ``train/lr``, ``train/<tau>``,
    ``val/<select_metric>``, ``time/epoch_seconds``."""
    out: dict[str, float] = {}
    for k, v in row.items():
        if k == "epoch" or not isinstance(v, int | float) or not math.isfinite(v):
            continue
        if k == "val":
            out[f"val/{select_metric}"] = float(v)
        elif k == "seconds":
            out["time/epoch_seconds"] = float(v)
        else:
            out[f"train/{k}"] = float(v)
    return out


def final_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The record's test metrics as ``test/<direction>/<metric>`` scalars (and ``test_last/...`` for the last
    epoch's, where a trained method selected another)."""
    out = {f"test/{k}": v for k, v in flatten(record.get("metrics") or {}).items()}
    out.update({f"test_last/{k}": v for k, v in flatten(record.get("metrics_last") or {}).items()})
    return out
