"""Images that live inside a container file (a tar shard, a parquet file, a saved Hugging Face dataset) rather than
as files of their own.

A :class:`~bench.data.base.RetrievalSplit` lists one entry per image in ``image_paths``: a :class:`~pathlib.Path`
for an image file, or an :class:`ImageRef` for an image inside a container. A reference is small and picklable: it
names its container and where the image is in it, and reads the bytes of that one image when asked, so DataLoader
workers decode one image at a time and the split never holds its images in memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.data.stamps import file_stamp
from bench.errors import DataError

__all__ = ["ArrowImage", "CroppedImage", "ImageRef", "TarMember"]


@dataclass(frozen=True)
class ImageRef:
    """An image stored inside ``container``; ``member`` names it there (a tar member, a row)."""

    container: Path
    member: str

    def read_bytes(self) -> bytes:
        """The encoded image (JPEG, PNG, WebP...), read from the container."""
        raise NotImplementedError

    def stamp(self) -> str:
        """What changes when the image may have changed: the container's stamp (its size and mtime, or its
        sha256: :func:`bench.data.stamps.file_stamp`) and the image's place."""
        return f"{self}\0{file_stamp(self.container)}"

    def __str__(self) -> str:
        return f"{self.container}::{self.member}"

    def __fspath__(self) -> str:  # os.path.abspath and friends keep the member in the name
        return str(self)


@dataclass(frozen=True)
class TarMember(ImageRef):
    """A member of an uncompressed tar file, read by its byte offset (no scan of the archive)."""

    offset: int = 0
    size: int = 0

    def read_bytes(self) -> bytes:
        try:
            with open(self.container, "rb") as f:
                f.seek(self.offset)
                data = f.read(self.size)
        except OSError as e:
            raise DataError(f"{self.container}: cannot read member {self.member} ({e.strerror or e})") from None
        if len(data) != self.size:
            raise DataError(f"{self.container}: member {self.member} is cut short (the shard changed or is truncated)")
        return data

    def stamp(self) -> str:
        return f"{super().stamp()}\0{self.offset}:{self.size}"


@dataclass(frozen=True)
class CroppedImage(ImageRef):
    """A box of an image file (ARO's VG-Relation and VG-Attribution crop each photo to the box holding the relation):
    ``container`` is the file, ``box`` its ``(x, y, width, height)`` in pixels, cut as PIL's ``crop`` cuts it."""

    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def read_bytes(self) -> bytes:
        import io

        from PIL import Image

        x, y, w, h = self.box
        try:
            with Image.open(self.container) as im:
                out = io.BytesIO()
                im.convert("RGB").crop((x, y, x + w, y + h)).save(out, "PNG")
        except FileNotFoundError:
            raise DataError(f"{self.container}: image file not found") from None
        except OSError as e:
            raise DataError(f"{self.container}: cannot read image ({e})") from None
        return out.getvalue()


# Image columns read in this process: an Arrow file's whole column (memory-mapped, so reading it holds no image in
# memory) or one parquet row group's (decoded, so only a few are kept). A DataLoader worker opens each once.
_TABLES: OrderedDict[tuple[str, str, int], Any] = OrderedDict()
_TABLES_LOCK = threading.Lock()
_MAX_OPEN = 4


def _column(kind: str, path: Path, column: str, group: int) -> Any:
    """The image column of one Arrow file, or of one row group of a parquet file, cached per process."""
    key = (str(path), column, group)
    with _TABLES_LOCK:
        if key in _TABLES:
            _TABLES.move_to_end(key)
            return _TABLES[key]
    import pyarrow as pa

    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            table = pq.ParquetFile(path).read_row_group(group, columns=[column])
        else:  # the Arrow IPC stream files of a save_to_disk folder
            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_stream(source).read_all().select([column])
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot read column {column!r} ({e})") from None
    col = table.column(column)
    with _TABLES_LOCK:
        _TABLES[key] = col
        while len(_TABLES) > _MAX_OPEN:
            _TABLES.popitem(last=False)
    return col


@dataclass(frozen=True)
class ArrowImage(ImageRef):
    """Row ``row`` of the image column ``column`` of one parquet or Arrow file (a Hugging Face ``Image`` struct of
    ``bytes`` and ``path``, or plain binary). In a parquet file the row is ``group_row`` of row group ``group``, which
    is all a reader decodes."""

    column: str = "image"
    row: int = 0
    kind: str = "parquet"  # or "arrow"
    group: int = 0
    group_row: int = 0

    def read_bytes(self) -> bytes:
        if self.kind == "parquet":
            value = _column(self.kind, self.container, self.column, self.group)[self.group_row].as_py()
        else:
            value = _column(self.kind, self.container, self.column, -1)[self.row].as_py()
        if isinstance(value, dict):
            value = value.get("bytes")
        if not isinstance(value, bytes | bytearray) or not value:
            raise DataError(f"{self.container}: row {self.row} column {self.column!r} holds no image bytes")
        return bytes(value)

    def stamp(self) -> str:
        return f"{super().stamp()}\0{self.column}"
