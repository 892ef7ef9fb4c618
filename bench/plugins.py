"""Registries of named plug-ins (adapter families, methods, dataset formats, task kinds).

Each is built in or comes from an installed package.

A :class:`Registry` knows three kinds of entries, and lists them all without importing any:

* built-ins, as a table ``name -> module``: the module registers the name when imported (timm's pattern), and is
  imported only when the name is asked for, so ``bench list`` never imports torch;
* names registered at run time with :meth:`Registry.register` (the ``@register_*`` decorators);
* entry points of installed distributions, in the registry's group (``itr_bench.adapters``, ``itr_bench.methods``,
  ``itr_bench.formats``, ``itr_bench.tasks``), as pytest and submitit find their plug-ins. An entry point names the
  object (``my_pkg.model:MyAdapter``); if loading it does not register the name itself, the object is registered
  under the entry point's name. Entry points are read in every process, a SLURM job's too, so a plug-in installed in
  the job's environment is found there without anything being pickled.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Generic, TypeVar

from bench.errors import ConfigError, UnknownNameError

__all__ = ["ENTRY_POINT_GROUPS", "Registry"]

log = logging.getLogger(__name__)

T = TypeVar("T")
ENTRY_POINT_GROUPS = {
    "adapter": "itr_bench.adapters",
    "method": "itr_bench.methods",
    "format": "itr_bench.formats",
    "task": "itr_bench.tasks",
}


class Registry(Generic[T]):
    """Name -> object, filled by built-in modules, decorators and entry points.

    Args:
        kind: What is registered, for messages (``"adapter"``, ``"method"``, ``"dataset format"``).
        group: The entry-point group read for plug-ins.
        builtin: Built-in names and the module that registers each.
        on_register: Called with ``(name, obj)`` before an object is stored (to check or annotate it).
    """

    def __init__(
        self,
        kind: str,
        group: str,
        builtin: Mapping[str, str],
        on_register: Callable[[str, T], None] | None = None,
    ) -> None:
        self.kind = kind
        self.group = group
        self._builtin = dict(builtin)
        self._items: dict[str, T] = {}
        self._on_register = on_register
        self._entry_points: dict[str, metadata.EntryPoint] | None = None

    def register(self, name: str, obj: T) -> T:
        """Store ``obj`` under ``name``. Another object already under that name, or under a built-in name that is
        not from the built-in's own module (imported or not yet), raises ``ValueError``: the one duplicate check."""
        current = self._items.get(name)
        if current is not None and current is not obj:
            owner = getattr(current, "__qualname__", repr(current))
            raise ValueError(f"{self.kind} {name!r} is already registered (by {owner})")
        module = self._builtin.get(name)
        if module is not None and getattr(obj, "__module__", None) != module:
            raise ValueError(f"{self.kind} {name!r} is already registered (a built-in, by {module})")
        if self._on_register is not None:
            self._on_register(name, obj)
        self._items[name] = obj
        return obj

    def entry_points(self) -> dict[str, metadata.EntryPoint]:
        """The installed plug-ins of this registry's group, by name (read once per process)."""
        if self._entry_points is None:
            self._entry_points = {ep.name: ep for ep in metadata.entry_points(group=self.group)}
        return self._entry_points

    def names(self) -> list[str]:
        """Every name that :meth:`get` can resolve, sorted; nothing is imported."""
        return sorted({*self._builtin, *self._items, *self.entry_points()})

    def get(self, name: str) -> T:
        """The object registered under ``name``, importing its module or plug-in on first use.

        Raises:
            UnknownNameError: no built-in, registered or installed plug-in has that name.
            ConfigError: the plug-in's entry point fails to load (the message names its distribution).
        """
        if name in self._items:
            return self._items[name]
        if name in self._builtin:
            importlib.import_module(self._builtin[name])
            if name in self._items:
                return self._items[name]
            raise RuntimeError(f"built-in {self.kind} {name!r}: {self._builtin[name]} did not register it")
        ep = self.entry_points().get(name)
        if ep is None:
            raise UnknownNameError(self.kind, name, self.names())
        try:
            obj = ep.load()
        except Exception as e:  # a broken plug-in is the user's install problem: say which one, in one line
            dist = ep.dist.name if ep.dist is not None else "?"
            raise ConfigError(f"{self.kind} {name!r}: plug-in {ep.value} (from {dist}) failed to load: {e}") from e
        if name not in self._items:
            self.register(name, obj)
        return self._items[name]

    def load_all(self) -> dict[str, T]:
        """Import every built-in and plug-in; ``{name: object}`` (for registry-wide tests and ``bench list -v``)."""
        return {name: self.get(name) for name in self.names()}

    def unregister(self, name: str) -> None:
        """Forget a name registered at run time (a notebook's or a test's); built-ins and entry points stay."""
        self._items.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()
