"""The Unicom image teacher: the reference's architecture and parameter layout, strict loading of a checkpoint saved
in that layout, and the reference's 49 x 768 patchflat rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from bench.adapters.unicom import UnicomViT, build_unicom_tower
from PIL import Image

from bench.errors import ConfigError, WeightsUnavailableError


def reference_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int, depth: int) -> torch.Tensor:
    """Unicom's forward_features written out from the state dict: no class token, bias-free qkv, ReLU6 MLP."""
    ln = torch.nn.functional.layer_norm
    t = torch.nn.functional.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=8)
    t = t.flatten(2).transpose(1, 2) + sd["pos_embed"]
    b, n, d = t.shape
    for i in range(depth):
        p = f"blocks.{i}."
        h = ln(t, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"])
        q, k, v = (h @ sd[p + "attn.qkv.weight"].T).reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) / (d // heads) ** 0.5, -1) @ v
        t = t + a.transpose(1, 2).reshape(b, n, d) @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        h = ln(t, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"])
        h = torch.clamp(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"], 0, 6)  # ReLU6
        t = t + h @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    return ln(t, (d,), sd["norm.weight"], sd["norm.bias"]).reshape(b, n * d)


def test_tokens_equal_the_reference_computation() -> None:
    torch.manual_seed(0)
    model = UnicomViT(size=32, patch=8, width=32, embedding=16, depth=2, heads=4).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.mlp.fc1.weight.mul_(40)  # large pre-activations: ReLU6's cap at 6 matters
        x = torch.randn(3, 3, 32, 32)
        ours = model.forward_tokens(x).flatten(1)
        want = reference_forward(model.state_dict(), x, heads=4, depth=2)
        hidden = model.blocks[0].mlp.fc1(model.blocks[0].norm2(model.patch_embed(x) + model.pos_embed))
    assert (hidden > 6).any()
    torch.testing.assert_close(ours, want, rtol=1e-5, atol=1e-5)


def test_vit_b32_layout_is_unicoms() -> None:
    sd = UnicomViT().state_dict()  # ViT-B/32: 224 px, 32 px patches, width 768, embedding 512
    assert sd["pos_embed"].shape == (1, 49, 768) and "cls_token" not in sd
    assert sd["blocks.0.attn.qkv.weight"].shape == (2304, 768) and "blocks.0.attn.qkv.bias" not in sd
    assert sd["feature.0.weight"].shape == (768, 49 * 768) and "feature.0.bias" not in sd
    assert sd["feature.3.running_var"].shape == (512,) and len([k for k in sd if k.endswith("norm1.weight")]) == 12


def test_checkpoint_in_unicoms_layout_loads_back_to_identical_features(tmp_path: Path) -> None:
    torch.manual_seed(1)
    src = UnicomViT().eval()
    path = tmp_path / "FP16-ViT-B-32.pt"
    torch.save({k: v.half() for k, v in src.state_dict().items()}, path)  # released files are fp16 state dicts
    tower = build_unicom_tower("ViT-B/32", str(path))  # weights_only=True: tensors only
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 260, 3), dtype=np.uint8))
    x = tower.transform()(img)[None]
    assert x.shape == (1, 3, 224, 224)
    with torch.no_grad():
        src_half = UnicomViT().eval()
        src_half.load_state_dict({k: v.half().float() for k, v in src.state_dict().items()})
        want = src_half.forward_tokens(x)
        grid = tower(x)["grid"]
        torch.testing.assert_close(grid, want, rtol=0, atol=0)
        assert grid.flatten(1).shape == (1, 37632)  # patchflat: 49 x 768, as the reference stores it
        assert tower.pool({"grid": grid}).shape == (1, 512)


def test_unicom_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="not on PyPI"):
        build_unicom_tower("ViT-B/32", "auto")
    with pytest.raises(ConfigError, match="unknown architecture"):
        build_unicom_tower("ViT-H/14", "random")
    bad = tmp_path / "wrong.pt"
    torch.save({"pos_embed": torch.zeros(1, 49, 768)}, bad)
    with pytest.raises(ConfigError, match="not a Unicom ViT-B/32 checkpoint"):
        build_unicom_tower("ViT-B/32", str(bad))


def test_teachers_build_unicom_by_name() -> None:
    from bench.methods.teachers import TeacherSpec, _build, _weights_fingerprint

    spec = TeacherSpec(image_model="unicom:ViT-B/32", image_weights="random", image_mode="patchflat")
    tower = _build(spec, "image")
    assert tower.cache_key().startswith("unicom:ViT-B/32:random:clip-bicubic-224")
    assert _weights_fingerprint(tower, "image").startswith("random:")
