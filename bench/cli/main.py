"""The ``bench`` command: ``list``, ``run``, ``status``, ``table``, ``rm`` and ``score``.

``main(argv)`` is a plain function, so tests call it as ``main(["run", ...])``. Errors from user input print one line
(``bench: error: ...``) and exit 2; a grid with failed cells exits 1 after writing every cell that finished; Ctrl-C
exits 130 and SIGTERM 143, each with one line. Nothing heavy (torch, numpy) is imported before a command needs it,
so ``bench --help`` and ``bench list`` start fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from bench.errors import BenchError

__all__ = ["build_parser", "main"]


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that ``finally`` blocks and atomic writes unwind as for Ctrl-C."""


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


def _load(args: argparse.Namespace) -> Any:  # -> BenchConfig
    from bench.config import PACKAGED_CONFIG, apply_overrides, default_config_path, load_config

    if args.config is None and default_config_path() == PACKAGED_CONFIG:
        print(f"bench: no bench.toml in {Path.cwd()}; using the packaged default ({PACKAGED_CONFIG})", file=sys.stderr)
    cfg = load_config(args.config)
    return apply_overrides(cfg, args.overrides) if args.overrides else cfg


def cmd_list(args: argparse.Namespace) -> int:
    """Print adapter families, configured models and datasets, methods and dataset formats."""
    from bench.adapters.registry import list_adapters
    from bench.data import list_formats
    from bench.methods import list_methods

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


def _baseline(records: list[dict[str, Any]], asked: str | None) -> str | None:
    # The ΔRSUM column compares with `contrastive` when the records hold it; a zero-shot-only table has none.
    if asked is not None:
        return asked
    return "contrastive" if any(r.get("method") == "contrastive" for r in records) else None


def _grid(args: argparse.Namespace, cfg: Any) -> list[Any]:
    from bench.grid.local import expand_grid

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
    from bench.grid.slurm import check_launcher

    cfg = _load(args)
    cells = _grid(args, cfg)
    launcher = check_launcher(cfg, args.launcher)
    print(f"bench: {len(cells)} cell(s); results in {cfg.paths.results_dir}/runs", file=sys.stderr)
    if launcher != "local":
        return _run_submitit(args, cfg, cells, launcher)
    from bench.grid.local import run_grid
    from bench.grid.records import read_record
    from bench.report.tables import render

    report = run_grid(cfg, cells, force=args.force, progress=not args.quiet)
    records = [read_record(p) for p in report.paths if p.is_file()]
    if records and not args.no_table:
        print(render(records, "markdown", baseline_method=_baseline(records, None)))
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

    from bench.grid.slurm import grid_status, submit_grid, wait_for

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
    from bench.grid.slurm import grid_status

    cfg = _load(args)
    rows = grid_status(cfg, _grid(args, cfg))
    _print_status(rows)
    return 0 if all(r.state in ("done", "unavailable") for r in rows) else 1


def _grid_records(args: argparse.Namespace, cfg: Any, results: Path) -> list[dict[str, Any]]:
    """The stored records to tabulate or remove: those of the configured grid (with the command's filters), in grid
    order (models as configured, methods in ablation order, seeds ascending); ``--all`` keeps every record."""
    from bench.grid.records import iter_records
    from bench.methods import method_order

    records = list(iter_records(results))
    models = _csv(args.models) if args.models else None
    methods = _csv(args.methods) if args.methods else None
    datasets = _csv(args.datasets) if getattr(args, "datasets", None) else None
    if getattr(args, "all", False):
        keep = [
            r
            for r in records
            if (models is None or r.get("model") in models)
            and (methods is None or r.get("method") in methods)
            and (datasets is None or r.get("dataset") in datasets)
        ]
        model_order = list(
            dict.fromkeys([*(models or cfg.grid.models), *cfg.models, *sorted({str(r.get("model")) for r in keep})])
        )
        dataset_order = list(dict.fromkeys([*(datasets or cfg.grid.datasets), *cfg.datasets]))
    else:
        cells = _grid(args, cfg)
        wanted = {(c.model, c.dataset, c.split, c.method, c.seed) for c in cells}
        keep = [
            r
            for r in records
            if (r.get("model"), r.get("dataset"), r.get("split"), r.get("method"), r.get("seed")) in wanted
        ]
        model_order = list(dict.fromkeys(c.model for c in cells))
        dataset_order = list(dict.fromkeys(c.dataset for c in cells))
    method_rank = {m: i for i, m in enumerate(method_order(sorted({str(r.get("method")) for r in keep})))}

    def rank(r: dict[str, Any]) -> tuple[int, int, int, int]:
        model, dataset = str(r.get("model")), str(r.get("dataset"))
        d = dataset_order.index(dataset) if dataset in dataset_order else len(dataset_order)
        m = model_order.index(model) if model in model_order else len(model_order)
        seed = r.get("seed")
        return d, m, method_rank[str(r.get("method"))], seed if isinstance(seed, int) else 0

    return sorted(keep, key=rank)


def cmd_table(args: argparse.Namespace) -> int:
    """Render the stored results of the configured grid as a Markdown, CSV or LaTeX table (and a PNG plot)."""
    from bench.report.tables import plot_recall_at_k, render

    cfg = _load(args)
    results = Path(args.results_dir or cfg.paths.results_dir)
    records = _grid_records(args, cfg, results)
    if not records:
        hint = "" if args.all else " of the configured grid (--all shows every stored record)"
        raise BenchError(f"{results}/runs: no results{hint}; run `bench run` first")
    text = render(
        records,
        args.format,
        standalone=args.standalone,
        baseline_method=_baseline(records, args.baseline),
        dataset=args.dataset,
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"bench: wrote {args.out}", file=sys.stderr)
    else:
        print(text)
    if args.plot:
        print(f"bench: wrote {plot_recall_at_k(records, Path(args.plot))}", file=sys.stderr)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    """Remove stored records (by default only those whose status is ``--status``), so tables stop showing them."""
    from bench.grid.records import cell_path

    cfg = _load(args)
    results = Path(args.results_dir or cfg.paths.results_dir)
    args.all = True  # a record to remove may be from an ad-hoc run outside the configured grid
    statuses = set(_csv(args.status)) if args.status != "any" else None
    chosen = [r for r in _grid_records(args, cfg, results) if statuses is None or r.get("status") in statuses]
    if not (args.models or args.methods or args.datasets or statuses):
        raise BenchError("bench rm: name what to remove (--models, --methods, --datasets or --status)")
    for r in chosen:
        path = cell_path(results, r["model"], r["dataset"], r["split"], r["method"], r["seed"])
        print(f"{'would remove' if args.dry_run else 'removed'} {path} ({r.get('status')})")
        if not args.dry_run:
            path.unlink(missing_ok=True)
    print(f"bench: {len(chosen)} record(s) {'would be ' if args.dry_run else ''}removed", file=sys.stderr)
    return 0


_EXAMPLES = {
    "list": """examples:
  bench list
  bench list --config configs/coco-sample.toml""",
    "run": """examples:
  bench run                                            # the default grid of bench.toml
  bench run --models all --methods zeroshot
  bench run --models vse_infty --methods contrastive,cusa --seeds 0,1,2
  bench run --models clip:ViT-B-32/laion2b_s34b_b79k --datasets coco --methods zeroshot
  bench run --set train.epochs=20 --set train.lr=1e-4
  bench run --launcher slurm --wait""",
    "status": """examples:
  bench status
  bench status --models vse_infty --methods cusa""",
    "table": """examples:
  bench table
  bench table --format latex --standalone --out results/table.tex --plot results/recall.png
  bench table --models vse_infty --methods contrastive,cusa --format csv
  bench table --all                                    # every stored record, not only the configured grid""",
    "rm": """examples:
  bench rm --status unavailable                        # forget every 'weights unavailable' row
  bench rm --models clip:ViT-B-32/openai --status any --dry-run""",
}


def _sub(sub: Any, name: str, help: str, description: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=_EXAMPLES.get(name),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _version() -> str:
    from bench import __version__

    return f"itr-bench {__version__}"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``bench`` (builds without importing torch or numpy)."""
    from bench.cli.score import add_score_parser

    parser = argparse.ArgumentParser(
        prog="bench",
        description="itr-bench: image-text retrieval benchmarks (models x datasets x methods x seeds).",
        epilog="`bench <command> --help` describes each command, with examples.",
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (also third-party messages)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = _sub(sub, "list", "list adapters, models, datasets, methods", "Print the adapter families, the models and "
             "datasets of the config, the methods and the dataset formats (plug-ins included).")  # fmt: skip
    _common(p)
    p.set_defaults(func=cmd_list)

    p = _sub(sub, "run", "run a grid of models × datasets × methods × seeds", "Run every cell of the grid that has "
             "no valid result yet (one JSON record per cell under results/runs) and print its table. A cell whose "
             "stored record has the same config hash is skipped; --force re-runs it.")  # fmt: skip
    _common(p)
    _grid_args(p)
    p.add_argument("--force", action="store_true", help="re-run cells that already have a result")
    p.add_argument("--no-table", action="store_true", help="do not print the table at the end")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars (ours or the libraries')")
    p.add_argument("--launcher", choices=["local", "debug", "slurm"], help="where cells run (default: [launcher] name)")
    p.add_argument("--wait", action="store_true", help="slurm: wait for the jobs, with a progress bar over cells")
    p.set_defaults(func=cmd_run)

    p = _sub(sub, "status", "state of every cell of a grid", "Show every cell of the grid: done, queued, "
             "running, resumable (a training checkpoint exists), failed (log, last error), cancelled, "
             "missing.")  # fmt: skip
    _common(p)
    _grid_args(p)
    p.set_defaults(func=cmd_status)

    p = _sub(sub, "table", "render stored results as a table", "Render the stored results of the configured grid "
             "(filtered by --models/--methods/--datasets) in grid order: one Markdown, CSV or LaTeX (booktabs) table "
             "per dataset and split, seeds aggregated as mean ± std.")  # fmt: skip
    _common(p)
    _grid_args(p)
    p.add_argument("--all", action="store_true", help="every stored record, not only the configured grid's cells")
    p.add_argument("--format", default="markdown", choices=["markdown", "csv", "latex"])
    p.add_argument("--out", help="write to this file instead of stdout")
    p.add_argument("--standalone", action="store_true", help="LaTeX: a complete document that compiles")
    p.add_argument("--baseline", default=None, help="method the ΔRSUM column compares with (default: contrastive)")
    p.add_argument("--dataset", help="only this dataset")
    p.add_argument("--results-dir", help="results folder (default: paths.results_dir)")
    p.add_argument("--plot", help="also write a PNG of R@K against K to this path")
    p.set_defaults(func=cmd_table)

    p = _sub(sub, "rm", "remove stored records", "Remove stored result records, chosen by --models, --methods, "
             "--datasets and --status (default: unavailable and failed), from the configured grid or not.")  # fmt: skip
    _common(p)
    p.add_argument("--models", help="comma-separated model ids (as stored)")
    p.add_argument("--datasets", help="comma-separated dataset ids")
    p.add_argument("--methods", help="comma-separated methods")
    p.add_argument("--status", default="unavailable,failed", help="statuses to remove, or 'any'")
    p.add_argument("--results-dir", help="results folder (default: paths.results_dir)")
    p.add_argument("--dry-run", action="store_true", help="print what would be removed, remove nothing")
    p.set_defaults(func=cmd_rm)

    add_score_parser(sub)
    return parser


class _QuietThirdParty(logging.Filter):
    """Drops what libraries log on the root logger (open_clip's "Failed to download weights", said before our own
    one-line error) and their INFO chatter; ``-v`` lets everything through."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("bench"):
            return True
        return record.name != "root" and record.levelno >= logging.WARNING


def _setup_logging(verbose: bool, quiet: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_QuietThirdParty())
    if quiet:  # the libraries' own progress bars (tqdm >= 4.66 and huggingface_hub read these)
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bench`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, getattr(args, "quiet", False))
    previous = signal.getsignal(signal.SIGTERM)
    in_main_thread = _is_main_thread()  # signal handlers can only be set there (a notebook thread cannot)
    if in_main_thread:
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args.func(args) or 0)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted (Ctrl-C); every finished result is kept, `bench run` resumes", file=sys.stderr)
        return 130
    except Terminated:
        print("bench: terminated (SIGTERM); every finished result is kept, `bench run` resumes", file=sys.stderr)
        return 143
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
