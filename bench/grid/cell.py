"""What a grid cell is: its key, and the config snapshots whose hashes decide whether a stored result (or a stored
training) is still valid. :func:`bench.grid.plan.plan_cell` plans a cell from them once; :mod:`bench.grid.pipeline`
runs the plan."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from bench.adapters.registry import adapter_options
from bench.config import BenchConfig, TrainConfig, build_section
from bench.errors import ConfigError, UnknownNameError
from bench.grid.sweep import Variant, variant_id
from bench.methods import get_method
from bench.tasks import task_of

__all__ = [
    "MODEL_GRID_KEYS",
    "Cell",
    "cell_config",
    "model_spec",
    "resolve_freeze",
    "train_config",
    "training_config",
]

# Keys of a [models.<id>] table that steer the grid rather than the adapter.
MODEL_GRID_KEYS = ("methods", "train")
# Bumped when a trained method's numbers change under an unchanged config: 2 = the contrastive temperature starts
# from [train] temperature for every model (CLIP-family adapters started from their checkpoint's own before).
OBJECTIVE_VERSION = 2
RERANK_VERSION = 2


@dataclass(frozen=True, order=True)
class Cell:
    """One (model, dataset, split, method, seed) job of a grid; a sweep's cell also has its ``variant``, the config
    values it sets (:mod:`bench.grid.sweep`)."""

    model: str
    dataset: str
    method: str  # the registered method
    seed: int
    split: str = "test"
    variant: Variant = ()

    @property
    def method_id(self) -> str:
        """The method as records, tables and file names say it: ``cusa``, or a variant's ``cusa[alpha=0.1]``."""
        return variant_id(self.method, self.variant)

    @property
    def label(self) -> str:
        """Short human-readable name."""
        return f"{self.model} × {self.dataset}/{self.split} × {self.method_id} × seed {self.seed}"


def model_spec(cfg: BenchConfig, model: str) -> dict[str, Any]:
    """The ``[models.<id>]`` table of ``model``, or an ad-hoc ``family:checkpoint`` spec (``clip:ViT-B-32/openai``)."""
    if model in cfg.models:
        return {k: v for k, v in cfg.models[model].items() if k not in MODEL_GRID_KEYS}
    family, sep, checkpoint = model.partition(":")
    if sep and family:
        opts = adapter_options(family)  # raises UnknownNameError for an unknown family
        if "checkpoint" not in opts:
            raise ConfigError(f"model {model!r}: adapter {family!r} takes no checkpoint; define [models.<id>] instead")
        return {"adapter": family, "checkpoint": checkpoint}
    raise UnknownNameError("model", model, list(cfg.models))


def train_config(cfg: BenchConfig, model: str) -> TrainConfig:
    """``[train]`` with the model's own ``[models.<id>.train]`` overrides (e.g. more epochs for a cheap probe)."""
    overrides = cfg.models.get(model, {}).get("train")
    if not overrides:
        return cfg.train
    merged = {**dataclasses.asdict(cfg.train), **overrides}
    return build_section(TrainConfig, merged, f"{cfg.source}: [models.{model}.train]")


def _eval_snapshot(cfg: BenchConfig) -> dict[str, Any]:
    # Re-ranking keys count only when re-ranking is on, so turning it off keeps earlier results valid.
    # How files are stamped says nothing about the numbers (the fingerprints themselves tell whether data changed).
    out = {k: v for k, v in vars(cfg.eval).items() if k not in {"cache_features", "fingerprint"}}
    if not cfg.eval.rerank_k:
        out.pop("rerank_k", None)
        out.pop("rerank_fusion", None)
    else:  # 2: BLIP's ITM reads [ENC] and its match logit is fused (the [CLS] log-odds before)
        out["rerank_version"] = RERANK_VERSION
    return out


def cell_config(cfg: BenchConfig, cell: Cell) -> dict[str, Any]:
    """Everything that determines a cell's numbers (its hash decides whether a stored result is still valid)."""
    method = get_method(cell.method)
    if cell.dataset not in cfg.datasets:
        raise UnknownNameError("dataset", cell.dataset, list(cfg.datasets))
    out = {
        "model": model_spec(cfg, cell.model),
        "dataset": cfg.datasets[cell.dataset],
        "method": {"name": cell.method, **cfg.methods.get(cell.method, {})},
        "seed": cell.seed,
        "split": cell.split,
        "eval": _eval_snapshot(cfg),
    }
    if method.trains:
        out["train"] = {k: v for k, v in vars(train_config(cfg, cell.model)).items() if k not in {"num_workers"}}
        out["method"]["objective_version"] = OBJECTIVE_VERSION
        task = task_of(cfg, cell.dataset)
        if task.eval_only:  # trained on the table's train_on dataset
            name = task.train_dataset(cfg, cell.dataset)
            out["train_dataset"] = {"name": name, **cfg.datasets[name]}
    if method.uses_teachers(cfg.methods.get(cell.method, {})):
        out["teachers"] = teachers_snapshot(cfg)
    return out


def teachers_snapshot(cfg: BenchConfig) -> dict[str, Any]:
    """The ``[teachers]`` settings that determine numbers (``allow_pickle`` only says whether a file may load)."""
    return {k: v for k, v in dataclasses.asdict(cfg.teachers).items() if k != "allow_pickle"}


def training_config(cfg: BenchConfig, cell: Cell, train_name: str) -> dict[str, Any]:
    """What determines a trained method's weights: model, training dataset, method, seed, [train], teachers."""
    method = get_method(cell.method)
    out = {
        "model": model_spec(cfg, cell.model),
        "train_dataset": cfg.datasets[train_name],
        "method": {"name": cell.method, **cfg.methods.get(cell.method, {}), "objective_version": OBJECTIVE_VERSION},
        "seed": cell.seed,
        "train": {k: v for k, v in vars(train_config(cfg, cell.model)).items() if k not in {"num_workers"}},
    }
    if method.uses_teachers(cfg.methods.get(cell.method, {})):
        out["teachers"] = teachers_snapshot(cfg)
    return out


def resolve_freeze(value: bool | str, device: torch.device) -> bool:
    """``train.freeze_backbone``: ``auto`` freezes on CPU only."""
    if value == "auto":
        return device.type != "cuda"
    if isinstance(value, bool):
        return value
    raise ConfigError(f'[train] freeze_backbone: expected true, false or "auto", got {value!r}')
