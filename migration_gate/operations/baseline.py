"""Adopting a database another runner migrated: record 001→N in the ledger without running them.

Staging reached 004 through the team's old ``run-migrations.js``, which kept no ledger of
ours. Before the gate will record 001→N as applied, it proves the database really is at
N: the same comparison as ``schema_drift`` (``core.drift``), against 001→N built on a
disposable server: tables, columns with their types, defaults and NOT NULLs,
constraints, indexes, views, functions, triggers, types and sequences. Any difference
refuses the baseline, and nothing is written. The disposable server is of the
database's own major when one is installed; otherwise the nearest, and the progress says
so (the schema reads the same on every supported major).
"""

from __future__ import annotations

from collections.abc import Callable

from migration_gate.core import drift, dsn, ledger, runner, schema
from migration_gate.core.errors import PlanError, UsageError
from migration_gate.core.plan import Migration, find

Progress = Callable[[str], None]


def baseline(
    url: str,
    plan: list[Migration],
    version: str,
    *,
    pg_ctl: str | None = None,
    pg_version: object = None,
    progress: Progress = lambda line: None,
) -> list[Migration]:
    """Record 001→``version`` as applied once the database is shown to be exactly at ``version``."""
    upto = find(plan, version, "--to")
    adopted = [m for m in plan if m.version <= upto.version]
    with dsn.connect(url) as conn:
        if ledger.read(conn):
            raise PlanError(
                "this database already has a ledger: migrate it; a baseline is only for adopting one"
            )
        server_major = conn.info.server_version // 10000
    reference = drift.Reference(pg_ctl=pg_ctl, pg_version=pg_version)
    expected = reference.expected(adopted, [], server_major, progress)
    with dsn.connect(url) as conn, runner.advisory_lock(conn, progress):
        if ledger.read(conn):
            raise PlanError("another runner created the ledger meanwhile: nothing recorded")
        found = schema.diff(expected.schema, schema.snapshot(conn))
        if found:
            raise UsageError(
                f"{dsn.describe(url)} is not exactly at {upto.file_name}, nothing recorded: "
                + drift.first_differences(found)
            )
        ledger.ensure(conn)
        with conn.transaction():
            for migration in adopted:
                ledger.record(conn, migration, 0.0)
    for migration in adopted:
        progress(f"{migration.file_name:<45} recorded as applied (baseline)")
    return adopted
