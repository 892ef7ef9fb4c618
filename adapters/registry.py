"""Adapter registry: ``@register_adapter("name")`` on a class, ``create_adapter(name, options)`` to build one.

Built-in families are listed in :data:`BUILTIN` (name -> module) and imported on first lookup; installed packages
add families through the ``itr_bench.adapters`` entry-point group (see :mod:`bench.plugins`). Family modules import
their heavy libraries (timm, open_clip, transformers) inside their builders only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from bench.errors import ConfigError, check_keys
from bench.plugins import ENTRY_POINT_GROUPS, Registry

if TYPE_CHECKING:
    from bench.adapters.protocol import Adapter

__all__ = ["ADAPTERS", "adapter_options", "create_adapter", "get_adapter_class", "list_adapters", "register_adapter"]

BUILTIN = {
    "blip": "bench.adapters.blip",
    "clip": "bench.adapters.clip",
    "embeddings": "bench.adapters.embeddings",
    "hf_clip": "bench.adapters.hf_clip",
    "scan": "bench.adapters.scan",
    "sgraf": "bench.adapters.sgraf",
    "towers": "bench.adapters.towers",
    "vse_infty": "bench.adapters.vse_infty",
}
T = TypeVar("T", bound=type)


def _check_family(name: str, cls: type) -> None:
    if not callable(getattr(cls, "build", None)):
        raise TypeError(f"adapter {getattr(cls, '__qualname__', cls)!r} has no build() classmethod")
    cls.name = name


ADAPTERS: Registry[type] = Registry("adapter", ENTRY_POINT_GROUPS["adapter"], BUILTIN, on_register=_check_family)


def register_adapter(name: str) -> Callable[[T], T]:
    """Class decorator registering an adapter family under ``name``; a duplicate name raises ``ValueError``.

    The class must provide ``build(cls, **options)``: the only code that touches hubs or disk.
    """

    def deco(cls: T) -> T:
        ADAPTERS.register(name, cls)
        return cls

    return deco


def list_adapters() -> list[str]:
    """Names of all adapter families (built-in, registered and installed plug-ins); imports none of them."""
    return ADAPTERS.names()


def get_adapter_class(name: str) -> type:
    """The class registered under ``name``; an unknown name raises and lists the known ones."""
    return ADAPTERS.get(name)


def adapter_options(name: str) -> dict[str, Any]:
    """The options an adapter's ``build`` accepts, with their defaults (``inspect.Parameter.empty`` if required)."""
    sig = inspect.signature(get_adapter_class(name).build)
    return {p.name: p.default for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def create_adapter(name: str, options: dict[str, Any] | None = None, *, where: str = "") -> Adapter:
    """Build adapter ``name`` with ``options`` (one ``[models.<id>]`` table, less ``adapter``).

    Raises:
        UnknownNameError: ``name`` is not registered.
        ConfigError: an option is unknown (the message lists the valid ones) or a required one is missing.
    """
    cls = get_adapter_class(name)
    options = dict(options or {})
    valid = adapter_options(name)
    where = where or f"adapter {name!r}"
    check_keys(options, sorted(valid), where)
    missing = [k for k, v in valid.items() if v is inspect.Parameter.empty and k not in options]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")
    return cls.build(**options)
