"""How long a migration holds ACCESS EXCLUSIVE on tables that existed before it: the application's outage.

Measured as the benchmark and the gate's summary report it, by a hook of the runner's
apply: after each statement, the session's own ``pg_locks`` rows name the pre-existing
tables it now holds in ACCESS EXCLUSIVE mode. A lock first seen after statement *k*
counts from the start of statement *k* (an upper bound: the statement may have taken it
late) until the commit, since a lock is held until the transaction ends. The probes' own
time (a catalog query per statement, a millisecond or so) is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from migration_gate.core.plan import Migration
from migration_gate.core.runner import ApplyHook, StatementTiming

# The tables' names as they were when the migration began: a migration may rename or drop them.
_PRE_EXISTING_TABLES = """
SELECT c.oid, c.oid::regclass::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname IN ('public', 'legacy_archive')
"""
_ACCESS_EXCLUSIVE_HELD = """
SELECT l.relation
FROM pg_locks l
WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock'
  AND l.granted AND l.relation = ANY (%s)
"""


@dataclass
class LockProbe(ApplyHook):
    """Per pre-existing table, the seconds a migration held it ACCESS EXCLUSIVE.

    ``held`` is the last migration's, after its commit; ``by_migration`` keeps every
    migration the probe has seen, by file name.
    """

    held: dict[str, float] = field(default_factory=dict)
    by_migration: dict[str, dict[str, float]] = field(default_factory=dict)
    _migration: str = ""
    _pre_existing: dict[int, str] = field(default_factory=dict)
    _first_held: dict[str, tuple[float, float]] = field(default_factory=dict)  # table → (start, hooks so far)

    def before(self, conn: psycopg.Connection, migration: Migration) -> None:
        self._migration = migration.file_name
        self._pre_existing = dict(conn.execute(_PRE_EXISTING_TABLES).fetchall())
        self._first_held = {}
        self.held = {}

    def after_statement(
        self, conn: psycopg.Connection, timing: StatementTiming, started: float, hooks_so_far: float
    ) -> None:
        for (oid,) in conn.execute(_ACCESS_EXCLUSIVE_HELD, (list(self._pre_existing),)):
            self._first_held.setdefault(self._pre_existing[oid], (started, hooks_so_far))

    def after_commit(self, ended: float, hooks_total: float) -> None:
        self.held = {
            table: ended - since - (hooks_total - before)
            for table, (since, before) in self._first_held.items()
        }
        self.by_migration[self._migration] = self.held

    @property
    def longest(self) -> tuple[str | None, float]:
        """The table held longest and for how long (``(None, 0.0)`` when none was)."""
        if not self.held:
            return None, 0.0
        table = max(self.held, key=lambda name: self.held[name])
        return table, self.held[table]
