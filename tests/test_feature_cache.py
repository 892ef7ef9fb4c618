"""The stage-1 feature cache: reused while weights, transform and data are unchanged; never stale otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data.base import RetrievalSplit
from bench.encode.cache import cache_path, cached_features
from bench.encode.features import encoding_precision, extract_image_features

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


def test_encoding_precision_is_part_of_the_key(adapter, tmp_path: Path) -> None:
    split = _split(tmp_path)
    cache = tmp_path / "cache"
    assert encoding_precision(CPU, "auto") == encoding_precision(CPU, "fp32") == "fp32"
    assert encoding_precision(torch.device("cuda:0"), "auto") == encoding_precision(CPU, "bf16") == "bf16"
    assert encoding_precision(torch.device("cuda:0"), "fp32") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, got 'fp16'"):
        encoding_precision(CPU, "fp16")
    for modality in ("image", "text"):
        assert cache_path(adapter, split, modality, cache, "bf16") != cache_path(adapter, split, modality, cache)
    # "auto" on CPU is fp32: the fp32 cache files, and the features of a plain fp32 extraction.
    auto = cached_features(adapter, split, cache, device=CPU, progress=False, precision="auto")
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        cache_path(adapter, split, m, cache, "fp32").name for m in ("image", "text")
    )
    fresh = extract_image_features(adapter, split, device=CPU, progress=False, precision="fp32")
    for k in fresh:
        assert torch.equal(auto[0][k], fresh[k])
    # bf16 autocast (here on CPU) is cached apart and close to fp32: same neighbourhoods, not the same bits.
    bf16 = cached_features(adapter, split, cache, device=CPU, progress=False, precision="bf16")
    assert len(list(cache.iterdir())) == 4
    for a, b in zip(auto, bf16, strict=True):
        floats = [k for k, v in a.items() if v.is_floating_point()]
        assert any(not torch.equal(a[k], b[k]) for k in floats)  # (masks are equal, activations are not)
        for k in floats:
            cos = torch.nn.functional.cosine_similarity(a[k].float().flatten(1), b[k].float().flatten(1), dim=1)
            assert cos.min() > 0.97, (k, cos)


def test_channels_last_encoding_equals_contiguous(adapter, tmp_path: Path) -> None:
    # The encode loop feeds images channels-last (1.8x faster on CPU); the features must be the contiguous ones.
    split = _split(tmp_path)
    batch = torch.stack([adapter.image_transform()(split.load_image(i)) for i in range(split.n_images)])
    with torch.inference_mode():
        want = adapter.eval().image_features(batch.contiguous())
    got = extract_image_features(adapter, split, device=CPU, progress=False)
    for k in want:
        torch.testing.assert_close(got[k].float(), want[k].float(), atol=2e-3, rtol=2e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_precision_on_cuda_is_bf16_and_close(adapter, tmp_path: Path) -> None:
    split = _split(tmp_path)
    cuda = torch.device("cuda")
    adapter.to(cuda)
    fp32 = cached_features(adapter, split, tmp_path / "cache", device=cuda, progress=False, precision="fp32")
    bf16 = cached_features(adapter, split, tmp_path / "cache", device=cuda, progress=False, precision="auto")
    assert len(list((tmp_path / "cache").iterdir())) == 4
    for a, b in zip(fp32, bf16, strict=True):
        for k, v in a.items():
            if v.is_floating_point():
                cos = torch.nn.functional.cosine_similarity(v.float().flatten(1), b[k].float().flatten(1), dim=1)
                assert cos.min() > 0.97, (k, cos)


def test_encoding_leaves_the_global_random_state_alone(adapter, tmp_path: Path) -> None:
    # Whether features are extracted (cold cache) or read (warm) must not change what the next random draw is.
    split = _split(tmp_path)
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    extract_image_features(adapter, split, device=CPU, progress=False, num_workers=0)
    assert torch.equal(torch.rand(4), expected)
