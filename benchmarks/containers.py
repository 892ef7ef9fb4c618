"""Datasets where they live: load time and decode throughput of one split kept as image files (flat JSON),
webdataset shards, a saved Hugging Face dataset and a parquet file, and the main process's memory while encoding.

The split is coco-sample's test split (201 real COCO photos) repeated ``--repeat`` times under new ids, written in
each form once into a temporary folder. Load = building the :class:`RetrievalSplit` (what every ``bench run`` and
fingerprint check does); decode = every image through a 224-px resize-and-crop transform in DataLoader batches of 64.
RSS is the resident memory of the process that loads and decodes (a fresh one per form): after loading, and its
peak while decoding.

    python benchmarks/containers.py --repeat 10 --workers 0 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
COCO = ROOT.parent / "shared" / "data" / "coco-sample"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def repeated(split, n: int):  # -> RetrievalSplit
    per = split.image_to_captions()
    paths, ids, caps, c2i = [], [], [], []
    for r in range(n):
        for i in range(split.n_images):
            paths.append(split.image_paths[i])
            ids.append(f"{r}-{split.image_ids[i]}")
            for j in per[i]:
                caps.append(split.captions[j].rstrip("\n"))
                c2i.append(len(paths) - 1)
    return dataclasses.replace(split, image_paths=paths, image_ids=ids, captions=caps,
                               caption_to_image=np.asarray(c2i), _fingerprint=[])  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one form, in its own process
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        return measure(json.loads(args.measure), Path(args.tmp), args.workers)
    if not (COCO / "test.json").is_file():
        sys.exit(f"{COCO} is absent")
    from bench.data import load_split
    from tests.containers import save_hf, write_parquet, write_shards

    base = load_split("coco-sample", {"format": "flat_json", "root": str(COCO)}, "test", work_dir=Path("/none"))
    split = repeated(base, args.repeat)
    tmp = Path(tempfile.mkdtemp(prefix="itr-containers-"))
    flat = tmp / "flat"
    (flat / "pics").mkdir(parents=True)

    for iid, p in zip(split.image_ids, split.image_paths, strict=True):  # a gallery lists each file once
        (flat / "pics" / iid).symlink_to(p)
    rows = [{"image_path": f"pics/{split.image_ids[split.caption_to_image[j]]}", "caption": c,
             "image_id": split.image_ids[split.caption_to_image[j]]} for j, c in enumerate(split.captions)]  # fmt: skip
    (flat / "test.json").write_text(json.dumps(rows))
    write_shards(split, tmp / "wds", maxcount=500)
    save_hf(split, tmp / "saved")
    write_parquet(split, tmp / "pq" / "test.parquet", row_group_size=100)
    specs = {
        "flat_json (files)": {"format": "flat_json", "root": str(flat)},
        "webdataset": {"format": "webdataset", "root": str(tmp / "wds")},
        "hf_dataset": {"format": "hf_dataset", "root": str(tmp / "saved")},
        "parquet": {"format": "parquet", "root": str(tmp / "pq")},
    }
    shard_mb = sum(f.stat().st_size for f in (tmp / "wds").rglob("*.tar")) / 2**20
    print(f"{split.n_images} images, {split.n_captions} captions; {shard_mb:.1f} MiB of shards")
    head = " ".join(f"{f'{w} workers img/s':>16} {'peak RSS MB':>11}" for w in args.workers)
    print(f"{'form':<20} {'load s':>7} {'RSS after load':>14} {head}")
    import subprocess

    for name, spec in specs.items():  # each form in a fresh process, so its memory is its own
        out = subprocess.run([sys.executable, __file__, "--measure", json.dumps(spec), "--tmp", str(tmp),
                              "--workers", *map(str, args.workers)], capture_output=True, text=True, check=True)
        print(f"{name:<20} {out.stdout.strip()}")


def measure(spec: dict, tmp: Path, workers: list[int]) -> None:
    import torchvision.transforms as T

    from bench.data import load_split
    from bench.encode.features import iter_image_batches

    transform = T.Compose([T.Resize(224), T.CenterCrop(224), T.ToTensor()])
    t0 = time.perf_counter()
    s = load_split("bench", spec, "test", work_dir=tmp)
    load = time.perf_counter() - t0
    after = rss_mb()
    cols = []
    for w in workers:
        peak, done = [rss_mb()], threading.Event()

        def watch(peak: list[float] = peak, done: threading.Event = done) -> None:
            while not done.wait(0.05):
                peak.append(rss_mb())

        th = threading.Thread(target=watch)
        th.start()
        t0 = time.perf_counter()
        n = sum(b.shape[0] for b in iter_image_batches(s, transform, 64, num_workers=w))
        rate = n / (time.perf_counter() - t0)
        done.set()
        th.join()
        cols.append(f"{rate:>16.0f} {max(peak):>11.0f}")
    print(f"{load:>7.2f} {after:>14.0f} " + " ".join(cols))


if __name__ == "__main__":
    main()
