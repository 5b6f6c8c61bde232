"""The window's edges: ``--before-window`` and ``--after-window`` around every way a window can end.

Each run is the real command in a subprocess against a private copy of the gate's
``legacy`` checkpoint. The window commands write what they were given (their
environment, the record as they found it) into files the test then reads: what the
application's maintenance switch would have seen.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from migration_gate.core import dsn
from migration_gate.plugin.databases import CheckpointDatabases
from tests.conftest import REPO, record_of, run_cli
from tests.databases import PasswordRole, full_dump, password_role
from tests.test_window_faults import DEADLINE, MIGRATION_008, start_playbook, wait_for_line

MIGRATIONS = REPO / "migrations"


@pytest.fixture
def migrator(gate: CheckpointDatabases) -> Iterator[PasswordRole]:
    """The role that runs the window, with a password the window commands must never see."""
    with password_role(gate.server, "SUPERUSER") as role:
        yield role


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    """Where the window commands leave what they saw."""
    directory = tmp_path / "marks"
    directory.mkdir()
    return directory


def before_command(marks: Path, backup: Path, *then: str) -> str:
    """Note the environment and whether the backup exists yet, then ``then``."""
    return "; ".join(
        [
            f"env | grep '^MIGRATION_GATE_' > {marks}/before.env",
            f"if [ -e {backup} ]; then echo backup-already-taken; else echo no-backup-yet; fi",
            "echo maintenance on",
            *then,
        ]
    )


def after_command(marks: Path, *then: str) -> str:
    """Note the environment and the record as written when the command starts, then ``then``."""
    return "; ".join(
        [
            f"env | grep '^MIGRATION_GATE_' > {marks}/after.env",
            f'cp "$MIGRATION_GATE_RECORD" {marks}/record-seen.json',
            "echo maintenance off",
            *then,
        ]
    )


def environment_seen(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def running(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie left to a container's init that never reaps it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def run_playbook(
    url: str, tmp_path: Path, *extra: str, migrations: Path = MIGRATIONS
) -> tuple[int, str, str]:
    process = start_playbook(url, tmp_path, migrations, *extra)
    stdout, stderr = process.communicate(timeout=DEADLINE)
    return process.returncode, stdout, stderr


def ledger_versions(url: str) -> list[int]:
    with dsn.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT version FROM migration_gate.ledger ORDER BY 1")]


def assert_after_saw(marks: Path, tmp_path: Path, record: dict[str, Any], outcome: str) -> None:
    """The after command ran once the record said ``outcome``, and was told so."""
    seen = environment_seen(marks / "after.env")
    assert seen["MIGRATION_GATE_OUTCOME"] == outcome
    assert seen["MIGRATION_GATE_RECORD"] == str(tmp_path / "record" / "report.json")
    assert seen["MIGRATION_GATE_RUN_ID"] == record["run_id"]
    assert json.loads((marks / "record-seen.json").read_text())["outcome"] == outcome
    after = record["callbacks"]["after_window"]
    assert after["status"] == "ok" and after["exit_status"] == 0
    assert "maintenance off" in after["output_tail"]


def test_a_window_that_succeeds_runs_before_ahead_of_the_backup_and_after_once_the_record_is_written(
    staging: str, migrator: PasswordRole, marks: Path, tmp_path: Path
) -> None:
    backup = tmp_path / "staging.backup"
    code, stdout, stderr = run_playbook(
        migrator.url(staging),
        tmp_path,
        "--before-window",
        before_command(marks, backup),
        "--after-window",
        after_command(marks),
    )

    assert code == 0, stdout[-3000:] + stderr
    record = record_of(tmp_path / "record")
    assert record["outcome"] == "migrated_and_validated_without_smoke" and record["exit_code"] == 0
    before = record["callbacks"]["before_window"]
    assert before["command"] == before_command(marks, backup)
    assert before["status"] == "ok" and before["exit_status"] == 0 and before["seconds"] >= 0
    assert before["output_tail"].splitlines() == ["no-backup-yet", "maintenance on"]
    seen = environment_seen(marks / "before.env")
    assert seen["MIGRATION_GATE_RUN_ID"] == record["run_id"]
    parts = dsn.parse(staging)
    assert seen["MIGRATION_GATE_TARGET"] == f"{migrator.name}@127.0.0.1:{parts['port']}/{parts['dbname']}"
    assert "MIGRATION_GATE_OUTCOME" not in seen
    assert_after_saw(marks, tmp_path, record, "migrated_and_validated_without_smoke")
    steps = [step["name"] for step in record["steps"]]
    assert steps[:3] == ["preflight", "before-window command", "backup and fingerprint (one snapshot)"]
    assert steps[-1] == "after-window command"
    for path in (*marks.iterdir(), tmp_path / "record" / "report.json"):
        assert migrator.password not in path.read_text()
    assert "| before_window |" in (tmp_path / "record" / "report.md").read_text()


def test_a_checkpoint_failure_still_runs_the_after_command_with_the_outcome(
    staging: str, marks: Path, tmp_path: Path, migrations_copy: Path
) -> None:
    with (migrations_copy / "006_workspace_defaults.sql").open("a") as sql:
        sql.write("\nUPDATE users SET default_workspace_id = NULL WHERE id = (SELECT min(id) FROM users);\n")
    code, stdout, stderr = run_playbook(
        staging,
        tmp_path,
        "--before-window",
        before_command(marks, tmp_path / "staging.backup"),
        "--after-window",
        after_command(marks),
        migrations=migrations_copy,
    )

    assert code == 1, stdout[-3000:] + stderr
    record = record_of(tmp_path / "record")
    assert record["outcome"] == "rolled_back" and record["stopped_at"] == "checkpoint after_006"
    assert_after_saw(marks, tmp_path, record, "rolled_back")
    assert ledger_versions(staging) == [1, 2, 3, 4]


def test_sigterm_during_the_window_rolls_back_and_still_runs_the_after_command(
    gate: CheckpointDatabases, staging: str, marks: Path, tmp_path: Path, migrations_copy: Path
) -> None:
    path = migrations_copy / MIGRATION_008
    path.write_text("SELECT pg_sleep(60);\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    before = full_dump(gate.server, staging)
    process = start_playbook(
        staging,
        tmp_path,
        migrations_copy,
        "--before-window",
        before_command(marks, tmp_path / "staging.backup"),
        "--after-window",
        after_command(marks),
    )
    wait_for_line(process, f"applying {MIGRATION_008}")
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=DEADLINE)

    assert process.returncode == 130, stdout[-3000:] + stderr
    record = record_of(tmp_path / "record")
    assert record["outcome"] == "interrupted" and record["reason"] == "interrupted by SIGTERM"
    assert record["stopped_at"] == f"migrate and validate (one transaction), migration {MIGRATION_008}"
    assert_after_saw(marks, tmp_path, record, "interrupted")
    # The record still says where the signal landed, not the after command.
    assert record["in_progress"]["migration"] == MIGRATION_008
    assert full_dump(gate.server, staging) == before


def test_a_failing_before_command_stops_the_run_with_nothing_changed_and_runs_the_after_command(
    gate: CheckpointDatabases, staging: str, marks: Path, tmp_path: Path
) -> None:
    before = full_dump(gate.server, staging)
    command = before_command(marks, tmp_path / "staging.backup", "echo no maintenance page >&2", "exit 3")
    code, stdout, stderr = run_playbook(
        staging, tmp_path, "--before-window", command, "--after-window", after_command(marks)
    )

    assert code == 1, stdout[-3000:] + stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines == [
        "migration-gate: stopped at before-window command: the --before-window command failed (exit status 3): "
        "no backup taken; nothing changed (not_started)"
    ]
    record = record_of(tmp_path / "record")
    assert record["outcome"] == "not_started" and record["exit_code"] == 1
    assert record["database"] == "unchanged: nothing was touched"
    ran = record["callbacks"]["before_window"]
    assert ran["status"] == "failed" and ran["exit_status"] == 3
    assert ran["output_tail"].splitlines() == ["no-backup-yet", "maintenance on", "no maintenance page"]
    assert "  | no maintenance page" in stdout
    assert not (tmp_path / "staging.backup").exists() and record["backup"] is None
    assert full_dump(gate.server, staging) == before
    assert_after_saw(marks, tmp_path, record, "not_started")


def test_a_failing_after_command_is_exit_3_and_says_the_application_may_still_be_in_maintenance(
    staging: str, marks: Path, tmp_path: Path
) -> None:
    code, stdout, stderr = run_playbook(
        staging, tmp_path, "--after-window", after_command(marks, "echo cannot reach the balancer", "exit 5")
    )

    assert code == 3, stdout[-3000:] + stderr
    assert stderr.strip().splitlines()[-1] == (
        "migration-gate: the --after-window command failed (exit status 5): the application may still be in "
        "maintenance mode (the database: migrated_and_validated_without_smoke; see the record)"
    )
    record = record_of(tmp_path / "record")
    # The database's outcome is what it was; the exit code and a warning carry the after command's failure.
    assert record["outcome"] == "migrated_and_validated_without_smoke" and record["exit_code"] == 3
    assert record["callbacks"]["after_window"]["exit_status"] == 5
    assert "cannot reach the balancer" in record["callbacks"]["after_window"]["output_tail"]
    assert any("may still be in maintenance mode" in warning for warning in record["warnings"])
    assert ledger_versions(staging) == list(range(1, 9))


def test_a_window_command_that_outlives_its_timeout_is_stopped_with_everything_it_started(
    staging: str, marks: Path, tmp_path: Path
) -> None:
    pid_file = marks / "sleeper.pid"
    code, stdout, stderr = run_playbook(
        staging,
        tmp_path,
        "--before-window",
        f"sleep 60 & echo $! > {pid_file}; wait",
        "--after-window",
        after_command(marks),
        "--callback-timeout",
        "1",
    )

    assert code == 1, stdout[-3000:] + stderr
    record = record_of(tmp_path / "record")
    assert record["outcome"] == "not_started"
    assert record["callbacks"]["before_window"]["status"] == "timed out"
    assert "the --before-window command timed out after" in record["reason"]
    # Its whole process group was stopped: the sleep it started in the background too.
    assert not running(int(pid_file.read_text()))
    assert_after_saw(marks, tmp_path, record, "not_started")


def test_sessions_the_before_command_leaves_connected_stop_the_run(
    gate: CheckpointDatabases, staging: str, tmp_path: Path
) -> None:
    with (
        password_role(gate.server, grants=("fluxolab_devmode",)) as app_user,
        psycopg.connect(app_user.url(staging)),
    ):
        code, stdout, stderr = run_playbook(staging, tmp_path, "--before-window", "true")
    assert code == 1, stdout[-3000:] + stderr
    record = record_of(tmp_path / "record")
    assert record["outcome"] == "not_started" and record["callbacks"]["before_window"]["status"] == "ok"
    assert (
        "1 session(s) of fluxolab_devmode still connected" in record["reason"]
        and app_user.name in record["reason"]
    )
    assert not (tmp_path / "staging.backup").exists()


def test_a_bad_callback_timeout_is_one_line_and_exit_2(staging: str, tmp_path: Path) -> None:
    run = run_cli(
        "playbook", "--database", staging, "--backup", str(tmp_path / "staging.backup"),
        "--report-dir", str(tmp_path / "record"), "--callback-timeout", "soon",
    )  # fmt: skip
    assert run.returncode == 2
    assert (
        len(run.stderr.strip().splitlines()) == 1
        and "'soon': expected a number of seconds above 0" in run.stderr
    )
    assert not (tmp_path / "record").exists() and not (tmp_path / "staging.backup").exists()
