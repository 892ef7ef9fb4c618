"""``bench run --models all`` without hub access: the models whose weights can be had run, each one whose weights
cannot is a table row that says why, and the exit code is non-zero only when nothing ran."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tiny_grid import run_main

from bench.grid.records import iter_records

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_TIMM = "test_byobnet"
# Hub names that need network, one per family that loads from a hub, and a local checkpoint that is not there.
UNAVAILABLE = {
    "clip_b32": ("clip", {"checkpoint": "ViT-B-32/openai"}, "ViT-B-32/openai"),
    "blip_coco": ("blip", {"checkpoint": "Salesforce/blip-itm-base-coco"}, "Salesforce/blip-itm-base-coco"),
    "siglip_hf": ("hf_clip", {"checkpoint": "google/siglip-base-patch16-224"}, "google/siglip-base-patch16-224"),
    "vse_official": ("vse_infty", {"checkpoint": "/nonexistent/model_best.pth"}, "model_best.pth"),
}


def _config(path: Path, root: Path, text_folder: Path, *, runnable: bool) -> Path:
    lines = [
        "[paths]",
        f"results_dir = {json.dumps(str(root / 'results'))}",
        f"work_dir = {json.dumps(str(root / 'work'))}",
        "[grid]",
        'models = ["all"]',
        'datasets = ["synthetic"]',
        'methods = ["zeroshot"]',
        "[train]",
        'device = "cpu"',
        "[eval]",
        "batch_size = 16",
        "[datasets.synthetic]",
        'format = "synthetic"',
        "n_train = 8",
        "n_val = 4",
        "n_test = 8",
        "image_size = 48",
    ]
    if runnable:  # a tiny random model that needs nothing from a hub
        lines += ["[models.tiny_towers]", 'adapter = "towers"', f'image_model = "{TINY_TIMM}"',
                  'image_weights = "random"', f"text_model = {json.dumps(str(text_folder))}"]  # fmt: skip
    for mid, (family, opts, _) in UNAVAILABLE.items():
        lines += [f"[models.{mid}]", f'adapter = "{family}"'] + [f"{k} = {json.dumps(v)}" for k, v in opts.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_models_all_offline_runs_what_it_can(tmp_path: Path, tiny_text_folder: Path) -> None:
    config = _config(tmp_path / "bench.toml", tmp_path, tiny_text_folder, runnable=True)
    rc, out, err = run_main(["run", "--config", str(config), "--models", "all", "-q"])
    assert rc == 0, err
    # The table has a row per model: the tiny one with numbers, each unavailable one saying why.
    rows = {line.split("|")[1].strip().strip("*"): line for line in out.splitlines() if line.startswith("| ")}
    assert set(UNAVAILABLE) | {"tiny_towers"} <= set(rows), out
    for mid, (_, _, name) in UNAVAILABLE.items():
        assert "weights unavailable" in rows[mid] and name in rows[mid], rows[mid]
        assert f"bench: unavailable: {mid} " in err
    records = {r["model"]: r for r in iter_records(tmp_path / "results")}
    assert records["tiny_towers"]["status"] == "ok"
    assert {records[m]["status"] for m in UNAVAILABLE} == {"unavailable"}
    assert "1 ran" in err and f"{len(UNAVAILABLE)} unavailable" in err and "0 failed" in err


def test_models_all_offline_fails_when_nothing_ran(tmp_path: Path, tiny_text_folder: Path) -> None:
    config = _config(tmp_path / "bench.toml", tmp_path, tiny_text_folder, runnable=False)
    rc, out, err = run_main(["run", "--config", str(config), "--models", "all", "-q"])
    assert rc != 0
    assert "0 ran" in err and f"{len(UNAVAILABLE)} unavailable" in err
    for mid in UNAVAILABLE:
        assert f"bench: unavailable: {mid} " in err


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
