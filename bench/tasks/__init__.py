"""Task kinds: a lazy registry of what datasets are for, each kind an object (:class:`~bench.tasks.base.Task`).

The same recipe as adapters, methods and formats (:class:`bench.plugins.Registry`): the built-in kinds are a table
``name -> module`` imported on first lookup, a plug-in adds one with :func:`register_task` or an
``itr_bench.tasks`` entry point, and a format names its kind in ``register_format(name, task=...)``. Built in:

* ``itr``: image-text retrieval (:class:`~bench.data.base.RetrievalSplit`), trained on and sharded;
* ``image_retrieval``: image-to-image retrieval on labelled image sets, eval-only;
* ``sts``: sentence-pair similarity, eval-only;
* ``choice``: choice sets (SugarCrepe, Winoground, swapped captions), eval-only.

This module imports nothing of the data, grid or report rooms at import time (they import it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bench.plugins import ENTRY_POINT_GROUPS, Registry
from bench.tasks.base import Column, Split, Task

if TYPE_CHECKING:
    from bench.config import BenchConfig

__all__ = [
    "BUILTIN",
    "DEFAULT_TASK",
    "TASKS",
    "Column",
    "Split",
    "Task",
    "get_task",
    "list_tasks",
    "register_task",
    "task_of",
    "task_of_record",
]

DEFAULT_TASK = "itr"  # a format registered without a task, and a record without a ``task`` field
BUILTIN = {
    "itr": "bench.tasks.itr",
    "image_retrieval": "bench.tasks.image_retrieval",
    "sts": "bench.tasks.sts",
    "choice": "bench.tasks.choice",
}


def _check(name: str, cls: type[Task]) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"task {name!r}: expected a subclass of bench.tasks.Task, got {cls!r}")
    if cls.name != name:
        raise ValueError(f"task class {cls.__qualname__} is named {cls.name!r}, registered as {name!r}")


TASKS: Registry[type[Task]] = Registry("task", ENTRY_POINT_GROUPS["task"], BUILTIN, on_register=_check)
_INSTANCES: dict[type[Task], Task] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register a :class:`Task` subclass under its ``name``.

    Raises:
        ValueError: the name is taken (a built-in's included).
        TypeError: ``cls`` is not a Task subclass.
    """
    return TASKS.register(cls.name, cls)


def get_task(name: str) -> Task:
    """The task kind ``name`` (one instance per class).

    Raises:
        UnknownNameError: no built-in, registered or installed task has that name.
    """
    cls = TASKS.get(name)
    if cls not in _INSTANCES:
        _INSTANCES[cls] = cls()
    return _INSTANCES[cls]


def list_tasks() -> list[str]:
    """Names of the task kinds, built-in and from plug-ins, sorted; nothing is imported."""
    return TASKS.names()


def task_of(cfg: BenchConfig, dataset: str) -> Task:
    """The task kind of a configured dataset (from its format).

    Raises:
        UnknownNameError: the dataset's format is not registered.
    """
    from bench.data.registry import format_task

    return get_task(format_task(cfg.datasets[dataset].get("format", dataset)))


def task_of_record(rec: Mapping[str, Any]) -> str:
    """The task name of a result record: its ``task`` field, else (a status record of an eval-only set) its config
    snapshot's format's task, else image-text retrieval (records of image-text cells carry no ``task``)."""
    task = rec.get("task")
    if task is None:
        config = rec.get("config")
        dataset = config.get("dataset") if isinstance(config, Mapping) else None
        fmt = dataset.get("format") if isinstance(dataset, Mapping) else None
        if isinstance(fmt, str):
            from bench.data.registry import format_task
            from bench.errors import UnknownNameError

            try:
                task = format_task(fmt)
            except UnknownNameError:
                task = None
    return str(task or DEFAULT_TASK)
