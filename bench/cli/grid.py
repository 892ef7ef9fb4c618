"""``bench list``, ``bench run`` and ``bench status``: what a grid holds, running it, where each cell stands."""

from __future__ import annotations

import argparse
import sys

from bench.cli.common import baseline_for, grid_cells, load_cfg

__all__ = ["cmd_list", "cmd_run", "cmd_status", "print_status", "run_sharded_cells", "run_submitit"]


def cmd_list(args: argparse.Namespace) -> int:
    """Print adapter families, configured models and datasets, methods, dataset formats and task kinds."""
    from bench.adapters.registry import list_adapters
    from bench.data import list_formats
    from bench.methods import list_methods
    from bench.tasks import list_tasks

    cfg = load_cfg(args)
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
    print("task kinds: " + ", ".join(list_tasks()))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run a grid (in this process, or through submitit) and print its table."""
    from bench.grid.slurm import check_launcher
    from bench.tracking import check_trackers

    cfg = load_cfg(args)
    cells = grid_cells(args, cfg)
    launcher = check_launcher(cfg, args.launcher)
    check_trackers(cfg)
    print(f"bench: {len(cells)} cell(s); results in {cfg.paths.results_dir}/runs", file=sys.stderr)
    if args.shards:
        return run_sharded_cells(args, cfg, cells, launcher)
    if launcher != "local":
        return run_submitit(args, cfg, cells, launcher)
    from bench.grid.local import run_grid
    from bench.grid.records import read_record
    from bench.report.tables import render

    report = run_grid(cfg, cells, force=args.force, progress=not args.quiet)
    records = [{**read_record(p), "_path": str(p)} for p in report.paths if p.is_file()]  # _path: per-query files
    if records and not args.no_table:
        print(render(records, "markdown", baseline_method=baseline_for(records, None)))
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


def run_sharded_cells(args: argparse.Namespace, cfg, cells: list, launcher: str) -> int:
    """``bench run --shards N``: each cell's evaluation as N encode tasks, N score tasks and a merge."""
    import dataclasses

    from bench.grid.execute import record_path
    from bench.grid.records import read_record
    from bench.report.tables import render
    from bench.shard.launch import run_sharded

    cfg = dataclasses.replace(cfg, launcher=dataclasses.replace(cfg.launcher, name=launcher))
    run = run_sharded(cfg, cells, args.shards, force=args.force, wait=args.wait or launcher != "slurm")
    counts = ", ".join(f"{len(run.todo[p])} {p}" for p in run.todo)
    print(f"bench: sharded over {args.shards} task(s): {len(run.done)} cell(s) done before; tasks to run: {counts}",
          file=sys.stderr)  # fmt: skip
    for cell, job in run.active:
        print(f"bench: {cell.label}: still queued or running (merge job {job}); not submitted again", file=sys.stderr)
    if launcher == "slurm" and not args.wait:
        ids = {p: str(jobs[0][2].job_id).split("_")[0] for p, jobs in run.jobs.items() if jobs}
        print("bench: submitted " + (", ".join(f"{p} job {i}" for p, i in ids.items()) or "nothing")
              + "; `bench run --shards` again resumes what is missing", file=sys.stderr)  # fmt: skip
        return 0
    for task, reason in run.failed:
        print(f"bench: FAILED: {task}: {reason}", file=sys.stderr)
    paths = [record_path(cfg, c) for c in cells]
    records = [{**read_record(p), "_path": str(p)} for p in paths if p.is_file()]
    records = [r for r in records if r.get("status") == "ok"]
    if records and not args.no_table:
        print(render(records, "markdown", baseline_method=baseline_for(records, None)))
    return 1 if run.failed else 0


def run_submitit(args: argparse.Namespace, cfg, cells: list, launcher: str) -> int:
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
    print_status(rows)
    return 0 if all(r.state in ("done", "unavailable") for r in rows) else 1


def print_status(rows: list) -> None:
    from collections import Counter

    from tabulate import tabulate

    table = [(r.cell.model, r.cell.dataset, r.cell.method_id, r.cell.seed, r.state, r.job_id or "", r.detail)
             for r in rows]  # fmt: skip
    print(tabulate(table, headers=["model", "dataset", "method", "seed", "state", "job", "detail"]))
    if any(r.cell.variant for r in rows):  # a sweep: where each variant stands, over its seeds and datasets
        by: dict[tuple[str, str], Counter] = {}
        for r in rows:
            by.setdefault((r.cell.model, r.cell.method_id), Counter())[r.state] += 1
        summary = [(m, v, sum(c.values()), ", ".join(f"{n} {s}" for s, n in sorted(c.items())))
                   for (m, v), c in by.items()]  # fmt: skip
        print()
        print(tabulate(summary, headers=["model", "variant", "cells", "states"]))
    counts = Counter(r.state for r in rows)
    print("bench: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())), file=sys.stderr)


def cmd_status(args: argparse.Namespace) -> int:
    """Show every cell of a grid: done, queued, running, failed (log and last error line), cancelled, missing."""
    from bench.grid.slurm import grid_status

    cfg = load_cfg(args)
    rows = grid_status(cfg, grid_cells(args, cfg))
    print_status(rows)
    return 0 if all(r.state in ("done", "unavailable") for r in rows) else 1
