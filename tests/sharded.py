"""Shared by the sharded-evaluation tests (here and on the SLURM cluster): a zero-shot cell on the real COCO sample
and the check that a merged record is the one-process record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CLIP_ARCH, TINY_CLIP_CONFIG
from PIL import Image

from bench.grid.cell import Cell

COCO_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-sample"
needs_sample = pytest.mark.skipif(not COCO_SAMPLE.is_dir(), reason=f"the COCO sample is not at {COCO_SAMPLE}")
CELL = Cell("tinyclip", "coco-sample", "zeroshot", 0)
RECORD = Path("runs/tinyclip/coco-sample/test/zeroshot-seed0.json")


def sharded_config(root: Path, results: str = "results", extra: str = "") -> Path:
    """A zero-shot cell of the tiny CLIP on the COCO sample's train split."""
    path = root / f"{results}.toml"
    path.write_text(f"""
[paths]
results_dir = {json.dumps(str(root / results))}
work_dir = {json.dumps(str(root / "work"))}

[grid]
models = ["tinyclip"]
datasets = ["coco-sample"]
methods = ["zeroshot"]
seeds = [0]

[train]
device = "cpu"

[eval]
batch_size = 64
bootstrap = 50

[models.tinyclip]
adapter = "clip"
checkpoint = {json.dumps(TINY_CLIP_ARCH)}
pretrained = "random"
model_config = {json.dumps(str(TINY_CLIP_CONFIG))}

[datasets.coco-sample]
format = "flat_json"
root = {json.dumps(str(COCO_SAMPLE))}
files = {{ test = "train.json" }}  # the 600-photo split, scored as this set's test split
""" + extra)
    return path


def assert_same_record(sharded: Path, single: Path) -> None:
    """Everything but when and where it ran is equal: metrics, intervals, config, config hash and the per-query file
    (its sha256, hence every byte of its arrays)."""
    a, b = json.loads(sharded.read_text()), json.loads(single.read_text())
    assert a.pop("sharded")["score_tasks"] >= 1
    for rec in (a, b):
        for key in ("wall_time_s", "created", "job_id", "log", "device"):  # device: its thread count
            rec.pop(key, None)
    assert a == b
    za, zb = np.load(sharded.with_suffix(".queries.npz")), np.load(single.with_suffix(".queries.npz"))
    assert za.files == zb.files
    for key in za.files:
        np.testing.assert_array_equal(za[key], zb[key], err_msg=key)


def broken_image_config(tmp_path: Path, extra: str = "") -> Path:
    """A 6-photo set whose last photo is not an image, as the only dataset of :func:`sharded_config`'s grid."""
    data = tmp_path / "data"
    (data / "pics").mkdir(parents=True)
    rows = []
    for i in range(6):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(data / "pics" / f"{i}.png")
        rows += [{"image_path": f"pics/{i}.png", "caption": f"a photo number {i} {k}", "image_id": f"{i}.png"}
                 for k in range(2)]  # fmt: skip
    (data / "test.json").write_text(json.dumps(rows))
    (data / "pics" / "5.png").write_bytes(b"broken")
    cfg_path = sharded_config(tmp_path, extra=f'\n[datasets.tiny]\nformat = "flat_json"\nroot = "{data}"\n' + extra)
    cfg_path.write_text(cfg_path.read_text().replace('datasets = ["coco-sample"]', 'datasets = ["tiny"]'))
    return cfg_path
