"""The CLI reference as Markdown, generated from the ``bench`` argument parser itself, so the docs cannot drift from
what ``bench <command> --help`` says (the docs site's ``cli.md`` page is this text)."""

from __future__ import annotations

import argparse
import inspect
import json
import re
from typing import Any

__all__ = ["cli_reference", "tables_reference"]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    names = ", ".join(f"`{o}`" for o in action.option_strings)
    if action.nargs == 0:
        return names
    metavar = action.metavar or (
        "{" + ",".join(str(c) for c in action.choices) + "}" if action.choices else action.dest.upper()
    )
    return f"{names} `{metavar}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")


def _arguments(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        help_text = (action.help or "") % {"default": action.default, "prog": parser.prog} if action.help else ""
        if action.choices and action.option_strings and "{" not in _flags(action):
            help_text += f" (one of: {', '.join(map(str, action.choices))})"
        rows.append(f"| {_flags(action)} | {_cell(help_text)} |")
    if not rows:
        return []
    return ["| argument | what it does |", "|---|---|", *rows]


def _usage(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_usage().removeprefix("usage:").split())


def cli_reference(parser: argparse.ArgumentParser | None = None) -> str:
    """Markdown for every ``bench`` command: its usage line, description, arguments and examples."""
    if parser is None:
        from bench.cli.main import build_parser

        parser = build_parser()
    lines = [f"`{_usage(parser)}`", "", _cell(parser.description or ""), "", *_arguments(parser), ""]
    for name, sub in _subcommands(parser).items():
        lines += [f"## `bench {name}`", "", "```text", _usage(sub), "```", "", _cell(sub.description or ""), ""]
        lines += [*_arguments(sub), ""]
        if sub.epilog:
            epilog = sub.epilog.strip()
            if epilog.startswith("examples:"):
                examples = [ln.strip() for ln in epilog.removeprefix("examples:").splitlines() if ln.strip()]
                lines += ["Examples:", "", "```bash", *examples, "```", ""]
            else:
                lines += [_cell(epilog), ""]
    return "\n".join(lines).rstrip() + "\n"


def _defaults(params: dict[str, Any]) -> str:
    shown = []
    for name, default in params.items():
        if default is inspect.Parameter.empty:
            shown.append(f"`{name}` (required)")
        else:
            shown.append(f"`{name} = {_toml(default)}`")
    return ", ".join(shown) or "none"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    return json.dumps(value, ensure_ascii=False, default=str)


def _first_line(obj: Any) -> str:
    text = (inspect.getdoc(obj) or "").split("\n\n", 1)[0]
    return _cell(re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text))  # Sphinx roles read as code


def tables_reference() -> str:
    """Markdown for the free tables of ``bench.toml``: each adapter family's ``[models.<id>]`` options, each dataset
    format's ``[datasets.<id>]`` options and task, each method's ``[methods.<name>]`` options (plug-ins included)."""
    from bench.adapters.registry import adapter_options, get_adapter_class, list_adapters
    from bench.data import format_options
    from bench.data.registry import FORMATS, format_task, list_formats
    from bench.methods import get_method, list_methods
    from bench.methods.base import HARNESS_ARGS

    lines = ["## `[models.<id>]`: adapter families", "",
             "A model table names its family in `adapter`; the other keys are the family's `build` options "
             "(plus the grid keys `methods` and `train`).", "",
             "| adapter | what it is | options |", "|---|---|---|"]  # fmt: skip
    for name in list_adapters():
        cls = get_adapter_class(name)
        lines.append(f"| `{name}` | {_first_line(cls)} | {_cell(_defaults(adapter_options(name)))} |")
    lines += ["", "## `[datasets.<id>]`: dataset formats", "",
              "A dataset table names its `format` (default: the id); the other keys are the format's options.", "",
              "| format | task | what it reads | options |", "|---|---|---|---|"]  # fmt: skip
    for name in list_formats():
        opts = ", ".join(f"`{o}`" for o in format_options(name))
        lines.append(f"| `{name}` | `{format_task(name)}` | {_first_line(FORMATS.get(name))} | {opts} |")
    lines += ["", "## `[methods.<name>]`: methods", "", "| method | trains | what it does | options |",
              "|---|---|---|---|"]  # fmt: skip
    for name in list_methods():
        method = get_method(name)
        params = inspect.signature(method.objective).parameters
        opts = {p: v.default for p, v in params.items()
                if v.kind is inspect.Parameter.KEYWORD_ONLY and p not in HARNESS_ARGS}  # fmt: skip
        trains = "yes" if method.trains else "no"
        lines.append(f"| `{name}` | {trains} | {_first_line(type(method))} | {_cell(_defaults(opts))} |")
    return "\n".join(lines) + "\n"
