"""Records -> their per-query results -> intervals and paired tests, for ``bench compare`` and ``bench table``.

A record names its per-query file (``per_query.file``, beside the record) and the file's sha256; a file that is
missing or whose digest differs is refused (it belongs to another run), never silently used.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from bench.errors import BenchError
from bench.scoring.itr import recall_ks
from bench.scoring.perquery import PerQuery, load_per_query, sha256_of
from bench.stats.bootstrap import BootstrapConfig, QueryValues, confidence_intervals, query_values
from bench.stats.paired import Comparison, compare

__all__ = [
    "CellValues",
    "Seeded",
    "checked_per_query_file",
    "compare_cells",
    "is_trained",
    "pair_seeds",
    "queries_key",
    "per_query_file",
    "read_per_query",
    "row_intervals",
    "row_values",
    "unpaired_seeds",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CellValues:
    """One cell's per-query metric values, ready for the bootstrap."""

    seed: int
    values: dict[str, QueryValues]
    n_images: int
    queries_key: str = ""  # what was queried: image ids, caption texts, caption -> image (:func:`queries_key`)
    trained: bool = False  # the cell's method trained, so its seed changes its numbers


def queries_key(pq: PerQuery) -> str:
    """A digest of what a per-query file's queries are: the image ids (else paths), the caption texts and which image
    each caption belongs to. Two cells can be paired only when theirs agree."""
    h = hashlib.sha256(f"{pq.n_images}\n".encode())
    h.update(np.ascontiguousarray(pq.caption_image, dtype=np.int64).tobytes())
    for name, column in (("ids", pq.image_id if pq.image_id is not None else pq.image_path),
                         ("captions", pq.caption_text)):  # fmt: skip
        if column is not None:
            h.update(f"\0{name}\0".encode() + "\0".join(str(x) for x in column.tolist()).encode())
    return h.hexdigest()[:16]


def is_trained(record: Mapping[str, Any]) -> bool:
    """Whether a record's method trained (its seed then changes its numbers)."""
    return record.get("selected_epoch") is not None or bool(record.get("history"))


def per_query_file(record: Mapping[str, Any]) -> Path | None:
    """Where a record's per-query file is (None for a record without one, e.g. from before per-query results)."""
    pq = record.get("per_query")
    if not isinstance(pq, dict) or "_path" not in record:
        return None
    return Path(str(record["_path"])).parent / str(pq.get("file"))


def checked_per_query_file(record: Mapping[str, Any]) -> Path:
    """A record's per-query file, checked against the digest the record states.

    Raises:
        BenchError: the record has no per-query file, or it is missing or changed (one line naming it).
    """
    path = per_query_file(record)
    label = f"{record.get('model')}/{record.get('dataset')}/{record.get('method')}/seed{record.get('seed')}"
    if path is None:
        raise BenchError(f"{record.get('_path', label)}: no per-query results (re-run with [eval] per_query = true)")
    if not path.is_file():
        raise BenchError(f"{path}: the per-query file of {label} is missing; re-run the cell (bench run --force)")
    if sha256_of(path) != record["per_query"].get("sha256"):
        raise BenchError(f"{path}: its sha256 differs from the one its record states; it belongs to another run")
    return path


def read_per_query(record: Mapping[str, Any]) -> PerQuery:
    """A record's per-query results (:func:`checked_per_query_file`).

    Raises:
        BenchError: the record has no per-query file, or it is missing, changed or unreadable (one line naming it).
    """
    path = checked_per_query_file(record)
    try:
        return load_per_query(path)
    except ValueError as e:
        raise BenchError(str(e)) from None


def row_values(records: Sequence[Mapping[str, Any]], ks: Sequence[int] = (1, 5, 10)) -> list[CellValues]:
    """The per-query values of each ``ok`` record of one table row (one per seed)."""
    out = []
    for rec in records:
        if rec.get("status") != "ok":
            continue
        pq = read_per_query(rec)
        values = query_values(pq.queries, recall_ks(ks))
        out.append(CellValues(int(rec.get("seed", 0)), values, pq.n_images, queries_key(pq), is_trained(rec)))
    return sorted(out, key=lambda c: c.seed)


class Seeded(Protocol):
    """What seed pairing reads of a cell: its seed and whether its method trained."""

    @property
    def seed(self) -> int: ...
    @property
    def trained(self) -> bool: ...


S = TypeVar("S", bound=Seeded)


def pair_seeds(a: Sequence[S], b: Sequence[S]) -> tuple[list[S], list[S]]:
    """Seed-paired sides: the seeds both have. Two single cells pair with each other whatever their seeds (the user
    chose them); a single cell of a method that does not train (zero-shot: seeds change nothing) pairs with every seed
    of the other side. A trained side's one seed is never reused for the other's seeds.

    Raises:
        BenchError: no seed pairs up.
    """
    if len(a) == 1 and len(b) == 1:
        return list(a), list(b)
    if len(a) == 1 and not a[0].trained:
        return [a[0]] * len(b), list(b)
    if len(b) == 1 and not b[0].trained:
        return list(a), [b[0]] * len(a)
    seeds = sorted({c.seed for c in a} & {c.seed for c in b})
    if not seeds:
        raise BenchError(f"no seed in common: {[c.seed for c in a]} against {[c.seed for c in b]}")
    by_a, by_b = {c.seed: c for c in a}, {c.seed: c for c in b}
    return [by_a[s] for s in seeds], [by_b[s] for s in seeds]


def unpaired_seeds(a: Sequence[Seeded], b: Sequence[Seeded]) -> tuple[list[int], list[int]]:
    """The seeds of each side that :func:`pair_seeds` leaves out (those the other side has no cell for)."""
    pa, pb = pair_seeds(a, b)
    return sorted({c.seed for c in a} - {c.seed for c in pa}), sorted({c.seed for c in b} - {c.seed for c in pb})


def compare_cells(a: Sequence[CellValues], b: Sequence[CellValues], cfg: BootstrapConfig) -> Comparison:
    """A minus B on the same queries, seeds paired by :func:`pair_seeds`.

    Raises:
        BenchError: no seed pairs up, or the sides were scored on different queries (other images or captions).
    """
    pa, pb = pair_seeds(a, b)
    n_images = {c.n_images for c in (*pa, *pb)}
    if len(n_images) != 1:
        raise BenchError(f"the two sides were scored on different image sets ({sorted(n_images)} images)")
    if len({c.queries_key for c in (*pa, *pb)}) != 1:
        raise BenchError("the two sides were scored on different queries (their image ids or caption texts differ); "
                         "a paired test needs the same ones")  # fmt: skip
    try:
        return compare([c.values for c in pa], [c.values for c in pb], n_images.pop(), cfg)
    except ValueError as e:
        raise BenchError(str(e)) from None


def row_intervals(cells: Sequence[CellValues], cfg: BootstrapConfig) -> dict[str, Any]:
    """A row's intervals: one seed's image bootstrap, or the two-level one over its seeds and images."""
    values = cells[0].values if len(cells) == 1 else [c.values for c in cells]
    return confidence_intervals(values, cells[0].n_images, cfg)
