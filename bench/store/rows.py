"""Result records and their per-query files, as rows of three tidy tables.

* ``records``: one row per record (any status), with its cell keys, task, status and reason, its provenance
  (config hash, fingerprints, versions, git sha, created) and the whole record as JSON (``record``), so no field is
  lost (:func:`record_from_row` gives it back).
* ``metrics``: one row per number of an ``ok`` record: its ``block`` (``metrics``, ``metrics_last`` or
  ``extra_metrics.<protocol>``), ``direction`` (``i2t``, ``t2i``, ``t2t``, ``i2i``, ``sts``; empty for RSUM),
  ``metric``, ``value`` and, for the selected metrics, the record's bootstrap interval (``ci_low``, ``ci_high``,
  ``ci_level``).
* ``queries``: one row per query of a per-query file whose digest is the one its record states: ``direction``,
  ``query`` (its row: an image for i2t/i2i, a caption for t2i/t2t), ``image`` (the image it belongs to), ``rank``
  (0-based rank of its best positive), ``rerank`` (the two-stage rank, where re-ranking ran) and ``top1`` (the
  gallery row ranked first). The top-k lists stay in the ``.npz`` files.

Every table carries the same cell keys (``model``, ``dataset``, ``split``, ``language``, ``method``, ``seed``) and the
``config_hash``, so they join on them, and ``store_version`` (:data:`STORE_VERSION`) with each record's ``schema``:
a reader can tell rows written from an older record layout.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.scoring.perquery import PerQuery

__all__ = ["KEYS", "STORE_VERSION", "metric_rows", "query_columns", "record_from_row", "record_interval", "record_row"]

log = logging.getLogger(__name__)

STORE_VERSION = 1
KEYS = ("model", "dataset", "split", "language", "method", "seed")  # a cell, in every table

_JSON_FIELDS = ("fingerprints", "versions", "config", "precision", "bootstrap", "per_query", "method_settings")


def _keys(rec: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: rec.get(k) for k in KEYS}
    out["language"] = out["language"] if isinstance(out["language"], str) else ""
    out["config_hash"] = rec.get("config_hash") if isinstance(rec.get("config_hash"), str) else ""
    return out


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def record_row(rec: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The ``records`` row of one record read from ``path`` (relative to the results folder)."""
    from bench.tasks import task_of_record

    versions = rec.get("versions") if isinstance(rec.get("versions"), Mapping) else {}
    body = {k: v for k, v in rec.items() if k != "_path"}
    return {
        "store_version": STORE_VERSION,
        "schema": rec.get("schema"),
        **_keys(rec),
        "task": task_of_record(rec),
        "status": rec.get("status"),
        "reason": rec.get("reason") if isinstance(rec.get("reason"), str) else None,
        "adapter": rec.get("adapter") if isinstance(rec.get("adapter"), str) else None,
        "created": rec.get("created") if isinstance(rec.get("created"), str) else None,
        "itr_bench": str(versions.get("itr-bench")) if versions.get("itr-bench") is not None else None,
        "git_sha": rec.get("git_sha") if isinstance(rec.get("git_sha"), str) else None,
        "tie_rule": rec.get("tie_rule") if isinstance(rec.get("tie_rule"), str) else None,
        **{name: _json(rec.get(name)) for name in _JSON_FIELDS},
        "path": path,
        "record": json.dumps(body, sort_keys=True),
    }


def record_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The record a ``records`` row was made from, as it was stored."""
    if row.get("store_version") != STORE_VERSION:
        raise BenchError(f"a store row of version {row.get('store_version')}; this itr-bench reads {STORE_VERSION}")
    return json.loads(str(row["record"]))


def _numbers(block: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], float]]:
    if isinstance(block, Mapping):
        for key, value in block.items():
            yield from _numbers(value, (*prefix, str(key)))
    elif isinstance(block, (int, float)) and not isinstance(block, bool):
        yield prefix, float(block)


def record_interval(rec: Mapping[str, Any], path: tuple[str, ...]) -> tuple[list[float], float] | None:
    """The record's bootstrap interval of the metric at ``path`` (``("i2t", "r1")``, ``("rsum",)``) and its level,
    or None where the record has none."""
    from bench.stats.bootstrap import ci_key

    boot = rec.get("bootstrap") if isinstance(rec.get("bootstrap"), Mapping) else {}
    level = boot.get("level")
    if not isinstance(level, (int, float)) or isinstance(level, bool):
        return None
    ci = rec.get(ci_key(level))
    for key in path:
        if not isinstance(ci, Mapping):
            return None
        ci = ci.get(key)
    if isinstance(ci, list) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci):
        return [float(ci[0]), float(ci[1])], float(level)
    return None


def metric_rows(rec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``metrics`` rows of an ``ok`` record (none for another status)."""
    if rec.get("status") != "ok":
        return []
    blocks: list[tuple[str, Any]] = [("metrics", rec.get("metrics")), ("metrics_last", rec.get("metrics_last"))]
    extra = rec.get("extra_metrics")
    if isinstance(extra, Mapping):
        blocks += [(f"extra_metrics.{name}", block) for name, block in extra.items()]
    keys = {"store_version": STORE_VERSION, "schema": rec.get("schema"), **_keys(rec)}
    rows = []
    for block, values in blocks:
        for path, value in _numbers(values):
            found = record_interval(rec, path) if block == "metrics" else None
            (lo, hi), level = found if found is not None else ((None, None), None)
            rows.append({**keys, "block": block, "direction": "/".join(path[:-1]), "metric": path[-1],
                         "value": value, "ci_low": lo, "ci_high": hi, "ci_level": level})  # fmt: skip
    return rows


def query_columns(rec: Mapping[str, Any], pq: PerQuery) -> list[dict[str, Any]]:
    """The ``queries`` rows of one record's per-query file (a :class:`~bench.scoring.perquery.PerQuery`): one chunk
    of columns per direction, every scored row. A chunk's cell keys and direction are single values, the same for
    each of its rows."""
    keys = {"store_version": STORE_VERSION, "schema": rec.get("schema"), **_keys(rec)}
    chunks = []
    for direction, q in pq.queries.items():
        rows = np.asarray(q.queries, dtype=np.int64)
        rerank = pq.rerank.get(direction)
        top = q.lists.index if q.lists is not None and q.lists.index.shape[1] else None
        chunks.append({
            **keys,
            "direction": direction,
            "query": rows,
            "image": np.asarray(q.cluster, dtype=np.int64),
            "rank": np.asarray(q.ranks, dtype=np.int64),
            "rerank": np.asarray(rerank, dtype=np.float64)[rows] if rerank is not None else np.full(rows.size, np.nan),
            "top1": top[:, 0].astype(np.int64) if top is not None else np.full(rows.size, -1, dtype=np.int64),
        })  # fmt: skip
    return chunks
