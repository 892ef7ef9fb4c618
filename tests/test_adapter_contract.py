"""The adapter Protocol is the contract: every registered family provides every hook the harness calls, with the
declared types (timm's ``test_models.py`` pattern: one parametrised test over the whole registry)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import torch
from bench.adapters.protocol import Adapter, AdapterBase, CrossScorer, FeatureSupplier, PairScorer
from bench.adapters.registry import get_adapter_class, list_adapters
from torch import nn

from bench.methods.cusa import BASE_LOSSES

FAMILIES = list_adapters()
# Members of the Protocol that are attributes (data) rather than methods.
DATA = {"name", "embed_dim", "joint_space", "default_loss", "init_temperature", "init_logit_bias"}
METHODS = sorted(
    n for n, v in vars(Adapter).items() if callable(v) and not n.startswith("_") and n not in {"to", "train", "eval"}
) + ["build"]


def test_the_protocol_lists_every_hook_the_harness_calls() -> None:
    assert set(METHODS) >= {"backbone_key", "backbone_part", "modality_key", "trained_parts", "build", "tokenize"}
    assert DATA <= set(Adapter.__annotations__)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_class_declares_the_contract(family: str) -> None:
    cls = get_adapter_class(family)
    assert cls.name == family
    for hook in METHODS:
        assert callable(getattr(cls, hook, None)), f"{family}: no {hook}()"
    for attr in DATA - {"name"}:
        assert hasattr(cls, attr), f"{family}: no class default for {attr}"
    assert inspect.ismethod(cls.build), f"{family}: build must be a classmethod"
    params = inspect.signature(cls.build).parameters.values()
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params if p.kind is not p.VAR_KEYWORD), (
        f"{family}: build options must be keyword-only (they are the [models.<id>] keys)"
    )
    # The six stage methods are the family's own, not AdapterBase's abstract ones.
    for hook in ("image_transform", "tokenize", "image_features", "text_features", "embed_image", "embed_text"):
        assert getattr(cls, hook) is not getattr(AdapterBase, hook), f"{family}: {hook} is not implemented"


@pytest.mark.parametrize("family", FAMILIES)
def test_family_instance_satisfies_the_protocol(family: str, tiny_adapter: Callable[[str], Any]) -> None:
    adapter = tiny_adapter(family)
    assert isinstance(adapter, Adapter)
    assert isinstance(adapter.embed_dim, int) and adapter.embed_dim > 0
    assert isinstance(adapter.joint_space, bool)
    assert adapter.default_loss in BASE_LOSSES
    for attr in ("init_temperature", "init_logit_bias"):
        value = getattr(adapter, attr)
        assert value is None or isinstance(value, float), f"{family}.{attr} = {value!r}"
    assert adapter.init_temperature is None or adapter.init_temperature > 0
    assert isinstance(adapter.backbone_key(), str) and adapter.backbone_key()
    for modality in ("image", "text"):
        assert isinstance(adapter.modality_key(modality), str)
        assert isinstance(adapter.backbone_part(modality), nn.Module)
    for frozen in (True, False):
        assert isinstance(adapter.trainable_module(frozen), nn.Module)
        parts = adapter.trained_parts(frozen)
        assert isinstance(parts, list) and all(isinstance(p, str) for p in parts)
    if isinstance(adapter, PairScorer):
        assert isinstance(adapter.pair_score_kind, str) and adapter.pair_score_kind
    tokens = adapter.tokenize(["a red square", "two small blue circles"])
    assert isinstance(tokens, dict) and all(isinstance(v, torch.Tensor) for v in tokens.values())


def test_optional_capabilities_are_where_the_families_say() -> None:
    capable = {f for f in FAMILIES if issubclass_like(get_adapter_class(f), PairScorer)}
    supplies = {f for f in FAMILIES if issubclass_like(get_adapter_class(f), FeatureSupplier)}
    assert "blip" in capable and "towers" not in capable
    assert supplies == {"embeddings", "scan", "sgraf"}
    crosses = {f for f in FAMILIES if issubclass_like(get_adapter_class(f), CrossScorer)}
    assert crosses == {"scan", "sgraf"}


def issubclass_like(cls: type, proto: type) -> bool:
    """Whether ``cls`` defines every method of a runtime protocol (issubclass refuses protocols with data members)."""
    names = [n for n, v in vars(proto).items() if callable(v) and not n.startswith("_")]
    return all(callable(getattr(cls, n, None)) for n in names)
