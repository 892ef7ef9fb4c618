"""``bench run`` with uni-modal datasets in the grid: a CUB-layout image set and an STS-B set beside a tiny synthetic
ITR set, for ``towers`` and ``vse_infty`` zero-shot and a USA-trained ``vse_infty`` (real offline towers, CPU).

The image fixture holds real photos of ``../shared/data/coco-sample`` grouped by the COCO object their captions name;
where that folder is absent it holds the labelled images of the synthetic set instead, so the test always runs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from tiny_grid import run_main

from bench.data import load_split
from bench.grid.records import read_record

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import unimodal_fixtures as fx  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SYNTHETIC = """
[datasets.synthetic]
format = "synthetic"
seed = 0
n_train = 48
n_val = 12
n_test = 24
image_size = 64
"""


def _image_classes(work: Path) -> dict[str, list[Path]]:
    if (fx.COCO / "train.json").is_file():
        return dict(list(fx.coco_classes(fx.COCO, max_per_class=4).items())[:8])
    spec = {"format": "synthetic", "seed": 1, "n_train": 4, "n_val": 4, "n_test": 64, "image_size": 64}
    split = load_split("synthetic", spec, "test", work_dir=work)
    classes: dict[str, list[Path]] = {}
    for path, label in zip(split.image_paths, split.image_labels, strict=True):
        classes.setdefault(f"label{label}", []).append(Path(path))
    return {k: v for k, v in classes.items() if len(v) >= 2}


def _config(root: Path, cub: Path, stsb: Path, *, extra: str = "") -> Path:
    path = root / "bench.toml"
    path.write_text(
        f"""
[paths]
results_dir = {json.dumps(str(root / "results"))}
work_dir = {json.dumps(str(root / "work"))}

[grid]
models = ["vse_infty", "towers"]
datasets = ["synthetic", "cub", "stsb"]
methods = ["zeroshot", "usa"]
seeds = [0]

[train]
epochs = 2
batch_size = 16
device = "cpu"

[eval]
batch_size = 32

[teachers]
text_model = "all-MiniLM-L6-v2"

[models.vse_infty]
adapter = "vse_infty"
embed_dim = 256

[models.towers]
adapter = "towers"
methods = ["zeroshot"]
{SYNTHETIC}
[datasets.cub]
format = "cub"
root = {json.dumps(str(cub))}
{extra or 'train_on = "synthetic"'}

[datasets.stsb]
format = "stsb"
root = {json.dumps(str(stsb))}
train_on = "synthetic"
"""
    )
    return path


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str, str]:
    root = tmp_path_factory.mktemp("unimodal_grid")
    cub = fx.build_cub(root / "CUB_200_2011", _image_classes(root / "work"), n_train_classes=2)
    config = _config(root, cub, fx.build_stsb(root / "STSBenchmark"))
    rc, out, err = run_main(["run", "--config", str(config), "-q"])
    return root, rc, out, err


def _record(root: Path, model: str, dataset: str, method: str) -> dict:
    return read_record(root / "results" / "runs" / model / dataset / "test" / f"{method}-seed0.json")


def test_grid_runs_every_cell(grid: tuple[Path, int, str, str]) -> None:
    root, rc, _, err = grid
    assert rc == 0, err[-3000:]
    assert "9 ran, 0 skipped (done), 0 unavailable, 0 failed" in err


@pytest.mark.parametrize(
    ("model", "method", "embedding", "train"),
    [("towers", "zeroshot", "towers", None), ("vse_infty", "zeroshot", "joint", None),
     ("vse_infty", "usa", "uni_heads", "synthetic")],
)  # fmt: skip
def test_records_say_which_embedding_and_training_set(
    grid: tuple[Path, int, str, str], model: str, method: str, embedding: str, train: str | None
) -> None:
    root = grid[0]
    cub, stsb = _record(root, model, "cub", method), _record(root, model, "stsb", method)
    assert cub["task"] == "image_retrieval" and stsb["task"] == "sts"
    assert cub["embedding"] == stsb["embedding"] == embedding
    assert cub["train_dataset"] == stsb["train_dataset"] == train
    assert set(cub["metrics"]["i2i"]) >= {"r1", "r2", "r4", "r8", "map_at_r", "n_queries"}
    assert set(stsb["metrics"]["sts"]) == {"sts-test", "mean"}
    if train is not None:
        assert cub["config"]["train_dataset"]["name"] == "synthetic"


def test_trained_uni_modal_cell_trains_exactly_as_the_itr_cell(grid: tuple[Path, int, str, str]) -> None:
    root = grid[0]
    itr = _record(root, "vse_infty", "synthetic", "usa")

    def history(rec: dict) -> list[dict]:
        return [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in rec["history"]]

    for dataset in ("cub", "stsb"):
        rec = _record(root, "vse_infty", dataset, "usa")
        assert history(rec) == history(itr) and rec["selected_epoch"] == itr["selected_epoch"]
        assert rec["trained_parts"] == itr["trained_parts"] and rec["metrics_last"] is not None
    # the stored training (frozen backbone: heads only) is reused rather than trained again per uni-modal set
    assert any("reused_training" in _record(root, "vse_infty", d, "usa") for d in ("cub", "stsb"))


def test_real_towers_beat_chance(grid: tuple[Path, int, str, str]) -> None:
    root = grid[0]
    cub = _record(root, "towers", "cub", "zeroshot")["metrics"]["i2i"]
    # Chance R@1 is about (images per class - 1) / (images - 1), a few percent here.
    assert cub["r1"] > 30.0 and cub["map_at_r"] > 15.0
    assert _record(root, "towers", "stsb", "zeroshot")["metrics"]["sts"]["mean"] > 50.0


def test_run_prints_the_uni_modal_columns_and_table_renders_them(grid: tuple[Path, int, str, str]) -> None:
    root, _, out, _ = grid
    rows = {
        (c[0], c[1]): c
        for c in ([x.strip().replace("**", "") for x in line.strip("|").split("|")] for line in out.splitlines())
        if len(c) > 2
    }
    header = rows[("Model", "Method")]
    for col in ("cub R@1", "cub mAP@R", "stsb ρ", "RSUM"):
        assert col in header, header
    for key in (("towers", "zeroshot"), ("vse_infty", "zeroshot"), ("vse_infty", "usa")):
        cells = dict(zip(header, rows[key], strict=True))
        assert all(cells[c].replace(".", "").isdigit() for c in ("cub R@1", "cub mAP@R", "stsb ρ")), cells
    rc, csv_text, _ = run_main(["table", "--config", str(root / "bench.toml"), "--format", "csv"])
    assert rc == 0 and "cub_r8" in csv_text.splitlines()[0] and "stsb_rho_sts-test" in csv_text.splitlines()[0]


def test_trained_method_without_train_on_fails_before_any_cell(tmp_path: Path) -> None:
    config = _config(tmp_path, tmp_path / "cub", tmp_path / "stsb", extra="# no train_on")
    rc, _, err = run_main(["run", "--config", str(config), "-q"])
    assert rc == 2 and "[datasets.cub] is eval-only" in err and "train_on" in err
    assert not (tmp_path / "results").exists()
    bad = _config(tmp_path, tmp_path / "cub", tmp_path / "stsb", extra='train_on = "stsb"')
    rc, _, err = run_main(["run", "--config", str(bad), "-q"])
    assert rc == 2 and "train_on = 'stsb' is itself eval-only" in err
