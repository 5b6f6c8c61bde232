"""Per scale: bulk-loading a legacy volume at 004 (the floor) and applying 005→008, each timed.

For each scale (a number of activities; users are 1 in 20 of them, the rest follow the
generator's proportions), on a disposable server:

* ``load_s``: bulk-loading that legacy volume at 004 with ``migration-gate generate``
  (COPY): the floor, every row touched once;
* ``migrate_s``: 005→008, each migration in its own transaction as the runner applies
  it, and per migration the longest time an ACCESS EXCLUSIVE lock was held on a table
  that existed before that migration began;
* ``ratio``: ``migrate_s / load_s``.

How the lock is measured: ``migration_gate.core.locks`` (the same probe the gate's summary uses).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from migration_gate.core import dsn, ledger, runner
from migration_gate.core.locks import LockProbe
from migration_gate.core.plan import Migration
from migration_gate.core.server import DisposableServer
from migration_gate.data import volume

Progress = Callable[[str], None]

# Users per activity in every generated volume: the scale is a number of activities.
ACTIVITIES_PER_USER = 20
SLOWEST_STATEMENTS = 10


@dataclass(frozen=True)
class MigrationRun:
    file_name: str
    seconds: float
    lock_seconds: float  # longest ACCESS EXCLUSIVE on a pre-existing table, 0 when none
    lock_table: str | None
    statements: list[runner.StatementTiming] = field(default_factory=list)
    # Every pre-existing table held ACCESS EXCLUSIVE, and for how long: several often
    # tie (a foreign key's two tables are locked by the same statement).
    locks: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        slowest = sorted(self.statements, key=lambda s: s.seconds, reverse=True)[:SLOWEST_STATEMENTS]
        return {
            "seconds": round(self.seconds, 4),
            "access_exclusive_s": round(self.lock_seconds, 4),
            "access_exclusive_table": self.lock_table,
            "slowest_statements": [
                {"line": s.line, "seconds": round(s.seconds, 4), "sql": s.summary} for s in slowest
            ],
        }


@dataclass(frozen=True)
class ScaleRun:
    activities: int
    rows: int
    load_s: float
    migrations: list[MigrationRun]

    @property
    def migrate_s(self) -> float:
        return sum(m.seconds for m in self.migrations)

    @property
    def ratio(self) -> float:
        return self.migrate_s / self.load_s if self.load_s else float("inf")

    def as_json(self) -> dict[str, Any]:
        return {
            "activities": self.activities,
            "load_s": round(self.load_s, 4),
            "migrate_s": round(self.migrate_s, 4),
            "ratio": round(self.ratio, 4),
            "per_migration": {m.file_name: m.as_json() for m in self.migrations},
        }


def apply_measured(conn: psycopg.Connection, migration: Migration) -> MigrationRun:
    """Apply one migration with the runner, timing each statement and probing its locks."""
    probe = LockProbe()
    applied = runner.apply(conn, migration, hooks=[probe])
    table, seconds = probe.longest
    return MigrationRun(migration.file_name, applied.seconds, seconds, table, applied.statements, probe.held)


def run_scale(
    server: DisposableServer, plan: list[Migration], activities: int, seed: int, progress: Progress
) -> ScaleRun:
    with server.temporary_database(f"bench_{activities}") as url:
        runner.migrate(url, plan, stop="004")
        users = max(1, activities // ACTIVITIES_PER_USER)
        started = time.perf_counter()
        counts = volume.generate(url, users, activities, seed)
        load_s = time.perf_counter() - started
        rows = sum(counts.values())
        progress(
            f"{activities:>9} activities: loaded {rows} rows in {load_s:.3f} s ({rows / load_s:,.0f} rows/s)"
        )
        with dsn.connect(url) as conn:
            # As on staging: statistics known, and the load's pages on disk before the window opens.
            conn.execute("VACUUM ANALYZE")
            conn.execute("CHECKPOINT")
            ledger.ensure(conn)
            runs = []
            for migration in [m for m in plan if m.version > 4]:
                measured = apply_measured(conn, migration)
                progress(
                    f"{activities:>9} activities: {migration.file_name:<40} {measured.seconds:8.3f} s"
                    f"  (ACCESS EXCLUSIVE {measured.lock_seconds:.3f} s on {measured.lock_table or '-'})"
                )
                runs.append(measured)
        return ScaleRun(activities, rows, load_s, runs)


def median_run(runs: list[ScaleRun]) -> ScaleRun:
    """Several runs of one scale as one: the median load, and the run with the median migration time."""
    by_migrate = sorted(runs, key=lambda run: run.migrate_s)
    middle = by_migrate[(len(by_migrate) - 1) // 2]
    return ScaleRun(
        middle.activities, middle.rows, statistics.median(run.load_s for run in runs), middle.migrations
    )
