"""Text for people: an error's first line, and values as Markdown table cells."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def first_line(exc: BaseException) -> str:
    """An exception's first line, or its type's name when it has no message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def cell(value: Any) -> str:
    """A value as one cell of a Markdown table: no line break, no column separator."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> list[str]:
    """A Markdown table's lines; ``align`` is one of ``l``/``r`` per column (default left)."""
    rule = ["---:" if align[i : i + 1] == "r" else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return lines
