"""Weights & Biases: one run per cell in ``[tracking] project``, offline by default (``<dir>/wandb/offline-run-*``;
``wandb sync`` uploads them later)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.config import TrackingConfig
from bench.tracking.base import epoch_scalars, final_scalars

__all__ = ["WandbTracker", "open_tracker"]


class WandbTracker:
    """The config as the run's config, each epoch as a history step, the final metrics in the summary."""

    name = "wandb"

    def __init__(self, cfg: TrackingConfig, root: Path, label: str, snapshot: Mapping[str, Any],
                 select_metric: str) -> None:  # fmt: skip
        import wandb

        root.mkdir(parents=True, exist_ok=True)
        self.select_metric = select_metric
        self.run = wandb.init(project=cfg.project, name=label, group=label.rsplit("-seed", 1)[0], dir=str(root),
                              mode=cfg.wandb_mode, config=dict(snapshot), reinit="create_new",
                              settings=wandb.Settings(silent=True, console="off"))  # fmt: skip

    def log_epoch(self, row: dict[str, float]) -> None:
        self.run.log({"epoch": int(row.get("epoch", 0)), **epoch_scalars(row, self.select_metric)})

    def log_final(self, record: Mapping[str, Any]) -> None:
        self.run.summary.update(final_scalars(record))

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


def open_tracker(cfg: TrackingConfig, root: Path, label: str, snapshot: Mapping[str, Any],
                 select_metric: str) -> WandbTracker:  # fmt: skip
    """A wandb run for one cell."""
    return WandbTracker(cfg, root, label, snapshot, select_metric)
