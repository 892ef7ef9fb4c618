"""The results store: every record of a results folder and their per-query files as tidy tables (Parquet or CSV),
queried with SQL in place (DuckDB). ``bench results`` writes it, ``bench query`` reads it."""

from bench.store.files import TABLES, StoreSummary, build_store, read_table, store_files, store_is_stale
from bench.store.rows import STORE_VERSION, record_from_row

__all__ = [
    "STORE_VERSION",
    "TABLES",
    "StoreSummary",
    "build_store",
    "read_table",
    "record_from_row",
    "store_files",
    "store_is_stale",
]
