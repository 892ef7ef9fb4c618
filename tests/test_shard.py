"""Sharded evaluation (``bench run --shards N``): the merged record is the one-process record, bit for bit; a re-run
skips finished tasks; stale shards are never reused; bad input is one line.

Runs on the real COCO sample (600 photos, 3,000 captions of its train split) through a tiny random open_clip model
(``tests/fixtures/tiny_clip.json``), locally; tests/test_slurm.py runs the same on the SLURM cluster.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sharded import CELL, RECORD, assert_same_record, needs_sample, sharded_config
from tiny_grid import run_main

from bench.config import load_config
from bench.shard.plan import aligned_bounds, shard_dir


def test_slices_start_at_batch_boundaries() -> None:
    bounds = aligned_bounds(3000, 512, 4)
    assert bounds[0] == 0 and bounds[-1] == 3000 and all(b % 512 == 0 for b in bounds[:-1])
    assert aligned_bounds(100, 512, 3) == [0, 0, 0, 100]  # fewer batches than tasks: the first tasks get none
    assert aligned_bounds(0, 512, 2) == [0, 0, 0]


@needs_sample
def test_sharded_record_equals_one_process_record(tmp_path: Path) -> None:
    one = sharded_config(tmp_path, "single")
    rc, _, err = run_main(["run", "--config", str(one), "-q", "--no-table"])
    assert rc == 0, err
    cfg_path = sharded_config(tmp_path)
    rc, out, err = run_main(["run", "--config", str(cfg_path), "-q", "--shards", "4"])
    assert rc == 0, err
    assert "tasks to run: 4 encode, 4 score, 1 merge" in err
    assert "tinyclip" in out  # the table of the merged record
    assert_same_record(tmp_path / "results" / RECORD, tmp_path / "single" / RECORD)
    cfg = load_config(cfg_path)
    d = shard_dir(cfg, CELL)
    plan = d.read_plan()
    assert plan is not None and plan.n_captions == 3000 and plan.encode_tasks == 4 and plan.parts == 4

    # The cell is done: `bench run` (one process) and `bench run --shards` both skip it.
    rc, _, err = run_main(["run", "--config", str(cfg_path), "-q", "--no-table"])
    assert rc == 0 and "0 ran, 1 skipped" in err
    rc, _, err = run_main(["run", "--config", str(cfg_path), "-q", "--shards", "4", "--no-table"])
    assert rc == 0 and "1 cell(s) done before" in err

    # A task that did not finish (its marker gone) runs again; finished ones are skipped.
    (tmp_path / "results" / RECORD).unlink()
    d.encode_marker(2).unlink()
    d.score_marker(1).unlink()
    rc, _, err = run_main(["run", "--config", str(cfg_path), "-q", "--shards", "4", "--no-table"])
    assert rc == 0, err
    assert "tasks to run: 1 encode, 1 score, 1 merge" in err
    assert_same_record(tmp_path / "results" / RECORD, tmp_path / "single" / RECORD)

    # Another cut (or another config) is another plan: the old shards are removed, never mixed in.
    (tmp_path / "results" / RECORD).unlink()
    rc, _, err = run_main(["run", "--config", str(cfg_path), "-q", "--shards", "3", "--no-table"])
    assert rc == 0, err
    assert "tasks to run: 3 encode, 3 score, 1 merge" in err
    assert not d.encode_marker(3).exists()
    assert_same_record(tmp_path / "results" / RECORD, tmp_path / "single" / RECORD)


@needs_sample
def test_a_broken_shard_is_one_line(tmp_path: Path) -> None:
    cfg_path = sharded_config(tmp_path)
    rc, _, err = run_main(["run", "--config", str(cfg_path), "-q", "--shards", "2", "--no-table"])
    assert rc == 0, err
    d = shard_dir(load_config(cfg_path), CELL)
    (tmp_path / "results" / RECORD).unlink()
    d.score_marker(0).unlink()
    d.captions(1).write_bytes(b"not an npy file")  # the encode marker stays: the slice is checked, not trusted
    rc, _, err = run_main(["run", "--config", str(cfg_path), "-q", "--shards", "2", "--no-table"])
    assert rc == 0, err
    assert "tasks to run: 1 encode, 1 score, 1 merge" in err  # the broken slice is encoded again
    d.score_part(1).write_bytes(b"truncated")
    (tmp_path / "results" / RECORD).unlink()
    d.score_marker(0).unlink()
    rc, _, err = run_main(["run", "--config", str(cfg_path), "-q", "--shards", "2", "--no-table"])
    assert rc == 1
    assert f"{d.score_part(1)}: cannot read score part 1" in err and "Traceback" not in err


def test_training_methods_and_rerank_are_refused(tmp_path: Path) -> None:
    cfg_path = sharded_config(tmp_path)
    rc, _, err = run_main(["run", "--config", str(cfg_path), "--methods", "contrastive", "--shards", "2"])
    assert rc == 2 and "method 'contrastive' trains" in err and "Traceback" not in err
    rc, _, err = run_main(["run", "--config", str(cfg_path), "--shards", "2", "--set", "eval.rerank_k=8"])
    assert rc == 2 and "rerank_k" in err
    with pytest.raises(SystemExit) as exit_:  # argparse: usage and one line
        run_main(["run", "--config", str(cfg_path), "--shards", "0"])
    assert exit_.value.code == 2
