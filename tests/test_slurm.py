"""End to end on a real SLURM cluster (``.ci/run`` starts a single-node one with ``.ci/slurm-local.sh``).

A 6-cell grid runs as one job array: every result lands, a cell that raises is reported as failed with its error,
a cancelled cell is reported as cancelled, and a job requeued mid-training (``scontrol requeue``) resumes from its
epoch checkpoint and ends with the same metrics as an uninterrupted job of the same seed.

Skipped unless ``sinfo`` answers; under ``.ci/run`` (``BENCH_REQUIRE_SLURM=1``) a missing cluster is a failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import slurm_cluster_up as _cluster_up
from sharded import CELL, RECORD, assert_same_record, broken_image_config, needs_sample, sharded_config
from tiny_grid import run_main, write_config

from bench.config import apply_overrides, load_config
from bench.grid.cell import Cell, cell_config
from bench.grid.execute import checkpoint_path, record_path
from bench.grid.records import config_hash, read_record
from bench.grid.slurm import cell_status
from bench.shard.plan import shard_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # inherited by the jobs (sbatch --export=ALL)


pytestmark = pytest.mark.slurm  # skipped without a cluster unless BENCH_REQUIRE_SLURM=1 (tests/conftest.py)


def test_cluster_answers() -> None:
    assert _cluster_up(), "BENCH_REQUIRE_SLURM=1 but `sinfo` does not answer"


LAUNCHER = """
[launcher]
name = "slurm"
cpus_per_task = 1
mem_gb = 2
timeout_min = 20
"""


def _config(root: Path, *, extra: str = "", results: str = "results") -> Path:
    path = write_config(root / f"{results}.toml", results=root / results, work=root / "work")
    path.write_text(path.read_text() + LAUNCHER + extra)
    return path


def _wait(cond, what: str, timeout: float = 300.0, poll: float = 0.5) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(poll)


def _marker(cfg, cell: Cell) -> dict:
    return json.loads(record_path(cfg, cell).with_suffix(".job").read_text())


def _sacct_state(job_id: str) -> str:
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id], capture_output=True, text=True, timeout=30
    ).stdout.split()
    return out[0] if out else ""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slurm")


def test_grid_runs_as_one_array_and_a_raising_cell_fails_alone(root: Path) -> None:
    # 6 cells: vse_infty zeroshot + contrastive x 3 seeds, towers zeroshot, and a model whose backbone does not exist.
    broken = '[models.broken]\nadapter = "vse_infty"\nimage_backbone = "no_such_timm_model"\nmethods = ["zeroshot"]\n'
    config = _config(root, extra="\n" + broken)
    argv = ["run", "--config", str(config), "--models", "vse_infty,towers,broken", "--seeds", "0,1,2", "-q"]
    rc, out, err = run_main([*argv, "--launcher", "slurm", "--wait"])
    assert rc == 1, err  # one failed cell
    cfg = load_config(config)
    cells = [Cell("vse_infty", "synthetic", "zeroshot", 0), Cell("towers", "synthetic", "zeroshot", 0)]
    cells += [Cell("vse_infty", "synthetic", "contrastive", s) for s in (0, 1, 2)]
    bad = Cell("broken", "synthetic", "zeroshot", 0)

    array_ids = {_marker(cfg, c)["job_id"].split("_")[0] for c in [*cells, bad]}
    assert len(array_ids) == 1, array_ids  # one sbatch: a job array of 6 elements
    for c in cells:
        rec = read_record(record_path(cfg, c))
        assert rec["status"] == "ok" and rec["config_hash"] == config_hash(rec["config"]), c
        assert cell_status(cfg, c).state == "done"
    assert len({json.dumps(read_record(record_path(cfg, c))["metrics"]) for c in cells[2:]}) == 3  # seeds differ

    st = cell_status(cfg, bad)
    assert st.state == "failed", st
    assert "no_such_timm_model" in st.detail and st.log and Path(st.log).is_file()
    bad_job = _marker(cfg, bad)["job_id"]  # slurmdbd records a finished job's state with a short lag
    _wait(lambda: _sacct_state(bad_job) == "FAILED", f"sacct to say job {bad_job} FAILED", timeout=60)
    assert "failed" in out and "no_such_timm_model" in out  # the status table printed by --wait

    # Re-running submits nothing that is done; only the failed cell goes again (and fails again).
    rc, _, err = run_main([*argv, "--launcher", "slurm"])
    assert "submitted 1 cell(s)" in err and "5 done" in err, err


def test_cancelled_cell_is_reported_as_cancelled(root: Path) -> None:
    config = _config(root, results="cancel")
    argv = ["run", "--config", str(config), "--models", "vse_infty", "--methods", "contrastive", "--seeds", "7"]
    rc, _, err = run_main([*argv, "--set", "train.epochs=200", "-q", "--launcher", "slurm"])
    assert rc == 0, err  # submitted, not waited for
    cfg = load_config(config)
    cell = Cell("vse_infty", "synthetic", "contrastive", 7)
    job_id = _marker(cfg, cell)["job_id"]
    try:
        # `bench run` again while it is queued or running (the submitter was killed, say): nothing is submitted twice
        rc, _, err = run_main([*argv, "--set", "train.epochs=200", "-q", "--launcher", "slurm"])
        assert rc == 0 and "submitted 0 cell(s)" in err and "1 already queued or running" in err, err
    finally:  # never leave a 200-epoch job holding the cluster's CPUs
        subprocess.run(["scancel", job_id], check=True, timeout=30)
        subprocess.run(["scancel", _marker(cfg, cell)["job_id"]], check=False, timeout=30)
    _wait(lambda: _sacct_state(job_id).startswith("CANCELLED"), "sacct to say CANCELLED")
    st = cell_status(apply_overrides(cfg, ["train.epochs=200"]), cell)
    assert st.state == "cancelled", st
    rc, out, _ = run_main(["status", "--config", str(config), "--models", "vse_infty", "--methods", "contrastive",
                           "--seeds", "7", "--set", "train.epochs=200"])  # fmt: skip
    assert rc == 1 and "cancelled" in out


def test_requeued_job_resumes_from_its_checkpoint_with_the_same_metrics(root: Path) -> None:
    # Two jobs of the same cell, each with its own results folder: one is requeued mid-training, one is left alone.
    epochs = ["--set", "train.epochs=20"]  # about 25 s: the requeue lands mid-training even on a busy machine
    cell = Cell("vse_infty", "synthetic", "contrastive", 3)
    configs = {name: _config(root, results=name) for name in ("requeued", "uninterrupted")}
    for config in configs.values():
        argv = ["run", "--config", str(config), "--models", "vse_infty", "--methods", "contrastive", "--seeds", "3"]
        rc, _, err = run_main([*argv, *epochs, "-q", "--launcher", "slurm"])
        assert rc == 0, err
    cfg = apply_overrides(load_config(configs["requeued"]), ["train.epochs=20"])
    ckpt = checkpoint_path(cfg, cell, config_hash(cell_config(cfg, cell)))
    _wait(ckpt.is_file, f"the first epoch checkpoint {ckpt}", timeout=600)
    job_id = _marker(cfg, cell)["job_id"]
    subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)

    other = apply_overrides(load_config(configs["uninterrupted"]), ["train.epochs=20"])
    for c in (cfg, other):
        _wait(lambda c=c: record_path(c, cell).is_file(), f"{record_path(c, cell)}", timeout=600)
    requeued, clean = read_record(record_path(cfg, cell)), read_record(record_path(other, cell))
    assert requeued["resumed_from_epoch"] >= 1, "the requeued job did not resume from its checkpoint"
    assert clean["resumed_from_epoch"] == 0
    assert requeued["metrics"] == clean["metrics"]
    assert requeued["selected_epoch"] == clean["selected_epoch"]
    assert not ckpt.exists()


def test_two_task_job_trains_data_parallel_like_one_task(root: Path) -> None:
    # tasks_per_node = 2 without GPUs: two gloo ranks over submitit's tasks, against the same cell in one task.
    # Three epochs: the two runs' float sums drift apart slowly, and over twenty the selected epoch can differ.
    cell = Cell("vse_infty", "synthetic", "contrastive", 3)
    records = {}
    for name, extra in (("ddp", "tasks_per_node = 2\n"), ("one_task", "")):  # appended to [launcher]
        config = _config(root, results=name, extra=extra)
        argv = ["run", "--config", str(config), "--models", "vse_infty", "--methods", "contrastive", "--seeds", "3"]
        rc, _, err = run_main([*argv, "--set", "train.epochs=3", "-q", "--launcher", "slurm", "--wait"])
        assert rc == 0, err
        records[name] = read_record(record_path(apply_overrides(load_config(config), ["train.epochs=3"]), cell))
    ddp, ref = records["ddp"], records["one_task"]
    assert ddp["world_size"] == 2 and ref["world_size"] == 1
    assert ddp["config_hash"] == ref["config_hash"]
    for a, b in zip(ddp["history"], ref["history"], strict=True):  # same global batches: same losses
        assert a["contrastive_loss"] == pytest.approx(b["contrastive_loss"], abs=1e-4)
    assert ddp["metrics"]["rsum"] == pytest.approx(ref["metrics"]["rsum"], abs=1.0)


@needs_sample
def test_sharded_evaluation_on_the_cluster_equals_one_process(tmp_path: Path) -> None:
    """4 encode tasks, then 4 score tasks, then the merge: three job arrays chained by afterok; the record equals
    the one-process record of the same cell, bit for bit."""
    one = sharded_config(tmp_path, "single")
    rc, _, err = run_main(["run", "--config", str(one), "-q", "--no-table"])
    assert rc == 0, err
    cfg_path = sharded_config(tmp_path, extra=LAUNCHER)
    argv = ["run", "--config", str(cfg_path), "-q", "--shards", "4", "--launcher", "slurm", "--no-table"]
    rc, _, err = run_main(argv)  # submits and returns
    assert rc == 0, err
    assert "tasks to run: 4 encode, 4 score, 1 merge" in err and "submitted encode job" in err
    rc, _, err = run_main(argv)  # while the arrays are queued or running: nothing is submitted twice
    assert rc == 0 and "still queued or running" in err and "submitted nothing" in err
    _wait(lambda: (tmp_path / "results" / RECORD).is_file(), "the merged record")
    rc, _, err = run_main([*argv, "--wait"])
    assert rc == 0 and "1 cell(s) done before" in err
    assert_same_record(tmp_path / "results" / RECORD, tmp_path / "single" / RECORD)
    rec = read_record(tmp_path / "results" / RECORD)
    assert rec["job_id"] and rec["sharded"]["encode_tasks"] == 4  # written by the merge job
    # Each score task started after every encode task had ended (the dependency held).
    markers = shard_dir(load_config(cfg_path), CELL)
    encode_end = max(markers.encode_marker(k).stat().st_mtime for k in range(4))
    score_start = min(markers.score_marker(p).stat().st_mtime for p in range(4))
    assert score_start >= encode_end


def test_a_failed_shard_task_cancels_what_needs_it(tmp_path: Path) -> None:
    """An encode task that fails (a broken photo) fails its job; SLURM cancels the score and merge tasks that depend
    on it (kill-on-invalid-dep) instead of leaving them pending, and `bench run` says it in one line."""
    cfg_path = broken_image_config(tmp_path, extra=LAUNCHER)
    rc, _, err = run_main(["run", "--config", str(cfg_path), "-q", "--shards", "2", "--launcher", "slurm", "--wait",
                           "--no-table"])  # fmt: skip
    assert rc == 1
    assert err.count("FAILED") == 1 and "FAILED: encode task 1" in err and "5.png" in err, err
    rec = read_record(tmp_path / "results" / "runs" / "tinyclip" / "tiny" / "test" / "zeroshot-seed0.json")
    assert rec["status"] == "failed" and "5.png" in rec["reason"]


def test_a_sweep_of_two_hundred_cells_goes_out_as_one_array(root: Path) -> None:
    config = _config(root, results="sweep")
    grid = ["--config", str(config), "--models", "towers", "--sweep", "eval.topk=" + ",".join(map(str, range(1, 201)))]
    t0 = time.monotonic()
    rc, _, err = run_main(["run", *grid, "-q", "--launcher", "slurm"])
    seconds = time.monotonic() - t0
    array = re.search(r"\(job (\d+)\)", err)
    try:
        assert rc == 0 and "submitted 200 cell(s) to slurm" in err and array, err
        cfg = load_config(config)
        cells = [Cell("towers", "synthetic", "zeroshot", 0, "test", (("eval.topk", k),)) for k in (1, 100, 200)]
        assert {_marker(cfg, c)["job_id"].split("_")[0] for c in cells} == {array.group(1)}
        rc, out, _ = run_main(["status", *grid])
        summary = out.split("variant")[-1]
        assert summary.count("zeroshot[eval.topk=") == 200
        assert not re.search(r"\b(missing|failed)\b", summary), summary
        # A second `bench run` submits none of them again: each is queued, running or done.
        rc, _, err = run_main(["run", *grid, "-q", "--launcher", "slurm"])
        assert "submitted 0 cell(s)" in err, err
    finally:
        if array:
            subprocess.run(["scancel", array.group(1)], timeout=60, check=False)
    print(f"200-cell sweep submitted in {seconds:.1f} s")  # shown with -s; not asserted (a benchmark's job)
