"""Configuration: ``bench.toml`` in frozen dataclasses, with type-checked ``--set section.key=value`` overrides.

Top-level tables: ``[paths]``, ``[grid]``, ``[train]``, ``[eval]``, ``[teachers]``, ``[models.<id>]``,
``[datasets.<id>]`` and ``[methods.<id>]``. The fixed tables are checked here (an unknown key raises and lists the
valid ones); each ``[models.<id>]`` table is checked against its adapter's ``build`` signature, each
``[datasets.<id>]`` against its format's loader, each ``[methods.<id>]`` against its method's options.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.errors import ConfigError, check_keys
from bench.names import safe_name

__all__ = [
    "BenchConfig",
    "EvalConfig",
    "GridConfig",
    "LauncherConfig",
    "PathsConfig",
    "TeachersConfig",
    "TrainConfig",
    "PACKAGED_CONFIG",
    "apply_overrides",
    "default_config_path",
    "load_config",
]


@dataclass(frozen=True)
class PathsConfig:
    """Where things are written."""

    results_dir: str = "results"  # one JSON per finished cell lands under <results_dir>/runs
    work_dir: str = "work_dir"  # caches (synthetic images, backbone features) and checkpoints; never committed


@dataclass(frozen=True)
class GridConfig:
    """What ``bench run`` runs when no ``--models/--datasets/--methods/--seeds`` are given."""

    models: list[str] = field(default_factory=lambda: ["vse_infty", "towers"])  # ids of [models.<id>] tables
    datasets: list[str] = field(default_factory=lambda: ["synthetic"])  # ids of [datasets.<id>] tables
    methods: list[str] = field(default_factory=lambda: ["zeroshot", "contrastive"])  # registered method names
    seeds: list[int] = field(default_factory=lambda: [0])  # one cell per seed


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning settings shared by every trained method."""

    epochs: int = 8  # passes over the train captions
    batch_size: int = 128  # captions per step; an image appears once per caption drawn
    lr: float = 5e-4  # AdamW peak learning rate
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    warmup_epochs: float = 1.0  # linear warm-up length, then cosine decay
    min_lr_ratio: float = 0.01  # final learning rate as a fraction of lr
    grad_accum: int = 1  # optimizer step every N batches (effective batch = batch_size * grad_accum)
    grad_clip: float = 2.0  # max gradient norm (0 = off); VSE∞ clips at 2
    amp: bool | Literal["auto"] = "auto"  # bf16 autocast: "auto" on CUDA only; true on any device (CPU bf16 stands in
    # for CUDA's, as the GPU-path tests run it); false never
    freeze_backbone: bool | str = "auto"  # "auto": freeze and cache backbone features on CPU, train end to end on GPU
    loss: str = "auto"  # "auto" (the adapter's base loss), "infonce", "triplet" or "sigmoid" (SigLIP)
    margin: float = 0.2  # triplet margin
    max_violation: bool = True  # triplet on the hardest negative (VSE++), else the sum over negatives
    temperature: float | str = 0.05  # initial InfoNCE temperature (learnable), the paper's 0.05 for every model;
    # "model": the checkpoint's own (OpenAI CLIP's 0.01), where the adapter has one
    val_fraction: float = 0.1  # share of train images held out for model selection when the dataset has no val split
    select_metric: str = "rsum"  # val metric that picks the checkpoint: rsum, or t2t_r1 / i2i_r1 for uni-modal
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1"
    num_workers: int = 0  # DataLoader workers for image decoding


Precision = Literal["auto", "fp32", "bf16"]  # what encoders may run in (see bench.encode.features.encoding_precision)
FeatureDtype = Literal["auto", "fp32", "bf16", "fp16"]  # stored stage-1 features (bench.encode.features.storage_dtype)


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings."""

    split: str = "test"  # split every cell is scored on (never used for selection)
    batch_size: int = 64  # images or captions per encoding batch
    memory_mb: float = 256.0  # memory budget of one score tile or strip of the exact scorer
    cache_features: bool = True  # cache frozen backbone features on disk (keyed by weights, transform, data)
    precision: Precision = "auto"  # encoders: "auto" = bf16 autocast on CUDA, fp32 on CPU
    feature_dtype: FeatureDtype = "auto"  # stored stage-1 features: "auto" = what the encoder ran in (never rounded);
    # "fp16" / "bf16" halve the feature cache of frozen backbones and round what is scored and trained on
    rerank_k: int | str = 0  # two-stage retrieval: re-score each query's top-k ITC candidates by the pair scorer;
    # "auto": the dataset protocol's depth (LAVIS: 256 COCO, 128 Flickr30K); 0 = off
    rerank_fusion: str = "itm+itc"  # re-ranked score: "itm" (pair score alone) or "itm+itc" (plus the ITC cosine)
    ks: list[int] = field(default_factory=lambda: [1, 5, 10])  # Recall@K cut-offs (RSUM's 1, 5, 10 always added)
    topk: int = 10  # each query's top-k list kept (per-query file, nDCG@10, mAP@R); 0: ranks only
    per_query: bool = True  # write every query's ranks and top-k beside the record (<method>-seed<s>.queries.npz)
    bootstrap: int = 1000  # image-clustered bootstrap resamples for the record's ci95; 0: no intervals
    bootstrap_seed: int = 0  # the resamples' seed: the same images are drawn for every cell, so cells pair
    ci_level: float = 0.95  # two-sided percentile interval


@dataclass(frozen=True)
class TeachersConfig:
    """The frozen uni-modal teachers of soft-label methods (CSA, USA, CUSA)."""

    image_model: str = "tf_efficientnet_lite0"  # timm name, or "unicom:ViT-B/32" (the paper's, from image_weights)
    image_weights: str = "auto"  # "auto" (packaged copy, else hub), "hub", "random", or a checkpoint path
    image_mode: str = "pooled"  # "pooled" feature, or "patchflat" (final tokens flattened, as the reference stores)
    text_model: str = "all-mpnet-base-v2"  # sentence-transformers name or folder (the paper's text teacher)
    text_max_length: int | None = None  # token limit (None: the model's max_seq_length); longer captions are cut
    allow_pickle: bool = False  # load an image_weights file that pickles more than tensors (runs code from it)


@dataclass(frozen=True)
class LauncherConfig:
    """Where grid cells run: ``local`` (this process), ``debug`` (submitit, in process) or ``slurm`` (job array).

    The other keys are SLURM resources of each cell's job (submitit ``AutoExecutor`` parameters).
    """

    name: str = "local"  # "local", "debug" or "slurm"
    folder: str = ""  # submitit job files and logs ("" = <work_dir>/jobs)
    partition: str = ""  # sbatch --partition ("" = the cluster's default)
    gpus_per_node: int = 0  # GPUs per cell; more than one trains data-parallel, one task per GPU
    tasks_per_node: int = 0  # processes per cell (0 = one per GPU, at least 1); >1 without GPUs: gloo on CPU
    cpus_per_task: int = 2  # sbatch --cpus-per-task
    mem_gb: float = 16.0  # memory per node in GB
    timeout_min: int = 240  # wall time per job; a job that reaches it checkpoints and is requeued
    max_requeues: int = 3  # requeues after timeout before a job fails (preemptions do not count)
    array_parallelism: int = 64  # cells of one array running at once
    account: str = ""  # sbatch --account
    qos: str = ""  # sbatch --qos
    constraint: str = ""  # sbatch --constraint
    setup: list[str] = field(default_factory=list)  # shell lines run before each job ("module load cuda", ...)
    sbatch: dict[str, Any] = field(default_factory=dict)  # any further sbatch options, e.g. {exclusive = true}


TRACKERS = ("tensorboard", "wandb", "mlflow")


@dataclass(frozen=True)
class TrackingConfig:
    """Experiment trackers every cell logs to (off by default; each is an optional extra). Logging never changes a
    number and is not part of a cell's config hash."""

    backends: list[str] = field(default_factory=list)  # any of "tensorboard", "wandb", "mlflow"
    dir: str = ""  # TensorBoard event files, wandb's runs, MLflow's file store ("" = <results_dir>/tracking)
    project: str = "itr-bench"  # the wandb project and the MLflow experiment
    wandb_mode: str = "offline"  # "offline" (files only; `wandb sync` uploads them later) or "online"
    mlflow_uri: str = ""  # an MLflow tracking URI ("" = a local file store under dir)


@dataclass(frozen=True)
class BenchConfig:
    """The whole configuration."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    teachers: TeachersConfig = field(default_factory=TeachersConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {"adapter": family, **build options}
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {"format": ..., **loader options}
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)  # method name -> options
    source: str = "<defaults>"  # file the config came from, named in errors

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict snapshot (for result records)."""
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


_SECTIONS: dict[str, type] = {
    "paths": PathsConfig,
    "grid": GridConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "teachers": TeachersConfig,
    "launcher": LauncherConfig,
    "tracking": TrackingConfig,
}
_FREE_TABLES = ("models", "datasets", "methods")

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


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> BenchConfig:
    """Build a :class:`BenchConfig` from parsed TOML, checking every fixed key."""
    valid = list(_SECTIONS) + list(_FREE_TABLES)
    kwargs: dict[str, Any] = {"source": source}
    for key, table in data.items():
        if key in _SECTIONS:
            kwargs[key] = build_section(_SECTIONS[key], table, f"{source}: [{key}]")
        elif key in _FREE_TABLES:
            if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
                raise ConfigError(f"{source}: [{key}] must hold one table per id, like [{key}.<id>]")
            kwargs[key] = {k: dict(v) for k, v in table.items()}
        else:
            raise ConfigError(f"{source}: unknown top-level key {key!r}; valid keys: {', '.join(valid)}")
    if "datasets" in kwargs:
        kwargs["datasets"] = expand_languages(kwargs["datasets"], source)
    cfg = BenchConfig(**kwargs)
    for table in _FREE_TABLES:
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


PACKAGED_CONFIG = Path(__file__).with_name("bench.toml")  # the repository's bench.toml, shipped in the wheel


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


def _parse_value(text: str) -> Any:
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
                if node is data and p not in _SECTIONS and p not in _FREE_TABLES:
                    valid = ", ".join(list(_SECTIONS) + list(_FREE_TABLES))
                    raise ConfigError(f"--set {item!r}: unknown section {p!r}; valid: {valid}")
                node[p] = node.get(p) if isinstance(node.get(p), dict) else {}
            node = node[p]
        node[parts[-1]] = _parse_value(raw.strip())
    return config_from_dict(data, f"{cfg.source} (with --set)")
