"""The window under faults, on a real server: signals while 008 runs, kill -9, and a lock the application holds.

A copy of the migrations makes 008 wait in ``pg_sleep`` first, so that a signal surely
lands while 008 runs. Nothing here measures time: a deadline only keeps a broken run
from hanging the suite.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from migration_gate.core import dsn
from migration_gate.plugin.databases import CheckpointDatabases
from tests.conftest import CLI, REPO, record_of, run_cli
from tests.databases import full_dump

MIGRATION_008 = "008_webhooks_activities_alignment.sql"
DEADLINE = 120  # seconds a run may take before the test gives up on it


@pytest.fixture
def slow_008(migrations_copy: Path) -> Path:
    """migrations/ with 008 waiting a minute before its first statement."""
    path = migrations_copy / MIGRATION_008
    path.write_text("SELECT pg_sleep(60);\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    return migrations_copy


def start_playbook(url: str, tmp_path: Path, migrations: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *CLI, "playbook", "--database", url,
            "--backup", str(tmp_path / "staging.backup"), "--report-dir", str(tmp_path / "record"),
            "--migrations-dir", str(migrations), "--no-smoke", *extra,
        ],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for_line(process: subprocess.Popen[str], text: str) -> list[str]:
    """Read the run's progress until a line holds ``text``; the lines read."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"the run ended before {text!r}:\n" + "".join(lines))
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"no {text!r} within {DEADLINE} s")


def without_sequences(dump: list[str]) -> list[str]:
    return [line for line in dump if "setval" not in line]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_while_008_runs_leaves_the_database_exactly_as_before_and_says_interrupted(
    gate: CheckpointDatabases, staging: str, slow_008: Path, tmp_path: Path, signum: signal.Signals
) -> None:
    before = full_dump(gate.server, staging)
    process = start_playbook(staging, tmp_path, slow_008)
    wait_for_line(process, f"applying {MIGRATION_008}")
    # The record already says where the run is, before anything ends it.
    assert record_of(tmp_path / "record")["in_progress"] == {
        "step": "migrate and validate (one transaction)",
        "migration": MIGRATION_008,
    }
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=DEADLINE)

    assert process.returncode == 130, stdout + stderr
    # Tables, the ledger and the sequences 006 advanced: all as before.
    assert full_dump(gate.server, staging) == before
    record = record_of(tmp_path / "record")
    assert record["outcome"] == "interrupted" and record["exit_code"] == 130
    assert record["stopped_at"] == f"migrate and validate (one transaction), migration {MIGRATION_008}"
    assert record["reason"] == f"interrupted by {signum.name}"
    assert record["in_progress"]["migration"] == MIGRATION_008
    assert record["fingerprint"]["matches"] is True
    assert record["database"].startswith("exactly as before")
    assert "sequences put back where they were: public.workspaces_id_seq" in stdout
    assert "Traceback" not in stdout + stderr


def test_kill_9_while_008_runs_leaves_a_record_that_says_where_and_the_next_run_says_so(
    gate: CheckpointDatabases, staging: str, slow_008: Path, tmp_path: Path
) -> None:
    before = full_dump(gate.server, staging)
    process = start_playbook(staging, tmp_path, slow_008)
    wait_for_line(process, f"applying {MIGRATION_008}")
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=DEADLINE)
    # The server rolls back once it notices its client is gone; pg_sleep would make it wait a minute.
    with dsn.connect(gate.server.url()) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (dsn.parse(staging)["dbname"],),
        )

    # The tables are as before; the sequences 006 advanced can only be put back by a live run.
    assert without_sequences(full_dump(gate.server, staging)) == without_sequences(before)
    record = record_of(tmp_path / "record")
    assert record["outcome"] == "not_finished" and record["finished_at"] is None
    assert record["in_progress"] == {
        "step": "migrate and validate (one transaction)",
        "migration": MIGRATION_008,
    }
    assert (
        record["backup"]["path"] == str(tmp_path / "staging.backup")
        and record["backup"]["state"] == "written"
    )
    assert "did not finish" in record["meaning"]
    assert (
        "In progress:** step migrate and validate (one transaction), migration 008"
        in (tmp_path / "record" / "report.md").read_text()
    )

    # The next run on this database says that an earlier one did not finish, and where its record is.
    second = tmp_path / "second"
    second.mkdir()
    done = run_cli(
        "playbook", "--database", staging,
        "--backup", str(second / "staging.backup"), "--report-dir", str(second / "record"),
        "--migrations-dir", str(REPO / "migrations"), "--no-smoke",
        timeout=DEADLINE,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    warning = next(line for line in done.stdout.splitlines() if "did not finish" in line)
    assert str(tmp_path / "record" / "report.json") in warning
    assert f"in step 'migrate and validate (one transaction)', migration {MIGRATION_008}" in warning
    assert str(tmp_path / "staging.backup") in warning
    assert any("did not finish" in line for line in record_of(second / "record")["warnings"])


@pytest.fixture
def at_006(clone: Callable[[str], str]) -> str:
    return clone("after_006")


@pytest.fixture
def blocker(at_006: str) -> Iterator[tuple[int, psycopg.Connection]]:
    """The application, in a long transaction that has read credentials: it holds ACCESS SHARE on it."""
    with dsn.connect(at_006, autocommit=False, application_name="fluxolab-api") as conn:
        conn.execute("SELECT count(*) FROM credentials").fetchone()
        yield conn.info.backend_pid, conn
        conn.rollback()


def keep_reading(url: str, stop: threading.Event, failures: list[str], reads: list[float]) -> None:
    """Another client of the application: each read of credentials must finish within 3 s."""
    with dsn.connect(url, options="-c statement_timeout=3s", application_name="another-client") as conn:
        while not stop.is_set():
            try:
                conn.execute("SELECT count(*) FROM credentials").fetchone()
                reads.append(time.monotonic())
            except psycopg.Error as exc:
                failures.append(str(exc).strip())
            stop.wait(0.2)


def test_migrate_gives_up_on_a_lock_the_application_holds_naming_it_and_never_stalls_readers(
    at_006: str, blocker: tuple[int, psycopg.Connection]
) -> None:
    pid, _ = blocker
    stop, failures, reads = threading.Event(), [], []
    reader = threading.Thread(target=keep_reading, args=(at_006, stop, failures, reads))
    reader.start()
    try:
        done = run_cli("migrate", "--database", at_006, "--lock-timeout", "1s", timeout=DEADLINE)
    finally:
        stop.set()
        reader.join()
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, done.stderr
    assert "007_credentials_bootstrap.sql:" in errors[0] and "lock timeout" in errors[0]
    assert "AccessExclusiveLock on credentials" in errors[0], errors[0]
    assert f"pid {pid} (application 'fluxolab-api'" in errors[0], errors[0]
    assert "gave up after 5 attempt(s)" in errors[0]
    assert done.stdout.count("retrying in") == 4, done.stdout
    # The runner's waits never held the application's other readers up beyond their 3 s.
    assert failures == [] and len(reads) > 5
    with dsn.connect(at_006) as conn:
        assert max(row[0] for row in conn.execute("SELECT version FROM migration_gate.ledger")) == 6


def test_the_playbook_names_a_session_holding_locks_and_rolls_back_when_it_will_not_let_go(
    gate: CheckpointDatabases, at_006: str, blocker: tuple[int, psycopg.Connection], tmp_path: Path
) -> None:
    pid, _ = blocker
    before = full_dump(gate.server, at_006)
    done = run_cli(
        "playbook", "--database", at_006,
        "--backup", str(tmp_path / "staging.backup"), "--report-dir", str(tmp_path / "record"),
        "--no-smoke", "--lock-timeout", "1s",
        timeout=DEADLINE,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    record = record_of(tmp_path / "record")
    # The preflight said who holds what the pending migrations need.
    held = [w for w in record["warnings"] if "a session holds a lock the migrations need" in w]
    assert (
        held
        and f"pid {pid}" in held[0]
        and "fluxolab-api" in held[0]
        and "credentials AccessShareLock" in held[0]
    )
    assert record["outcome"] == "rolled_back"
    assert "lock timeout" in record["reason"] and f"pid {pid}" in record["reason"]
    assert full_dump(gate.server, at_006) == before


def test_a_bad_lock_timeout_is_one_line_and_exit_2(at_006: str) -> None:
    done = run_cli("migrate", "--database", at_006, "--lock-timeout", "soon", timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "'soon': expected a duration" in done.stderr
    with dsn.connect(at_006) as conn:
        assert max(row[0] for row in conn.execute("SELECT version FROM migration_gate.ledger")) == 6


@pytest.fixture
def slow_smoke(tmp_path: Path) -> Path:
    """A smoke directory whose one test takes a minute: the window is past its commit while it runs."""
    directory = tmp_path / "slow-smoke"
    directory.mkdir()
    (directory / "test_slow.py").write_text("import time\n\n\ndef test_slow() -> None:\n    time.sleep(60)\n")
    return directory


@pytest.mark.parametrize("assume_yes", [True, False], ids=["--yes", "no --yes"])
def test_a_signal_after_the_commit_restores_only_with_yes_and_otherwise_says_how(
    gate: CheckpointDatabases, staging: str, tmp_path: Path, slow_smoke: Path, assume_yes: bool
) -> None:
    before = full_dump(gate.server, staging)
    process = subprocess.Popen(
        [
            *CLI, "playbook", "--database", staging,
            "--backup", str(tmp_path / "staging.backup"), "--report-dir", str(tmp_path / "record"),
            "--smoke-dir", str(slow_smoke), *(["--yes"] if assume_yes else []),
        ],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for_line(process, "smoke tests (")
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=DEADLINE)

    assert process.returncode == 130, stdout + stderr
    record = record_of(tmp_path / "record")
    assert record["outcome"] == "interrupted"
    assert record["stopped_at"] == "smoke tests" and record["reason"] == "interrupted by SIGTERM"
    if assume_yes:
        assert record["restore"]["performed"] is True and record["restore"]["exact"] is True
        assert record["database"] == "restored from the backup (verified)"
        assert full_dump(gate.server, staging) == before
    else:
        assert record["restore"]["performed"] is False
        assert record["database"].startswith("NOT as before")
        assert record["next_action"].startswith("migration-gate restore --database ")
        assert str(tmp_path / "staging.backup") in record["next_action"]
        with dsn.connect(staging) as conn:
            assert max(row[0] for row in conn.execute("SELECT version FROM migration_gate.ledger")) == 8
