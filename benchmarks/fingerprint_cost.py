"""What a split's fingerprint costs in each ``[eval] fingerprint`` mode, on the real COCO sample (801 photos).

Prints seconds for the stat stamp, the content stamp cold (every image read and hashed) and warm (every digest
from ``content-digests.json``), each on a freshly loaded split (the fingerprint is memoised on the split object):

    python benchmarks/fingerprint_cost.py [--root ../shared/data/coco-sample]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench.data import load_split
from bench.data.stamps import save_stamps, use_stamps

ROOT = Path(__file__).resolve().parents[1]


def timed(root: Path, work: Path, mode: str) -> float:
    use_stamps(mode, work)  # type: ignore[arg-type]
    seconds = 0.0
    for split in ("train", "test"):
        loaded = load_split("coco-sample", {"format": "flat_json", "root": str(root)}, split, work_dir=work)
        t0 = time.perf_counter()
        loaded.fingerprint()
        seconds += time.perf_counter() - t0
    save_stamps()
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=ROOT.parent / "shared" / "data" / "coco-sample")
    args = ap.parse_args()
    if not (args.root / "test.json").is_file():
        print(f"{args.root} is absent: nothing to measure", file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in (args.root / "pics").iterdir()) / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stat = timed(args.root, work, "stat")
        cold = timed(args.root, work, "content")
        warm = timed(args.root, work, "content")
    print(f"801 images, {size:.1f} MiB")
    print(f"stat stamp:           {stat * 1e3:8.1f} ms")
    print(f"content stamp, cold:  {cold * 1e3:8.1f} ms")
    print(f"content stamp, warm:  {warm * 1e3:8.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
