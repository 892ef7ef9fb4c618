"""The results store on disk: ``records``, ``metrics`` and ``queries`` (:mod:`bench.store.rows`) as Parquet files
(or CSV) in one folder, written from a results folder and read back.

Writing streams: each record's per-query rows go to the ``queries`` file as they are read, so memory holds one
record's rows at a time. Files are written beside their target and renamed, so a reader never sees half a store.
A per-query file whose digest is not the one its record states is left out of ``queries`` (with a warning naming
it), never tabulated as the record's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.errors import BenchError
from bench.store.rows import STORE_VERSION, metric_rows, query_columns, record_row

__all__ = ["TABLES", "StoreSummary", "build_store", "read_table", "store_files", "store_is_stale"]

log = logging.getLogger(__name__)

TABLES = ("records", "metrics", "queries")
StoreFormat = Literal["parquet", "csv"]


@dataclass
class StoreSummary:
    """What :func:`build_store` wrote: the files and their row counts, and the per-query files left out."""

    files: dict[str, Path] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def store_files(folder: Path, fmt: StoreFormat = "parquet") -> dict[str, Path]:
    """The path of each table in a store folder."""
    return {t: Path(folder) / f"{t}.{fmt}" for t in TABLES}


def _schemas() -> dict[str, Any]:
    import pyarrow as pa

    keys = [("store_version", pa.int32()), ("schema", pa.int32()), ("model", pa.string()), ("dataset", pa.string()),
            ("split", pa.string()), ("language", pa.string()), ("method", pa.string()), ("seed", pa.int64()),
            ("config_hash", pa.string())]  # fmt: skip
    text = ["task", "status", "reason", "adapter", "created", "itr_bench", "git_sha", "tie_rule", "fingerprints",
            "versions", "config", "precision", "bootstrap", "per_query", "method_settings", "path",
            "record"]  # fmt: skip
    return {
        "records": pa.schema(keys + [(name, pa.string()) for name in text]),
        "metrics": pa.schema(keys + [("block", pa.string()), ("direction", pa.string()), ("metric", pa.string()),
                                     ("value", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
                                     ("ci_level", pa.float64())]),  # fmt: skip
        "queries": pa.schema(keys + [("direction", pa.string()), ("query", pa.int64()), ("image", pa.int64()),
                                     ("rank", pa.int64()), ("rerank", pa.float64()),
                                     ("top1", pa.int64())]),  # fmt: skip
    }


class _Writer:
    """One table's file, written in row groups of about :attr:`GROUP_ROWS` rows to a temporary beside it and renamed
    when complete."""

    GROUP_ROWS = 1 << 20

    def __init__(self, path: Path, schema: Any, fmt: StoreFormat) -> None:
        self.path, self.schema, self.fmt, self.rows = path, schema, fmt, 0
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._pending: list[Any] = []
        self._pending_rows = 0
        if fmt == "parquet":
            import pyarrow.parquet as pq

            meta = {b"itr_bench_store_version": str(STORE_VERSION).encode()}
            self._w: Any = pq.ParquetWriter(self.tmp, schema.with_metadata(meta), compression="zstd")
        else:
            import pyarrow.csv as pcsv

            self._w = pcsv.CSVWriter(self.tmp, schema)

    def write(self, columns: Mapping[str, Any]) -> None:
        """Add rows: each column a sequence, or one value for every row (a chunk's cell keys)."""
        import pyarrow as pa

        n = max((len(v) for v in columns.values() if hasattr(v, "__len__") and not isinstance(v, str)), default=0)
        arrays = []
        for name in self.schema.names:
            kind, value = self.schema.field(name).type, columns[name]
            if isinstance(value, str) or not hasattr(value, "__len__"):
                arrays.append(pa.nulls(n, kind) if value is None else pa.repeat(pa.scalar(value, kind), n))
            else:
                arrays.append(pa.array(value, type=kind, from_pandas=True))
        if n:
            self._pending.append(pa.Table.from_arrays(arrays, schema=self.schema))
            self._pending_rows += n
            if self._pending_rows >= self.GROUP_ROWS:
                self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._pending:
            table = pa.concat_tables(self._pending).combine_chunks()
            self._w.write_table(table)
            self.rows += table.num_rows
            self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        self._flush()
        self._w.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._pending = []
        self._w.close()
        self.tmp.unlink(missing_ok=True)


def _columns(rows: list[dict[str, Any]], names: Sequence[str]) -> dict[str, list[Any]]:
    return {name: [r.get(name) for r in rows] for name in names}


def _with_per_query(records: Iterator[Any], wanted: bool) -> Iterator[tuple[Any, Any]]:
    """Each record with its per-query results: None where it has none, where they are not wanted, or where its file
    holds items rather than queries (a choice set's per-item file, ``per_query.unit = "item"``: its accuracies and
    intervals are in the metrics table); the :class:`BenchError` where they cannot be used (missing, or not the
    file the record states)."""
    from bench.report.uncertainty import per_query_file, read_per_query

    for rec in records:
        items = isinstance(rec.get("per_query"), dict) and rec["per_query"].get("unit") == "item"
        if not wanted or rec.get("status") != "ok" or per_query_file(rec) is None or items:
            yield rec, None
            continue
        try:
            yield rec, read_per_query(rec)
        except BenchError as e:
            yield rec, e


def build_store(results_dir: Path, out: Path, fmt: StoreFormat = "parquet", *, queries: bool = True) -> StoreSummary:
    """Write the store of every record under ``results_dir/runs`` (and, with ``queries``, their per-query files) to
    the folder ``out``.

    Raises:
        BenchError: the folder cannot be written (one line naming it), or the results folder has no records.
    """
    from bench.grid.records import iter_records

    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise BenchError('bench results needs pyarrow: pip install "itr-bench[store]"') from None
    results_dir, out = Path(results_dir), Path(out)
    if not (results_dir / "runs").is_dir():
        raise BenchError(f"{results_dir}: no runs/ folder: no stored results")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BenchError(f"{out}: cannot write the store here ({e.strerror or e})") from None
    schemas = _schemas()
    paths = store_files(out, fmt)
    summary = StoreSummary(files=paths)
    writers: dict[str, _Writer] = {}
    try:
        for table in TABLES if queries else TABLES[:2]:
            writers[table] = _Writer(paths[table], schemas[table], fmt)
        for rec, pq in _with_per_query(iter_records(results_dir), queries):
            path = os.path.relpath(str(rec["_path"]), results_dir)
            writers["records"].write(_columns([record_row(rec, path)], schemas["records"].names))
            writers["metrics"].write(_columns(metric_rows(rec), schemas["metrics"].names))
            if isinstance(pq, BenchError):
                log.warning("left out of the queries table: %s", pq)
                summary.skipped.append(str(pq))
            elif pq is not None:
                for chunk in query_columns(rec, pq):
                    writers["queries"].write(chunk)
        for name, w in writers.items():
            w.close()
            summary.rows[name] = w.rows
    except OSError as e:
        for w in writers.values():
            w.abort()
        raise BenchError(f"{out}: cannot write the store ({e.strerror or e})") from None
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    if not queries:
        paths.pop("queries")
    return summary


def read_table(folder: Path, table: str) -> Any:
    """One table of a Parquet store, as a ``pyarrow.Table``.

    Raises:
        BenchError: the file is missing, unreadable, or written by a newer store version.
    """
    import pyarrow.parquet as pq

    path = store_files(folder)[table]
    try:
        data = pq.read_table(path)
    except FileNotFoundError:
        raise BenchError(f"{path}: no such store table; `bench results` writes it") from None
    except (OSError, ValueError) as e:
        raise BenchError(f"{path}: not a readable store table ({e})") from None
    version = int((data.schema.metadata or {}).get(b"itr_bench_store_version", b"0"))
    if version > STORE_VERSION:
        raise BenchError(f"{path}: store version {version}; this itr-bench reads up to {STORE_VERSION}")
    return data


def store_is_stale(results_dir: Path, folder: Path) -> bool:
    """Whether a record or per-query file under ``results_dir/runs`` is newer than the store in ``folder`` (or the
    store is missing)."""
    files = list(store_files(folder).values())
    if not all(p.is_file() for p in files):
        return True
    built = min(p.stat().st_mtime_ns for p in files)
    runs = Path(results_dir) / "runs"
    # files and folders alike: a folder's mtime moves when a record in it is removed
    if not runs.is_dir():
        return True  # rebuilding says, in one line, that there are no stored results
    newest = max((p.stat().st_mtime_ns for p in [runs, *runs.rglob("*")]), default=0)
    return newest > built
