"""Adapter registry: ``@register_adapter("name")`` on a class, ``create_adapter(name, options)`` to build one.

Registration happens when the family's module is imported; :func:`_load_builtin` imports the package ``adapters``
on first lookup (as submitit's ``_get_plugins`` does), so ``bench`` never imports ``adapters`` at import time.
Family modules import their heavy libraries (timm, open_clip, transformers) inside their builders only.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from bench.errors import ConfigError, UnknownNameError

__all__ = ["adapter_options", "create_adapter", "get_adapter_class", "list_adapters", "register_adapter"]

_ADAPTERS: dict[str, type] = {}
T = TypeVar("T", bound=type)


def register_adapter(name: str) -> Callable[[T], T]:
    """Class decorator registering an adapter family under ``name``; a duplicate name raises ``ValueError``.

    The class must provide ``build(cls, **options)``: the only code that touches hubs or disk.
    """

    def deco(cls: T) -> T:
        if name in _ADAPTERS and _ADAPTERS[name] is not cls:
            raise ValueError(f"adapter {name!r} is already registered by {_ADAPTERS[name].__qualname__}")
        if not callable(getattr(cls, "build", None)):
            raise TypeError(f"adapter {cls.__qualname__} has no build() classmethod")
        cls.name = name
        _ADAPTERS[name] = cls
        return cls

    return deco


@functools.lru_cache(maxsize=1)
def _load_builtin() -> None:
    import adapters  # noqa: F401  (registers the built-in families)


def list_adapters() -> list[str]:
    """Names of all registered adapter families."""
    _load_builtin()
    return sorted(_ADAPTERS)


def get_adapter_class(name: str) -> type:
    """The class registered under ``name``; an unknown name raises and lists the known ones."""
    _load_builtin()
    try:
        return _ADAPTERS[name]
    except KeyError:
        raise UnknownNameError("adapter", name, list(_ADAPTERS)) from None


def adapter_options(name: str) -> dict[str, Any]:
    """The options an adapter's ``build`` accepts, with their defaults (``inspect.Parameter.empty`` if required)."""
    sig = inspect.signature(get_adapter_class(name).build)
    return {p.name: p.default for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def create_adapter(name: str, options: dict[str, Any] | None = None, *, where: str = "") -> Any:
    """Build adapter ``name`` with ``options`` (one ``[models.<id>]`` table, less ``adapter``).

    Raises:
        UnknownNameError: ``name`` is not registered.
        ConfigError: an option is unknown (the message lists the valid ones) or a required one is missing.
    """
    cls = get_adapter_class(name)
    options = dict(options or {})
    valid = adapter_options(name)
    where = where or f"adapter {name!r}"
    for key in options:
        if key not in valid:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(sorted(valid))}")
    missing = [k for k, v in valid.items() if v is inspect.Parameter.empty and k not in options]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")
    return cls.build(**options)
