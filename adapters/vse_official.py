"""Load the VSE∞ authors' checkpoints (``woodfrog/vse_infty``, ``model_best.pth``) into the ``vse_infty`` adapter.

The official ``train.py`` saves ``{"model": [img_enc.state_dict(), txt_enc.state_dict()], "opt": argparse.Namespace,
"epoch", "best_rsum", "Eiters"}``. Grid checkpoints (``precomp_enc_type = "backbone"``) are saved after
``nn.DataParallel`` wraps both encoders, so their keys start with ``module.``; that prefix is dropped when present.

Key map (official -> ``vse_infty``; ``*`` is the rest of the key, unchanged):

* ``img_enc.backbone.resnet.*`` -> ``backbone.image.model.*`` (torchvision's ResNeXt names are timm's);
  ``img_enc.backbone.resnet.fc.*``, the ImageNet classifier, is dropped (the tower has none).
* ``img_enc.backbone.base.{0,1,4,5,6}.*`` and ``img_enc.backbone.top.0.*``: aliases of
  ``resnet.{conv1,bn1,layer1,layer2,layer3,layer4}.*`` (``ResnetFeatureExtractor`` wraps the same modules twice),
  checked equal to them and not loaded twice.
* ``img_enc.image_encoder.fc.*``, ``img_enc.image_encoder.gpool.*`` -> ``head.image.fc.*``, ``head.image.gpool.*``.
* ``txt_enc.bert.*`` -> ``backbone.text.model.*`` (a transformers ``BertModel``).
* ``txt_enc.linear.*``, ``txt_enc.gpool.*`` -> ``head.text.linear.*``, ``head.text.gpool.*``.

``opt`` fields map onto build options: ``embed_size`` -> ``embed_dim``; ``precomp_enc_type = "backbone"`` -> no
image MLP (the official MLP branch exists only for ``"basic"``); ``backbone_source`` -> the timm architecture
(:data:`BACKBONE_SOURCES`); ``img_dim`` must equal the backbone's width; ``input_scale_factor`` -> the eval transform
(the official eval resizes to a ``256·factor`` square without cropping, ImageNet mean/std, bilinear; ours resizes the
same way with PIL's antialiased bilinear, where the official code used OpenCV). Training-only fields (``margin``,
``learning_rate``, ...) are ignored. Anything that cannot be reproduced raises :class:`ConfigError` naming the field.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from bench.adapters.backbones import HFTextTower, build_timm_tower
from bench.adapters.protocol import Exported
from bench.adapters.weights import read_reference_checkpoint
from torch import nn

from bench.errors import ConfigError, WeightsUnavailableError

__all__ = [
    "BACKBONE_SOURCES", "OfficialCheckpoint", "build_from_official", "map_official_keys", "read_official",
    "write_official",
]

log = logging.getLogger(__name__)

# backbone_source -> timm architecture with the same module names and forward pass (torch.hub's torchvision ResNeXt).
BACKBONE_SOURCES = {
    "wsl": "resnext101_32x8d.fb_wsl_ig1b_ft_in1k",
    "vsepp_wsl": "resnext101_32x8d.fb_wsl_ig1b_ft_in1k",
    "imagenet_resnext": "resnext101_32x8d.tv_in1k",
    "vsepp_resnext": "resnext101_32x8d.tv_in1k",
}
# The other sources build lib/modules/resnet.py's Caffe-style ResNet (stride in the 1x1 conv, unpadded ceil-mode
# max-pool), which no timm model reproduces.
_CAFFE_SOURCES = ("detector", "vsepp_detector", "imagenet", "vsepp_imagenet", "imagenet_res50", "vsepp_imagenet_res50",
                  "imagenet_res152", "vsepp_imagenet_res152")  # fmt: skip
OFFICIAL_TEXT = "google-bert/bert-base-uncased"  # EncoderText hard-codes BertModel.from_pretrained('bert-base-uncased')
_BASE_ALIASES = {"base.0.": "conv1.", "base.1.": "bn1.", "base.4.": "layer1.", "base.5.": "layer2.",
                 "base.6.": "layer3.", "top.0.": "layer4."}  # fmt: skip
_IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


@dataclass
class OfficialCheckpoint:
    """The parts of an official checkpoint file that loading reads."""

    path: Path
    image: dict[str, torch.Tensor]  # img_enc state dict, ``module.`` dropped
    text: dict[str, torch.Tensor]  # txt_enc state dict, ``module.`` dropped
    opt: dict[str, Any] = field(default_factory=dict)  # the training options (argparse Namespace as a dict)
    meta: dict[str, Any] = field(default_factory=dict)  # epoch, best_rsum, Eiters


def read_official(path: str | Path, allow_pickle: bool = False) -> OfficialCheckpoint:
    """Read ``model_best.pth``. It pickles an ``argparse.Namespace`` (``opt``), so it loads with
    ``weights_only=True`` and that one class allowed; anything else pickled needs ``allow_pickle``.

    Raises:
        WeightsUnavailableError: the file does not exist.
        ConfigError: not the official layout, or other pickled objects without ``allow_pickle``.
    """
    ckpt = read_reference_checkpoint(path, parts=("img_enc", "txt_enc"), family="VSE∞", repo="woodfrog/vse_infty",
                                     allow_pickle=allow_pickle)  # fmt: skip
    return OfficialCheckpoint(ckpt.path, ckpt.parts[0], ckpt.parts[1], ckpt.opt, ckpt.meta)


def official_options(
    opt: dict[str, Any], *, image_backbone: str | None, embed_dim: int | None, image_mlp: bool | None, where: str
) -> dict[str, Any]:
    """Our build options from the official ``opt`` (explicit options win where they may, and must agree otherwise).

    Returns:
        ``image_backbone``, ``embed_dim`` and ``image_size`` (the eval transform's square side, or None).
    """
    enc = opt.get("precomp_enc_type", "backbone")
    if enc == "basic":
        raise ConfigError(
            f"{where}: precomp_enc_type = 'basic': its image encoder reads precomputed BUTD region features "
            f"(img_dim {opt.get('img_dim', 2048)}), which vse_infty does not compute (it encodes pixels with an image "
            "backbone); use a grid checkpoint (precomp_enc_type = 'backbone', e.g. the authors' WSL grid models)"
        )
    if enc != "backbone":
        raise ConfigError(f"{where}: precomp_enc_type = {enc!r} is not an official encoder type (basic, backbone)")
    if image_mlp:
        raise ConfigError(f"{where}: image_mlp = true, but precomp_enc_type = 'backbone' has no MLP branch")
    for key in ("no_imgnorm", "no_txtnorm"):
        if opt.get(key):
            raise ConfigError(
                f"{where}: {key} = True: the checkpoint scored unnormalised inner products, the harness scores cosines"
            )
    source = opt.get("backbone_source")
    if image_backbone is None:
        if source in _CAFFE_SOURCES:
            raise ConfigError(
                f"{where}: backbone_source = {source!r} builds the official Caffe-style ResNet (stride in the 1x1 "
                "conv, unpadded max-pool), which no timm model reproduces; supported: "
                f"{', '.join(BACKBONE_SOURCES)}"
            )
        if source not in BACKBONE_SOURCES:
            raise ConfigError(f"{where}: backbone_source = {source!r}: supported: {', '.join(BACKBONE_SOURCES)}")
        image_backbone = BACKBONE_SOURCES[source]
    else:
        log.info("%s: image_backbone %s given; the checkpoint's backbone_source is %r", where, image_backbone, source)
    size = opt.get("embed_size")
    if size is not None and embed_dim is not None and int(size) != int(embed_dim):
        raise ConfigError(f"{where}: embed_size = {size} in the checkpoint, but embed_dim = {embed_dim} was given")
    factor = opt.get("input_scale_factor", 1)
    return {
        "image_backbone": image_backbone,
        "embed_dim": int(size if size is not None else embed_dim or 1024),
        "image_size": int(256 * float(factor)),  # image_caption.py: base_target_size 256, times input_scale_factor
    }


def map_official_keys(ckpt: OfficialCheckpoint) -> dict[str, tuple[str, torch.Tensor]]:
    """``{vse_infty key: (official key, tensor)}`` by the table of this module.

    Raises:
        ConfigError: a key has no counterpart, or a ``base``/``top`` alias differs from its ``resnet`` tensor.
    """
    out: dict[str, tuple[str, torch.Tensor]] = {}
    aliases = []
    for key, value in ckpt.image.items():
        if key.startswith("backbone.resnet."):
            rest = key[len("backbone.resnet.") :]
            if not rest.startswith("fc."):  # the ImageNet classifier: our backbone has none
                out[f"backbone.image.model.{rest}"] = (f"img_enc.{key}", value)
        elif key.startswith(("backbone.base.", "backbone.top.")):
            aliases.append((key, value))
        elif key.startswith("image_encoder."):
            out[f"head.image.{key[len('image_encoder.') :]}"] = (f"img_enc.{key}", value)
        else:
            raise ConfigError(f"{ckpt.path}: img_enc key {key!r} has no counterpart in vse_infty")
    for key, value in aliases:
        rest = key[len("backbone.") :]
        prefix = next((p for p in _BASE_ALIASES if rest.startswith(p)), None)
        if prefix is None:
            raise ConfigError(f"{ckpt.path}: img_enc key {key!r} has no counterpart in vse_infty")
        ours = f"backbone.image.model.{_BASE_ALIASES[prefix]}{rest[len(prefix) :]}"
        if ours not in out:
            out[ours] = (f"img_enc.{key}", value)
        elif not torch.equal(out[ours][1], value):
            raise ConfigError(f"{ckpt.path}: img_enc.{key} differs from {out[ours][0]}, which it aliases")
    for key, value in ckpt.text.items():
        if key.startswith("bert."):
            out[f"backbone.text.model.{key[len('bert.') :]}"] = (f"txt_enc.{key}", value)
        elif key.startswith(("linear.", "gpool.")):
            out[f"head.text.{key}"] = (f"txt_enc.{key}", value)
        else:
            raise ConfigError(f"{ckpt.path}: txt_enc key {key!r} has no counterpart in vse_infty")
    return out


def _load(adapter: nn.Module, mapped: dict[str, tuple[str, torch.Tensor]], path: Path) -> None:
    ours = adapter.state_dict()
    # Non-persistent buffers (BERT's position_ids in some transformers versions) may be saved; they are derived.
    derived = {n for n, _ in adapter.named_buffers()} - set(ours)
    for key, (name, value) in mapped.items():
        if key in derived:
            continue
        if key not in ours:
            raise ConfigError(f"{path}: {name} has no counterpart in this vse_infty model (mapped to {key!r})")
        if tuple(value.shape) != tuple(ours[key].shape):
            raise ConfigError(
                f"{path}: {name} has shape {tuple(value.shape)}, vse_infty's {key} {tuple(ours[key].shape)} "
                "(check embed_dim and the image/text backbones against the checkpoint)"
            )
    missing = [k for k in ours if k not in mapped and not k.endswith("num_batches_tracked")]
    if missing:
        raise ConfigError(f"{path}: no weights for vse_infty's {missing[0]!r} ({len(missing)} missing)")
    adapter.load_state_dict({k: v for k, (_, v) in mapped.items() if k in ours}, strict=False)


def _text_tower(name: str, max_length: int | None) -> HFTextTower:
    """The text encoder's architecture and tokenizer (no weights: the checkpoint holds them)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    folder = Path(name).expanduser()
    source = str(folder) if folder.is_dir() else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        config = AutoConfig.from_pretrained(source)
    except Exception as e:  # offline hub access and broken folders fail with many exception types
        if folder.is_dir():
            raise ConfigError(f"{folder}: no text encoder config or tokenizer ({type(e).__name__})") from None
        raise WeightsUnavailableError(
            f"weights unavailable: {name} tokenizer and config ({type(e).__name__}); the hub needs network or a "
            "cached copy, or pass text_backbone = a local folder holding config.json and the tokenizer files"
        ) from None
    return HFTextTower(AutoModel.from_config(config).eval(), tokenizer, name, int(max_length or 128))


def build_from_official(
    cls: type, checkpoint: str, *, image_backbone: str | None, image_weights: str, text_backbone: str | None,
    text_weights: str, max_length: int | None, embed_dim: int | None, image_mlp: bool | None, allow_pickle: bool,
) -> Any:  # fmt: skip
    """A ``cls`` (:class:`bench.adapters.vse_infty.VSEInfty`) holding an official checkpoint's weights."""
    where = f"vse_infty checkpoint {checkpoint}"
    for key, value in (("image_weights", image_weights), ("text_weights", text_weights)):
        if value != "auto":
            raise ConfigError(f"{where}: {key} = {value!r}, but the checkpoint holds those weights; leave it unset")
    ckpt = read_official(checkpoint, allow_pickle)
    # Checkpoints without opt: grid models have an image_encoder inside img_enc, region models do not.
    layout = "backbone" if any(k.startswith("image_encoder.") for k in ckpt.image) else "basic"
    opts = official_options({"precomp_enc_type": layout, **ckpt.opt}, image_backbone=image_backbone,
                            embed_dim=embed_dim, image_mlp=image_mlp, where=where)  # fmt: skip
    image = build_timm_tower(opts["image_backbone"], "random")
    img_dim = ckpt.opt.get("img_dim")
    if img_dim is not None and int(img_dim) != image.num_features:
        raise ConfigError(f"{where}: img_dim = {img_dim}, but {opts['image_backbone']} gives {image.num_features}")
    size = opts["image_size"]
    image.model.pretrained_cfg = {**image.model.pretrained_cfg, **_IMAGENET, "input_size": (3, size, size),
                                  "crop_pct": 1.0, "crop_mode": "squash", "interpolation": "bilinear"}  # fmt: skip
    text = _text_tower(text_backbone or OFFICIAL_TEXT, max_length)
    adapter = cls(image, text, opts["embed_dim"], False)
    _load(adapter, map_official_keys(ckpt), ckpt.path)
    # The stage-1 cache keys name the checkpoint: these towers hold fine-tuned weights, not the named pretrained ones.
    image.weights = str(ckpt.path)
    text.name = f"{text.name}@{ckpt.path}"
    adapter.official = {"checkpoint": str(ckpt.path), **ckpt.meta, "backbone_source": ckpt.opt.get("backbone_source")}
    return adapter.eval()


# Our key prefixes -> the official ones: the inverse of map_official_keys (no base/top aliases are written; the official
# ResnetFeatureExtractor re-derives them when it wraps the ResNet).
_TO_OFFICIAL = (("backbone.image.model.", "img_enc", "backbone.resnet."), ("head.image.", "img_enc", "image_encoder."),
                ("backbone.text.model.", "txt_enc", "bert."), ("head.text.", "txt_enc", ""))  # fmt: skip


def write_official(adapter: nn.Module, path: Path, *, epoch: int | None = None) -> Exported:
    """Write ``adapter`` (a ``vse_infty`` model with its trained weights) as woodfrog/vse_infty's ``train.py`` saves a
    grid checkpoint: ``{"model": [img_enc state dict, txt_enc state dict], "opt": argparse.Namespace, "epoch"}``.

    ``build_from_official`` reads it back with the official eval transform (a ``256·input_scale_factor`` square,
    ImageNet statistics); what it returns says whether that transform is the model's own.

    Raises:
        ConfigError: the model has a part the official grid layout cannot hold (the ``basic`` MLP branch).
    """
    parts: dict[str, dict[str, torch.Tensor]] = {"img_enc": {}, "txt_enc": {}}
    for key, value in adapter.state_dict().items():
        match = next(((enc, new + key[len(old) :]) for old, enc, new in _TO_OFFICIAL if key.startswith(old)), None)
        if match is None or key.startswith("head.image.mlp."):
            raise ConfigError(
                f"vse_infty export: {key!r} has no place in the official grid checkpoint "
                "(precomp_enc_type = 'backbone'; image_mlp = true is the 'basic' region layout)"
            )
        parts[match[0]][match[1]] = value.detach().cpu().contiguous()
    image = adapter.backbone["image"]
    cfg = dict(image.model.pretrained_cfg)
    side = int(cfg.get("input_size", (3, 256, 256))[-1])
    official = getattr(adapter, "official", {})
    opt = argparse.Namespace(precomp_enc_type="backbone", embed_size=int(adapter.embed_dim),
                             img_dim=int(image.num_features), input_scale_factor=side / 256,
                             backbone_source=official.get("backbone_source"), no_imgnorm=False,
                             no_txtnorm=False)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": [parts["img_enc"], parts["txt_enc"]], "opt": opt, "epoch": epoch}, path)
    official_transform = (cfg.get("crop_mode"), float(cfg.get("crop_pct", 0)), tuple(cfg.get("mean", ())),
                          cfg.get("interpolation")) == ("squash", 1.0, _IMAGENET["mean"], "bilinear")  # fmt: skip
    note = "" if official_transform else (
        " (note: that loader evaluates with the official transform, not this model's "
        f"{cfg.get('crop_mode', 'center')} crop at {side} px: numbers there will differ)"
    )
    arch = image.model.default_cfg.get("architecture")
    text = adapter.backbone["text"].name.split("@")[0]  # a tower loaded from a checkpoint names it after an @
    load = f"woodfrog/vse_infty's eval code, or itr-bench's vse_infty adapter with checkpoint = '{path}'{note}"
    return Exported(load, {"adapter": "vse_infty", "checkpoint": str(path), "image_backbone": arch,
                           "text_backbone": text})  # fmt: skip
