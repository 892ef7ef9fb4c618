"""itr-bench: one harness for image-text retrieval research.

``import bench`` is light: the API (:mod:`bench.api`) and its heavy dependencies load on first use::

    import bench
    split = bench.load_dataset("synthetic")
    metrics = bench.evaluate(model, split, transform=preprocess, tokenizer=tokenizer, device="cpu")

The packages follow the data path: :mod:`bench.data` (datasets) -> :mod:`bench.adapters` (models) ->
:mod:`bench.encode` (embeddings) -> :mod:`bench.scoring` (exact ranks) -> :mod:`bench.evaluation` ->
:mod:`bench.methods` and :mod:`bench.train` (fine-tuning) -> :mod:`bench.grid` (cells, records, launchers) ->
:mod:`bench.report` (tables) -> :mod:`bench.cli`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = (
    "create_model",
    "device_of",
    "evaluate",
    "load_config",
    "load_dataset",
    "register_adapter",
    "register_format",
    "register_method",
    "run",
    "score",
    "table",
)
__all__ = ["__version__", *_API]

if TYPE_CHECKING:
    from bench.api import (  # noqa: F401
        create_model,
        device_of,
        evaluate,
        load_config,
        load_dataset,
        register_adapter,
        register_format,
        register_method,
        run,
        score,
        table,
    )


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module("bench.api"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
