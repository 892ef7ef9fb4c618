"""What a cell read, as fingerprints: its data splits and its weight files, so that a stored result is served only
while they are unchanged.

The config hash says *what was asked for*; these say *what was there*. A record keeps ``fingerprints``::

    {"data": {"coco/test": {"images": "1a2b...", "captions": "3c4d..."}, "coco/train": {...}},
     "weights": {"/ckpt/model.pt": "<sha256>"}}

* data: the split's own content keys (:meth:`bench.data.base.RetrievalSplit.fingerprint`): image ids and paths with
  each file's stamp, and the caption texts, caption map and labels as read. Uni-modal splits hash what they read the
  same way (images with their stamps, labels; STS sentences and gold scores). A stamp is the file's size and mtime,
  or with ``[eval] fingerprint = "content"`` the sha256 of its bytes (:mod:`bench.data.stamps`).
* weights: the sha256 of every file a model's options (or the teachers' ``image_weights``) name. Packaged weights
  are covered by the record's package versions.

File digests are cached in ``<work_dir>/digests.json`` by path and the file's inode, size, mtime and ctime
(:class:`bench.digests.DigestCache`), so a warm re-run reads no weight file twice. Split fingerprints are memoised
per process, so a grid loads each split once for all its cells.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.data.stamps import save_stamps, stamp_mode
from bench.digests import DigestCache
from bench.tasks import Split, get_task

if TYPE_CHECKING:
    from bench.grid.plan import Plan

__all__ = [
    "DigestCache",
    "cell_fingerprints",
    "changed",
    "content_key",
    "forget_splits",
    "split_fingerprint",
    "weight_files",
]

log = logging.getLogger(__name__)

# (dataset, spec, split, work_dir, stamp) -> fingerprint, or the split-not-found error, per grid run
_SPLITS: dict[str, dict[str, str] | Exception] = {}


def forget_splits() -> None:
    """Drop the memoised split fingerprints: a grid run starts from what is on disk now."""
    _SPLITS.clear()


def content_key(split: Split) -> dict[str, str]:
    """The content keys of a loaded split (what a record's ``fingerprints.data`` holds for it): its task kind's
    :meth:`~bench.tasks.Task.fingerprint`."""
    return get_task(split.task).fingerprint(split)


def split_fingerprint(
    name: str, spec: Mapping[str, Any], split: str, work_dir: Path, *, required: bool = False
) -> dict[str, str] | None:
    """The content keys of one split of a configured dataset, memoised until :func:`forget_splits`; None when the
    dataset has no such split (an optional val split), unless ``required`` (a cell's scored split).

    Raises:
        SplitNotFoundError: a ``required`` split cannot be found (its folder was moved away, say).
    """
    from bench.data import load_split
    from bench.errors import SplitNotFoundError

    key = json.dumps([name, spec, split, str(work_dir), stamp_mode()], sort_keys=True, default=str)
    if key not in _SPLITS:
        try:
            _SPLITS[key] = content_key(load_split(name, spec, split, work_dir=work_dir))
        except SplitNotFoundError as e:
            _SPLITS[key] = e
    found = _SPLITS[key]
    if isinstance(found, SplitNotFoundError):
        if required:
            raise found
        return None
    return found


def cell_fingerprints(plan: Plan, digests: DigestCache) -> dict[str, Any]:
    """The fingerprints of what a planned cell reads: its scored split, the train and val splits a trained method
    fits on, and every weight file its model (and, for soft-label methods, its image teacher) names."""
    import inspect

    cfg, cell = plan.cfg, plan.cell
    wanted = [(cell.dataset, cell.split)]
    if plan.method.trains:
        wanted += [(plan.train_name, "train"), (plan.train_name, "val")]
    data = {}
    for name, split in dict.fromkeys(wanted):
        scored = (name, split) == (cell.dataset, cell.split)
        fp = split_fingerprint(name, cfg.datasets[name], split, plan.work, required=scored)
        if fp is not None:
            data[f"{name}/{split}"] = fp
    uses_teachers = "teachers" in inspect.signature(plan.method.objective).parameters
    weights = {str(p): digests.digest(p) for p in weight_files(plan.options, cfg.teachers if uses_teachers else None)}
    save_stamps()
    return {"data": data, "weights": weights}


def weight_files(options: Mapping[str, Any], teachers: Any = None) -> list[Path]:
    """The existing files a model's options name (checkpoints, embeddings, local weights), and the teachers'."""
    found = []
    values = list(options.values())
    if teachers is not None:
        values.append(getattr(teachers, "image_weights", None))
    for value in values:
        if isinstance(value, str) and value and ("/" in value or "." in value) and os.path.isfile(value):
            found.append(Path(value))
    return sorted(set(found))


def changed(stored: Mapping[str, Any] | None, current: Mapping[str, Any]) -> str | None:
    """Why ``current`` fingerprints differ from a record's ``stored`` ones, or None when they agree."""
    if not isinstance(stored, Mapping):
        return "the record has no data and weight fingerprints (written before they existed)"
    for name in (stored.get("data") or {}):
        if name not in current.get("data", {}):
            return f"the data of {name} can no longer be read"
    for name, parts in current.get("data", {}).items():
        old = (stored.get("data") or {}).get(name)
        if old != parts:
            what = [p for p in parts if not isinstance(old, Mapping) or old.get(p) != parts[p]]
            return f"the {'/'.join(what) or 'data'} of {name} changed since the record"
    old_weights = stored.get("weights") or {}
    for path, digest in current.get("weights", {}).items():
        if old_weights.get(path) != digest:
            return f"the weights file {path} changed since the record"
    for path in old_weights:
        if path not in current.get("weights", {}):
            return f"the weights file {path} is no longer used or found"
    return None
