"""The configuration reference as Markdown, generated from the section dataclasses of :mod:`bench.config.sections`:
every key with its type, its default and the comment beside its field (continuation comment lines included), so the
docs site's ``configuration.md`` cannot drift from what ``bench.toml`` accepts."""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import tokenize
import types
import typing
from typing import Any

from bench.config.sections import SECTIONS

__all__ = ["config_reference", "field_comments"]


def field_comments(cls: type) -> dict[str, str]:
    """The comment after each field of dataclass ``cls`` in its source, joined with the comment-only lines under it."""
    source = inspect.getsource(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, list[str]] = {}
    current: str | None = None
    line_start: str | None = None  # the field the current source line defines
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and tok.string in names:
            line_start = tok.string
        elif tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if line_start is not None:  # a trailing comment of a field's line
                current = line_start
                out.setdefault(current, []).append(text)
            elif current is not None and tok.start[1] == 4:  # a comment-only line continuing it
                out[current].append(text)
        elif tok.type == tokenize.NEWLINE:
            line_start = None
        elif tok.type == tokenize.NAME and tok.start[1] == 4 and line_start is None:
            current = None
    return {k: " ".join(v) for k, v in out.items()}


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " or ".join(json.dumps(a) for a in args)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return "none" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "(none)"
    return json.dumps(value, ensure_ascii=False)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


def config_reference() -> str:
    """Markdown: one section per ``[section]`` of ``bench.toml``, a table of its keys."""
    lines: list[str] = []
    for name, cls in SECTIONS.items():
        doc = inspect.getdoc(cls) or ""
        comments = field_comments(cls)
        lines += [f"## `[{name}]`", "", doc, "", "| key | type | default | meaning |", "|---|---|---|---|"]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind, default, meaning = _type_name(hints[f.name]), _toml(_default(f)), comments.get(f.name, "")
            lines.append(f"| `{f.name}` | {_cell(kind)} | `{_cell(default)}` | {_cell(meaning)} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
