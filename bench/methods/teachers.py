"""Frozen uni-modal teachers for soft-label methods, and their content-keyed, memory-mapped feature cache.

A teacher pair is an image model (timm) and a sentence model (sentence-transformers / transformers). Their features
are computed once per (teacher, revision, feature mode, preprocessing, dataset split content) and stored as
``<work_dir>/teachers/<dataset>-<split>-<modality>-<key>/{features.npy, index.json}``: an ``[N, D]`` float16 array
opened memory-mapped, with the id of every row. On load the index must name the same key, the same ids in the same
order and the array's shape; rows must be finite and non-zero. Anything else is rebuilt (never replaced by zeros, the
reference code's silent failure).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.config import TeachersConfig
from bench.data.base import RetrievalSplit
from bench.encode.cache import backbone_fingerprint, cache_path
from bench.encode.features import iter_image_batches
from bench.encode.refresh import must_rebuild, reusable
from bench.errors import ConfigError, DataError

__all__ = ["TeacherCacheError", "TeacherSpec", "check_spec", "load_or_build", "spec_dict", "teacher_features"]

log = logging.getLogger(__name__)
FEATURE_MODES = ("pooled", "patchflat")


class TeacherCacheError(DataError):
    """A teacher cache that cannot be used (and may not be rebuilt)."""


TeacherSpec = TeachersConfig  # the [teachers] table of bench.toml


def check_spec(spec: TeacherSpec) -> None:
    """Reject an unknown feature mode before anything is computed."""
    if spec.image_mode not in FEATURE_MODES:
        raise ConfigError(f"[teachers] image_mode {spec.image_mode!r}: valid: {', '.join(FEATURE_MODES)}")


class _ImageOnly(torch.nn.Module):
    """Adapter-shaped wrapper so a teacher tower can read the stage-1 feature cache a student already wrote."""

    def __init__(self, tower: Any) -> None:
        super().__init__()
        self.backbone = tower

    def modality_key(self, modality: str) -> str:
        return self.backbone.cache_key()

    def backbone_part(self, modality: str) -> torch.nn.Module:
        return self.backbone


def _pool(tower: Any, grid: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "patchflat":
        return grid.flatten(1)
    return tower.pool({"grid": grid})


@torch.inference_mode()
def _image_teacher(tower: Any, spec: TeacherSpec, split: RetrievalSplit, device: torch.device, batch_size: int,
                   stage1_cache: Path | None, progress: bool) -> np.ndarray:  # fmt: skip
    tower = tower.to(device).eval()
    if stage1_cache is not None:  # a student with the same tower may have cached its grid features already
        path = cache_path(_ImageOnly(tower), split, "image", stage1_cache)
        if path.is_file() and reusable(path):  # a forced run reads it only once it has rebuilt it
            try:
                grid = torch.load(path, map_location="cpu", weights_only=True)["grid"]
                if grid.shape[0] == split.n_images:
                    log.info("image teacher from stage-1 cache %s", path)
                    return _pool(tower, grid.float(), spec.image_mode).numpy()
            except Exception as e:  # unreadable: compute below
                log.warning("stage-1 cache %s unreadable (%s); encoding", path, e)
    out = []
    bar = tqdm(total=split.n_images, desc=f"image teacher {split.dataset}/{split.split}", disable=not progress,
               leave=False)  # fmt: skip
    for images in iter_image_batches(split, tower.transform(), batch_size):
        out.append(_pool(tower, tower(images.to(device))["grid"].float(), spec.image_mode).cpu())
        bar.update(len(images))
    bar.close()
    return torch.cat(out).numpy()


@torch.inference_mode()
def _text_teacher(tower: Any, split: RetrievalSplit, device: torch.device, batch_size: int,
                  progress: bool) -> np.ndarray:  # fmt: skip
    tower = tower.to(device).eval()
    caps, out = list(split.captions), []
    for s in tqdm(range(0, len(caps), batch_size), desc=f"text teacher {split.dataset}/{split.split}",
                  disable=not progress, leave=False):  # fmt: skip
        tokens = {k: v.to(device) for k, v in tower.tokenize(caps[s : s + batch_size]).items()}
        out.append(tower.pool(tower(tokens)).float().cpu())
    return torch.cat(out).numpy()


def _key(spec: TeacherSpec, modality: str, split: RetrievalSplit, weights: str) -> dict[str, Any]:
    if modality == "image":
        fields = {"model": spec.image_model, "weights": spec.image_weights, "mode": spec.image_mode}
        data = split.fingerprint("images")
    else:
        fields = {"model": spec.text_model, "max_length": spec.text_max_length}
        data = split.fingerprint("captions")
    return {"modality": modality, **fields, "weights_fingerprint": weights, "data": data, "version": 1}


def _build(spec: TeacherSpec, modality: str) -> Any:
    from bench.adapters.backbones import build_text_tower, build_timm_tower

    if modality == "image":
        if spec.image_model.startswith("unicom:"):  # the paper's image teacher, from a local checkpoint
            from bench.adapters.unicom import build_unicom_tower

            return build_unicom_tower(spec.image_model.split(":", 1)[1], spec.image_weights, spec.allow_pickle)
        return build_timm_tower(spec.image_model, spec.image_weights, allow_pickle=spec.allow_pickle)
    return build_text_tower(spec.text_model, spec.text_max_length)


def _weights_fingerprint(tower: Any, modality: str) -> str:
    # Hash the teacher's actual weights, so a re-released checkpoint under the same name never reuses rows.
    if modality == "image":
        return f"{tower.weights}:{backbone_fingerprint(tower)}:{tower.transform_key()}"
    return f"{backbone_fingerprint(tower)}:{tower.max_length}:{tower.pooling}"


def _check(folder: Path, key: dict[str, Any], ids: list[str]) -> np.ndarray:
    """The cached array, or a :class:`TeacherCacheError` saying what is wrong with it."""
    index_file, feat_file = folder / "index.json", folder / "features.npy"
    if not index_file.is_file() or not feat_file.is_file():
        raise TeacherCacheError(f"{folder}: incomplete teacher cache (index.json or features.npy missing)")
    try:
        index = json.loads(index_file.read_text())
    except json.JSONDecodeError as e:
        raise TeacherCacheError(f"{index_file}: unreadable ({e})") from None
    if index.get("key") != key:
        raise TeacherCacheError(f"{index_file}: built for another teacher or dataset ({index.get('key')})")
    if index.get("ids") != ids:
        raise TeacherCacheError(f"{index_file}: row ids differ from the split's")
    try:
        arr = np.load(feat_file, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise TeacherCacheError(f"{feat_file}: unreadable or truncated ({e})") from None
    if arr.ndim != 2 or arr.shape[0] != len(ids) or list(arr.shape) != index.get("shape"):
        raise TeacherCacheError(f"{feat_file}: shape {arr.shape}, expected {index.get('shape')} for {len(ids)} rows")
    block = np.asarray(arr, dtype=np.float32)
    if not np.isfinite(block).all():
        raise TeacherCacheError(f"{feat_file}: non-finite values")
    zero = np.flatnonzero(~block.any(axis=1))
    if zero.size:
        raise TeacherCacheError(f"{feat_file}: row {int(zero[0])} ({ids[int(zero[0])]!r}) is all zeros")
    return arr


def load_or_build(
    folder: Path, key: dict[str, Any], ids: list[str], compute: Any, *, rebuild: bool = True
) -> np.ndarray:
    """The memory-mapped cache in ``folder`` if it is valid for ``key`` and ``ids``; else rebuild it (or raise)."""
    folder = Path(folder)
    rebuild_now = must_rebuild(folder)  # a forced run computes it once, whatever is on disk
    if folder.exists() and not rebuild_now:
        try:
            arr = _check(folder, key, ids)
            log.info("teacher features from cache %s", folder)
            return arr
        except TeacherCacheError as e:
            if not rebuild:
                raise
            log.warning("%s; rebuilding", e)
    feats = np.asarray(compute(), dtype=np.float32)
    if feats.shape[0] != len(ids) or not np.isfinite(feats).all():
        raise TeacherCacheError(f"{folder}: teacher produced {feats.shape} / non-finite features for {len(ids)} rows")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        np.save(tmp / "features.npy", feats.astype(np.float16))
        (tmp / "index.json").write_text(json.dumps({"key": key, "ids": ids, "shape": list(feats.shape)}))
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not folder.exists():
                raise
            log.info("%s: written meanwhile by a concurrent job; using that copy", folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _check(folder, key, ids)


def teacher_features(
    spec: TeacherSpec,
    split: RetrievalSplit,
    work_dir: Path,
    *,
    device: torch.device,
    batch_size: int = 64,
    stage1_cache: Path | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Image-teacher rows ``[n_images, D_i]`` and text-teacher rows ``[n_captions, D_t]`` of ``split`` (memmaps)."""
    check_spec(spec)
    out = []
    for modality in ("image", "text"):
        tower = _build(spec, modality)  # one build: the weights hashed are the weights that compute
        key = _key(spec, modality, split, _weights_fingerprint(tower, modality))
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        folder = Path(work_dir) / "teachers" / f"{split.dataset}-{split.split}-{modality}-{digest}"
        if modality == "image":
            ids = list(map(str, split.image_ids))
            compute = functools.partial(_image_teacher, tower, spec, split, device, batch_size, stage1_cache, progress)
        else:
            ids = [f"{split.image_ids[i]}#{j}" for j, i in enumerate(split.caption_to_image)]
            compute = functools.partial(_text_teacher, tower, split, device, 2 * batch_size, progress)
        out.append(load_or_build(folder, key, ids, compute))
    return out[0], out[1]


def spec_dict(spec: TeacherSpec) -> dict[str, Any]:
    """The spec as a plain dict (for result records)."""
    return asdict(spec)
