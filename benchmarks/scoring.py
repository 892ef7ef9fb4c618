"""Exact retrieval scoring at COCO-5K size: itr-bench's streaming scorer against CLIP_benchmark's code.

Each side runs in its own process, so peak RSS is that side's alone (embeddings included). Same inputs: seeded,
L2-normalised, 5,000 images x ~25,000 captions (mostly 5 per image, some 4-7) x d 512, captions = image + noise so
recalls are mid-range. CLIP_benchmark's side is its `evaluate()` scoring code verbatim: the dense captions x images
score matrix, the same-size positive mask, `batchify(recall_at_k, ...)` with the dataloader batch size (64) for
K = 1, 5, 10 in both directions. Ours: `bench.metrics.retrieval_ranks` for i2t and t2i, then `recall_summary`.

    python benchmarks/scoring.py [--images 5000] [--dim 512] [--memory-mb 256]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch


def problem(n_img: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    per = rng.choice([4, 5, 5, 5, 5, 5, 6, 7], size=n_img)
    c2i = np.repeat(np.arange(n_img), per)
    img = rng.standard_normal((n_img, dim), dtype=np.float32)
    txt = img[c2i] + 4.5 * rng.standard_normal((len(c2i), dim), dtype=np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    return torch.from_numpy(img), torch.from_numpy(txt), c2i


def run_ours(img: torch.Tensor, txt: torch.Tensor, c2i: np.ndarray, memory_mb: float) -> dict:
    from bench.metrics import recall_summary, retrieval_ranks

    n_img = img.shape[0]
    caps_of = [[] for _ in range(n_img)]
    for j, i in enumerate(c2i):
        caps_of[i].append(j)
    i2t = retrieval_ranks(img, txt, [np.asarray(c) for c in caps_of], memory_mb=memory_mb)
    t2i = retrieval_ranks(txt, img, [np.asarray([i]) for i in c2i], memory_mb=memory_mb)
    return {"i2t": recall_summary(i2t), "t2i": recall_summary(t2i)}


def run_clip_benchmark(img: torch.Tensor, txt: torch.Tensor, c2i: np.ndarray) -> dict:
    from clip_benchmark.metrics.zeroshot_retrieval import batchify, recall_at_k

    batch_size, device = 64, "cpu"
    scores = txt @ img.t()
    positive_pairs = torch.zeros_like(scores, dtype=bool)
    positive_pairs[torch.arange(len(scores)), torch.from_numpy(c2i)] = True
    out: dict[str, dict[str, float]] = {"i2t": {}, "t2i": {}}
    for k in (1, 5, 10):
        t2i = (batchify(recall_at_k, scores, positive_pairs, batch_size, device, k=k) > 0).float().mean().item()
        i2t = (batchify(recall_at_k, scores.T, positive_pairs.T, batch_size, device, k=k) > 0).float().mean().item()
        out["t2i"][f"r{k}"], out["i2t"][f"r{k}"] = 100 * t2i, 100 * i2t
    return out


def child(args: argparse.Namespace) -> None:
    img, txt, c2i = problem(args.images, args.dim)
    t0 = time.perf_counter()
    if args.side == "ours":
        metrics = run_ours(img, txt, c2i, args.memory_mb)
    elif args.side == "gemm":  # the bare products of both directions, for scale
        _ = txt @ img.t()
        _ = img @ txt.t()
        metrics = {}
    else:
        metrics = run_clip_benchmark(img, txt, c2i)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "metrics": metrics, "captions": len(c2i)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--memory-mb", type=float, default=256.0)
    p.add_argument("--side", choices=["ours", "clip_benchmark", "gemm"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        return child(args)
    res = {}
    for side in ("gemm", "ours", "clip_benchmark"):
        cmd = [sys.executable, __file__, "--side", side, "--images", str(args.images), "--dim", str(args.dim),
               "--memory-mb", str(args.memory_mb)]  # fmt: skip
        res[side] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    ours, cb = res["ours"], res["clip_benchmark"]
    print(f"{args.images} images x {ours['captions']} captions x d {args.dim}, {torch.get_num_threads()} threads")
    print(f"bare GEMMs (both directions): {res['gemm']['seconds']:.2f} s")
    print(f"itr-bench:      {ours['seconds']:.2f} s, peak RSS {ours['peak_rss_mb']:.0f} MB")
    print(f"CLIP_benchmark: {cb['seconds']:.2f} s, peak RSS {cb['peak_rss_mb']:.0f} MB")
    print(f"speed-up: {cb['seconds'] / ours['seconds']:.1f}x")
    worst = max(
        abs(ours["metrics"][d][f"r{k}"] - cb["metrics"][d][f"r{k}"]) for d in ("i2t", "t2i") for k in (1, 5, 10)
    )
    for d in ("i2t", "t2i"):
        print(f"  {d} R@1/5/10 itr-bench {[round(ours['metrics'][d][f'r{k}'], 2) for k in (1, 5, 10)]} "
              f"CLIP_benchmark {[round(cb['metrics'][d][f'r{k}'], 2) for k in (1, 5, 10)]}")  # fmt: skip
    print(f"largest R@K difference: {worst:.4f} points")


if __name__ == "__main__":
    main()
