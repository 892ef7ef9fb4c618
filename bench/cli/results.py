"""``bench table`` and ``bench rm``: the stored records of a grid, as tables, or removed."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from bench.atomic import atomic_write_bytes
from bench.cli.common import baseline_for, csv_list, grid_cells, load_cfg
from bench.errors import BenchError

__all__ = ["cmd_report", "cmd_rm", "cmd_table", "grid_records"]


def grid_records(args: argparse.Namespace, cfg: Any, results: Path) -> list[dict[str, Any]]:
    """The stored records to tabulate or remove: those of the configured grid (with the command's filters), in grid
    order (models as configured, methods in ablation order, seeds ascending); ``--all`` keeps every record."""
    from bench.grid.records import iter_records
    from bench.grid.sweep import base_method, variant_sort_key
    from bench.methods import method_order

    records = list(iter_records(results))
    models = csv_list(args.models) if args.models else None
    methods = csv_list(args.methods) if args.methods else None
    datasets = csv_list(args.datasets) if getattr(args, "datasets", None) else None
    if datasets is not None:
        from bench.config import dataset_members

        datasets = [*datasets, *(m for d in datasets for m in dataset_members(cfg, d))]
    if getattr(args, "all", False):
        keep = [
            r
            for r in records
            if (models is None or r.get("model") in models)
            and (methods is None or r.get("method") in methods or base_method(str(r.get("method"))) in methods)
            and (datasets is None or r.get("dataset") in datasets)
        ]
        model_order = list(
            dict.fromkeys([*(models or cfg.grid.models), *cfg.models, *sorted({str(r.get("model")) for r in keep})])
        )
        dataset_order = list(dict.fromkeys([*(datasets or cfg.grid.datasets), *cfg.datasets]))
    else:
        cells = grid_cells(args, cfg)
        # A grid's method stands for its sweep variants too, those of this sweep and of any other.
        wanted = {(c.model, c.dataset, c.split, c.method, c.seed) for c in cells}
        keep = [
            r
            for r in records
            if (r.get("model"), r.get("dataset"), r.get("split"), base_method(str(r.get("method"))), r.get("seed"))
            in wanted
        ]
        model_order = list(dict.fromkeys(c.model for c in cells))
        dataset_order = list(dict.fromkeys(c.dataset for c in cells))
    ids = {str(r.get("method")): r.get("variant") for r in keep}
    bases = method_order(sorted({base_method(m) for m in ids}))
    ordered = sorted(ids, key=lambda m: (bases.index(base_method(m)), variant_sort_key(ids[m]), m))
    method_rank = {m: i for i, m in enumerate(ordered)}  # variants of a method by their values

    def rank(r: dict[str, Any]) -> tuple[int, int, int, int]:
        model, dataset = str(r.get("model")), str(r.get("dataset"))
        d = dataset_order.index(dataset) if dataset in dataset_order else len(dataset_order)
        m = model_order.index(model) if model in model_order else len(model_order)
        seed = r.get("seed")
        return d, m, method_rank[str(r.get("method"))], seed if isinstance(seed, int) else 0

    return sorted(keep, key=rank)


def _check_target(path: Path, flag: str, *, folder: bool) -> None:
    """An output path that cannot be a file (or a folder, with ``folder``) of ours: one line, before any work."""
    if path.exists() and path.is_dir() != folder:
        want, got = ("folder", "file") if folder else ("file", "folder")
        raise BenchError(f"{flag} {path}: is a {got}; name a {want}")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise BenchError(f"{flag} {path}: {parent} is a file, not a folder")


def _why(e: OSError) -> str:
    """An OS error as one phrase: what failed, on which file."""
    where = f": {e.filename}" if e.filename else ""
    return f"{e.strerror or e}{where}"


def cmd_table(args: argparse.Namespace) -> int:
    """Render the stored results of the configured grid as a Markdown, CSV or LaTeX table (and a PNG plot)."""
    from bench.report.tables import plot_recall_at_k, render
    from bench.stats.bootstrap import BootstrapConfig

    cfg = load_cfg(args)
    results = Path(args.results_dir or cfg.paths.results_dir)
    records = grid_records(args, cfg, results)
    if not records:
        hint = "" if args.all else " of the configured grid (--all shows every stored record)"
        raise BenchError(f"{results}/runs: no results{hint}; run `bench run` first")
    if not 0 < args.alpha < 1:
        raise BenchError(f"--alpha must be in (0, 1), got {args.alpha}")
    notes: list[str] = []
    if args.select:
        from bench.report.sweeps import select_variants

        records, choices = select_variants(records)
        notes = [c.note for c in choices] or ["--select val: no sweep variants to choose between"]
    if args.all_variants:
        from bench.report.sweeps import render_variants

        text = render_variants(records, args.format)
    elif args.languages:
        from bench.report.languages import render_languages

        text = render_languages(records, args.format, metric=args.languages)
        if not text:
            raise BenchError("no multilingual results: no set has records in two or more languages")
    else:
        text = render(
            records,
            args.format,
            standalone=args.standalone,
            baseline_method=baseline_for(records, args.baseline),
            dataset=args.dataset,
            significance=None if args.largest else args.alpha,
            intervals=args.ci,
            bootstrap=BootstrapConfig.of(cfg.eval),
        )
    if notes and args.format == "markdown":
        text = text.rstrip("\n") + "\n\nSelected on validation:\n\n" + "".join(f"- {n}\n" for n in notes)
    elif notes and args.format == "latex":
        text = text.rstrip("\n") + "\n" + "".join(f"% selected on validation: {n}\n" for n in notes)
    else:
        for n in notes:
            print(f"bench: selected on validation: {n}", file=sys.stderr)
    if args.out:
        _check_target(Path(args.out), "--out", folder=False)
        try:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(Path(args.out), text.encode())
        except OSError as e:
            raise BenchError(f"--out {args.out}: cannot write the table ({_why(e)})") from None
        print(f"bench: wrote {args.out}", file=sys.stderr)
    else:
        print(text)
    if args.plot:
        print(f"bench: wrote {plot_recall_at_k(records, Path(args.plot))}", file=sys.stderr)
        from bench.report.sweeps import plot_sweep, swept_records

        if swept_records(records):  # and the sweep's metrics against each swept value, beside it
            plot = Path(args.plot)
            print(f"bench: wrote {plot_sweep(records, plot.with_name(f'{plot.stem}-sweep.png'))}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write the static HTML error-analysis pages of the stored results."""
    from bench.report.html import write_report
    from bench.stats.bootstrap import BootstrapConfig

    cfg = load_cfg(args)
    results = Path(args.results_dir or cfg.paths.results_dir)
    records = grid_records(args, cfg, results)
    if not records:
        raise BenchError(f"{results}/runs: no results to report; run `bench run` first")
    model = method = None
    if args.focus:
        model, sep, method = args.focus.partition(":")
        if not sep or not method:
            raise BenchError(f"--focus: expected MODEL:METHOD, got {args.focus!r}")
    if args.examples < 1:
        raise BenchError(f"--examples must be >= 1, got {args.examples}")
    shown = sorted({(str(r.get("model")), str(r.get("method"))) for r in records
                    if r.get("status") == "ok" and isinstance(r.get("per_query"), dict)})  # fmt: skip
    names = ", ".join(f"{m}:{meth}" for m, meth in shown) or "(none)"
    if model is not None and (model, method) not in shown:
        raise BenchError(f"--focus {args.focus}: no stored row with per-query results; rows: {names}")
    if args.against is not None and args.against not in {meth for m, meth in shown if model in (None, m)}:
        raise BenchError(f"--against {args.against}: no stored row of that method to compare with; rows: {names}")
    _check_target(Path(args.html), "--html", folder=True)
    try:
        pages = write_report(records, Path(args.html), model=model, method=method, against=args.against,
                             examples=args.examples, bootstrap=BootstrapConfig.of(cfg.eval))  # fmt: skip
    except OSError as e:
        raise BenchError(f"--html {args.html}: cannot write the report ({_why(e)})") from None
    for page in pages:
        print(f"bench: wrote {page}", file=sys.stderr)
    print(f"bench: open {Path(args.html) / 'index.html'}", file=sys.stderr)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    """Remove stored records (by default only those whose status is ``--status``), so tables stop showing them."""
    from bench.grid.records import cell_path, per_query_path

    cfg = load_cfg(args)
    results = Path(args.results_dir or cfg.paths.results_dir)
    args.all = True  # a record to remove may be from an ad-hoc run outside the configured grid
    statuses = set(csv_list(args.status)) if args.status != "any" else None
    unknown = sorted((statuses or set()) - {"ok", "failed", "unavailable"})
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise BenchError(f"--status: unknown status {names}; valid: ok, failed, unavailable, any")
    if not (args.models or args.methods or args.datasets or statuses or args.dry_run):
        raise BenchError("bench rm: name what to remove (--models, --methods, --datasets or --status)")
    chosen = [r for r in grid_records(args, cfg, results) if statuses is None or r.get("status") in statuses]
    for r in chosen:
        path = cell_path(results, r["model"], r["dataset"], r["split"], r["method"], r["seed"])
        store = r.get("trained_store")  # its training (weights), unless a cell that reused it named it
        store = Path(store) if isinstance(store, str) and "reused_training" not in r else None
        also = f" and its training {store}" if store is not None and store.is_dir() else ""
        print(f"{'would remove' if args.dry_run else 'removed'} {path} ({r.get('status')}){also}")
        if not args.dry_run:
            path.unlink(missing_ok=True)
            per_query_path(path).unlink(missing_ok=True)  # its per-query file, if any
            if also:
                shutil.rmtree(store, ignore_errors=True)
    print(f"bench: {len(chosen)} record(s) {'would be ' if args.dry_run else ''}removed", file=sys.stderr)
    return 0
