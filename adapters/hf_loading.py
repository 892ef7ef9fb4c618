"""Loading pieces shared by the transformers-based families (``blip``, ``hf_clip``)."""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from bench.adapters.protocol import Exported
from bench.adapters.weights import refused

from bench.errors import ConfigError, WeightsUnavailableError

__all__ = ["ProcessorTransform", "export_pretrained", "hf_source", "loading_errors"]


class ProcessorTransform:
    """A processor's eval transform for one PIL image (a class, not a lambda, so DataLoader workers can pickle it)."""

    def __init__(self, image_processor: Any) -> None:
        self.image_processor = image_processor

    def __call__(self, image: Any) -> torch.Tensor:
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]


def hf_source(checkpoint: str) -> tuple[str, Path | None]:
    """What to pass to ``from_pretrained``, and the local folder when ``checkpoint`` is one.

    Raises:
        WeightsUnavailableError: ``checkpoint`` looks like a path (hub names are ``org/name``) but is no folder.
    """
    folder = Path(checkpoint).expanduser()
    if folder.is_dir():
        return str(folder), folder
    if checkpoint.startswith(("/", ".", "~")) or checkpoint.count("/") > 1:
        raise WeightsUnavailableError(f"weights unavailable: {checkpoint}; checkpoint folder {folder} not found")
    return checkpoint, None


def _unpickling_cause(e: BaseException) -> BaseException | None:
    # transformers wraps torch's refusal of a pickled .bin in its own errors; find it in the chain.
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, pickle.UnpicklingError) or "Weights only load failed" in str(e):
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


@contextlib.contextmanager
def loading_errors(checkpoint: str, folder: Path | None, what: str, hub_hint: str) -> Iterator[None]:
    """Turn a failed ``from_pretrained`` into one clear error: a bad local folder is a :class:`ConfigError`, a hub
    name that cannot be fetched is a :class:`WeightsUnavailableError`; a :class:`ConfigError` passes through."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as e:  # offline hub access and broken folders fail with many exception types
        cause = _unpickling_cause(e)
        if folder is not None and cause is not None:
            raise refused(folder, cause, "saving it as safetensors, or loading it with weights_only=False,") from None
        if folder is not None:
            raise ConfigError(
                f"{folder}: not a {what} checkpoint folder ({type(e).__name__}: {str(e)[:200]})"
            ) from None
        raise WeightsUnavailableError(
            f"weights unavailable: {checkpoint} ({type(e).__name__}); hub names need network or a cached copy, or "
            f"pass checkpoint = a local folder holding {hub_hint}"
        ) from None


def export_pretrained(model: Any, processor: Any, out: Path, family: str) -> Exported:
    """``bench export`` of a transformers family: a ``save_pretrained`` folder, the model (safetensors and config)
    and its processor."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    load = f"{type(model).__name__}.from_pretrained('{out}') and AutoProcessor.from_pretrained('{out}')"
    return Exported(load, {"adapter": family, "checkpoint": str(out)})
