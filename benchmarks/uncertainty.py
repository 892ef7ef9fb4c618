"""Issue #14's cost targets at COCO-5K size (5,000 images, 25,000 captions, d 512, top-k 10).

* the per-query file of one cell: at most 5 MB;
* 1,000 image-clustered bootstrap resamples of every metric (i2t, t2i, t2t and RSUM): at most 2 s on 2 cores;
* and what keeping the top-k lists adds to the exact two-way scan (same pass, no second scan of the gallery).

Captions are the real coco-sample captions repeated (file size depends on their text), when that folder is there.

    python benchmarks/uncertainty.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from encoding import best_of  # this folder's timing helper (scripts run as `python benchmarks/<name>.py`)

from bench.scoring.itr import itr_queries, itr_scan
from bench.scoring.perquery import save_per_query
from bench.stats.bootstrap import BootstrapConfig, confidence_intervals, query_values
from bench.stats.paired import compare

COCO_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-sample" / "test.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=5000)
    args = ap.parse_args()
    torch.set_num_threads(2)
    n_img, per = args.images, 5
    rng = np.random.default_rng(0)
    img = rng.normal(size=(n_img, 512)).astype(np.float32)
    c2i = np.repeat(np.arange(n_img), per)
    txt = img[c2i] + 1.5 * rng.normal(size=(c2i.size, 512)).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)

    ranks_only = best_of(lambda: itr_scan(img, txt, c2i), args.repeats)
    with_lists = best_of(lambda: itr_scan(img, txt, c2i, topk=10), args.repeats)
    print(f"two-way scan, {n_img:,} x {c2i.size:,}: ranks only {ranks_only:.2f} s, with top-10 lists "
          f"{with_lists:.2f} s ({with_lists / ranks_only:.2f}x)")

    queries = itr_queries(img, txt, c2i, normalize=False, topk=10)
    if COCO_SAMPLE.is_file():
        real = [row["caption"] for row in json.loads(COCO_SAMPLE.read_text())]
        captions = [real[j % len(real)] for j in range(c2i.size)]
        source = "coco-sample captions, repeated"
    else:
        captions = [f"a photo of object {j % 997} on a table next to a window" for j in range(c2i.size)]
        source = "template captions (coco-sample absent)"
    ids = [f"COCO_val2014_{i:012d}.jpg" for i in range(n_img)]
    paths = [f"/data/coco/images/val2014/{name}" for name in ids]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cell.queries.npz"
        t0 = time.perf_counter()
        save_per_query(path, queries, c2i, n_img, image_id=ids, image_path=paths, caption_text=captions)
        write_s = time.perf_counter() - t0
        size = path.stat().st_size
    print(f"per-query file (i2t, t2i, t2t ranks + top-10, ids, paths, {source}): {size / 2**20:.2f} MiB "
          f"({size / 1e6:.2f} MB), written in {write_s:.2f} s (goal <= 5 MB)")

    values = query_values(queries)
    cfg = BootstrapConfig(resamples=1000, seed=0)
    boot = best_of(lambda: confidence_intervals(values, n_img, cfg), args.repeats)
    print(f"bootstrap, 1,000 resamples of every metric (i2t, t2i, t2t, RSUM): {boot:.2f} s (goal <= 2 s)")
    other = query_values(itr_queries(img, txt[::-1].copy()[::-1].copy(), c2i, normalize=False, topk=10))
    paired = best_of(lambda: compare(values, other, n_img, cfg), args.repeats)
    print(f"paired comparison of two cells (1,000 resamples, every metric, McNemar): {paired:.2f} s")


if __name__ == "__main__":
    main()
