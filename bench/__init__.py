"""itr-bench: one harness for image-text retrieval research."""

from __future__ import annotations

__version__ = "0.1.0"
