"""Webdataset shards in CLIP_benchmark's retrieval layout (``format = "webdataset"``).

CLIP_benchmark's ``webdataset_builder`` (and ``webdataset.ShardWriter`` generally) writes one sample per image:
``<key>.webp`` (or ``.png``, ``.jpg``) and ``<key>.txt`` holding all of the image's captions, one per line, in
uncompressed tar shards under ``<root>/<split>/``. Members group into samples by webdataset's own rule: the key is
the member path up to the first dot of its file name, the extension the rest, lower-cased.

Loading reads the tar headers and the caption members only. Each image becomes a
:class:`~bench.data.refs.TarMember` (shard, byte offset, size), so DataLoader workers seek to and decode one image
at a time: encoding streams the split, never holds its images in memory, and keeps the exact sample order.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

from bench.data.base import RetrievalSplit
from bench.data.gallery import GalleryBuilder
from bench.data.refs import TarMember
from bench.data.registry import register_format
from bench.errors import ConfigError, DataError, SplitNotFoundError

__all__ = ["IMAGE_KEYS", "load_webdataset", "shard_files", "split_key"]

IMAGE_KEYS = ("webp", "png", "jpg", "jpeg")  # CLIP_benchmark's order of preference
_KEY = re.compile(r"^((?:.*/|)[^./]+)[.]([^/]*)$")  # webdataset's base_plus_ext


def split_key(name: str) -> tuple[str, str] | None:
    """(sample key, extension) of a tar member name by webdataset's rule, or None for a name with no extension."""
    m = _KEY.match(name)
    return (m.group(1), m.group(2).lower()) if m else None


def _natural(path: Path) -> list[object]:
    # 0.tar, 1.tar, ..., 10.tar: the builder's names sort by number, not as strings
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def shard_files(root: Path, split: str, pattern: str) -> list[Path]:
    """The shard files of ``split`` (``pattern`` relative to root, ``{split}`` filled in), in natural order."""
    glob = pattern.format(split=split)
    found = sorted((p for p in root.glob(glob) if p.is_file()), key=_natural)
    if not found:
        have = sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.tar"))) if root.is_dir() else []
        hint = f"available splits: {', '.join(have)}" if have else "no folder of .tar shards there"
        raise SplitNotFoundError(f"{root / glob}: no shards for split {split!r}; {hint}")
    for p in found:
        if p.name.endswith((".gz", ".tgz", ".bz2", ".xz", ".zst")):
            raise DataError(f"{p}: compressed shards are not supported (images are read by offset); use plain .tar")
    return found


def _captions(tar: tarfile.TarFile, info: tarfile.TarInfo, where: str) -> list[str]:
    f = tar.extractfile(info)
    data = f.read() if f is not None else b""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not UTF-8 text (byte {e.start})") from None
    return [line for line in text.splitlines() if line.strip()]  # kept as written: the other forms do not strip


@register_format("webdataset")
def load_webdataset(
    root: Path,
    split: str,
    *,
    name: str = "webdataset",
    shards: str = "{split}/*.tar",
    image_keys: list[str] | None = None,
    caption_key: str = "txt",
) -> RetrievalSplit:
    """Load a split from webdataset shards, one sample per image with all its captions.

    Args:
        root: Dataset folder.
        split: Split name (the shard folder).
        name: Dataset name stamped on the split.
        shards: Glob of the split's shards relative to root; ``{split}`` is filled in. Shards are read in natural
            order (``2.tar`` before ``10.tar``).
        image_keys: Extensions that hold the image, first found wins; default ``webp``, ``png``, ``jpg``, ``jpeg``.
        caption_key: Extension of the caption member (UTF-8, one caption per line).

    Returns:
        The split; image ids are the sample keys, images in shard and sample order.
    """
    keys = [k.lower() for k in (image_keys or IMAGE_KEYS)]
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise ConfigError(f"option 'image_keys' must be a list of extensions, got {image_keys!r}")
    files = shard_files(root, split, shards)
    b = GalleryBuilder(files[0].parent)
    for shard in files:
        try:
            tar = tarfile.open(shard, mode="r:")
        except (tarfile.TarError, OSError) as e:
            raise DataError(f"{shard}: not a readable tar file ({e})") from None
        with tar:
            samples: dict[str, dict[str, tarfile.TarInfo]] = {}
            try:
                for info in tar:
                    parts = split_key(info.name) if info.isfile() else None
                    if parts is not None:
                        samples.setdefault(parts[0], {})[parts[1]] = info
            except (tarfile.TarError, OSError) as e:
                raise DataError(f"{shard}: corrupt tar ({e})") from None
            for key, members in samples.items():
                where = f"{shard}: sample {key!r}"
                image = next((members[k] for k in keys if k in members), None)
                if image is None:
                    have = ", ".join(sorted(members))
                    raise DataError(f"{where} has no image ({'/'.join(keys)}); it holds: {have}")
                if caption_key not in members:
                    raise DataError(f"{where} has no {caption_key!r} captions; it holds: {', '.join(sorted(members))}")
                caps = _captions(tar, members[caption_key], f"{shard}: {members[caption_key].name}")
                if not caps:
                    raise DataError(f"{shard}: {members[caption_key].name} holds no caption")
                ref = TarMember(shard, image.name, offset=image.offset_data, size=image.size)
                if key in b.index:
                    raise DataError(f"{where} repeats a key of {b.first_seen[b.index[key]]}")
                k = b.image(key, ref, key, where)
                b.captions[k].extend(caps)
    return b.build(name, split)
