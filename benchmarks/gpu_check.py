"""Issue #6's GPU check, one script: the exact scorer at COCO-5K and 100K x 500K size on the GPU, the offline
towers' encoding in bf16, and end-to-end fine-tuning of open_clip ViT-B-32 at batch 128 in bf16 for two epochs,
validated after each (the CUSA paper's recipe, the GPU path of #23), through itr-bench's fit against open_clip's own
trainer and evaluation, and (#17) the per-tile rates behind the sharded-evaluation plan.
Prints every figure; the project never needs a GPU to build or test.

    python benchmarks/gpu_check.py                      # on a CUDA host: about 2 minutes plus model loading
    python benchmarks/gpu_check.py --device cpu --scale-images 2000 --skip-encoding --train-model ViT-S-32 \
        --train-batch 16 --train-captions 32                                  # a dry run of the logic

Scorer figures are the median of 3 timed calls after a warm-up, with CUDA synchronised. Each size also runs the bare
fp32 GEMM of the same size (IEEE fp32, not TF32, as the scorer) and, at COCO-5K, CLIP_benchmark's scoring code on the
same device; the ranks on the GPU are checked against the CPU ones at COCO-5K.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scale import problem as scale_problem  # noqa: E402
from scoring import problem as coco_problem  # noqa: E402
from scoring import run_clip_benchmark  # noqa: E402

from bench.scoring.common import full_fp32_matmul, recall_summary  # noqa: E402
from bench.scoring.itr import itr_ranks  # noqa: E402


def timed(fn: Callable[[], object], device: torch.device, repeats: int = 3) -> tuple[float, object]:
    def once() -> tuple[float, object]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, out

    once()  # warm-up: kernels, allocator
    runs = [once() for _ in range(repeats)]
    return statistics.median(t for t, _ in runs), runs[-1][1]


def bare_gemm(txt: torch.Tensor, img: torch.Tensor, memory_mb: float) -> None:
    rows = max(1, int(memory_mb * 2**20 / 4 / img.shape[0]))
    with torch.inference_mode(), full_fp32_matmul():
        for s in range(0, txt.shape[0], rows):
            (txt[s : s + rows] @ img.T).amax(dim=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--memory-mb", type=float, default=1024.0, help="the scorer's tile budget on the GPU")
    p.add_argument("--scale-images", type=int, default=100_000)
    p.add_argument("--skip-encoding", action="store_true")
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--train-model", default="ViT-B-32", help="end-to-end step: open_clip architecture (random init)")
    p.add_argument("--train-batch", type=int, default=128, help="end-to-end step: the paper's batch")
    p.add_argument("--train-captions", type=int, default=1280, help="end-to-end step: caption rows per epoch")
    args = p.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this is the GPU check (pass --device cpu for a dry run)")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}")

    coco_5k(dev, args.memory_mb)
    at_scale(dev, args.memory_mb, args.scale_images)
    # Sharded evaluation's plan (#17): the score tasks' per-tile rates on this device, with top-k lists, projected
    # to 10M images x 50M captions x d 768.
    script = Path(__file__).resolve().parent / "sharded.py"
    cmd = [sys.executable, str(script), "--rates-only", "--device", args.device, "--images", "20000",
           "--memory-mb", str(args.memory_mb)]
    print("$ " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)
    # Exhaustive pair scoring of a cross-attention model (SGR at the published width) against the reference's
    # per-caption loop on the same device, with equal scores, projected to COCO 5K x 25K.
    script = Path(__file__).resolve().parent / "pair_scoring.py"
    cmd = [sys.executable, str(script), "--device", args.device, "--images", "500", "--embed-size", "1024",
           "--sim-dim", "256", "--memory-mb", str(args.memory_mb)]  # fmt: skip
    print("$ " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)
    if not args.skip_encoding:
        script = Path(__file__).resolve().parent / "encoding.py"
        cmd = [sys.executable, str(script), "--workers", f"0,{min(8, os.cpu_count() or 1)}", "--batch-size", "256"]
        print("$ " + " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True)
    if not args.skip_training:  # end-to-end fine-tuning: fit (contrastive, cusa) against open_clip_train, bf16
        script = Path(__file__).resolve().parent / "train_throughput.py"
        cmd = [sys.executable, str(script), "--device", args.device, "--model", args.train_model, "--batch",
               str(args.train_batch), "--captions", str(args.train_captions), "--epochs", "2",
               "--workers", str(min(8, os.cpu_count() or 1)), "--validate"]  # fmt: skip
        cmd += ["--amp"] if dev.type == "cuda" else []
        print("$ " + " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True)


def coco_5k(dev: torch.device, memory_mb: float) -> None:
    """5,000 images x ~26,300 captions x d 512: scorer, bare GEMM and CLIP_benchmark on ``dev``; ranks vs the CPU's."""
    img, txt, c2i = coco_problem(5000, 512)
    cpu_i2t, cpu_t2i = itr_ranks(img, txt, c2i)
    g_img, g_txt = img.to(dev), txt.to(dev)
    sec, (i2t, t2i) = timed(lambda: itr_ranks(g_img, g_txt, c2i, memory_mb=memory_mb), dev)
    gemm, _ = timed(lambda: bare_gemm(g_txt, g_img, memory_mb), dev)
    same = bool(np.array_equal(i2t, cpu_i2t) and np.array_equal(t2i, cpu_t2i))
    try:
        import clip_benchmark  # noqa: F401
    except ImportError:  # pip install clip-benchmark for the comparison; the rest of the check runs without it
        print(f"COCO-5K ({len(c2i):,} captions): itr_ranks {sec * 1e3:.1f} ms, bare GEMM {gemm * 1e3:.1f} ms; "
              f"ranks equal to the CPU's: {same}; CLIP_benchmark not installed, its comparison skipped")  # fmt: skip
        return
    cb, cb_metrics = timed(lambda: run_clip_benchmark_on(g_img, g_txt, c2i), dev, repeats=1)
    print(f"COCO-5K ({len(c2i):,} captions): itr_ranks {sec * 1e3:.1f} ms, bare GEMM {gemm * 1e3:.1f} ms, "
          f"CLIP_benchmark {cb * 1e3:.1f} ms ({cb / sec:.1f}x); ranks equal to the CPU's: {same}")  # fmt: skip
    ours = {"i2t": recall_summary(i2t), "t2i": recall_summary(t2i)}
    worst = max(abs(ours[d][f"r{k}"] - cb_metrics[d][f"r{k}"]) for d in ("i2t", "t2i") for k in (1, 5, 10))
    print(f"  largest R@K difference to CLIP_benchmark: {worst:.4f} points")


def at_scale(dev: torch.device, memory_mb: float, n_img: int) -> None:
    """``n_img`` images x 5 captions each x d 256: scorer and bare GEMM on ``dev``, peak GPU memory."""
    img, txt, c2i = scale_problem(n_img, 5, 256)
    g_img, g_txt = img.to(dev), txt.to(dev)
    del img, txt
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    sec, (i2t, t2i) = timed(lambda: itr_ranks(g_img, g_txt, c2i, memory_mb=memory_mb), dev)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else float("nan")
    gemm, _ = timed(lambda: bare_gemm(g_txt, g_img, memory_mb), dev)
    r = {d: recall_summary(x) for d, x in (("i2t", i2t), ("t2i", t2i))}
    print(f"scale {n_img:,} x {len(c2i):,} x 256: itr_ranks {sec:.2f} s, bare GEMM {gemm:.2f} s, ratio "
          f"{sec / gemm:.2f}; peak GPU memory {peak:,.0f} MiB (embeddings included); i2t R@1 {r['i2t']['r1']:.2f}, "
          f"t2i R@1 {r['t2i']['r1']:.2f}")  # fmt: skip


def run_clip_benchmark_on(img: torch.Tensor, txt: torch.Tensor, c2i: np.ndarray) -> dict:
    """CLIP_benchmark's scoring code (see scoring.py) with its tensors on ``img``'s device."""
    with full_fp32_matmul():
        return run_clip_benchmark(img, txt, c2i, device=str(img.device))


if __name__ == "__main__":
    main()
