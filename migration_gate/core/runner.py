"""Applying migrations: one transaction per file, recorded in the ledger, under an advisory lock."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psycopg

from migration_gate.core import corrections as corrections_ledger
from migration_gate.core import dsn, ledger
from migration_gate.core.corrections import Correction
from migration_gate.core.errors import LockTimedOut, MigrationFailed, PlanError
from migration_gate.core.locks import LOCK_NOT_AVAILABLE, LOCK_RETRY, LockRetry, LockWatch
from migration_gate.core.plan import Migration, Statement, select, split

# One key for every migration-gate runner, so two never interleave on one database.
ADVISORY_LOCK_KEY = 0x6D67_7261_7465  # "mgrate"

Progress = Callable[[str], None]

_PLPGSQL_LINE = re.compile(r"PL/pgSQL function inline_code_block line (\d+)")


@dataclass(frozen=True)
class StatementTiming:
    line: int
    seconds: float
    summary: str


@dataclass
class AppliedMigration:
    migration: Migration
    seconds: float
    statements: list[StatementTiming] = field(default_factory=list)


def statement_summary(sql: str) -> str:
    """The statement on one line, cut at 80 characters: how records name it."""
    return " ".join(sql.split())[:80]


def _failing_line(statement: Statement, error: psycopg.Error) -> int:
    """The file line of the failure: the error's position in the statement, or in its DO block."""
    diag = error.diag
    if diag.statement_position:
        position = int(diag.statement_position) - 1
        return statement.line + statement.sql.count("\n", 0, position)
    match = _PLPGSQL_LINE.search(diag.context or "")
    if match:
        return statement.line + int(match.group(1)) - 1
    return statement.line


def _pg_message(error: psycopg.Error) -> str:
    diag = error.diag
    message = f"{diag.severity or 'ERROR'}: {diag.message_primary or str(error).strip()}"
    if diag.message_detail:
        message += f" ({diag.message_detail})"
    return " ".join(message.split())


def execute_file(conn: psycopg.Connection, path: Path) -> list[StatementTiming]:
    """Run a SQL file that is not a migration (the legacy seed), statement by statement."""
    return execute_statements(conn, path.name, split(path.read_text(encoding="utf-8"), path.name))


def execute_statement(conn: psycopg.Connection, file_name: str, statement: Statement) -> StatementTiming:
    """Run one statement; a failure raises MigrationFailed naming the file's line."""
    started = time.perf_counter()
    try:
        conn.execute(statement.sql.encode("utf-8"))
    except psycopg.Error as error:
        raise MigrationFailed(
            file_name, _failing_line(statement, error), _pg_message(error), error.diag.sqlstate
        ) from None
    return StatementTiming(statement.line, time.perf_counter() - started, statement_summary(statement.sql))


def execute_statements(
    conn: psycopg.Connection, file_name: str, statements: list[Statement]
) -> list[StatementTiming]:
    return [execute_statement(conn, file_name, statement) for statement in statements]


class ApplyHook(Protocol):
    """Something a caller wants done around each statement of a migration (the bench's lock probes).

    The time a hook spends is left out of the migration's duration and its ledger row.
    """

    def before(self, conn: psycopg.Connection, migration: Migration) -> None:
        """In the migration's transaction, before its first statement (its time is the hooks')."""

    def after_statement(
        self, conn: psycopg.Connection, timing: StatementTiming, started: float, hooks_so_far: float
    ) -> None:
        """After each statement; ``started`` is its perf_counter start, ``hooks_so_far`` the hooks' time until then."""

    def after_commit(self, ended: float, hooks_total: float) -> None:
        """Once the migration's transaction (or savepoint) has ended."""


def apply(
    conn: psycopg.Connection,
    migration: Migration,
    hooks: Sequence[ApplyHook] = (),
    statements: list[Statement] | None = None,
) -> AppliedMigration:
    """The one code that executes a migration file and records it in the ledger.

    In its own transaction on an autocommit connection (the runner), or in a savepoint of
    the caller's transaction (the playbook's one transaction): either way the file and its
    ledger row stand or fall together.
    """
    started = time.perf_counter()
    timings: list[StatementTiming] = []
    with conn.transaction():
        hooks_started = time.perf_counter()
        for hook in hooks:
            hook.before(conn, migration)
        hooks_seconds = time.perf_counter() - hooks_started
        for statement in statements if statements is not None else migration.statements():
            statement_started = time.perf_counter()
            timing = execute_statement(conn, migration.file_name, statement)
            timings.append(timing)
            if hooks:
                hooks_started = time.perf_counter()
                for hook in hooks:
                    hook.after_statement(conn, timing, statement_started, hooks_seconds)
                hooks_seconds += time.perf_counter() - hooks_started
        ledger.record(conn, migration, (time.perf_counter() - started - hooks_seconds) * 1000)
    ended = time.perf_counter()
    for hook in hooks:
        hook.after_commit(ended, hooks_seconds)
    return AppliedMigration(migration, ended - started - hooks_seconds, timings)


def apply_correction(conn: psycopg.Connection, correction: Correction, after: int) -> float:
    """Run a correction and keep it in the ledger, together (a transaction, or a savepoint of the caller's).

    ``after`` is the last migration applied before it on this database: where
    ``schema_drift`` replays it. Its seconds.
    """
    started = time.perf_counter()
    with conn.transaction():
        execute_statements(conn, correction.name, correction.statements())
        corrections_ledger.record(conn, correction, after, (time.perf_counter() - started) * 1000)
    return time.perf_counter() - started


@dataclass(frozen=True)
class Corrected:
    """A correction ``correct`` applied: its seconds, and the migration it was recorded after."""

    seconds: float
    after: int


def correct(
    url: str, correction: Correction, *, lock_timeout: str = "0", progress: Progress = lambda line: None
) -> Corrected | None:
    """Apply one correction now (``migration-gate correct``): one transaction, under the runner's lock, recorded.

    None when it is applied already; an edited one, one for a database without a ledger, or
    one whose place (``-- after:``) the database has not reached yet is refused (PlanError).
    """
    with dsn.connect(url) as conn, advisory_lock(conn, progress):
        session_timeouts(conn, lock_timeout, "0")
        applied = ledger.read(conn)
        if not applied:
            raise PlanError(
                f"{dsn.describe(url)} has no migration_gate.ledger: migrate it, or adopt it with "
                "'migration-gate baseline', before correcting it; nothing was applied"
            )
        recorded = corrections_ledger.read(conn)
        corrections_ledger.verify([correction], recorded)
        if correction.name in recorded:
            return None
        at = max(applied)
        if correction.after is not None and correction.after > at:
            raise PlanError(
                f"correction {correction.name} belongs after {correction.after:03d}, and this database is at "
                f"{at:03d}: 'migrate --corrections-dir' or the playbook applies it there; nothing was applied"
            )
        return Corrected(apply_correction(conn, correction, at), at)


def apply_retrying(
    conn: psycopg.Connection,
    migration: Migration,
    hooks: Sequence[ApplyHook] = (),
    *,
    retry: LockRetry,
    watch: LockWatch | None = None,
    progress: Progress = lambda line: None,
) -> AppliedMigration:
    """``apply``, retried whole when a statement times out on a lock (the application holds it).

    Each attempt gives back every lock it took (its transaction or savepoint rolls back),
    so the application's queries queued behind it go on during the back-off. When the
    attempts or the budget are spent: LockTimedOut, naming the lock, the table and the
    session that held it (as ``watch`` saw them).
    """
    started = time.monotonic()
    for attempt in range(1, retry.attempts + 1):
        if watch is not None:
            watch.last = None
        try:
            return apply(conn, migration, hooks)
        except MigrationFailed as failed:
            if failed.sqlstate != LOCK_NOT_AVAILABLE:
                raise
            waited = watch.last if watch is not None else None
            what = waited.describe() if waited is not None else "a lock (the session holding it was not seen)"
            spent = time.monotonic() - started
            delay = retry.delay_after(attempt)
            if attempt == retry.attempts or spent + delay > retry.budget_seconds:
                raise LockTimedOut(
                    failed.file_name,
                    failed.line,
                    f"lock timeout: could not get {what}; gave up after {attempt} attempt(s) in {spent:.0f} s",
                ) from None
            progress(
                f"{migration.file_name}:{failed.line}: lock timeout waiting for {what}: "
                f"retrying in {delay:g} s (attempt {attempt + 1} of {retry.attempts})"
            )
            time.sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


def session_timeouts(conn: psycopg.Connection, lock_timeout: str, statement_timeout: str) -> None:
    """Bound every statement of the runner's session ('0' waits forever, as in PostgreSQL)."""
    conn.execute(
        "SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
        (lock_timeout, statement_timeout),
    )


@contextmanager
def advisory_lock(conn: psycopg.Connection, progress: Progress) -> Iterator[None]:
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()
    if not (row and row[0]):
        progress("waiting for another migration runner on this database to finish")
        conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
    try:
        yield
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))


def plan_run(
    plan: list[Migration],
    applied: dict[int, ledger.LedgerEntry],
    start: str | None = None,
    stop: str | None = None,
) -> list[Migration]:
    """What a run would apply, refusing (before anything runs) what cannot be applied in order."""
    wanted = select(plan, start, stop)
    ledger.verify(plan, applied)
    todo = [m for m in wanted if m.version not in applied]
    if todo:
        skipped = [m for m in ledger.pending(plan, applied) if m.version < todo[0].version]
        if skipped:
            raise PlanError(
                f"{skipped[0].file_name} is not applied yet: --from {todo[0].label} would skip it "
                f"(run from {skipped[0].label})"
            )
    for migration in todo:
        migration.statements()  # a file PostgreSQL's parser rejects is refused before anything runs
    return todo


def migrate(
    url: str,
    plan: list[Migration],
    start: str | None = None,
    stop: str | None = None,
    progress: Progress = lambda line: None,
    hooks: Sequence[ApplyHook] = (),
    lock_timeout: str = "0",
    statement_timeout: str = "0",
    retry: LockRetry = LOCK_RETRY,
    corrections: Sequence[Correction] = (),
) -> list[AppliedMigration]:
    """Apply the pending migrations of ``plan`` between ``start`` and ``stop`` to the database at ``url``.

    With a ``lock_timeout`` (PostgreSQL's syntax: ``5s``, ``500ms``; ``0`` waits forever),
    a migration that cannot get its locks in time is retried as ``retry`` says. Each
    correction not applied yet runs at its place (``corrections.schedule``), in a
    transaction of its own like a migration.
    """
    select(plan, start, stop)  # refuse a bad range before connecting
    with dsn.connect(url) as conn, advisory_lock(conn, progress):
        session_timeouts(conn, lock_timeout, statement_timeout)
        ledger.ensure(conn)
        applied = ledger.read(conn)
        todo = plan_run(plan, applied, start, stop)
        placed = corrections_ledger.schedule(corrections, corrections_ledger.read(conn), applied, todo)
        if not todo:
            progress("nothing to apply: every selected migration is already applied")
        done = []
        watching = LockWatch(url, conn.info.backend_pid) if lock_timeout != "0" else nullcontext(None)
        with watching as watch:
            apply_corrections(conn, placed.first, placed.start, progress)
            for migration in todo:
                result = apply_retrying(conn, migration, hooks, retry=retry, watch=watch, progress=progress)
                progress(f"{migration.file_name:<45} {result.seconds:8.3f} s")
                done.append(result)
                apply_corrections(conn, placed.following(migration.version), migration.version, progress)
        for waiting in placed.waiting:
            progress(f"correction {waiting.name} waits: its place is not reached by this run")
        return done


def apply_corrections(
    conn: psycopg.Connection, corrections: Sequence[Correction], after: int, progress: Progress
) -> list[tuple[Correction, float]]:
    """Each correction, in order, right after migration ``after``; each with its seconds."""
    done = []
    for correction in corrections:
        seconds = apply_correction(conn, correction, after)
        progress(f"{correction.name:<45} {seconds:8.3f} s  (correction: {correction.reason})")
        done.append((correction, seconds))
    return done
