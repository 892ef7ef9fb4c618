"""Shared helpers of the end-to-end CLI tests: a tiny real grid config and a way to call ``bench`` in-process."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from bench.cli.main import main

EPOCHS = 2
N_TEST = 24
# The tables every tiny grid shares: the two offline models (vse_infty trains, towers is zero-shot only) and a small
# synthetic set (48/12/24 images of 64 px, resized by the 224 transform).
MODEL_TABLES = """[models.vse_infty]
adapter = "vse_infty"
embed_dim = 256

[models.towers]
adapter = "towers"
methods = ["zeroshot"]
"""
SYNTHETIC_TABLE = f"""[datasets.synthetic]
format = "synthetic"
seed = 0
n_train = 48
n_val = 12
n_test = {N_TEST}
image_size = 64
"""


def write_config(path: Path, *, results: Path, work: Path) -> Path:
    """A tiny but real grid: 48/12/24 synthetic images (64 px, resized by the 224 transform), 2 epochs on CPU."""
    path.write_text(
        f"""
[paths]
results_dir = {json.dumps(str(results))}
work_dir = {json.dumps(str(work))}

[grid]
models = ["vse_infty", "towers"]
datasets = ["synthetic"]
methods = ["zeroshot", "contrastive"]
seeds = [0]

[train]
epochs = {EPOCHS}
batch_size = 16
lr = 5e-4
device = "cpu"

[eval]
batch_size = 32

{MODEL_TABLES}
{SYNTHETIC_TABLE}"""
    )
    return path


def result_path(results: Path, model: str, method: str, seed: int = 0) -> Path:
    """Where the grid of :func:`write_config` stores one cell."""
    return results / "runs" / model / "synthetic" / "test" / f"{method}-seed{seed}.json"


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """``bench.cli.main.main(argv)`` with its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and mtime."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }
