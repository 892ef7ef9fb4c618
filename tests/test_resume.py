"""Resume: a training cell interrupted after an epoch ends with the same metrics as an uninterrupted one; a killed
``bench run`` picks its grid up; failed cells leave a record; concurrent writers never lose or corrupt results."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_grid import result_path, run_main, write_config

import bench.train.fit
from bench.config import apply_overrides, load_config
from bench.grid.cell import Cell
from bench.grid.execute import checkpoint_path, execute_cell, record_path
from bench.grid.pipeline import run_cell
from bench.grid.records import config_hash, iter_records, read_record, write_record
from bench.grid.slurm import cell_status

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CELL = Cell("vse_infty", "synthetic", "contrastive", 0)


class Preempted(BaseException):
    """Stands in for the job being killed right after a checkpoint was written."""


def _die_after_epoch(monkeypatch: pytest.MonkeyPatch, last: int) -> None:
    """Training saves its checkpoint after epoch ``last``, then the job is killed (monkeypatch.undo() revives it)."""
    original = bench.train.fit._save

    def save_then_die(path, epoch, *args):
        original(path, epoch, *args)
        if epoch == last:
            raise Preempted

    monkeypatch.setattr(bench.train.fit, "_save", save_then_die)


def _comparable(rec: dict) -> dict:
    hist = [{k: v for k, v in h.items() if k != "seconds"} for h in rec["history"]]
    return {"metrics": rec["metrics"], "metrics_last": rec["metrics_last"], "history": hist,
            "selected_epoch": rec["selected_epoch"]}  # fmt: skip


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("resume")
    config = write_config(root / "bench.toml", results=root / "results", work=root / "work")
    return apply_overrides(load_config(config), ["train.epochs=3"])


def test_interrupted_training_resumes_to_the_same_metrics(grid, monkeypatch: pytest.MonkeyPatch) -> None:
    clean = run_cell(CELL, grid, progress=False)
    assert clean["resumed_from_epoch"] == 0

    ckpt = checkpoint_path(grid, CELL, "test")
    _die_after_epoch(monkeypatch, 2)
    with pytest.raises(Preempted):
        run_cell(CELL, grid, progress=False, checkpoint=ckpt)
    monkeypatch.undo()
    assert ckpt.is_file()
    resumed = run_cell(CELL, grid, progress=False, checkpoint=ckpt)
    assert resumed["resumed_from_epoch"] == 2
    assert len(resumed["history"]) == 3
    assert _comparable(resumed) == _comparable(clean)


def test_status_calls_an_interrupted_cell_resumable(grid, monkeypatch: pytest.MonkeyPatch) -> None:
    _die_after_epoch(monkeypatch, 2)
    with pytest.raises(Preempted):
        execute_cell(grid, CELL, force=True, progress=False)
    monkeypatch.undo()
    status = cell_status(grid, CELL)
    assert status.state == "resumable" and status.detail.startswith("after epoch 2 of 3; `bench run` resumes it")
    assert execute_cell(grid, CELL, progress=False).status == "ran"
    assert cell_status(grid, CELL).state == "done"


def test_execute_cell_removes_the_checkpoint_once_the_record_is_written(grid) -> None:
    out = execute_cell(grid, CELL, force=True, progress=False)
    assert out.status == "ran"
    rec = read_record(out.path)
    assert not checkpoint_path(grid, CELL, rec["config_hash"]).exists()


def test_failed_cell_leaves_a_failed_record_but_never_replaces_an_ok_one(tmp_path: Path) -> None:
    config = write_config(tmp_path / "bench.toml", results=tmp_path / "results", work=tmp_path / "work")
    cfg = apply_overrides(load_config(config), ["models.vse_infty.image_backbone=no_such_timm_model"])
    out = execute_cell(cfg, Cell("vse_infty", "synthetic", "zeroshot", 0), progress=False)
    assert out.status == "failed"
    rec = read_record(out.path)
    assert rec["status"] == "failed" and "no_such_timm_model" in rec["reason"]
    assert "Traceback" in rec["traceback"]

    ok = {**rec, "status": "ok", "reason": None, "metrics": {"rsum": 1.0}}
    write_record(out.path, ok)
    again = execute_cell(cfg, Cell("vse_infty", "synthetic", "zeroshot", 0), force=True, progress=False)
    assert again.status == "failed"
    assert read_record(out.path) == ok


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "bench run exited early"
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.05)


def test_sigkilled_grid_completes_only_the_missing_cells(tmp_path: Path) -> None:
    # The interrupted grid and a clean one share only the content-keyed feature cache; every cell must match.
    clean_cfg = write_config(tmp_path / "clean.toml", results=tmp_path / "clean", work=tmp_path / "work")
    rc, _, err = run_main(["run", "--config", str(clean_cfg), "-q", "--no-table"])
    assert rc == 0, err

    config = write_config(tmp_path / "bench.toml", results=tmp_path / "results", work=tmp_path / "work")
    first = result_path(tmp_path / "results", "vse_infty", "zeroshot")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "--config", str(config), "-q", "--no-table"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(first, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done_before = {r["_path"] for r in iter_records(tmp_path / "results")}
    assert 1 <= len(done_before) < 3  # killed mid-grid

    rc, _, err = run_main(["run", "--config", str(config), "-q", "--no-table"])
    assert rc == 0, err
    summary = [line for line in err.splitlines() if " ran, " in line][-1]
    assert summary.startswith(f"bench: {3 - len(done_before)} ran, {len(done_before)} skipped"), summary

    got = {Path(r["_path"]).relative_to(tmp_path / "results"): r for r in iter_records(tmp_path / "results")}
    want = {Path(r["_path"]).relative_to(tmp_path / "clean"): r for r in iter_records(tmp_path / "clean")}
    assert sorted(got) == sorted(want) and len(got) == 3
    for key, rec in want.items():
        assert got[key]["metrics"] == rec["metrics"], key
        assert got[key]["config_hash"] == config_hash(got[key]["config"])
    assert not list((tmp_path / "results").rglob("*.tmp"))


def _writer(args: tuple[str, int]) -> None:
    folder, worker = args
    for i in range(40):
        cell = Cell(f"m{i % 4}", "d", "contrastive", i)
        rec = {"schema": 1, "status": "ok", "model": cell.model, "seed": i, "writer": worker, "pad": "x" * 20_000}
        write_record(Path(folder) / "runs" / cell.model / f"seed{i}.json", rec)


def test_concurrent_writers_never_corrupt_or_lose_a_result(tmp_path: Path) -> None:
    # Eight processes write the same 40 files at once (an array finishing together, two grids sharing a folder).
    with mp.get_context("spawn").Pool(8) as pool:
        pool.map(_writer, [(str(tmp_path), w) for w in range(8)])
    files = sorted((tmp_path / "runs").rglob("*.json"))
    assert len(files) == 40
    for f in files:
        rec = json.loads(f.read_text())  # complete JSON, from exactly one writer
        assert rec["writer"] in range(8) and len(rec["pad"]) == 20_000
    assert not list(tmp_path.rglob("*.tmp"))


def test_two_grids_sharing_a_results_folder_keep_both(tmp_path: Path) -> None:
    results = tmp_path / "results"
    a = write_config(tmp_path / "a.toml", results=results, work=tmp_path / "work")
    cfg_a = load_config(a)
    cfg_b = apply_overrides(cfg_a, ["eval.batch_size=8"])  # another grid: same cells, another config
    cell_a = Cell("towers", "synthetic", "zeroshot", 0)
    cell_b = Cell("towers", "synthetic", "zeroshot", 1)  # same model/dataset, another seed: another file
    assert execute_cell(cfg_a, cell_a, progress=False).status == "ran"
    assert execute_cell(cfg_b, cell_b, progress=False).status == "ran"
    recs = list(iter_records(results))
    assert {(r["seed"], r["config"]["eval"]["batch_size"]) for r in recs} == {(0, 32), (1, 8)}
    assert record_path(cfg_a, cell_a) != record_path(cfg_b, cell_b)
