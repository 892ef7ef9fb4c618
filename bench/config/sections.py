"""The config's sections as frozen dataclasses: every fixed key of ``bench.toml``, its type and its default."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "BenchConfig",
    "EvalConfig",
    "FREE_TABLES",
    "FeatureDtype",
    "GridConfig",
    "LauncherConfig",
    "PathsConfig",
    "Precision",
    "SECTIONS",
    "TRACKERS",
    "TeachersConfig",
    "TrackingConfig",
    "TrainConfig",
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
FingerprintMode = Literal["stat", "content"]  # how a split's fingerprint stamps each file (bench.data.stamps)
FeatureDtype = Literal["auto", "fp32", "bf16", "fp16"]  # stored stage-1 features (bench.encode.features.storage_dtype)


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings."""

    split: str = "test"  # split every cell is scored on (never used for selection)
    batch_size: int = 64  # images or captions per encoding batch
    memory_mb: float = 256.0  # memory budget of one score tile or strip of the exact scorer
    cache_features: bool = True  # cache frozen backbone features on disk (keyed by weights, transform, data)
    fingerprint: FingerprintMode = "stat"  # what says a data file changed: "stat" (size and mtime) or "content"
    # (sha256 of its bytes, cached by inode, size, mtime and ctime; for data copied with its mtimes kept)
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
    sweep: dict[str, Any] = field(default_factory=dict)  # [sweep]: key -> values, and how (bench.grid.sweep)
    source: str = "<defaults>"  # file the config came from, named in errors

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict snapshot (for result records)."""
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


SECTIONS: dict[str, type] = {
    "paths": PathsConfig,
    "grid": GridConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "teachers": TeachersConfig,
    "launcher": LauncherConfig,
    "tracking": TrackingConfig,
}
FREE_TABLES = ("models", "datasets", "methods")
