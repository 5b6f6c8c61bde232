"""The ledger check: every migration applied, in order, with the checksum it has now.

Where the runner stops at the first problem (``ledger.verify``), this lists every file's
state by the same rules (``ledger.compare``), so one failure shows everything that is
pending, edited, renamed, unknown or out of order.
"""

from __future__ import annotations

import psycopg

from migration_gate.checks.failures import CheckFailed, format_rows
from migration_gate.core import ledger
from migration_gate.core.plan import Migration

LEDGER_SQL = "SELECT version, file_name, checksum, applied_at FROM migration_gate.ledger ORDER BY version;"


def check_ledger(
    conn: psycopg.Connection, plan: list[Migration], migrations_dir: str = ""
) -> list[ledger.LedgerLine]:
    """Fail unless every file of ``plan`` is applied, in order, unedited, and the ledger knows no other."""
    __tracebackhide__ = True
    lines = ledger.compare(plan, ledger.read(conn))
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
                        [(f"{line.version:03d}", line.file_name, line.describe()) for line in lines],
                    ),
                ),
                ("SQL to run again by hand", LEDGER_SQL + "\n-- then: sha256sum <migrations dir>/*.sql"),
            ],
        )
    return lines
