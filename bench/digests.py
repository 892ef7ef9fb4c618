"""sha256 digests of files, cached on disk so that a warm run reads no file twice.

An entry is reused only while the file's device, inode, size, mtime and ctime are all unchanged. The ctime matters:
a tool that copies a file over another (``cp -p``, ``rsync -t``) can restore the size and mtime, but writing the
file or restoring its mtime sets the ctime to now, and no user call can set it back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from bench.atomic import atomic_open

__all__ = ["DigestCache"]

log = logging.getLogger(__name__)


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class DigestCache:
    """sha256 digests of files, cached by absolute path and the file's identity (:mod:`bench.digests`) in a JSON
    file. Several processes may share one: each writes it whole and atomically, and an entry lost to a concurrent
    writer only costs reading that file again."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._entries: dict[str, dict[str, Any]] | None = None
        self._dirty = False

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._entries is None:
            try:
                data = json.loads(self.path.read_text())
                self._entries = data if isinstance(data, dict) else {}
            except (OSError, ValueError):
                self._entries = {}  # no cache yet, or a broken one: digests are recomputed
        return self._entries

    def digest(self, path: Path | str) -> str:
        """The file's sha256 (read only when its identity differs from the cached entry's).

        Raises:
            OSError: the file cannot be read.
        """
        key = os.path.abspath(path)
        st = os.stat(key)
        entry = self._load().get(key)
        if isinstance(entry, dict) and entry.get("stat") == _identity(st) and isinstance(entry.get("sha256"), str):
            return entry["sha256"]
        h = hashlib.sha256()
        with open(key, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        self._load()[key] = {"stat": _identity(st), "sha256": h.hexdigest()}
        self._dirty = True
        return h.hexdigest()

    def save(self) -> None:
        """Write the cache back if it changed (a failure only costs re-reading files next time)."""
        if not self._dirty or self._entries is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(self.path) as f:
                json.dump(self._entries, f)
            self._dirty = False
        except OSError as e:
            log.debug("cannot write the digest cache %s: %s", self.path, e)
