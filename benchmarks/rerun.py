"""Warm re-run of a finished grid against its cold run: `bench run` twice in a fresh folder.

The cold run builds the default dataset, extracts and caches the frozen backbone features, trains and scores every
cell of bench.toml's default grid; the warm run finds every record done (same config hash) and must do no encoding
and no training. Issue #6's goal: warm >= 20x faster than cold. Extra arguments go to both `bench run` calls.

    python benchmarks/rerun.py                               # the default grid (about 5-7 minutes on 2 cores)
    python benchmarks/rerun.py --set train.epochs=1          # a shorter cold run
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bench_run(folder: Path, extra: list[str]) -> tuple[float, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench", "run", *extra], cwd=folder, env=env, capture_output=True,
                          text=True)  # fmt: skip
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, proc.stderr


def main() -> None:
    extra = sys.argv[1:]
    with tempfile.TemporaryDirectory(prefix="bench-rerun-") as tmp:
        folder = Path(tmp)
        shutil.copy(ROOT / "bench.toml", folder / "bench.toml")
        cold, _ = bench_run(folder, extra)
        features = sorted((folder / "work_dir" / "features").glob("*.pt"))
        stamps = {p: p.stat().st_mtime_ns for p in features}
        warm, log = bench_run(folder, extra)
        rewritten = [p.name for p in features if p.stat().st_mtime_ns != stamps[p]]
        records = list((folder / "results" / "runs").rglob("*.json"))
    print(f"bench run {' '.join(extra)}".rstrip() + f": {len(records)} records, {len(features)} cached feature files")
    print(f"cold: {cold:.1f} s; warm: {warm:.1f} s; warm is {cold / warm:.0f}x faster (goal >= 20x)")
    print(f"feature files rewritten by the warm run: {len(rewritten)}; warm run log: {log.strip().splitlines()[:1]}")


if __name__ == "__main__":
    main()
