"""What the results store and the leaderboard cost: ``bench results`` over many records with their per-query files,
and ``bench leaderboard`` over 20 models at COCO-5K size, from stored ranks (nothing is scored).

Records and per-query files are generated (random ranks with top-10 lists) in a temporary folder:

* store: RECORDS records (default 1,000; 20 models x 50 methods/seeds) of a 201-image, 1,000-caption split (the
  COCO sample's test split), i2t, t2i and t2t;
* leaderboard: 20 models on 5,000 images x 25,000 captions (COCO-5K), i2t and t2i, 1,000 resamples.

    python benchmarks/results_store.py [--records 1000] [--models 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.grid.records import SCHEMA, iter_records
from bench.report.leaderboard import leaderboard
from bench.scoring.perquery import save_per_query
from bench.scoring.queries import QueryRanks
from bench.scoring.topk import QueryLists
from bench.stats.bootstrap import BootstrapConfig
from bench.store import build_store


def _direction(rng: np.random.Generator, n: int, gallery: int, cluster: np.ndarray, skill: float) -> QueryRanks:
    ranks = np.minimum(rng.geometric(skill, size=n) - 1, gallery - 1)
    index = rng.integers(0, gallery, size=(n, 10))
    lists = QueryLists(index=index, score=np.sort(rng.random((n, 10)).astype(np.float32))[:, ::-1],
                       positive=np.zeros((n, 10), dtype=bool))  # fmt: skip
    return QueryRanks(np.arange(n), ranks, np.ones(n, dtype=np.int64), cluster, gallery, lists)


def write_cells(root: Path, n_records: int, n_images: int, per_image: int, n_models: int, *, t2t: bool) -> None:
    """``n_records`` records with per-query files under ``root/runs``, spread over ``n_models`` models."""
    rng = np.random.default_rng(0)
    c2i = np.repeat(np.arange(n_images), per_image)
    for i in range(n_records):
        model, seed = f"model{i % n_models:02d}", i // n_models
        skill = 0.2 + 0.3 * (i % n_models) / n_models
        queries = {"i2t": _direction(rng, n_images, c2i.size, np.arange(n_images), skill),
                   "t2i": _direction(rng, c2i.size, n_images, c2i, skill)}  # fmt: skip
        if t2t:
            queries["t2t"] = _direction(rng, c2i.size, c2i.size - 1, c2i, skill)
        folder = root / "runs" / model / "coco" / "test"
        folder.mkdir(parents=True, exist_ok=True)
        sha = save_per_query(folder / f"zeroshot-seed{seed}.queries.npz", queries, c2i, n_images,
                             image_id=[f"img{j}" for j in range(n_images)])  # fmt: skip
        metrics = {d: {"r1": float(np.mean(q.ranks < 1) * 100), "n_queries": int(q.ranks.size)}
                   for d, q in queries.items()}  # fmt: skip
        metrics["rsum"] = 0.0
        record = {"schema": SCHEMA, "status": "ok", "model": model, "dataset": "coco", "split": "test",
                  "method": "zeroshot", "seed": seed, "metrics": metrics, "config_hash": "00000000",
                  "per_query": {"file": f"zeroshot-seed{seed}.queries.npz", "sha256": sha, "topk": 10}}  # fmt: skip
        (folder / f"zeroshot-seed{seed}.json").write_text(json.dumps(record))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--models", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        write_cells(root, args.records, 201, 5, 20, t2t=True)
        t0 = time.perf_counter()
        summary = build_store(root, root / "store")
        seconds = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in summary.files.values()) / 2**20
        print(f"store: {args.records} records, {summary.rows['queries']:,} query rows: {seconds:.2f} s "
              f"({size:.1f} MiB of Parquet)")  # fmt: skip

        board_root = Path(tmp) / "board"
        write_cells(board_root, args.models, 5000, 5, args.models, t2t=False)
        t0 = time.perf_counter()
        board = leaderboard(list(iter_records(board_root)), "coco", "test", "rsum", BootstrapConfig(resamples=1000))
        seconds = time.perf_counter() - t0
        groups = len({r.group for r in board.rows})
        print(f"leaderboard: {len(board.rows)} models at 5,000 x 25,000, 1,000 resamples: {seconds:.2f} s "
              f"({groups} tie groups)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
