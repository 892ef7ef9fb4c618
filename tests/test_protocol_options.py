"""Caption protocol options of image-text datasets: the reference's pre_caption and the first-five-captions rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_bad_input import make_flat_json

from bench.data import load_split
from bench.data.protocol import pre_caption
from bench.errors import ConfigError, DataError

COCO_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-sample"


def test_pre_caption_normalises_as_the_reference() -> None:
    assert pre_caption("A Man, riding a horse-drawn cart!  ") == "a man riding a horse drawn cart"
    assert pre_caption('Two "dogs" (brown/white) on the <person>\'s lap?') == "two dogs brown white on the person s lap"
    assert pre_caption("one two three four", max_words=2) == "one two"


def test_dataset_options_apply_at_load(tmp_path: Path) -> None:
    root = make_flat_json(tmp_path / "d")
    rows = json.loads((root / "test.json").read_text())
    rows.insert(2, {**rows[0], "caption": "A THIRD caption, of image 0!"})  # image 0 now has three captions
    (root / "test.json").write_text(json.dumps(rows))
    spec = {"format": "flat_json", "root": str(root)}
    raw = load_split("d", spec, "test", work_dir=tmp_path)
    assert raw.n_captions == 9 and "A THIRD caption, of image 0!" in raw.captions
    two = load_split("d", {**spec, "captions_per_image": 2}, "test", work_dir=tmp_path)
    assert two.n_captions == 8 and "A THIRD caption, of image 0!" not in two.captions
    assert list(two.captions) == [c for c in raw.captions if c != "A THIRD caption, of image 0!"]
    assert two.fingerprint("captions") != raw.fingerprint("captions")
    pre = load_split("d", {**spec, "pre_caption": True, "max_words": 3}, "test", work_dir=tmp_path)
    assert pre.captions[2] == "a third caption" and pre.image_ids == raw.image_ids
    with pytest.raises(ConfigError, match="pre_caption"):
        load_split("d", {**spec, "pre_caption": "yes"}, "test", work_dir=tmp_path)
    with pytest.raises(ConfigError, match="captions_per_image must be >= 0"):
        load_split("d", {**spec, "captions_per_image": -1}, "test", work_dir=tmp_path)
    rows[0]["caption"] = "?!"
    (root / "test.json").write_text(json.dumps(rows))
    with pytest.raises(DataError, match="empty after pre_caption"):
        load_split("d", {**spec, "pre_caption": True}, "test", work_dir=tmp_path)


@pytest.mark.skipif(not COCO_SAMPLE.is_dir(), reason="../shared/data/coco-sample is absent")
def test_first_five_captions_on_real_coco() -> None:
    spec = {"format": "flat_json", "root": str(COCO_SAMPLE)}
    all_caps = load_split("c", spec, "test", work_dir=COCO_SAMPLE)
    five = load_split("c", {**spec, "captions_per_image": 5}, "test", work_dir=COCO_SAMPLE)
    assert all_caps.n_captions == 1000 and five.n_captions == 999  # one image has 6 captions
