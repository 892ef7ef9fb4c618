"""The stage-1 feature cache: reused while weights, transform and data are unchanged; never stale otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data.base import RetrievalSplit
from bench.features import cache_path, cached_features, extract_image_features

CPU = torch.device("cpu")


def _split(folder: Path, captions: list[str] | None = None) -> RetrievalSplit:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        paths.append(folder / f"img{i}.png")
        if not paths[-1].exists():
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(paths[-1])
    caps = captions or ["a red cat", "a blue dog", "green grass", "a small square"]
    return RetrievalSplit("tiny", "test", paths, [p.stem for p in paths], caps, np.arange(4))


@pytest.fixture
def adapter(build_tiny):
    return build_tiny("vse_infty")


def test_cached_rows_equal_fresh_ones_and_are_reused(adapter, tmp_path: Path) -> None:
    split = _split(tmp_path)
    first = cached_features(adapter, split, tmp_path / "cache", device=CPU, progress=False)
    path = cache_path(adapter, split, "image", tmp_path / "cache")
    stamp = path.stat().st_mtime_ns
    again = cached_features(adapter, split, tmp_path / "cache", device=CPU, progress=False)
    assert path.stat().st_mtime_ns == stamp  # read, not rewritten
    fresh = extract_image_features(adapter, split, device=CPU, progress=False)
    for k in fresh:
        torch.testing.assert_close(again[0][k], fresh[k])
        torch.testing.assert_close(first[0][k], fresh[k])


def test_changed_weights_transform_or_data_change_the_key(adapter, tmp_path: Path) -> None:
    split = _split(tmp_path)
    cache = tmp_path / "cache"
    img_key, txt_key = cache_path(adapter, split, "image", cache), cache_path(adapter, split, "text", cache)

    # a caption edit changes only the text key (cached image features stay valid)
    edited = _split(tmp_path, ["a red cat", "a blue dog", "green grass", "a LARGE square"])
    assert cache_path(adapter, edited, "image", cache) == img_key
    assert cache_path(adapter, edited, "text", cache) != txt_key

    # a replaced image file (same name, new bytes and mtime) changes the image key
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(split.image_paths[2])
    os.utime(split.image_paths[2], ns=(1, 1))
    assert cache_path(adapter, _split(tmp_path), "image", cache) != img_key

    # changed backbone weights (another checkpoint) change the key of that modality only
    split = _split(tmp_path)
    img_key = cache_path(adapter, split, "image", cache)
    with torch.no_grad():
        next(adapter.backbone_part("image").parameters()).add_(1e-3)
    assert cache_path(adapter, split, "image", cache) != img_key
    assert cache_path(adapter, split, "text", cache) == txt_key

    # a different eval transform (input size) changes the key
    img_key = cache_path(adapter, split, "image", cache)
    tower = adapter.backbone_part("image")
    tower.model.pretrained_cfg = {**tower.model.pretrained_cfg, "input_size": (3, 96, 96)}
    assert cache_path(adapter, split, "image", cache) != img_key
