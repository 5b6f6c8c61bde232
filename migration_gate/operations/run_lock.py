"""One run at a time on a database: a run's claim from its preflight to its last record, and who holds it.

A second playbook started while one runs would back up a database the first is
rewriting (``pg_dump`` then dies with ``cache lookup failed for relation …``), or wait on
the runner's lock and migrate after it. Instead its preflight refuses, in one line that
names the run in the way and when it started:

* every playbook (and rehearsal) holds ``RUN_LOCK_KEY``, a session-level advisory lock, on
  a session of its own named ``migration-gate <command> <run id>`` from its preflight to its
  last record (``RunLock``): taken with ``pg_try_advisory_lock``, so two preflights cannot
  both get it;
* the migration runner's own lock (``core.runner.ADVISORY_LOCK_KEY``), held by
  ``migration-gate migrate`` or another run's migrations, refuses too;
* a run the journal (``migration_gate.runs``) says has not finished, and whose session
  (its pid and that backend's start time, recorded with it) is still connected, refuses
  as well: a run of an older migration-gate that held no run lock.

An advisory lock changes nothing in the database: the preflight stays free of writes.
"""

from __future__ import annotations

from datetime import datetime

import psycopg

from migration_gate.core import dsn, ledger
from migration_gate.core.errors import UsageError
from migration_gate.core.runner import ADVISORY_LOCK_KEY

# The runner's key plus one: "a run holds this database", beside "migrations are being applied".
RUN_LOCK_KEY = ADVISORY_LOCK_KEY + 1
APPLICATION_PREFIX = "migration-gate "

# Who holds an advisory lock of this database on a bigint key (split into classid/objid by PostgreSQL).
_HOLDERS = """
SELECT a.pid, coalesce(a.application_name, ''), a.backend_start, coalesce(a.usename::text, '-')
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = (%(key)s >> 32)::oid AND l.objid = (%(key)s & 4294967295)::oid AND l.objsubid = 1
ORDER BY a.backend_start
"""
_ALIVE = "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND backend_start = %s"


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S %Z}".strip()


def _holder(conn: psycopg.Connection, key: int) -> tuple[int, str, datetime, str] | None:
    row = conn.execute(_HOLDERS, {"key": key}).fetchone()
    return (int(row[0]), str(row[1]), row[2], str(row[3])) if row else None


def _run_id(application: str) -> str | None:
    """``migration-gate playbook 3f2a…`` → ``3f2a…``: a run's session says which run it is."""
    parts = application.split()
    return parts[2] if application.startswith(APPLICATION_PREFIX) and len(parts) == 3 else None


def other_run(conn: psycopg.Connection) -> str | None:
    """Why another run holds this database, in a sentence; None when none does (read-only)."""
    database = conn.info.dbname
    held = _holder(conn, RUN_LOCK_KEY)
    if held is not None:
        pid, application, started, user = held
        run = _run_id(application)
        what = (
            f"{application.split()[1]} run {run}"
            if run
            else f"a run ({application or 'no application name'})"
        )
        return f"another {what} holds {database}, started {_when(started)} (session pid {pid}, role {user})"
    held = _holder(conn, ADVISORY_LOCK_KEY)
    if held is not None:
        pid, application, started, user = held
        return (
            f"another migration runner holds {database}'s migration lock: session pid {pid} "
            f"({application or 'no application name'}, role {user}), connected since {_when(started)}"
        )
    for entry in ledger.unfinished_runs(conn):
        if entry.backend_pid is None or entry.backend_start is None:
            continue  # a run of an older migration-gate: the preflight warns of it instead
        if conn.execute(_ALIVE, (entry.backend_pid, entry.backend_start)).fetchone():
            return (
                f"another {entry.command} run {entry.run_id} has not finished on {database}, started "
                f"{_when(entry.started_at)}, and its session (pid {entry.backend_pid}) is still connected"
            )
    return None


def refusal(busy: str) -> UsageError:
    """The preflight's one line when another run holds the database."""
    return UsageError(f"{busy}: wait for it to finish (or stop it); nothing was changed")


class RunLock:
    """This run's claim on the database (see the module): a session holding ``RUN_LOCK_KEY`` until ``release``."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    @property
    def pid(self) -> int:
        return int(self.conn.info.backend_pid)

    @classmethod
    def take(cls, url: str, command: str, run_id: str) -> RunLock:
        """Hold the database for this run; UsageError (exit 2, nothing touched) when another run does."""
        conn = dsn.connect(url, application_name=f"{APPLICATION_PREFIX}{command} {run_id}")
        try:
            busy = other_run(conn)
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (RUN_LOCK_KEY,)).fetchone()
            if busy is None and not (got and got[0]):  # taken between the look and the lock
                busy = other_run(conn) or "another run holds this database"
            if busy is not None:
                raise refusal(busy)
        except BaseException:
            conn.close()
            raise
        return cls(conn)

    def release(self) -> None:
        """Closing the session gives the lock back (as a run killed outright does)."""
        self.conn.close()
