"""Methods: what a grid varies besides model and data. A method decides whether and how a cell fine-tunes.

A method is a class registered with ``@register_method(name)``. ``objective(adapter, train_cfg, **options)`` returns
an :class:`Objective`, an ``nn.Module`` whose ``forward`` maps a training batch to a dict of ``*_loss`` terms and whose
parameters (temperatures, extra heads) are optimised with the adapter's trainable module. ``views`` lets a method
that adds heads (CUSA's cross and uni heads) say which embeddings evaluation uses for each retrieval direction.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from bench.config import TrainConfig
from bench.errors import ConfigError, UnknownNameError
from bench.losses import InfoNCELoss, TripletLoss

__all__ = ["Method", "Objective", "get_method", "list_methods", "register_method"]

_METHODS: dict[str, type[Method]] = {}
M = TypeVar("M", bound=type)


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator registering a method; a duplicate name raises ``ValueError``."""

    def deco(cls: M) -> M:
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"method {name!r} is already registered")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return deco


def list_methods() -> list[str]:
    """Registered method names."""
    return sorted(_METHODS)


def get_method(name: str) -> Method:
    """An instance of method ``name``; an unknown name raises and lists the known ones."""
    try:
        return _METHODS[name]()
    except KeyError:
        raise UnknownNameError("method", name, list(_METHODS)) from None


class Objective(nn.Module):
    """A training objective: batch embeddings in, ``*_loss`` terms out."""

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def views(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Embeddings for evaluation: ``{"cross": (img, txt)}`` for i2t/t2i and ``{"uni": ...}`` for i2i/t2t."""
        return {"cross": (image_emb, text_emb), "uni": (image_emb, text_emb)}


class BaseLossObjective(Objective):
    """The adapter's base retrieval loss on its joint embeddings."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.loss(batch["image_emb"], batch["text_emb"], batch["image_index"])


def base_loss(adapter: Any, cfg: TrainConfig) -> nn.Module:
    """The base loss a cell trains with: ``train.loss``, or the adapter's default when ``auto``."""
    name = adapter.default_loss if cfg.loss == "auto" else cfg.loss
    if name == "infonce":
        return InfoNCELoss(getattr(adapter, "init_temperature", None) or cfg.temperature)
    if name == "triplet":
        return TripletLoss(cfg.margin, cfg.max_violation)
    raise ConfigError(f"[train] loss: unknown loss {name!r}; valid: auto, infonce, triplet")


class Method:
    """Base class of methods."""

    name: ClassVar[str] = ""
    trains: ClassVar[bool] = True

    def objective(self, adapter: Any, cfg: TrainConfig, **options: Any) -> Objective:  # pragma: no cover
        raise NotImplementedError

    def check_options(self, options: dict[str, Any], where: str) -> None:
        """Raise :class:`ConfigError` for an option ``objective`` does not take, listing the valid ones."""
        params = inspect.signature(self.objective).parameters
        valid = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
        for key in options:
            if key not in valid:
                raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(valid) or '(none)'}")


@register_method("zeroshot")
class ZeroShot(Method):
    """Evaluate the adapter as built, without training."""

    trains = False


@register_method("contrastive")
class Contrastive(Method):
    """Fine-tune with the adapter's base loss (InfoNCE for CLIP-style models, triplet or InfoNCE for VSE∞)."""

    def objective(self, adapter: Any, cfg: TrainConfig) -> Objective:
        return BaseLossObjective(base_loss(adapter, cfg))
