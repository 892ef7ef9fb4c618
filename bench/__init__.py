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
    "register_task",
    "run",
    "score",
    "table",
)
# The types an extender needs (a model family, a dataset format, a method, what a record holds), by module.
_TYPES = {
    "Adapter": "bench.adapters.protocol",
    "AdapterBase": "bench.adapters.protocol",
    "BenchConfig": "bench.config",
    "Method": "bench.methods.base",
    "Objective": "bench.methods.base",
    "ResultRecord": "bench.grid.records",
    "RetrievalSplit": "bench.data.base",
}
__all__ = ["__version__", *_API, *_TYPES]

if TYPE_CHECKING:
    from bench.adapters.protocol import Adapter, AdapterBase  # noqa: F401
    from bench.api import (  # noqa: F401
        create_model,
        device_of,
        evaluate,
        load_config,
        load_dataset,
        register_adapter,
        register_format,
        register_method,
        register_task,
        run,
        score,
        table,
    )
    from bench.config import BenchConfig  # noqa: F401
    from bench.data.base import RetrievalSplit  # noqa: F401
    from bench.grid.records import ResultRecord  # noqa: F401
    from bench.methods.base import Method, Objective  # noqa: F401


def __getattr__(name: str) -> Any:
    module = "bench.api" if name in _API else _TYPES.get(name)
    if module is None:
        raise AttributeError(f"module 'bench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, *_TYPES])
