"""Dataset loaders: a registry of formats and the one entry point :func:`load_split`.

A dataset is one ``[datasets.<name>]`` table of ``bench.toml``::

    [datasets.coco]
    format = "karpathy"            # a registered format; defaults to the table's name when that is a format
    root = "/data/coco"            # relative roots resolve against the current directory
    file = "dataset_coco.json"     # every other key is an option of the format's loader

A loader is a function ``fn(root: Path, split: str, **options) -> RetrievalSplit`` registered with
:func:`~bench.data.registry.register_format` (the built-in ones are imported on first use of their name). Its
keyword parameters are the format's options, so an unknown key is caught before
loading. Two keyword parameters are context, not options, and are passed only when the loader declares them:
``name`` (the dataset name to stamp on the split) and ``work_dir`` (where generated data may be cached).

A format serves one *task kind* (:mod:`bench.tasks`): ``itr`` (image-text retrieval, a :class:`RetrievalSplit`),
``image_retrieval`` (image-to-image retrieval, an :class:`~bench.data.image_sets.ImageRetrievalSplit`), ``sts``
(sentence-pair similarity, an :class:`~bench.data.sts.STSSplit`) or a plug-in's. The task adds keys of its own to
the table (:meth:`~bench.tasks.Task.table_options`): the image-text evaluation protocol (``pre_caption``...), or
for eval-only kinds ``train_on``, the image-text dataset a trained method fine-tunes on before the model is scored
on them.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.data.base import RetrievalSplit, load_image
from bench.data.registry import FORMATS, Loader, format_task, list_formats, register_format
from bench.errors import ConfigError, check_keys
from bench.tasks import Split, Task, get_task

__all__ = [
    "FORMATS",
    "RetrievalSplit",
    "check_dataset",
    "format_options",
    "format_task",
    "list_formats",
    "load_image",
    "load_split",
    "register_format",
]

log = logging.getLogger(__name__)

# Keyword parameters a loader may declare to receive context from load_split; they are never user options.
_CONTEXT_PARAMS = ("name", "work_dir")


def _loader(fmt: str) -> Loader:
    return FORMATS.get(fmt)


def _task_options(fmt: str) -> dict[str, Any]:
    """The keys the format's task adds to its tables (those its loader does not take), with their defaults."""
    params = inspect.signature(_loader(fmt)).parameters
    return {k: v for k, v in get_task(format_task(fmt)).table_options(params).items() if k not in params}


def format_options(fmt: str) -> list[str]:
    """The keys a dataset table of format ``fmt`` may hold besides ``format``, sorted.

    Raises:
        UnknownNameError: ``fmt`` is not registered.
    """
    params = inspect.signature(_loader(fmt)).parameters
    return sorted([*(p for p in params if p != "split" and p not in _CONTEXT_PARAMS), *_task_options(fmt)])


def _resolve_root(value: Any, dataset: str) -> Path:
    if not isinstance(value, str | os.PathLike):
        raise ConfigError(f"dataset {dataset!r}: 'root' must be a path string, got {type(value).__name__}")
    # abspath, not resolve(): keep symlinked data folders as the user wrote them.
    return Path(os.path.abspath(os.path.expanduser(os.fspath(value))))


def _check_type(dataset: str, key: str, value: Any, default: Any) -> None:
    # Types are inferred from the defaults: enough to catch `restval_in_train = "no"` or `seed = "0"` early;
    # options whose default is None check their own values.
    if default is None or default is inspect.Parameter.empty:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(
            f"dataset {dataset!r}: option {key!r} must be {type(default).__name__}, got {type(value).__name__} "
            f"({value!r})"
        )


def check_dataset(name: str, spec: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Check a dataset table without loading anything: its format, unknown and missing keys, and each option's type
    (inferred from the loader's defaults). Returns the format and the options (without ``format``).

    Raises:
        UnknownNameError: the format is not registered.
        ConfigError: a key is unknown to the format, a required key is missing, or a value has the wrong type.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(f"dataset {name!r}: expected a table of settings, got {type(spec).__name__}")
    options = dict(spec)
    fmt = options.pop("format", None)
    if fmt is None:
        if name not in list_formats():
            raise ConfigError(f"dataset {name!r} has no 'format' key; known formats: {', '.join(list_formats())}")
        fmt = name
    if not isinstance(fmt, str):
        raise ConfigError(f"dataset {name!r}: 'format' must be a string, got {type(fmt).__name__}")
    params = inspect.signature(_loader(fmt)).parameters
    check_keys(sorted(options), ["format", *format_options(fmt)], f"dataset {name!r} (format {fmt!r})")
    for key, p in params.items():
        if key == "split" or key in _CONTEXT_PARAMS:
            continue
        if key not in options and p.default is inspect.Parameter.empty:
            raise ConfigError(f"dataset {name!r} (format {fmt!r}): missing required key {key!r}")
        if key in options and key != "root":
            _check_type(name, key, options[key], p.default)
    for key, default in _task_options(fmt).items():
        if key in options:
            _check_type(name, key, options[key], default)
    return fmt, options


def load_split(name: str, spec: Mapping[str, Any], split: str, *, work_dir: Path) -> Split:
    """Load one split of a configured dataset.

    Args:
        name: The dataset's name (the ``<name>`` of ``[datasets.<name>]``), stamped on the returned split.
        spec: The dataset table: ``format`` (defaults to ``name`` when that is a registered format), ``root`` and
            the format's options.
        split: ``train``, ``val``, ``test`` or any split the format offers.
        work_dir: Where generated data (the synthetic images) is cached.

    Returns:
        The loaded split: a :class:`RetrievalSplit` for image-text formats, the split type of the format's task
        otherwise (a :class:`bench.tasks.Split`).

    Raises:
        UnknownNameError: the format is not registered.
        ConfigError: a key is unknown to the format, a required key is missing, or a value has the wrong type.
        DataError: the split does not exist, or a data file, row or image is missing or malformed.
    """
    fmt, options = check_dataset(name, spec)
    loader = _loader(fmt)
    params = inspect.signature(loader).parameters

    task: Task = get_task(format_task(fmt))
    # The task's own keys: the image-text protocol (applied below), or an eval-only set's train_on (a grid key).
    held = {k: options.pop(k) for k in _task_options(fmt) if k in options}
    root = options.pop("root", None)
    if root is not None:
        root = _resolve_root(root, name)
    if "name" in params:
        options["name"] = name
    if "work_dir" in params:
        options["work_dir"] = Path(work_dir)

    log.debug("loading dataset %r split %r (format %r, root %s)", name, split, fmt, root)
    out = loader(root, split, **options)
    if out.dataset != name:
        out = replace(out, dataset=name)
    out = task.finish(out, held, f"[datasets.{name}]")
    log.info("dataset %s/%s: %s", name, split, task.summary(out))
    return out
