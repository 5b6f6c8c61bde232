"""What the session applied and found, for the terminal and for a pull request's page.

``--summary FILE`` (an ini option too; ``$GITHUB_STEP_SUMMARY`` when that is set) gets a
Markdown summary a reviewer reads on the CI page without opening the log: each
migration's duration, the ACCESS EXCLUSIVE locks each held on tables that existed
before it (measured on the gate's database as the bench measures them), what each
migration added, altered or dropped and, for each table it added, the rules that judged
it and how (docs/contract.md §8), every invariant's count at each checkpoint, the
exemptions, and the failed checks with their first lines. Under pytest-xdist a worker
hands what it applied to the controller as JSON, and the counts and rule outcomes travel
with each test's report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from migration_gate.core.exemptions import Exemption
from migration_gate.core.runner import AppliedMigration
from migration_gate.core.schema import Change
from migration_gate.core.text import cell, markdown_table
from migration_gate.operations.report import changes_markdown, exemptions_markdown, judged_new_tables

# The user property a catalog test leaves for an invariant: (name, checkpoint, offending rows).
INVARIANT_COUNT = "invariant_count"
# The user property a test leaves for each table it judges for a rule, at the last checkpoint:
# (rule, table, the named check's name or "" for the rule's own test); its outcome is the test's.
RULE_RESULT = "rule_result"


@dataclass
class AppliedRecord:
    """What one session applied: a title, each migration's seconds, locks and changes, extra lines."""

    title: str
    migrations: list[tuple[str, float]] = field(default_factory=list)
    locks: dict[str, dict[str, float]] = field(default_factory=dict)
    extra_lines: list[str] = field(default_factory=list)
    # Per migration, what it added, altered or dropped (core.schema.Change.to_json()).
    changes: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        title: str,
        applied: list[AppliedMigration],
        locks: dict[str, dict[str, float]] | None = None,
        extra_lines: list[str] | None = None,
        changes: dict[str, list[Change]] | None = None,
    ) -> AppliedRecord:
        return cls(
            title,
            [(result.migration.file_name, result.seconds) for result in applied],
            locks or {},
            extra_lines or [],
            {name: [change.to_json() for change in found] for name, found in (changes or {}).items()},
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
            {name: list(found) for name, found in data.get("changes", {}).items()},
        )

    def judged(self, results: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
        """Each migration's changes and, for each table it added, the rules' outcomes (``results``)."""
        return [
            {
                "file_name": name,
                "changes": self.changes.get(name, []),
                "new_tables": judged_new_tables(self.changes.get(name, []), results),
            }
            for name, _ in self.migrations
        ]


def invariant_counts(reports: list[pytest.TestReport]) -> dict[str, dict[str, int]]:
    """Checkpoint → invariant → offending rows, from the reports' user properties."""
    counts: dict[str, dict[str, int]] = {}
    for report in reports:
        for key, value in report.user_properties:
            if key == INVARIANT_COUNT:
                name, checkpoint, count = (str(part) for part in value)  # type: ignore[attr-defined]
                counts.setdefault(checkpoint, {})[name] = int(count)
    return dict(sorted(counts.items()))


def rule_results(reports: list[pytest.TestReport]) -> dict[str, dict[str, str]]:
    """Table → rule → passed, failed or skipped: <why>, from the reports of the tests that judged them.

    A named check that judges a table in a rule's stead says so: ``passed (not_null[credentials.workspace_id])``.
    """
    results: dict[str, dict[str, str]] = {}
    for report in reports:
        for key, value in report.user_properties:
            if key == RULE_RESULT:
                rule, table, via = (str(part) for part in value)  # type: ignore[attr-defined]
                outcome: str = report.outcome
                if report.skipped and isinstance(report.longrepr, tuple):  # "Skipped: <check>: <why>"
                    reason = str(report.longrepr[2]).removeprefix("Skipped: ")
                    outcome += ": " + reason.removeprefix(f"{via or f'{rule}[{table}]'}: ")
                results.setdefault(table, {})[rule] = outcome + (f" ({via})" if via else "")
    return results


def first_line(report: pytest.TestReport) -> str:
    """The failure's own first line (a check's is ``<name>: <what it found>``)."""
    crash = getattr(report.longrepr, "reprcrash", None)
    message = str(getattr(crash, "message", "") or report.longreprtext).strip()
    line = message.splitlines()[0] if message else "failed"
    return line.removeprefix("migration_gate.checks.failures.CheckFailed: ")


def markdown(
    applied: AppliedRecord | None,
    counts: dict[str, dict[str, int]],
    failed: list[pytest.TestReport],
    outcome: str,
    rules: dict[str, dict[str, str]] | None = None,
    exemptions: tuple[Exemption, ...] = (),
) -> str:
    """The pull request's summary of one gate run."""
    out = [f"## migration-gate: {outcome}", ""]
    if applied and applied.migrations:
        rows = []
        for name, seconds in applied.migrations:
            held = applied.locks.get(name, {})
            locks = ", ".join(
                f"{table} {held[table]:.3f} s" for table in sorted(held, key=lambda t: -held[t])
            )
            rows.append([f"`{name}`", f"{seconds:.3f}", locks or "none"])
        headers = ["migration", "seconds", "ACCESS EXCLUSIVE on existing tables"]
        out += [f"### Migrations ({applied.title})", "", *markdown_table(headers, rows, align="lrl"), ""]
    if applied:
        out += changes_markdown(applied.judged(rules or {}), heading="###")
    if counts:
        points = list(counts)
        names = sorted({name for by_name in counts.values() for name in by_name})
        offending = [[f"`{name}`", *(counts[point].get(name, "-") for point in points)] for name in names]
        out += ["### Invariants at each checkpoint (offending rows; must be 0)", ""]
        out += [*markdown_table(["invariant", *points], offending, align="l" + "r" * len(points)), ""]
    out += exemptions_markdown([exemption.to_json() for exemption in exemptions], heading="###")
    out += [f"### Failed checks ({len(failed)})", ""]
    out += [f"- `{report.nodeid}`: {cell(first_line(report))}" for report in failed] or ["none"]
    return "\n".join(out).rstrip() + "\n"


def write(path: Path, text: str, *, append: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", encoding="utf-8") as handle:
        handle.write(text)
