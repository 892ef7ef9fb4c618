"""The dataset-format registry: ``@register_format(name, task=...)`` on a loader, looked up by name.

The same recipe as adapters and methods (:class:`bench.plugins.Registry`): built-in formats are a table ``name ->
module``, imported on first lookup, so listing formats imports no loader; installed packages add formats through the
``itr_bench.formats`` entry points. The loader modules import this module, and this module imports none of them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from bench.plugins import ENTRY_POINT_GROUPS, Registry
from bench.tasks import DEFAULT_TASK, TASKS

__all__ = ["BUILTIN", "FORMATS", "Loader", "format_task", "list_formats", "register_format"]

Loader = Callable[..., Any]
BUILTIN = {
    "albef": "bench.data.formats",
    "csv": "bench.data.formats",
    "flat_json": "bench.data.formats",
    "karpathy": "bench.data.formats",
    "coco": "bench.data.presets",
    "flickr30k": "bench.data.presets",
    "hf_dataset": "bench.data.hf",
    "parquet": "bench.data.hf",
    "precomp": "bench.data.precomp",
    "cars196": "bench.data.image_formats",
    "cub": "bench.data.image_formats",
    "inaturalist": "bench.data.image_formats",
    "inshop": "bench.data.image_formats",
    "sop": "bench.data.image_formats",
    "multi30k": "bench.data.multilingual",
    "xm3600": "bench.data.multilingual",
    "senteval_sts": "bench.data.sts",
    "sick": "bench.data.sts",
    "sts_tsv": "bench.data.sts",
    "stsb": "bench.data.sts",
    "synthetic": "bench.data.synthetic",
    "aro_vg_attribution": "bench.data.aro",
    "aro_vg_relation": "bench.data.aro",
    "caption_swaps": "bench.data.choice",
    "docci": "bench.data.long_captions",
    "jsonl": "bench.data.long_captions",
    "sharegpt4v": "bench.data.long_captions",
    "urban1k": "bench.data.long_captions",
    "valse": "bench.data.valse",
    "sugarcrepe": "bench.data.choice",
    "winoground": "bench.data.choice",
    "webdataset": "bench.data.shards",
}


def _check_loader(name: str, fn: Loader) -> None:
    params = list(inspect.signature(fn).parameters)
    if params[:2] != ["root", "split"]:
        raise TypeError(f"loader {fn.__qualname__} must take (root, split, ...), takes ({', '.join(params)})")
    _check_task(name, getattr(fn, "task", DEFAULT_TASK))


def _check_task(name: str, task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"format {name!r}: unknown task {task!r}; valid: {', '.join(TASKS.names())}")


# A loader states its task in a ``task`` attribute (register_format sets it; a plug-in's loader may carry one);
# without one it is an image-text format (bench.tasks.DEFAULT_TASK).
FORMATS: Registry[Loader] = Registry("dataset format", ENTRY_POINT_GROUPS["format"], BUILTIN,
                                     on_register=_check_loader)  # fmt: skip


def register_format(name: str, *, task: str = DEFAULT_TASK) -> Callable[[Loader], Loader]:
    """Register a loader function under a format name.

    Args:
        name: The value of ``format`` in a dataset table.
        task: The task kind the loader's splits are for (:mod:`bench.tasks`): ``itr`` (a
            :class:`~bench.data.base.RetrievalSplit`), ``image_retrieval``, ``sts`` or a plug-in's.

    Returns:
        A decorator that registers the function (with its ``task``) and returns it.

    Raises:
        ValueError: ``name`` is already registered (a built-in name included), or ``task`` is unknown.
        TypeError: the function does not take ``root`` and ``split`` as its first two parameters.
    """
    _check_task(name, task)

    def deco(fn: Loader) -> Loader:
        fn.task = task  # type: ignore[attr-defined]
        return FORMATS.register(name, fn)

    return deco


def list_formats() -> list[str]:
    """Names of the dataset formats, built-in and from installed plug-ins (``itr_bench.formats``), sorted."""
    return FORMATS.names()


def format_task(fmt: str) -> str:
    """The task kind name of format ``fmt`` (:func:`bench.tasks.get_task` gives the kind).

    Raises:
        UnknownNameError: ``fmt`` is not registered.
    """
    return getattr(FORMATS.get(fmt), "task", DEFAULT_TASK)
