"""``bench data``: a card per configured dataset split: what it holds and its fingerprint."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.cli.common import add_config_args, csv_list, load_cfg
from bench.errors import BenchError
from bench.tasks import get_task

__all__ = ["add_data_parser", "cmd_data", "dataset_card"]


def add_data_parser(sub: Any) -> None:
    """Add the ``data`` subcommand."""
    p = sub.add_parser(
        "data",
        help="dataset cards: images, captions, captions per image, fingerprint",
        description="Load each configured dataset's splits and print a card: images, captions, the histogram of "
        "captions per image, labels, where it was read from, and the content fingerprint a result record stores "
        "(a changed caption or image changes it, and the cells that read it run again).",
        epilog="examples:\n  bench data\n  bench data coco-sample --splits test --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument("datasets", nargs="*", help="dataset ids (default: the grid's)")
    p.add_argument("--splits", default="train,val,test", help="comma-separated splits (missing ones are skipped)")
    p.add_argument("--json", action="store_true", help="one JSON object per split, one per line")
    p.set_defaults(func=cmd_data)


def dataset_card(split: Any, fingerprint: dict[str, str]) -> dict[str, Any]:
    """What a loaded split holds, as a JSON-ready card."""
    card: dict[str, Any] = {"dataset": split.dataset, "split": split.split,
                            "source": str(getattr(split, "source", "") or "")}  # fmt: skip
    card.update(get_task(split.task).card(split))
    card["fingerprint"] = fingerprint
    return card


def _text(card: dict[str, Any]) -> str:
    lines = [f"{card['dataset']} ({card['split']})" + (f"  from {card['source']}" if card["source"] else "")]
    for key in ("language", "items", "images", "captions", "classes", "pairs", "labels"):
        if card.get(key) is not None:
            lines.append(f"  {key}: {card[key]:,}" if isinstance(card[key], int) else f"  {key}: {card[key]}")
    if "captions_per_image" in card:
        hist = ", ".join(f"{n} caption{'s' if n != 1 else ''}: {c:,}" for n, c in card["captions_per_image"].items())
        lines.append(f"  captions per image: {hist}")
    if "subsets" in card:
        lines.append("  items per subset: " + ", ".join(f"{k} {v:,}" for k, v in card["subsets"].items()))
    if card.get("averages"):
        lines.append("  averages: " + "; ".join(f"{k} = mean of {', '.join(v)}" for k, v in card["averages"].items()))
    if "groups" in card:
        lines.append(f"  groups: {', '.join(card['groups'])}")
    lines.append("  fingerprint: " + ", ".join(f"{k} {v}" for k, v in card["fingerprint"].items()))
    return "\n".join(lines)


def cmd_data(args: argparse.Namespace) -> int:
    """Print the card of every requested split."""
    from bench.data import load_split
    from bench.data.stamps import save_stamps, use_stamps
    from bench.errors import SplitNotFoundError
    from bench.grid.fingerprint import content_key

    cfg = load_cfg(args)
    names = args.datasets or cfg.grid.datasets
    unknown = [n for n in names if n not in cfg.datasets]
    if unknown:
        raise BenchError(f"{cfg.source}: no [datasets.{unknown[0]}]; configured: {', '.join(cfg.datasets)}")
    work = Path(cfg.paths.work_dir)
    use_stamps(cfg.eval.fingerprint, work)  # the card's fingerprint is the one records store
    shown = 0
    missing: list[str] = []  # the loaders' own lines, said when no split at all could be shown
    from bench.config import dataset_members

    for name in dict.fromkeys(m for n in names for m in dataset_members(cfg, n)):
        for split_name in csv_list(args.splits):
            try:
                split = load_split(name, cfg.datasets[name], split_name, work_dir=work)
            except SplitNotFoundError as e:
                missing.append(str(e))
                continue
            card = dataset_card(split, content_key(split))
            if "language" in cfg.datasets[name]:
                card["language"] = cfg.datasets[name]["language"]
            sys.stdout.write((json.dumps(card) if args.json else _text(card) + "\n") + "\n")
            shown += 1
    save_stamps()
    if not shown:
        raise BenchError(missing[0] if len(set(missing)) == 1 else f"no split {args.splits!r} in {', '.join(names)}: "
                         + "; ".join(dict.fromkeys(missing)))  # fmt: skip
    return 0
