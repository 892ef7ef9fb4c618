"""Region features as a dataset (SCAN's precomp layout): both caption layouts, the COCO test names, memory mapping,
vocabularies, and broken files (one line naming the file); a model that reads pixels is told it cannot score them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_grid import MODEL_TABLES, run_main

from bench.data import load_split
from bench.data.precomp import RegionRows, region_features
from bench.errors import BenchError
from bench.grid.records import read_record

N, REGIONS, DIM = 4, 36, 8


def write_precomp(root: Path, split: str = "testall", *, repeated: bool = False, ids: bool = True) -> np.ndarray:
    """N images x 36 regions x 8 dims and 5 captions each; ``repeated``: the older files with one row per caption."""
    root.mkdir(parents=True, exist_ok=True)
    feats = np.random.default_rng(0).normal(size=(N, REGIONS, DIM)).astype(np.float32)
    np.save(root / f"{split}_ims.npy", np.repeat(feats, 5, axis=0) if repeated else feats)
    (root / f"{split}_caps.txt").write_text("".join(f"image {i} caption {j}\n" for i in range(N) for j in range(5)))
    if ids:
        (root / f"{split}_ids.txt").write_text("".join(f"{100 + i}\n" for i in range(N)))
    return feats


@pytest.mark.parametrize("repeated", [False, True])
def test_precomp_layouts(tmp_path: Path, repeated: bool) -> None:
    feats = write_precomp(tmp_path, repeated=repeated, ids=not repeated)
    spec = {"format": "precomp", "root": str(tmp_path), "folds": {"testall": 2}}
    split = load_split("p", spec, "testall", work_dir=tmp_path)
    assert split.n_images == N and split.n_captions == 5 * N and split.caption_to_image.tolist()[:6] == [0] * 5 + [1]
    assert list(split.image_ids) == ([f"{100 + i}" for i in range(N)] if not repeated else
                                     [f"testall:{5 * i}" for i in range(N)])  # fmt: skip
    assert all(isinstance(p, RegionRows) for p in split.image_paths) and split.fold_rows()[1].tolist() == [2, 3]
    np.testing.assert_array_equal(region_features([split.image_paths[i] for i in (2, 0)]), feats[[2, 0]])
    assert isinstance(np.load(tmp_path / "testall_ims.npy", mmap_mode="r"), np.memmap)


def test_coco_test_names_cannot_be_confused(tmp_path: Path) -> None:
    write_precomp(tmp_path, "testall")
    with pytest.raises(BenchError, match=r"test_ims\.npy: region features of split 'test' not found; splits here: "
                                         r"testall \(COCO's 5K test is \"testall\"; \"test\" is its 1K\)"):  # fmt: skip
        load_split("p", {"format": "precomp", "root": str(tmp_path)}, "test", work_dir=tmp_path)


def test_vocab_is_checked(tmp_path: Path) -> None:
    write_precomp(tmp_path)
    spec = {"format": "precomp", "root": str(tmp_path), "vocab": "coco_precomp_vocab.json"}
    with pytest.raises(BenchError, match=r"coco_precomp_vocab\.json: vocabulary file not found"):
        load_split("p", spec, "testall", work_dir=tmp_path)
    (tmp_path / "coco_precomp_vocab.json").write_text(json.dumps({"idx2word": {"0": "<pad>"}}))
    with pytest.raises(BenchError, match="field 'word2idx' must map words to integer indices"):
        load_split("p", spec, "testall", work_dir=tmp_path)
    (tmp_path / "coco_precomp_vocab.json").write_text(json.dumps({"word2idx": {"<pad>": 0, "dog": 1}, "idx": 2}))
    assert load_split("p", spec, "testall", work_dir=tmp_path).n_images == N


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("rank", r"testall_ims\.npy: expected an array of images x regions x features \(rank 3\), got shape \(4, 8\)"),
        ("count", r"testall_caps\.txt: 19 captions is not a multiple of the 4 images in testall_ims\.npy"),
        ("not_repeated", r"as many rows as captions \(20\), but rows 0-4 are not one image repeated"),
        ("empty", r"testall_caps\.txt line 3: caption is empty"),
        ("ids", r"testall_ids\.txt: 3 ids for 4 image rows"),
    ],
)
def test_broken_precomp_is_one_line(tmp_path: Path, breakage: str, message: str) -> None:
    write_precomp(tmp_path)
    caps = (tmp_path / "testall_caps.txt").read_text().splitlines()
    if breakage == "rank":
        np.save(tmp_path / "testall_ims.npy", np.zeros((N, DIM), np.float32))
    elif breakage == "count":
        (tmp_path / "testall_caps.txt").write_text("\n".join(caps[:-1]) + "\n")
    elif breakage == "not_repeated":
        np.save(tmp_path / "testall_ims.npy", np.random.default_rng(1).normal(size=(5 * N, 2, 2)).astype(np.float32))
    elif breakage == "empty":
        caps[2] = "  "
        (tmp_path / "testall_caps.txt").write_text("\n".join(caps) + "\n")
    else:
        (tmp_path / "testall_ids.txt").write_text("1\n2\n3\n")
    config = tmp_path / "bench.toml"
    config.write_text(f'[datasets.p]\nformat = "precomp"\nroot = {json.dumps(str(tmp_path))}\n')
    rc, out, err = run_main(["data", "p", "--config", str(config), "--split", "testall"])
    lines = [x for x in err.strip().splitlines() if x]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (out, err)
    assert __import__("re").search(message, lines[0]), lines[0]


def test_a_pixel_model_is_told_it_cannot_score_region_features(tmp_path: Path) -> None:
    write_precomp(tmp_path / "precomp")
    config = tmp_path / "bench.toml"
    config.write_text(f"""
[paths]
results_dir = {json.dumps(str(tmp_path / "results"))}
work_dir = {json.dumps(str(tmp_path / "work"))}

[eval]
split = "testall"

{MODEL_TABLES}
[datasets.p]
format = "precomp"
root = {json.dumps(str(tmp_path / "precomp"))}
""")
    rc, _, err = run_main(["run", "--config", str(config), "--models", "towers", "--datasets", "p", "--methods",
                           "zeroshot", "-q", "--no-table"])  # fmt: skip
    assert rc == 1, err
    rec = read_record(tmp_path / "results/runs/towers/p/testall/zeroshot-seed0.json")
    assert rec["status"] == "failed" and "holds region features, not an image" in rec["reason"]
