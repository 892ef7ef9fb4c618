"""``bench precomp``: an image-text split written in SCAN's precomp layout, a timm backbone's grid cells as its
regions. The cells equal timm's own ``forward_features`` of the photos; captions, ids and photos line up; images with
too few captions are left out and counted; the vocabulary is SCAN's rule; a region model scores the folder and its
record says the features are grid cells; a pixel model reads the photos the folder names. The slow test trains SAF on
the coco-sample photos so written and checks it learns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_grid import run_main

from bench.data import load_split
from bench.data.precomp import RegionRows, region_description
from bench.data.precomp_write import read_manifest, write_vocab
from bench.grid.records import read_record

COCO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco-sample"
pytestmark = [
    pytest.mark.coco,
    pytest.mark.skipif(not (COCO / "test.json").is_file(), reason=f"{COCO} is absent (real photos)"),
]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """coco-sample's test split (201 photos) written by ``bench precomp``, tf_efficientnet_lite0's 7 x 7 cells."""
    out = tmp_path_factory.mktemp("grid") / "cs-grid"
    rc, stdout, err = run_main(["precomp", "coco-sample", "--out", str(out), "--splits", "test"])
    assert rc == 0, err
    assert json.loads(stdout.splitlines()[0])["regions"] == 49
    return out


def test_cells_are_timms_feature_map_of_the_photos(written: Path) -> None:
    import timm
    from bench.adapters.backbones import build_timm_tower
    from PIL import Image

    manifest = read_manifest(written)
    assert manifest is not None
    entry = manifest["splits"]["test"]
    assert entry["features"] == "grid cells" and entry["grid"] == [7, 7] and entry["dim"] == 1280
    # coco-sample's test split: 198 images with 5 captions, 1 with 6, 2 with 2: k = 5, two images and a caption out
    assert (entry["captions_per_image"], entry["images_left_out"], entry["captions_left_out"]) == (5, 2, 5)
    ims = np.load(written / "test_ims.npy", mmap_mode="r")
    photos = (written / "test_photos.txt").read_text().split()
    ids = (written / "test_ids.txt").read_text().split()
    assert ims.shape == (199, 49, 1280) and len(photos) == len(ids) == 199
    assert len((written / "test_caps.txt").read_text().splitlines()) == 5 * 199
    tower = build_timm_tower("tf_efficientnet_lite0")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(tower.model.state_dict(), strict=False)
    model.eval()
    tf = tower.transform()
    with torch.no_grad():
        for row in (0, 137):
            x = tf(Image.open(photos[row]).convert("RGB"))[None]
            want = model.forward_features(x).flatten(2).transpose(1, 2)[0].numpy()  # [49, 1280]
            np.testing.assert_allclose(ims[row], want, atol=1e-4, rtol=1e-4)
            assert Path(photos[row]).name == ids[row]


def test_folder_loads_with_its_photos_and_description(written: Path) -> None:
    split = load_split("g", {"format": "precomp", "root": str(written)}, "test", work_dir=written)
    assert split.n_images == 199 and split.n_captions == 995
    ref = split.image_paths[3]
    assert isinstance(ref, RegionRows) and ref.photo is not None and ref.read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    desc = region_description(split)
    assert desc is not None and desc["features"] == "grid cells" and desc["backbone"] == "tf_efficientnet_lite0"
    assert desc["source"]["dataset"] == "coco-sample"


def test_vocabulary_follows_scans_rule(written: Path) -> None:
    from collections import Counter

    from bench.adapters.region_text import Vocabulary

    (written / "train_caps.txt").write_text((written / "test_caps.txt").read_text())
    try:
        path = write_vocab(written)
    finally:
        (written / "train_caps.txt").unlink()
    vocab = json.loads(path.read_text())
    tok = Vocabulary(vocab["word2idx"], path)
    counts = Counter(w for line in (written / "test_caps.txt").read_text().splitlines() for w in tok.words(line))
    want = {w for w, c in counts.items() if c >= 4} | {"<pad>", "<start>", "<end>", "<unk>"}
    assert set(vocab["word2idx"]) == want and vocab["word2idx"]["<unk>"] == 3 and vocab["idx"] == len(want)


def test_a_region_model_scores_it_and_records_grid_cells(written: Path, tmp_path: Path) -> None:
    vocab = {"word2idx": {w: i for i, w in enumerate(["<pad>", "<start>", "<end>", "<unk>", "a", "man", "dog"])}}
    (tmp_path / "v.json").write_text(json.dumps(vocab))
    config = tmp_path / "bench.toml"
    config.write_text(f"""
[paths]
results_dir = {json.dumps(str(tmp_path / "results"))}
work_dir = {json.dumps(str(tmp_path / "work"))}

[models.saf]
adapter = "sgraf"
vocab = {json.dumps(str(tmp_path / "v.json"))}
module_name = "SAF"
regions = 49
img_dim = 1280
embed_size = 32
word_dim = 16
sim_dim = 16

[models.towers]
adapter = "towers"
methods = ["zeroshot"]

[datasets.g]
format = "precomp"
root = {json.dumps(str(written))}
""")
    rc, _, err = run_main(["run", "--config", str(config), "--models", "saf,towers", "--datasets", "g", "--methods",
                           "zeroshot", "-q", "--no-table"])  # fmt: skip
    assert rc == 0, err
    rc, table, err = run_main(["table", "--config", str(config), "--format", "csv", "--datasets", "g", "--models",
                               "saf,towers"])  # fmt: skip
    assert rc == 0, err
    rows = [line for line in table.splitlines() if "saf" in line or "towers" in line]
    note = "regions: tf_efficientnet_lite0 7x7 grid cells, not detector regions"
    assert any(note in r for r in rows if "saf" in r) and not any(note in r for r in rows if "towers" in r), table
    rec = read_record(tmp_path / "results/runs/saf/g/test/zeroshot-seed0.json")
    assert rec["regions"]["features"] == "grid cells" and rec["regions"]["grid"] == [7, 7]
    assert rec["metrics"]["pairs"]["pairs"] == 199 * 995
    towers = read_record(tmp_path / "results/runs/towers/g/test/zeroshot-seed0.json")
    assert "regions" not in towers  # it read the photos
    assert towers["status"] == "ok" and towers["metrics"]["i2i"] is None and towers["metrics"]["t2t"]["r1"] > 0


@pytest.mark.slow
def test_saf_learns_on_the_photos_grid_cells(tmp_path: Path) -> None:
    """SAF (random init, embed 256) trained on coco-sample's train photos as grid cells, two epochs on the CPU with
    InfoNCE on its pair scores (configs/coco-sample-regions.toml's setting): the test RSUM is far above chance (about
    16 for 199 images) and above the untrained model's."""
    out = tmp_path / "cs-grid"
    rc, _, err = run_main(["precomp", "coco-sample", "--out", str(out), "--splits", "train,test"])
    assert rc == 0, err
    config = tmp_path / "bench.toml"
    config.write_text(f"""
[paths]
results_dir = {json.dumps(str(tmp_path / "results"))}
work_dir = {json.dumps(str(tmp_path / "work"))}

[train]
epochs = 2
batch_size = 32
lr = 2e-3
weight_decay = 1e-4
grad_clip = 2.0
loss = "infonce"

[models.saf]
adapter = "sgraf"
module_name = "SAF"
vocab = {json.dumps(str(out / "cs-grid_vocab.json"))}
regions = 49
img_dim = 1280
embed_size = 256
sim_dim = 64

[datasets.g]
format = "precomp"
root = {json.dumps(str(out))}
""")
    rc, _, err = run_main(["run", "--config", str(config), "--models", "saf", "--datasets", "g", "--methods",
                           "zeroshot,contrastive", "-q", "--no-table"])  # fmt: skip
    assert rc == 0, err
    runs = tmp_path / "results/runs/saf/g/test"
    zero, trained = (read_record(runs / f"{m}-seed0.json")["metrics"]["rsum"] for m in ("zeroshot", "contrastive"))
    assert trained > 100 and trained > zero + 50, (zero, trained)
