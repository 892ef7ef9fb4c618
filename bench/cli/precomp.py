"""``bench precomp``: write a configured image-text dataset in SCAN's precomp layout, a timm backbone's grid cells as
its regions (:mod:`bench.data.precomp_write`), for the region models (SCAN, SGR, SAF) on photos without detector
features."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.cli.common import add_config_args, csv_list, load_cfg
from bench.errors import BenchError

__all__ = ["add_precomp_parser", "cmd_precomp"]

# The reference repositories' split names: their validation split is "dev".
_NAMES = {"train": "train", "val": "dev", "test": "test"}


def add_precomp_parser(sub: Any) -> None:
    """Add the ``precomp`` subcommand."""
    p = sub.add_parser(
        "precomp",
        help="write a dataset as precomp region features (a backbone's grid cells)",
        description="Encode each split of a configured image-text dataset with a timm backbone and write its last "
        "feature map's cells as the split's regions, in SCAN's precomp layout (<split>_ims.npy, _caps.txt, "
        "_ids.txt, _photos.txt; val is written as dev, as the reference repositories name it) with a precomp.json "
        "saying what the features are, and a vocabulary of the train and dev captions (<folder>_vocab.json, words "
        "seen 4+ times, as SCAN's vocab.py). Every image keeps the split's most common caption count; the others are "
        "left out, and the manifest says how many.",
        epilog="examples:\n  bench precomp coco-sample --out data/coco-sample-grid\n"
        "  bench precomp coco-sample --out data/coco-sample-grid --backbone tf_efficientnet_lite0 --splits train,test",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument("dataset", help="a dataset id of the config")
    p.add_argument("--out", required=True, type=Path, help="the folder to write (created if missing)")
    p.add_argument("--splits", default="train,val,test", help="comma-separated splits (missing ones are skipped)")
    p.add_argument("--backbone", default="tf_efficientnet_lite0", help="timm model whose last feature map is written")
    p.add_argument("--weights", default="auto", help="auto (a packaged copy, else the hub), hub, random or a path")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_precomp)


def cmd_precomp(args: argparse.Namespace) -> int:
    """Write every requested split; print each one's manifest entry."""
    from bench.data import load_split
    from bench.data.precomp_write import write_grid_precomp, write_vocab
    from bench.errors import SplitNotFoundError

    cfg = load_cfg(args)
    if args.dataset not in cfg.datasets:
        raise BenchError(f"{cfg.source}: no [datasets.{args.dataset}]; configured: {', '.join(cfg.datasets)}")
    written = 0
    for split_name in csv_list(args.splits):
        if split_name not in _NAMES:
            raise BenchError(f"--splits: {split_name!r} is not one of {', '.join(_NAMES)}")
        try:
            split = load_split(args.dataset, cfg.datasets[args.dataset], split_name, work_dir=Path(cfg.paths.work_dir))
        except SplitNotFoundError as e:
            print(f"bench precomp: {e}; skipped", file=sys.stderr)
            continue
        entry = write_grid_precomp(split, args.out, _NAMES[split_name], backbone=args.backbone, weights=args.weights,
                                   batch_size=args.batch_size, device=args.device)  # fmt: skip
        shown = ("features", "backbone", "regions", "dim", "images", "captions_per_image", "images_left_out",
                 "captions_left_out")  # fmt: skip
        print(json.dumps({"split": _NAMES[split_name], **{k: entry[k] for k in shown}}))
        written += 1
    if not written:
        raise BenchError(f"{args.dataset}: none of the splits {args.splits!r} exists")
    if any((args.out / f"{s}_caps.txt").is_file() for s in ("train", "dev")):
        print(json.dumps({"vocab": str(write_vocab(args.out))}))
    return 0
