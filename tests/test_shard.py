"""Sharded evaluation (``bench run --shards N``): the merged record is the one-process record, bit for bit; a re-run
skips finished tasks; stale shards are never reused; bad input is one line.

Runs on the real COCO sample (600 photos, 3,000 captions of its train split) through a tiny random open_clip model
(``tests/fixtures/tiny_clip.json``), locally; tests/test_slurm.py runs the same on the SLURM cluster.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sharded import CELL, RECORD, assert_same_record, broken_image_config, needs_sample, sharded_config
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
def test_broken_shards_are_made_again(tmp_path: Path) -> None:
    cfg_path = sharded_config(tmp_path)
    rc, _, err = run_main(["run", "--config", str(cfg_path), "-q", "--shards", "2", "--no-table"])
    assert rc == 0, err
    d = shard_dir(load_config(cfg_path), CELL)
    first = (tmp_path / "results" / RECORD).read_bytes()
    (tmp_path / "results" / RECORD).unlink()
    d.captions(1).write_bytes(b"not an npy file")  # the markers stay: the files are checked, not trusted
    d.score_part(0).write_bytes(b"truncated")
    rc, _, err = run_main(["run", "--config", str(cfg_path), "-q", "--shards", "2", "--no-table"])
    assert rc == 0, err
    assert "tasks to run: 1 encode, 1 score, 1 merge" in err
    again = json.loads((tmp_path / "results" / RECORD).read_text())
    assert again["metrics"] == json.loads(first)["metrics"]


def test_a_failing_task_is_one_line(tmp_path: Path) -> None:
    cfg_path = broken_image_config(tmp_path)
    rc, _, err = run_main(["run", "--config", str(cfg_path), "-q", "--shards", "2", "--no-table"])
    assert rc == 1
    assert "FAILED: encode task" in err and "5.png" in err and "Traceback" not in err
    assert err.count("FAILED") == 1  # the cell's later tasks do not run
    rec = json.loads((tmp_path / "results" / "runs" / "tinyclip" / "tiny" / "test" / "zeroshot-seed0.json").read_text())
    assert rec["status"] == "failed" and "5.png" in rec["reason"]  # what `bench status` shows


def test_training_methods_and_rerank_are_refused(tmp_path: Path) -> None:
    cfg_path = sharded_config(tmp_path)
    rc, _, err = run_main(["run", "--config", str(cfg_path), "--methods", "contrastive", "--shards", "2"])
    assert rc == 2 and "method 'contrastive' trains" in err and "Traceback" not in err
    rc, _, err = run_main(["run", "--config", str(cfg_path), "--shards", "2", "--set", "eval.rerank_k=8"])
    assert rc == 2 and "rerank_k" in err
    with pytest.raises(SystemExit) as exit_:  # argparse: usage and one line
        run_main(["run", "--config", str(cfg_path), "--shards", "0"])
    assert exit_.value.code == 2


@needs_sample
def test_the_debug_launcher_runs_the_same_jobs_in_process(tmp_path: Path) -> None:
    """``--launcher debug``: the submitit jobs of the three phases, run in this process one after another."""
    one = sharded_config(tmp_path, "single")
    rc, _, err = run_main(["run", "--config", str(one), "-q", "--no-table"])
    assert rc == 0, err
    cfg_path = sharded_config(tmp_path)
    rc, _, err = run_main(["run", "--config", str(cfg_path), "-q", "--shards", "2", "--launcher", "debug",
                           "--no-table"])  # fmt: skip
    assert rc == 0, err
    assert_same_record(tmp_path / "results" / RECORD, tmp_path / "single" / RECORD)


def test_precomputed_embeddings_shard_like_one_process(tmp_path: Path) -> None:
    """The ``embeddings`` adapter supplies its own features: each encode task slices them (no backbone runs)."""
    data = tmp_path / "data"
    (data / "pics").mkdir(parents=True)
    rows = []
    for i in range(700):  # two 512-row slices
        rows += [{"image_path": "pics/0.png", "caption": f"c{i} {k}", "image_id": f"{i}.png"} for k in range(2)]
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(data / "pics" / "0.png")
    for i in range(1, 700):
        (data / "pics" / f"{i}.png").hardlink_to(data / "pics" / "0.png")
        rows[2 * i]["image_path"] = rows[2 * i + 1]["image_path"] = f"pics/{i}.png"
    (data / "test.json").write_text(json.dumps(rows))
    rng = np.random.default_rng(0)
    img = rng.integers(-3, 4, size=(700, 16)).astype(np.float32)  # coarse values: many exact ties
    np.save(data / "image_emb.npy", img)
    np.save(data / "text_emb.npy", np.repeat(img, 2, axis=0) + rng.integers(-2, 3, size=(1400, 16)))
    configs = {}
    for name in ("single", "results"):
        configs[name] = tmp_path / f"{name}.toml"
        configs[name].write_text(f"""
[paths]
results_dir = "{tmp_path / name}"
work_dir = "{tmp_path / "work"}"
[grid]
models = ["emb"]
datasets = ["set"]
methods = ["zeroshot"]
seeds = [0]
[train]
device = "cpu"
[models.emb]
adapter = "embeddings"
image_emb = "{data / "image_emb.npy"}"
text_emb = "{data / "text_emb.npy"}"
[datasets.set]
format = "flat_json"
root = "{data}"
""")
    rc, _, err = run_main(["run", "--config", str(configs["single"]), "-q", "--no-table"])
    assert rc == 0, err
    rc, _, err = run_main(["run", "--config", str(configs["results"]), "-q", "--no-table", "--shards", "3"])
    assert rc == 0 and "tasks to run: 3 encode, 3 score, 1 merge" in err, err
    record = Path("runs/emb/set/test/zeroshot-seed0.json")
    assert_same_record(tmp_path / "results" / record, tmp_path / "single" / record)
