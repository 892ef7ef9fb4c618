"""Hugging Face datasets kept on local disk: ``save_to_disk`` folders (``format = "hf_dataset"``) and parquet files
(``format = "parquet"``), read offline.

Both take the layouts people upload for Karpathy COCO and Flickr30K: one row per image with a list of captions
(``nlphuji/flickr30k``: ``image``, ``caption`` list, ``split`` column), one row per image with Karpathy's
``sentences`` (``yerevann/coco-karpathy``: ``filepath``/``filename`` paths, ``sentences`` list, ``split``), or one
row per caption grouped by an id column. The image column is a Hugging Face ``Image`` (a struct of ``bytes`` and
``path``), plain binary, or a string path relative to ``image_dir``. Embedded images become
:class:`~bench.data.refs.ArrowImage` references (file, column, row) that DataLoader workers read one at a time from
the memory-mapped file, so the split never holds its images in memory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.data.base import RetrievalSplit
from bench.data.gallery import GalleryBuilder
from bench.data.refs import ArrowImage
from bench.data.registry import register_format
from bench.errors import ConfigError, DataError, SplitNotFoundError

__all__ = ["load_hf_dataset", "load_parquet"]

IMAGE_COLUMNS = ("image", "img", "jpg", "png", "webp", "image_path", "filepath", "file_name", "filename")
CAPTION_COLUMNS = ("caption", "captions", "sentences", "text", "raw")
ID_COLUMNS = ("image_id", "img_id", "cocoid", "id", "filename", "file_name")


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
    except ImportError:
        raise ConfigError("parquet and Hugging Face datasets need pyarrow: pip install 'itr-bench[hf]'") from None
    return pa


def _pick(option: str | None, key: str, candidates: tuple[str, ...], columns: list[str], where: str,
          listed: list[str] | None = None) -> str:  # fmt: skip
    """The column named by ``option``, else the first of ``candidates`` present; errors list ``listed`` (default
    ``columns``)."""
    names = ", ".join(listed or columns)
    if option is not None:
        if option not in columns:
            raise DataError(f"{where}: no column {option!r} (option {key!r}); columns: {names}")
        return option
    found = next((c for c in candidates if c in columns), None)
    if found is None:
        raise DataError(f"{where}: none of the columns {', '.join(candidates)} found; set option {key!r} "
                        f"(columns: {names})")  # fmt: skip
    return found


def _captions(value: Any, where: str, column: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    out = []
    for j, item in enumerate(items):
        if isinstance(item, Mapping):  # Karpathy's sentences: {"raw": ..., "tokens": [...]}
            item = item.get("raw")
        if not isinstance(item, str) or not item.strip():
            raise DataError(f"{where} column {column!r} item {j} is not a non-empty string ({item!r})")
        out.append(item)
    if not out:
        raise DataError(f"{where} column {column!r} is empty")
    return out


class _Segment:
    """One parquet or Arrow file: its non-image columns, and per row the image's embedded bytes flag and path."""

    def __init__(self, path: Path, kind: str, table: Any, image_column: str, embedded: list[bool],
                 image_paths: list[Any], columns: list[str],
                 groups: list[tuple[int, int]] | None = None) -> None:  # fmt: skip
        self.path, self.kind, self.table, self.image_column = path, kind, table, image_column
        self.embedded, self.image_paths = embedded, image_paths
        self.columns = columns  # the file's, in its order, for errors
        self.groups = groups  # parquet: (row group, row in it) of each row


def _image_kind(pa: Any, typ: Any, column: str, where: str) -> str:
    if pa.types.is_struct(typ) and typ.get_field_index("bytes") >= 0:
        return "struct"
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        return "binary"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "path"
    raise DataError(f"{where}: column {column!r} has type {typ}; expected an Image struct, binary or a path string")


def _image_rows(column: Any, kind: str) -> tuple[list[bool], list[Any]]:
    """(embedded, path) per row of an image column held in memory or memory-mapped."""
    import pyarrow.compute as pc

    if kind == "path":
        return [False] * len(column), column.to_pylist()
    if kind == "binary":
        return pc.is_valid(column).to_pylist(), [None] * len(column)
    paths = pc.struct_field(column, "path").to_pylist() if column.type.get_field_index("path") >= 0 else None
    return pc.is_valid(pc.struct_field(column, "bytes")).to_pylist(), paths or [None] * len(column)


def _build(
    segments: list[_Segment], *, name: str, split: str, source: Path, root: Path, image_dir: str | None,
    caption_column: str | None, id_column: str | None, folder_column: str | None, split_column: str | None,
    restval_in_train: bool,
) -> RetrievalSplit:  # fmt: skip
    img_root = root if image_dir is None else (Path(image_dir) if os.path.isabs(image_dir) else root / image_dir)
    b = GalleryBuilder(source)
    seen_split = set()
    for seg in segments:
        have, where_file = seg.table.column_names, str(seg.path)
        cap_col = _pick(caption_column, "caption_column", CAPTION_COLUMNS, have, where_file, seg.columns)
        idc = id_column if id_column is not None else next((c for c in ID_COLUMNS if c in have), None)
        for c, key in ((idc, "id_column"), (folder_column, "folder_column"), (split_column, "split_column")):
            if c is not None:
                _pick(c, key, (), have, where_file, seg.columns)
        embedded, paths = seg.embedded, seg.image_paths
        captions = seg.table.column(cap_col).to_pylist()
        ids = seg.table.column(idc).to_pylist() if idc is not None else None
        folders = seg.table.column(folder_column).to_pylist() if folder_column else None
        splits = seg.table.column(split_column).to_pylist() if split_column else None
        for r in range(seg.table.num_rows):
            if splits is not None:
                s = "train" if splits[r] == "restval" and restval_in_train else str(splits[r])
                seen_split.add(s)
                if s != split:
                    continue
            where = f"{seg.path.name}: row {r}"
            if embedded[r]:
                g, gr = seg.groups[r] if seg.groups else (0, r)
                ref: Any = ArrowImage(seg.path, f"row {r}", column=seg.image_column, row=r, kind=seg.kind, group=g,
                                      group_row=gr)  # fmt: skip
                label = paths[r] or str(ref)
            else:
                rel = paths[r]
                if not isinstance(rel, str) or not rel:
                    raise DataError(f"{where} column {seg.image_column!r} holds neither image bytes nor a path")
                if folders is not None:
                    rel = os.path.join(str(folders[r]), rel)
                ref = Path(rel) if os.path.isabs(rel) else img_root / rel
                label = rel
            image_id = ids[r] if ids is not None else label
            if isinstance(image_id, list | dict):
                raise DataError(f"{where} column {idc!r} (option 'id_column') holds a {type(image_id).__name__}, "
                                "not an image id")  # fmt: skip
            key = image_id if ids is not None else str(ref)
            k = b.index.get(key)
            if k is None or not isinstance(ref, ArrowImage):  # rows of one image each embed a copy: keep the first
                k = b.image(key, ref, image_id, where)
            b.captions[k].extend(_captions(captions[r], where, cap_col))
    if split_column is not None and split not in seen_split:
        raise SplitNotFoundError(
            f"{source}: no rows with {split_column} = {split!r}; values there: {', '.join(sorted(seen_split))}"
        )
    return b.build(name, split)


def _parquet_files(root: Path, split: str, files: Mapping[str, str] | None, split_column: str | None) -> list[Path]:
    if files is not None:
        if not isinstance(files, Mapping) or not all(isinstance(v, str) for v in files.values()):
            raise ConfigError(f"option 'files' must map split names to parquet files or globs, got {files!r}")
        if split not in files:
            raise SplitNotFoundError(f"{root}: unknown split {split!r}; available (option 'files'): {', '.join(files)}")
        patterns = [files[split]]
    elif split_column is not None:
        patterns = ["*.parquet", "data/*.parquet"]
    else:  # the Hub's layouts: test.parquet, test-00000-of-00002.parquet, data/test-*.parquet, test/*.parquet
        patterns = [f"{split}.parquet", f"{split}-*.parquet", f"data/{split}-*.parquet", f"{split}/*.parquet"]
    for pattern in patterns:
        found = sorted(root.glob(pattern)) if not os.path.isabs(pattern) else sorted(Path("/").glob(pattern[1:]))
        found = [p for p in found if p.is_file()]
        if found:
            return found
    raise SplitNotFoundError(f"{root}: no parquet files for split {split!r} (looked for {', '.join(patterns)})")


@register_format("parquet")
def load_parquet(
    root: Path,
    split: str,
    *,
    name: str = "parquet",
    files: dict[str, str] | None = None,
    image_column: str | None = None,
    caption_column: str | None = None,
    id_column: str | None = None,
    folder_column: str | None = None,
    split_column: str | None = None,
    image_dir: str | None = None,
    restval_in_train: bool = True,
) -> RetrievalSplit:
    """Load a split from parquet files (a Hub dataset's files, or ``Dataset.to_parquet``).

    Args:
        root: Dataset folder.
        split: Split name.
        name: Dataset name stamped on the split.
        files: Split name -> parquet file or glob, relative to root. Default: ``{split}.parquet``,
            ``{split}-*.parquet``, ``data/{split}-*.parquet`` or ``{split}/*.parquet``, the first that exists (with
            ``split_column``: every ``*.parquet`` of root, or of ``root/data``).
        image_column: The image column (Image struct, binary or path string); default the first of ``image``,
            ``img``, ``jpg``, ``png``, ``webp``, ``image_path``, ``filepath``, ``file_name``, ``filename``.
        caption_column: A string, a list of strings, or Karpathy ``sentences``; default the first of ``caption``,
            ``captions``, ``sentences``, ``text``, ``raw``.
        id_column: Rows with the same id are one image; default the first of ``image_id``, ``img_id``, ``cocoid``,
            ``id``, ``filename``, ``file_name``, else the image itself.
        folder_column: A column joined before path-string images (``filepath`` of Karpathy COCO uploads).
        split_column: Keep only rows whose value here is ``split`` (one file holding every split).
        image_dir: Folder path-string images are relative to; default root.
        restval_in_train: With ``split_column``, count ``restval`` rows as train (VSE++/VSE∞).

    Returns:
        The split, images in file and row order.
    """
    pa = _pyarrow()
    import pyarrow.parquet as pq

    paths = _parquet_files(root, split, files, split_column)
    segments = []
    for path in paths:
        try:
            schema = pq.read_schema(path)
            img = _pick(image_column, "image_column", IMAGE_COLUMNS, schema.names, str(path))
            kind = _image_kind(pa, schema.field(img).type, img, str(path))
            table = pq.read_table(path, columns=[c for c in schema.names if c != img or kind == "path"])
            embedded, image_paths, groups = _parquet_images(pq, path, img, kind)
        except (OSError, pa.ArrowException) as e:
            raise DataError(f"{path}: not a readable parquet file ({e})") from None
        segments.append(_Segment(path, "parquet", table, img, embedded, image_paths, schema.names, groups))
    return _build(segments, name=name, split=split, source=paths[0], root=root, image_dir=image_dir,
                  caption_column=caption_column, id_column=id_column, folder_column=folder_column,
                  split_column=split_column, restval_in_train=restval_in_train)  # fmt: skip


def _parquet_images(pq: Any, path: Path, column: str, kind: str) -> tuple[list[bool], list[Any], list[tuple[int, int]]]:
    """(embedded, path, (row group, row in it)) per row, one row group at a time so memory stays bounded by one
    group: a path column and the struct's ``path`` field are read alone, and the image bytes only of row groups
    whose statistics do not show every row embedded."""
    import pyarrow as pa

    meta = pq.ParquetFile(path)
    leaf = f"{column}.bytes" if kind == "struct" else column
    typ = meta.schema_arrow.field(column).type
    has_path = kind == "path" or (kind == "struct" and typ.get_field_index("path") >= 0)
    embedded: list[bool] = []
    paths: list[Any] = []
    where: list[tuple[int, int]] = []
    for g in range(meta.num_row_groups):
        rg = meta.metadata.row_group(g)
        where.extend((g, r) for r in range(rg.num_rows))
        if kind == "path":
            embedded.extend([False] * rg.num_rows)
        else:
            stats = next((rg.column(c).statistics for c in range(rg.num_columns)
                          if rg.column(c).path_in_schema == leaf), None)  # fmt: skip
            if stats is not None and stats.has_null_count and stats.null_count == 0:
                embedded.extend([True] * rg.num_rows)
            else:
                embedded.extend(_image_rows(meta.read_row_group(g, columns=[column]).column(column), kind)[0])
        if has_path:
            part = meta.read_row_group(g, columns=[column if kind == "path" else f"{column}.path"]).column(0)
            if pa.types.is_struct(part.type):  # the leaf comes back inside its struct
                import pyarrow.compute as pc

                part = pc.struct_field(part, "path")
            paths.extend(part.to_pylist())
        else:
            paths.extend([None] * rg.num_rows)
    return embedded, paths, where


def _load_from_disk(path: Path) -> Any:
    try:
        import datasets
    except ImportError:
        raise ConfigError("format 'hf_dataset' needs the datasets package: pip install 'itr-bench[hf]'") from None
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # a local folder; never reach for the Hub
    try:
        return datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise DataError(f"{path}: not a save_to_disk folder ({e})") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the saved dataset ({e})") from None


@register_format("hf_dataset")
def load_hf_dataset(
    root: Path,
    split: str,
    *,
    name: str = "hf_dataset",
    image_column: str | None = None,
    caption_column: str | None = None,
    id_column: str | None = None,
    folder_column: str | None = None,
    split_column: str | None = None,
    image_dir: str | None = None,
    restval_in_train: bool = True,
) -> RetrievalSplit:
    """Load a split of a Hugging Face dataset saved with ``save_to_disk`` (a ``DatasetDict`` folder: its split;
    a single ``Dataset``: ``split_column`` picks the rows, else it is the test split only).

    The options are those of ``format = "parquet"`` (:func:`load_parquet`); images are read from the folder's
    memory-mapped Arrow files.
    """
    pa = _pyarrow()
    saved = _load_from_disk(root)
    if hasattr(saved, "keys"):  # a DatasetDict
        if split not in saved:
            raise SplitNotFoundError(f"{root}: unknown split {split!r}; available splits: {', '.join(saved)}")
        saved = saved[split]
    elif split_column is None and split != "test":  # never train on the rows a cell is scored on
        raise SplitNotFoundError(f"{root}: a single saved Dataset is only a test split, not {split!r}; save a "
                                 "DatasetDict or set split_column")  # fmt: skip
    if saved._indices is not None:  # a select()/shuffle() saved without flatten_indices(); rows are not in file order
        saved = saved.flatten_indices()
    files = [Path(f["filename"]) for f in saved.cache_files]
    if not files:
        raise DataError(f"{root}: the saved dataset has no Arrow files")
    segments, start = [], 0
    table = saved.data.table
    img = _pick(image_column, "image_column", IMAGE_COLUMNS, table.column_names, str(root))
    kind = _image_kind(pa, table.schema.field(img).type, img, str(root))
    for path in files:
        try:
            with pa.memory_map(str(path)) as source:
                n = pa.ipc.open_stream(source).read_all().num_rows
        except (OSError, pa.ArrowException) as e:
            raise DataError(f"{path}: cannot read the Arrow file ({e})") from None
        part = table.slice(start, n)
        embedded, image_paths = _image_rows(part.column(img), kind)
        meta = part if kind == "path" else part.drop_columns([img])
        segments.append(_Segment(path, "arrow", meta, img, embedded, image_paths, table.column_names))
        start += n
    return _build(segments, name=name, split=split, source=root, root=root, image_dir=image_dir,
                  caption_column=caption_column, id_column=id_column, folder_column=folder_column,
                  split_column=split_column, restval_in_train=restval_in_train)  # fmt: skip
