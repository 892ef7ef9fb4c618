"""Configuration: ``bench.toml`` in frozen dataclasses, with type-checked ``--set section.key=value`` overrides.

Top-level tables: ``[paths]``, ``[grid]``, ``[train]``, ``[eval]``, ``[teachers]``, ``[models.<id>]``,
``[datasets.<id>]`` and ``[methods.<id>]``. The fixed tables are checked here (an unknown key raises and lists the
valid ones); each ``[models.<id>]`` table is checked against its adapter's ``build`` signature, each
``[datasets.<id>]`` against its format's loader, each ``[methods.<id>]`` against its method's options.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from bench.config.checks import build_section, check_ids, check_seeds
from bench.config.sections import (
    FREE_TABLES,
    SECTIONS,
    BenchConfig,
    EvalConfig,
    FeatureDtype,
    FingerprintMode,
    GridConfig,
    LauncherConfig,
    PathsConfig,
    Precision,
    TeachersConfig,
    TrackingConfig,
    TrainConfig,
)
from bench.errors import ConfigError

# The sections' types are re-exported: ``bench.config`` is where the rest of the package reads its config types from.
__all__ = [
    "BenchConfig",
    "EvalConfig",
    "FeatureDtype",
    "FingerprintMode",
    "GridConfig",
    "LauncherConfig",
    "PathsConfig",
    "Precision",
    "TeachersConfig",
    "TrackingConfig",
    "TrainConfig",
    "PACKAGED_CONFIG",
    "apply_overrides",
    "build_section",
    "check_seeds",
    "config_from_dict",
    "dataset_members",
    "default_config_path",
    "expand_languages",
    "load_config",
    "parse_value",
]


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> BenchConfig:
    """Build a :class:`BenchConfig` from parsed TOML, checking every fixed key."""
    valid = list(SECTIONS) + list(FREE_TABLES) + ["sweep"]
    kwargs: dict[str, Any] = {"source": source}
    for key, table in data.items():
        if key == "sweep":  # checked against the grid by bench.grid.sweep.sweep_of
            if not isinstance(table, dict):
                raise ConfigError(f"{source}: [sweep] must be a table of key = [values]")
            kwargs["sweep"] = dict(table)
        elif key in SECTIONS:
            kwargs[key] = build_section(SECTIONS[key], table, f"{source}: [{key}]")
        elif key in FREE_TABLES:
            if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
                raise ConfigError(f"{source}: [{key}] must hold one table per id, like [{key}.<id>]")
            kwargs[key] = {k: dict(v) for k, v in table.items()}
        else:
            raise ConfigError(f"{source}: unknown top-level key {key!r}; valid keys: {', '.join(valid)}")
    if "datasets" in kwargs:
        kwargs["datasets"] = expand_languages(kwargs["datasets"], source)
    cfg = BenchConfig(**kwargs)
    for table in FREE_TABLES:
        check_ids(table, list(getattr(cfg, table)), source)
    for mid, spec in cfg.models.items():
        if "adapter" not in spec:
            raise ConfigError(f"{source}: [models.{mid}] has no 'adapter' key (e.g. adapter = \"clip\")")
        if not isinstance(spec["adapter"], str):
            raise ConfigError(f"{source}: [models.{mid}].adapter: expected a family name, got {spec['adapter']!r}")
        if "train" in spec and not isinstance(spec["train"], dict):
            raise ConfigError(f"{source}: [models.{mid}].train must be a table of [train] keys, got {spec['train']!r}")
        if isinstance(spec.get("train"), dict):  # checked like [train] itself, so a bad value fails here
            build_section(TrainConfig, {**dataclasses.asdict(kwargs.get("train", TrainConfig())), **spec["train"]},
                          f"{source}: [models.{mid}.train]")  # fmt: skip
        methods = spec.get("methods", [])
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            raise ConfigError(f"{source}: [models.{mid}] methods must be a list of method names, got {methods!r}")
    for did, spec in cfg.datasets.items():
        if "format" not in spec:
            raise ConfigError(f"{source}: [datasets.{did}] has no 'format' key (e.g. format = \"synthetic\")")
        if not isinstance(spec["format"], str):
            raise ConfigError(f"{source}: [datasets.{did}].format: expected a format name, got {spec['format']!r}")
    return cfg


def expand_languages(datasets: dict[str, dict[str, Any]], source: str) -> dict[str, dict[str, Any]]:
    """A dataset table with ``languages = ["en", "de", ...]`` stands for one dataset per language, ``<id>-<lang>``
    with ``language = "<lang>"``, added beside it (the group's own id then names all of them in ``[grid]`` and on
    the command line). A member table the user wrote themself must agree with the group."""
    out = dict(datasets)
    for did, spec in datasets.items():
        langs = spec.get("languages")
        if langs is None:
            continue
        if not isinstance(langs, list) or not langs or not all(isinstance(x, str) and x.strip() for x in langs):
            raise ConfigError(f"{source}: [datasets.{did}].languages: expected a list of language codes, got {langs!r}")
        if "language" in spec:
            raise ConfigError(f"{source}: [datasets.{did}] sets both 'language' and 'languages'; keep one")
        base = {k: v for k, v in spec.items() if k != "languages"}
        for lang in langs:
            member = {**base, "language": lang}
            mid = f"{did}-{lang}"
            if mid in datasets and datasets[mid] != member:
                raise ConfigError(f"{source}: [datasets.{mid}] differs from language {lang!r} of [datasets.{did}]; "
                                  "rename one")  # fmt: skip
            out[mid] = member
    return out


def dataset_members(cfg: BenchConfig, name: str) -> list[str]:
    """The datasets an id stands for: its languages' datasets for a ``languages`` group, else itself."""
    spec = cfg.datasets.get(name, {})
    langs = spec.get("languages") if isinstance(spec, dict) else None
    return [f"{name}-{lang}" for lang in langs] if isinstance(langs, list) else [name]


PACKAGED_CONFIG = Path(__file__).parents[1] / "bench.toml"  # the repository's bench.toml, shipped in the wheel


def default_config_path() -> Path:
    """``./bench.toml`` when the current folder has one, else the default config shipped with the package."""
    local = Path("bench.toml")
    return local if local.is_file() else PACKAGED_CONFIG


def load_config(path: str | Path | None = None) -> BenchConfig:
    """Read ``bench.toml`` (``path``, else ``./bench.toml``, else the copy shipped with the package)."""
    path = Path(path) if path is not None else default_config_path()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: malformed TOML: {e}") from None
    return config_from_dict(data, str(path))


def parse_value(text: str) -> Any:
    """A command-line value read as TOML (``1e-4``, ``true``, ``[1, 2]``); a bare word is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # bare words are strings: --set train.device=cpu


def apply_overrides(cfg: BenchConfig, overrides: list[str]) -> BenchConfig:
    """Apply ``section.key=value`` overrides (TOML values) with the same checks as the file."""
    data = cfg.to_dict()
    for item in overrides:
        dotted, sep, raw = item.partition("=")
        parts = dotted.strip().split(".")
        if not sep or len(parts) < 2:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.lr=1e-4")
        node = data
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], dict):
                if node is data and p not in SECTIONS and p not in FREE_TABLES:
                    valid = ", ".join(list(SECTIONS) + list(FREE_TABLES))
                    raise ConfigError(f"--set {item!r}: unknown section {p!r}; valid: {valid}")
                node[p] = node.get(p) if isinstance(node.get(p), dict) else {}
            node = node[p]
        node[parts[-1]] = parse_value(raw.strip())
    return config_from_dict(data, f"{cfg.source} (with --set)")
