"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every file the harness keeps (records, feature caches, checkpoints, stored trainings) is written to a temporary file
beside its target, flushed, and renamed over it. The final file gets the permissions the umask gives a new file
(``mkstemp`` alone would make every result private to its writer, which breaks shared results folders).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["TMP_SUFFIX", "atomic_open", "atomic_torch_save", "atomic_write_bytes", "remove_stale_temporaries"]

TMP_SUFFIX = ".tmp"
# Temporary files are named .<target>.<host>-<pid>.<random>.tmp, so a later run can tell a dead writer's leftovers
# (removed) from a live writer's file (kept).
_TMP_NAME = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[^.]+\.tmp$")
_FOREIGN_AGE_S = 24 * 3600  # a temporary of another host (or an older naming) is stale after a day


def _owner() -> str:
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname().split(".")[0]) or "host"
    return f"{host}-{os.getpid()}"


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path``, else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_owner()}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)`` through :func:`atomic_open`."""
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_open`."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(*folders: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files that killed writers left under ``folders``; returns what was removed.

    A file of this host whose process is gone is removed at once; a live process's file is kept (two grids may
    share a folder); another host's, or one not named by :func:`atomic_open`, once it is a day old.
    """
    host = _owner().rsplit("-", 1)[0]
    now = time.time()
    removed = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for path in folder.rglob(f".*{TMP_SUFFIX}"):
            m = _TMP_NAME.match(path.name)
            try:
                if m and m["host"] == host:
                    stale = not _alive(int(m["pid"]))
                else:
                    stale = now - path.stat().st_mtime > _FOREIGN_AGE_S
                if stale and path.is_file():
                    path.unlink()
                    removed.append(path)
            except OSError:  # removed by another process meanwhile, or not ours to remove
                continue
    return removed
