"""``bench results``: the results folder as a store of tidy tables; ``bench query "SELECT ..."``: SQL over it;
``bench export-results``: records as MTEB result files and model-card ``model-index`` blocks."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path
from typing import Any

from bench.cli.common import add_config_args, load_cfg

__all__ = ["add_store_parsers", "cmd_export_results", "cmd_query", "cmd_results"]

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


EXPORT_EXAMPLES = """examples:
  bench export-results --mteb exports/mteb                  # <org>__<model>-<method>/<config hash>/<Task>.json
  bench export-results --model-index exports/cards --models vse_infty --methods cusa"""


def add_store_parsers(sub: Any) -> None:
    """Add the ``results``, ``query`` and ``export-results`` subcommands."""
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

    p = sub.add_parser(
        "export-results",
        help="write records as MTEB result files or model-card model-index blocks",
        description="Write the stored records as MTEB TaskResult files (the MTEB results repository's layout; each "
        "file says where its protocol differs from MTEB's task of that name, and carries the config hash, "
        "fingerprints and versions) and/or one model-index YAML block per model × method for a Hugging Face model "
        "card (seeds averaged, intervals and provenance in each metric's args). Nothing needs network.",
        epilog=EXPORT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument("--mteb", type=Path, metavar="DIR", help="write MTEB TaskResult JSON files under DIR")
    p.add_argument("--model-index", type=Path, metavar="DIR", help="write <model>-<method>.yaml blocks to DIR")
    p.add_argument("--org", default="itr-bench", help="the organisation part of MTEB's model folders")
    p.add_argument("--models", help="comma-separated model ids (as stored)")
    p.add_argument("--methods", help="comma-separated methods")
    p.add_argument("--datasets", help="comma-separated dataset ids")
    p.add_argument("--results-dir", help="results folder (default: paths.results_dir)")
    p.set_defaults(func=cmd_export_results)


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


def cmd_export_results(args: argparse.Namespace) -> int:
    """Run ``bench export-results``."""
    from bench.atomic import atomic_write_bytes
    from bench.cli.common import csv_list
    from bench.errors import BenchError
    from bench.grid.records import iter_records
    from bench.store.model_index import model_index
    from bench.store.mteb import write_mteb_results

    if args.mteb is None and args.model_index is None:
        raise BenchError("bench export-results: say what to write: --mteb DIR and/or --model-index DIR")
    wanted = {key: set(csv_list(value)) for key, value in
              (("model", args.models), ("method", args.methods), ("dataset", args.datasets)) if value}  # fmt: skip
    records = [r for r in iter_records(_results_dir(args)) if all(r.get(k) in v for k, v in wanted.items())]
    if not any(r.get("status") == "ok" for r in records):
        raise BenchError("bench export-results: no ok record matches" + (f" {wanted}" if wanted else ""))
    if args.mteb is not None:
        written = write_mteb_results(records, args.mteb, org=args.org)
        print(f"{args.mteb}: {len(written)} MTEB result file(s)")
    if args.model_index is not None:
        import yaml

        entries = model_index(records)
        for entry in entries:
            path = args.model_index / f"{entry['name']}.yaml"
            text = yaml.safe_dump({"model-index": [entry]}, sort_keys=False, allow_unicode=True)
            try:
                args.model_index.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(path, text.encode())
            except OSError as e:
                raise BenchError(f"{path}: cannot write the model-index block ({e.strerror or e})") from None
        print(f"{args.model_index}: {len(entries)} model-index block(s), one per model × method")
    return 0
