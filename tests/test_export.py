"""``bench export``: a trained cell's model, loaded by its family's own library, ranks the test split exactly as its
record does; the method's heads read back through the harness; bad requests are one line, exit 2.

The cells are trained end to end (open_clip, transformers CLIP, BLIP) or on a frozen backbone (VSE∞ built from a tiny
checkpoint in its authors' layout) and scored in fp32, so equal embeddings give equal ranks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from ranks import pessimistic_ranks
from test_gpu_path import _toml
from test_vse_official import TINY_RESNET, _save_official
from tiny_grid import run_main

from bench.data import load_split
from bench.grid.records import read_record
from bench.scoring.perquery import load_per_query

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.usefixtures("single_thread")
NATIVE = ("clip", "hf_clip", "blip")
SYNTHETIC = {"format": "synthetic", "seed": 0, "n_train": 18, "n_val": 6, "n_test": 8, "image_size": 32}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_options: dict, tiny_text_folder: Path, build_tiny) -> Path:
    root = tmp_path_factory.mktemp("export")
    official = _save_official(build_tiny("vse_infty", image_backbone=TINY_RESNET, image_mlp=False),
                              root / "official_model_best.pth")  # fmt: skip
    only = {"methods": ["contrastive"]}  # clip alone also trains cusa: one method with heads is enough
    models: dict[str, dict[str, Any]] = {f: {"adapter": f, **tiny_options[f], **(only if f != "clip" else {})}
                                         for f in NATIVE}  # fmt: skip
    models["vse_official"] = {"adapter": "vse_infty", "checkpoint": str(official), "image_backbone": TINY_RESNET,
                              "text_backbone": str(tiny_text_folder), **only}  # fmt: skip
    lines = [
        "[paths]", f"results_dir = {_toml(str(root / 'results'))}", f"work_dir = {_toml(str(root / 'work'))}",
        "[grid]", f"models = {json.dumps(list(models))}", 'datasets = ["synthetic"]',
        'methods = ["contrastive", "cusa"]',
        "[train]", "epochs = 2", "batch_size = 6", "lr = 1e-3", "freeze_backbone = false", "amp = false",
        'device = "cpu"', 'loss = "infonce"',
        "[eval]", 'precision = "fp32"', "batch_size = 64", "bootstrap = 0",
        "[methods.contrastive]", "cross_heads = false",
        "[teachers]", 'image_model = "test_byobnet"', 'image_weights = "random"',
        f"text_model = {_toml(str(tiny_text_folder))}",
        "[datasets.synthetic]", *(f"{k} = {_toml(v)}" for k, v in SYNTHETIC.items()),
    ]  # fmt: skip
    for model, options in models.items():
        lines += [f"[models.{model}]", *(f"{k} = {_toml(v)}" for k, v in options.items())]
    lines += ["[models.vse_official.train]", "freeze_backbone = true"]  # heads on its frozen towers, as on a CPU
    config = root / "bench.toml"
    config.write_text("\n".join(lines) + "\n")
    rc, _, err = run_main(["run", "--config", str(config), "-q", "--no-table"])
    assert rc == 0, err
    return config


def _export(config: Path, spec: str, out: Path) -> tuple[int, str, str]:
    return run_main(["export", spec, "--config", str(config), "--dataset", "synthetic", "--out", str(out)])


def _record_ranks(config: Path, model: str, method: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    folder = config.parent / "results" / "runs" / model / "synthetic" / "test"
    record = read_record(folder / f"{method}-seed0.json")
    pq = load_per_query(folder / record["per_query"]["file"])
    return record, {d: pq.queries[d].ranks for d in ("i2t", "t2i")}


def _test_split(config: Path) -> Any:
    return load_split("synthetic", SYNTHETIC, "test", work_dir=config.parent / "work")


def _library_scores(family: str, out: Path, split: Any) -> np.ndarray:
    """``scores[caption, image]`` of the export, computed by the family's own library alone."""
    images = [Image.open(p).convert("RGB") for p in split.image_paths]
    captions = list(split.captions)
    with torch.no_grad():
        if family == "clip":
            import open_clip

            model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
            tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
            img = model.eval().encode_image(torch.stack([preprocess(im) for im in images]))
            txt = model.encode_text(tokenizer(captions))
        elif family == "hf_clip":
            from transformers import CLIPModel, CLIPProcessor

            model, processor = CLIPModel.from_pretrained(out).eval(), CLIPProcessor.from_pretrained(out)
            pixels = processor(images=images, return_tensors="pt")["pixel_values"]
            tokens = processor.tokenizer(captions, padding="longest", truncation=True,
                                         max_length=model.config.text_config.max_position_embeddings,
                                         return_tensors="pt")  # fmt: skip
            img, txt = model.get_image_features(pixel_values=pixels), model.get_text_features(**tokens)
            img = img if isinstance(img, torch.Tensor) else img.pooler_output
            txt = txt if isinstance(txt, torch.Tensor) else txt.pooler_output
        else:  # BLIP's own ITC scoring: forward(use_itm_head=False) is the cosine matrix [images, texts]
            from transformers import BlipForImageTextRetrieval, BlipProcessor

            model, processor = BlipForImageTextRetrieval.from_pretrained(out).eval(), BlipProcessor.from_pretrained(out)
            pixels = processor(images=images, return_tensors="pt")["pixel_values"]
            tokens = processor.tokenizer(captions, padding="longest", truncation=True, max_length=35,
                                         return_tensors="pt")  # fmt: skip
            sim = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=pixels,
                        use_itm_head=False).itm_score  # fmt: skip
            return sim.T.numpy()
    img, txt = torch.nn.functional.normalize(img, dim=-1), torch.nn.functional.normalize(txt, dim=-1)
    return (txt @ img.T).numpy()


@pytest.mark.parametrize("family", NATIVE)
def test_an_export_ranks_in_its_own_library_as_its_record(trained: Path, family: str, tmp_path: Path) -> None:
    out = tmp_path / "export"
    rc, stdout, err = _export(trained, f"{family}:contrastive:0", out)
    assert rc == 0, err
    body = json.loads((out / "export.json").read_text())
    record, ranks = _record_ranks(trained, family, "contrastive")
    assert body["selected_epoch"] == record["selected_epoch"] and body["config_hash"] == record["config_hash"]
    assert body["frozen_backbone"] is False and "load:" in stdout
    split = _test_split(trained)
    i2t, t2i = pessimistic_ranks(_library_scores(family, out, split), split.caption_to_image)
    np.testing.assert_array_equal(t2i, ranks["t2i"])
    np.testing.assert_array_equal(i2t, ranks["i2t"])


def test_vse_infty_exports_the_authors_layout_and_reads_back(trained: Path, tmp_path: Path) -> None:
    """The VSE∞ authors' code is not a package; their checkpoint layout is what ``bench export`` writes, and the
    harness's reader of that layout (tested against it in test_vse_official.py) gives the record's ranks back."""
    from bench.adapters.registry import create_adapter

    from bench.config import EvalConfig
    from bench.evaluation.itr import Scored, evaluate

    out = tmp_path / "export"
    rc, stdout, err = _export(trained, "vse_official:contrastive:0", out)
    assert rc == 0, err
    saved = torch.load(out / "model_best.pth", weights_only=False)
    assert {"model", "opt", "epoch"} <= set(saved) and saved["opt"].precomp_enc_type == "backbone"
    assert any(k.startswith("backbone.resnet.") for k in saved["model"][0])
    assert any(k.startswith("image_encoder.") for k in saved["model"][0]) and "linear.weight" in saved["model"][1]
    body = json.loads((out / "export.json").read_text())
    assert body["frozen_backbone"] is True and "note" not in body["load"]  # the official transform is its own
    options = dict(body["options"])  # a [models.<id>] table
    adapter = create_adapter(options.pop("adapter"), options).eval()
    kept = Scored()
    evaluate(adapter, _test_split(trained), EvalConfig(bootstrap=0, batch_size=64), device=torch.device("cpu"),
             progress=False, keep=kept)  # fmt: skip
    _, ranks = _record_ranks(trained, "vse_official", "contrastive")
    np.testing.assert_array_equal(kept.queries["t2i"].ranks, ranks["t2i"])
    np.testing.assert_array_equal(kept.queries["i2t"].ranks, ranks["i2t"])


def test_a_methods_heads_read_back_through_the_harness(trained: Path, tmp_path: Path) -> None:
    """CUSA adds cross and uni heads, which no family library knows: they go to heads.safetensors, and
    ``load_heads`` puts them on the exported model so that it ranks as its record."""
    from bench.adapters.registry import create_adapter

    from bench.config import EvalConfig
    from bench.evaluation.itr import Scored, evaluate
    from bench.train.export import load_heads

    out = tmp_path / "export"
    rc, stdout, err = _export(trained, "clip:cusa:0", out)
    assert rc == 0, err
    assert (out / "heads.safetensors").is_file() and "heads" in stdout
    body = json.loads((out / "export.json").read_text())
    options = dict(body["options"])  # a [models.<id>] table
    adapter = create_adapter(options.pop("adapter"), options).eval()
    objective = load_heads(out, adapter)
    assert objective is not None and any(n.startswith(("cross", "uni")) for n, _ in objective.named_parameters())
    kept = Scored()
    evaluate(adapter, _test_split(trained), EvalConfig(bootstrap=0, batch_size=64), device=torch.device("cpu"),
             objective=objective, progress=False, keep=kept)  # fmt: skip
    _, ranks = _record_ranks(trained, "clip", "cusa")
    for d in ("i2t", "t2i"):
        np.testing.assert_array_equal(kept.queries[d].ranks, ranks[d])


def test_bad_export_requests_are_one_line(trained: Path, tmp_path: Path) -> None:
    cases = {
        "towers:contrastive:0": "no record",  # no such cell stored
        "clip:zeroshot:0": "does not train",
        "clip:contrastive": "not MODEL:METHOD:SEED",
        "clip:nosuch:0": "nosuch",
    }
    for spec, words in cases.items():
        rc, _, err = _export(trained, spec, tmp_path / "x")
        assert rc == 2 and words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (spec, err)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for out, words in ((blocker, "not a folder"), (blocker / "under", "cannot make the folder")):
        rc, _, err = _export(trained, "clip:contrastive:0", out)
        assert rc == 2 and words in err and "Traceback" not in err, err
    full = tmp_path / "full"
    (full / "x").mkdir(parents=True)
    rc, _, err = _export(trained, "clip:contrastive:0", full)
    assert rc == 2 and "not empty" in err
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        rc, _, err = _export(trained, "clip:contrastive:0", locked)
        assert rc == 2 and "not writable" in err


def test_bench_rm_removes_a_records_training(trained: Path) -> None:
    record, _ = _record_ranks(trained, "hf_clip", "contrastive")
    store = Path(record["trained_store"])
    assert (store / "training.json").is_file()
    rc, out, err = run_main(["rm", "--config", str(trained), "--models", "hf_clip", "--methods", "contrastive",
                             "--status", "any"])  # fmt: skip
    assert rc == 0, err
    assert f"and its training {store}" in out and not store.exists()
    rc, _, err = _export(trained, "hf_clip:contrastive:0", trained.parent / "gone")
    assert rc == 2 and "no record" in err
