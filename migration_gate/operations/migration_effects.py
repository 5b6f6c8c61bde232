"""What each migration of the playbook's one transaction did to the tables: locked, rewrote, wrote.

A hook of the runner's ``apply`` (``EffectsProbe``), read back once the migration's last
statement has run, still inside the run's transaction (``finish``):

* **locked**: each table that existed before the migration and that it took ACCESS
  EXCLUSIVE on, with the seconds from the statement that took it to the migration's end
  (``core.locks.LockProbe``). In one transaction a lock is held until the commit, so a
  table an earlier migration of the run already locked is that migration's, not this one's.
* **rewritten**: a table that existed before it and now has new storage
  (``relfilenode`` changed: a rewriting ALTER, TRUNCATE, CLUSTER) or whose name now
  belongs to a new table (008 writes ``activities`` anew, and the old one becomes
  ``legacy_archive.activity_payloads``).
* **renamed**: a table that existed before it and has another name (or schema) now.
* **rows**: the rows it inserted, updated and deleted per table, from the transaction's
  own statistics (``pg_stat_xact_user_tables``): counted by PostgreSQL as it went, no
  table is read. What moved to ``legacy_archive`` is there too.

Three catalog queries per migration and one per statement (the lock probe); the probe's
time is left out of the migration's seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from migration_gate.core.locks import LockProbe
from migration_gate.core.plan import Migration

# Tables of the schemas a migration works in (the gate's own ledger left out), by oid.
_TABLE_FILES = """
SELECT c.oid::bigint, n.nspname || '.' || c.relname, c.relfilenode::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('information_schema', 'migration_gate')
  AND n.nspname NOT LIKE 'pg\\_%'
"""
_ROWS_SO_FAR = """
SELECT s.relid::bigint, s.schemaname || '.' || s.relname, s.n_tup_ins, s.n_tup_upd, s.n_tup_del
FROM pg_stat_xact_user_tables s
WHERE s.schemaname <> 'migration_gate'
"""
_HELD = """
SELECT l.relation::bigint FROM pg_locks l
WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' AND l.granted
"""


@dataclass
class MigrationEffects:
    locked: dict[str, float] = field(default_factory=dict)  # table → seconds held (to the migration's end)
    rewritten: dict[str, str] = field(default_factory=dict)  # table → how
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # table → inserted/updated/deleted
    renamed: dict[str, str] = field(default_factory=dict)  # old name → new name (or schema)

    def to_json(self) -> dict[str, Any]:
        return {
            "locked": {table: round(seconds, 3) for table, seconds in sorted(self.locked.items())},
            "rewritten": dict(sorted(self.rewritten.items())),
            "rows": dict(sorted(self.rows.items())),
            "renamed": dict(sorted(self.renamed.items())),
        }


def _rows_so_far(conn: psycopg.Connection) -> dict[int, tuple[str, int, int, int]]:
    return {
        int(oid): (str(name), int(i), int(u), int(d)) for oid, name, i, u, d in conn.execute(_ROWS_SO_FAR)
    }


class EffectsProbe:
    """An ``ApplyHook``: around one migration, then ``finish`` for what it did (see the module)."""

    def __init__(self) -> None:
        self.locks = LockProbe()
        self._files: dict[int, tuple[str, int]] = {}
        self._rows: dict[int, tuple[str, int, int, int]] = {}
        self._held_before: set[int] = set()

    def before(self, conn: psycopg.Connection, migration: Migration) -> None:
        self.locks.before(conn, migration)
        self._files = {int(oid): (str(name), int(node)) for oid, name, node in conn.execute(_TABLE_FILES)}
        self._rows = _rows_so_far(conn)
        self._held_before = {int(row[0]) for row in conn.execute(_HELD)}

    def after_statement(
        self, conn: psycopg.Connection, timing: object, started: float, hooks_so_far: float
    ) -> None:
        self.locks.after_statement(conn, timing, started, hooks_so_far)

    def after_commit(self, ended: float, hooks_total: float) -> None:
        self.locks.after_commit(ended, hooks_total)

    def finish(self, conn: psycopg.Connection) -> MigrationEffects:
        """Read, in the run's transaction, what the migration just applied did (see the module)."""
        already = {self._files[oid][0] for oid in self._held_before if oid in self._files}
        effects = MigrationEffects(
            locked={
                _qualified(table): seconds
                for table, seconds in self.locks.held.items()
                if _qualified(table) not in already
            }
        )
        now = {int(oid): (str(name), int(node)) for oid, name, node in conn.execute(_TABLE_FILES)}
        by_name = {name: oid for oid, (name, _) in now.items()}
        for oid, (name, node) in self._files.items():
            if oid in now and now[oid][0] != name:
                effects.renamed[name] = now[oid][0]
            if oid in now and now[oid][1] != node:
                effects.rewritten[name] = "rewritten in place (new storage)"
            elif name in by_name and by_name[name] != oid:
                old = f"the old table is now {now[oid][0]}" if oid in now else "the old table was dropped"
                effects.rewritten[name] = f"replaced by a new table; {old}"
        for oid, (name, inserted, updated, deleted) in _rows_so_far(conn).items():
            _, i0, u0, d0 = self._rows.get(oid, (name, 0, 0, 0))
            counts = {"inserted": inserted - i0, "updated": updated - u0, "deleted": deleted - d0}
            if any(counts.values()):
                effects.rows[name] = counts
        return effects


def _qualified(table: str) -> str:
    """LockProbe names tables as ``oid::regclass`` prints them: unqualified when on the search path."""
    return table if "." in table else f"public.{table}"
