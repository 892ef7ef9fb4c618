"""The Python API, re-exported lazily by ``import bench``: configs, datasets, evaluation, scoring, grids, tables.

Everything here is what the ``bench`` command does, as functions that take and return plain objects::

    import bench

    split = bench.load_dataset("synthetic")                 # a dataset of the config, by id (or a table)
    metrics = bench.evaluate(model, split, transform=preprocess, tokenizer=tokenizer, device="cpu")
    metrics = bench.score(image_emb, text_emb, text_to_image)  # `bench score` on arrays
    records = bench.run(models=["towers"], methods=["zeroshot"])
    print(bench.table(records))

Devices are strings (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``) or ``torch.device``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.adapters.registry import create_adapter, register_adapter
from bench.config import BenchConfig, EvalConfig, apply_overrides, build_section, load_config
from bench.data import register_format
from bench.device import device_of
from bench.errors import ConfigError
from bench.methods import register_method
from bench.tasks import Split, register_task

if TYPE_CHECKING:
    import numpy as np
    import torch

    from bench.adapters.protocol import Adapter
    from bench.data.base import RetrievalSplit

__all__ = [
    "create_model",
    "device_of",
    "evaluate",
    "load_config",
    "load_dataset",
    "register_adapter",
    "register_format",
    "register_method",
    "register_task",
    "run",
    "score",
    "table",
]


def _config(config: BenchConfig | str | Path | None, overrides: Sequence[str] = ()) -> BenchConfig:
    cfg = config if isinstance(config, BenchConfig) else load_config(config)
    return apply_overrides(cfg, list(overrides)) if overrides else cfg


def load_dataset(
    dataset: str | Mapping[str, Any],
    split: str = "test",
    *,
    config: BenchConfig | str | Path | None = None,
    work_dir: str | Path | None = None,
) -> Split:
    """One split of a dataset (a :class:`~bench.data.base.RetrievalSplit` for image-text sets): a
    ``[datasets.<id>]`` of the config by id, or a table such as
    ``{"format": "karpathy", "root": "/data/coco", "file": "dataset_coco.json"}``.

    ``work_dir`` (default: the config's) is where generated data such as the synthetic images is cached.
    """
    from bench.data import load_split

    cfg = _config(config)
    if isinstance(dataset, str):
        if dataset not in cfg.datasets:
            from bench.errors import UnknownNameError

            raise UnknownNameError("dataset", dataset, list(cfg.datasets))
        name, spec = dataset, cfg.datasets[dataset]
    else:
        spec = dict(dataset)
        name = str(spec.get("format", "dataset"))
    return load_split(name, spec, split, work_dir=Path(work_dir or cfg.paths.work_dir))


def create_model(model: str, *, config: BenchConfig | str | Path | None = None, device: str = "cpu") -> Adapter:
    """An adapter built as a grid builds it: a ``[models.<id>]`` of the config, or ``family:checkpoint``."""
    from bench.grid.cell import model_spec

    cfg = _config(config)
    spec = model_spec(cfg, model)
    family = spec.pop("adapter")
    return create_adapter(family, spec, where=f"{cfg.source}: [models.{model}]").to(device_of(device))


def _as_adapter(
    model: Any, transform: Callable[[Any], Any] | None, tokenizer: Callable[[list[str]], Any] | None
) -> Any:
    from bench.adapters.protocol import AdapterBase
    from bench.adapters.wrapped import WrappedModel

    if isinstance(model, AdapterBase) and transform is None and tokenizer is None:
        return model
    transform = transform or getattr(model, "preprocess", None) or getattr(model, "transform", None)
    tokenizer = tokenizer or getattr(model, "tokenizer", None) or getattr(model, "tokenize", None)
    if not callable(transform) or not callable(tokenizer):
        raise ConfigError(
            "bench.evaluate: pass transform= (PIL image -> tensor) and tokenizer= (list of str -> tokens), or give "
            "the model preprocess/tokenizer attributes"
        )
    return WrappedModel(model, transform, tokenizer)


def evaluate(
    model: Any,
    dataset: RetrievalSplit | str | Mapping[str, Any],
    *,
    transform: Callable[[Any], Any] | None = None,
    tokenizer: Callable[[list[str]], Any] | None = None,
    split: str = "test",
    device: str | torch.device = "auto",
    config: BenchConfig | str | Path | None = None,
    progress: bool = False,
    **eval_options: Any,
) -> dict[str, Any]:
    """Exact i2t, t2i, t2t (and i2i where images carry labels) metrics of ``model`` on a dataset.

    Args:
        model: Any object with ``encode_image`` and ``encode_text`` (an open_clip model, say), or an adapter from
            :func:`create_model`.
        dataset: A split from :func:`load_dataset`, or what :func:`load_dataset` takes.
        transform: PIL image -> tensor (open_clip's ``preprocess``); default ``model.preprocess``.
        tokenizer: list of captions -> token tensor, or a mapping of tensors passed to ``encode_text`` as keywords.
        split: Which split, when ``dataset`` is not a split already.
        device: ``"auto"``, ``"cpu"``, ``"cuda:0"``, ...
        config: The config whose ``[eval]`` defaults apply (default: ``./bench.toml`` or the packaged one).
        progress: Show progress bars.
        **eval_options: ``[eval]`` keys: ``batch_size``, ``memory_mb``, ``precision``, ``rerank_k``, ...

    Returns:
        The ``metrics`` block of a result record (``results/README.md``): recalls in percent, ranks 1-based.
    """
    from bench.data.base import RetrievalSplit
    from bench.evaluation.itr import evaluate as evaluate_split

    cfg = _config(config)
    eval_cfg = build_section(EvalConfig, {**dataclasses.asdict(cfg.eval), **eval_options}, "bench.evaluate()")
    if not isinstance(dataset, RetrievalSplit):
        dataset = load_dataset(dataset, split, config=cfg)
    dev = device_of(device)
    adapter = _as_adapter(model, transform, tokenizer).to(dev)
    return evaluate_split(adapter, dataset, eval_cfg, device=dev, progress=progress)


def score(
    image_emb: np.ndarray | torch.Tensor,
    text_emb: np.ndarray | torch.Tensor,
    text_to_image: Sequence[int] | np.ndarray,
    *,
    image_labels: Sequence[int] | np.ndarray | None = None,
    memory_mb: float = 256.0,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """``bench score`` on arrays: row j of ``text_emb`` is caption j of image ``text_to_image[j]``.

    Embeddings are L2-normalised here; the result holds ``i2t``, ``t2i``, ``t2t`` (``i2i`` with labels) and
    ``rsum``, exact under the harness's tie rule (:data:`bench.scoring.TIE_RULE`).
    """
    from bench.scoring.itr import itr_metrics

    return itr_metrics(
        image_emb,
        text_emb,
        text_to_image,
        image_labels,
        memory_mb=memory_mb,
        device=None if device is None else device_of(device),
    )


def run(
    config: BenchConfig | str | Path | None = None,
    *,
    models: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    force: bool = False,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Run a grid in this process, as ``bench run`` does, and return its result records (done cells included).

    ``overrides`` are ``--set`` strings (``"train.epochs=2"``). A failed cell's record has ``status = "failed"``.
    """
    from bench.grid.local import expand_grid, run_grid
    from bench.grid.records import read_record

    cfg = _config(config, overrides)
    cells = expand_grid(
        cfg,
        models=list(models) if models else None,
        datasets=list(datasets) if datasets else None,
        methods=list(methods) if methods else None,
        seeds=list(seeds) if seeds else None,
    )
    report = run_grid(cfg, cells, force=force, progress=progress)
    # _path: where the record lives, so its per-query file is found (intervals, significance, bench.table)
    return [{**read_record(p), "_path": str(p)} for p in report.paths if p.is_file()]


def table(records: Sequence[Mapping[str, Any]], fmt: str = "markdown", **options: Any) -> str:
    """Records as a Markdown, CSV or LaTeX table (:func:`bench.report.tables.render`'s options)."""
    from bench.report.tables import render

    if "baseline_method" not in options and any(r.get("method") == "contrastive" for r in records):
        options["baseline_method"] = "contrastive"
    return render(records, fmt, **options)
