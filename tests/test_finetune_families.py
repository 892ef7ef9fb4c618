"""Fine-tuning the whole-model families end to end on tiny random models, through the harness's own loop
(:func:`bench.train.fit.fit`) and evaluation: SigLIP with its sigmoid base loss under ``[train] loss = "auto"``
(open_clip
and transformers), and the CUSA methods on BLIP's ITC path with tiny random teachers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from bench.adapters.registry import create_adapter
from PIL import Image

from bench.config import EvalConfig, TeachersConfig, TrainConfig
from bench.data.base import RetrievalSplit
from bench.evaluation.itr import evaluate
from bench.methods import get_method
from bench.train.fit import fit

pytestmark = pytest.mark.usefixtures("single_thread")

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# A tiny open_clip SigLIP (CustomTextCLIP with init_logit_bias, bidirectional text tower pooled at the last token).
# Its name must not contain "siglip": open_clip would then ask the hub for SigLIP's sentencepiece tokenizer.
TINY_SIGLIP_CONFIG = FIXTURES / "tiny_sig_clip.json"
TINY_TIMM = "test_byobnet"
WORDS = "dog cat man woman horse bike car street grass window red blue green sits runs rides near under".split()
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> RetrievalSplit:
    """Six random images with two captions of random words each."""
    folder = tmp_path_factory.mktemp("finetune_split")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        paths.append(folder / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (36 + 4 * i, 40, 3), dtype=np.uint8)).save(paths[-1])
    captions = [" ".join(["a", *rng.choice(WORDS, size=rng.integers(3, 7))]) for _ in range(12)]
    return RetrievalSplit(dataset="tiny", split="train", image_paths=paths, image_ids=[p.stem for p in paths],
                          captions=captions, caption_to_image=np.repeat(np.arange(6), 2))  # fmt: skip


def _cfg(**overrides: Any) -> TrainConfig:
    base = dict(epochs=3, batch_size=6, lr=1e-3, warmup_epochs=0.0, device="cpu", freeze_backbone=False, loss="auto")
    return TrainConfig(**{**base, **overrides})


def _fit(adapter: Any, objective: Any, split: RetrievalSplit, cfg: TrainConfig) -> Any:
    return fit(adapter, objective, split, cfg, device=CPU, seed=0, freeze_backbone=False, train_features=None,
               validate=lambda: 0.0, progress=False)  # fmt: skip


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if not torch.equal(before[n], p.detach())}


# ---------------------------------------------------------------------------------------------------------------
# SigLIP: loss = "auto" is the sigmoid loss, from the model's own scale and bias


def test_open_clip_siglip_fine_tunes_with_the_sigmoid_loss(split: RetrievalSplit) -> None:
    torch.manual_seed(0)
    adapter = create_adapter(
        "clip", {"checkpoint": TINY_SIGLIP_CONFIG.stem, "pretrained": "random", "model_config": str(TINY_SIGLIP_CONFIG)}
    )
    model = adapter.backbone
    assert type(model).__name__ == "CustomTextCLIP" and model.logit_bias is not None
    assert adapter.default_loss == "sigmoid"
    objective = get_method("contrastive").objective(adapter, _cfg())
    assert objective.base_loss == "sigmoid" and objective.sigmoid is not None
    # The objective starts from the model's own calibration (open_clip's SigLIP init: bias -10).
    assert objective.sigmoid.logit_scale.item() == pytest.approx(float(model.logit_scale.detach()))
    assert objective.sigmoid.logit_bias.item() == pytest.approx(-10.0)

    before, before_obj = _snapshot(adapter), _snapshot(objective)
    result = _fit(adapter, objective, split, _cfg(epochs=4))
    losses = [row["contrastive_loss"] for row in result.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses
    assert {"logit_scale", "logit_bias"} <= set(result.history[0])  # logged each epoch
    changed = _changed(before, adapter)
    assert any(n.startswith("backbone.visual.") for n in changed) and any(
        n.startswith("backbone.text.") for n in changed
    )
    assert {"sigmoid.logit_scale", "sigmoid.logit_bias"} <= _changed(before_obj, objective)
    assert objective.describe()["contrastive_term"] == "sigmoid"


def test_open_clip_siglip_embeddings_equal_open_clip(rgb_images: list) -> None:
    import open_clip

    adapter = create_adapter(
        "clip", {"checkpoint": TINY_SIGLIP_CONFIG.stem, "pretrained": "random", "model_config": str(TINY_SIGLIP_CONFIG)}
    ).eval()
    ref = open_clip.create_model(TINY_SIGLIP_CONFIG.stem).eval()
    ref.load_state_dict(adapter.backbone.state_dict())
    x = torch.stack([adapter.image_transform()(im) for im in rgb_images])
    captions = ["a dog runs on the grass", "two cats sit in a window"]
    with torch.no_grad():
        torch.testing.assert_close(adapter.encode_image(x), ref.encode_image(x), rtol=0, atol=1e-6)
        want = ref.encode_text(open_clip.get_tokenizer(TINY_SIGLIP_CONFIG.stem)(captions))
        torch.testing.assert_close(adapter.encode_text(adapter.tokenize(captions)), want, rtol=0, atol=1e-6)
    assert adapter.embed_dim == 32  # CustomTextCLIP keeps its projection in the text tower


def test_open_clip_tokenizer_offline_is_unavailable_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """SigLIP tokenizers come from the hub even when the weights are a local file: offline, that is a row that says
    why, not a crash."""
    import open_clip

    from bench.errors import WeightsUnavailableError

    def offline(name: str, **kwargs: Any) -> Any:
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(open_clip, "get_tokenizer", offline)
    with pytest.raises(WeightsUnavailableError, match="tokenizer"):
        create_adapter("clip", {"checkpoint": TINY_SIGLIP_CONFIG.stem, "pretrained": "random",
                                "model_config": str(TINY_SIGLIP_CONFIG)})  # fmt: skip


def test_open_clip_clip_keeps_infonce_under_auto() -> None:
    config = FIXTURES / "tiny_clip.json"
    adapter = create_adapter("clip", {"checkpoint": config.stem, "pretrained": "random", "model_config": str(config)})
    assert getattr(adapter.backbone, "logit_bias", None) is None and adapter.default_loss == "infonce"
    assert get_method("contrastive").objective(adapter, _cfg()).base_loss == "infonce"


def test_hf_siglip_picks_the_sigmoid_loss(tiny_siglip_folder: Path, tiny_hf_clip_folder: Path) -> None:
    siglip = create_adapter("hf_clip", {"checkpoint": str(tiny_siglip_folder)})
    model = siglip.backbone
    assert type(model).__name__ == "SiglipModel" and siglip.default_loss == "sigmoid"
    with torch.no_grad():  # a checkpoint's own calibration, as a trained SigLIP has (random init is 0 and 0)
        model.logit_scale.fill_(math.log(117.0))
        model.logit_bias.fill_(-12.9)
    reloaded = type(siglip)(model, siglip._processor, siglip._key, siglip.max_length)
    objective = get_method("cusa").objective(reloaded, _cfg())
    assert objective.base_loss == "sigmoid"
    assert objective.sigmoid.logit_scale.exp().item() == pytest.approx(117.0, rel=1e-5)
    assert objective.sigmoid.logit_bias.item() == pytest.approx(-12.9)
    clip = create_adapter("hf_clip", {"checkpoint": str(tiny_hf_clip_folder)})
    assert clip.default_loss == "infonce" and get_method("cusa").objective(clip, _cfg()).base_loss == "infonce"


# ---------------------------------------------------------------------------------------------------------------
# CUSA on BLIP's ITC path


@pytest.mark.parametrize("method", ["csa", "usa", "cusa"])
def test_cusa_methods_train_blip_itc_path(
    method: str, split: RetrievalSplit, tiny_blip_folder: Path, tiny_text_folder: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    adapter = create_adapter("blip", {"checkpoint": str(tiny_blip_folder)})
    teachers = TeachersConfig(image_model=TINY_TIMM, image_weights="random", text_model=str(tiny_text_folder))
    objective = get_method(method).objective(adapter, _cfg(), teachers=teachers)
    assert objective.base_loss == "infonce" and objective.needs_teachers
    objective.prepare(split, work_dir=tmp_path, device=CPU, stage1_cache=None, progress=False)
    itm_parts = [adapter.backbone.itm_head] + [
        layer.crossattention for layer in adapter.backbone.text_encoder.encoder.layer
    ]
    before, before_obj = _snapshot(adapter), _snapshot(objective)
    result = _fit(adapter, objective, split, _cfg())
    terms = {"csa": ["csa_loss"], "usa": ["usa_loss"], "cusa": ["csa_loss", "usa_loss"]}[method]
    for row in result.history:
        for key in ["contrastive_loss", *terms]:
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)
    changed = _changed(before, adapter)
    for part in ("backbone.vision_model.", "backbone.vision_proj.", "backbone.text_encoder.", "backbone.text_proj."):
        assert any(n.startswith(part) for n in changed), f"{part} did not train"
    # The ITM parts are frozen: re-ranking reads them, and the ITC objective gives them no gradient.
    itm_names = {n for n, p in adapter.named_parameters() if any(p is q for m in itm_parts for q in m.parameters())}
    assert itm_names and not (changed & itm_names)
    heads = "cross." if method == "csa" else "uni."
    assert any(n.startswith(heads) for n in _changed(before_obj, objective))

    adapter.eval()
    metrics = evaluate(adapter, split, EvalConfig(batch_size=4), device=CPU, objective=objective, progress=False)
    assert 0 <= metrics["i2t"]["r1"] <= 100 and 0 <= metrics["t2i"]["r1"] <= 100
    assert metrics["rsum"] is not None and math.isfinite(metrics["rsum"])


# ---------------------------------------------------------------------------------------------------------------
# A frozen whole-model adapter trains only what the method adds (CUSA's cross heads); without heads it refuses.


def test_frozen_clip_trains_the_method_heads_and_refuses_when_there_are_none(
    split: RetrievalSplit, build_tiny: Any
) -> None:
    from bench.encode.cache import cached_features
    from bench.errors import ConfigError

    adapter = build_tiny("clip")
    feats = cached_features(adapter, split, None, device=CPU, progress=False)
    before = _snapshot(adapter)
    cfg = _cfg(freeze_backbone=True, loss="infonce")
    objective = get_method("contrastive").objective(adapter, cfg, cross_heads=True, head_init="normal")
    heads = _snapshot(objective)
    fit(adapter, objective, split, cfg, device=CPU, seed=0, freeze_backbone=True, train_features=feats,
        validate=lambda: 0.0, progress=False)  # fmt: skip
    assert not _changed(before, adapter)  # the frozen CLIP is untouched
    assert {n for n in _changed(heads, objective) if n.startswith("cross.")}  # the cross heads learned

    bare = get_method("contrastive").objective(adapter, cfg, cross_heads=False)
    for p in bare.parameters():
        p.requires_grad_(False)  # no heads and a fixed temperature: nothing at all to train
    with pytest.raises(ConfigError, match="nothing to train"):
        fit(adapter, bare, split, cfg, device=CPU, seed=0, freeze_backbone=True, train_features=feats,
            validate=lambda: 0.0, progress=False)  # fmt: skip
