"""What ``bench run --force`` means for the caches: inside :func:`refreshing`, every cache file (stage-1 features,
teacher features) is rebuilt the first time a cell asks for it and shared by later cells of the same run, so a forced
run computes everything it reports from the data as it is now, even where a file was replaced in a way its
fingerprint cannot see (same size, restored mtime)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["must_rebuild", "refreshing", "reusable"]

_REBUILT: set[str] | None = None  # inside refreshing(): the cache paths this run has rebuilt


@contextlib.contextmanager
def refreshing(active: bool = True) -> Iterator[None]:
    """Rebuild caches on first use while inside (nested: the outermost run's rebuilt files are shared); a no-op
    when ``active`` is false."""
    global _REBUILT
    outer = _REBUILT
    if active and outer is None:
        _REBUILT = set()
    try:
        yield
    finally:
        _REBUILT = outer


def _key(path: Path | str) -> str:
    return os.path.abspath(path)


def must_rebuild(path: Path | str) -> bool:
    """Whether the cache file at ``path`` must be computed afresh by the caller, who is about to write it: true the
    first time a refreshing run asks (the path is then counted as rebuilt), false otherwise."""
    if _REBUILT is None or _key(path) in _REBUILT:
        return False
    _REBUILT.add(_key(path))
    return True


def reusable(path: Path | str) -> bool:
    """Whether a reader that does not rebuild the file may read it: always outside a refreshing run, and inside one
    only once this run has rebuilt it."""
    return _REBUILT is None or _key(path) in _REBUILT
