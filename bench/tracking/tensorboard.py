"""TensorBoard: one event-file folder per cell, ``<dir>/tensorboard/<model>/<dataset>/<split>/<method>-seed<s>``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.config import TrackingConfig
from bench.tracking.base import epoch_scalars, final_scalars

__all__ = ["TensorBoardTracker", "open_tracker"]


class TensorBoardTracker:
    """Scalars per epoch (step = epoch), the config as text, the final metrics at the last step."""

    name = "tensorboard"

    def __init__(self, folder: Path, label: str, snapshot: Mapping[str, Any], select_metric: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = folder
        self.writer = SummaryWriter(log_dir=str(folder))
        self.select_metric, self.step = select_metric, 0
        self.writer.add_text("config", "```json\n" + json.dumps(snapshot, indent=1, default=str) + "\n```", 0)
        self.writer.add_text("cell", label, 0)

    def log_epoch(self, row: dict[str, float]) -> None:
        self.step = int(row.get("epoch", self.step + 1))
        for k, v in epoch_scalars(row, self.select_metric).items():
            self.writer.add_scalar(k, v, self.step)

    def log_final(self, record: Mapping[str, Any]) -> None:
        for k, v in final_scalars(record).items():
            self.writer.add_scalar(k, v, self.step)

    def close(self, failed: bool) -> None:
        self.writer.close()


def open_tracker(cfg: TrackingConfig, root: Path, label: str, snapshot: Mapping[str, Any],
                 select_metric: str) -> TensorBoardTracker:  # fmt: skip
    """A TensorBoard writer for one cell (``label`` is its result path, which names the folder)."""
    return TensorBoardTracker(root / "tensorboard" / label, label, snapshot, select_metric)
