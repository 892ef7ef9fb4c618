"""Hyperparameter sweeps: a grid axis of config values.

A sweep names config keys and the values each takes, in ``[sweep]`` or with ``bench run --sweep KEY=V1,V2``::

    [sweep]
    methods.cusa.alpha = [0.05, 0.1, 0.2]   # a [methods.<m>] option: cells of method m
    train.lr = [1e-4, 5e-4]                 # a [train] key: cells of methods that train
    eval.topk = [10, 50]                    # an [eval] key: every cell
    models.vse_infty.precomp_enc_type = ["basic", "backbone"]   # a model's option: that model's cells
    search = "grid"                         # or "random": `count` combinations drawn with `seed`
    limit = 1000                            # more cells than this need --yes

Each cell of the grid becomes one cell per combination of the keys that apply to it (a *variant*). A variant is named
by its method and values, ``cusa[alpha=0.1,train.lr=0.0001]`` (:func:`variant_id`): that id is the record's
``method``, so variants sit side by side in one results folder and every table, comparison and export tells them
apart; the record's ``variant`` holds the values by full key. The values reach the cell's config, hence its config
hash, so the skip rule needs nothing new. A cell that no key applies to keeps its plain method name.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import re
from dataclasses import dataclass
from typing import Any

from bench.config import BenchConfig, config_from_dict, parse_value
from bench.config.checks import check_like_default
from bench.config.sections import EvalConfig, TrainConfig
from bench.errors import ConfigError, UnknownNameError
from bench.methods import get_method

__all__ = [
    "DEFAULT_LIMIT",
    "Sweep",
    "Variant",
    "base_method",
    "format_value",
    "parse_sweep_arg",
    "parse_variant_id",
    "sweep_of",
    "variant_config",
    "variant_fields",
    "variant_id",
    "value_sort_key",
    "variant_sort_key",
    "variants_of",
]

Variant = tuple[tuple[str, Any], ...]  # ((full dotted key, value), ...), keys sorted
DEFAULT_LIMIT = 1000
_OPTIONS = ("search", "count", "seed", "limit")
_SECTIONS = ("train", "eval", "methods", "models")
# Keys that say where or how a cell runs, not what it computes: sweeping them would make variants with equal numbers.
_NOT_SWEPT = {"train.device", "train.num_workers", "eval.cache_features", "eval.fingerprint", "eval.split"}


@dataclass(frozen=True)
class Sweep:
    """A checked sweep: each key's values, and how combinations are chosen."""

    keys: dict[str, list[Any]]  # full dotted key -> its values, in key order
    search: str = "grid"  # "grid": every combination; "random": `count` of them, drawn with `seed`
    count: int = 0
    seed: int = 0
    limit: int = DEFAULT_LIMIT
    cli_keys: frozenset[str] = frozenset()  # the keys given with --sweep (a [sweep] key may be for filtered cells)

    def __bool__(self) -> bool:
        return bool(self.keys)


def _flatten(table: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in table.items():
        key = f"{prefix}{k}"
        out.extend(_flatten(v, f"{key}.") if isinstance(v, dict) else [(key, v)])
    return out


def parse_sweep_arg(text: str) -> tuple[str, list[Any]]:
    """``KEY=V1,V2,...`` (``--sweep``): the key and its values, each read as TOML (a bare word is a string)."""
    key, sep, raw = text.partition("=")
    values = [v.strip() for v in raw.split(",")] if raw.strip() else []
    if not sep or not key.strip() or "." not in key:
        raise ConfigError(f"--sweep {text!r}: expected KEY=V1,V2,..., e.g. methods.cusa.alpha=0.05,0.1")
    return key.strip(), [parse_value(v) for v in values if v]


def sweep_of(cfg: BenchConfig, items: list[str] | None = None) -> Sweep:
    """The sweep of ``cfg``'s ``[sweep]`` table and the ``--sweep`` ``items`` (a key given there replaces the
    table's), every key and value checked against the config.

    Raises:
        ConfigError: an unknown or unsweepable key, an empty list, a value listed twice, a key given twice on the
            command line, a value of the wrong type or out of range (named with the key and value).
    """
    table = dict(cfg.sweep)
    where = f"{cfg.source}: [sweep]"
    opts = {k: table.pop(k) for k in _OPTIONS if k in table}
    keys: dict[str, tuple[list[Any], str]] = {}
    for key, values in _flatten(table):
        if key in keys:
            raise ConfigError(f"{where}: {key} is swept twice")
        keys[key] = (values, where)
    given: set[str] = set()
    for item in items or []:
        key, values = parse_sweep_arg(item)
        if key in given:
            raise ConfigError(f"--sweep: {key} is swept twice on the command line; list its values once")
        given.add(key)
        keys[key] = (values, "--sweep")
    checked = {key: _check_values(cfg, key, values, src) for key, (values, src) in sorted(keys.items())}
    search = opts.get("search", "grid")
    if search not in ("grid", "random"):
        raise ConfigError(f'{where}.search: "grid" or "random", got {search!r}')
    for name, low in (("count", 1 if search == "random" else 0), ("seed", 0), ("limit", 1)):
        value = opts.get(name, {"count": 0, "seed": 0, "limit": DEFAULT_LIMIT}[name])
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{where}.{name}: expected an integer >= {low}, got {value!r}")
    if search == "random" and "count" not in opts:
        raise ConfigError(f'{where}: search = "random" needs count = <combinations to draw>')
    return Sweep(checked, search=search, count=opts.get("count", 0), seed=opts.get("seed", 0),
                 limit=opts.get("limit", DEFAULT_LIMIT), cli_keys=frozenset(given))  # fmt: skip


def _check_values(cfg: BenchConfig, key: str, values: Any, where: str) -> list[Any]:
    parts = key.split(".")
    if parts[0] not in _SECTIONS:
        raise ConfigError(f"{where}: {key}: only keys of [train], [eval], [methods.<m>] and [models.<id>] are swept")
    if key in _NOT_SWEPT:
        raise ConfigError(f"{where}: {key} says where or how cells run, not what they compute; it is not swept")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: {key}: expected a non-empty list of values, got {values!r}")
    for v in values:
        if isinstance(v, list | dict):
            raise ConfigError(f"{where}: {key}: each value must be a number, string or boolean, got {v!r}")
    seen = set()
    for v in values:
        if (type(v), v) in seen:
            raise ConfigError(f"{where}: {key}: value {format_value(v)} is listed twice")
        seen.add((type(v), v))
    fixed = {"train": TrainConfig, "eval": EvalConfig}
    if parts[0] in fixed:
        fields = [f.name for f in dataclasses.fields(fixed[parts[0]])]
        if len(parts) != 2 or parts[1] not in fields:
            raise ConfigError(f"{where}: {key}: unknown key; [{parts[0]}] has {', '.join(fields)}")
    elif parts[0] == "methods":
        if len(parts) != 3:
            raise ConfigError(f"{where}: {key}: expected methods.<method>.<option>")
        get_method(parts[1])  # an unknown method is one line listing the known ones
    else:
        from bench.adapters.registry import adapter_options

        if len(parts) != 3:
            raise ConfigError(f"{where}: {key}: expected models.<id>.<option>")
        if parts[1] not in cfg.models:
            raise UnknownNameError("model", parts[1], list(cfg.models))
        family = cfg.models[parts[1]]["adapter"]
        if parts[2] == "adapter" or parts[2] not in adapter_options(family):
            raise ConfigError(f"{where}: {key}: adapter {family!r} has no option {parts[2]!r}; valid: "
                              + ", ".join(adapter_options(family)))  # fmt: skip
    for v in values:  # each value through the same checks as the config file, named with its key and value
        try:
            c = variant_config(cfg, ((key, v),))
            if parts[0] == "methods":
                get_method(parts[1]).check_options(c.methods.get(parts[1], {}), f"[methods.{parts[1]}]")
            elif parts[0] == "models":
                from bench.adapters.registry import adapter_options

                default = adapter_options(cfg.models[parts[1]]["adapter"])[parts[2]]
                check_like_default(v, default, f"[models.{parts[1]}].{parts[2]}")
        except ConfigError as e:
            reason = str(e).removeprefix(f"{cfg.source}: ")
            raise ConfigError(f"{where}: {key} = {format_value(v)}: {reason}") from None
    return list(values)


def variants_of(cfg: BenchConfig, sweep: Sweep, model: str, method: str) -> list[Variant]:
    """The variants of a (model, method) cell: one per combination of the sweep's keys that apply to it, or the one
    empty variant when none does."""
    keys = [k for k in sweep.keys if applies(k, model, method)]
    combos = list(itertools.product(*(sweep.keys[k] for k in keys)))
    if sweep.search == "random" and len(combos) > sweep.count:
        # Drawn from the keys alone, so every cell with the same keys (other seeds, datasets, models) gets the same
        # combinations, and their results pair.
        rng = random.Random(f"{sweep.seed}:{','.join(keys)}")
        combos = [combos[i] for i in sorted(rng.sample(range(len(combos)), sweep.count))]
    return [tuple(zip(keys, combo, strict=True)) for combo in combos]


def applies(key: str, model: str, method: str) -> bool:
    """Whether sweeping ``key`` changes the numbers of a (``model``, ``method``) cell."""
    section, _, rest = key.partition(".")
    if section == "eval":
        return True
    if section == "train":
        return get_method(method).trains
    owner = rest.partition(".")[0]
    return owner == (method if section == "methods" else model)


# (id of the base config, variant) -> (base config, variant config): a grid plans each cell's config once. The base
# is held so that its id is not reused while the entry lives.
_CONFIGS: dict[tuple[int, Variant], tuple[BenchConfig, BenchConfig]] = {}


def variant_config(cfg: BenchConfig, variant: Variant) -> BenchConfig:
    """``cfg`` with ``variant``'s values set, checked like the file (a bad value raises its :class:`ConfigError`)."""
    if not variant:
        return cfg
    hit = _CONFIGS.get((id(cfg), variant))
    if hit is not None and hit[0] is cfg:
        return hit[1]
    data = cfg.to_dict()
    for key, value in variant:
        node = data
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    out = config_from_dict(data, cfg.source)
    if len(_CONFIGS) > 4096:
        _CONFIGS.clear()
    _CONFIGS[(id(cfg), variant)] = (cfg, out)
    return out


def _short(key: str, method: str) -> str:
    section, _, rest = key.partition(".")
    if section == "methods" and rest.startswith(f"{method}."):
        return rest[len(method) + 1 :]
    if section == "models":
        return "model." + rest.partition(".")[2]
    return key


def format_value(value: Any) -> str:
    """A value as a variant id writes it: TOML's spelling, strings bare unless they would read as something else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        plain = re.fullmatch(r"[^,\[\]=\s\"]+", value) is not None and parse_value(value) == value
        return value if plain else json.dumps(value)
    return str(value)


def variant_id(method: str, variant: Variant) -> str:
    """A variant's name: ``cusa[alpha=0.1,tau_teacher=0.05]`` (method options bare, other keys as ``train.lr``,
    ``eval.topk``, ``model.<option>``); the method itself when the variant is empty."""
    if not variant:
        return method
    return f"{method}[{','.join(f'{_short(k, method)}={format_value(v)}' for k, v in variant)}]"


def variant_fields(variant: Variant) -> dict[str, Any]:
    """What a record of ``variant``'s cell adds: ``{"variant": {full key: value}}``, nothing for a plain cell."""
    return {"variant": dict(variant)} if variant else {}


def value_sort_key(value: Any) -> tuple[int, Any, str]:
    """Sort swept values: numbers as numbers, before anything else, which sorts as text."""
    return (0, value, "") if isinstance(value, int | float) else (1, 0, str(value))


def variant_sort_key(variant: Any) -> tuple[Any, ...]:
    """Sort variants by their values (:func:`value_sort_key`; a plain cell's ``None`` first)."""
    if not isinstance(variant, dict):
        return ()
    return tuple((k, *value_sort_key(v)) for k, v in sorted(variant.items()))


def base_method(method_id: str) -> str:
    """The registered method of a record's ``method`` (a variant id, or a plain method name)."""
    return method_id.partition("[")[0]


def parse_variant_id(method_id: str, model: str) -> tuple[str, Variant]:
    """Read :func:`variant_id`'s output back: ``(method, variant)`` (``bench export vse_infty:cusa[alpha=0.1]:0``)."""
    method, sep, rest = method_id.partition("[")
    if not sep:
        return method, ()
    if not rest.endswith("]") or not rest[:-1]:
        raise ConfigError(f"{method_id!r}: expected METHOD[key=value,...]")
    out = []
    for item in re.findall(r'(?:[^,"]|"(?:[^"\\]|\\.)*")+', rest[:-1]):
        short, eq, text = item.partition("=")
        if not eq:
            raise ConfigError(f"{method_id!r}: {item!r} is not key=value")
        if short.startswith("model."):
            key = f"models.{model}.{short[6:]}"
        elif short.partition(".")[0] in ("train", "eval"):
            key = short
        else:
            key = f"methods.{method}.{short}"
        out.append((key, json.loads(text) if text.startswith('"') else parse_value(text)))
    return method, tuple(sorted(out, key=lambda kv: kv[0]))
