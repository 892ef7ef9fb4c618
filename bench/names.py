"""File-system names: how a model, dataset or method id becomes a folder or file name. A base module, so the config
(which checks that no two ids share a folder) and the grid (which makes the folders) use one rule."""

from __future__ import annotations

import re

__all__ = ["safe_name"]


def safe_name(name: str) -> str:
    """A file-system safe form of a model or dataset name (like timm's ``safe_model_name``)."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") or "_"
