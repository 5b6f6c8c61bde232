"""The history's store: what it keeps, what it refuses, and that two runs appending at once lose nothing.

SQLite behaviour is tested on SQLite files (the default store) and PostgreSQL behaviour on
databases of the disposable server; concurrency with real processes started together.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from migration_gate.core import dsn
from migration_gate.core.errors import UsageError
from migration_gate.core.identity import identify
from migration_gate.core.server import DisposableServer
from migration_gate.history import schema, store
from migration_gate.history.record import CHECK, EXISTING, Result, RunRecord, Target, now
from migration_gate.history.store import History
from tests.conftest import REPO, run_cli

STAGING = Target(EXISTING, "nightly@staging:5432/fluxolab", "staging", 5432, "fluxolab", "7301", "15.8")
# The scripts below append runs built like this one, in processes of their own.
RUN_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from migration_gate.history.record import EXISTING, Result, RunRecord, Target, now
    from migration_gate.history.store import History

    source, runs, start_at = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    target = Target(EXISTING, "nightly@staging:5432/fluxolab", "staging", 5432, "fluxolab", "7301", "15.8")
    while time.time() < start_at:  # every process begins at once
        time.sleep(0.001)
    for _ in range(runs):
        results = [Result("check", f"check_{i}", "current", "passed", 0, 0.01) for i in range(40)]
        with History(source, create=True) as history:
            history.append(RunRecord("gate", target, now(), now(), 1.0, "passed", 0, "008_x.sql", results))
    """
)


def make_run(*results: Result, target: Target = STAGING, **fields: object) -> RunRecord:
    values: dict[str, object] = {
        "kind": "gate",
        "target": target,
        "started_at": now(),
        "finished_at": now(),
        "seconds": 3.2,
        "outcome": "failed" if any(r.failing for r in results) else "passed",
        "exit_status": 1 if any(r.failing for r in results) else 0,
        "ledger_head": "008_webhooks_activities_alignment.sql",
        "results": list(results),
    }
    return RunRecord(**{**values, **fields})  # type: ignore[arg-type]


def check(name: str, outcome: str = "passed", count: int | None = 0) -> Result:
    return Result(CHECK, name, "current", outcome, count, 0.01)


def appended_at_once(source: str, processes: int, runs: int) -> None:
    start_at = time.time() + 1.5  # after every interpreter has started
    started = [
        subprocess.Popen([sys.executable, "-c", RUN_SCRIPT, source, str(runs), str(start_at)], cwd=REPO)
        for _ in range(processes)
    ]
    assert [process.wait(timeout=120) for process in started] == [0] * processes


# -- What a run keeps ---------------------------------------------------------------------


def test_a_run_is_kept_whole_and_read_back_as_it_was(tmp_path: Path) -> None:
    source = str(tmp_path / "nightly.sqlite")
    run = make_run(
        check("credentials_outside_member_workspace", "failed", 1),
        Result("smoke", "test_webhooks::test_delivery", "", "skipped", None, 0.0),
        profile_audit={"current": {"owner": 120, "admin": 3}},
        roles={"superuser": ["postgres"], "login": ["nightly", "postgres"]},
    )
    with History(source, create=True) as history:
        number = history.append(run)
    with History(source) as history:
        history.verify()
        latest = history.latest()
        kept = history.runs(STAGING.series, 10)
    assert latest is not None and latest.number == number == 1
    assert (latest.target, latest.ledger_head, latest.profile_audit, latest.roles) == (
        STAGING,
        run.ledger_head,
        run.profile_audit,
        run.roles,
    )
    assert sorted(kept[0].results, key=lambda r: r.name) == sorted(run.results, key=lambda r: r.name)


def test_checking_a_new_file_writes_nothing_and_the_first_append_creates_it_at_the_current_version(
    tmp_path: Path,
) -> None:
    path = tmp_path / "nightly.sqlite"
    assert store.check(str(path)) == str(path)
    assert not path.exists()
    with History(str(path), create=True) as history:
        history.append(make_run(check("a")))
    with sqlite3.connect(path) as conn:
        meta = dict(conn.execute("SELECT key, value FROM history_meta").fetchall())
        mode = conn.execute("PRAGMA journal_mode").fetchone()
    assert meta == {"format": schema.FORMAT, "schema_version": str(schema.VERSION)}
    assert mode == ("wal",)


# -- Two runs at once ---------------------------------------------------------------------


def test_processes_appending_to_one_sqlite_file_at_once_lose_nothing(tmp_path: Path) -> None:
    source = str(tmp_path / "nightly.sqlite")
    appended_at_once(source, processes=4, runs=15)
    with sqlite3.connect(source) as conn:
        runs = conn.execute("SELECT count(*), count(DISTINCT run_id), max(id) FROM runs").fetchone()
        results = conn.execute("SELECT count(*) FROM results").fetchone()
    assert runs == (60, 60, 60)
    assert results == (60 * 40,)


def test_processes_appending_to_one_postgresql_history_at_once_lose_nothing(fresh_database: str) -> None:
    # The history's schema does not exist yet: the first appends also race to create it.
    appended_at_once(fresh_database, processes=4, runs=15)
    with dsn.connect(fresh_database) as conn:
        runs = conn.execute(
            "SELECT count(*), count(DISTINCT run_id) FROM migration_gate_history.runs"
        ).fetchone()
        results = conn.execute("SELECT count(*) FROM migration_gate_history.results").fetchone()
    assert runs == (60, 60)
    assert results == (60 * 40,)


# -- What it refuses, writing nothing -----------------------------------------------------


def refused(source: str, match: str, **options: object) -> None:
    with pytest.raises(UsageError, match=match) as raised, History(source, **options):  # type: ignore[arg-type]
        pass
    assert "\n" not in str(raised.value)


def test_a_file_that_is_not_sqlite_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a history\n")
    refused(str(path), "notes.txt is not a history: it is not an SQLite database", create=True)
    assert path.read_text() == "not a history\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_an_sqlite_database_of_something_else_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id integer primary key, total real)")
    before = path.read_bytes()
    refused(
        str(path), r"app.sqlite is not a history: it holds tables invoices and no history_meta", create=True
    )
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.sqlite"]


def test_a_corrupt_history_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nightly.sqlite"
    with History(str(path), create=True) as history:
        for _ in range(60):  # a few pages
            history.append(make_run(*(check(f"check_{i}") for i in range(40))))
    with path.open("r+b") as handle:
        handle.seek(4096 * 3)
        handle.write(b"\xde\xad\xbe\xef" * 1024)
    with (
        pytest.raises(UsageError, match=r"nightly.sqlite is corrupt \(.+\): restore a copy") as raised,
        History(str(path)) as history,
    ):
        history.verify()
        history.runs(STAGING.series, 100)
    assert "\n" not in str(raised.value)
    run = run_cli("history", str(path))
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.output
    assert "nightly.sqlite is corrupt" in run.stderr and "Traceback" not in run.output


def test_a_history_locked_longer_than_the_wait_is_refused_and_nothing_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "nightly.sqlite"
    with History(str(path), create=True) as history:
        history.append(make_run(check("a")))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another run, in the middle of its append
    try:
        started = time.perf_counter()
        with (
            pytest.raises(
                UsageError, match=r"nightly.sqlite is locked: another process held it for more than 0.3 s"
            ),
            History(str(path), create=True, lock_wait=0.3) as history,
        ):
            history.append(make_run(check("a")))
        assert time.perf_counter() - started < 5
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with History(str(path)) as history:
        assert history.run_count() == 1


def test_a_history_written_by_a_newer_migration_gate_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nightly.sqlite"
    with History(str(path), create=True) as history:
        history.append(make_run(check("a")))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE history_meta SET value = '99' WHERE key = 'schema_version'")
    refused(
        str(path),
        rf"written by a newer migration-gate \(schema version 99; this one knows up to {schema.VERSION}\)",
    )


def test_a_missing_history_is_not_created_by_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "nightly.sqlite"
    refused(str(path), "no history at .*nightly.sqlite: a run with --history .* creates it")
    assert not path.exists()
    with pytest.raises(UsageError, match=r"directory .*absent does not exist"):
        store.check(str(tmp_path / "absent" / "nightly.sqlite"))


def test_a_postgresql_database_holding_other_things_is_not_a_history(
    fresh_database: str, disposable_server: DisposableServer
) -> None:
    with dsn.connect(fresh_database) as conn:
        conn.execute("CREATE TABLE public.invoices (id int)")
    refused(fresh_database, r"is not a history: it holds 1 relation\(s\) of its own and no history_meta")
    with dsn.connect(fresh_database) as conn:
        schemas = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema.PG_SCHEMA,)
        ).fetchone()
    assert schemas == (0,)


def test_the_database_under_test_is_never_the_history(fresh_database: str) -> None:
    with dsn.connect(fresh_database) as conn:
        under_test = identify(conn)
    with pytest.raises(UsageError, match=rf"is the database under test \({under_test.database}\)"):
        store.check(fresh_database, under_test)


# -- An older history is read, then migrated, never lost ---------------------------------

# The history as migration-gate wrote it at schema version 1 (SQLite), frozen here: what a
# user's file holds, whatever the code's steps say today.
VERSION_1 = """
CREATE TABLE history_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, series TEXT NOT NULL,
    mode TEXT NOT NULL, target TEXT NOT NULL, host TEXT, port INTEGER, database_name TEXT,
    system_identifier TEXT, server_version TEXT, ledger_head TEXT, started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL, seconds DOUBLE PRECISION NOT NULL, outcome TEXT NOT NULL,
    exit_status INTEGER, profile_audit TEXT NOT NULL, roles TEXT NOT NULL
);
CREATE INDEX runs_by_series ON runs (series, id);
CREATE TABLE results (
    run BIGINT NOT NULL REFERENCES runs (id), kind TEXT NOT NULL, name TEXT NOT NULL,
    checkpoint TEXT NOT NULL, outcome TEXT NOT NULL, count BIGINT, seconds DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run, kind, name, checkpoint)
);
CREATE INDEX results_by_check ON results (name, checkpoint, run);
INSERT INTO history_meta VALUES ('format', 'migration-gate history'), ('schema_version', '1');
INSERT INTO runs VALUES (1, 'a1b2c3d4e5f6', 'gate', '7301/fluxolab', 'existing', 'nightly@staging:5432/fluxolab',
    'staging', 5432, 'fluxolab', '7301', '15.8', '008_webhooks_activities_alignment.sql',
    '2025-03-01T02:00:00+00:00', '2025-03-01T02:00:04+00:00', 4.1, 'failed', 1,
    '{"current": {"owner": 120}}', '{"superuser": ["postgres"]}');
INSERT INTO results VALUES (1, 'check', 'credentials_outside_member_workspace', 'current', 'failed', 2, 0.02);
"""


def test_a_version_1_history_is_read_as_it_is_then_migrated_whole_on_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / "nightly.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(VERSION_1)
    with History(str(path)) as history:  # reading migrates nothing
        assert history.version == 1
        kept = history.runs(STAGING.series, 10)
        assert history.notified(["any"]) == set()
    assert [(run.run_id, run.outcome, run.profile_audit) for run in kept] == [
        ("a1b2c3d4e5f6", "failed", {"current": {"owner": 120}})
    ]
    assert kept[0].results == [
        Result(CHECK, "credentials_outside_member_workspace", "current", "failed", 2, 0.02)
    ]
    with History(str(path), create=True) as history:
        number = history.append(make_run(check("credentials_outside_member_workspace")))
        history.remember(
            "resolved|check|credentials_outside_member_workspace|current|x", number, now(), "resolved"
        )
    with sqlite3.connect(path) as conn:
        version = conn.execute("SELECT value FROM history_meta WHERE key = 'schema_version'").fetchone()
        runs = conn.execute("SELECT id, run_id FROM runs ORDER BY id").fetchall()
        old_result = conn.execute("SELECT outcome, count FROM results WHERE run = 1").fetchall()
        notified = conn.execute("SELECT count(*) FROM notifications").fetchone()
    assert version == (str(schema.VERSION),)
    assert runs == [(1, "a1b2c3d4e5f6"), (2, runs[1][1])]
    assert old_result == [("failed", 2)]
    assert notified == (1,)
