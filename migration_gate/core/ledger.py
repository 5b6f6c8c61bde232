"""The ledger: which migration files a database has applied, with the checksum they had then."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from migration_gate.core.errors import PlanError
from migration_gate.core.plan import Migration

LEDGER_TABLE = "migration_gate.ledger"

CREATE_LEDGER = b"""
CREATE SCHEMA IF NOT EXISTS migration_gate;
CREATE TABLE IF NOT EXISTS migration_gate.ledger (
    version     integer PRIMARY KEY,
    file_name   text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms numeric(12, 3) NOT NULL
)
"""


@dataclass(frozen=True)
class LedgerEntry:
    version: int
    file_name: str
    checksum: str
    applied_at: datetime
    duration_ms: float


def ensure(conn: psycopg.Connection) -> None:
    with conn.transaction():
        for statement in CREATE_LEDGER.split(b";"):
            conn.execute(statement)


def read(conn: psycopg.Connection) -> dict[int, LedgerEntry]:
    """The applied migrations by version; an absent ledger is an empty one (nothing is created)."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (LEDGER_TABLE,)).fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute(
        "SELECT version, file_name, checksum, applied_at, duration_ms::float8 FROM migration_gate.ledger"
    ).fetchall()
    return {row[0]: LedgerEntry(*row) for row in rows}


def record(conn: psycopg.Connection, migration: Migration, duration_ms: float) -> None:
    conn.execute(
        "INSERT INTO migration_gate.ledger (version, file_name, checksum, duration_ms) VALUES (%s, %s, %s, %s)",
        (migration.version, migration.file_name, migration.checksum, round(duration_ms, 3)),
    )


def verify(plan: list[Migration], applied: dict[int, LedgerEntry]) -> None:
    """Refuse a ledger that disagrees with the files: drift, unknown versions, holes."""
    by_version = {m.version: m for m in plan}
    for version in sorted(applied):
        entry = applied[version]
        migration = by_version.get(version)
        if migration is None:
            raise PlanError(
                f"the ledger records {entry.file_name} (version {version:03d}), which is not in the migrations directory"
            )
        if entry.checksum != migration.checksum or entry.file_name != migration.file_name:
            raise PlanError(
                f"{migration.file_name} was edited after it was applied (ledger sha256 {entry.checksum[:12]}…, "
                f"file {migration.checksum[:12]}…): restore the file or write a new migration"
            )
    for migration in plan:
        if migration.version > max(applied, default=0):
            break
        if migration.version not in applied:
            raise PlanError(
                f"{migration.file_name} is not applied but later migrations are: the ledger has a hole"
            )


def pending(plan: list[Migration], applied: dict[int, LedgerEntry]) -> list[Migration]:
    return [m for m in plan if m.version not in applied]
