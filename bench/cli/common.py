"""What the ``bench`` subcommands share: config and grid arguments, loading the config, expanding the grid."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench.errors import BenchError

__all__ = [
    "add_config_args",
    "add_grid_args",
    "baseline_for",
    "csv_list",
    "grid_cells",
    "int_at_least",
    "load_cfg",
    "parse_seeds",
]


def int_at_least(minimum: int) -> Any:
    """An argparse ``type`` for integers >= ``minimum`` (a bad value is argparse's one-line usage error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value

    return parse


def csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_seeds(text: str) -> list[int]:
    seeds = []
    for s in csv_list(text):
        try:
            seeds.append(int(s))
        except ValueError:
            raise BenchError(f"--seeds: {s!r} is not an integer; expected e.g. 0,1,2") from None
    return seeds


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="bench.toml to use (default: ./bench.toml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=5 (repeatable)",
    )


def add_grid_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", help="comma-separated model ids, family:checkpoint, or 'all'")
    p.add_argument("--datasets", help="comma-separated dataset ids, or 'all'")
    p.add_argument("--methods", help="comma-separated methods (zeroshot, contrastive, ...)")
    p.add_argument("--seeds", help="comma-separated integer seeds")
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                   help="sweep a [train], [eval], [methods.<m>] or [models.<id>] key over these values: one cell "
                   "per value, e.g. methods.cusa.alpha=0.05,0.1 (repeatable: every combination; adds to "
                   "[sweep])")  # fmt: skip
    p.add_argument("--yes", action="store_true", help="run a sweep of more cells than its limit ([sweep] limit)")


def load_cfg(args: argparse.Namespace) -> Any:  # -> BenchConfig
    from bench.config import PACKAGED_CONFIG, apply_overrides, default_config_path, load_config

    if args.config is None and default_config_path() == PACKAGED_CONFIG:
        print(f"bench: no bench.toml in {Path.cwd()}; using the packaged default ({PACKAGED_CONFIG})", file=sys.stderr)
    cfg = load_config(args.config)
    return apply_overrides(cfg, args.overrides) if args.overrides else cfg


def baseline_for(records: list[dict[str, Any]], asked: str | None) -> str | None:
    # The ΔRSUM column compares with `contrastive` when the records hold it; a zero-shot-only table has none.
    if asked is not None:
        return asked
    return "contrastive" if any(r.get("method") == "contrastive" for r in records) else None


def grid_cells(args: argparse.Namespace, cfg: Any) -> list[Any]:
    from bench.grid.local import expand_grid

    cells = expand_grid(
        cfg,
        models=csv_list(args.models) if args.models else None,
        datasets=csv_list(args.datasets) if args.datasets else None,
        methods=csv_list(args.methods) if args.methods else None,
        seeds=parse_seeds(args.seeds) if args.seeds else None,
        sweep=getattr(args, "sweep", None),
        yes=getattr(args, "yes", False),
    )
    if not cells:
        raise BenchError(
            "the grid has no cells: no model runs any of the requested methods (see each model's "
            "'methods' key in the config)"
        )
    return cells
