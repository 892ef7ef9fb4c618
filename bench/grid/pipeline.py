"""One cell, end to end, in named steps: build, data, train or reuse, score, provenance.

:func:`run_cell` reads top to bottom as the data path of one cell; each step is a function of the :class:`Plan`
(everything the config decides about the cell) and what the steps before it produced.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from bench.adapters.protocol import Adapter, CrossScorer, FeatureSupplier
from bench.adapters.registry import create_adapter, get_adapter_class
from bench.config import BenchConfig
from bench.data import load_split
from bench.data.base import RetrievalSplit, holdout
from bench.encode.cache import cached_features
from bench.encode.features import FeatureSet, encoding_precision, storage_dtype
from bench.errors import BenchError, ConfigError, SplitNotFoundError
from bench.evaluation.itr import Scored, evaluate, fold_mean, metric_value
from bench.grid.cell import Cell
from bench.grid.fingerprint import content_key
from bench.grid.plan import Plan, plan_cell
from bench.grid.provenance import provenance, versions
from bench.grid.records import SCHEMA, config_hash
from bench.grid.sweep import variant_fields
from bench.methods.base import Objective
from bench.scoring.itr import recall_ks
from bench.scoring.perquery import save_per_query
from bench.stats.bootstrap import BootstrapConfig, ci_key, confidence_intervals, query_values
from bench.tracking import CellRun, open_run, run_name
from bench.train.distributed import current as current_dist
from bench.train.fit import FitResult, fit, load_state, seed_everything
from bench.train.store import load_training, save_training

__all__ = [
    "ItrScorer",
    "Plan",
    "ScorerFactory",
    "SplitScorer",
    "build_adapter",
    "plan_cell",
    "precision_block",
    "run_cell",
    "run_plan",
    "stage1",
]

log = logging.getLogger(__name__)
Stage1 = tuple[FeatureSet, FeatureSet] | None  # a split's cached backbone features (images, captions), if frozen


def build_adapter(plan: Plan) -> Adapter:
    """Step 1: the adapter, seeded, on the cell's device."""
    seed_everything(plan.cell.seed)
    where = f"{plan.cfg.source}: [models.{plan.cell.model}]"
    return create_adapter(plan.family, plan.options, where=where).to(plan.device)


def stage1(plan: Plan, adapter: Adapter, split: RetrievalSplit) -> Stage1:
    """Cached backbone features of ``split`` for a frozen backbone; None when the backbone runs. An adapter that
    supplies its own features gives them here if it trains on them (the region models), else None."""
    if isinstance(adapter, FeatureSupplier):  # its own features; a cross-attention model trains on them
        return adapter.split_features(split) if isinstance(adapter, CrossScorer) else None
    if not plan.frozen:
        return None
    return cached_features(
        adapter,
        split,
        plan.cache,
        device=plan.device,
        batch_size=plan.cfg.eval.batch_size,
        num_workers=plan.train.num_workers,
        progress=plan.progress,
        precision=plan.cfg.eval.precision,
        feature_dtype=plan.cfg.eval.feature_dtype,
    )


def precision_block(plan: Plan) -> dict[str, str | None]:
    """The record's ``precision``: what the encoders ran in, what the scored stage-1 features were stored in (None
    when the backbone ran end to end and nothing was stored; ``"as supplied"`` for an adapter that brings its own,
    such as precomputed embeddings), and what similarities are computed in (always fp32)."""
    encoding = encoding_precision(plan.device, plan.cfg.eval.precision)
    if issubclass(get_adapter_class(plan.family), FeatureSupplier):
        stored: str | None = "as supplied"
    else:
        stored = storage_dtype(encoding, plan.cfg.eval.feature_dtype) if plan.frozen else None
    return {"encoding": encoding, "features": stored, "scoring": "fp32"}


class SplitScorer(Protocol):
    """Scores the adapter (with a method's heads) on the cell's test split."""

    embedding: str | None  # uni-modal sets: which embedding was scored

    def __call__(self, objective: Objective | None = None, *, last: bool = False) -> dict[str, Any]: ...


class ItrScorer:
    """Image-text test scoring; a split that declares evaluation folds (COCO's 1K) also gets their mean, under
    ``extra_metrics["<split>_1k"]``."""

    embedding = None

    def __init__(self, plan: Plan, adapter: Adapter, test: RetrievalSplit) -> None:
        from bench.encode.long_text import context_report, sentence_split

        self.plan, self.adapter, self.test = plan, adapter, test
        rule = plan.cfg.datasets[plan.cell.dataset].get("long_text", "truncate")
        self.sentences = sentence_split(test) if rule == "sentences" else None
        if self.sentences is not None and isinstance(adapter, FeatureSupplier):
            where = f"[datasets.{plan.cell.dataset}]"
            raise ConfigError(f'{where} long_text = "sentences": adapter {plan.family!r} supplies its own caption '
                              "embeddings, so they cannot be split into sentences")  # fmt: skip
        encoded = test if self.sentences is None else self.sentences[0]
        self.long_text = context_report(adapter, list(encoded.captions), rule)  # the record's long_text
        self.features = stage1(plan, adapter, encoded)
        self.extra_metrics: dict[str, Any] = {}
        self.scored = Scored()  # the per-query results of the latest call (the selected state's, for trained cells)

    def __call__(self, objective: Objective | None = None, *, last: bool = False) -> dict[str, Any]:
        folds = None if last else self.test.fold_rows()
        self.scored = Scored()
        m = evaluate(self.adapter, self.test, self.plan.cfg.eval, device=self.plan.device, objective=objective,
                     features=self.features, folds=folds, progress=self.plan.progress, keep=self.scored,
                     sentences=self.sentences)  # fmt: skip
        per_fold = m.pop("folds", None)
        if per_fold:
            self.extra_metrics[f"{self.test.split}_1k"] = fold_mean(per_fold)
        return m


ScorerFactory = Callable[[Plan, RetrievalSplit], SplitScorer]  # a cell scored elsewhere (sharded evaluation)


def scorer_for(plan: Plan, adapter: Adapter, test: Any) -> SplitScorer:
    """Step 2b: how the test split is scored: its task kind says."""
    return plan.task.scorer(plan, adapter, test)


def train_data(plan: Plan) -> tuple[RetrievalSplit, RetrievalSplit, str]:
    """Step 3a: the train split and the validation split that selects the checkpoint (never the test split)."""
    spec = plan.cfg.datasets[plan.train_name]
    train = load_split(plan.train_name, spec, "train", work_dir=plan.work)
    try:
        return train, load_split(plan.train_name, spec, "val", work_dir=plan.work), "val"
    except SplitNotFoundError:
        fraction = plan.train.val_fraction
        train, val = holdout(train, fraction)
        return train, val, f"{fraction:.0%} of train images held out"


def make_objective(plan: Plan, adapter: Adapter, train: RetrievalSplit) -> Objective:
    """Step 3b: the method's objective (its heads seeded by the cell's seed alone) with its teachers prepared."""
    extra = {"teachers": plan.cfg.teachers} if "teachers" in inspect.signature(plan.method.objective).parameters else {}
    # Re-seed: a method's random head initialisation must not depend on what loading the data and features drew
    # from the global RNG (the encode loop keeps its own generator; other loading steps may not).
    seed_everything(plan.cell.seed)
    objective = plan.method.objective(adapter, plan.train, **plan.method_options, **extra).to(plan.device)
    # Soft-label methods load their (cached) teacher features here.
    objective.prepare(train, work_dir=plan.work, device=plan.device, stage1_cache=plan.cache, progress=plan.progress)
    return objective


def train_or_reuse(
    plan: Plan, adapter: Adapter, objective: Objective, train: RetrievalSplit, val: RetrievalSplit,
    features: tuple[Stage1, Stage1], checkpoint: Path | None, on_epoch: Any = None,
) -> tuple[FitResult, str, bool]:  # fmt: skip
    """Step 3c: fit (resuming from ``checkpoint``), or reuse a stored training of the same key; returns the result,
    its store (:mod:`bench.train.store`) and whether it was reused.

    Every training is stored under its training key, frozen-backbone heads and end-to-end models alike, so it can be
    exported (``bench export``) and the uni-modal cells that train on the same dataset with the same settings reuse
    it. Cells of the training dataset itself always train (so ``--force`` really re-trains) and refresh the store.
    """
    train_feats, val_feats = features

    def validate() -> float:
        m = evaluate(adapter, val, plan.cfg.eval, device=plan.device, objective=objective, features=val_feats,
                     progress=False, rerank=False, topk=0)  # fmt: skip
        return metric_value(m, plan.train.select_metric)

    store = plan.trained_path
    data = {"train": content_key(train), "val": content_key(val)}
    stored = load_training(store, fingerprints=data) if plan.task.eval_only else None
    if stored is not None:
        log.info("%s: reusing the training stored in %s", plan.cell.label, store)
        load_state(adapter, objective, stored.last_state, plan.frozen)
        for row in stored.history if on_epoch is not None else []:  # the reused training's curves, as if fitted
            on_epoch(row)
        return stored, str(store), True
    result = fit(adapter, objective, train, plan.train, device=plan.device, seed=plan.cell.seed,
                 freeze_backbone=plan.frozen, train_features=train_feats, validate=validate,
                 progress=plan.progress, checkpoint=checkpoint, on_epoch=on_epoch)  # fmt: skip
    if current_dist().is_main:
        save_training(store, result, training_meta(plan, adapter, objective, train, val))
    return result, str(store), False


def training_meta(
    plan: Plan, adapter: Adapter, objective: Objective, train: RetrievalSplit, val: RetrievalSplit
) -> dict[str, Any]:
    """What a training store records besides its weights: enough to rebuild the model (family and build options)
    and to know what it was trained on."""
    snapshot = plan.training_snapshot
    return {
        "model": plan.cell.model,
        "family": plan.family,
        "options": plan.options,
        "train_dataset": plan.train_name,
        "method": plan.cell.method,
        "method_settings": objective.describe(),
        "seed": plan.cell.seed,
        "frozen_backbone": plan.frozen,
        "trained_parts": _trained_parts(plan, adapter, objective),
        "config": snapshot,
        "config_hash": config_hash(snapshot),
        "fingerprints": {"train": content_key(train), "val": content_key(val)},  # load_training compares them
        "versions": versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _trained_parts(plan: Plan, adapter: Adapter, objective: Objective) -> list[str]:
    groups = sorted({n.split(".")[0] for n, p in objective.named_parameters() if p.requires_grad})
    return adapter.trained_parts(plan.frozen) + [f"objective.{n}" for n in groups]


def trained_metrics(
    plan: Plan, adapter: Adapter, objective: Objective, result: FitResult, score: SplitScorer, selected_on: str
) -> dict[str, Any]:
    """Step 4 (trained): the last epoch's test metrics, then the selected state's, and how training went."""
    last = score(objective, last=True)
    load_state(adapter, objective, result.best_state or result.last_state, plan.frozen)
    return {
        "metrics": score(objective),
        "metrics_last": last,
        "selected_epoch": result.selected_epoch,
        "resumed_from_epoch": result.resumed_from_epoch,
        "selected_on": selected_on,
        "select_metric": plan.train.select_metric,
        "history": result.history,
        "trained_parts": _trained_parts(plan, adapter, objective),
        "method_settings": objective.describe(),
        "frozen_backbone": plan.frozen,
    }


def uncertainty(plan: Plan, test: RetrievalSplit, scored: Scored, per_query: Path | None) -> dict[str, Any]:
    """Step 5 (image-text cells): the per-query file and the bootstrap intervals, from the ranks just scored."""
    ev = plan.cfg.eval
    out: dict[str, Any] = {}
    if ev.per_query and per_query is not None:
        meta: dict[str, Any] = {"model": plan.cell.model, "dataset": plan.cell.dataset, "split": plan.cell.split,
                "method": plan.cell.method_id, "seed": plan.cell.seed}  # fmt: skip
        try:
            digest = save_per_query(
                per_query,
                scored.queries,
                test.caption_to_image,
                test.n_images,
                image_label=test.image_labels,
                image_id=[str(i) for i in test.image_ids],
                image_path=[os.path.abspath(p) for p in test.image_paths],
                caption_text=list(test.captions),
                rerank=scored.rerank,
                meta=meta,
            )
        except OSError as e:  # a full disk or an unwritable folder: the cell's failure, said in one line
            raise BenchError(f"cannot write {per_query}: {e.strerror or e}") from None
        out["per_query"] = {"file": per_query.name, "sha256": digest, "topk": ev.topk}
    if ev.bootstrap:
        bcfg = BootstrapConfig.of(ev)  # ev.bootstrap > 0 here
        out[ci_key(ev.ci_level)] = confidence_intervals(
            query_values(scored.queries, recall_ks(ev.ks)), test.n_images, bcfg
        )
        out["bootstrap"] = {"resamples": ev.bootstrap, "seed": ev.bootstrap_seed, "level": ev.ci_level,
                            "unit": "image"}  # fmt: skip
    return out


def run_cell(
    cell: Cell,
    cfg: BenchConfig,
    *,
    progress: bool = True,
    checkpoint: Path | None = None,
    per_query: Path | None = None,
    scorer: ScorerFactory | None = None,
) -> dict[str, Any]:
    """Plan ``cell`` (:func:`~bench.grid.plan.plan_cell`) and run it: see :func:`run_plan`."""
    return run_plan(plan_cell(cell, cfg, progress=progress), checkpoint=checkpoint, per_query=per_query, scorer=scorer)


def run_plan(
    plan: Plan, *, checkpoint: Path | None = None, per_query: Path | None = None, scorer: ScorerFactory | None = None
) -> dict[str, Any]:
    """Run one planned cell and return its result record (not yet written).

    ``checkpoint`` is where training saves its state after each epoch and resumes from (see
    :func:`bench.train.fit.fit`). ``per_query`` is where an image-text cell writes its per-query file (when
    ``[eval] per_query`` is on); the record names it and its sha256. Under ``torch.distributed`` every rank trains;
    only rank 0 evaluates on the test split and returns a record with ``status`` ``"ok"`` (the others return
    ``status`` ``"worker"``, not to be written). ``scorer`` scores a cell that does not train without building its
    adapter here (:mod:`bench.shard` merges a sharded evaluation through it).
    """
    t0 = time.perf_counter()
    cell, cfg, snapshot = plan.cell, plan.cfg, plan.snapshot
    device = plan.device  # a device this machine lacks fails before anything loads
    test = load_split(cell.dataset, cfg.datasets[cell.dataset], cell.split, work_dir=plan.work)  # data errors first
    track = open_run(cfg, run_name(cell.model, cell.dataset, cell.split, cell.method_id, cell.seed), snapshot,
                     select_metric=plan.train.select_metric) if current_dist().is_main else CellRun([])  # fmt: skip
    try:
        record = _run_steps(plan, test, checkpoint, per_query, track, scorer)
    except BaseException:
        track.fail()
        raise
    if record["status"] == "ok":
        record.update(provenance(snapshot, device, t0))
        track.finish(record)
    return record


def _run_steps(plan: Plan, test: RetrievalSplit, checkpoint: Path | None, per_query: Path | None, track: CellRun,
               scorer: ScorerFactory | None) -> dict[str, Any]:  # fmt: skip
    """Steps 1-5 of :func:`run_plan` (the record without its provenance)."""
    cell, snapshot = plan.cell, plan.snapshot
    if scorer is not None and plan.method.trains:
        raise ValueError(f"{cell.label}: a given scorer scores methods that do not train, not {cell.method!r}")
    adapter = build_adapter(plan) if scorer is None else None
    score = scorer_for(plan, adapter, test) if adapter is not None else scorer(plan, test)  # type: ignore[misc]
    record: dict[str, Any] = {"schema": SCHEMA, "status": "ok", "model": cell.model, "adapter": plan.family,
                              "dataset": cell.dataset, "split": cell.split, "method": cell.method_id,
                              "seed": cell.seed, **variant_fields(cell.variant)}  # fmt: skip
    record["precision"] = precision_block(plan)
    if "language" in snapshot["dataset"]:  # one language of a multilingual set (bench table's language columns)
        record["language"] = snapshot["dataset"]["language"]
    if not plan.method.trains:
        record["metrics"] = score()
        record.update(metrics_last=None, selected_epoch=None, history=[], trained_parts=[], frozen_backbone=True)
    else:
        train, val, selected_on = train_data(plan)
        features = stage1(plan, adapter, train), stage1(plan, adapter, val)
        objective = make_objective(plan, adapter, train)
        result, store, reused = train_or_reuse(plan, adapter, objective, train, val, features, checkpoint,
                                               track.epoch)  # fmt: skip
        record["trained_store"] = store
        if reused:
            record["reused_training"] = store
        if not current_dist().is_main:
            return {**record, "status": "worker"}
        record.update(trained_metrics(plan, adapter, objective, result, score, selected_on))
    if getattr(score, "extra_metrics", None):
        record["extra_metrics"] = score.extra_metrics
    record.update(plan.task.record_fields(plan, score, test, per_query))
    return record
