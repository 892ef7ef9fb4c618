"""What a split's fingerprint says of each image file: its size and mtime (``[eval] fingerprint = "stat"``, the
default), or the sha256 of its bytes (``"content"``).

The stat stamp costs one ``stat`` per file but cannot see a file replaced by another of the same size whose mtime was
restored (``cp -p``, ``rsync -t``, an archive unpacked again). The content stamp can; its digests are cached in
``<work_dir>/content-digests.json`` by the file's inode, size, mtime and ctime (:class:`bench.digests.DigestCache`),
so a warm run reads no image again. The stamp is chosen per process by :func:`use_stamps`, which each cell calls
before it loads a split (the split's fingerprint is memoised on the loaded split).
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.config import FingerprintMode as Stamp
from bench.digests import DigestCache

__all__ = ["Stamp", "file_stamp", "save_stamps", "stamp_mode", "use_stamps"]

_CONTENT: DigestCache | None = None  # set while the content stamp is in use


def use_stamps(mode: Stamp, work_dir: Path | str) -> None:
    """Stamp files by ``mode`` from now on in this process; content digests are cached under ``work_dir``."""
    global _CONTENT
    if mode == "stat":
        save_stamps()
        _CONTENT = None
        return
    path = Path(work_dir) / "content-digests.json"
    if _CONTENT is None or _CONTENT.path != path:
        save_stamps()
        _CONTENT = DigestCache(path)


def stamp_mode() -> Stamp:
    """The stamp in use."""
    return "stat" if _CONTENT is None else "content"


def save_stamps() -> None:
    """Write the content digests computed so far (nothing in stat mode)."""
    if _CONTENT is not None:
        _CONTENT.save()


def file_stamp(path: os.PathLike[str] | str) -> str:
    """``size:mtime_ns`` of the file, or ``sha256:<hex>`` of its bytes in content mode; ``missing`` when it cannot
    be read (the loader names such a file when it reads it)."""
    try:
        if _CONTENT is not None:
            return f"sha256:{_CONTENT.digest(path)}"
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"
