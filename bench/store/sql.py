"""SQL over a results store, in place: DuckDB reads the store's Parquet files as the views ``records``, ``metrics``
and ``queries`` (no server, no copy). DuckDB is the ``store`` extra: ``pip install "itr-bench[store]"``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.store.files import TABLES, store_files

__all__ = ["connect", "run_query"]


def connect(folder: Path) -> Any:
    """An in-memory DuckDB connection with a view per store table of ``folder``.

    Raises:
        BenchError: DuckDB is not installed, or a table file is missing.
    """
    try:
        import duckdb
    except ImportError:
        raise BenchError('bench query needs DuckDB: pip install "itr-bench[store]"') from None
    con = duckdb.connect(":memory:")
    for table, path in store_files(folder).items():
        if not path.is_file():
            raise BenchError(f"{path}: no such store table; `bench results` writes it")
        quoted = str(path).replace("'", "''")
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{quoted}')")
    return con


def run_query(folder: Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``sql`` over the store in ``folder``: the column names and the rows.

    Raises:
        BenchError: the SQL is invalid or fails (DuckDB's own message, one line).
    """
    import duckdb

    con = connect(folder)
    try:
        cur = con.execute(sql)
        if cur.description is None:
            return [], []
        return [d[0] for d in cur.description], cur.fetchall()
    except duckdb.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BenchError(f"query failed: {first} (tables: {', '.join(TABLES)})") from None
    finally:
        con.close()
