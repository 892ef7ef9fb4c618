"""One grid cell, end to end: build the adapter, load data, fine-tune (maybe), evaluate, return a result record."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

import bench
from bench.adapters.protocol import FeatureSupplier
from bench.adapters.registry import adapter_options, create_adapter
from bench.atomic import atomic_torch_save
from bench.config import BenchConfig, TrainConfig, build_section
from bench.data import load_split
from bench.data.base import RetrievalSplit
from bench.device import device_of
from bench.encode.features import cached_features
from bench.errors import ConfigError, SplitNotFoundError, UnknownNameError
from bench.evaluation.itr import evaluate, fold_mean, metric_value
from bench.evaluation.unimodal import UnimodalScorer, dataset_task, train_dataset
from bench.grid.records import SCHEMA, config_hash, safe_name
from bench.methods import get_method
from bench.scoring.itr import TIE_RULE
from bench.train.distributed import current as current_dist
from bench.train.fit import FitResult, fit, load_state, seed_everything

__all__ = ["Cell", "cell_config", "model_spec", "run_cell"]

log = logging.getLogger(__name__)
# Keys of a [models.<id>] table that steer the grid rather than the adapter.
MODEL_GRID_KEYS = ("methods", "train")
_VERSIONED = ["torch", "torchvision", "timm", "open_clip_torch", "transformers", "sentence-transformers", "numpy"]


@dataclass(frozen=True, order=True)
class Cell:
    """One (model, dataset, split, method, seed) job of a grid."""

    model: str
    dataset: str
    method: str
    seed: int
    split: str = "test"

    @property
    def label(self) -> str:
        """Short human-readable name."""
        return f"{self.model} × {self.dataset}/{self.split} × {self.method} × seed {self.seed}"


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
    out = {k: v for k, v in vars(cfg.eval).items() if k != "cache_features"}
    if not cfg.eval.rerank_k:
        out.pop("rerank_k", None)
        out.pop("rerank_fusion", None)
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
        if dataset_task(cfg, cell.dataset) != "itr":  # eval-only: trained on the table's train_on dataset
            name = train_dataset(cfg, cell.dataset)
            out["train_dataset"] = {"name": name, **cfg.datasets[name]}
    if method.uses_teachers(cfg.methods.get(cell.method, {})):
        out["teachers"] = dataclasses.asdict(cfg.teachers)
    return out


def training_config(cfg: BenchConfig, cell: Cell, train_name: str) -> dict[str, Any]:
    """What determines a trained method's weights: model, training dataset, method, seed, [train], teachers."""
    method = get_method(cell.method)
    out = {
        "model": model_spec(cfg, cell.model),
        "train_dataset": cfg.datasets[train_name],
        "method": {"name": cell.method, **cfg.methods.get(cell.method, {})},
        "seed": cell.seed,
        "train": {k: v for k, v in vars(train_config(cfg, cell.model)).items() if k not in {"num_workers"}},
    }
    if method.uses_teachers(cfg.methods.get(cell.method, {})):
        out["teachers"] = dataclasses.asdict(cfg.teachers)
    return out


def trained_path(cfg: BenchConfig, cell: Cell, train_name: str) -> Path:
    """Where the trained heads of ``cell`` are stored, keyed by :func:`training_config`."""
    key = config_hash(training_config(cfg, cell, train_name))
    name = f"{safe_name(cell.method)}-seed{cell.seed}-{key}.pt"
    return Path(cfg.paths.work_dir) / "trained" / safe_name(cell.model) / safe_name(train_name) / name


def save_trained(path: Path, result: FitResult) -> None:
    """Store a finished training (best and last states, history, selection) atomically."""
    atomic_torch_save(dataclasses.asdict(result), path)


def load_trained(path: Path) -> FitResult | None:
    """A training stored by :func:`save_trained`, or None when absent or unreadable (then it is trained again)."""
    if not path.is_file():
        return None
    try:
        return FitResult(**torch.load(path, map_location="cpu", weights_only=True))
    except Exception as e:  # a truncated or foreign file: train again, never trust it
        log.warning("%s: unreadable stored training (%s); training again", path, e)
        return None


def resolve_freeze(value: bool | str, device: torch.device) -> bool:
    """``train.freeze_backbone``: ``auto`` freezes on CPU only."""
    if value == "auto":
        return device.type != "cuda"
    if isinstance(value, bool):
        return value
    raise ConfigError(f'[train] freeze_backbone: expected true, false or "auto", got {value!r}')


def holdout(train: RetrievalSplit, fraction: float, seed: int = 0) -> tuple[RetrievalSplit, RetrievalSplit]:
    """Split train images (with all their captions) into train and val; deterministic, shared by every method."""
    n_val = max(1, int(round(train.n_images * fraction)))
    perm = np.random.default_rng(seed).permutation(train.n_images)
    val_rows, train_rows = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return subset(train, train_rows, train.split), subset(train, val_rows, "val-heldout")


def subset(split: RetrievalSplit, image_rows: np.ndarray, name: str) -> RetrievalSplit:
    """The images ``image_rows`` of ``split`` with their captions, renumbered."""
    remap = -np.ones(split.n_images, dtype=np.int64)
    remap[image_rows] = np.arange(len(image_rows))
    keep = np.flatnonzero(remap[split.caption_to_image] >= 0)
    return RetrievalSplit(
        dataset=split.dataset,
        split=name,
        image_paths=[split.image_paths[i] for i in image_rows],
        image_ids=[split.image_ids[i] for i in image_rows],
        captions=[split.captions[j] for j in keep],
        caption_to_image=remap[split.caption_to_image[keep]],
        image_labels=None if split.image_labels is None else np.asarray(split.image_labels)[image_rows],
        source=split.source,
    )


def _param_groups(module: torch.nn.Module) -> list[str]:
    return sorted({n.split(".")[0] for n, p in module.named_parameters() if p.requires_grad})


def _versions() -> dict[str, str]:
    out = {"itr-bench": bench.__version__, "python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _git_sha() -> str | None:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(bench.__file__).parent, capture_output=True, text=True, timeout=5
        )
        return sha.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.machine()}x{os.cpu_count()} threads={torch.get_num_threads()}"


def run_cell(cell: Cell, cfg: BenchConfig, *, progress: bool = True, checkpoint: Path | None = None) -> dict[str, Any]:
    """Run one cell and return its result record (not yet written).

    ``checkpoint`` is where training saves its state after each epoch and resumes from (see
    :func:`bench.train.fit.fit`). Under ``torch.distributed`` every rank trains; only rank 0 evaluates on the test
    split and returns a record with ``status`` ``"ok"`` (the others return ``status`` ``"worker"``, not to be
    written).
    """
    t0 = time.perf_counter()
    snapshot = cell_config(cfg, cell)
    tcfg = train_config(cfg, cell.model)
    method = get_method(cell.method)
    method_opts = cfg.methods.get(cell.method, {})
    method.check_options(method_opts, f"{cfg.source}: [methods.{cell.method}]")
    spec = model_spec(cfg, cell.model)
    family = spec.pop("adapter")
    device = device_of(tcfg.device)
    freeze = resolve_freeze(tcfg.freeze_backbone, device) if method.trains else True
    work = Path(cfg.paths.work_dir)
    dspec = cfg.datasets[cell.dataset]
    task = dataset_task(cfg, cell.dataset)
    # Uni-modal sets are eval-only: a trained method fine-tunes on their train_on dataset, as that dataset's cell does.
    train_name = train_dataset(cfg, cell.dataset) if method.trains else cell.dataset
    test = load_split(cell.dataset, dspec, cell.split, work_dir=work)  # data errors surface before any training

    seed_everything(cell.seed)
    adapter = create_adapter(family, spec, where=f"{cfg.source}: [models.{cell.model}]").to(device)
    cache = work / "features" if cfg.eval.cache_features else None

    def feats(split: RetrievalSplit) -> Any:
        # Adapters that hold a split's features themselves (precomputed embeddings) need no backbone pass.
        if not freeze or isinstance(adapter, FeatureSupplier):
            return None
        return cached_features(
            adapter,
            split,
            cache,
            device=device,
            batch_size=cfg.eval.batch_size,
            num_workers=tcfg.num_workers,
            progress=progress,
            precision=cfg.eval.precision,
        )

    def finish(metrics: dict[str, Any]) -> dict[str, Any]:
        per_fold = metrics.pop("folds", None)
        if per_fold:
            record.setdefault("extra_metrics", {})[f"{cell.split}_1k"] = fold_mean(per_fold)
        return metrics

    score: Any  # score(objective=None, last=False) -> the metrics block of the test split
    if task == "itr":
        test_feats = feats(test)
        # COCO: the 5K test also reports the 1K protocol, the mean over five folds of 1,000 consecutive images.
        folds = None
        if dspec.get("format", cell.dataset) == "coco" and test.n_images == 5000:
            folds = [np.arange(k * 1000, (k + 1) * 1000) for k in range(5)]

        def score(objective: Any = None, *, last: bool = False) -> dict[str, Any]:
            m = evaluate(adapter, test, cfg.eval, device=device, objective=objective, features=test_feats,
                         folds=None if last else folds, progress=progress)  # fmt: skip
            return m if last else finish(m)
    else:
        score = uni = UnimodalScorer(adapter, test, cfg.eval, device=device, frozen=freeze, cache_dir=cache,
                                     num_workers=tcfg.num_workers, progress=progress)  # fmt: skip

    record: dict[str, Any] = {
        "schema": SCHEMA,
        "status": "ok",
        "model": cell.model,
        "adapter": family,
        "dataset": cell.dataset,
        "split": cell.split,
        "method": cell.method,
        "seed": cell.seed,
    }
    if not method.trains:
        record["metrics"] = score()
        record.update(metrics_last=None, selected_epoch=None, history=[], trained_parts=[], frozen_backbone=True)
    else:
        train = load_split(train_name, cfg.datasets[train_name], "train", work_dir=work)
        try:
            val = load_split(train_name, cfg.datasets[train_name], "val", work_dir=work)
            val_source = "val"
        except SplitNotFoundError:
            train, val = holdout(train, tcfg.val_fraction)
            val_source = f"{tcfg.val_fraction:.0%} of train images held out"
        train_feats, val_feats = feats(train), feats(val)
        extra = {"teachers": cfg.teachers} if "teachers" in inspect.signature(method.objective).parameters else {}
        # Re-seed: a method's random head initialisation must not depend on what loading the data and features drew
        # from the global RNG (the encode loop keeps its own generator; other loading steps may not).
        seed_everything(cell.seed)
        objective = method.objective(adapter, tcfg, **method_opts, **extra).to(device)
        if hasattr(objective, "prepare"):  # soft-label methods load their (cached) teacher features here
            objective.prepare(train, work_dir=work, device=device, stage1_cache=cache, progress=progress)

        def validate() -> float:
            m = evaluate(
                adapter, val, cfg.eval, device=device, objective=objective, features=val_feats, progress=False,
                rerank=False,
            )  # fmt: skip
            return metric_value(m, tcfg.select_metric)

        # A frozen-backbone training is stored under its training key (heads only: small), so the uni-modal cells
        # that train on the same dataset with the same settings reuse it instead of training again. Image-text cells
        # always train (so --force really re-trains) and refresh the store.
        store = trained_path(cfg, cell, train_name) if freeze else None
        result = load_trained(store) if store is not None and task != "itr" else None
        if result is not None:
            log.info("%s: reusing the training stored in %s", cell.label, store)
            record["reused_training"] = str(store)
            load_state(adapter, objective, result.last_state, freeze)
        else:
            result = fit(
                adapter,
                objective,
                train,
                tcfg,
                device=device,
                seed=cell.seed,
                freeze_backbone=freeze,
                train_features=train_feats,
                validate=validate,
                progress=progress,
                checkpoint=checkpoint,
            )
            if store is not None and current_dist().is_main:
                save_trained(store, result)
        if not current_dist().is_main:
            return {**record, "status": "worker"}
        last = score(objective, last=True)
        load_state(adapter, objective, result.best_state or result.last_state, freeze)
        record["metrics"] = score(objective)
        record.update(
            metrics_last=last,
            selected_epoch=result.selected_epoch,
            resumed_from_epoch=result.resumed_from_epoch,
            selected_on=val_source,
            select_metric=tcfg.select_metric,
            history=result.history,
            trained_parts=adapter.trained_parts(freeze) + [f"objective.{n}" for n in _param_groups(objective)],
            method_settings=objective.describe() if hasattr(objective, "describe") else {},
            frozen_backbone=freeze,
        )
    if task != "itr":  # which embedding was scored (uni heads, joint, towers) and what the model was trained on
        record.update(task=task, embedding=uni.embedding, train_dataset=train_name if method.trains else None)
    record.update(
        config=snapshot,
        config_hash=config_hash(snapshot),
        tie_rule=TIE_RULE,
        versions=_versions(),
        git_sha=_git_sha(),
        device=_device_name(device),
        world_size=current_dist().world_size,  # processes that trained it (data-parallel ranks)
        wall_time_s=round(time.perf_counter() - t0, 2),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return record
