"""``bench export MODEL:METHOD:SEED --dataset D --out DIR``: a trained cell's selected model in its family's native
form (:mod:`bench.train.export`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.cli.common import add_config_args, load_cfg
from bench.errors import BenchError

__all__ = ["add_export_parser", "cmd_export", "parse_cell"]

EXAMPLES = """examples:
  bench export vse_infty:cusa:0 --dataset coco-sample --out exports/vse_infty-cusa
  bench export clip_b32:contrastive:1 --dataset coco --split test --out exports/clip-ft"""


def add_export_parser(sub: Any) -> None:
    """Add the ``export`` subcommand."""
    p = sub.add_parser(
        "export",
        help="write a trained cell's model in its family's native form",
        description="Write the selected (best on validation) model of a trained cell into a new folder, in the form "
        "its family's own library loads: open_clip's hub layout (open_clip_config.json and "
        "open_clip_model.safetensors), a save_pretrained folder (hf_clip, blip), or the VSE∞ authors' "
        "model_best.pth. A method's own parameters (temperatures, CUSA's heads) go to heads.safetensors, and "
        "export.json records where it came from and how to load it.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument("cell", metavar="MODEL:METHOD:SEED", help="the trained cell (a model id may contain ':')")
    p.add_argument("--dataset", required=True, help="the dataset the cell was scored on")
    p.add_argument("--split", help="its split (default: [eval] split)")
    p.add_argument("--out", required=True, type=Path, help="a new (or empty) folder to write the model to")
    p.set_defaults(func=cmd_export)


def parse_cell(spec: str) -> tuple[str, str, int]:
    """``MODEL:METHOD:SEED`` (the model id may itself hold ``:``, as ad-hoc ``clip:ViT-B-32/openai`` does)."""
    parts = spec.rsplit(":", 2)
    if len(parts) != 3 or not all(parts) or not parts[2].isdigit():
        raise BenchError(f"bench export: {spec!r} is not MODEL:METHOD:SEED (e.g. vse_infty:cusa:0)")
    return parts[0], parts[1], int(parts[2])


def cmd_export(args: argparse.Namespace) -> int:
    """Run ``bench export``."""
    from bench.grid.cell import Cell
    from bench.grid.records import cell_stem
    from bench.train.export import export_cell

    model, method, seed = parse_cell(args.cell)
    cfg = load_cfg(args)
    if args.dataset not in cfg.datasets:
        known = ", ".join(cfg.datasets)
        raise BenchError(f"bench export: no dataset {args.dataset!r} in {cfg.source} (known: {known})")
    from bench.grid.sweep import parse_variant_id
    from bench.methods import get_method

    method, variant = parse_variant_id(method, model)  # a sweep's variant: cusa[alpha=0.1]
    get_method(method)  # an unknown method is one line (UnknownNameError)
    cell = Cell(model, args.dataset, method, seed, args.split or cfg.eval.split, variant)
    body = export_cell(cfg, cell, args.out)
    print(f"exported {cell.label} (epoch {body['selected_epoch']}) to {args.out}")
    print(f"load: {body['load']}")
    print(f"in itr-bench: [models.{model.replace(':', '_')}-{cell_stem(cell.method_id, seed)}] "
          f"{json.dumps(body['options'])}")  # fmt: skip
    if body["heads"]:
        print(f"the method's heads: {args.out / body['heads']} (bench.train.export.load_heads)")
    return 0
