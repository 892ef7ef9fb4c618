"""Methods: what a grid varies besides model and data (zero-shot, the CUSA ablation, plug-ins).

The registry lives here; the methods live in :mod:`bench.methods.base` (``zeroshot``, the :class:`Method` and
:class:`Objective` base classes) and :mod:`bench.methods.cusa` (``contrastive``, ``csa``, ``usa``, ``cusa``), each
imported only when one of its names is asked for. Installed packages add methods through the ``itr_bench.methods``
entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from bench.plugins import ENTRY_POINT_GROUPS, Registry

if TYPE_CHECKING:  # base imports register_method from here
    from bench.methods.base import Method

__all__ = ["METHODS", "get_method", "list_methods", "register_method"]

BUILTIN = {
    "zeroshot": "bench.methods.base",
    "contrastive": "bench.methods.cusa",
    "csa": "bench.methods.cusa",
    "usa": "bench.methods.cusa",
    "cusa": "bench.methods.cusa",
}
# The order tables and the grid list methods in: the CUSA ablation, then anything else alphabetically.
ABLATION_ORDER = ("zeroshot", "contrastive", "csa", "usa", "cusa")
M = TypeVar("M", bound=type)


def _name_it(name: str, cls: type) -> None:
    cls.name = name


METHODS: Registry[type] = Registry("method", ENTRY_POINT_GROUPS["method"], BUILTIN, on_register=_name_it)


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator registering a method; a duplicate name raises ``ValueError``."""

    def deco(cls: M) -> M:
        METHODS.register(name, cls)
        return cls

    return deco


def list_methods() -> list[str]:
    """Every method name (built-in and plug-ins), in ablation order; imports none of them."""
    return method_order(METHODS.names())


def method_order(names: list[str]) -> list[str]:
    """``names`` sorted as the CUSA ablation reads (zeroshot, contrastive, csa, usa, cusa), the rest after; a sweep
    variant (``cusa[alpha=0.1]``) sorts with its method, after it."""
    rank = {m: i for i, m in enumerate(ABLATION_ORDER)}
    return sorted(names, key=lambda m: (rank.get(m.partition("[")[0], len(rank)), m.partition("[")[0], m))


def get_method(name: str) -> Method:
    """An instance of method ``name``; an unknown name raises and lists the known ones."""
    return METHODS.get(name)()
