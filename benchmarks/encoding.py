"""Encoding throughput of the offline VSE∞ towers (EfficientNet-Lite0 at 224 px, all-MiniLM-L6-v2) on real photos.

Reads the coco-sample test split (201 COCO photos, ~1,000 captions) from ../shared/data/coco-sample and times the
harness's own stage-1 encoders (`bench.encode.features.extract_image_features` / `extract_text_features`: DataLoader,
channels-last image batches, batched tokenisation, `torch.inference_mode`), plus the JPEG decode + transform alone
and the image tower fed contiguous batches (the layout before channels-last), so the figures say where the time goes.
Each figure is the best of `--repeats` passes after one warm-up pass. Both precisions are timed: fp32 (the CPU
default) and bf16 autocast (the CUDA default, `eval.precision = "auto"`; opt-in on CPU).

    python benchmarks/encoding.py [--repeats 2] [--workers 0,2] [--batch-size 64]   # add --workers 8 on a GPU host
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco-sample"


def best_of(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: first-touch allocations, oneDNN kernel selection, page cache
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    from bench.adapters.registry import create_adapter

    from bench.data import load_split
    from bench.encode.features import extract_image_features, extract_text_features, iter_image_batches

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=ROOT)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--workers", default="0,2", help="DataLoader worker counts to try")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--text-batch-size", type=int, default=128)
    args = p.parse_args()
    if not args.root.is_dir():
        raise SystemExit(f"{args.root}: coco-sample not found (pass --root)")

    spec = {"format": "flat_json", "root": str(args.root)}
    split = load_split("coco-sample", spec, "test", work_dir=Path("work_dir"))
    adapter = create_adapter("vse_infty", {}).eval()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    adapter.to(dev)
    print(f"coco-sample test: {split.n_images} images, {split.n_captions} captions; device {dev}, "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs")  # fmt: skip

    transform = adapter.image_transform()
    workers = [int(x) for x in args.workers.split(",")]
    for w in workers:
        s = best_of(lambda w=w: list(iter_image_batches(split, transform, args.batch_size, w)), args.repeats)
        print(f"decode + transform only, {w} workers: {split.n_images / s:7.1f} images/s")
    batches = list(iter_image_batches(split, transform, args.batch_size, 0))

    def tower_only(layout: torch.memory_format) -> None:
        with torch.inference_mode():
            adapter.to(memory_format=layout)
            for b in batches:
                adapter.image_features(b.to(dev, memory_format=layout))

    for name, layout in (("contiguous", torch.contiguous_format), ("channels-last", torch.channels_last)):
        s = best_of(lambda layout=layout: tower_only(layout), args.repeats)
        print(f"EfficientNet-Lite0 alone (decoded batches), {name}, fp32: {split.n_images / s:7.1f} images/s")
    for precision in ("fp32", "bf16"):
        for w in workers:
            s = best_of(
                lambda w=w, p=precision: extract_image_features(
                    adapter, split, device=dev, batch_size=args.batch_size, num_workers=w, progress=False, precision=p
                ),
                args.repeats,
            )
            print(f"image tower (decode + EfficientNet-Lite0), {precision}, {w} workers: "
                  f"{split.n_images / s:7.1f} images/s")  # fmt: skip
        s = best_of(
            lambda p=precision: extract_text_features(
                adapter, split, device=dev, batch_size=args.text_batch_size, progress=False, precision=p
            ),
            args.repeats,
        )
        print(f"text tower (tokenise + MiniLM-L6), {precision}, batch {args.text_batch_size}: "
              f"{split.n_captions / s:7.1f} captions/s")  # fmt: skip


if __name__ == "__main__":
    main()
