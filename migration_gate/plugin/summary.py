"""What the session applied and found, for the terminal and for a pull request's page.

``--summary FILE`` (an ini option too; ``$GITHUB_STEP_SUMMARY`` when that is set) gets a
Markdown summary a reviewer reads on the CI page without opening the log: each
migration's duration, the ACCESS EXCLUSIVE locks each held on tables that existed
before it (measured on the gate's database as the bench measures them), every
invariant's count at each checkpoint, and the failed checks with their first lines.
Under pytest-xdist a worker hands what it applied to the controller as JSON, and the
counts travel with each test's report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from migration_gate.core.runner import AppliedMigration

# The user property a catalog test leaves for an invariant: (name, checkpoint, offending rows).
INVARIANT_COUNT = "invariant_count"


@dataclass
class AppliedRecord:
    """What one session applied: a title, each migration's seconds and locks, extra lines."""

    title: str
    migrations: list[tuple[str, float]] = field(default_factory=list)
    locks: dict[str, dict[str, float]] = field(default_factory=dict)
    extra_lines: list[str] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        title: str,
        applied: list[AppliedMigration],
        locks: dict[str, dict[str, float]] | None = None,
        extra_lines: list[str] | None = None,
    ) -> AppliedRecord:
        return cls(
            title,
            [(result.migration.file_name, result.seconds) for result in applied],
            locks or {},
            extra_lines or [],
        )

    def terminal_lines(self) -> list[str]:
        return [f"{name:<45} {seconds:8.3f} s" for name, seconds in self.migrations] + self.extra_lines

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AppliedRecord:
        return cls(
            data["title"],
            [(str(name), float(seconds)) for name, seconds in data["migrations"]],
            {name: dict(held) for name, held in data["locks"].items()},
            list(data["extra_lines"]),
        )


def invariant_counts(reports: list[pytest.TestReport]) -> dict[str, dict[str, int]]:
    """Checkpoint → invariant → offending rows, from the reports' user properties."""
    counts: dict[str, dict[str, int]] = {}
    for report in reports:
        for key, value in report.user_properties:
            if key == INVARIANT_COUNT:
                name, checkpoint, count = (str(part) for part in value)  # type: ignore[attr-defined]
                counts.setdefault(checkpoint, {})[name] = int(count)
    return dict(sorted(counts.items()))


def first_line(report: pytest.TestReport) -> str:
    """The failure's own first line (a check's is ``<name>: <what it found>``)."""
    crash = getattr(report.longrepr, "reprcrash", None)
    message = str(getattr(crash, "message", "") or report.longreprtext).strip()
    line = message.splitlines()[0] if message else "failed"
    return line.removeprefix("migration_gate.checks.failures.CheckFailed: ")


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(
    applied: AppliedRecord | None,
    counts: dict[str, dict[str, int]],
    failed: list[pytest.TestReport],
    outcome: str,
) -> str:
    """The pull request's summary of one gate run."""
    out = [f"## migration-gate: {outcome}", ""]
    if applied and applied.migrations:
        out += [
            f"### Migrations ({applied.title})",
            "",
            "| migration | seconds | ACCESS EXCLUSIVE on existing tables |",
        ]
        out += ["| --- | ---: | --- |"]
        for name, seconds in applied.migrations:
            held = applied.locks.get(name, {})
            locks = ", ".join(
                f"{table} {held[table]:.3f} s" for table in sorted(held, key=lambda t: -held[t])
            )
            out.append(f"| `{name}` | {seconds:.3f} | {locks or 'none'} |")
        out.append("")
    if counts:
        points = list(counts)
        names = sorted({name for by_name in counts.values() for name in by_name})
        out += ["### Invariants at each checkpoint (offending rows; must be 0)", ""]
        out += ["| invariant | " + " | ".join(points) + " |", "| --- |" + " ---: |" * len(points)]
        for name in names:
            cells = [str(counts[point].get(name, "-")) for point in points]
            out.append(f"| `{name}` | " + " | ".join(cells) + " |")
        out.append("")
    out += [f"### Failed checks ({len(failed)})", ""]
    out += [f"- `{report.nodeid}`: {_cell(first_line(report))}" for report in failed] or ["none"]
    return "\n".join(out).rstrip() + "\n"


def write(path: Path, text: str, *, append: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", encoding="utf-8") as handle:
        handle.write(text)
