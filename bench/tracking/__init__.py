"""Experiment trackers: each cell's config, its epochs (loss terms, learning rate, temperatures, validation metric)
and its final metrics, logged to TensorBoard, Weights & Biases and MLflow as a run named by the cell.

``[tracking] backends`` turns them on (off by default). A tracker only observes: a tracker that fails (a full disk,
a lost connection) logs one warning and stops, and the cell carries on and writes its record. Only the main process
of a data-parallel cell logs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.config import BenchConfig
from bench.errors import ConfigError
from bench.tracking.base import Tracker, flatten, run_name

__all__ = ["CellRun", "check_trackers", "flatten", "open_run", "run_name"]

log = logging.getLogger(__name__)

# Each backend is bench.tracking.<name>; it needs the package of the same name, from the extra itr-bench[<name>].


def tracking_dir(cfg: BenchConfig) -> Path:
    """Where the trackers write: ``[tracking] dir``, else ``<results_dir>/tracking``."""
    return Path(cfg.tracking.dir) if cfg.tracking.dir else Path(cfg.paths.results_dir) / "tracking"


def check_trackers(cfg: BenchConfig) -> None:
    """Every configured tracker's package is installed (one line naming the extra to install, before any cell)."""
    import importlib.util

    for name in cfg.tracking.backends:
        if importlib.util.find_spec(name) is None:
            raise ConfigError(f"{cfg.source}: [tracking] backends: {name} is not installed; "
                              f"pip install 'itr-bench[{name}]'")  # fmt: skip


class CellRun:
    """The trackers of one cell; every call is safe (a failing tracker is dropped with a warning)."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    def _each(self, what: str, *args: Any) -> None:
        for t in list(self.trackers):
            try:
                getattr(t, what)(*args)
            except Exception as e:  # noqa: BLE001 - a tracker never costs a cell its result
                log.warning("tracker %s failed (%s: %s); it stops logging this cell", t.name, type(e).__name__, e)
                self.trackers.remove(t)
                try:
                    t.close(failed=True)
                except Exception:  # noqa: BLE001
                    pass

    def epoch(self, row: Mapping[str, float]) -> None:
        """One epoch's history row (``epoch``, loss terms, ``lr``, temperatures, ``val``, ``seconds``)."""
        self._each("log_epoch", dict(row))

    def finish(self, record: Mapping[str, Any]) -> None:
        """The cell's final metrics, then close."""
        self._each("log_final", record)
        self._each("close", False)

    def fail(self) -> None:
        """Close the runs as failed (the cell raised)."""
        self._each("close", True)


def open_run(cfg: BenchConfig, label: str, snapshot: Mapping[str, Any], *, select_metric: str) -> CellRun:
    """Open one run per configured tracker for a cell (none configured: a run that does nothing)."""
    import importlib

    trackers: list[Tracker] = []
    root = tracking_dir(cfg)
    for name in cfg.tracking.backends:
        module = importlib.import_module(f"bench.tracking.{name}")
        try:
            trackers.append(module.open_tracker(cfg.tracking, root, label, snapshot, select_metric))
        except Exception as e:  # noqa: BLE001 - cannot start: warn, the cell still runs
            log.warning("tracker %s could not start for %s (%s: %s)", name, label, type(e).__name__, e)
    return CellRun(trackers)
