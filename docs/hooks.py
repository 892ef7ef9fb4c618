"""mkdocs hook: fills the generated parts of the docs (the CLI reference from the ``bench`` argument parser, the
configuration reference from the config dataclasses and the registries) at build time, so they cannot drift."""

from __future__ import annotations

from typing import Any

MARKERS = {
    "<!-- generated: cli -->": ("bench.cli.reference", "cli_reference"),
    "<!-- generated: config -->": ("bench.config.reference", "config_reference"),
    "<!-- generated: tables -->": ("bench.cli.reference", "tables_reference"),
}


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace each marker with the text its generator returns."""
    import importlib

    for marker, (module, name) in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, getattr(importlib.import_module(module), name)())
    return markdown
