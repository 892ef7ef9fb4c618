"""Weight comparisons between two trainings that should agree up to float summation order."""

from __future__ import annotations

import torch

__all__ = ["gradient_bearing"]


def gradient_bearing(name: str, value: torch.Tensor) -> torch.Tensor:
    """``value`` without the attention key bias (the middle third of an ``in_proj_bias``).

    Softmax ignores a constant added to every key, so the key bias's gradient is zero up to float noise. Adam divides a
    gradient by its own magnitude, which turns that noise into steps of up to the learning rate whose size and sign
    depend on summation order, so two trainings agree on it only to about 1e-4. Every other weight is compared whole.
    """
    if name.endswith("attn.in_proj_bias"):
        third = value.numel() // 3
        return torch.cat([value[:third], value[2 * third :]])
    return value
