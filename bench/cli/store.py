"""``bench results``: the results folder as a store of tidy tables; ``bench query "SELECT ..."``: SQL over it."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path
from typing import Any

from bench.cli.common import add_config_args, load_cfg

__all__ = ["add_store_parsers", "cmd_query", "cmd_results"]

log = logging.getLogger(__name__)

RESULTS_EXAMPLES = """examples:
  bench results                                   # results/store/{records,metrics,queries}.parquet
  bench results --format csv --out exports/store
  python -c "import pandas as pd; print(pd.read_parquet('results/store/metrics.parquet'))\""""

QUERY_EXAMPLES = """examples:
  bench query "SELECT model, method, avg(value) AS rsum FROM metrics WHERE metric = 'rsum' AND block = 'metrics'
               GROUP BY ALL ORDER BY rsum DESC"
  bench query "SELECT direction, avg(rank = 0) * 100 AS r1 FROM queries WHERE model = 'vse_infty' GROUP BY ALL"
  bench query "SELECT model, method, seed, reason FROM records WHERE status <> 'ok'" --format csv"""


def add_store_parsers(sub: Any) -> None:
    """Add the ``results`` and ``query`` subcommands."""
    p = sub.add_parser(
        "results",
        help="write every stored record and per-query file as tidy tables",
        description="Write the results folder as three tables: records (one row per record, with its provenance "
        "and the whole record as JSON), metrics (one row per number: block, direction, metric, value and its "
        "bootstrap interval) and queries (one row per query of each per-query file: its rank, two-stage rank and "
        "top-1), keyed alike by model, dataset, split, language, method, seed and config hash.",
        epilog=RESULTS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument("--out", type=Path, help="folder to write the tables to (default: <results_dir>/store)")
    p.add_argument("--format", default="parquet", choices=["parquet", "csv"])
    p.add_argument("--no-queries", action="store_true", help="records and metrics only")
    p.add_argument("--results-dir", help="results folder (default: paths.results_dir)")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser(
        "query",
        help="SQL over the results store (DuckDB)",
        description="Run one SQL statement over the results store with DuckDB (the store extra), reading the "
        "Parquet files in place as the tables records, metrics and queries. The store is (re)written first when a "
        "record is newer than it.",
        epilog=QUERY_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument("sql", help="one SQL statement")
    p.add_argument("--store", type=Path, help="store folder (default: <results_dir>/store)")
    p.add_argument("--format", default="table", choices=["table", "csv", "json"])
    p.add_argument("--results-dir", help="results folder (default: paths.results_dir)")
    p.set_defaults(func=cmd_query)


def _results_dir(args: argparse.Namespace) -> Path:
    if args.results_dir:
        return Path(args.results_dir)
    return Path(load_cfg(args).paths.results_dir)


def cmd_results(args: argparse.Namespace) -> int:
    """Run ``bench results``."""
    from bench.store import build_store

    results = _results_dir(args)
    out = args.out or results / "store"
    summary = build_store(results, out, args.format, queries=not args.no_queries)
    for table, path in summary.files.items():
        print(f"{path}: {summary.rows.get(table, 0)} rows")
    if summary.skipped:
        print(f"{len(summary.skipped)} per-query file(s) left out of the queries table (see the warnings)")
    return 0


def _show(columns: list[str], rows: list[tuple[Any, ...]], fmt: str) -> str:
    if fmt == "json":
        return "".join(json.dumps(dict(zip(columns, r, strict=True)), default=str) + "\n" for r in rows)
    if fmt == "csv":
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        w.writerows(rows)
        return buf.getvalue()

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e-3 or abs(v) >= 1e6 else f"{v:.3f}".rstrip("0").rstrip(".")
        return "" if v is None else str(v)

    body = [[cell(v) for v in r] for r in rows]
    widths = [max([len(c), *(len(r[i]) for r in body)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]  # fmt: skip
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in body]
    return "\n".join(lines) + f"\n({len(rows)} row{'s' if len(rows) != 1 else ''})\n"


def cmd_query(args: argparse.Namespace) -> int:
    """Run ``bench query``."""
    from bench.store import build_store, store_is_stale
    from bench.store.sql import run_query

    results = _results_dir(args)
    folder = args.store or results / "store"
    if args.store is None and store_is_stale(results, folder):
        log.info("writing the store %s (a record is newer than it)", folder)
        build_store(results, folder)
    columns, rows = run_query(folder, args.sql)
    sys.stdout.write(_show(columns, rows, args.format))
    return 0
