"""A failed check: an AssertionError that carries what a person needs to act on it.

As in pytest-alembic, the failure is an ``AssertionError`` subclass with titled context
sections; as in dbt's data tests, those sections are the count, a capped sample of the
offending rows with their keys, and the SQL to run again by hand. pytest prints the
message (every section) under the failing test; the playbook's change record can keep
``sections`` as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


class CheckFailed(AssertionError):
    """``check`` found what must not be there; ``sections`` say how much, where, and how to look."""

    def __init__(
        self, check: str, summary: str, sections: Iterable[tuple[str, str]] = (), count: int | None = None
    ) -> None:
        self.check = check
        self.summary = summary
        self.count = count  # the offending rows, when the check counts rows
        self.sections = [(title, body.rstrip("\n")) for title, body in sections]
        super().__init__(self.render())

    def render(self) -> str:
        parts = [f"{self.check}: {self.summary}"]
        for title, body in self.sections:
            parts.append(f"---- {title} ----\n{body}")
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.render()


MAX_CELL = 120


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 3] + "..."


def format_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows as an aligned text table, NULL spelled out, long values cut."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(columns)]
    lines = [" | ".join(name.ljust(width) for name, width in zip(columns, widths, strict=True))]
    lines.append("-+-".join("-" * width for width in widths))
    lines += [" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def sample_section(count: int, columns: Sequence[str], sample: Sequence[Sequence[Any]]) -> tuple[str, str]:
    """The section of a failure that shows offending rows: all of them, or the first few of ``count``."""
    shown = f"first {len(sample)} of {count}" if count > len(sample) else "all"
    return f"offending rows ({shown})", format_rows(columns, sample)


def format_list(items: Iterable[str]) -> str:
    listed = sorted(items)
    return ", ".join(listed) if listed else "(none)"
