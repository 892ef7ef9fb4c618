"""Data-parallel training over ``torch.distributed``: one process per GPU (or per CPU slot with gloo).

The global batch is cut into contiguous chunks, one per rank, in rank order, so the gathered batch is exactly the
batch a single process would draw. Each rank embeds its chunk, gathers every rank's embeddings (its own slot keeps
its autograd graph, open_clip's ``gather_features`` trick) and computes the full-batch loss. Gradients are then
reduced by hand rather than by DDP, because the two kinds of parameters need different reductions:

* parameters that produced the local embeddings (the adapter) hold only this rank's share of the gradient: **sum**;
* parameters applied after the gather (an objective's heads, temperatures) already hold the full gradient on every
  rank: **mean** (equal up to float rounding; averaging keeps the ranks bit-identical).

So a step on W ranks equals a step of one process on the same global batch, up to float summation order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["DistEnv", "current", "gather_rows", "init_from_env", "reduce_grads", "shard"]


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a data-parallel group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that evaluates, checkpoints and writes results."""
        return self.rank == 0


def current() -> DistEnv:
    """The initialised process group's rank and size, or a single-process env."""
    if dist.is_available() and dist.is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size())
    return DistEnv()


def init_from_env(device: torch.device) -> DistEnv:
    """Join the group described by ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` (no-op for one process).

    Under SLURM, call :meth:`submitit.helpers.TorchDistributedEnvironment.export` first: it sets those variables
    from the job's tasks (one task per GPU). Never start ``torchrun`` inside a submitit job (submitit#1764).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return current()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":  # one visible GPU per task (submitit's export narrows CUDA_VISIBLE_DEVICES), else by rank
        n = torch.cuda.device_count()
        torch.cuda.set_device(0 if n == 1 else int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return current()


def shard(indices: np.ndarray, env: DistEnv) -> np.ndarray:
    """This rank's contiguous chunk of a global batch (chunk sizes differ by at most one)."""
    if not env.enabled:
        return indices
    if len(indices) < env.world_size:
        raise ValueError(f"a batch of {len(indices)} cannot be split over {env.world_size} ranks")
    return np.array_split(indices, env.world_size)[env.rank]


def gather_rows(x: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Concatenate every rank's rows in rank order; this rank's rows keep their gradient."""
    if not env.enabled:
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(env.world_size)]
    dist.all_gather(sizes, n)
    rows = [int(s.item()) for s in sizes]
    width = max(rows)
    padded = torch.zeros((width, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x.detach()
    parts = [torch.empty_like(padded) for _ in range(env.world_size)]
    dist.all_gather(parts, padded)
    out = [p[:r] for p, r in zip(parts, rows, strict=True)]
    out[env.rank] = x  # the local slot carries the autograd graph
    return torch.cat(out)


def reduce_grads(local: Iterable[torch.nn.Parameter], shared: Iterable[torch.nn.Parameter], env: DistEnv) -> None:
    """Sum the gradients of ``local`` parameters (applied before the gather) and average those of ``shared`` ones
    (applied after it) over the ranks."""
    if not env.enabled:
        return
    for params, mean in ((local, False), (shared, True)):
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            continue
        flat = torch.cat([g.reshape(-1) for g in grads])  # one collective per kind, not one per tensor
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        if mean:
            flat /= env.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
