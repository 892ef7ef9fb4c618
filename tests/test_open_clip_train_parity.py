"""One training step of ``contrastive`` (no cross heads) in :func:`bench.train.fit.fit` equals one step of open_clip's
own loop (``open_clip_train.train.train_one_epoch`` with ``open_clip.ClipLoss``): same init, same batch, same AdamW
settings and parameter groups, same learning rate. The loss and every updated tower weight agree to 1e-5 (the attention
key bias, whose gradient is float noise, apart: see ``tests/weights.py``).

Two things are set equal on purpose and differ by default: AdamW's betas and eps (open_clip_train's ``main.py`` uses
``beta2 = 0.98`` and ``eps = 1e-6`` for ViTs, torch's defaults are 0.999 and 1e-8), and the starting temperature
(``[train] temperature = "model"``: the checkpoint's own). The temperature itself is left out of the comparison:
itr-bench learns τ directly (as the CUSA reference code does), open_clip learns ``log(1/τ)``, so the same gradient moves
them by different amounts; the tower weights' step does not depend on it.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY_CLIP_ARCH, TINY_CLIP_CONFIG
from PIL import Image
from weights import gradient_bearing

from bench.config import TrainConfig
from bench.data.base import RetrievalSplit

pytestmark = pytest.mark.usefixtures("single_thread")
N = 8  # one batch of eight pairs, one caption per image (open_clip's labels are the diagonal)
LR, WD = 1e-3, 0.1
WORDS = "dog cat man woman horse bike car street grass window red blue green sits runs rides near under".split()


def test_one_fit_step_equals_one_open_clip_train_step(tmp_path: Path) -> None:
    open_clip = pytest.importorskip("open_clip")
    from bench.adapters.registry import create_adapter
    from open_clip_train.data import get_csv_dataset
    from open_clip_train.scheduler import cosine_lr
    from open_clip_train.train import train_one_epoch

    from bench.methods import get_method
    from bench.train.fit import fit

    rng = np.random.default_rng(0)
    paths = []
    for i in range(N):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(paths[-1])
    captions = [" ".join(["a", *rng.choice(WORDS, size=5)]) for _ in range(N)]

    torch.manual_seed(0)
    opts = {"checkpoint": TINY_CLIP_ARCH, "pretrained": "random", "model_config": str(TINY_CLIP_CONFIG)}
    adapter = create_adapter("clip", opts)
    init = {k: v.clone() for k, v in adapter.backbone.state_dict().items()}

    # open_clip's side: its model, its CSV loader (eval transform, as the harness's training uses), its loss, its
    # scheduler, its loop; the AdamW parameter groups as its main.py builds them.
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP_ARCH, output_dict=True)
    model.load_state_dict(init)
    table = tmp_path / "train.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["filepath", "title"])
        writer.writerows(zip(map(str, paths), captions, strict=True))
    args = SimpleNamespace(
        train_data=str(table), csv_img_key="filepath", csv_caption_key="title", csv_separator="\t", batch_size=N,
        workers=0, distributed=False, train_num_samples=None, world_size=1, device="cpu", precision="fp32",
        accum_freq=1, distill=False, skip_scheduler=False, grad_clip_norm=None, log_every_n_steps=10**9, wandb=False,
        rank=0, local_rank=0, save_logs=False, horovod=False, grad_checkpointing=False, batch_size_val=None,
        val_frequency=1,
    )  # fmt: skip
    data = {"train": get_csv_dataset(args, preprocess, is_train=True, epoch=0,
                                     tokenizer=open_clip.get_tokenizer(TINY_CLIP_ARCH))}  # fmt: skip
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    named = list(model.named_parameters())
    optimizer = torch.optim.AdamW(
        [{"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
         {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": WD}],
        lr=LR, betas=(0.9, 0.999), eps=1e-8,
    )  # fmt: skip
    losses: list[float] = []

    class RecordedClipLoss(open_clip.ClipLoss):
        def forward(self, *a, **kw):  # noqa: ANN002, ANN003
            out = super().forward(*a, **kw)
            losses.append(float(out["contrastive_loss"].detach()))
            return out

    train_one_epoch(model, data, RecordedClipLoss(), 0, optimizer, None, cosine_lr(optimizer, LR, 0, 1), None, args)
    assert len(losses) == 1, "one step"

    # itr-bench's side: the same model and pairs through fit, one epoch of one batch.
    split = RetrievalSplit("tiny", "train", paths, [p.stem for p in paths], captions, np.arange(N))
    cfg = TrainConfig(epochs=1, batch_size=N, lr=LR, weight_decay=WD, warmup_epochs=0.0, grad_clip=0.0, amp=False,
                      freeze_backbone=False, loss="infonce", temperature="model", device="cpu")  # fmt: skip
    objective = get_method("contrastive").objective(adapter, cfg, cross_heads=False, con_reduction="sum")
    assert objective.tau_con.item() == pytest.approx(1 / math.exp(float(init["logit_scale"])))
    result = fit(adapter, objective, split, cfg, device=torch.device("cpu"), seed=0, freeze_backbone=False,
                 train_features=None, validate=lambda: 0.0, progress=False)  # fmt: skip

    assert result.history[0]["contrastive_loss"] == pytest.approx(losses[0], abs=1e-5)
    assert result.history[0]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"])
    theirs = model.state_dict()
    compared = 0
    for name, value in adapter.backbone.state_dict().items():
        if name == "logit_scale":  # see the module docstring
            continue
        torch.testing.assert_close(gradient_bearing(name, value), gradient_bearing(name, theirs[name]), atol=1e-5,
                                   rtol=0, msg=name)  # fmt: skip
        compared += int(not torch.equal(init[name], theirs[name]))
    assert compared > 10, "the step moved the weights (a comparison of two untouched models proves nothing)"
    worst = max((gradient_bearing(n, v) - gradient_bearing(n, theirs[n])).abs().max().item()
                for n, v in adapter.backbone.state_dict().items() if n != "logit_scale")  # fmt: skip
    print(f"open_clip_train vs fit: loss {losses[0]:.7f} vs {result.history[0]['contrastive_loss']:.7f}; "
          f"largest weight difference {worst:.2e} over {compared} moved tensors")
