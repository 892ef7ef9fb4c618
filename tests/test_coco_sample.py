"""Real photos: on coco-sample a linear probe on the frozen offline towers learns far above chance (CI), and the
fine-tuned VSE∞ beats it (``-m slow``: about three minutes on 2 cores, most of it VSE∞'s ten epochs).

Reads ``../shared/data/coco-sample`` (801 COCO photos, 4,000 human captions) in place and skips where it is absent.
One seed each; the closing notes report three.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli.main import main

COCO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco-sample"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "coco-sample.toml"

pytestmark = pytest.mark.skipif(not (COCO / "train.json").is_file(), reason=f"{COCO} is absent (real-photo check)")


# Chance RSUM on 201 images x 1,000 captions (~5 per image) is about 16.
CHANCE = 100 * sum(min(1.0, 5 * k / 1000) + k / 201 for k in (1, 5, 10))


def _run(tmp_path: Path, *models: str) -> Path:
    code = main(
        [
            "run", "--config", str(CONFIG), "--seeds", "0", "-q", "--models", ",".join(models),
            "--set", f"paths.results_dir='{tmp_path / 'results'}'",
            "--set", f"paths.work_dir='{tmp_path / 'work'}'",
            "--set", f"datasets.coco-sample.root='{COCO}'",
        ]
    )  # fmt: skip
    assert code == 0
    return tmp_path / "results" / "runs"


def test_a_linear_probe_learns_far_above_chance_on_real_photos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runs = _run(tmp_path, "linear_probe")
    probe = json.loads((runs / "linear_probe/coco-sample/test/contrastive-seed0.json").read_text())
    assert probe["selected_on"].endswith("held out")  # selected on held-out train images, never on test
    assert probe["trained_parts"] and probe["frozen_backbone"]
    assert probe["metrics"]["rsum"] > 5 * CHANCE
    assert probe["metrics"]["t2i"]["n_queries"] == 1000 and probe["metrics"]["i2t"]["n_queries"] == 201


@pytest.mark.slow
def test_vse_infty_beats_linear_probe_on_real_photos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runs = _run(tmp_path, "linear_probe", "vse_infty")
    probe = json.loads((runs / "linear_probe/coco-sample/test/contrastive-seed0.json").read_text())
    vse = json.loads((runs / "vse_infty/coco-sample/test/contrastive-seed0.json").read_text())
    # Both were selected on held-out train images, never on test.
    assert probe["selected_on"].endswith("held out") and vse["selected_on"].endswith("held out")
    assert probe["trained_parts"] and vse["trained_parts"] and vse["frozen_backbone"]
    assert probe["metrics"]["rsum"] > 5 * CHANCE
    assert vse["metrics"]["rsum"] > probe["metrics"]["rsum"]
