"""Exact retrieval scoring at COCO-5K size: itr-bench's streaming scorer against CLIP_benchmark's code.

Each side runs in its own process, so peak RSS is that side's alone (embeddings included). Same inputs: seeded,
L2-normalised, 5,000 images x ~25,000 captions (mostly 5 per image, some 4-7) x d 512, captions = image + noise so
recalls are mid-range. CLIP_benchmark's side is its `evaluate()` scoring code verbatim: the dense captions x images
score matrix, the same-size positive mask, `batchify(recall_at_k, ...)` with the dataloader batch size (64) for
K = 1, 5, 10 in both directions. Ours: `bench.scoring.itr.itr_ranks` (what `itr_metrics` runs for i2t and t2i: one pass
over the caption x image scores serves both directions), then `recall_summary`. For scale, the bare products: one
captions x images GEMM (all the arithmetic both directions need) and, as before, one per direction.

    python benchmarks/scoring.py [--images 5000] [--dim 512] [--memory-mb 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
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
    from bench.scoring.itr import itr_ranks, recall_summary

    i2t, t2i = itr_ranks(img, txt, c2i, memory_mb=memory_mb)
    return {"i2t": recall_summary(i2t), "t2i": recall_summary(t2i)}


def run_clip_benchmark(img: torch.Tensor, txt: torch.Tensor, c2i: np.ndarray, device: str = "cpu") -> dict:
    from clip_benchmark.metrics.zeroshot_retrieval import batchify, recall_at_k

    batch_size = 64
    scores = txt @ img.t()
    positive_pairs = torch.zeros_like(scores, dtype=bool)
    positive_pairs[torch.arange(len(scores), device=scores.device), torch.from_numpy(c2i).to(scores.device)] = True
    out: dict[str, dict[str, float]] = {"i2t": {}, "t2i": {}}
    for k in (1, 5, 10):
        t2i = (batchify(recall_at_k, scores, positive_pairs, batch_size, device, k=k) > 0).float().mean().item()
        i2t = (batchify(recall_at_k, scores.T, positive_pairs.T, batch_size, device, k=k) > 0).float().mean().item()
        out["t2i"][f"r{k}"], out["i2t"][f"r{k}"] = 100 * t2i, 100 * i2t
    return out


def run_gemm(img: torch.Tensor, txt: torch.Tensor, c2i: np.ndarray, both: bool) -> dict:
    """The bare products: one captions x images GEMM (all the arithmetic both directions need), or one per direction."""
    _ = txt @ img.t()
    if both:
        _ = img @ txt.t()
    return {}


SIDES = {
    "gemm": lambda img, txt, c2i, args: run_gemm(img, txt, c2i, both=False),
    "gemm2": lambda img, txt, c2i, args: run_gemm(img, txt, c2i, both=True),
    "ours": lambda img, txt, c2i, args: run_ours(img, txt, c2i, args.memory_mb),
    "clip_benchmark": lambda img, txt, c2i, args: run_clip_benchmark(img, txt, c2i),
}


def child(args: argparse.Namespace) -> None:
    import clip_benchmark.metrics.zeroshot_retrieval  # noqa: F401  (imports stay out of the timed region)

    import bench.scoring.itr  # noqa: F401

    img, txt, c2i = problem(args.images, args.dim)
    t0 = time.perf_counter()
    metrics = SIDES[args.side](img, txt, c2i, args)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "metrics": metrics, "captions": len(c2i)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--memory-mb", type=float, default=256.0)
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per side, interleaved; medians reported")
    p.add_argument("--side", choices=list(SIDES), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        return child(args)
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits every side alike
        for side in SIDES:
            cmd = [sys.executable, __file__, "--side", side, "--images", str(args.images), "--dim", str(args.dim),
                   "--memory-mb", str(args.memory_mb)]  # fmt: skip
            runs[side].append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    sec = {side: statistics.median(r["seconds"] for r in rs) for side, rs in runs.items()}
    rss = {side: max(r["peak_rss_mb"] for r in rs) for side, rs in runs.items()}
    ours, cb = runs["ours"][0], runs["clip_benchmark"][0]

    def spread(side: str) -> str:
        return ", ".join(f"{r['seconds']:.2f}" for r in runs[side])

    print(f"{args.images} images x {ours['captions']} captions x d {args.dim}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} fresh processes per side")  # fmt: skip
    print(f"bare GEMM, one captions x images product: {sec['gemm']:.2f} s ({spread('gemm')}); "
          f"one per direction: {sec['gemm2']:.2f} s ({spread('gemm2')})")  # fmt: skip
    print(f"itr-bench:      {sec['ours']:.2f} s ({spread('ours')}), peak RSS {rss['ours']:.0f} MB (goal <= 1,229 MB)")
    print(f"CLIP_benchmark: {sec['clip_benchmark']:.2f} s ({spread('clip_benchmark')}), peak RSS "
          f"{rss['clip_benchmark']:.0f} MB")  # fmt: skip
    print(f"speed-up: {sec['clip_benchmark'] / sec['ours']:.1f}x (goal >= 10x); itr-bench / one bare GEMM: "
          f"{sec['ours'] / sec['gemm']:.2f}")  # fmt: skip
    worst = max(
        abs(ours["metrics"][d][f"r{k}"] - cb["metrics"][d][f"r{k}"]) for d in ("i2t", "t2i") for k in (1, 5, 10)
    )
    for d in ("i2t", "t2i"):
        print(f"  {d} R@1/5/10 itr-bench {[round(ours['metrics'][d][f'r{k}'], 2) for k in (1, 5, 10)]} "
              f"CLIP_benchmark {[round(cb['metrics'][d][f'r{k}'], 2) for k in (1, 5, 10)]}")  # fmt: skip
    print(f"largest R@K difference: {worst:.4f} points")


if __name__ == "__main__":
    main()
