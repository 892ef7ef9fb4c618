"""The README's "Use from Python" snippet runs as written (in an empty folder, so the packaged default config
applies), and the API it shows agrees with the open_clip model it wraps and with ``bench score``."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest

import bench

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet() -> str:
    text = README.read_text()
    section = text.split("## Use from Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README: no python block under '## Use from Python'"
    return match.group(1)


def test_readme_snippet_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_snippet(), str(README), "exec"), {"__name__": "readme"})
    lines = out.getvalue().splitlines()
    i2t, t2i, rsum = (float(x) for x in lines[0].split())
    assert 0 <= i2t <= 100 and 0 <= t2i <= 100 and 0 <= rsum <= 600
    assert float(lines[1]) > 500  # the snippet's noisy embeddings are easy to retrieve
    assert any(line.startswith("| towers") for line in lines[2:])  # the table of the grid it ran
    assert (tmp_path / "results/runs/towers/synthetic/test/zeroshot-seed0.json").is_file()


def test_evaluate_wraps_an_open_clip_model_exactly(tmp_path: Path) -> None:
    import open_clip
    import torch

    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-S-32")
    model.eval()
    tokenizer = open_clip.get_tokenizer("ViT-S-32")
    split = bench.load_dataset({"format": "synthetic", "n_train": 2, "n_val": 2, "n_test": 12}, work_dir=tmp_path)
    got = bench.evaluate(model, split, transform=preprocess, tokenizer=tokenizer, device="cpu", batch_size=5)
    # The same numbers from open_clip's own encoders and the harness's scorer.
    from PIL import Image

    with torch.inference_mode():
        img = model.encode_image(torch.stack([preprocess(Image.open(p)) for p in split.image_paths]))
        txt = model.encode_text(tokenizer(list(split.captions)))
    want = bench.score(img.numpy(), txt.numpy(), split.caption_to_image, image_labels=split.image_labels)
    for direction in ("i2t", "t2i", "t2t", "i2i"):
        for k in ("r1", "r5", "r10"):
            assert got[direction][k] == pytest.approx(want[direction][k], abs=1e-9), (direction, k)


def test_devices_are_strings_and_bad_ones_are_one_clear_error() -> None:
    import torch

    from bench.errors import ConfigError

    assert bench.device_of("cpu") == torch.device("cpu")
    assert bench.device_of("auto").type in ("cpu", "cuda")
    with pytest.raises(ConfigError, match="device 'tpu:9'"):
        bench.device_of("tpu:9")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            bench.device_of("cuda")


def test_import_bench_is_light_and_the_api_is_lazy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, bench; assert 'torch' not in sys.modules and 'bench.api' not in sys.modules; print(bench.__all__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert done.returncode == 0, done.stderr
    assert "evaluate" in done.stdout and "score" in done.stdout
    assert callable(bench.evaluate) and callable(bench.register_adapter)
    from bench import api

    types = {"Adapter", "AdapterBase", "BenchConfig", "Method", "Objective", "ResultRecord", "RetrievalSplit"}
    assert set(bench.__all__) - {"__version__"} == set(api.__all__) | types  # the lazy table: the whole API + types
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        bench.nope  # noqa: B018


def test_score_equals_the_cli_contract(tmp_path: Path) -> None:
    from tiny_grid import run_main

    rng = np.random.default_rng(1)
    img = rng.normal(size=(30, 8)).astype(np.float32)
    c2i = np.repeat(np.arange(30), 3)
    txt = img[c2i] + rng.normal(size=(90, 8)).astype(np.float32)
    for name, arr in (("I", img), ("T", txt), ("M", c2i)):
        np.save(tmp_path / f"{name}.npy", arr)
    rc, out, _ = run_main(["score", "--image-emb", str(tmp_path / "I.npy"), "--text-emb", str(tmp_path / "T.npy"),
                           "--text-to-image", str(tmp_path / "M.npy"), "--json"])  # fmt: skip
    import json

    cli = json.loads(out)
    api = bench.score(img, txt, c2i)
    assert rc == 0 and cli["i2t"] == api["i2t"] and cli["t2i"] == api["t2i"] and cli["rsum"] == api["rsum"]


def test_evaluate_passes_a_mapping_tokenizer_as_keywords(tmp_path: Path, tiny_hf_clip_folder: Path) -> None:
    import torch
    import transformers as tf
    from PIL import Image

    model = tf.CLIPModel.from_pretrained(str(tiny_hf_clip_folder)).eval()
    processor = tf.CLIPProcessor.from_pretrained(str(tiny_hf_clip_folder))

    def features(out: object) -> torch.Tensor:  # transformers 4 returns the tensor, 5 an output with pooler_output
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    class Duck:  # a user's own wrapper: encode_text takes the tokenizer's mapping as keywords
        def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return features(model.get_image_features(pixel_values=pixel_values))

        def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: torch.Tensor) -> torch.Tensor:
            return features(model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))

    def transform(image: Image.Image) -> torch.Tensor:
        return processor.image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    def tokenizer(texts: list[str]) -> dict[str, torch.Tensor]:
        return processor.tokenizer(texts, padding="max_length", max_length=24, truncation=True, return_tensors="pt")

    split = bench.load_dataset({"format": "synthetic", "n_train": 2, "n_val": 2, "n_test": 10}, work_dir=tmp_path)
    got = bench.evaluate(Duck(), split, transform=transform, tokenizer=tokenizer, device="cpu", batch_size=4)
    with torch.inference_mode():
        img = Duck().encode_image(torch.stack([transform(Image.open(p).convert("RGB")) for p in split.image_paths]))
        txt = Duck().encode_text(**tokenizer(list(split.captions)))
    want = bench.score(img.numpy(), txt.numpy(), split.caption_to_image)
    for direction in ("i2t", "t2i", "t2t"):
        assert got[direction] == pytest.approx(want[direction], abs=1e-9), direction
