"""Text escapes shared by the table formats: a name or note printed in a LaTeX or Markdown cell."""

from __future__ import annotations

import re

__all__ = ["latex_escape", "markdown_escape"]

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    # OT1 fonts (pdflatex's default) print < > | as other glyphs.
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
}
_LATEX_SPECIALS_RE = re.compile("|".join(re.escape(c) for c in _LATEX_SPECIALS))


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (pdflatex, OT1 fonts)."""
    return _LATEX_SPECIALS_RE.sub(lambda m: _LATEX_SPECIALS[m.group()], text)


def markdown_escape(text: str) -> str:
    """``text`` safe inside a pipe-table cell."""
    # A pipe would end the cell; a newline would end the row.
    return text.replace("|", r"\|").replace("\n", " ")
