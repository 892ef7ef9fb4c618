"""CLIP_benchmark's own pipeline (its CLI, its dataset class, its ``zeroshot_retrieval.evaluate``) and ``bench run``
give the same zero-shot recall on coco-sample's test split for the same open_clip checkpoint.

The split is written in CLIP_benchmark's ``mscoco_captions`` layout (``<root>/val2014/<file>`` and a COCO-format
annotation file, read by torchvision's ``CocoCaptions``); the checkpoint is a tiny random-init open_clip saved as a
state-dict file, which both tools load with ``open_clip.create_model_and_transforms(name, pretrained=PATH)``.
CLIP_benchmark runs with ``--no_amp``: its default autocast is bf16 on a CPU, which rounds the embeddings of this
crowded model into hundreds of tied scores.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_CLIP_ARCH, TINY_CLIP_CONFIG
from tiny_grid import run_main

from bench.grid.records import read_record

COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-sample"
pytestmark = [
    pytest.mark.coco,
    pytest.mark.skipif(not COCO.is_dir(), reason=f"{COCO} is absent (the real-photo sample ships beside the repo)"),
]
TOLERANCE = 0.01  # points: the bound; the images' and captions' batches differ between the two tools


def write_mscoco_layout(root: Path) -> Path:
    """coco-sample's test split as CLIP_benchmark's ``mscoco_captions`` reads it; returns the annotation file.
    Image ids are the split's image order, since ``CocoCaptions`` lists images by sorted id."""
    rows = json.loads((COCO / "test.json").read_text())
    (root / "val2014").mkdir(parents=True)
    files = list(dict.fromkeys(r["image_path"] for r in rows))
    for f in files:
        (root / "val2014" / Path(f).name).symlink_to(COCO / f)
    images = [{"id": i, "file_name": Path(f).name} for i, f in enumerate(files)]
    anns = [{"id": j, "image_id": files.index(r["image_path"]), "caption": r["caption"]} for j, r in enumerate(rows)]
    path = root / "coco_test_karpathy.json"
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    return path


def test_bench_run_equals_clip_benchmarks_own_evaluation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("clip_benchmark", reason="pip install --no-deps clip-benchmark (the README's test command)")
    pytest.importorskip("pycocotools", reason="CLIP_benchmark's mscoco_captions reads through pycocotools")
    import types

    import open_clip

    # The CLI imports its captioning metrics, which need pycocoevalcap (Java jars); retrieval never calls them.
    monkeypatch.setitem(sys.modules, "clip_benchmark.metrics.captioning", types.ModuleType("captioning"))
    from clip_benchmark import cli

    open_clip.add_model_config(TINY_CLIP_CONFIG)
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny_clip.pt"
    torch.save(open_clip.create_model(TINY_CLIP_ARCH).state_dict(), checkpoint)

    annotation = write_mscoco_layout(tmp_path / "mscoco")
    out = tmp_path / "clip_benchmark.json"
    argv = ["clip_benchmark", "eval", "--dataset", "mscoco_captions", "--dataset_root", str(tmp_path / "mscoco"),
            "--annotation_file", str(annotation), "--task", "zeroshot_retrieval", "--model", TINY_CLIP_ARCH,
            "--pretrained", str(checkpoint), "--no_amp", "--recall_k", "1", "5", "10", "--batch_size", "64",
            "--num_workers", "0", "--output", str(out), "--quiet"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    cli.main()
    theirs = json.loads(out.read_text())["metrics"]

    config = tmp_path / "bench.toml"
    config.write_text(f"""
[paths]
results_dir = {json.dumps(str(tmp_path / "results"))}
work_dir = {json.dumps(str(tmp_path / "work"))}

[eval]
bootstrap = 0

[models.tiny_clip]
adapter = "clip"
checkpoint = "{TINY_CLIP_ARCH}"
pretrained = {json.dumps(str(checkpoint))}
model_config = {json.dumps(str(TINY_CLIP_CONFIG))}

[datasets.coco-sample]
format = "flat_json"
root = {json.dumps(str(COCO))}
""")
    rc, _, err = run_main(["run", "--config", str(config), "--models", "tiny_clip", "--datasets", "coco-sample",
                           "--methods", "zeroshot", "-q", "--no-table"])  # fmt: skip
    assert rc == 0, err
    ours = read_record(tmp_path / "results/runs/tiny_clip/coco-sample/test/zeroshot-seed0.json")["metrics"]
    compared = []
    for k in (1, 5, 10):
        # CLIP_benchmark's "image retrieval" is text -> image (t2i), its "text retrieval" image -> text (i2t).
        for ours_key, their_key in (("t2i", "image_retrieval"), ("i2t", "text_retrieval")):
            theirs_pts = 100 * theirs[f"{their_key}_recall@{k}"]
            compared.append((ours_key, k, ours[ours_key][f"r{k}"], theirs_pts))
            assert ours[ours_key][f"r{k}"] == pytest.approx(theirs_pts, abs=TOLERANCE), compared[-1]
    assert ours["t2i"]["n_queries"] == 1000 and ours["i2t"]["n_queries"] == 201
    print("itr-bench vs CLIP_benchmark (direction, K, ours, theirs):", compared)
