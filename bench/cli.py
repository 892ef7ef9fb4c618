"""The ``bench`` command: ``list``, ``run``, ``status``, ``table`` and ``score``.

``main(argv)`` is a plain function, so tests call it as ``main(["run", ...])``. Errors from user input print one line
(``bench: error: ...``) and exit 2; a grid with failed cells exits 1 after writing every cell that finished.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bench.errors import BenchError

__all__ = ["main"]


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _seeds(text: str) -> list[int]:
    seeds = []
    for s in _csv(text):
        try:
            seeds.append(int(s))
        except ValueError:
            raise BenchError(f"--seeds: {s!r} is not an integer; expected e.g. 0,1,2") from None
    return seeds


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="bench.toml to use (default: ./bench.toml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=5 (repeatable)",
    )


def _grid_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", help="comma-separated model ids, family:checkpoint, or 'all'")
    p.add_argument("--datasets", help="comma-separated dataset ids, or 'all'")
    p.add_argument("--methods", help="comma-separated methods (zeroshot, contrastive, ...)")
    p.add_argument("--seeds", help="comma-separated integer seeds")


def _load(args: argparse.Namespace):  # -> BenchConfig
    from bench.config import apply_overrides, load_config

    cfg = load_config(args.config)
    return apply_overrides(cfg, args.overrides) if args.overrides else cfg


def cmd_list(args: argparse.Namespace) -> int:
    """Print adapter families, configured models and datasets, methods and dataset formats."""
    from bench.data import list_formats
    from bench.methods import list_methods
    from bench.registry import list_adapters

    cfg = _load(args)
    print("adapters: " + ", ".join(list_adapters()))
    print("models:")
    for mid, spec in cfg.models.items():
        opts = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "adapter")
        print(f"  {mid:<16} {spec['adapter']:<10} {opts}")
    print("datasets:")
    for did, spec in cfg.datasets.items():
        opts = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "format")
        print(f"  {did:<16} {spec['format']:<10} {opts}")
    print("methods: " + ", ".join(list_methods()))
    print("dataset formats: " + ", ".join(list_formats()))
    return 0


def _grid(args: argparse.Namespace, cfg):  # -> list[Cell]
    from bench.runner import expand_grid

    cells = expand_grid(
        cfg,
        models=_csv(args.models) if args.models else None,
        datasets=_csv(args.datasets) if args.datasets else None,
        methods=_csv(args.methods) if args.methods else None,
        seeds=_seeds(args.seeds) if args.seeds else None,
    )
    if not cells:
        raise BenchError(
            "the grid has no cells: no model runs any of the requested methods (see each model's "
            "'methods' key in the config)"
        )
    return cells


def cmd_run(args: argparse.Namespace) -> int:
    """Run a grid (in this process, or through submitit) and print its table."""
    from bench.launch import check_launcher

    cfg = _load(args)
    cells = _grid(args, cfg)
    launcher = check_launcher(cfg, args.launcher)
    print(f"bench: {len(cells)} cell(s); results in {cfg.paths.results_dir}/runs", file=sys.stderr)
    if launcher != "local":
        return _run_submitit(args, cfg, cells, launcher)
    from bench.results import read_record
    from bench.runner import run_grid
    from bench.tables import render

    report = run_grid(cfg, cells, force=args.force, progress=not args.quiet)
    records = [read_record(p) for p in report.paths if p.is_file()]
    if records and not args.no_table:
        print(render(records, "markdown", baseline_method="contrastive"))
    for cell, reason in report.unavailable:
        print(f"bench: unavailable: {cell.label}: {reason}", file=sys.stderr)
    for cell, reason in report.failed:
        print(f"bench: FAILED: {cell.label}: {reason}", file=sys.stderr)
    print(
        f"bench: {len(report.ran)} ran, {len(report.skipped)} skipped (done), {len(report.unavailable)} "
        f"unavailable, {len(report.failed)} failed",
        file=sys.stderr,
    )
    nothing_ran = not report.ran and not report.skipped
    return 1 if report.failed or nothing_ran else 0


def _run_submitit(args: argparse.Namespace, cfg, cells: list, launcher: str) -> int:
    import dataclasses

    from bench.launch import grid_status, submit_grid, wait_for

    cfg = dataclasses.replace(cfg, launcher=dataclasses.replace(cfg.launcher, name=launcher))
    sub = submit_grid(cfg, cells, force=args.force)
    ids = sorted({str(j.job_id).split("_")[0] for _, j in sub.jobs})
    print(
        f"bench: submitted {len(sub.jobs)} cell(s) to {launcher} (job {', '.join(ids) or '-'}); "
        f"{len(sub.done)} done, {len(sub.active)} already queued or running",
        file=sys.stderr,
    )
    if not (args.wait or launcher == "debug"):
        print("bench: `bench status` shows progress; `bench run` again submits only what is missing", file=sys.stderr)
        return 0
    wait_for(sub, progress=not args.quiet)
    rows = grid_status(cfg, cells)
    _print_status(rows)
    return 0 if all(r.state in ("done", "unavailable") for r in rows) else 1


def _print_status(rows: list) -> None:
    from collections import Counter

    from tabulate import tabulate

    table = [(r.cell.model, r.cell.dataset, r.cell.method, r.cell.seed, r.state, r.job_id or "", r.detail)
             for r in rows]  # fmt: skip
    print(tabulate(table, headers=["model", "dataset", "method", "seed", "state", "job", "detail"]))
    counts = Counter(r.state for r in rows)
    print("bench: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())), file=sys.stderr)


def cmd_status(args: argparse.Namespace) -> int:
    """Show every cell of a grid: done, queued, running, failed (log and last error line), cancelled, missing."""
    from bench.launch import grid_status

    cfg = _load(args)
    rows = grid_status(cfg, _grid(args, cfg))
    _print_status(rows)
    return 0 if all(r.state in ("done", "unavailable") for r in rows) else 1


def cmd_table(args: argparse.Namespace) -> int:
    """Render every stored result as a Markdown, CSV or LaTeX table (and optionally a PNG plot)."""
    from bench.results import iter_records
    from bench.tables import plot_recall_at_k, render

    cfg = _load(args)
    results = Path(args.results_dir or cfg.paths.results_dir)
    records = list(iter_records(results))
    if not records:
        raise BenchError(f"{results}/runs: no results yet; run `bench run` first")
    text = render(records, args.format, standalone=args.standalone, baseline_method=args.baseline, dataset=args.dataset)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"bench: wrote {args.out}", file=sys.stderr)
    else:
        print(text)
    if args.plot:
        print(f"bench: wrote {plot_recall_at_k(records, Path(args.plot))}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``bench``."""
    from bench.score_cmd import add_score_parser

    parser = argparse.ArgumentParser(prog="bench", description="Image-text retrieval benchmark harness.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list adapters, models, datasets, methods")
    _common(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="run a grid of models × datasets × methods × seeds")
    _common(p)
    _grid_args(p)
    p.add_argument("--force", action="store_true", help="re-run cells that already have a result")
    p.add_argument("--no-table", action="store_true", help="do not print the table at the end")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--launcher", choices=["local", "debug", "slurm"], help="where cells run (default: [launcher] name)")
    p.add_argument("--wait", action="store_true", help="slurm: wait for the jobs, with a progress bar over cells")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="state of every cell of a grid (done, queued, running, failed, cancelled)")
    _common(p)
    _grid_args(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("table", help="render stored results as a table")
    _common(p)
    p.add_argument("--format", default="markdown", choices=["markdown", "csv", "latex"])
    p.add_argument("--out", help="write to this file instead of stdout")
    p.add_argument("--standalone", action="store_true", help="LaTeX: a complete document that compiles")
    p.add_argument("--baseline", default="contrastive", help="method the ΔRSUM column compares with")
    p.add_argument("--dataset", help="only this dataset")
    p.add_argument("--results-dir", help="results folder (default: paths.results_dir)")
    p.add_argument("--plot", help="also write a PNG of R@K against K to this path")
    p.set_defaults(func=cmd_table)

    add_score_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bench`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "huggingface_hub", "transformers", "timm", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
