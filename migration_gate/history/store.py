"""Where the runs are kept: an SQLite file (the default, stdlib ``sqlite3``) or a PostgreSQL database.

**SQLite** suits one machine: the nightly job's own file. It runs in WAL mode (readers
never wait for the writer; synchronous=NORMAL) with a busy timeout, and each run is appended in one
``BEGIN IMMEDIATE`` transaction, so two runs appending at once (two jobs, or two
sessions) queue for a moment and neither loses anything. WAL needs the file on a local
disk, not a network share.

**PostgreSQL** suits a team: ``postgresql://…`` names a database kept for histories,
whose ``migration_gate_history`` schema holds the same tables. Each append is one
transaction under an advisory lock, which also lets the first two runs race to create
the schema safely. It may never be the database under test: a nightly run only reads
that one (``refuse_target``).

Opening refuses, with one line (exit 2) and nothing written: a file that is not SQLite,
an SQLite or PostgreSQL database that holds other things and no history, a corrupt
file, one locked for longer than the wait, and a history written by a newer
migration-gate. A history written by an older one is upgraded (``schema``), whole or not
at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg

from migration_gate.core import dsn
from migration_gate.core.errors import UsageError
from migration_gate.core.identity import DatabaseIdentity, identify
from migration_gate.history import schema
from migration_gate.history.record import Result, RunRecord, Target

# How long an append or a report waits for another writer before it gives up (exit 2).
LOCK_WAIT_SECONDS = 10.0
_ADVISORY_KEY = "migration_gate_history"  # hashed into the PostgreSQL advisory lock's key
_RUN_COLUMNS = (
    "id, run_id, kind, mode, target, host, port, database_name, system_identifier, server_version, "
    "ledger_head, started_at, finished_at, seconds, outcome, exit_status, profile_audit, roles"
)
_USER_RELATIONS = """
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
"""


def is_postgres(source: str) -> bool:
    return source.startswith(("postgresql://", "postgres://"))


class _SQLite:
    """The SQLite side: a file, WAL, one BEGIN IMMEDIATE per write."""

    prefix = ""
    generated_key = "INTEGER PRIMARY KEY"  # SQLite's rowid: numbered as runs are appended

    def __init__(self, path: Path, *, create: bool, lock_wait: float) -> None:
        self.path, self.lock_wait = path, lock_wait
        self.described = str(path)
        if path.is_dir():
            raise UsageError(f"history {path} is a directory: name a file")
        if not path.exists():
            if not create:
                raise UsageError(f"no history at {path}: a run with --history {path} creates it")
            _check_directory(path)
        mode = "rwc" if create else "rw"
        try:
            self.conn = sqlite3.connect(
                f"file:{quote(str(path.absolute()))}?mode={mode}",
                uri=True,
                timeout=lock_wait,
                isolation_level=None,  # autocommit: every transaction is begun here, explicitly
            )
        except sqlite3.Error as exc:
            raise self.refusal(exc) from None

    def refusal(self, exc: sqlite3.Error) -> UsageError:
        message = " ".join(str(exc).split())
        if "file is not a database" in message:
            return UsageError(f"{self.path} is not a history: it is not an SQLite database")
        if "malformed" in message or "corrupt" in message:
            return UsageError(
                f"history {self.path} is corrupt ({message}): restore a copy, or start a new file"
            )
        if "locked" in message or "busy" in message:
            return UsageError(
                f"history {self.path} is locked: another process held it for more than {self.lock_wait:g} s"
            )
        return UsageError(f"history {self.path}: {message}")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self.refusal(exc) from None

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        try:
            self.conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise self.refusal(exc) from None

    def holds(self) -> str | None:
        """``history_meta`` for a history, None when empty, else what the file holds."""
        tables = sorted(row[0] for row in self.query("SELECT name FROM sqlite_master WHERE type = 'table'"))
        if not tables or schema.META in tables:
            return schema.META if tables else None
        return "tables " + ", ".join(tables[:5]) + (", …" if len(tables) > 5 else "")

    def verify(self) -> None:
        """The file's pages are whole (``quick_check`` reads them all: milliseconds at a thousand runs)."""
        found = self.query("PRAGMA quick_check(1)")
        if found and found[0][0] != "ok":
            # SQLite heads its first finding with "*** in database main ***" and a newline: one line here.
            detail = " ".join(str(found[0][0]).replace("*** in database main ***", "").split())
            raise UsageError(
                f"history {self.path} is corrupt ({detail}): restore a copy, or start a new file"
            )

    @contextmanager
    def writing(self) -> Iterator[None]:
        # WAL outlives the connection (it is the file's mode); setting it again is a no-op. With
        # WAL, synchronous=NORMAL cannot corrupt the file; an operating system crash (not a
        # process crash) may lose the last appends. No fsync per commit: a disk busy with other
        # work does not stall a run's end for a tenth of a second.
        self._wal()
        self.query("PRAGMA synchronous = NORMAL")
        self.query(
            "BEGIN IMMEDIATE"
        )  # the write lock now, not at the first INSERT: no deadlock between two writers
        try:
            yield
        except BaseException:
            self.conn.rollback()
            raise
        self.query("COMMIT")

    def _wal(self) -> None:
        """WAL, once per file. Switching a new file to it takes an exclusive lock and SQLite does not
        wait for one (two runs creating one history at once: 'database is locked' at once), so it is
        retried here, within the same wait as any other lock."""
        if self.query("PRAGMA journal_mode")[0][0] == "wal":
            return
        deadline = time.monotonic() + self.lock_wait
        while True:
            try:
                self.conn.execute("PRAGMA journal_mode = WAL").fetchall()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise self.refusal(exc) from None
                time.sleep(0.02)

    def identity(self) -> DatabaseIdentity | None:
        return None  # a file is never the database under test

    def close(self) -> None:
        self.conn.close()


class _Postgres:
    """The PostgreSQL side: the ``migration_gate_history`` schema, one transaction per write."""

    prefix = f"{schema.PG_SCHEMA}."
    generated_key = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"

    def __init__(self, url: str, *, lock_wait: float) -> None:
        self.url, self.lock_wait = url, lock_wait
        self.described = dsn.describe(url)
        self.conn = dsn.connect(url, options=f"-c lock_timeout={int(lock_wait * 1000)}")

    def refusal(self, exc: psycopg.Error) -> UsageError:
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return UsageError(
                f"history {self.described} is locked: another run held it for more than {self.lock_wait:g} s"
            )
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return UsageError(f"history {self.described}: {dsn.scrub(first, self.url)}")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            # Without parameters, psycopg reads a % in the SQL (LIKE 'pg\\_toast%') as it is.
            cursor = self.conn.execute(sql.replace("?", "%s").encode(), params or None)
            return cursor.fetchall() if cursor.description is not None else []
        except psycopg.Error as exc:
            raise self.refusal(exc) from None

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        try:
            with self.conn.cursor() as cursor:
                cursor.executemany(sql.replace("?", "%s").encode(), rows)
        except psycopg.Error as exc:
            raise self.refusal(exc) from None

    def holds(self) -> str | None:
        """``history_meta`` for a history, None when empty, else what the database holds."""
        found = self.query("SELECT to_regclass(?) IS NOT NULL", (f"{schema.PG_SCHEMA}.{schema.META}",))
        if found[0][0]:
            return schema.META
        others = int(self.query(_USER_RELATIONS)[0][0])
        # Another database's relations are counted, not named: their names are not ours to print.
        return f"{others} relation(s) of its own" if others else None

    def verify(self) -> None:
        """PostgreSQL keeps its own pages whole."""

    @contextmanager
    def writing(self) -> Iterator[None]:
        # Appends queue on a session lock taken before the transaction begins: a transaction
        # that began earlier would still see the catalog of before another run created the
        # schema (its cached lookups are refreshed at the start of a transaction, not at an
        # advisory lock), and two first runs would both try to create it.
        self.query("SELECT pg_advisory_lock(hashtext(?))", (_ADVISORY_KEY,))
        try:
            with self.conn.transaction():
                yield
        except psycopg.Error as exc:
            raise self.refusal(exc) from None
        finally:
            with contextlib.suppress(psycopg.Error):  # a lost session has released it already
                self.conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (_ADVISORY_KEY,))

    def identity(self) -> DatabaseIdentity | None:
        return identify(self.conn)

    def close(self) -> None:
        self.conn.close()


def _check_directory(path: Path) -> None:
    parent = path.absolute().parent
    if not parent.is_dir():
        raise UsageError(f"history {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"history {path}: cannot write in {parent}")


class History:
    """An open history: its runs, appending one, and what was already posted about them."""

    def __init__(
        self,
        source: str,
        *,
        create: bool = False,
        lock_wait: float = LOCK_WAIT_SECONDS,
        target: DatabaseIdentity | None = None,
    ) -> None:
        """Open (``create``: or prepare to create) the history; ``target``: refuse it if it is that database."""
        self.source = source
        self.store: _SQLite | _Postgres = (
            _Postgres(source, lock_wait=lock_wait)
            if is_postgres(source)
            else _SQLite(Path(source), create=create, lock_wait=lock_wait)
        )
        try:
            if target is not None:  # first: the database under test is named as such, not as "not a history"
                self.refuse_target(target)
            self.version = self._version()
        except BaseException:
            self.store.close()
            raise

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.close()

    @property
    def described(self) -> str:
        return self.store.described

    def _version(self) -> int:
        """The schema version this history is at (0: nothing in it yet); refuses what is not a history."""
        holds = self.store.holds()
        if holds is None:
            return 0
        if holds != schema.META:
            raise UsageError(f"{self.described} is not a history: it holds {holds} and no {schema.META}")
        rows = dict(self.store.query(f"SELECT key, value FROM {self.store.prefix}{schema.META}"))
        if rows.get("format") != schema.FORMAT or not str(rows.get("schema_version", "")).isdigit():
            raise UsageError(f"{self.described} is not a history: its {schema.META} is not migration-gate's")
        version = int(rows["schema_version"])
        if version > schema.VERSION:
            raise UsageError(
                f"history {self.described} was written by a newer migration-gate (schema version {version}; "
                f"this one knows up to {schema.VERSION}): upgrade migration-gate to read it"
            )
        return version

    def verify(self) -> None:
        self.store.verify()

    def refuse_target(self, target: DatabaseIdentity) -> None:
        """A history database may never be the database under test, which a nightly run only reads."""
        mine = self.store.identity()
        if mine is None or mine.database != target.database:
            return
        same = (
            mine.system_identifier == target.system_identifier
            if mine.system_identifier and target.system_identifier
            else (mine.host, mine.port) == (target.host, target.port)
        )
        if same:
            raise UsageError(
                f"history {self.described} is the database under test ({target.database}): keep the history "
                "in a database of its own (or an SQLite file); the gate only reads the one it judges"
            )

    @contextmanager
    def writing(self) -> Iterator[None]:
        """One transaction, in which the schema is brought to this version first (created, or upgraded)."""
        with self.store.writing():
            self.version = self._version()  # again, inside the lock: another process may have written since
            if self.version < schema.VERSION:
                self._upgrade()
            yield

    def _upgrade(self) -> None:
        prefix = self.store.prefix
        if self.version == 0 and isinstance(self.store, _Postgres):
            self.store.query(f"CREATE SCHEMA IF NOT EXISTS {schema.PG_SCHEMA}")
        for statement in schema.statements(
            self.version, prefix=prefix, generated_key=self.store.generated_key
        ):
            self.store.query(statement)
        if self.version == 0:
            self.store.query(
                f"INSERT INTO {prefix}{schema.META} (key, value) VALUES ('format', ?)", (schema.FORMAT,)
            )
            self.store.query(f"INSERT INTO {prefix}{schema.META} (key, value) VALUES ('schema_version', '0')")
        self.store.query(
            f"UPDATE {prefix}{schema.META} SET value = ? WHERE key = 'schema_version'", (str(schema.VERSION),)
        )
        self.version = schema.VERSION

    def append(self, run: RunRecord) -> int:
        """Keep ``run``, in one transaction; its number in the history."""
        target, prefix = run.target, self.store.prefix
        with self.writing():
            row = self.store.query(
                f"INSERT INTO {prefix}runs (run_id, kind, series, mode, target, host, port, database_name,"
                " system_identifier, server_version, ledger_head, started_at, finished_at, seconds, outcome,"
                " exit_status, profile_audit, roles) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " RETURNING id",
                (
                    run.run_id, run.kind, target.series, target.mode, target.described, target.host, target.port,
                    target.database, target.system_identifier, target.server_version, run.ledger_head,
                    run.started_at, run.finished_at, run.seconds, run.outcome, run.exit_status,
                    json.dumps(run.profile_audit, sort_keys=True), json.dumps(run.roles, sort_keys=True),
                ),
            )  # fmt: skip
            number = int(row[0][0])
            self.store.executemany(
                f"INSERT INTO {prefix}results (run, kind, name, checkpoint, outcome, count, seconds)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (number, r.kind, r.name, r.checkpoint, r.outcome, r.count, round(r.seconds, 4))
                    for r in run.results
                ],
            )
        run.number = number
        return number

    def latest(self) -> RunRecord | None:
        if self.version == 0:
            return None
        rows = self.store.query(
            f"SELECT {_RUN_COLUMNS} FROM {self.store.prefix}runs ORDER BY id DESC LIMIT 1"
        )
        return _run(rows[0]) if rows else None

    def runs(self, series: str, last: int, names: Collection[str] | None = None) -> list[RunRecord]:
        """The last ``last`` runs of ``series``, oldest first, each with its results (of ``names`` only, when given).

        A report reads the results of the few checks it shows: loading every result of a
        thousand runs (71,000 rows) would be most of its time.
        """
        prefix = self.store.prefix
        rows = self.store.query(
            f"SELECT {_RUN_COLUMNS} FROM {prefix}runs WHERE series = ? ORDER BY id DESC LIMIT ?",
            (series, last),
        )
        runs = {row[0]: _run(row) for row in reversed(rows)}
        if not runs or (names is not None and not names):
            return list(runs.values())
        wanted = sorted(names or ())
        only = f" AND name IN ({', '.join('?' for _ in wanted)})" if wanted else ""
        for number, *fields in self.store.query(
            f"SELECT run, kind, name, checkpoint, outcome, count, seconds FROM {prefix}results"
            f" WHERE run IN (SELECT id FROM {prefix}runs WHERE series = ? AND id >= ?){only}",
            (series, min(runs), *wanted),
        ):
            runs[number].results.append(Result(*fields))
        return list(runs.values())

    def failing(self, series: str, since: int) -> tuple[set[str], dict[int, int]]:
        """The names of the checks that failed in the runs of ``series`` from run ``since``, and each run's failing results."""
        prefix = self.store.prefix
        rows = self.store.query(
            f"SELECT run, name FROM {prefix}results WHERE outcome IN ('failed', 'error')"
            f" AND run IN (SELECT id FROM {prefix}runs WHERE series = ? AND id >= ?)",
            (series, since),
        )
        return {str(name) for _, name in rows}, dict(Counter(int(run) for run, _ in rows))

    def run_count(self, series: str | None = None) -> int:
        """How many runs it holds (of ``series`` only, when given)."""
        if not self.version:
            return 0
        where, params = (" WHERE series = ?", (series,)) if series is not None else ("", ())
        return int(self.store.query(f"SELECT count(*) FROM {self.store.prefix}runs{where}", params)[0][0])

    def outcomes(
        self, key: tuple[str, str, str], series: str, up_to: int
    ) -> Iterator[tuple[int, str, str | None]]:
        """Each run of ``series`` up to run ``up_to``, newest first: its number, start and the check's outcome."""
        kind, name, checkpoint = key
        prefix = self.store.prefix
        rows = self.store.query(
            f"SELECT r.id, r.started_at, res.outcome FROM {prefix}runs r LEFT JOIN {prefix}results res"
            " ON res.run = r.id AND res.kind = ? AND res.name = ? AND res.checkpoint = ?"
            " WHERE r.series = ? AND r.id <= ? ORDER BY r.id DESC",
            (kind, name, checkpoint, series, up_to),
        )
        for number, started_at, outcome in rows:
            yield int(number), str(started_at), outcome

    def notified(self, keys: list[str]) -> set[str]:
        """Which of these changes were already posted."""
        if not keys or self.version < 2:
            return set()
        marks = ", ".join("?" for _ in keys)
        rows = self.store.query(
            f"SELECT change_key FROM {self.store.prefix}notifications WHERE change_key IN ({marks})", keys
        )
        return {row[0] for row in rows}

    def remember(self, key: str, run: int, posted_at: str, message: str) -> None:
        """A change was posted: asking again will not post it twice."""
        with self.writing():
            self.store.query(
                f"INSERT INTO {self.store.prefix}notifications (change_key, run, posted_at, message)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (change_key) DO NOTHING",
                (key, run, posted_at, message),
            )


def _run(row: tuple[Any, ...]) -> RunRecord:
    (
        number, run_id, kind, mode, described, host, port, database, system_identifier, server_version,
        ledger_head, started_at, finished_at, seconds, outcome, exit_status, profile_audit, roles,
    ) = row  # fmt: skip
    return RunRecord(
        kind=kind,
        target=Target(mode, described, host, port, database, system_identifier, server_version),
        started_at=started_at,
        finished_at=finished_at,
        seconds=float(seconds),
        outcome=outcome,
        exit_status=exit_status,
        ledger_head=ledger_head,
        profile_audit=json.loads(profile_audit),
        roles=json.loads(roles),
        run_id=run_id,
        number=int(number),
    )


def check(source: str, target: DatabaseIdentity | None = None, lock_wait: float = LOCK_WAIT_SECONDS) -> str:
    """Refuse, before a run starts, a source it could not append to; write nothing. Its description."""
    path = Path(source)
    if not is_postgres(source) and not path.exists():
        _check_directory(path)  # the file is created by the first append, not now
        return source
    with History(source, lock_wait=lock_wait, target=target) as history:
        return history.described
