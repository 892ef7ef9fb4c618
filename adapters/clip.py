"""CLIP-family models through open_clip: any architecture with a pretrained tag, an ``hf-hub:`` name or a local file.

``checkpoint`` takes the forms researchers already use:

* ``"ViT-B-32/openai"`` or ``"ViT-B-32/laion2b_s34b_b79k"``: an open_clip architecture and pretrained tag (downloads);
* ``"hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"``: a Hugging Face hub repo (downloads);
* ``"ViT-B-32"`` with ``pretrained = "/path/to/epoch_30.pt"``: an architecture and a local checkpoint;
* ``"ViT-B-32"`` with ``pretrained = "random"``: random init (tests).

``model_config`` adds a folder or JSON file of extra architectures (``open_clip.add_model_config``), which is how the
tests register a tiny random CLIP. The towers are the backbone; the head is empty, so fine-tuning CLIP means
training the towers (``train.freeze_backbone = false``). SigLIP architectures (``"ViT-B-16-SigLIP/webli"``; a model
with a ``logit_bias``) fine-tune with the sigmoid base loss under ``[train] loss = "auto"``, from their own logit
scale and bias.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from bench.adapters.protocol import Exported, Features, hf_text_lengths
from bench.adapters.registry import register_adapter
from bench.adapters.weights import refused
from bench.adapters.whole import WholeModelAdapter
from torch import nn

from bench.errors import ConfigError, WeightsUnavailableError

__all__ = ["Clip"]


def parse_checkpoint(checkpoint: str, pretrained: str | None) -> tuple[str, str | None]:
    """Split ``checkpoint`` into an open_clip model name and a pretrained tag or path."""
    if checkpoint.startswith("hf-hub:"):
        return checkpoint, None
    arch, _, tag = checkpoint.partition("/")
    if tag and pretrained:
        raise ConfigError(f"clip checkpoint {checkpoint!r} names a tag and pretrained={pretrained!r} names another")
    return arch, (tag or pretrained)


def _embed_dim(model: nn.Module) -> int:
    """The joint space size: CLIP holds the text projection itself, CustomTextCLIP (SigLIP, transformers text
    towers) in its text tower, which records ``output_dim``."""
    proj = getattr(model, "text_projection", None)
    if isinstance(proj, nn.Linear):
        return int(proj.out_features)
    if proj is not None:
        return int(proj.shape[-1])
    return int(model.text.output_dim)


@register_adapter("clip")
class Clip(WholeModelAdapter):
    """An open_clip model behind the adapter interface (CLIP, or SigLIP with the sigmoid base loss).

    Args:
        model: An ``open_clip.CLIP`` (or CustomTextCLIP / SigLIP) model.
        preprocess: Its eval image transform.
        tokenizer: Its tokenizer.
        key: Identifies the weights (architecture + tag or path) for the feature cache.
    """

    default_loss = "infonce"
    model_config: str | None = None  # the extra architecture file it was built with, if any

    def __init__(self, model: nn.Module, preprocess: Callable[[Any], torch.Tensor], tokenizer: Any, key: str) -> None:
        super().__init__()
        self.backbone = model
        self.head = nn.Module()
        self._preprocess, self._tokenizer, self._key = preprocess, tokenizer, key
        self.arch = key.split(":", 1)[1].rsplit(":", 1)[0] if key.startswith("open_clip:") else key  # model name
        self.embed_dim = _embed_dim(model)
        # Fine-tuning starts from the model's own temperature rather than a fresh one.
        if hasattr(model, "logit_scale"):
            self.init_temperature = float(1.0 / model.logit_scale.exp().item())
        # SigLIP models (a logit bias: trained with the sigmoid loss) fine-tune with it under [train] loss = "auto",
        # starting from their own scale and bias.
        if getattr(model, "logit_bias", None) is not None:
            self.default_loss = "sigmoid"
            self.init_logit_bias = float(model.logit_bias.detach().reshape(-1)[0])

    @classmethod
    def build(
        cls, *, checkpoint: str, pretrained: str | None = None, model_config: str | None = None,
        allow_pickle: bool = False,
    ) -> Clip:  # fmt: skip
        """Create the model with ``open_clip.create_model_and_transforms``; ``allow_pickle`` loads a local checkpoint
        that pickles more than tensors (it runs code from the file)."""
        import open_clip

        if model_config:
            path = Path(model_config).expanduser()
            if not path.exists():
                raise ConfigError(f"clip model_config {path} does not exist")
            open_clip.add_model_config(path)
        name, tag = parse_checkpoint(checkpoint, pretrained)
        if not name.startswith("hf-hub:") and name not in open_clip.list_models():
            raise ConfigError(
                f"clip architecture {name!r} is not an open_clip model config (see open_clip.list_models())"
            )
        if tag and tag != "random" and not Path(tag).expanduser().exists() and "/" in tag:
            raise WeightsUnavailableError(f"weights unavailable: {checkpoint}; checkpoint file {tag} not found")
        local = tag not in (None, "random") and Path(tag).expanduser().is_file()
        extra = {"weights_only": False} if allow_pickle and local else {}
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=None if tag in (None, "random") else tag, **extra
            )
        except Exception as e:  # offline hub/URL access fails with many exception types
            if local and isinstance(e, pickle.UnpicklingError):
                raise refused(tag, e) from None
            if local:
                raise ConfigError(f"{tag}: not a {name} checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
            if tag in (None, "random") and not name.startswith("hf-hub:"):
                raise
            raise WeightsUnavailableError(
                f"weights unavailable: {checkpoint} ({type(e).__name__}); open_clip tags and hf-hub names need "
                "network, or pass pretrained = a local checkpoint path"
            ) from None
        try:
            tokenizer = open_clip.get_tokenizer(name)
        except Exception as e:  # SigLIP-family tokenizers come from the hub; offline that fails with many types
            raise WeightsUnavailableError(
                f"weights unavailable: {checkpoint} tokenizer ({type(e).__name__}); SigLIP-family open_clip tokenizers "
                "are fetched from the Hugging Face hub: needs network or a cached copy"
            ) from None
        adapter = cls(model.eval(), preprocess, tokenizer, f"open_clip:{name}:{tag}")
        adapter.model_config = model_config
        return adapter

    def export_native(self, out: Path) -> Exported:
        """open_clip's hub layout: ``open_clip_model.safetensors`` (the state dict) and ``open_clip_config.json``
        (model and preprocess config, written by open_clip's own ``save_config_for_hf``)."""
        import open_clip
        from open_clip.push_to_hf_hub import save_config_for_hf
        from safetensors.torch import save_file

        model_cfg = open_clip.get_model_config(self.arch) if not self.arch.startswith("hf-hub:") else None
        if model_cfg is None:
            raise ConfigError(f"clip export: no open_clip model config for {self.arch!r} to write beside the weights")
        out.mkdir(parents=True, exist_ok=True)
        weights = {k: v.contiguous() for k, v in self.backbone.state_dict().items()}  # channels-last is not
        save_file(weights, out / "open_clip_model.safetensors")
        save_config_for_hf(self.backbone, out / "open_clip_config.json", model_config=model_cfg)
        weights_file = str(out / "open_clip_model.safetensors")
        load = f"open_clip.create_model_and_transforms('local-dir:{out}')"
        options = {"adapter": "clip", "checkpoint": self.arch, "pretrained": weights_file}
        if self.model_config:
            options["model_config"] = self.model_config
        return Exported(load, options)

    def image_transform(self) -> Callable[[Any], torch.Tensor]:
        return self._preprocess

    def tokenize(self, texts: Sequence[str]) -> Features:
        # open_clip tokenizers truncate at the context length (77), so long captions never crash.
        return {"input_ids": self._tokenizer(list(texts))}

    def text_lengths(self, texts: Sequence[str]) -> tuple[list[int], int] | None:
        """Tokens each text needs (start and end tokens included) and the context length: CLIP's BPE
        (``SimpleTokenizer``) or a transformers tokenizer (``HFTokenizer``); None for another tokenizer."""
        tok = self._tokenizer
        context = getattr(tok, "context_length", None)
        if not context:
            return None
        if hasattr(tok, "encode") and hasattr(tok, "sot_token_id"):
            return [len(tok.encode(t)) + 2 for t in texts], int(context)
        inner = getattr(tok, "tokenizer", None)
        return hf_text_lengths(inner, texts, int(context)) if inner is not None else None

    def image_features(self, images: torch.Tensor) -> Features:
        return {"emb": self.backbone.encode_image(images)}

    def text_features(self, tokens: Features) -> Features:
        return {"emb": self.backbone.encode_text(tokens["input_ids"])}
