"""Exceptions raised by itr-bench.

Every error that comes from user input (a config file, a dataset file, a model name) is a :class:`BenchError`, so the
CLI can print one clear line instead of a traceback. Messages name the file and the field at fault.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "check_keys",
    "interrupt_behind",
    "BenchError",
    "ConfigError",
    "DataError",
    "SplitNotFoundError",
    "UnknownNameError",
    "WeightsUnavailableError",
]


class BenchError(Exception):
    """Base class of the errors the CLI reports as one line."""


class ConfigError(BenchError):
    """A malformed or unknown configuration key or value."""


class DataError(BenchError):
    """A dataset file, image or caption that cannot be used."""


class SplitNotFoundError(DataError):
    """A dataset has no split of the requested name (e.g. no ``val``: the harness then holds out train images)."""


class UnknownNameError(BenchError, KeyError):
    """A name (model, dataset, method, format) that is not registered."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(self.known) or '(none)'}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class WeightsUnavailableError(BenchError):
    """Pretrained weights could not be found locally, in a package, or on the hub (offline)."""


def check_keys(keys: Iterable[str], valid: Iterable[str], where: str) -> None:
    """Raise :class:`ConfigError` naming the first of ``keys`` not in ``valid``, and listing the valid ones.

    The one check behind every table: ``[train]`` and the other fixed sections, ``[models.<id>]`` against the
    adapter's ``build`` options, ``[datasets.<id>]`` against the format's loader, ``[methods.<id>]`` against the
    method's ``objective``.
    """
    valid = list(valid)
    for key in keys:
        if key not in valid:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(valid) or '(none)'}")


def interrupt_behind(exc: BaseException) -> BaseException | None:
    """The interrupt (Ctrl-C, SIGTERM, ``SystemExit``) an exception was raised while handling, if any.

    Cleanup code can turn an interrupt into an ordinary error: Ctrl-C inside ``torch.save`` leaves its zip writer
    half-written, and the writer's ``__exit__`` then raises ``RuntimeError: unexpected pos`` with the
    ``KeyboardInterrupt`` as its context. Code that catches ``Exception`` to record a failure and go on must stop
    instead: it re-raises what this returns.
    """
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if not isinstance(node, Exception):
            return node
        node = node.__cause__ or node.__context__
    return None
