"""Adopting a database another runner migrated: record 001→N in the ledger without running them.

Staging reached 004 through the team's old ``run-migrations.js``, which kept no ledger of
ours. Before the gate will record 001→N as applied, it proves the database really is at
N: it builds 001→N on a disposable server and compares the two catalogs (schemas,
relations, columns with their types and NOT NULLs, constraints, indexes). Any difference
refuses the baseline, and nothing is written. The disposable server is of the database's
own major when one is installed; otherwise the nearest, and the progress says so (the
catalog rows are written to read the same on every supported major).
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from migration_gate.core import dsn, ledger, runner
from migration_gate.core.errors import PlanError, UsageError
from migration_gate.core.installations import installation_for
from migration_gate.core.plan import Migration, find
from migration_gate.core.server import DisposableServer

Progress = Callable[[str], None]

# What a migration creates, as comparable rows. Objects that belong to an extension, and
# the ledger's own schema, are not the migrations' doing. PostgreSQL 18 records each NOT NULL
# as a pg_constraint row (contype 'n'): attnotnull already says it on every major, so only
# what 18 adds to it (NOT VALID, NO INHERIT) is compared from there; names differ by major.
_CATALOG = """
WITH ours AS (
    SELECT n.oid, n.nspname FROM pg_namespace n
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'migration_gate')
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
      AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = n.oid AND d.deptype = 'e')
), rels AS (
    SELECT c.oid, s.nspname, c.relname, c.relkind FROM pg_class c JOIN ours s ON s.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'i', 'f')
      AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
)
SELECT 'schema ' || nspname FROM ours
UNION ALL
SELECT format('%s %s.%s', CASE relkind WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view'
              WHEN 'm' THEN 'materialized view' ELSE 'table' END, nspname, relname) FROM rels
UNION ALL
SELECT format('column %s.%s.%s %s%s', r.nspname, r.relname, a.attname, format_type(a.atttypid, a.atttypmod),
              CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END)
FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE r.relkind IN ('r', 'p', 'v', 'm', 'f')
UNION ALL
SELECT format('constraint %s.%s %s', r.nspname, con.conname, pg_get_constraintdef(con.oid))
FROM pg_constraint con JOIN rels r ON r.oid = con.conrelid
WHERE con.contype <> 'n'
UNION ALL
SELECT format('not null %s.%s %s', r.nspname, r.relname, pg_get_constraintdef(con.oid))
FROM pg_constraint con JOIN rels r ON r.oid = con.conrelid
WHERE con.contype = 'n' AND (NOT con.convalidated OR con.connoinherit)
"""


def catalog(conn: psycopg.Connection) -> set[str]:
    return {row[0] for row in conn.execute(_CATALOG.encode()).fetchall()}


def differences(expected: set[str], actual: set[str], limit: int = 5) -> list[str]:
    """What the database lacks and what it has beyond the reference, the first few of each."""
    missing = sorted(expected - actual)
    extra = sorted(actual - expected)
    lines = [f"missing: {item}" for item in missing[:limit]] + [
        f"not in the migrations: {item}" for item in extra[:limit]
    ]
    hidden = len(missing) + len(extra) - len(lines)
    return lines + ([f"… and {hidden} more"] if hidden > 0 else [])


def reference_catalog(
    plan: list[Migration],
    upto: Migration,
    server_major: int,
    pg_ctl: str | None,
    pg_version: object,
    progress: Progress,
) -> set[str]:
    """The catalog 001→``upto`` leaves, built on a disposable server of ``server_major`` when there is one."""
    installation, note = installation_for(server_major, pg_ctl, pg_version)
    if note:
        progress(note)
    progress(f"building 001→{upto.label} on a disposable {installation.describe()} to compare against")
    with DisposableServer(installation=installation) as server:
        url = server.create_database("baseline_reference")
        runner.migrate(url, plan, stop=upto.file_name)
        with dsn.connect(url) as conn:
            return catalog(conn)


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
    expected = reference_catalog(plan, upto, server_major, pg_ctl, pg_version, progress)
    with dsn.connect(url) as conn, runner.advisory_lock(conn, progress):
        if ledger.read(conn):
            raise PlanError("another runner created the ledger meanwhile: nothing recorded")
        found = differences(expected, catalog(conn))
        if found:
            raise UsageError(
                f"{dsn.describe(url)} is not exactly at {upto.file_name}, nothing recorded: "
                + "; ".join(found)
            )
        ledger.ensure(conn)
        with conn.transaction():
            for migration in adopted:
                ledger.record(conn, migration, 0.0)
    for migration in adopted:
        progress(f"{migration.file_name:<45} recorded as applied (baseline)")
    return adopted
