"""Three implementations nobody here wrote and ``bench run`` give the same accuracies for the same open_clip
checkpoint, on choice sets made of coco-sample's real photos and human captions: SugarCrepe's own ``main_eval.py``
(quoted below), CLIP_benchmark's SugarCrepe pipeline through its CLI, and CLIP_benchmark's
``image_caption_selection.evaluate`` on Winoground items read from the release's layout.

The SugarCrepe file is written in the official layout (``swap_obj.json`` beside ``val2017/``) with the photos'
captions and their object-swapped copies (:mod:`bench.data.swaps`); the Winoground file pairs consecutive photos
with one caption each. The checkpoint is a tiny random-init open_clip, as in ``test_clip_benchmark_parity.py``;
CLIP_benchmark runs without autocast (``--no_amp`` / ``amp=False``), so no score ties and its ``argmax`` rule and the
harness's strict rule agree (``tests/test_choice.py`` tests where they differ: ties).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CLIP_ARCH, TINY_CLIP_CONFIG
from PIL import Image
from tiny_grid import run_main

from bench.data.swaps import swapped
from bench.grid.records import read_record

COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-sample"
pytestmark = [
    pytest.mark.coco,
    pytest.mark.skipif(not COCO.is_dir(), reason=f"{COCO} is absent (the real-photo sample ships beside the repo)"),
]
N_WINOGROUND = 40


# --- SugarCrepe's own evaluation, quoted from RAIVNLab/sugar-crepe main_eval.py (text_retrieval, evaluate) ---------
@torch.no_grad()
def text_retrieval(pos_text, neg_text, image, model, tokenizer, transform, device):  # noqa: ANN001, ANN201
    pos_text = tokenizer(pos_text).to(device)
    pos_text_embedding = model.encode_text(pos_text, normalize=True)
    neg_text = tokenizer(neg_text).to(device)
    neg_text_embedding = model.encode_text(neg_text, normalize=True)
    image_embedding = model.encode_image(transform(image).unsqueeze(dim=0).to(device), normalize=True)
    pos_score = pos_text_embedding @ image_embedding.t()
    neg_score = neg_text_embedding @ image_embedding.t()
    return 1 if pos_score.item() > neg_score.item() else 0


def sugarcrepe_evaluate(image_root, dataset, model, tokenizer, transform, device):  # noqa: ANN001, ANN201
    metrics = {}
    for c, data_dict in dataset.items():
        correct_cnt = 0
        for _i, data in data_dict.items():
            image_path = os.path.join(image_root, data["filename"])
            image = Image.open(image_path)
            correct = text_retrieval(data["caption"], data["negative_caption"], image, model, tokenizer, transform,
                                     device)  # fmt: skip
            correct_cnt += correct
        count = len(data_dict)
        metrics[c] = correct_cnt / count
    return metrics


# -------------------------------------------------------------------------------------------------------------------


def _first_captions() -> list[tuple[str, str]]:
    """(photo file, its first caption) of each coco-sample test photo."""
    rows = json.loads((COCO / "test.json").read_text())
    out: dict[str, str] = {}
    for r in rows:
        out.setdefault(r["image_path"], r["caption"].strip())
    return list(out.items())


def write_sugarcrepe(root: Path) -> int:
    (root / "val2017").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows, n = {}, 0
    for r in json.loads((COCO / "test.json").read_text()):
        negative = swapped(r["caption"].strip(), "swap_obj", rng)
        if negative is None:
            continue
        name = Path(r["image_path"]).name
        if not (root / "val2017" / name).exists():
            (root / "val2017" / name).symlink_to(COCO / r["image_path"])
        rows[str(3 * n + 1)] = {"filename": name, "caption": r["caption"].strip(), "negative_caption": negative}
        n += 1
    (root / "swap_obj.json").write_text(json.dumps(rows))
    return n


def write_winoground(root: Path) -> list[dict]:
    (root / "images").mkdir(parents=True)
    photos = _first_captions()[: 2 * N_WINOGROUND]
    examples = []
    for i in range(N_WINOGROUND):
        (f0, c0), (f1, c1) = photos[2 * i], photos[2 * i + 1]
        for k, f in enumerate((f0, f1)):
            Image.open(COCO / f).convert("RGB").save(root / "images" / f"ex_{i}_img_{k}.png")
        examples.append({"id": i, "image_0": f"ex_{i}_img_0", "image_1": f"ex_{i}_img_1", "caption_0": c0,
                         "caption_1": c1, "tag": "Object", "secondary_tag": "", "num_main_preds": 1,
                         "collapsed_tag": "Object"})  # fmt: skip
    (root / "examples.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    return examples


def _config(tmp_path: Path, checkpoint: Path) -> Path:
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

[datasets.sugarcrepe]
format = "sugarcrepe"
root = {json.dumps(str(tmp_path / "sugarcrepe"))}
subsets = ["swap_obj"]

[datasets.winoground]
format = "winoground"
root = {json.dumps(str(tmp_path / "winoground"))}
""")
    return config


def test_choice_accuracies_equal_clip_benchmarks_own_evaluation(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    pytest.importorskip("clip_benchmark", reason="pip install --no-deps clip-benchmark (the README's test command)")
    import types

    import open_clip

    monkeypatch.setitem(sys.modules, "clip_benchmark.metrics.captioning", types.ModuleType("captioning"))
    from clip_benchmark import cli
    from clip_benchmark.datasets.builder import get_dataset_collate_fn
    from clip_benchmark.metrics import image_caption_selection

    open_clip.add_model_config(TINY_CLIP_CONFIG)
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny_clip.pt"
    torch.save(open_clip.create_model(TINY_CLIP_ARCH).state_dict(), checkpoint)
    n_sugar = write_sugarcrepe(tmp_path / "sugarcrepe")
    examples = write_winoground(tmp_path / "winoground")

    # SugarCrepe through CLIP_benchmark's CLI (its dataset class reads <root>/swap_obj.json and <root>/val2017)
    out = tmp_path / "clip_benchmark.json"
    argv = ["clip_benchmark", "eval", "--dataset", "sugar_crepe/swap_obj", "--dataset_root",
            str(tmp_path / "sugarcrepe"), "--task", "image_caption_selection", "--model", TINY_CLIP_ARCH,
            "--pretrained", str(checkpoint), "--no_amp", "--batch_size", "32", "--num_workers", "0",
            "--output", str(out), "--quiet"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    cli.main()
    sugar_theirs = json.loads(out.read_text())["metrics"]

    # Winoground: CLIP_benchmark's dataset class reads the gated Hub copy, so its evaluate() gets the same items
    # from the release's files, through its own collate function
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP_ARCH, pretrained=str(checkpoint))
    model.eval()
    images = tmp_path / "winoground" / "images"
    data = [(torch.stack([preprocess(Image.open(images / f"{e[f'image_{k}']}.png")) for k in (0, 1)]),
             [e["caption_0"], e["caption_1"]]) for e in examples]  # fmt: skip
    loader = torch.utils.data.DataLoader(data, batch_size=16, collate_fn=get_dataset_collate_fn("winoground"))
    wino_theirs = image_caption_selection.evaluate(model, loader, open_clip.get_tokenizer(TINY_CLIP_ARCH), "cpu",
                                                   amp=False)  # fmt: skip

    # SugarCrepe's own main_eval.py, one pair at a time
    sugar_own = sugarcrepe_evaluate(str(tmp_path / "sugarcrepe" / "val2017"),
                                    {"swap_obj": json.loads((tmp_path / "sugarcrepe" / "swap_obj.json").read_text())},
                                    model, open_clip.get_tokenizer(TINY_CLIP_ARCH), preprocess, "cpu")  # fmt: skip

    config = _config(tmp_path, checkpoint)
    rc, _, err = run_main(["run", "--config", str(config), "--models", "tiny_clip", "--datasets",
                           "sugarcrepe,winoground", "--methods", "zeroshot", "-q", "--no-table"])  # fmt: skip
    assert rc == 0, err
    runs = tmp_path / "results" / "runs" / "tiny_clip"
    sugar = read_record(runs / "sugarcrepe/test/zeroshot-seed0.json")["metrics"]["choice"]
    wino = read_record(runs / "winoground/test/zeroshot-seed0.json")["metrics"]["choice"]
    assert sugar["n_items"] == n_sugar > 300 and wino["n_items"] == N_WINOGROUND
    # CLIP_benchmark averages in float32: the same count of passed items is equal to 1e-4 points (one item: 0.2)
    assert sugar["text"]["swap_obj"] == pytest.approx(100 * sugar_theirs["text_acc"], abs=1e-4)
    assert sugar["text"]["swap_obj"] == pytest.approx(100 * sugar_own["swap_obj"], abs=1e-9)
    assert "image" not in sugar  # one image per item: no image test (CLIP_benchmark reports 1.0 for it)
    assert wino["text"]["mean"] == pytest.approx(100 * wino_theirs["text_acc"], abs=1e-4)
    assert wino["image"]["mean"] == pytest.approx(100 * wino_theirs["image_acc"], abs=1e-4)
    assert wino["group"]["mean"] == pytest.approx(100 * wino_theirs["acc"], abs=1e-4)
    print("itr-bench vs CLIP_benchmark: sugarcrepe swap_obj", sugar["text"]["swap_obj"], 100 * sugar_theirs["text_acc"],
          "winoground text/image/group", wino["text"]["mean"], wino["image"]["mean"], wino["group"]["mean"],
          {k: 100 * v for k, v in wino_theirs.items()})  # fmt: skip
