"""The ledger against the files: every migration applied, in order, with the checksum it has now.

Unlike ``ledger.verify`` (which stops a run at the first problem), this lists every file's
state, so one failure shows everything that is pending, edited, renamed, unknown or out
of order.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from migration_gate.checks.failures import CheckFailed, format_rows
from migration_gate.core import ledger
from migration_gate.core.plan import Migration

APPLIED = "applied"


@dataclass(frozen=True)
class LedgerLine:
    version: int
    file_name: str
    state: str  # "applied", or what is wrong

    @property
    def ok(self) -> bool:
        return self.state == APPLIED


def compare(plan: list[Migration], applied: dict[int, ledger.LedgerEntry]) -> list[LedgerLine]:
    """One line per migration file and per ledger entry without a file, by version."""
    lines = []
    previous: ledger.LedgerEntry | None = None
    for migration in plan:
        entry = applied.get(migration.version)
        if entry is None:
            state = "pending: not applied"
        elif entry.file_name != migration.file_name:
            state = f"renamed: the ledger applied it as {entry.file_name}"
        elif entry.checksum != migration.checksum:
            state = f"edited after it was applied: ledger sha256 {entry.checksum[:12]}…, file {migration.checksum[:12]}…"
        elif previous is not None and entry.applied_at < previous.applied_at:
            state = (
                f"out of order: applied at {entry.applied_at:%Y-%m-%d %H:%M:%S}, "
                f"earlier than {previous.file_name}"
            )
        else:
            state = APPLIED
        if entry is not None:
            previous = entry
        lines.append(LedgerLine(migration.version, migration.file_name, state))
    known = {migration.version for migration in plan}
    for version, entry in applied.items():
        if version not in known:
            lines.append(
                LedgerLine(
                    version, entry.file_name, "unknown: applied, but no such file in the migrations directory"
                )
            )
    return sorted(lines, key=lambda line: line.version)


LEDGER_SQL = "SELECT version, file_name, checksum, applied_at FROM migration_gate.ledger ORDER BY version;"


def check_ledger(
    conn: psycopg.Connection, plan: list[Migration], migrations_dir: str = ""
) -> list[LedgerLine]:
    """Fail unless every file of ``plan`` is applied, in order, unedited, and the ledger knows no other."""
    __tracebackhide__ = True
    lines = compare(plan, ledger.read(conn))
    wrong = [line for line in lines if not line.ok]
    if wrong:
        raise CheckFailed(
            "ledger",
            f"{len(wrong)} of {len(lines)} migration(s) not applied as the files say"
            + (f" ({migrations_dir})" if migrations_dir else ""),
            [
                (
                    "migrations",
                    format_rows(
                        ["version", "file", "state"],
                        [(f"{line.version:03d}", line.file_name, line.state) for line in lines],
                    ),
                ),
                ("SQL to run again by hand", LEDGER_SQL + "\n-- then: sha256sum <migrations dir>/*.sql"),
            ],
        )
    return lines
