"""Finished trainings on disk: every trained cell's weights, frozen-backbone heads and end-to-end models alike.

A store is a folder under ``<work_dir>/trained/<model>/<train dataset>/<method>-seed<s>-<key>/`` (the key hashes
what determines the weights: :func:`bench.grid.cell.training_config`)::

    selected.safetensors   the state best on validation: the adapter's trainable module ("module.*") and the
                           method's objective ("objective.*": temperatures, cross/uni heads)
    last.safetensors       the last epoch's state, when it is not the selected one
    training.json          what was trained and how: config, data and weight fingerprints, selected epoch, history,
                           versions, and each weight file's size and sha256

Each file is written atomically and ``training.json`` last, so a store without it (a job killed while writing) is
incomplete and trained again; a weight file whose sha256 differs from the one recorded is never loaded.
``bench export`` turns a store into the model family's native form.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from bench.atomic import atomic_open
from bench.errors import BenchError
from bench.scoring.perquery import sha256_of
from bench.train.fit import FitResult

__all__ = ["STORE_SCHEMA", "load_training", "read_training_meta", "save_training", "state_tensors"]

log = logging.getLogger(__name__)
STORE_SCHEMA = 1
META = "training.json"
PARTS = ("module", "objective")


def state_tensors(state: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """A :func:`bench.train.fit.fit` state as one flat dict of contiguous CPU tensors (``module.*``, ``objective.*``),
    as safetensors stores them (channels-last weights are made contiguous; their values are unchanged)."""
    return {f"{part}.{k}": v.detach().cpu().contiguous() for part in PARTS for k, v in state[part].items()}


def _unflatten(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {part: {} for part in PARTS}
    for key, v in tensors.items():
        part, _, name = key.partition(".")
        out[part][name] = v
    return out


def _write_weights(path: Path, state: dict[str, dict[str, torch.Tensor]]) -> dict[str, Any]:
    from safetensors.torch import save

    data = save(state_tensors(state))
    with atomic_open(path, "wb") as f:
        f.write(data)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def save_training(folder: Path, result: FitResult, meta: dict[str, Any]) -> None:
    """Store a finished training in ``folder``: the selected (and, if different, the last) state as safetensors and
    ``training.json`` with ``meta`` (what was trained: config, fingerprints, ...) and the selection.

    Raises:
        BenchError: the folder cannot be written (a full disk, no permission): one line naming it.
    """
    folder = Path(folder)
    selected = result.best_state or result.last_state
    if selected is None:
        raise ValueError("a training without a state cannot be stored")
    last_is_selected = result.best_state is None or result.selected_epoch == len(result.history)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / META).unlink(missing_ok=True)  # incomplete until the marker is written again
        files = {"selected.safetensors": _write_weights(folder / "selected.safetensors", selected)}
        if not last_is_selected and result.last_state is not None:
            files["last.safetensors"] = _write_weights(folder / "last.safetensors", result.last_state)
        else:
            (folder / "last.safetensors").unlink(missing_ok=True)
        body = {
            "schema": STORE_SCHEMA,
            **meta,
            "selected_epoch": result.selected_epoch,
            "best_val": result.best_val,
            "resumed_from_epoch": result.resumed_from_epoch,
            "history": result.history,
            "files": files,
        }
        with atomic_open(folder / META) as f:
            json.dump(body, f, indent=1, default=str)
    except OSError as e:
        raise BenchError(f"cannot store the training in {folder}: {e.strerror or e}") from None


def read_training_meta(folder: Path) -> dict[str, Any] | None:
    """``training.json`` of a complete store, or None when there is none (absent, or its writer was killed)."""
    path = Path(folder) / META
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning("%s: unreadable (%s)", path, e)
        return None
    return meta if isinstance(meta, dict) and meta.get("schema") == STORE_SCHEMA else None


def load_state_file(folder: Path, name: str, meta: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    """One weight file of a store, checked against the size and sha256 ``training.json`` recorded.

    Raises:
        BenchError: the file is missing or is not the one that was stored.
    """
    from safetensors.torch import load_file

    path = Path(folder) / name
    want = meta.get("files", {}).get(name)
    if want is None or not path.is_file():
        raise BenchError(f"{path}: missing from the training store (its training.json names {sorted(meta['files'])})")
    if path.stat().st_size != want["bytes"] or sha256_of(path) != want["sha256"]:
        raise BenchError(f"{path}: not the file this training stored (size or sha256 differ); train the cell again")
    return _unflatten(load_file(str(path)))


def load_training(folder: Path, fingerprints: Mapping[str, Any] | None = None) -> FitResult | None:
    """A training stored by :func:`save_training`, or None when it is absent, incomplete or damaged (then it is
    trained again; a damaged one is said in a warning), or when it was trained on other data than ``fingerprints``
    (its data splits' content keys, as stored under ``fingerprints``)."""
    meta = read_training_meta(folder)
    if meta is None:
        return None
    if fingerprints is not None:
        stored = meta.get("fingerprints") if isinstance(meta.get("fingerprints"), Mapping) else {}
        moved = [k for k in fingerprints if stored.get(k) != fingerprints[k]]
        if moved:
            log.info("%s was trained on other data (its %s split changed); training again", folder, moved[0])
            return None
    try:
        selected = load_state_file(folder, "selected.safetensors", meta)
        last = load_state_file(folder, "last.safetensors", meta) if "last.safetensors" in meta["files"] else selected
    except BenchError as e:
        log.warning("%s; training again", e)
        return None
    return FitResult(selected_epoch=int(meta["selected_epoch"]), history=list(meta["history"]),
                     best_val=float(meta["best_val"]), best_state=selected, last_state=last,
                     resumed_from_epoch=int(meta.get("resumed_from_epoch", 0)))  # fmt: skip
