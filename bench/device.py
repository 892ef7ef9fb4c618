"""Device names as users write them (``"auto"``, ``"cpu"``, ``"cuda:1"``) to ``torch.device``, checked up front."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["device_of"]


def device_of(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; any other string as ``torch.device`` takes it.

    Raises:
        ConfigError: the string names no device, or CUDA is asked for on a machine without it.
    """
    import torch

    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        out = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device {device!r}: {e}") from None
    if out.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available on this machine")
    return out
