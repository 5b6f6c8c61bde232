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

_PRE_EXISTING_TABLES = """
SELECT c.oid
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname IN ('public', 'legacy_archive')
"""
_ACCESS_EXCLUSIVE_HELD = """
SELECT l.relation::regclass::text
FROM pg_locks l
WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock'
  AND l.granted AND l.relation = ANY (%s)
"""


@dataclass
class LockProbe(ApplyHook):
    """Per pre-existing table, the seconds one migration held it ACCESS EXCLUSIVE (``held``, after the commit)."""

    held: dict[str, float] = field(default_factory=dict)
    _pre_existing: list[int] = field(default_factory=list)
    _first_held: dict[str, tuple[float, float]] = field(default_factory=dict)  # table → (start, hooks so far)

    def before(self, conn: psycopg.Connection, migration: Migration) -> None:
        self._pre_existing = [row[0] for row in conn.execute(_PRE_EXISTING_TABLES)]
        self._first_held = {}
        self.held = {}

    def after_statement(
        self, conn: psycopg.Connection, timing: StatementTiming, started: float, hooks_so_far: float
    ) -> None:
        for (table,) in conn.execute(_ACCESS_EXCLUSIVE_HELD, (self._pre_existing,)):
            self._first_held.setdefault(table, (started, hooks_so_far))

    def after_commit(self, ended: float, hooks_total: float) -> None:
        self.held = {
            table: ended - since - (hooks_total - before)
            for table, (since, before) in self._first_held.items()
        }

    @property
    def longest(self) -> tuple[str | None, float]:
        """The table held longest and for how long (``(None, 0.0)`` when none was)."""
        if not self.held:
            return None, 0.0
        table = max(self.held, key=lambda name: self.held[name])
        return table, self.held[table]
