"""Test helper: read back a wandb offline run (``run-*.wandb``) with wandb's own protobuf schema.

The file is wandb's transaction log: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks of records,
each with a 7-byte header (crc32, length, type: full, first, middle, last), as LevelDB's log. wandb's Python reader
was removed when its internals moved to wandb-core; the records are still ``wandb_internal_pb2.Record`` messages.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_BLOCK, _HEADER = 32768, 7


def _chunks(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a wandb transaction log"
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if length == 0 and kind == 0:  # block padding
            pos += left
            continue
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def read_wandb_run(path: Path) -> dict[str, Any]:
    """``{"name", "project", "config", "history": [rows], "summary"}`` of one offline run file."""
    from wandb.proto import wandb_internal_pb2 as pb

    out: dict[str, Any] = {"config": {}, "history": [], "summary": {}, "exit_code": None}
    for chunk in _chunks(path):
        rec = pb.Record()
        rec.ParseFromString(chunk)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["name"], out["project"] = rec.run.display_name, rec.run.project
            out["config"].update({_key(i): json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            out["summary"].update({_key(i): json.loads(i.value_json) for i in rec.summary.update})
        elif kind == "exit":
            out["exit_code"] = rec.exit.exit_code
    return out
