"""A zero-shot cell of an open_clip model ranks exactly as open_clip's own fp32 embeddings do.

The model is a tiny random-init open_clip ViT: its scores are crowded, so near-ties are everywhere and any rounding of
the scored embeddings (fp16 storage, bf16 autocast) moves ranks. The reference embeddings come from open_clip alone:
``create_model_and_transforms``, its own eval transform and tokenizer, in the harness's encoding batch sizes (a CPU
GEMM's last bit depends on the batch's shape), and ranks counted here with the documented pessimistic tie rule.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CLIP_ARCH, TINY_CLIP_CONFIG
from PIL import Image
from ranks import pessimistic_ranks
from tiny_grid import run_main

from bench.grid.records import read_record
from bench.scoring.perquery import load_per_query

COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-sample"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = [
    pytest.mark.coco,
    pytest.mark.skipif(not COCO.is_dir(), reason=f"{COCO} is absent (the real-photo sample ships beside the repo)"),
]
BATCH = 64  # [eval] batch_size below: images in batches of 64, captions in batches of 128 (as the encode loop)


def write_config(root: Path, feature_dtype: str) -> Path:
    path = root / f"bench-{feature_dtype}.toml"
    path.write_text(f"""
[paths]
results_dir = {json.dumps(str(root / f"results-{feature_dtype}"))}
work_dir = {json.dumps(str(root / "work"))}

[grid]
models = ["tiny_clip"]
datasets = ["coco-sample"]
methods = ["zeroshot"]
seeds = [0]

[eval]
batch_size = {BATCH}
bootstrap = 0
feature_dtype = "{feature_dtype}"

[models.tiny_clip]
adapter = "clip"
checkpoint = "{TINY_CLIP_ARCH}"
pretrained = "random"
model_config = {json.dumps(str(TINY_CLIP_CONFIG))}

[datasets.coco-sample]
format = "flat_json"
root = {json.dumps(str(COCO))}
""")
    return path


def open_clip_ranks(state: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """0-based i2t and t2i ranks of coco-sample's test split from open_clip's own fp32 embeddings."""
    import open_clip

    open_clip.add_model_config(TINY_CLIP_CONFIG)
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP_ARCH)
    model.load_state_dict(state)
    model.eval()
    tokenizer = open_clip.get_tokenizer(TINY_CLIP_ARCH)
    rows = json.loads((COCO / "test.json").read_text())
    paths = list(dict.fromkeys(r["image_path"] for r in rows))
    c2i = np.array([paths.index(r["image_path"]) for r in rows])
    with torch.no_grad():
        pixels = [preprocess(Image.open(COCO / p).convert("RGB")) for p in paths]
        img = torch.cat([model.encode_image(torch.stack(pixels[s : s + BATCH])) for s in range(0, len(paths), BATCH)])
        txt = torch.cat([model.encode_text(tokenizer([r["caption"] for r in rows[s : s + 2 * BATCH]]))
                         for s in range(0, len(rows), 2 * BATCH)])  # fmt: skip
    img = torch.nn.functional.normalize(img, dim=-1)
    txt = torch.nn.functional.normalize(txt, dim=-1)
    return pessimistic_ranks((txt @ img.T).numpy(), c2i)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[np.ndarray, np.ndarray]]:
    root = tmp_path_factory.mktemp("open_clip_parity")
    rc, _, err = run_main(["run", "--config", str(write_config(root, "auto")), "-q", "--no-table"])
    assert rc == 0, err
    # The harness seeds the cell before building the model; open_clip built under the same seed has the same weights.
    import open_clip

    open_clip.add_model_config(TINY_CLIP_CONFIG)
    torch.manual_seed(0)
    state = open_clip.create_model(TINY_CLIP_ARCH).state_dict()
    return root, open_clip_ranks(state)


def _cell(root: Path, feature_dtype: str) -> tuple[dict, dict[str, np.ndarray]]:
    folder = root / f"results-{feature_dtype}" / "runs" / "tiny_clip" / "coco-sample" / "test"
    record = read_record(folder / "zeroshot-seed0.json")
    pq = load_per_query(folder / record["per_query"]["file"])
    return record, {d: pq.queries[d].ranks for d in ("i2t", "t2i")}


def test_zero_shot_ranks_equal_open_clips_fp32_embeddings(reference) -> None:
    root, (i2t, t2i) = reference
    record, ranks = _cell(root, "auto")
    assert record["precision"] == {"encoding": "fp32", "features": "fp32", "scoring": "fp32"}
    assert len(t2i) == 1000 and len(i2t) == 201
    np.testing.assert_array_equal(ranks["t2i"], t2i)
    np.testing.assert_array_equal(ranks["i2t"], i2t)
    assert record["metrics"]["t2i"]["r1"] == pytest.approx(100 * np.mean(t2i == 0))


def test_fp16_feature_storage_is_said_and_moves_near_tied_ranks(reference) -> None:
    """The documented cache option rounds what is scored: the record says so, and on this crowded model the ranks
    visibly differ from open_clip's (which is why it is not the default)."""
    root, (i2t, t2i) = reference
    rc, _, err = run_main(["run", "--config", str(write_config(root, "fp16")), "-q", "--no-table"])
    assert rc == 0, err
    record, ranks = _cell(root, "fp16")
    assert record["precision"] == {"encoding": "fp32", "features": "fp16", "scoring": "fp32"}
    moved = {d: int((ranks[d] != want).sum()) for d, want in (("t2i", t2i), ("i2t", i2t))}
    assert sum(moved.values()) > 0
    print(f"fp16 feature storage moved the ranks of {moved['t2i']} of 1000 captions and {moved['i2t']} of 201 images")
