"""Data-parallel training on CPU: two gloo processes equal one process on the same global batch.

Each rank embeds half of every global batch, gathers the other half (bench.train.distributed) and steps on the
full-batch
loss; gradients of the adapter are summed over ranks, those of the objective's heads and temperature averaged. The
trained weights and per-epoch losses must match a single-process run within float rounding (stated tolerance below).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import TINY_CLIP_ARCH, TINY_CLIP_CONFIG, TINY_TIMM
from PIL import Image
from weights import gradient_bearing

from bench.config import TrainConfig
from bench.data.base import RetrievalSplit
from bench.train.distributed import DistEnv, gather_rows, shard

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ATOL = 1e-5  # float32 summation order differs between one process and two (matmuls over half batches)
WORDS = ["red", "blue", "green", "small", "large", "circle", "square", "cat", "dog", "on", "a", "the", "grass"]


def _split(folder: Path) -> RetrievalSplit:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(12):
        paths.append(folder / f"img{i}.png")
        pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        if not paths[-1].exists():  # ranks read the files the test wrote; rewriting them here would race the reads
            Image.fromarray(pixels).save(paths[-1])
    captions = [" ".join(rng.choice(WORDS, size=5)) for _ in range(24)]
    return RetrievalSplit("tiny", "train", paths, [p.stem for p in paths], captions, np.repeat(np.arange(12), 2))


def _train(rank: int, world: int, port: int, folder: str, text_folder: str, out: str, end_to_end: bool) -> None:
    """Frozen: VSE∞ heads on cached features. End to end: a tiny open_clip ViT trained whole (channels-last, gradient
    accumulation, fp32). Every rank validates each epoch with the harness's evaluation, as the grid does."""
    from bench.adapters.registry import create_adapter

    from bench.config import EvalConfig
    from bench.encode.cache import cached_features
    from bench.evaluation.itr import evaluate, metric_value
    from bench.methods import get_method
    from bench.train.fit import fit

    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        split, cpu = _split(Path(folder)), torch.device("cpu")
        if end_to_end:
            opts = {"checkpoint": TINY_CLIP_ARCH, "pretrained": "random", "model_config": str(TINY_CLIP_CONFIG)}
            adapter = create_adapter("clip", opts).eval()
            feats = None
            cfg = TrainConfig(epochs=2, batch_size=8, grad_accum=2, lr=1e-3, warmup_epochs=0.5, loss="infonce",
                              device="cpu", freeze_backbone=False, amp=False)  # fmt: skip
        else:
            opts = {"image_backbone": TINY_TIMM, "image_weights": "random", "text_backbone": text_folder,
                    "embed_dim": 16}  # fmt: skip
            adapter = create_adapter("vse_infty", opts).eval()
            feats = cached_features(adapter, split, Path(folder) / "cache", device=cpu, progress=False)
            cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-3, warmup_epochs=0.5, loss="infonce", device="cpu")
        torch.manual_seed(0)  # as bench.grid.pipeline does: head init must not depend on whether features were cached
        objective = get_method("contrastive").objective(adapter, cfg, cross_heads=True, head_init="normal")

        def validate() -> float:
            m = evaluate(adapter, split, EvalConfig(bootstrap=0), device=cpu, objective=objective, progress=False,
                         rerank=False, topk=0)  # fmt: skip
            return metric_value(m, "rsum")

        result = fit(adapter, objective, split, cfg, device=cpu, seed=0, freeze_backbone=not end_to_end,
                     train_features=feats, validate=validate, progress=False)  # fmt: skip
        if rank == 0:
            torch.save({"state": result.last_state, "history": result.history}, out)
    finally:
        if world > 1:
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("end_to_end", [False, True], ids=["frozen", "end-to-end"])
def test_two_gloo_processes_match_one_process_on_the_same_global_batch(
    tmp_path: Path, tiny_text_folder: Path, end_to_end: bool
) -> None:
    _split(tmp_path)  # write the images once
    single, double = tmp_path / "single.pt", tmp_path / "double.pt"
    threads = torch.get_num_threads()
    try:
        _train(0, 1, 0, str(tmp_path), str(tiny_text_folder), str(single), end_to_end)  # also fills the cache
    finally:
        torch.set_num_threads(threads)  # _train pins one thread; later tests in this process get theirs back
    args = (2, _free_port(), str(tmp_path), str(tiny_text_folder), str(double), end_to_end)
    mp.spawn(_train, args=args, nprocs=2, join=True)
    a, b = torch.load(single, weights_only=False), torch.load(double, weights_only=False)

    for part in ("module", "objective"):
        assert a["state"][part].keys() == b["state"][part].keys()
        for k, v in a["state"][part].items():
            torch.testing.assert_close(gradient_bearing(k, b["state"][part][k]), gradient_bearing(k, v), atol=ATOL,
                                       rtol=0, msg=f"{part}.{k}")  # fmt: skip
    for ha, hb in zip(a["history"], b["history"], strict=True):
        assert ha["contrastive_loss"] == pytest.approx(hb["contrastive_loss"], abs=ATOL)
        assert ha["val"] == hb["val"]  # the same model validated: the same RSUM
    # and training moved the weights (the comparison is not between two untouched models)
    assert a["history"][0]["contrastive_loss"] != a["history"][-1]["contrastive_loss"]


def test_shard_cuts_a_batch_into_contiguous_chunks_in_rank_order() -> None:
    idx = np.arange(11)
    chunks = [shard(idx, DistEnv(r, 3)) for r in range(3)]
    assert np.array_equal(np.concatenate(chunks), idx)
    assert [len(c) for c in chunks] == [4, 4, 3]
    with pytest.raises(ValueError, match="cannot be split"):
        shard(np.arange(2), DistEnv(0, 3))


def test_gather_rows_is_the_identity_for_one_process() -> None:
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_rows(x, DistEnv()) is x
