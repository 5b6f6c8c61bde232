"""The preflight refuses a window that cannot finish as planned: exit 2, one line, before the backup.

* The smoke step could not run: a managed service's database owner, no superuser and
  without ``fluxolab_devmode``, is told which grant to give; ``--no-smoke`` runs without
  it and says, in its outcome and its record, that the runbook's section 5 did not run.
* Another run holds the database: a playbook running in another process, the migration
  runner's lock held by another session, or a journal entry whose session is alive.

Every case on a real server with real concurrent sessions and processes.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from migration_gate.core import dsn, ledger
from migration_gate.core.runner import ADVISORY_LOCK_KEY
from migration_gate.operations import run_lock
from migration_gate.operations.playbook import smoke_failures
from migration_gate.operations.smoke_step import why_smoke_cannot_run
from migration_gate.plugin.databases import CheckpointDatabases
from tests.conftest import record_of
from tests.databases import PasswordRole, password_role
from tests.test_playbook import ledger_versions, one_error_line, playbook
from tests.test_window_faults import DEADLINE, MIGRATION_008, start_playbook, wait_for_line


def nothing_written(window: dict[str, Path]) -> bool:
    return not window["backup"].exists() and not window["report"].exists()


# -- The smoke step cannot run ---------------------------------------------------------------


@pytest.fixture
def managed_owner(gate: CheckpointDatabases, staging: str) -> Iterator[PasswordRole]:
    """As on a managed service: a login role that owns the database and its objects, and is no superuser.

    Its default privileges give fluxolab_devmode what 003 gives it, as if it had migrated the
    database from the start; it is not a member of fluxolab_devmode.
    """
    with password_role(gate.server) as owner, dsn.connect(staging) as conn:
        role = sql.Identifier(owner.name)
        database = sql.Identifier(dsn.parse(staging)["dbname"])
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(database, role))
        conn.execute(sql.SQL("ALTER SCHEMA migration_gate OWNER TO {}").format(role))
        tables = conn.execute(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'r' AND n.nspname IN ('public', 'migration_gate')"
        ).fetchall()
        for (table,) in tables:
            conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.SQL(table), role))
        for grant in (
            "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO fluxolab_devmode",
            "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO fluxolab_devmode",
        ):
            conn.execute(sql.SQL(grant).format(role))
        try:
            yield owner
        finally:  # the role goes before the database: give the database back first
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO postgres").format(database))


def test_an_owner_that_cannot_act_as_the_application_is_told_the_grant_and_no_smoke_says_section_5_did_not_run(
    staging: str, managed_owner: PasswordRole, window: dict[str, Path]
) -> None:
    url = managed_owner.url(staging)
    run = playbook(url, window)

    assert run.returncode == 2, run.output[-4000:]
    line = one_error_line(run)
    assert f"GRANT fluxolab_devmode TO {managed_owner.name}" in line and "--no-smoke" in line
    assert nothing_written(window) and ledger_versions(staging) == [1, 2, 3, 4]

    without = playbook(url, window, "--no-smoke")

    assert without.returncode == 0, without.output[-4000:]
    assert "outcome: migrated_and_validated_without_smoke" in without.stdout
    record = record_of(window["report"])
    assert record["outcome"] == "migrated_and_validated_without_smoke" and record["exit_code"] == 0
    assert "section 5" in record["meaning"] and "did NOT run" in record["squads_message"]
    assert [(s["name"], s["status"], s["summary"]) for s in record["smoke"]] == [
        ("smoke", "skipped", "--no-smoke")
    ]
    assert "migrated_and_validated_without_smoke" in (window["report"] / "report.md").read_text()
    assert ledger_versions(staging) == list(range(1, 9))
    assert managed_owner.password not in without.output


def test_the_grant_the_line_names_is_what_lets_the_smoke_step_run(
    staging: str, managed_owner: PasswordRole
) -> None:
    with dsn.connect(managed_owner.url(staging)) as conn:
        assert why_smoke_cannot_run(conn) is not None
    with dsn.connect(staging) as admin:
        admin.execute(sql.SQL("GRANT fluxolab_devmode TO {}").format(sql.Identifier(managed_owner.name)))
    with dsn.connect(managed_owner.url(staging)) as conn:
        assert why_smoke_cannot_run(conn) is None
        conn.execute("SET ROLE fluxolab_devmode")  # what the reference API does, now allowed


# -- Another run holds the database ---------------------------------------------------------


@pytest.fixture
def slow_008(migrations_copy: Path) -> Path:
    path = migrations_copy / MIGRATION_008
    path.write_text("SELECT pg_sleep(60);\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    return migrations_copy


def test_a_second_playbook_while_one_runs_is_refused_naming_the_first_and_when_it_started(
    staging: str, slow_008: Path, tmp_path: Path, window: dict[str, Path]
) -> None:
    (tmp_path / "first").mkdir()
    first = start_playbook(staging, tmp_path / "first", slow_008)
    try:
        wait_for_line(first, f"applying {MIGRATION_008}")
        record = record_of(tmp_path / "first" / "record")

        second = playbook(staging, window, "--no-smoke")

        assert second.returncode == 2, second.output[-4000:]
        line = one_error_line(second)
        assert f"another playbook run {record['run_id']} holds" in line and " started " in line
        assert "wait for it to finish" in line
        assert nothing_written(window)
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=DEADLINE)
    assert first.returncode == 130, "the first run goes on undisturbed until it is stopped"
    assert ledger_versions(staging) == [1, 2, 3, 4]


def test_the_migration_runners_lock_held_by_another_session_is_refused(
    staging: str, window: dict[str, Path]
) -> None:
    with dsn.connect(staging, application_name="migration-gate migrate") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        pid = holder.info.backend_pid
        run = playbook(staging, window, "--no-smoke")
    assert run.returncode == 2, run.output[-4000:]
    line = one_error_line(run)
    assert "another migration runner holds" in line and f"session pid {pid} (migration-gate migrate" in line
    assert nothing_written(window)


def _gone(url: str) -> bool:
    deadline = time.monotonic() + 10
    with dsn.connect(url) as conn:
        while time.monotonic() < deadline:
            if run_lock.other_run(conn) is None:
                return True
            time.sleep(0.05)
    return False


def test_an_unfinished_run_whose_session_is_alive_is_refused_and_once_gone_is_not(
    staging: str, window: dict[str, Path]
) -> None:
    with dsn.connect(staging, application_name="an older migration-gate") as session:
        with dsn.connect(staging) as conn:
            ledger.begin_run(
                conn, "0ld5e55i0n42", "playbook", "/nowhere", "/nowhere.backup", session.info.backend_pid
            )
        run = playbook(staging, window, "--no-smoke")
        assert run.returncode == 2, run.output[-4000:]
        line = one_error_line(run)
        assert "another playbook run 0ld5e55i0n42 has not finished" in line
        assert f"pid {session.info.backend_pid}" in line and " started " in line
        assert nothing_written(window)
    assert _gone(staging), "a run whose session has gone no longer holds the database"


def test_a_failed_smoke_steps_line_names_the_count_and_a_few_tests_and_the_record_keeps_all() -> None:
    names = [f"test_case_{index}" for index in range(33)]
    line = smoke_failures(names)
    assert (
        line
        == "33 smoke test(s) failed: test_case_0, test_case_1, test_case_2 and 30 more (every one in the change record)"
    )
    assert smoke_failures(names[:2]) == "2 smoke test(s) failed: test_case_0, test_case_1"
