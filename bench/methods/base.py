"""Methods: what a grid varies besides model and data. A method decides whether and how a cell fine-tunes.

A method is a class registered with ``@register_method(name)``. ``objective(adapter, train_cfg, **options)`` returns
an :class:`Objective`, an ``nn.Module`` whose ``forward`` maps a training batch to a dict of ``*_loss`` terms and whose
parameters (temperatures, extra heads) are optimised with the adapter's trainable module. ``views`` lets a method
that adds heads (CUSA's cross and uni heads) say which embeddings evaluation uses for each retrieval direction.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from bench.adapters.protocol import Adapter
from bench.config import TrainConfig
from bench.config.checks import check_like_default
from bench.data.base import RetrievalSplit
from bench.errors import ConfigError, check_keys
from bench.methods import register_method

__all__ = ["HARNESS_ARGS", "Method", "Objective", "ZeroShot"]

# Keyword arguments of ``Method.objective`` that the harness fills in; they are not user options.
HARNESS_ARGS = ("teachers",)


class Objective(nn.Module):
    """A training objective: batch embeddings in, ``*_loss`` terms out.

    Every hook the harness calls is declared here, with the default a method without extras needs: ``prepare``
    (before training), ``views`` and ``embedding_kind`` (evaluation), ``describe`` (the record).
    """

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare(
        self, train: RetrievalSplit, *, work_dir: Path, device: torch.device, stage1_cache: Path | None,
        progress: bool = True,
    ) -> None:  # fmt: skip
        """Load what training needs besides the batches, once, before the first epoch (soft-label methods: their
        teachers' features of ``train``). Nothing by default."""

    def views(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Embeddings for evaluation: ``{"cross": (img, txt)}`` for i2t/t2i and ``{"uni": ...}`` for i2i/t2t."""
        return {"cross": (image_emb, text_emb), "uni": (image_emb, text_emb)}

    @property
    def embedding_kind(self) -> str:
        """What ``views()["uni"]`` is: ``joint`` (the cross view), ``uni_heads`` or ``backbone``."""
        return "joint"

    def describe(self) -> dict[str, Any]:
        """The settings a result records as ``method_settings`` (JSON values). None by default."""
        return {}


class Method:
    """Base class of methods."""

    name: ClassVar[str] = ""
    trains: ClassVar[bool] = True
    # Numeric options and their allowed ranges: option -> (low, high, low included, high included).
    option_ranges: ClassVar[dict[str, tuple[float, float, bool, bool]]] = {}

    def objective(self, adapter: Adapter, cfg: TrainConfig, **options: Any) -> Objective:  # pragma: no cover
        raise NotImplementedError

    def uses_teachers(self, options: dict[str, Any]) -> bool:
        """Whether this method, with these options, reads the ``[teachers]`` (so they belong in its config hash)."""
        return False

    def check_options(self, options: dict[str, Any], where: str) -> None:
        """Raise :class:`ConfigError` for an option ``objective`` does not take (listing the valid ones), a value of
        another type than the option's default, or a number outside :attr:`option_ranges`."""
        params = inspect.signature(self.objective).parameters
        valid = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY and p not in HARNESS_ARGS]
        check_keys(options, valid, where)
        for key, value in options.items():
            _check_option(key, value, params[key].default, self.option_ranges.get(key), f"{where}.{key}")


def _check_option(
    key: str, value: Any, default: Any, bounds: tuple[float, float, bool, bool] | None, where: str
) -> None:
    if bounds is None:
        check_like_default(value, default, where)
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    lo, hi, lo_in, hi_in = bounds
    if not ((value >= lo if lo_in else value > lo) and (value <= hi if hi_in else value < hi)):
        span = f"{'>=' if lo_in else '>'} {lo:g}" if hi == math.inf else f"in [{lo:g}, {hi:g}]"
        raise ConfigError(f"{where}: must be {span}, got {value!r}")


@register_method("zeroshot")
class ZeroShot(Method):
    """Evaluate the adapter as built, without training."""

    trains = False
