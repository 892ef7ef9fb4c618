"""Cost of a CUSA training step against a contrastive step of the same batch and model.

Both steps run the harness's own pieces: the offline VSE∞ heads (GPO over a 7x7x1280 grid and 384-d token states)
on cached-backbone-shaped inputs, the shared objective (cross heads; CUSA adds uni heads, the teacher-row lookups
from memory-mapped caches and the KL terms), AdamW. Only the method differs. Prints the median step times and their
ratio; the goal is <= 1.10x (the reference code's released setup costs 1.18x per epoch).

    python benchmarks/cusa_step.py [--batch 128] [--steps 30] [--embed-dim 1024]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench.adapters.vse_infty import ImageAggr, TextAggr

from bench.methods.cusa import CusaObjective


def _step_times(objective: CusaObjective, args: argparse.Namespace, seed: int) -> list[float]:
    torch.manual_seed(seed)
    img_head, txt_head = ImageAggr(1280, args.embed_dim, False), TextAggr(384, args.embed_dim)
    params = [*img_head.parameters(), *txt_head.parameters(), *objective.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-4)
    rng = np.random.default_rng(seed)
    n_cap = 25000  # COCO-5K-like: 5 captions per image
    times = []
    for step in range(args.steps + 3):
        caps = torch.from_numpy(rng.choice(n_cap, args.batch, replace=False))
        imgs = caps // 5
        grid = torch.rand(args.batch, 49, 1280) * 6  # ReLU6 activations, as EfficientNet-Lite0's
        tokens, mask = torch.randn(args.batch, 24, 384), torch.ones(args.batch, 24)
        t0 = time.perf_counter()
        batch = {"image_emb": img_head(grid), "text_emb": txt_head(tokens, mask), "image_index": imgs,
                 "caption_index": caps}  # fmt: skip
        loss = sum(v for k, v in objective(batch).items() if k.endswith("_loss"))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= 3:  # warm-up steps excluded
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--embed-dim", type=int, default=1024)
    args = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        # Teacher caches as the harness stores them: float16 .npy files opened memory-mapped.
        rng = np.random.default_rng(0)
        np.save(Path(tmp) / "img.npy", rng.random((5000, 1280), dtype=np.float32).astype(np.float16))
        np.save(Path(tmp) / "txt.npy", rng.standard_normal((25000, 768), dtype=np.float32).astype(np.float16))
        t_img, t_txt = np.load(Path(tmp) / "img.npy", mmap_mode="r"), np.load(Path(tmp) / "txt.npy", mmap_mode="r")
        con = CusaObjective(args.embed_dim, alpha=0.0, beta=0.0)
        cusa = CusaObjective(args.embed_dim, alpha=0.1, beta=0.5)
        cusa._teacher_img, cusa._teacher_txt = t_img, t_txt
        # Interleave the two so drifting machine load hits both alike.
        con_t, cusa_t = [], []
        for rep in range(3):
            con_t += _step_times(con, args, rep)
            cusa_t += _step_times(cusa, args, rep)
    c, u = statistics.median(con_t), statistics.median(cusa_t)
    print(f"batch {args.batch}, embed_dim {args.embed_dim}, {len(con_t)} steps each, {torch.get_num_threads()} threads")
    print(f"contrastive step: median {c * 1000:.1f} ms")
    print(f"cusa step:        median {u * 1000:.1f} ms")
    print(f"ratio cusa/contrastive: {u / c:.3f} (goal <= 1.10)")


if __name__ == "__main__":
    main()
