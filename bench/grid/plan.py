"""A cell planned once: everything the config decides about one cell, derived in one place and passed down.

:func:`plan_cell` reads ``(cfg, cell)`` once: the model's build options, its ``[train]`` settings, the method, the
scored dataset's task kind and the dataset a trained method fine-tunes on, the config snapshot whose hash says whether
a stored result is still valid, and every path the cell owns (its record, its training checkpoint, its sharded
evaluation's folder, its stored training). The grid (:mod:`bench.grid.execute`, :mod:`bench.grid.slurm`), the
sharded evaluation (:mod:`bench.shard`) and the pipeline (:mod:`bench.grid.pipeline`) take the :class:`Plan` instead
of deriving any of it again.

Nothing here loads data or weights; the device is resolved on first use (a login node that submits a CUDA grid plans
its cells without a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.config import BenchConfig, TrainConfig
from bench.data.stamps import use_stamps
from bench.grid.cell import Cell, cell_config, model_spec, resolve_freeze, train_config, training_config
from bench.grid.records import cell_parts, cell_path, cell_stem, config_hash
from bench.grid.sweep import variant_config
from bench.methods import get_method
from bench.methods.base import Method
from bench.names import safe_name
from bench.tasks import Task, task_of

if TYPE_CHECKING:
    import torch

__all__ = ["Plan", "checkpoint_path", "plan_cell", "shard_path"]


@dataclass(frozen=True, eq=False)
class Plan:
    """What the config decides about one cell before anything is loaded."""

    cell: Cell
    cfg: BenchConfig
    train: TrainConfig  # [train] with the model's own overrides
    method: Method
    method_options: dict[str, Any]
    family: str  # the adapter family
    options: dict[str, Any]  # the adapter's build options
    task: Task  # the scored dataset's task kind
    train_name: str  # the dataset a trained method fine-tunes on (eval-only sets: their train_on)
    snapshot: dict[str, Any]  # everything that determines the cell's numbers (bench.grid.cell.cell_config)
    progress: bool = True

    @cached_property
    def config_hash(self) -> str:
        """The snapshot's hash: a stored record with another one is stale."""
        return config_hash(self.snapshot)

    @cached_property
    def device(self) -> torch.device:
        """The device the cell runs on (``[train] device``).

        Raises:
            ConfigError: CUDA asked for on a machine without it, or a device name torch does not know.
        """
        from bench.device import device_of

        return device_of(self.train.device)

    @cached_property
    def frozen(self) -> bool:
        """Whether the backbone stays frozen (its features cached) rather than trained end to end."""
        from bench.adapters.registry import get_adapter_class

        if not self.method.trains or callable(getattr(get_adapter_class(self.family), "split_features", None)):
            return True  # an adapter that supplies its stage-1 features has no backbone to train
        return resolve_freeze(self.train.freeze_backbone, self.device)

    @property
    def work(self) -> Path:
        """``[paths] work_dir``."""
        return Path(self.cfg.paths.work_dir)

    @property
    def cache(self) -> Path | None:
        """The stage-1 feature cache, or None when ``[eval] cache_features`` is off."""
        return self.work / "features" if self.cfg.eval.cache_features else None

    @property
    def record_path(self) -> Path:
        """Where the cell's result record lives: ``<results>/runs/<model>/<dataset>/<split>/<method>-seed<s>.json``."""
        c = self.cell
        return cell_path(Path(self.cfg.paths.results_dir), c.model, c.dataset, c.split, c.method_id, c.seed)

    @property
    def checkpoint_path(self) -> Path:
        """Where the cell's training checkpoint lives while it runs (:func:`checkpoint_path`)."""
        return checkpoint_path(self.cfg, self.cell, self.config_hash)

    @property
    def shard_path(self) -> Path:
        """Where the cell's sharded evaluation keeps its files (:func:`shard_path`)."""
        return shard_path(self.cfg, self.cell)

    @cached_property
    def training_snapshot(self) -> dict[str, Any]:
        """What determines a trained method's weights (:func:`bench.grid.cell.training_config`)."""
        return training_config(self.cfg, self.cell, self.train_name)

    @cached_property
    def trained_path(self) -> Path:
        """The training store (:mod:`bench.train.store`), ``<work>/trained/<model>/<train set>/<method>-seed<s>-<key>``:
        keyed by :attr:`training_snapshot`, so the cells that train the same way share it."""
        c = self.cell
        name = f"{cell_stem(c.method_id, c.seed)}-{config_hash(self.training_snapshot)}"
        return self.work / "trained" / safe_name(c.model) / safe_name(self.train_name) / name


def checkpoint_path(cfg: BenchConfig, cell: Cell, chash: str) -> Path:
    """Where ``cell``'s training checkpoint lives while it runs: beside the results it will produce (two grids that
    share a ``work_dir`` but not a results folder never resume from each other); the config hash ``chash`` in the name
    keeps a changed config from resuming."""
    *folder, stem = cell_parts(cell.model, cell.dataset, cell.split, cell.method_id, cell.seed)
    return Path(cfg.paths.results_dir).joinpath("checkpoints", *folder, f"{stem}-{chash}.pt")


def shard_path(cfg: BenchConfig, cell: Cell) -> Path:
    """Where ``cell``'s sharded evaluation keeps its files (:class:`bench.shard.plan.ShardDir`)."""
    *folder, stem = cell_parts(cell.model, cell.dataset, cell.split, cell.method_id, cell.seed)
    return Path(cfg.paths.work_dir).joinpath("shards", *folder, stem)


def plan_cell(cell: Cell, cfg: BenchConfig, *, progress: bool = True) -> Plan:
    """Plan ``cell`` under ``cfg`` (with the cell's sweep values set: :func:`bench.grid.sweep.variant_config`):
    resolve its settings and check the method's options, before any loading; data files are stamped as ``[eval]
    fingerprint`` says from then on (:func:`bench.data.stamps.use_stamps`).

    Raises:
        UnknownNameError: the cell names a model, dataset, method or format the config or registries do not know.
        ConfigError: a method option, a ``train_on`` or a ``[models.<id>.train]`` override is invalid.
    """
    # Every process that plans a cell (a grid, a SLURM job, a shard task, a status check) then stamps data files as
    # the config says, before it loads a split: the split's fingerprint and the caches keyed by it agree.
    cfg = variant_config(cfg, cell.variant)  # a sweep's cell: the config with its values set
    use_stamps(cfg.eval.fingerprint, cfg.paths.work_dir)
    snapshot = cell_config(cfg, cell)
    method = get_method(cell.method)
    method_options = cfg.methods.get(cell.method, {})
    method.check_options(method_options, f"{cfg.source}: [methods.{cell.method}]")
    options = model_spec(cfg, cell.model)
    family = options.pop("adapter")
    task = task_of(cfg, cell.dataset)
    return Plan(
        cell=cell,
        cfg=cfg,
        train=train_config(cfg, cell.model),
        method=method,
        method_options=method_options,
        family=family,
        options=options,
        task=task,
        # Eval-only sets: a trained method fine-tunes on their train_on dataset, as its own cell does.
        train_name=task.train_dataset(cfg, cell.dataset) if method.trains else cell.dataset,
        snapshot=snapshot,
        progress=progress,
    )
