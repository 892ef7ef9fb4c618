"""``bench compare A B``: a paired test of two cells, or of two methods across their seeds, on the same queries."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.cli.common import add_config_args, load_cfg
from bench.errors import BenchError

__all__ = ["add_compare_parser", "cmd_compare"]

EXAMPLES = """examples:
  bench compare vse_infty:contrastive vse_infty:cusa --dataset coco-sample   # all seeds, paired by seed
  bench compare vse_infty:contrastive:0 vse_infty:cusa:0 --dataset synthetic  # one cell each
  bench compare results/runs/a/coco/test/zeroshot-seed0.json results/runs/b/coco/test/zeroshot-seed0.json --json"""


def add_compare_parser(sub: Any) -> None:
    """Add the ``compare`` subcommand."""
    p = sub.add_parser(
        "compare",
        help="paired bootstrap and McNemar test of two cells or methods",
        description="A minus B on the same queries, from the stored per-query ranks (nothing is re-scored): the "
        "paired image bootstrap of every ΔR@K and ΔRSUM with its interval and p-value, and an exact McNemar test "
        "on the R@1 hits of each direction. A side is MODEL:METHOD (every stored seed; two multi-seed sides are "
        "paired by seed and resampled over seeds and images), MODEL:METHOD:SEED, or a record's .json path.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument("a", metavar="A", help="MODEL:METHOD[:SEED] or a record .json")
    p.add_argument("b", metavar="B", help="MODEL:METHOD[:SEED] or a record .json")
    p.add_argument("--dataset", help="dataset of MODEL:METHOD sides (default: the only one stored)")
    p.add_argument("--split", help="split (default: [eval] split)")
    p.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default: [eval] bootstrap)")
    p.add_argument("--seed", type=int, default=None, help="bootstrap seed (default: [eval] bootstrap_seed)")
    p.add_argument("--level", type=float, default=None, help="interval level (default: [eval] ci_level)")
    p.add_argument("--results-dir", help="results folder (default: paths.results_dir)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_compare)


def _side(spec: str, records: list[dict[str, Any]], dataset: str | None, split: str) -> list[dict[str, Any]]:
    from bench.grid.records import read_record

    if spec.endswith(".json"):
        path = Path(spec)
        try:
            rec = read_record(path)
        except FileNotFoundError:
            raise BenchError(f"{path}: no such record") from None
        except (OSError, ValueError) as e:
            raise BenchError(str(e)) from None
        rec["_path"] = str(path)
        return [rec]
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise BenchError(f"{spec!r}: expected MODEL:METHOD, MODEL:METHOD:SEED or a record .json")
    model, method = parts[0], parts[1]
    seed = None
    if len(parts) == 3:
        try:
            seed = int(parts[2])
        except ValueError:
            raise BenchError(f"{spec!r}: the seed {parts[2]!r} is not an integer") from None
    datasets = sorted({str(r["dataset"]) for r in records if r.get("model") == model and r.get("method") == method})
    if not datasets:
        stored = sorted({f"{r.get('model')}:{r.get('method')}" for r in records if r.get("status") == "ok"})
        raise BenchError(f"{spec}: matched no stored record; stored: {', '.join(stored) or '(none)'}")
    if dataset is None:
        if len(datasets) != 1:
            raise BenchError(f"{spec}: stored for datasets {datasets or '(none)'}; choose one with --dataset")
        dataset = datasets[0]
    chosen = [
        r
        for r in records
        if (r.get("model"), r.get("method"), r.get("dataset"), r.get("split")) == (model, method, dataset, split)
        and (seed is None or r.get("seed") == seed)
        and r.get("status") == "ok"
    ]
    if not chosen:
        raise BenchError(f"{spec}: no ok record for dataset {dataset!r}, split {split!r}")
    return chosen


def _order(name: str) -> tuple[int, int, str]:
    """Directions as the tables order them, R@K by K, then the list metrics."""
    direction, _, metric = name.partition("_")
    order = ("i2t", "t2i", "rsum", "t2t", "i2i")
    d = order.index(direction) if direction in order else len(order)
    k = int(metric[1:]) if metric[:1] == "r" and metric[1:].isdigit() else 10**6
    return d, k, metric


def _format(result: dict[str, Any], a: str, b: str, level: float) -> str:
    pct = f"{100 * level:g}%"
    unit = result["bootstrap"].get("unit", "image")
    metrics = result["metrics"].items()
    if unit == "image":  # image-text cells: directions in table order; a task's own metrics come in its order
        metrics = sorted(metrics, key=lambda item: _order(item[0]))
    width = max([12, *(len(name) for name, _ in metrics)])
    lines = [f"A = {a}", f"B = {b}", "",
             f"{'metric':{width}} {'A':>8} {'B':>8} {'Δ (A−B)':>9} {pct + ' CI':>18} {'p':>7}"]  # fmt: skip
    for name, m in metrics:
        if name.endswith(("_meanr", "_mrr", "_ndcg10", "_r_precision")):
            continue
        lo, hi = m["ci"]
        lines.append(f"{name:{width}} {m['a']:8.2f} {m['b']:8.2f} {m['delta']:+9.2f} "
                     f"{f'[{lo:+.2f}, {hi:+.2f}]':>18} {m['p']:7.3f}")  # fmt: skip
    lines.append("")
    tests = result["mcnemar_r1"] if "mcnemar_r1" in result else result.get("mcnemar", {})
    what = "R@1 {}" if "mcnemar_r1" in result else "{} test"
    for d, t in tests.items():
        name = what.format(d)
        if isinstance(t["p"], list):
            ps = ", ".join(f"{p:.3g}" for p in t["p"])
            lines.append(f"McNemar {name}: per seed pair A-only {t['a_only']}, B-only {t['b_only']}, p = {ps}")
        else:
            lines.append(f"McNemar {name}: A-only {t['a_only']}, B-only {t['b_only']}, exact p = {t['p']:.3g}")
    bs = result["bootstrap"]
    levels = f" (two-level: seeds and {unit}s)" if result["n_seeds"] > 1 else ""
    lines.append(f"paired bootstrap over {unit}s: {bs['resamples']} resamples, seed {bs['seed']}; "
                 f"{result['n_seeds']} seed pair(s){levels}")  # fmt: skip
    for side in ("a", "b"):
        left = result.get(side, {}).get("left_out")
        if left:
            other = "B" if side == "a" else "A"
            lines.append(f"left out: {side.upper()}'s seed(s) {', '.join(map(str, left))} ({other} has no record for "
                         "them; a trained method's seeds are not reused)")  # fmt: skip
    return "\n".join(lines)


def cmd_compare(args: argparse.Namespace) -> int:
    """Print the paired comparison of two sides."""
    from bench.errors import UnknownNameError
    from bench.grid.records import iter_records
    from bench.report.uncertainty import compare_cells, pair_seeds, row_values, unpaired_seeds
    from bench.stats.bootstrap import BootstrapConfig
    from bench.tasks import get_task, task_of_record

    cfg = load_cfg(args)
    results = Path(args.results_dir or cfg.paths.results_dir)
    split = args.split or cfg.eval.split
    needs_store = not (args.a.endswith(".json") and args.b.endswith(".json"))
    records = list(iter_records(results)) if needs_store else []
    side_a = _side(args.a, records, args.dataset, split)
    side_b = _side(args.b, records, args.dataset, split)
    try:
        bcfg = BootstrapConfig(
            resamples=cfg.eval.bootstrap if args.resamples is None else args.resamples,
            seed=cfg.eval.bootstrap_seed if args.seed is None else args.seed,
            level=cfg.eval.ci_level if args.level is None else args.level,
        )
    except ValueError as e:
        raise BenchError(f"bench compare: {e}") from None
    tasks = {task_of_record(r) for r in side_a + side_b}
    if len(tasks) > 1:
        raise BenchError(f"bench compare: the two sides are records of different tasks ({', '.join(sorted(tasks))})")
    try:
        task = get_task(tasks.pop())
    except UnknownNameError as e:
        raise BenchError(f"bench compare: {e}") from None
    own = task.compare(side_a, side_b, bcfg)
    if own is not None:
        out = own
        out["a"]["spec"], out["b"]["spec"] = args.a, args.b
    else:
        ks = cfg.eval.ks
        va, vb = row_values(side_a, ks), row_values(side_b, ks)
        out = compare_cells(va, vb, bcfg).as_dict()  # each metric: a, b (observed), delta, ci, p
        pa, pb = pair_seeds(va, vb)
        left_a, left_b = unpaired_seeds(va, vb)
        out["a"] = {"spec": args.a, "seeds": [c.seed for c in pa], "left_out": left_a}
        out["b"] = {"spec": args.b, "seeds": [c.seed for c in pb], "left_out": left_b}
    if args.json:
        sys.stdout.write(json.dumps(out) + "\n")
    else:
        sys.stdout.write(_format(out, args.a, args.b, bcfg.level) + "\n")
    return 0
