"""How long a migration holds ACCESS EXCLUSIVE on tables that existed before it: the application's outage.

Measured as the benchmark and the gate's summary report it, by a hook of the runner's
apply (``LockProbe``): after each statement, the session's own ``pg_locks`` rows name the pre-existing
tables it now holds in ACCESS EXCLUSIVE mode. A lock first seen after statement *k*
counts from the start of statement *k* (an upper bound: the statement may have taken it
late) until the commit, since a lock is held until the transaction ends. The probes' own
time (a catalog query per statement, a millisecond or so) is left out.

And what the runner waits for: with a ``lock_timeout``, a migration that cannot get its
locks gives up and is retried (``LockRetry``); ``LockWatch`` notes, from a second session,
which lock and whose session it was waiting for, so the one line at the end can say it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import psycopg

from migration_gate.core import dsn
from migration_gate.core.errors import GateError
from migration_gate.core.plan import Migration
from migration_gate.core.retry import Backoff

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
class LockProbe:
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
        self, conn: psycopg.Connection, timing: object, started: float, hooks_so_far: float
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


# -- Waiting for the application's locks ------------------------------------------------

LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's lock_not_available: the lock_timeout fired

_WAITING_FOR = """
SELECT l.mode, coalesce(l.relation::regclass::text, l.locktype) AS object
FROM pg_locks l
WHERE l.pid = %s AND NOT l.granted
LIMIT 1
"""
_BLOCKERS = """
SELECT a.pid, coalesce(nullif(a.application_name, ''), '-'), coalesce(a.usename::text, '-')
FROM pg_stat_activity a
WHERE a.pid = ANY (pg_blocking_pids(%s))
ORDER BY a.pid
"""


@dataclass(frozen=True)
class LockWait:
    """What a session was seen waiting for, and who held it."""

    mode: str
    relation: str
    blockers: tuple[tuple[int, str, str], ...]  # (pid, application name, user)

    def describe(self) -> str:
        held_by = "; ".join(
            f"pid {pid} (application {app!r}, user {user})" for pid, app, user in self.blockers
        )
        return f"{self.mode} on {self.relation}, held by {held_by or 'a session no longer visible'}"


class LockWatch:
    """A second session that notes what the runner's session waits for, so a lock timeout can name it.

    Polls ``pg_locks`` and ``pg_blocking_pids`` every ``interval`` seconds while it runs;
    ``last`` is the latest wait it saw (None: the runner never waited).
    """

    def __init__(self, url: str, pid: int, interval: float = 0.1) -> None:
        self.url, self.pid, self.interval = url, pid, interval
        self.last: LockWait | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="lock-watch", daemon=True)

    def __enter__(self) -> LockWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        try:
            with dsn.connect(self.url, application_name="migration-gate lock watch") as conn:
                while not self._stop.wait(self.interval):
                    waiting = conn.execute(_WAITING_FOR, (self.pid,)).fetchone()
                    if waiting is not None:
                        blockers = tuple(conn.execute(_BLOCKERS, (self.pid,)).fetchall())
                        self.last = LockWait(str(waiting[0]), str(waiting[1]), blockers)
        except (GateError, psycopg.Error):
            return  # watching is a courtesy: a lock timeout is still reported, just without names


@dataclass(frozen=True)
class LockRetry(Backoff):
    """How a migration that times out on a lock is retried: attempts in all, the first back-off (doubling), the budget."""

    budget_seconds: float = 120.0


# Five attempts, 1 + 2 + 4 + 8 s apart, within two minutes: "exits within a minute" at a 1 s lock timeout.
LOCK_RETRY = LockRetry()
