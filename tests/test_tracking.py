"""Experiment trackers, offline: a trained cell and a zero-shot cell logged to TensorBoard, wandb (offline mode) and
MLflow (a local file store), each read back with its own package and compared with the cell's record."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bench.config import config_from_dict
from bench.errors import ConfigError
from bench.tracking import check_trackers
from tests.tiny_grid import result_path, run_main, write_config
from tests.trackers import read_wandb_run

pytest.importorskip("tensorboard")
pytest.importorskip("wandb")
pytest.importorskip("mlflow")

CELL = "vse_infty/synthetic/test/contrastive-seed0"


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("tracked")
    cfg = write_config(tmp / "bench.toml", results=tmp / "results", work=tmp / "work")
    cfg.write_text(cfg.read_text() + f'\n[tracking]\nbackends = ["tensorboard", "wandb", "mlflow"]\n'
                   f'dir = "{tmp / "tracking"}"\nproject = "itr-test"\n')  # fmt: skip
    rc, _, err = run_main(["run", "--config", str(cfg), "--models", "vse_infty", "-q", "--no-table"])
    assert rc == 0, err
    record = json.loads(result_path(tmp / "results", "vse_infty", "contrastive").read_text())
    assert len(record["history"]) == 2
    return tmp / "tracking", record


def test_tensorboard_event_files_hold_the_epochs_and_the_final_metrics(tracked: tuple[Path, dict]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, record = tracked
    acc = EventAccumulator(str(root / "tensorboard" / CELL))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for row in record["history"]:
        for key, value in row.items():
            tag = {"val": "val/rsum", "seconds": "time/epoch_seconds"}.get(key, f"train/{key}")
            if key == "epoch":
                continue
            events = {e.step: e.value for e in acc.Scalars(tag)}
            assert events[row["epoch"]] == pytest.approx(value, rel=1e-6), tag
    assert {"train/lr", "val/rsum"} <= set(tags)
    assert acc.Scalars("test/rsum")[0].value == pytest.approx(record["metrics"]["rsum"], rel=1e-6)
    assert acc.Scalars("test/i2t/r1")[0].value == pytest.approx(record["metrics"]["i2t"]["r1"], rel=1e-6)
    assert "vse_infty" in acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()


def test_wandb_offline_run_holds_config_history_and_summary(tracked: tuple[Path, dict]) -> None:
    root, record = tracked
    runs = {}
    for f in (root / "wandb").glob("offline-run-*/run-*.wandb"):
        run = read_wandb_run(f)
        runs[run["name"]] = run
    assert set(runs) == {CELL, "vse_infty/synthetic/test/zeroshot-seed0"}
    run = runs[CELL]
    assert run["project"] == "itr-test" and run["exit_code"] == 0
    assert run["config"]["model"]["adapter"] == "vse_infty" and run["config"]["seed"] == 0
    steps = [h for h in run["history"] if "val/rsum" in h]
    assert [h["epoch"] for h in steps] == [1, 2]
    assert [h["val/rsum"] for h in steps] == pytest.approx([r["val"] for r in record["history"]])
    assert [h["train/lr"] for h in steps] == pytest.approx([r["lr"] for r in record["history"]])
    assert run["summary"]["test/rsum"] == pytest.approx(record["metrics"]["rsum"])
    assert run["summary"]["test/t2i/r10"] == pytest.approx(record["metrics"]["t2i"]["r10"])


def test_mlflow_file_store_holds_params_metric_histories_and_the_config(tracked: tuple[Path, dict]) -> None:
    from mlflow.tracking import MlflowClient

    root, record = tracked
    client = MlflowClient(tracking_uri=(root / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("itr-test")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {CELL, "vse_infty/synthetic/test/zeroshot-seed0"}
    run = runs[CELL]
    assert run.info.status == "FINISHED" and run.data.params["cell"] == CELL
    assert run.data.params["model/embed_dim"] == "256" and run.data.params["train/epochs"] == "2"
    val = client.get_metric_history(run.info.run_id, "val/rsum")
    assert [m.step for m in val] == [r["epoch"] for r in record["history"]]
    assert [m.value for m in val] == pytest.approx([r["val"] for r in record["history"]])
    assert run.data.metrics["test/rsum"] == pytest.approx(record["metrics"]["rsum"])
    local = client.download_artifacts(run.info.run_id, "config.json", str(root / "dl"))
    assert json.loads(Path(local).read_text())["dataset"]["format"] == "synthetic"
    zeroshot = runs["vse_infty/synthetic/test/zeroshot-seed0"]
    assert zeroshot.data.metrics["test/rsum"] > 0 and not client.get_metric_history(zeroshot.info.run_id, "val/rsum")


def test_a_failing_tracker_never_costs_the_cell_its_record(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the tracking folder would go")
    cfg = write_config(tmp_path / "bench.toml", results=tmp_path / "results", work=tmp_path / "work")
    cfg.write_text(cfg.read_text() + f'\n[tracking]\nbackends = ["tensorboard"]\ndir = "{blocker}"\n')
    with caplog.at_level(logging.WARNING, logger="bench.tracking"):
        rc, _, err = run_main(["run", "--config", str(cfg), "--models", "towers", "-q", "--no-table"])
    assert rc == 0, err
    assert json.loads(result_path(tmp_path / "results", "towers", "zeroshot").read_text())["status"] == "ok"
    assert any("tracker tensorboard" in r.getMessage() for r in caplog.records)


def test_tracking_config_is_checked_before_any_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"\[tracking\]\.backends: unknown tracker 'neptune'; valid: tensorboard"):
        config_from_dict({"tracking": {"backends": ["neptune"]}})
    with pytest.raises(ConfigError, match=r"\[tracking\]\.wandb_mode: \"offline\" or \"online\""):
        config_from_dict({"tracking": {"wandb_mode": "cloud"}})
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    cfg = config_from_dict({"tracking": {"backends": ["wandb"]}}, "bench.toml")
    with pytest.raises(ConfigError, match=r"bench\.toml: \[tracking\] backends: wandb is not installed; "
                       r"pip install 'itr-bench\[wandb\]'"):  # fmt: skip
        check_trackers(cfg)
