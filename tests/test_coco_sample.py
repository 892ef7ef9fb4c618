"""Real photos: fine-tuning the offline VSE∞ on coco-sample beats a linear probe on the same frozen towers.

Reads ``../shared/data/coco-sample`` (801 COCO photos, 4,000 human captions) in place and skips where it is absent.
One seed each; the closing notes report three. Takes a few minutes on 2 cores (backbone features are extracted once
and shared by both models through the feature cache).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli.main import main

COCO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco-sample"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "coco-sample.toml"

pytestmark = pytest.mark.skipif(not (COCO / "train.json").is_file(), reason=f"{COCO} is absent (real-photo check)")


def test_vse_infty_beats_linear_probe_on_real_photos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(
        [
            "run", "--config", str(CONFIG), "--seeds", "0", "-q",
            "--set", f"paths.results_dir='{tmp_path / 'results'}'",
            "--set", f"paths.work_dir='{tmp_path / 'work'}'",
            "--set", f"datasets.coco-sample.root='{COCO}'",
        ]
    )  # fmt: skip
    assert code == 0
    runs = tmp_path / "results" / "runs"
    probe = json.loads((runs / "linear_probe/coco-sample/test/contrastive-seed0.json").read_text())
    vse = json.loads((runs / "vse_infty/coco-sample/test/contrastive-seed0.json").read_text())
    # Both were selected on held-out train images, never on test.
    assert probe["selected_on"].endswith("held out") and vse["selected_on"].endswith("held out")
    assert probe["trained_parts"] and vse["trained_parts"] and vse["frozen_backbone"]
    # Chance RSUM on 201 images x 1,000 captions (~5 per image) is about 16.
    chance = 100 * sum(min(1.0, 5 * k / 1000) + k / 201 for k in (1, 5, 10))
    assert probe["metrics"]["rsum"] > 5 * chance
    assert vse["metrics"]["rsum"] > probe["metrics"]["rsum"]
