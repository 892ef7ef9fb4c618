"""``bench export``: a trained cell's selected model, out of the harness, in its family's native form.

The export folder holds what the family's own library loads (open_clip's hub layout, a ``save_pretrained`` folder, the
VSE∞ authors' ``model_best.pth``: :meth:`~bench.adapters.protocol.Exportable.export_native`), plus:

* ``heads.safetensors``: the method's own parameters (temperatures; CUSA's cross and uni heads), which no family
  library knows; :func:`load_heads` puts them back on an adapter for the harness.
* ``export.json``: which cell and record it came from (config hash, fingerprints, versions), the selected epoch, the
  line that loads it with the family's library and the ``[models.<id>]`` options that load it in itr-bench.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from bench import __version__
from bench.adapters.protocol import Adapter, Exportable
from bench.adapters.registry import create_adapter
from bench.config import BenchConfig, TrainConfig
from bench.errors import BenchError
from bench.grid.cell import Cell
from bench.grid.execute import record_path
from bench.grid.records import read_record
from bench.methods import get_method
from bench.methods.base import Objective
from bench.train.store import load_state_file, read_training_meta

__all__ = ["EXPORT_FILE", "HEADS_FILE", "export_cell", "load_heads"]

EXPORT_FILE = "export.json"
HEADS_FILE = "heads.safetensors"
_NOT_OPTIONS = ("name", "objective_version")  # keys of the method snapshot that are not objective options


def _writable_folder(out: Path) -> None:
    """``out`` is (or can be made) an empty folder we may write to; else one line saying why."""
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out}: not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BenchError(f"--out {out}: cannot make the folder ({e.strerror or e})") from None
    if any(out.iterdir()):
        raise BenchError(f"--out {out}: not empty; export into a new folder")
    if not os.access(out, os.W_OK | os.X_OK):
        raise BenchError(f"--out {out}: not writable")


def _stored_training(cfg: BenchConfig, cell: Cell) -> tuple[Path, dict[str, Any], Path, dict[str, Any]]:
    """The cell's record and its training store, or one line saying why there is nothing to export."""
    if not get_method(cell.method).trains:
        raise BenchError(f"{cell.label}: method {cell.method!r} does not train; there is no fine-tuned model to export")
    path = record_path(cfg, cell)
    if not path.is_file():
        raise BenchError(f"{path}: no record of {cell.label}; `bench table --all` lists the stored cells")
    try:
        record = read_record(path)
    except (OSError, ValueError) as e:
        raise BenchError(str(e)) from None
    if record.get("status") != "ok":
        raise BenchError(f"{path}: status {record.get('status')!r}: the cell did not finish training")
    store = record.get("trained_store")
    if not isinstance(store, str):
        raise BenchError(f"{path}: names no training store (written before trainings were stored); "
                         "run the cell again with `bench run --force`")  # fmt: skip
    meta = read_training_meta(Path(store))
    if meta is None:
        raise BenchError(f"{store}: no complete training store (training.json missing); run the cell again")
    return path, record, Path(store), meta


def export_cell(cfg: BenchConfig, cell: Cell, out: Path) -> dict[str, Any]:
    """Write ``cell``'s selected model into the new folder ``out``; returns what ``export.json`` says.

    Raises:
        BenchError: an unknown or unfinished cell, a method that does not train, a family with no native form, an
            unwritable ``out`` (one line each).
    """
    out = Path(out)
    path, record, store, meta = _stored_training(cfg, cell)
    _writable_folder(out)
    state = load_state_file(store, "selected.safetensors", meta)
    adapter = create_adapter(meta["family"], dict(meta["options"]), where=f"{store}/training.json: options")
    if not isinstance(adapter, Exportable):
        raise BenchError(f"{cell.label}: adapter {meta['family']!r} has no native form to export "
                         "(clip, hf_clip, blip and vse_infty have one)")  # fmt: skip
    adapter.trainable_module(bool(meta["frozen_backbone"])).load_state_dict(state["module"])
    try:
        exported = adapter.export_native(out)
        heads = None
        if state["objective"]:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state["objective"].items()}, str(out / HEADS_FILE))
            heads = HEADS_FILE
        body = {
            "cell": {"model": cell.model, "dataset": cell.dataset, "split": cell.split, "method": cell.method_id,
                     "seed": cell.seed},  # fmt: skip
            "record": str(path),
            "config_hash": record.get("config_hash"),
            "training_store": str(store),
            "selected_epoch": meta["selected_epoch"],
            "frozen_backbone": meta["frozen_backbone"],
            "method": {"name": cell.method, "options": _method_options(meta), "settings": meta.get("method_settings")},
            "train": meta["config"]["train"],
            "heads": heads,
            "load": exported.load,
            "options": exported.options,
            "metrics": record.get("metrics"),
            "fingerprints": {"record": record.get("fingerprints"), "training": meta.get("fingerprints")},
            "versions": meta.get("versions"),
            "exported_by": f"itr-bench {__version__}",
        }
        (out / EXPORT_FILE).write_text(json.dumps(body, indent=1, default=str))
    except OSError as e:
        raise BenchError(f"--out {out}: cannot write the export ({e.strerror or e})") from None
    return body


def _method_options(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta["config"]["method"].items() if k not in _NOT_OPTIONS}


def load_heads(folder: Path, adapter: Adapter) -> Objective | None:
    """The exported method's objective (its heads and temperatures) on ``adapter``, as it was selected; None when the
    method added no parameters. Evaluate with it as the harness does: ``bench.evaluate(adapter, split,
    objective=load_heads(folder, adapter))``."""
    folder = Path(folder)
    body = json.loads((folder / EXPORT_FILE).read_text())
    if not body.get("heads"):
        return None
    from safetensors.torch import load_file

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    tcfg = TrainConfig(**{k: v for k, v in body["train"].items() if k in fields})
    objective = get_method(body["method"]["name"]).objective(adapter, tcfg, **body["method"]["options"])
    objective.load_state_dict(load_file(str(folder / body["heads"])))
    return objective.eval()
