"""TensorBoard: one event-file folder per cell, ``<dir>/tensorboard/<model>/<dataset>/<split>/<method>-seed<s>``."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.config import TrackingConfig
from bench.tracking.base import epoch_scalars, final_scalars

__all__ = ["TensorBoardTracker", "open_tracker"]

log = logging.getLogger(__name__)
_HOOKED = False


def _one_line_writer_errors() -> None:
    """TensorBoard writes event files from a thread that re-raises a failed write (a full disk), and Python prints
    that thread's traceback; the next foreground write raises it again, where the cell's run stops logging with one
    warning. The thread's own report becomes one line too."""
    global _HOOKED
    if _HOOKED:
        return
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if isinstance(args.thread, _AsyncWriterThread):
            log.warning("tensorboard: writing event files failed (%s); its logging stops, the cell goes on",
                        args.exc_value)  # fmt: skip
            return
        previous(args)

    threading.excepthook = hook
    _HOOKED = True


class TensorBoardTracker:
    """Scalars per epoch (step = epoch), the config as text, the final metrics at the last step."""

    name = "tensorboard"

    def __init__(self, folder: Path, label: str, snapshot: Mapping[str, Any], select_metric: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        _one_line_writer_errors()
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
