"""The ledger: which migration files a database has applied, with the checksum they had then."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from migration_gate.core.errors import PlanError
from migration_gate.core.plan import Migration

LEDGER_TABLE = "migration_gate.ledger"

# What the gate keeps of whatever it applies, a migration or a correction: the same columns.
APPLIED_COLUMNS = b"""
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms numeric(12, 3) NOT NULL"""

CREATE_LEDGER = (
    b"CREATE TABLE IF NOT EXISTS migration_gate.ledger ("
    b"version integer PRIMARY KEY, file_name text NOT NULL," + APPLIED_COLUMNS + b")"
)


@dataclass(frozen=True)
class LedgerEntry:
    version: int
    file_name: str
    checksum: str
    applied_at: datetime
    duration_ms: float


def create(conn: psycopg.Connection, ddl: bytes) -> None:
    """One of the gate's own tables (``ddl``: CREATE TABLE IF NOT EXISTS), with its schema, in one transaction."""
    with conn.transaction():
        conn.execute(b"CREATE SCHEMA IF NOT EXISTS migration_gate")
        conn.execute(ddl)


def exists(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def ensure(conn: psycopg.Connection) -> None:
    create(conn, CREATE_LEDGER)


def read(conn: psycopg.Connection) -> dict[int, LedgerEntry]:
    """The applied migrations by version; an absent ledger is an empty one (nothing is created)."""
    if not exists(conn, LEDGER_TABLE):
        return {}
    rows = conn.execute(
        "SELECT version, file_name, checksum, applied_at, duration_ms::float8 FROM migration_gate.ledger"
    ).fetchall()
    return {row[0]: LedgerEntry(*row) for row in rows}


def head(conn: psycopg.Connection) -> str | None:
    """The file name of the last migration the ledger records (None: nothing applied)."""
    applied = read(conn)
    return applied[max(applied)].file_name if applied else None


def record(conn: psycopg.Connection, migration: Migration, duration_ms: float) -> None:
    conn.execute(
        "INSERT INTO migration_gate.ledger (version, file_name, checksum, duration_ms) VALUES (%s, %s, %s, %s)",
        (migration.version, migration.file_name, migration.checksum, round(duration_ms, 3)),
    )


# What a migration file can be, seen from the ledger. The runner refuses to run on any but
# APPLIED and PENDING; the ledger check fails on any but APPLIED.
APPLIED = "applied"
PENDING = "pending"
HOLE = "hole"
RENAMED = "renamed"
EDITED = "edited"
OUT_OF_ORDER = "out of order"
UNKNOWN = "unknown"
BLOCKING = frozenset({HOLE, RENAMED, EDITED, UNKNOWN})
_LABELS = {HOLE: "pending", EDITED: "edited after it was applied"}


@dataclass(frozen=True)
class LedgerLine:
    """One migration file, or one ledger entry without a file: its state and what to say about it."""

    version: int
    file_name: str
    state: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state == APPLIED

    def describe(self) -> str:
        label = _LABELS.get(self.state, self.state)
        return f"{label}: {self.detail}" if self.detail else label


def compare(plan: list[Migration], applied: dict[int, LedgerEntry]) -> list[LedgerLine]:
    """The one place the ledger's rules live: each file's state against the ledger, by version."""
    lines = []
    previous: LedgerEntry | None = None
    last_applied = max(applied, default=0)
    for migration in plan:
        entry = applied.get(migration.version)
        if entry is None:
            if migration.version < last_applied:
                line = LedgerLine(
                    migration.version,
                    migration.file_name,
                    HOLE,
                    "not applied, but later migrations are (a hole)",
                )
            else:
                line = LedgerLine(migration.version, migration.file_name, PENDING, "not applied")
        elif entry.file_name != migration.file_name:
            line = LedgerLine(
                migration.version, migration.file_name, RENAMED, f"the ledger applied it as {entry.file_name}"
            )
        elif entry.checksum != migration.checksum:
            line = LedgerLine(
                migration.version,
                migration.file_name,
                EDITED,
                f"ledger sha256 {entry.checksum[:12]}…, file {migration.checksum[:12]}…",
            )
        elif previous is not None and entry.applied_at < previous.applied_at:
            line = LedgerLine(
                migration.version,
                migration.file_name,
                OUT_OF_ORDER,
                f"applied at {entry.applied_at:%Y-%m-%d %H:%M:%S}, earlier than {previous.file_name}",
            )
        else:
            line = LedgerLine(migration.version, migration.file_name, APPLIED)
        if entry is not None:
            previous = entry
        lines.append(line)
    known = {migration.version for migration in plan}
    for version, entry in applied.items():
        if version not in known:
            lines.append(
                LedgerLine(
                    version, entry.file_name, UNKNOWN, "applied, but no such file in the migrations directory"
                )
            )
    return sorted(lines, key=lambda line: line.version)


def verify(plan: list[Migration], applied: dict[int, LedgerEntry]) -> None:
    """Refuse a ledger that disagrees with the files (drift, unknown versions, holes): the runner's rule."""
    for line in compare(plan, applied):
        if line.state not in BLOCKING:
            continue
        entry = applied.get(line.version)
        if line.state == UNKNOWN:
            raise PlanError(
                f"the ledger records {line.file_name} (version {line.version:03d}), which is not in the migrations directory"
            )
        if line.state in (RENAMED, EDITED) and entry is not None:
            checksum = next(m.checksum for m in plan if m.version == line.version)
            raise PlanError(
                f"{line.file_name} was edited after it was applied (ledger sha256 {entry.checksum[:12]}…, "
                f"file {checksum[:12]}…): restore the file or write a new migration"
            )
        raise PlanError(f"{line.file_name} is not applied but later migrations are: the ledger has a hole")


def pending(plan: list[Migration], applied: dict[int, LedgerEntry]) -> list[Migration]:
    return [m for m in plan if m.version not in applied]


# -- The runs of the playbook on this database ---------------------------------------------
# A row is written once the backup exists (autocommit, outside the window's transaction),
# so a run killed outright leaves it 'not_finished' for the next run to see. It is not part
# of what the fingerprint compares: it is the record of the window, not the database's.

RUNS_TABLE = "migration_gate.runs"
NOT_FINISHED = "not_finished"

CREATE_RUNS = b"""
CREATE TABLE IF NOT EXISTS migration_gate.runs (
    run_id      text PRIMARY KEY,
    command     text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    outcome     text NOT NULL,
    report_dir  text NOT NULL,
    backup      text NOT NULL,
    backend_pid integer,
    backend_start timestamptz
)
"""
# A journal an older migration-gate created lacks the holder's columns.
_ADD_HOLDER = (
    "ALTER TABLE migration_gate.runs ADD COLUMN IF NOT EXISTS backend_pid integer,"
    " ADD COLUMN IF NOT EXISTS backend_start timestamptz"
)
# The session that holds the run (operations.run_lock): pid and start tell a live run from a dead one.
_RUN_COLUMNS = (
    "run_id, command, started_at, report_dir, backup,"
    " (to_jsonb(r) ->> 'backend_pid')::int, (to_jsonb(r) ->> 'backend_start')::timestamptz"
)


@dataclass(frozen=True)
class RunEntry:
    run_id: str
    command: str
    started_at: datetime
    report_dir: str
    backup: str
    backend_pid: int | None = None  # the run's own session, while it runs (None: an older run)
    backend_start: datetime | None = None


def begin_run(
    conn: psycopg.Connection,
    run_id: str,
    command: str,
    report_dir: str,
    backup: str,
    holder_pid: int | None = None,
) -> list[RunEntry]:
    """Record this run as not finished; the earlier runs that never finished, now marked superseded.

    ``holder_pid`` is the session that holds the run: with its start time, it tells the next
    preflight whether this run is still alive.

    Only where the ledger's schema exists already: creating it here would be a change to the
    database outside the backup and the window.
    """
    if not conn.execute("SELECT to_regnamespace('migration_gate') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
        return []
    with conn.transaction():
        conn.execute(CREATE_RUNS)
        holder_columns = conn.execute(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'backend_pid'",
            (RUNS_TABLE,),
        ).fetchone()
        if not (holder_columns and holder_columns[0]):
            conn.execute(_ADD_HOLDER)
        rows = conn.execute(
            "UPDATE migration_gate.runs r SET outcome = %s WHERE outcome = %s RETURNING " + _RUN_COLUMNS,
            (f"{NOT_FINISHED} (superseded by {run_id})", NOT_FINISHED),
        ).fetchall()
        conn.execute(
            "INSERT INTO migration_gate.runs (run_id, command, outcome, report_dir, backup, backend_pid, backend_start)"
            " SELECT %s, %s, %s, %s, %s, pid, backend_start FROM (SELECT %s::int) AS holder(held_by)"
            " LEFT JOIN pg_stat_activity ON pid = held_by",
            (run_id, command, NOT_FINISHED, report_dir, backup, holder_pid),
        )
    return [RunEntry(*row) for row in rows]


def finish_run(conn: psycopg.Connection, run_id: str, outcome: str) -> None:
    if exists(conn, RUNS_TABLE):
        conn.execute(
            "UPDATE migration_gate.runs SET outcome = %s, finished_at = now() WHERE run_id = %s",
            (outcome, run_id),
        )


def unfinished_runs(conn: psycopg.Connection) -> list[RunEntry]:
    """Runs recorded here that never finished (read-only: for the preflight)."""
    if not exists(conn, RUNS_TABLE):
        return []
    rows = conn.execute(
        "SELECT " + _RUN_COLUMNS + " FROM migration_gate.runs r WHERE outcome = %s ORDER BY started_at",
        (NOT_FINISHED,),
    ).fetchall()
    return [RunEntry(*row) for row in rows]
