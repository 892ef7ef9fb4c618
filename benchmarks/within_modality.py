"""Exact within-modality retrieval: t2t at COCO-5K size, and label retrieval (R@K + mAP@R) at 20,000 images.

t2t: the symmetric scan (``bench.scoring.itr.sibling_ranks``, what ``itr_metrics`` runs for t2t and i2i) against the
one-way strip scorer with excluded self matches and against the bare GEMM.

~26,300 captions (4-7 per image) x d 512, seeded and L2-normalised as in ``scoring.py``; every caption with a sibling
is a query, its siblings are its positives, itself is excluded. The score matrix is symmetric, so the symmetric scan
computes the diagonal blocks and one triangle of tiles: about half the bare GEMM's arithmetic. The ranks of the two
scorers must be equal.

Label retrieval (``bench.scoring.unimodal.label_retrieval``, the SOP/CUB-style i2i protocol): 20,000 images in
classes of 5 (d 512, class centre + noise), every image a query with itself excluded, against the bare GEMM.

Each figure is the median of 3 calls in this process.

    python benchmarks/within_modality.py [--images 5000] [--dim 512] [--label-images 20000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from scoring import problem

from bench.scoring.common import group_siblings
from bench.scoring.itr import retrieval_ranks, sibling_ranks
from bench.scoring.unimodal import label_retrieval


def median_seconds(fn: Callable[[], object], repeats: int = 3) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--label-images", type=int, default=20_000)
    p.add_argument("--sop", action="store_true", help="only label retrieval at SOP's size (60,502 images)")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    if args.sop:
        return sop(args.dim)
    _, txt, c2i = problem(args.images, args.dim)
    queries, indptr, indices = group_siblings(c2i)
    q = txt[torch.from_numpy(queries)]

    gemm, _ = median_seconds(lambda: (txt @ txt.T).amax(dim=1))
    sym, (sym_q, sym_r) = median_seconds(lambda: sibling_ranks(txt, c2i))
    strips, strip_r = median_seconds(lambda: retrieval_ranks(q, txt, (indptr, indices), exclude=queries))
    assert np.array_equal(sym_q, queries) and np.array_equal(sym_r, strip_r), "the two scorers disagree"
    print(f"t2t: {len(queries):,} queries x {len(c2i):,} captions x d {args.dim}, {torch.get_num_threads()} threads")
    print(f"bare GEMM (full matrix):             {gemm:.2f} s")
    print(f"retrieval_ranks (strips, exclude):   {strips:.2f} s")
    print(f"sibling_ranks (symmetric tiles):     {sym:.2f} s: {strips / sym:.1f}x faster, {sym / gemm:.2f}x the GEMM")
    print("ranks equal: True")

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(args.label_images // 5), 5)
    centres = rng.standard_normal((len(labels) // 5, args.dim), dtype=np.float32)
    noisy = centres[labels] + 2.2 * rng.standard_normal((len(labels), args.dim), dtype=np.float32)
    x = torch.nn.functional.normalize(torch.from_numpy(noisy), dim=1)
    gemm, _ = median_seconds(lambda: (x @ x.T).amax(dim=1))
    lab, out = median_seconds(lambda: label_retrieval(x, x, labels, labels, exclude=np.arange(len(labels))))
    print(f"label retrieval: {len(labels):,} images in classes of 5 x d {args.dim}: {lab:.2f} s (bare GEMM {gemm:.2f} "
          f"s); R@1 {100 * np.mean(out['rank'] == 0):.2f}, mAP@R {100 * np.mean(out['ap_at_r']):.2f}")  # fmt: skip


def sop(dim: int) -> None:
    """Label retrieval at Stanford Online Products' test size: 60,502 images in 11,316 classes of 2-12 (SOP's
    range), every image a query with itself excluded, against the bare GEMM, computed in strips since the full
    matrix would be 14.6 GB. One call each (a GEMM of this size takes about a minute on 2 cores)."""
    rng = np.random.default_rng(0)
    sizes = np.clip(2 + rng.poisson(60_502 / 11_316 - 2, size=11_316), 2, 12)  # SOP's mean of 5.3 per class
    while sizes.sum() != 60_502:  # exactly SOP's image count, every class kept in 2-12
        i = rng.integers(sizes.size)
        step = 1 if sizes.sum() < 60_502 else -1
        if 2 <= sizes[i] + step <= 12:
            sizes[i] += step
    labels = np.repeat(np.arange(sizes.size), sizes)
    centres = rng.standard_normal((sizes.size, dim), dtype=np.float32)
    x = torch.nn.functional.normalize(torch.from_numpy(centres[labels] + 2.2 * rng.standard_normal(
        (labels.size, dim), dtype=np.float32)), dim=1)  # fmt: skip

    def bare() -> None:
        for s in range(0, x.shape[0], 4096):
            (x[s : s + 4096] @ x.T).amax(dim=1)

    excl = np.arange(labels.size)
    gemm, _ = median_seconds(bare, 1)
    lab, a = median_seconds(lambda: label_retrieval(x, x, labels, labels, exclude=excl), 1)
    print(f"label retrieval at SOP size: {labels.size:,} images, {sizes.size:,} classes of {sizes.min()}-"
          f"{sizes.max()} x d {dim}, {torch.get_num_threads()} threads")
    print(f"bare GEMM (in strips): {gemm:.1f} s; label_retrieval {lab:.1f} s ({lab / gemm:.2f}x the GEMM)")
    print(f"R@1 {100 * np.mean(a['rank'] == 0):.2f}, mAP@R {100 * np.mean(a['ap_at_r']):.2f}")


if __name__ == "__main__":
    main()
