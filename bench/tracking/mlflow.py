"""MLflow: one run per cell in the experiment ``[tracking] project``, in a local file store
(``<dir>/mlruns``) unless ``[tracking] mlflow_uri`` names a server or database."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.config import TrackingConfig
from bench.tracking.base import epoch_scalars, final_scalars, flat_params

__all__ = ["MlflowTracker", "open_tracker"]


class MlflowTracker:
    """The cell's keys as params and its config as ``config.json``, metrics per epoch (step = epoch), the final
    metrics at the last step; the run ends FINISHED or FAILED. Uses a client, not MLflow's global active run, so
    cells never share state."""

    name = "mlflow"

    def __init__(self, cfg: TrackingConfig, root: Path, label: str, snapshot: Mapping[str, Any],
                 select_metric: str) -> None:  # fmt: skip
        uri = cfg.mlflow_uri or (root / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):
            # MLflow 3 deprecates the file store behind this switch; it is the one that needs no server or database.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(cfg.project)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(cfg.project)
        self.run_id = self.client.create_run(exp_id, run_name=label).info.run_id
        self.select_metric, self.step = select_metric, 0
        from mlflow.entities import Param

        params = {"cell": label, **{k: v for k, v in flat_params(snapshot).items() if len(k) <= 250}}
        items = [Param(k, v[:6000]) for k, v in params.items()]  # MLflow's limits on key and value length
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])
        self.client.log_dict(self.run_id, dict(snapshot), "config.json")

    def _metrics(self, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, self.step) for k, v in values.items()])

    def log_epoch(self, row: dict[str, float]) -> None:
        self.step = int(row.get("epoch", self.step + 1))
        self._metrics(epoch_scalars(row, self.select_metric))

    def log_final(self, record: Mapping[str, Any]) -> None:
        self._metrics(final_scalars(record))

    def close(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def open_tracker(cfg: TrackingConfig, root: Path, label: str, snapshot: Mapping[str, Any],
                 select_metric: str) -> MlflowTracker:  # fmt: skip
    """An MLflow run for one cell."""
    return MlflowTracker(cfg, root, label, snapshot, select_metric)
