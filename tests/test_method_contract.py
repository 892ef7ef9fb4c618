"""The method contract, over the whole registry (as ``test_adapter_contract.py`` for adapters): every registered
method is a :class:`Method`, and every trained method's objective provides each hook the harness calls (``prepare``,
``views``, ``embedding_kind``, ``describe``, ``forward``) and gives finite losses that reach the embeddings."""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import TINY_TIMM
from PIL import Image

from bench.config import TeachersConfig, TrainConfig
from bench.data.base import RetrievalSplit
from bench.methods import METHODS, get_method
from bench.methods.base import HARNESS_ARGS, Method, Objective

NAMES = METHODS.names()
HOOKS = ("forward", "prepare", "views", "describe")


def test_the_objective_base_declares_every_hook_with_a_default() -> None:
    base = Objective()
    assert base.describe() == {} and base.embedding_kind == "joint"
    img, txt = torch.randn(3, 4), torch.randn(5, 4)
    views = base.views(img, txt)
    assert views["cross"] == (img, txt) and views["uni"] == (img, txt)
    assert base.prepare(None, work_dir=Path("."), device=torch.device("cpu"), stage1_cache=None) is None  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> RetrievalSplit:
    folder = tmp_path_factory.mktemp("method_contract")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        paths.append(folder / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(paths[-1])
    captions = [f"a {w} photo number {i}" for i, w in enumerate(["red", "blue", "green", "small"] * 2)]
    return RetrievalSplit("tiny", "train", paths, [p.stem for p in paths], captions, np.repeat(np.arange(4), 2))


@pytest.mark.parametrize("name", NAMES)
def test_registered_method_satisfies_the_contract(
    name: str, build_tiny: Callable[..., Any], tiny_text_folder: Path, split: RetrievalSplit, tmp_path: Path
) -> None:
    method = get_method(name)
    assert isinstance(method, Method) and method.name == name and isinstance(method.trains, bool)
    method.check_options({}, f"[methods.{name}]")  # the defaults are valid options
    if not method.trains:
        return
    adapter = build_tiny("vse_infty")
    cfg = TrainConfig(epochs=1, batch_size=8, device="cpu", loss="infonce")
    teachers = TeachersConfig(image_model=TINY_TIMM, image_weights="random", text_model=str(tiny_text_folder))
    extra = {"teachers": teachers} if "teachers" in inspect.signature(method.objective).parameters else {}
    assert set(extra) <= set(HARNESS_ARGS)
    objective = method.objective(adapter, cfg, **extra)
    assert isinstance(objective, Objective)
    for hook in HOOKS:
        assert callable(getattr(objective, hook)), f"{name}: no {hook}()"
    objective.prepare(split, work_dir=tmp_path, device=torch.device("cpu"), stage1_cache=None, progress=False)
    assert objective.embedding_kind in ("joint", "uni_heads", "backbone")
    json.dumps(objective.describe())  # what the record stores must be JSON

    n, dim = split.n_captions, adapter.embed_dim
    img = torch.randn(n, dim, requires_grad=True)
    txt = torch.randn(n, dim, requires_grad=True)
    views = objective.views(img, txt)
    for view in ("cross", "uni"):
        assert len(views[view]) == 2 and all(t.shape[0] == n for t in views[view])
    batch = {"image_emb": img, "text_emb": txt, "image_index": torch.from_numpy(split.caption_to_image),
             "caption_index": torch.arange(n)}  # fmt: skip
    terms = objective(batch)
    losses = {k: v for k, v in terms.items() if k.endswith("_loss")}
    assert losses, f"{name}: no *_loss term"
    total = sum(losses.values())
    assert all(v.ndim == 0 and math.isfinite(float(v.detach())) for v in losses.values())
    total.backward()
    assert img.grad is not None and txt.grad is not None and img.grad.abs().sum() > 0
