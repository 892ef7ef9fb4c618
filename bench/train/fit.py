"""Fine-tuning loop: AdamW, warm-up + cosine schedule, gradient accumulation, bf16 autocast, selection on val.

With a ``checkpoint`` path the loop saves its whole state after every epoch (trainable weights, objective, optimizer,
scheduler, epoch, NumPy/torch RNG states, history, best state so far) and resumes from it when the file exists, so a
preempted or requeued job ends with the same weights and metrics as an uninterrupted run; at most the epoch in
flight is repeated. Under ``torch.distributed`` the same loop trains data-parallel (:mod:`bench.train.distributed`).

Two data paths share one loop. With a frozen backbone the batches are rows of the cached stage-1 features and only the
heads run (minutes on a CPU); otherwise images and captions go through the whole adapter. A batch is a draw of
captions; each brings its image, so an image can appear twice and the losses treat same-image pairs as positives.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from bench.adapters.protocol import Adapter
from bench.atomic import atomic_torch_save
from bench.config import TrainConfig
from bench.data.base import RetrievalSplit
from bench.encode.features import FeatureSet, to_device, use_channels_last, worker_error
from bench.errors import ConfigError, DataError
from bench.methods.base import Objective
from bench.train.distributed import DistEnv, current, gather_rows, reduce_grads, shard

__all__ = ["FitResult", "fit", "load_state", "resolve_amp", "seed_everything"]

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class FitResult:
    """What :func:`fit` hands back."""

    selected_epoch: int  # 1-based epoch whose val score was best
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: loss terms, lr, val metric, seconds
    best_val: float = float("-inf")
    best_state: dict[str, Any] | None = None  # trainable module + objective at the selected epoch (CPU copies)
    last_state: dict[str, Any] | None = None  # the same after the last epoch
    resumed_from_epoch: int = 0  # epochs restored from a checkpoint (0: trained from scratch)


def resolve_amp(value: bool | str, device: torch.device) -> bool:
    """``train.amp``: whether training runs under bf16 autocast (``"auto"``: on CUDA only)."""
    if value == "auto":
        return device.type == "cuda"
    if isinstance(value, bool):
        return value
    raise ConfigError(f'[train] amp: expected true, false or "auto", got {value!r}')


def _cosine_lr(step: int, total: int, warmup: int, min_ratio: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _feature_batches(
    feats: tuple[FeatureSet, FeatureSet],
    split: RetrievalSplit,
    order: np.ndarray,
    batch_size: int,
    device: torch.device,
) -> Iterator[tuple[dict, dict, torch.Tensor, torch.Tensor]]:
    img_feats, txt_feats = feats
    c2i = torch.from_numpy(split.caption_to_image)
    env = current()
    for s in range(0, len(order), batch_size):
        caps = torch.from_numpy(shard(order[s : s + batch_size], env))
        imgs = c2i[caps]
        yield (
            to_device({k: v[imgs] for k, v in img_feats.items()}, device, torch.float32),
            to_device({k: v[caps] for k, v in txt_feats.items()}, device, torch.float32),
            imgs.to(device),
            caps.to(device),
        )


def fit(
    adapter: Adapter,
    objective: Objective,
    train: RetrievalSplit,
    cfg: TrainConfig,
    *,
    device: torch.device,
    seed: int,
    freeze_backbone: bool,
    train_features: tuple[FeatureSet, FeatureSet] | None,
    validate: Callable[[], float],
    progress: bool = True,
    checkpoint: Path | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """Train ``adapter``'s trainable module and ``objective`` on ``train``; keep the state best on ``validate()``.

    On return the adapter and objective still hold the last epoch's weights; ``FitResult.best_state`` holds the
    selected (best-on-val) ones, for :func:`load_state`. With ``checkpoint``, the state after each epoch is saved
    there (by rank 0) and a run that finds the file resumes after its epoch. ``on_epoch`` (rank 0 only) receives
    each epoch's history row as it ends (the experiment trackers).

    Raises:
        ConfigError: nothing is trainable (e.g. frozen CLIP towers with no head).
    """
    env = current()
    if not freeze_backbone:  # the layout evaluation uses, set before the optimizer sees the weights
        use_channels_last(adapter)
    module = adapter.trainable_module(freeze_backbone)
    module_params = [p for p in module.parameters() if p.requires_grad]
    objective_params = [p for p in objective.parameters() if p.requires_grad]
    params = module_params + objective_params
    if not params:  # a frozen adapter still trains when the method brings heads (CUSA's cross/uni heads)
        raise ConfigError(
            f"adapter {adapter.name!r} has nothing to train with train.freeze_backbone={freeze_backbone} and "
            "method adds no heads; set train.freeze_backbone=false or give the adapter a trainable head"
        )
    if freeze_backbone:
        for p in adapter.backbone.parameters():
            p.requires_grad_(False)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]  # biases, norms and temperatures are not decayed
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    steps_per_epoch = math.ceil(math.ceil(train.n_captions / cfg.batch_size) / cfg.grad_accum)
    total, warmup = cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine_lr(s, total, max(1, warmup), cfg.min_lr_ratio))
    use_amp = resolve_amp(cfg.amp, device)
    sync_free = device.type == "cuda"  # on a CPU a check costs nothing; on a GPU it would stall every step
    rng = np.random.default_rng(seed)
    # Training-time draws (dropout, augmentation) start from the seed, not from whatever loading data and teachers
    # left in the global generator (a cold feature cache draws from it, a warm one does not).
    torch.manual_seed(seed)
    result = FitResult(selected_epoch=0)
    first = 1
    if checkpoint is not None and Path(checkpoint).is_file():
        first = _restore(Path(checkpoint), module, objective, opt, sched, rng, result) + 1
        log.info("resuming %s after epoch %d of %d", checkpoint, first - 1, cfg.epochs)

    loader: _ImageLoader | None = None  # the end-to-end path's loader, kept (with its workers) across epochs
    for epoch in range(first, cfg.epochs + 1):
        t0 = time.perf_counter()
        adapter.train()
        if freeze_backbone:
            adapter.backbone.eval()  # frozen BatchNorm/dropout stay in inference mode
        objective.train()
        order = rng.permutation(train.n_captions)
        sums: dict[str, torch.Tensor] = {}
        n_batches = 0
        first_bad = torch.tensor(-1, device=device)
        if freeze_backbone:
            assert train_features is not None, "a frozen backbone trains on cached features"
            batches = _feature_batches(train_features, train, order, cfg.batch_size, device)
        else:
            loader = loader or _ImageLoader(adapter, train, cfg, device)
            batches = loader.epoch(order)
        bar = tqdm(
            batches,
            total=math.ceil(len(order) / cfg.batch_size),
            desc=f"epoch {epoch}/{cfg.epochs}",
            disable=not progress or not env.is_main,
            leave=False,
        )
        for i, (img_in, txt_in, image_index, caption_index) in enumerate(bar):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                if freeze_backbone:
                    img_emb, txt_emb = adapter.embed_image(img_in), adapter.embed_text(txt_in)
                else:
                    img_emb, txt_emb = adapter.encode_image(img_in), adapter.encode_text(txt_in)
                terms = objective(_global_batch(img_emb, txt_emb, image_index, caption_index, env))
            loss = sum(v for k, v in terms.items() if k.endswith("_loss"))  # other keys are logged, not optimised
            if not sync_free and not torch.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch} batch {i}: loss is {loss.item()}")
            if sync_free:  # the first bad batch, found without waiting for the GPU; raised at the epoch's end
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), i, first_bad)
            (loss / cfg.grad_accum).backward()
            if (i + 1) % cfg.grad_accum == 0 or (i + 1) * cfg.batch_size >= len(order):
                reduce_grads(module_params, objective_params, env)
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                sched.step()
            for k, v in terms.items():  # summed on the device: no host sync per step
                sums[k] = sums[k] + v.detach().double() if k in sums else v.detach().double()
            n_batches += 1
        if sync_free and int(first_bad) >= 0:
            raise FloatingPointError(f"epoch {epoch} batch {int(first_bad)}: loss is not finite")
        val = validate()
        row = {
            "epoch": epoch,
            **{k: float(v) / max(1, n_batches) for k, v in sums.items()},
            "lr": opt.param_groups[0]["lr"],
            "val": val,
            "seconds": time.perf_counter() - t0,
        }
        result.history.append(row)
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in row.items()})
        if on_epoch is not None and env.is_main:
            on_epoch(row)
        if val > result.best_val:
            result.best_val, result.selected_epoch = val, epoch
            result.best_state = _snapshot(module, objective)
        if checkpoint is not None and env.is_main:
            _save(Path(checkpoint), epoch, module, objective, opt, sched, rng, result)
    result.last_state = _snapshot(module, objective)
    return result


def _global_batch(
    img_emb: torch.Tensor, txt_emb: torch.Tensor, image_index: torch.Tensor, caption_index: torch.Tensor, env: DistEnv
) -> dict[str, torch.Tensor]:
    # Every rank sees the whole global batch; only its own rows carry gradient (see bench.train.distributed).
    return {
        "image_emb": gather_rows(img_emb, env),
        "text_emb": gather_rows(txt_emb, env),
        "image_index": gather_rows(image_index, env),
        "caption_index": gather_rows(caption_index, env),
    }


def _save(
    path: Path,
    epoch: int,
    module: nn.Module,
    objective: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    rng: np.random.Generator,
    result: FitResult,
) -> None:
    state = {
        "epoch": epoch,
        "module": module.state_dict(),
        "objective": objective.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "numpy_rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "history": result.history,
        "best_val": result.best_val,
        "selected_epoch": result.selected_epoch,
        "best_state": result.best_state,
    }
    atomic_torch_save(state, path)  # a job killed mid-save leaves the previous checkpoint intact


def checkpoint_epoch(path: Path) -> int | None:
    """The last finished epoch (1-based) saved in a training checkpoint, or None if it is absent or unreadable.

    Memory-mapped, so only the small pickled part is read, whatever the size of the weights it holds.
    """
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"])
    except Exception:  # a missing, truncated or foreign file resumes nothing
        return None


def _restore(
    path: Path,
    module: nn.Module,
    objective: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    rng: np.random.Generator,
    result: FitResult,
) -> int:
    state = torch.load(path, map_location="cpu", weights_only=True)
    module.load_state_dict(state["module"])
    objective.load_state_dict(state["objective"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    rng.bit_generator.state = state["numpy_rng"]
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    result.history = list(state["history"])
    result.best_val = float(state["best_val"])
    result.selected_epoch = int(state["selected_epoch"])
    result.best_state = state["best_state"]
    result.resumed_from_epoch = int(state["epoch"])
    return result.resumed_from_epoch


def _snapshot(module: nn.Module, objective: nn.Module) -> dict[str, Any]:
    return {
        "module": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
        "objective": {k: v.detach().cpu().clone() for k, v in objective.state_dict().items()},
    }


def load_state(adapter: Adapter, objective: nn.Module, state: dict[str, Any], freeze_backbone: bool) -> None:
    """Put a state captured by :func:`fit` back into the adapter's trainable module and the objective."""
    adapter.trainable_module(freeze_backbone).load_state_dict(state["module"])
    objective.load_state_dict(state["objective"])


class _CaptionImages(Dataset):
    """Item j: caption j's image, decoded and transformed (in a DataLoader worker), with j."""

    def __init__(self, split: RetrievalSplit, transform: Callable[[Any], torch.Tensor]) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return self.split.n_captions

    def __getitem__(self, j: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.split.load_image(int(self.split.caption_to_image[j]))), j


class _EpochBatches:
    """The batch sampler of the end-to-end loader: this rank's caption indices of each batch of the epoch's order
    (set before every epoch; iterated in the main process, so persistent workers see the new order)."""

    def __init__(self, batch_size: int, env: DistEnv) -> None:
        self.batch_size, self.env = batch_size, env
        self.order = np.zeros(0, dtype=np.int64)

    def __iter__(self) -> Iterator[list[int]]:
        for s in range(0, len(self.order), self.batch_size):
            yield shard(self.order[s : s + self.batch_size], self.env).tolist()

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.batch_size)


class _ImageLoader:
    """One DataLoader for every epoch of end-to-end training: images decoded and augmented in ``num_workers``
    persistent workers, pinned for the copy to a GPU, captions tokenised in the main process."""

    def __init__(self, adapter: Adapter, train: RetrievalSplit, cfg: TrainConfig, device: torch.device) -> None:
        self.adapter, self.train, self.device = adapter, train, device
        self.sampler = _EpochBatches(cfg.batch_size, current())
        workers = cfg.num_workers
        self.loader = DataLoader(
            _CaptionImages(train, adapter.image_transform()), batch_sampler=self.sampler, num_workers=workers,
            pin_memory=device.type == "cuda", persistent_workers=workers > 0, generator=torch.Generator(),
            prefetch_factor=4 if workers > 0 else None,
        )  # fmt: skip
        self.captions = list(train.captions)

    def epoch(self, order: np.ndarray) -> Iterator[tuple[Any, Any, torch.Tensor, torch.Tensor]]:
        self.sampler.order = order
        c2i = torch.from_numpy(self.train.caption_to_image)
        try:
            for images, idx in self.loader:
                tokens = to_device(self.adapter.tokenize([self.captions[j] for j in idx.tolist()]), self.device)
                images = images.to(self.device, non_blocking=True, memory_format=torch.channels_last)
                yield images, tokens, c2i[idx].to(self.device), idx.to(self.device)
        except DataError as e:
            raise worker_error(e) from None
