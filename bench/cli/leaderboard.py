"""``bench leaderboard --dataset D``: every stored model × method of a dataset ranked, with rank intervals and tie
groups from the stored per-query ranks (:mod:`bench.report.leaderboard`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.cli.common import add_config_args, load_cfg
from bench.errors import BenchError

__all__ = ["add_leaderboard_parser", "cmd_leaderboard"]

EXAMPLES = """examples:
  bench leaderboard --dataset coco-sample
  bench leaderboard --dataset coco-sample --metric t2i_r1 --format latex --out results/board.tex
  bench leaderboard --dataset synthetic --metric t2t_r1 --json"""


def add_leaderboard_parser(sub: Any) -> None:
    """Add the ``leaderboard`` subcommand."""
    p = sub.add_parser(
        "leaderboard",
        help="rank every stored row of a dataset, with rank intervals and tie groups",
        description="Rank every model × method with results on a dataset and split by one metric, from the stored "
        "per-query ranks: each row's value and interval, its rank and rank interval (every row resampled with the "
        "same image draws, and over its seeds), and tie groups (adjacent rows whose paired bootstrap test, "
        "Holm-adjusted, does not separate them at --alpha). Rows scored on other queries are named and left out.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument("--dataset", required=True, help="the dataset to rank on")
    p.add_argument("--split", help="its split (default: [eval] split)")
    p.add_argument("--metric", default="rsum",
                   help="rsum (default), or DIRECTION_METRIC: i2t_r1, t2i_r5, t2t_r1, i2i_map_at_r, ...")  # fmt: skip
    p.add_argument("--alpha", type=float, default=0.05, help="level of the adjacent-rank tests (default 0.05)")
    p.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default: [eval] bootstrap)")
    p.add_argument("--seed", type=int, default=None, help="bootstrap seed (default: [eval] bootstrap_seed)")
    p.add_argument("--level", type=float, default=None, help="interval level (default: [eval] ci_level)")
    p.add_argument("--format", default="markdown", choices=["markdown", "latex", "csv"])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", help="write to this file instead of stdout")
    p.add_argument("--results-dir", help="results folder (default: paths.results_dir)")
    p.set_defaults(func=cmd_leaderboard)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """Print (or write) the leaderboard."""
    from bench.atomic import atomic_write_bytes
    from bench.grid.records import iter_records
    from bench.report.leaderboard import leaderboard, render_board
    from bench.stats.bootstrap import BootstrapConfig

    cfg = load_cfg(args)
    if not 0 < args.alpha < 1:
        raise BenchError(f"bench leaderboard: --alpha must be in (0, 1), got {args.alpha}")
    try:
        bcfg = BootstrapConfig(
            resamples=(cfg.eval.bootstrap or 1000) if args.resamples is None else args.resamples,
            seed=cfg.eval.bootstrap_seed if args.seed is None else args.seed,
            level=cfg.eval.ci_level if args.level is None else args.level,
        )
    except ValueError as e:
        raise BenchError(f"bench leaderboard: {e}") from None
    results = Path(args.results_dir or cfg.paths.results_dir)
    board = leaderboard(list(iter_records(results)), args.dataset, args.split or cfg.eval.split, args.metric, bcfg,
                        alpha=args.alpha, ks=cfg.eval.ks)  # fmt: skip
    text = json.dumps(board.as_dict()) + "\n" if args.json else render_board(board, args.format)
    if args.out:
        try:
            atomic_write_bytes(Path(args.out), text.encode())
        except OSError as e:
            raise BenchError(f"{args.out}: cannot write the leaderboard ({e.strerror or e})") from None
    else:
        sys.stdout.write(text)
    return 0
