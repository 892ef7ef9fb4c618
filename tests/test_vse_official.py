"""VSE∞ official checkpoints: a tiny random ``vse_infty`` model saved in woodfrog/vse_infty's layout (the module tree
of its ``EncoderImageFull`` / ``EncoderText``, wrapped in ``nn.DataParallel`` as its ``train.py`` does, and an
``argparse.Namespace`` of options) loads back through the adapter and gives the same embeddings; options and keys that
do not map raise errors that name them."""

from __future__ import annotations

import argparse
import fractions
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from bench.adapters.registry import create_adapter
from bench.adapters.vse_official import BACKBONE_SOURCES, official_options, read_official
from texts import CAPTIONS
from torch import nn

from bench.errors import ConfigError, WeightsUnavailableError

pytestmark = pytest.mark.usefixtures("single_thread")

TINY_RESNET = "test_resnet"  # a timm ResNet: torchvision's module names (conv1, bn1, layer1..4, fc), like ResNeXt-101
# train.py's options of a WSL grid run (arguments.py defaults plus train_grid.sh's flags), at tiny sizes.
OPT = dict(data_path="/tmp/data/coco", data_name="coco", margin=0.2, num_epochs=25, batch_size=128, word_dim=300,
           embed_size=24, grad_clip=2.0, learning_rate=5e-4, lr_update=15, optim="adam", workers=20, log_step=200,
           val_step=500, logger_name="runs/coco/log", model_name="runs/coco", resume="", max_violation=True,
           img_dim=96, no_imgnorm=False, no_txtnorm=False, precomp_enc_type="backbone", backbone_path="",
           backbone_source="wsl", vse_mean_warmup_epochs=1, reset_start_epoch=False, backbone_warmup_epochs=0,
           embedding_warmup_epochs=1, backbone_lr_factor=0.01, input_scale_factor=0.25, drop=True,
           vocab_size=30522)  # fmt: skip


class ResnetFeatureExtractor(nn.Module):
    """``lib/modules/resnet.py``'s module tree: the whole torchvision-style ResNet (with its ImageNet ``fc``) as
    ``resnet``, and ``base`` / ``top`` Sequentials over the same stem and stages."""

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.resnet = resnet
        self.base = nn.Sequential(resnet.conv1, resnet.bn1, resnet.act1, resnet.maxpool, resnet.layer1,
                                  resnet.layer2, resnet.layer3)  # fmt: skip
        self.top = nn.Sequential(resnet.layer4)


class EncoderImageAggr(nn.Module):
    """``lib/encoders.py``: ``fc`` and ``gpool`` (no ``mlp`` when precomp_enc_type is 'backbone')."""

    def __init__(self, fc: nn.Module, gpool: nn.Module) -> None:
        super().__init__()
        self.fc, self.gpool = fc, gpool


class EncoderImageFull(nn.Module):
    def __init__(self, backbone: nn.Module, image_encoder: nn.Module) -> None:
        super().__init__()
        self.backbone, self.image_encoder = backbone, image_encoder


class EncoderText(nn.Module):
    def __init__(self, bert: nn.Module, linear: nn.Module, gpool: nn.Module) -> None:
        super().__init__()
        self.bert, self.linear, self.gpool = bert, linear, gpool


def _official_encoders(adapter: Any) -> tuple[nn.Module, nn.Module]:
    """The official img_enc / txt_enc module trees holding ``adapter``'s weights."""
    import timm

    resnet = timm.create_model(TINY_RESNET, pretrained=False)  # with its classifier, as torch.hub's ResNeXt
    missing, unexpected = resnet.load_state_dict(adapter.backbone["image"].model.state_dict(), strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected
    head_i, head_t = adapter.head["image"], adapter.head["text"]
    img_enc = EncoderImageFull(ResnetFeatureExtractor(resnet), EncoderImageAggr(head_i.fc, head_i.gpool))
    txt_enc = EncoderText(adapter.backbone["text"].model, head_t.linear, head_t.gpool)
    return img_enc, txt_enc


def _save_official(adapter: Any, path: Path, *, data_parallel: bool = True, **opt: Any) -> Path:
    """``train.py``'s ``save_checkpoint`` of ``adapter``'s weights (grid runs wrap both encoders in DataParallel)."""
    img_enc, txt_enc = _official_encoders(adapter)
    if data_parallel:
        img_enc, txt_enc = nn.DataParallel(img_enc), nn.DataParallel(txt_enc)
    state = {"epoch": 12, "model": [img_enc.state_dict(), txt_enc.state_dict()], "best_rsum": 512.5,
             "opt": argparse.Namespace(**{**OPT, **opt}), "Eiters": 4242}  # fmt: skip
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def source(build_tiny: Callable[..., Any]) -> Any:
    """A tiny random grid model (timm ResNet + tiny BERT) with non-trivial BatchNorm statistics."""
    adapter = build_tiny("vse_infty", image_backbone=TINY_RESNET, image_mlp=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, buf in adapter.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
        for p in adapter.parameters():  # timm zero-initialises the last BN of each block: make every path count
            p.add_(1e-2 * torch.randn(p.shape, generator=g))
    return adapter


def _load(path: Path, tiny_text_folder: Path, **options: Any) -> Any:
    opts = {"checkpoint": str(path), "image_backbone": TINY_RESNET, "text_backbone": str(tiny_text_folder), **options}
    torch.manual_seed(123)  # a different random init underneath, all overwritten by the checkpoint
    return create_adapter("vse_infty", opts)


@pytest.mark.parametrize("data_parallel", [True, False], ids=["module-prefix", "plain"])
def test_official_checkpoint_gives_the_same_embeddings(
    data_parallel: bool, source: Any, tiny_text_folder: Path, tmp_path: Path, rgb_images: list
) -> None:
    path = _save_official(source, tmp_path / "model_best.pth", data_parallel=data_parallel)
    saved = torch.load(path, weights_only=False)["model"]
    prefix = "module." if data_parallel else ""
    for key in ("backbone.resnet.conv1.0.weight", "backbone.resnet.fc.weight", "backbone.base.1.running_var",
                "backbone.top.0.0.conv1.weight", "image_encoder.fc.weight", "image_encoder.gpool.gru.weight_ih_l0",
                "image_encoder.gpool.linear.weight"):  # fmt: skip
        assert prefix + key in saved[0], key
    for key in ("bert.embeddings.word_embeddings.weight", "bert.pooler.dense.weight", "linear.weight",
                "gpool.gru.weight_hh_l0_reverse"):  # fmt: skip
        assert prefix + key in saved[1], key

    loaded = _load(path, tiny_text_folder)
    assert loaded.embed_dim == OPT["embed_size"] and loaded.head["image"].mlp is None
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.stack([source.image_transform()(im) for im in rgb_images])
    tokens = source.tokenize(CAPTIONS)
    assert all(torch.equal(v, loaded.tokenize(CAPTIONS)[k]) for k, v in tokens.items())
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(x), source.encode_image(x), rtol=0, atol=0)
        torch.testing.assert_close(loaded.encode_text(tokens), source.encode_text(tokens), rtol=0, atol=0)
    assert loaded.official == {"checkpoint": str(path), "epoch": 12, "best_rsum": 512.5, "Eiters": 4242,
                               "backbone_source": "wsl"}  # fmt: skip
    # The stage-1 cache never confuses these towers with the random or pretrained ones of the same names.
    assert str(path) in loaded.modality_key("image") and str(path) in loaded.modality_key("text")
    assert loaded.modality_key("image") != source.modality_key("image")


def test_official_eval_transform_is_a_square_resize(source: Any, tiny_text_folder: Path, tmp_path: Path) -> None:
    """image_caption.py at eval: resize to 256·input_scale_factor on both sides (no crop), ImageNet mean/std."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    loaded = _load(_save_official(source, tmp_path / "m.pth", input_scale_factor=0.5), tiny_text_folder)
    image = Image.new("RGB", (90, 40), (200, 30, 60))
    got = loaded.image_transform()(image)
    want = TF.normalize(TF.to_tensor(image.resize((128, 128), Image.BILINEAR)), (0.485, 0.456, 0.406),
                        (0.229, 0.224, 0.225))  # fmt: skip
    assert got.shape == (3, 128, 128)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_checkpoint_loads_weights_only(source: Any, tmp_path: Path) -> None:
    """The Namespace is the only non-tensor object: it loads with weights_only=True once that class is allowed."""
    path = _save_official(source, tmp_path / "m.pth")
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path, weights_only=True)
    ckpt = read_official(path)
    assert ckpt.opt["backbone_source"] == "wsl" and ckpt.meta["epoch"] == 12
    assert not any(k.startswith("module.") for k in ckpt.image)


def test_other_pickled_objects_need_allow_pickle(source: Any, tiny_text_folder: Path, tmp_path: Path) -> None:
    path = _save_official(source, tmp_path / "m.pth")
    state = torch.load(path, weights_only=False)
    state["opt"].learning_rate = fractions.Fraction(1, 2000)  # not a type weights_only loading accepts
    torch.save(state, path)
    with pytest.raises(ConfigError, match="allow_pickle"):
        _load(path, tiny_text_folder)
    assert _load(path, tiny_text_folder, allow_pickle=True).embed_dim == OPT["embed_size"]


def test_options_that_do_not_map_are_named(source: Any, tiny_text_folder: Path, tmp_path: Path) -> None:
    cases = [
        ({"precomp_enc_type": "basic"}, {}, "precomp_enc_type = 'basic'"),
        ({"no_imgnorm": True}, {}, "no_imgnorm"),
        ({"img_dim": 2048}, {}, "img_dim = 2048"),
        ({}, {"embed_dim": 32}, "embed_size = 24"),
        ({}, {"image_mlp": True}, "image_mlp"),
        ({}, {"image_weights": "random"}, "image_weights"),
        ({"backbone_source": "detector"}, {"image_backbone": None}, "backbone_source = 'detector'"),
        ({"backbone_source": "mystery"}, {"image_backbone": None}, "backbone_source = 'mystery'"),
    ]
    for i, (opt, options, match) in enumerate(cases):
        path = _save_official(source, tmp_path / f"m{i}.pth", **opt)
        with pytest.raises(ConfigError, match=match):
            _load(path, tiny_text_folder, **options)


def test_backbone_source_maps_to_timm() -> None:
    where = "ckpt"
    for src, name in BACKBONE_SOURCES.items():
        opts = official_options({**OPT, "backbone_source": src}, image_backbone=None, embed_dim=None, image_mlp=None,
                                where=where)  # fmt: skip
        assert opts["image_backbone"] == name and opts["embed_dim"] == 24 and opts["image_size"] == 64
    assert BACKBONE_SOURCES["wsl"] == "resnext101_32x8d.fb_wsl_ig1b_ft_in1k"
    opts = official_options(
        {"input_scale_factor": 2.0}, image_backbone="x", embed_dim=None, image_mlp=None, where=where
    )
    assert opts["image_size"] == 512 and opts["embed_dim"] == 1024  # the paper's 512 px grids; default embed_size


def test_keys_that_do_not_map_are_named(source: Any, tiny_text_folder: Path, tmp_path: Path) -> None:
    path = _save_official(source, tmp_path / "m.pth")
    base = torch.load(path, weights_only=False)

    def variant(name: str, edit: Callable[[list[dict]], None]) -> Path:
        state = torch.load(path, weights_only=False)
        edit(state["model"])
        torch.save(state, tmp_path / name)
        return tmp_path / name

    missing = variant("missing.pth", lambda m: m[1].pop("module.linear.weight"))
    with pytest.raises(ConfigError, match=r"head\.text\.linear\.weight"):
        _load(missing, tiny_text_folder)
    extra = variant("extra.pth", lambda m: m[1].__setitem__("module.cap_head.weight", torch.zeros(2)))
    with pytest.raises(ConfigError, match="'cap_head.weight'"):
        _load(extra, tiny_text_folder)

    def zero_alias(m: list[dict]) -> None:
        key = "module.backbone.top.0.0.conv1.weight"
        m[0][key] = torch.zeros_like(m[0][key])

    alias = variant("alias.pth", zero_alias)
    with pytest.raises(ConfigError, match=r"backbone\.top\.0\.0\.conv1\.weight differs"):
        _load(alias, tiny_text_folder)
    shape = variant("shape.pth", lambda m: m[0].__setitem__("module.image_encoder.fc.bias", torch.zeros(7)))
    with pytest.raises(ConfigError, match=r"img_enc\.image_encoder\.fc\.bias has shape \(7,\)"):
        _load(shape, tiny_text_folder)
    assert base["model"][0]  # the untouched file still loads
    assert _load(path, tiny_text_folder).embed_dim == 24


def test_checkpoint_file_errors(tmp_path: Path, tiny_text_folder: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="not found"):
        _load(tmp_path / "nope.pth", tiny_text_folder)
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="not a woodfrog/vse_infty checkpoint"):
        _load(tmp_path / "other.pth", tiny_text_folder)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="junk.pth"):
        _load(tmp_path / "junk.pth", tiny_text_folder)
