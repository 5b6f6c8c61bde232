"""``schema_drift``: the database's schema is what its ledger's migrations and corrections build (docs/window.md).

Staging is fixed by hand between windows: an index made during an incident, a column
added for a report. Each is drift until it is written down as a correction, because the
same window on production will not have it. This check builds, on a disposable server,
what the ledger says this database ran (the migration files it applied, each
correction at the place it ran, from the text the ledger kept) and compares the two
schemas object by object (``core.drift``): every schema but the system's and
``migration_gate``; owners and grants aside (the grantee review judges them).

On the disposable gate database it asks something else of the same comparison: the gate
database holds the legacy seed and its build does not, so a migration whose schema
depends on the data it meets (an index made only when rows exist, a column typed from a
value) differs from its build on an empty database.
"""

from __future__ import annotations

import warnings

import psycopg

from migration_gate.checks.failures import CheckFailed
from migration_gate.core import corrections, drift, ledger, schema
from migration_gate.core.errors import MigrationFailed
from migration_gate.core.plan import Migration

NAME = "schema_drift"
TO_FIX = (
    "write each change made by hand down as a correction (a SQL file with a '-- reason:' line, "
    "docs/window.md) and apply it with 'migration-gate correct FILE --database URL', or undo it"
)


class BuiltOnAnotherMajor(UserWarning):
    """The expected schema was built on another PostgreSQL major than the database's (none of its own here)."""


def check_schema_drift(
    conn: psycopg.Connection, plan: list[Migration], reference: drift.Reference
) -> drift.Expected:
    """Fail with every difference between the database and what its ledger's migrations and corrections build."""
    __tracebackhide__ = True
    applied = ledger.read(conn)
    replayed = [applied_correction.correction() for applied_correction in corrections.read(conn).values()]
    actual = schema.snapshot(conn)
    migrations = [migration for migration in plan if migration.version in applied]
    try:
        expected = reference.expected(migrations, replayed, conn.info.server_version // 10000)
    except MigrationFailed as failed:
        raise CheckFailed(
            NAME,
            f"what the ledger records cannot be built on an empty database: {failed}",
            [("built from", drift.describe_build(migrations, replayed))],
        ) from None
    changes = schema.diff(expected.schema, actual)
    built = (
        f"{expected.built_from}, as this database's ledger records them, on an empty database of "
        f"{expected.server}" + (f" ({expected.note})" if expected.note else "")
    )
    edited = [m.file_name for m in migrations if applied[m.version].checksum != m.checksum]
    if edited:
        built += f"; from the files as they are now, though {', '.join(edited)} changed since (see the ledger check)"
    if changes:
        sections = [("differences", "\n".join(drift.phrase(change) for change in changes))]
        long_ones = drift.how_they_differ(changes)
        if long_ones:
            sections.append(("how they differ", long_ones))
        sections += [("expected schema", built), ("to fix", TO_FIX)]
        raise CheckFailed(
            NAME,
            f"{len(changes)} difference(s) from what its ledger's migrations and corrections build: "
            + drift.first_differences(changes),
            sections,
            count=len(changes),
        )
    if expected.note:
        warnings.warn(BuiltOnAnotherMajor(f"{NAME}: {expected.note}"), stacklevel=1)
    return expected
