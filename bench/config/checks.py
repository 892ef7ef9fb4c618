"""How a config table's values are checked: types from the section dataclasses' annotations, numeric ranges,
seeds, ids, and the keys that take a few words besides their type. Every check names the file and the key."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any

from bench.config.sections import (
    TRACKERS,
    EvalConfig,
    GridConfig,
    LauncherConfig,
    TeachersConfig,
    TrackingConfig,
    TrainConfig,
)
from bench.errors import ConfigError, check_keys
from bench.names import safe_name

__all__ = ["SEED_RANGE", "build_section", "check_ids", "check_like_default", "check_range", "check_seeds"]


# Allowed ranges of the numeric settings, checked whenever a config is read (file, --set, the Python API), so a
# bad value is one line naming the key before any cell runs: key -> (low, high, low included, high included).
# Every float must also be finite.
_INF = math.inf
SEED_RANGE = (0, 2**32 - 1)  # what numpy and torch seeding accept
SEED_BOUNDS = (0, SEED_RANGE[1], True, True)
_RANGES: dict[type, dict[str, tuple[float, float, bool, bool]]] = {
    TrainConfig: {
        "epochs": (1, _INF, True, False),
        "batch_size": (1, _INF, True, False),
        "lr": (0, _INF, False, False),
        "weight_decay": (0, _INF, True, False),
        "warmup_epochs": (0, _INF, True, False),
        "min_lr_ratio": (0, 1, True, True),
        "grad_accum": (1, _INF, True, False),
        "grad_clip": (0, _INF, True, False),
        "margin": (0, _INF, True, False),
        "temperature": (0, _INF, False, False),
        "val_fraction": (0, 1, False, False),
        "num_workers": (0, 1024, True, True),
    },
    EvalConfig: {
        "batch_size": (1, _INF, True, False),
        "memory_mb": (0, _INF, False, False),
        "rerank_k": (0, _INF, True, False),
        "topk": (0, _INF, True, False),
        "bootstrap": (0, _INF, True, False),
        "bootstrap_seed": SEED_BOUNDS,
        "ci_level": (0, 1, False, False),
    },
    LauncherConfig: {
        "gpus_per_node": (0, 1024, True, True),
        "tasks_per_node": (0, 1024, True, True),
        "cpus_per_task": (1, _INF, True, False),
        "mem_gb": (0, _INF, False, False),
        "timeout_min": (1, _INF, True, False),
        "max_requeues": (0, _INF, True, False),
        "array_parallelism": (1, _INF, True, False),
    },
    TeachersConfig: {"text_max_length": (1, _INF, True, False)},
}


def _range_text(lo: float, hi: float, lo_in: bool, hi_in: bool) -> str:
    if hi == _INF:
        return f"{'>=' if lo_in else '>'} {lo:g}"
    return f"in {'[' if lo_in else '('}{lo:g}, {hi:g}{']' if hi_in else ')'}"


def check_range(cls: type, key: str, value: Any, where: str) -> None:
    """Raise :class:`ConfigError` when a numeric setting is out of its range (or a float is nan or infinite)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value!r}")
    bounds = _RANGES.get(cls, {}).get(key)
    if bounds is None or value is None or not isinstance(value, int | float) or isinstance(value, bool):
        return
    lo, hi, lo_in, hi_in = bounds
    ok = (value >= lo if lo_in else value > lo) and (value <= hi if hi_in else value < hi)
    if not ok:
        raise ConfigError(f"{where}: must be {_range_text(*bounds)}, got {value!r}")


def check_like_default(value: Any, default: Any, where: str) -> None:
    """An option without a declared type (a method's or an adapter's keyword) takes values of its default's type: a
    bool or a string exactly, a number any int or float (not a bool). No default (or ``None``): anything."""
    if isinstance(default, bool | str):
        ok = type(value) is type(default)
    elif isinstance(default, int | float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        return
    if not ok:
        raise ConfigError(f"{where}: expected {type(default).__name__} like the default {default!r}, got {value!r}")


def check_seeds(seeds: list[int], where: str) -> None:
    """Seeds are integers in [0, 2**32 - 1] (numpy's and torch's seeding range)."""
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not SEED_RANGE[0] <= s <= SEED_RANGE[1]:
            raise ConfigError(f"{where}: seed {s!r} must be an integer in [0, {SEED_RANGE[1]}]")


_BAD_ID = re.compile(r"[/\\\x00]")


def check_ids(table: str, ids: list[str], where: str) -> None:
    """Ids of ``[models.<id>]`` / ``[datasets.<id>]`` / ``[methods.<id>]`` name result folders: no path separators, no
    ``.`` or ``..``, and no two that become the same folder name once made file-system safe."""
    seen: dict[str, str] = {}
    for key in ids:
        if not key.strip() or key in (".", "..") or _BAD_ID.search(key):
            raise ConfigError(f"{where}: [{table}.{key!r}]: an id must be a plain name (no '/', '\\', '.' or '..')")
        folder = safe_name(key)
        if folder in seen:
            raise ConfigError(
                f"{where}: [{table}.{seen[folder]!r}] and [{table}.{key!r}] would share the result folder {folder!r}; "
                "rename one"
            )
        seen[folder] = key


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_check_type(v, item, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _check_type(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} is not a {tp}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            choices = ", ".join(repr(a) for a in typing.get_args(tp))
            raise ConfigError(f"{where}: expected one of {choices}, got {value!r}")
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected nothing, got {value!r}")
        return value
    if isinstance(tp, type) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def build_section(cls: type, table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {table!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    check_keys(table, names, where)
    for key, value in table.items():
        kwargs[key] = _check_type(value, hints[key], f"{where}.{key}")
        check_range(cls, key, kwargs[key], f"{where}.{key}")
    if cls is GridConfig and "seeds" in kwargs:
        check_seeds(kwargs["seeds"], f"{where}.seeds")
    if cls is TrainConfig and isinstance(kwargs.get("temperature"), str) and kwargs["temperature"] != "model":
        raise ConfigError(f'{where}.temperature: a number > 0 or "model" (the checkpoint\'s own), '
                          f"got {kwargs['temperature']!r}")  # fmt: skip
    if cls is EvalConfig and isinstance(kwargs.get("rerank_k"), str) and kwargs["rerank_k"] != "auto":
        raise ConfigError(f'{where}.rerank_k: a number of candidates, "auto" or 0 (off), got {kwargs["rerank_k"]!r}')
    if cls is TrackingConfig:
        bad = [b for b in kwargs.get("backends", []) if b not in TRACKERS]
        if bad:
            raise ConfigError(f"{where}.backends: unknown tracker {bad[0]!r}; valid: {', '.join(TRACKERS)}")
        if kwargs.get("wandb_mode", "offline") not in ("offline", "online"):
            raise ConfigError(f'{where}.wandb_mode: "offline" or "online", got {kwargs["wandb_mode"]!r}')
    if cls is EvalConfig and "ks" in kwargs:
        bad = [k for k in kwargs["ks"] if k < 1]
        if bad or not kwargs["ks"]:
            raise ConfigError(f"{where}.ks: Recall@K cut-offs must be integers >= 1, got {kwargs['ks']!r}")
    return cls(**kwargs)


