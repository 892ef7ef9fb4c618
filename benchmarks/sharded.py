"""Sharded evaluation (#17): one process against ``bench run --shards N`` on the SLURM cluster, and the plan for a
web-scale split on paper.

1. A split of precomputed embeddings (``--images`` x 5 captions, d ``--dim``; tiny PNG stand-ins for the images,
   which the ``embeddings`` adapter never decodes) is scored once by ``bench run`` in one process and once by
   ``bench run --shards N --launcher slurm --wait`` on the cluster that answers ``sinfo``; the two records are
   checked equal (metrics and per-query file) and both wall times printed, with each phase's job times from sacct.
2. The per-tile rates of the two scans a score task runs (two-way i2t/t2i scan, t2t sibling scan), measured here
   with top-k lists on, give the projected wall time and memory per task for ``--project`` (default 10M images x 50M
   captions x d 768) on 8 to 512 devices of the kind this ran on.

    python benchmarks/sharded.py                      # 8,000 images, 40,000 captions, d 768, 4 shards
    python benchmarks/sharded.py --images 2000 --shards 2
    python benchmarks/sharded.py --rates-only         # step 2 alone (no cluster needed)

Run on an otherwise idle machine; ``.ci/slurm-local.sh up`` starts a local single-node cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.scoring.itr_scan import itr_scan
from bench.scoring.sibling_scan import sibling_scan


def make_split(root: Path, n_img: int, per: int, dim: int, seed: int = 0) -> None:
    """A flat_json split of ``n_img`` 4x4 PNGs with ``per`` captions each, and random embeddings with real structure
    (a caption is its image's vector plus noise)."""
    rng = np.random.default_rng(seed)
    pics = root / "pics"
    pics.mkdir(parents=True)
    rows = []
    for i in range(n_img):
        Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(pics / f"{i}.png")
        rows += [{"image_path": f"pics/{i}.png", "caption": f"caption {k} of image {i}", "image_id": f"{i}.png"}
                 for k in range(per)]  # fmt: skip
    (root / "test.json").write_text(json.dumps(rows))
    img = rng.standard_normal((n_img, dim), dtype=np.float32)
    txt = np.repeat(img, per, axis=0) + 1.2 * rng.standard_normal((n_img * per, dim), dtype=np.float32)
    np.save(root / "image_emb.npy", img)
    np.save(root / "text_emb.npy", txt)


def config(root: Path, data: Path, results: str, slurm: bool) -> Path:
    path = root / f"{results}.toml"
    launcher = '\n[launcher]\nname = "slurm"\ncpus_per_task = 1\nmem_gb = 4\ntimeout_min = 60\n' if slurm else ""
    path.write_text(f"""
[paths]
results_dir = "{root / results}"
work_dir = "{root / "work"}"

[grid]
models = ["emb"]
datasets = ["big"]
methods = ["zeroshot"]
seeds = [0]

[train]
device = "cpu"

[models.emb]
adapter = "embeddings"
image_emb = "{data / "image_emb.npy"}"
text_emb = "{data / "text_emb.npy"}"

[datasets.big]
format = "flat_json"
root = "{data}"
""" + launcher)
    return path


def bench(*argv: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench", *argv], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - t0


def sacct_times(since: float) -> dict[str, float]:
    """Elapsed seconds of the bench-encode/score/merge arrays started since ``since``, per phase (first start to last
    end)."""
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since))
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-S", start, "--format=JobName,Start,End"], capture_output=True,
                         text=True)  # fmt: skip
    spans: dict[str, list[float]] = {}
    for line in out.stdout.splitlines():
        name, start, end = line.split("|")
        if name.startswith("bench-") and start[:1].isdigit() and end[:1].isdigit():
            s = time.mktime(time.strptime(start, "%Y-%m-%dT%H:%M:%S"))
            e = time.mktime(time.strptime(end, "%Y-%m-%dT%H:%M:%S"))
            spans.setdefault(name.removeprefix("bench-"), []).extend([s, e])
    return {k: max(v) - min(v) for k, v in spans.items()}


def same_record(a: Path, b: Path) -> bool:
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    za, zb = np.load(a.with_suffix(".queries.npz")), np.load(b.with_suffix(".queries.npz"))
    arrays = za.files == zb.files and all(np.array_equal(za[k], zb[k]) for k in za.files)
    return ra["metrics"] == rb["metrics"] and ra["per_query"]["sha256"] == rb["per_query"]["sha256"] and arrays


def tile_rates(n_img: int, per: int, dim: int, device: str, memory_mb: float, topk: int = 10) -> dict[str, float]:
    """Scores per second of the two-way scan and of the t2t sibling scan (each score: one d-long dot product, the
    threshold counts and the top-k merge), on ``device``."""
    rng = np.random.default_rng(1)
    img = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((n_img, dim), dtype=np.float32)), dim=1)
    c2i = np.repeat(np.arange(n_img), per)
    txt = torch.nn.functional.normalize(img[c2i] + 1.2 * torch.randn(len(c2i), dim), dim=1)
    img, txt = img.to(device), txt.to(device)
    rates = {}
    for name, fn, n_scores in (
        ("itr", lambda: itr_scan(img, txt, c2i, topk=topk, memory_mb=memory_mb), n_img * len(c2i)),
        ("t2t", lambda: sibling_scan(txt, c2i, topk=topk, memory_mb=memory_mb), len(c2i) ** 2 / 2),  # a triangle
    ):
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        rates[name] = n_scores / (time.perf_counter() - t0)
    return rates


def project(rates: dict[str, float], n_img: float, n_txt: float, dim: int, topk: int = 10) -> None:
    """The plan on paper: wall time and memory per score task for ``n_img`` x ``n_txt`` at d ``dim``."""
    gb = 1e9
    gallery = n_img * dim * 4 / gb
    captions = n_txt * dim * 4 / gb
    lists = topk * (4 + 8 + 1) / gb  # score, gallery row, positive flag per list entry
    print(f"\nprojection: {n_img:.3g} images x {n_txt:.3g} captions x d {dim}; measured rates: two-way scan "
          f"{rates['itr']:.3g} scores/s, t2t triangle {rates['t2t']:.3g} scores/s per device")  # fmt: skip
    print(f"  scores: i2t/t2i {n_img * n_txt:.3g} (one pass serves both), t2t {n_txt * n_txt / 2:.3g} (one triangle)")
    print("  devices | i2t+t2i wall | t2t wall | device memory per task (gallery + own captions + lists) | host RAM")
    for n in (8, 64, 512):
        itr_s = n_img * n_txt / n / rates["itr"]
        t2t_s = n_txt * n_txt / 2 / n / rates["t2t"]
        mem = gallery + captions / n + n_img * lists * 9 + n_txt / n * lists  # i2t lists with 8 pending tiles
        host = gallery + captions  # every task loads both matrices (t2t needs every caption)
        print(f"  {n:7d} | {itr_s / 3600:9.2f} h | {t2t_s / 3600:7.2f} h | {mem:10.1f} GB"
              f"{' ' * 44}| {host:6.1f} GB")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8000)
    ap.add_argument("--per-image", type=int, default=5)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--rates-only", action="store_true", help="only measure the tile rates and project")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--project", default="1e7,5e7", help="images,captions of the projected split")
    ap.add_argument("--memory-mb", type=float, default=256.0, help="the scans' tile budget (GPU: 1024)")
    args = ap.parse_args()
    n_txt = args.images * args.per_image
    print(f"problem: {args.images} images x {n_txt} captions x d {args.dim}; torch threads {torch.get_num_threads()}")
    if not args.rates_only:
        if shutil.which("sinfo") is None or subprocess.run(["sinfo"], capture_output=True).returncode != 0:
            sys.exit("no SLURM cluster answers `sinfo` (bash .ci/slurm-local.sh up starts one); or pass --rates-only")
        root = Path(tempfile.mkdtemp(prefix="bench-sharded-"))
        try:
            make_split(root / "data", args.images, args.per_image, args.dim)
            one = bench("run", "--config", str(config(root, root / "data", "single", False)), "-q", "--no-table")
            sharded_cfg = config(root, root / "data", "sharded", True)
            since = time.time() - 1
            wall = bench("run", "--config", str(sharded_cfg), "-q", "--no-table", "--shards", str(args.shards),
                         "--launcher", "slurm", "--wait")  # fmt: skip
            phases = sacct_times(since)
            rec = Path("runs/emb/big/test/zeroshot-seed0.json")
            equal = same_record(root / "sharded" / rec, root / "single" / rec)
            print(f"one process (bench run): {one:.1f} s wall")
            print(f"sharded ({args.shards} encode + {args.shards} score tasks + merge on the local cluster): "
                  f"{wall:.1f} s wall; phases (sacct, first start to last end): "
                  + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items()))  # fmt: skip
            print(f"records equal (metrics, per-query sha256 and arrays): {equal}")
        finally:
            shutil.rmtree(root, ignore_errors=True)
    rates = tile_rates(args.images if args.rates_only else min(args.images, 4000), args.per_image, args.dim,
                       args.device, args.memory_mb)
    n_img, n_cap = (float(x) for x in args.project.split(","))
    project(rates, n_img, n_cap, args.dim)
    print(f"  (rates measured on {args.device}, one score task per device; i2t lists counted with the 8 tiles of "
          "candidates a list may hold before it is merged)")


if __name__ == "__main__":
    main()
