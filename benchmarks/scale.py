"""Exact retrieval at scale: 100,000 images x 500,000 captions x d 256, R@1/5/10 both ways, against bare GEMMs.

Issue #6's goal: the exact streaming scorer (``bench.scoring.itr.itr_ranks``, what ``itr_metrics`` runs for i2t and
t2i) within 4 GB peak RSS and within 2x the time of the bare matrix product of the same size, measured in the same
run. The dense score matrix alone would be 100,000 x 500,000 x 4 bytes = 200 GB.

Both sides run in the same process on the same embeddings (seeded, L2-normalised, 5 captions per image, captions =
image + noise so recalls are mid-range). The GEMM side computes the captions x images product once (all the
arithmetic that both directions need) in strips of the scorer's budget and keeps only each strip's row maxima so
nothing is optimised away; the scorer computes every score once in tiles, fixes each caption's and each image's best
positive from the diagonal tiles, and counts the scores at or above them in both directions. Peak RSS is the whole
process's (embeddings included).

    python benchmarks/scale.py                       # the full size (about 10 minutes on 2 cores)
    python benchmarks/scale.py --images 20000        # a 1/25-size check in under a minute
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time

import numpy as np
import torch

from bench.scoring.common import recall_summary, strip_rows
from bench.scoring.itr import itr_ranks


def problem(n_img: int, per: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Normalised image and caption embeddings; built in chunks so generation never doubles the peak."""
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.normalize(torch.randn(n_img, dim, generator=g), dim=1)
    c2i = np.repeat(np.arange(n_img), per)
    txt = torch.empty(len(c2i), dim)
    chunk = 50_000
    for s in range(0, len(c2i), chunk):
        e = min(s + chunk, len(c2i))
        noise = torch.randn(e - s, dim, generator=g) * (3.2 / math.sqrt(dim))  # noise norm ~3.2: mid-range R@K
        noisy = img[torch.from_numpy(c2i[s:e])] + noise
        txt[s:e] = torch.nn.functional.normalize(noisy, dim=1)
    return img, txt, c2i


def bare_gemm(q: torch.Tensor, g: torch.Tensor, memory_mb: float) -> float:
    """Seconds for the strip products of ``q @ g.T`` alone (each strip's maxima kept so the work is real)."""
    rows = strip_rows(g.shape[0], memory_mb)
    gt = g.T
    sink = torch.empty(q.shape[0])
    t0 = time.perf_counter()
    for s in range(0, q.shape[0], rows):
        sink[s : s + rows] = (q[s : s + rows] @ gt).amax(dim=1)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--per-image", type=int, default=5, help="captions per image")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--memory-mb", type=float, default=256.0, help="the scorer's strip budget")
    args = p.parse_args()
    torch.set_grad_enabled(False)

    img, txt, c2i = problem(args.images, args.per_image, args.dim)
    n_txt = len(c2i)
    print(f"problem: {args.images:,} images x {n_txt:,} captions x d {args.dim}, {torch.get_num_threads()} threads")

    t0 = time.perf_counter()
    i2t, t2i = itr_ranks(img, txt, c2i, memory_mb=args.memory_mb)
    ours = time.perf_counter() - t0
    gemm = bare_gemm(txt, img, args.memory_mb)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {
        "images": args.images,
        "captions": n_txt,
        "dim": args.dim,
        "memory_mb": args.memory_mb,
        "scorer_seconds": round(ours, 1),
        "bare_gemm_seconds": round(gemm, 1),
        "ratio_scorer_over_gemm": round(ours / gemm, 3),
        "peak_rss_mb": round(peak_mb),
        "i2t": {k: round(v, 2) for k, v in recall_summary(i2t).items() if k.startswith("r")},
        "t2i": {k: round(v, 2) for k, v in recall_summary(t2i).items() if k.startswith("r")},
        "dense_matrix_gb": round(args.images * n_txt * 4 / 1e9, 1),
    }
    print(json.dumps(out, indent=1))
    print(
        f"scorer {ours:.1f} s (both directions) vs the bare GEMM {gemm:.1f} s: ratio {ours / gemm:.2f} (goal <= 2); "
        f"peak RSS {peak_mb:,.0f} MB (goal <= 4,096 MB)"
    )


if __name__ == "__main__":
    main()
