"""``bench verify``: finished records against the published numbers they reproduce."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.cli.common import add_config_args, add_grid_args, load_cfg
from bench.errors import BenchError

__all__ = ["add_verify_parser", "cmd_verify"]


def add_verify_parser(sub: Any) -> None:
    """Add the ``verify`` subcommand."""
    p = sub.add_parser(
        "verify",
        help="compare finished records with published numbers (pass/fail per row)",
        description="Match each finished cell (seeds averaged) to the published rows of its model, method and "
        "dataset (the CUSA paper's Tables 8-11, CLIP's and BLIP's retrieval numbers) and print ours, published and "
        "the difference per metric, with pass or fail per row. A row whose protocol differs (5K against 1K, all "
        "captions against the first five, re-ranked or not) is refused, not compared. Exit 1 if a row fails or "
        "nothing could be compared.",
        epilog="examples:\n  bench verify\n  bench verify --tolerance 0.5 --model-as clip_b32=clip:ViT-B-32/openai\n"
        "  bench verify --all --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    add_grid_args(p)
    p.add_argument("--all", action="store_true", help="every stored record, not only the configured grid's cells")
    p.add_argument("--tolerance", type=float, default=1.0, help="largest |ours - published| per metric (points)")
    p.add_argument("--model-as", action="append", default=[], metavar="ID=SPEC",
                   help="treat model ID's records as the published model SPEC (e.g. a local checkpoint of "
                        "clip:ViT-B-32/openai); repeatable")  # fmt: skip
    p.add_argument("--results-dir", help="results folder (default: paths.results_dir)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    """Print the verdict of every matched row; 1 if any fails or none was compared."""
    from bench.cli.results import grid_records
    from bench.verify.check import load_published, verify

    if not args.tolerance >= 0:
        raise BenchError(f"--tolerance must be >= 0, got {args.tolerance}")
    aliases = {}
    for item in args.model_as:
        model, sep, spec = item.partition("=")
        if not sep or not model or not spec:
            raise BenchError(f"--model-as: expected ID=SPEC, got {item!r}")
        aliases[model] = spec
    cfg = load_cfg(args)
    results = Path(args.results_dir or cfg.paths.results_dir)
    records = grid_records(args, cfg, results)
    verdicts, unmatched = verify(records, load_published(), tolerance=args.tolerance, aliases=aliases)
    compared = [v for v in verdicts if v.status != "refused"]
    failed = [v for v in verdicts if v.status == "fail"]
    if args.json:
        sys.stdout.write(json.dumps({"verdicts": [v.as_dict() for v in verdicts], "unmatched": unmatched,
                                     "tolerance": args.tolerance}) + "\n")  # fmt: skip
    else:
        lines = []
        for v in verdicts:
            seeds = len(v.records)
            head = f"{v.status.upper():7} {v.row['label']} · {v.row['dataset']} · {v.row['source']} ({seeds} seed(s))"
            lines.append(head + f": {v.reason}")
            for name, (ours, published) in v.compared.items():
                delta = ours - published
                lines.append(f"        {name:22} ours {ours:7.2f}  published {published:7.2f}  Δ {delta:+6.2f}")
        if unmatched:
            lines.append(f"no published row for: {'; '.join(unmatched)}")
        sys.stdout.write("\n".join(lines) + ("\n" if lines else ""))
    summary = f"bench verify: {len(compared) - len(failed)} passed, {len(failed)} failed, " \
              f"{len(verdicts) - len(compared)} refused (protocol), tolerance {args.tolerance:g}"  # fmt: skip
    print(summary, file=sys.stderr)
    if not compared:
        print("bench verify: no record could be compared with a published row", file=sys.stderr)
        return 1
    return 1 if failed else 0
