"""Built-in adapter families: one module per family, one import line each (timm style)."""

from adapters import blip, clip, embeddings, hf_clip, towers, vse_infty  # noqa: F401
