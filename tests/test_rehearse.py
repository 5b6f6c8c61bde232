"""``migration-gate rehearse``: the playbook on a disposable copy; the source is only ever read.

The source is a private copy of the gate's ``legacy`` checkpoint, read through a role that
may read everything and write nothing, with a password the server checks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from migration_gate.core import dsn, installations
from migration_gate.plugin.databases import CheckpointDatabases
from tests.conftest import record_of, run_cli
from tests.databases import CONNECTION_PROBLEMS, PasswordRole, full_dump
from tests.test_playbook import ledger_versions, one_error_line


@pytest.fixture
def source(clone: Callable[[str], str]) -> str:
    return clone("legacy")


def rehearse(url: str, report: Path, *extra: str) -> Any:
    return run_cli("rehearse", "--source", url, "--report-dir", str(report), *extra)


def test_a_rehearsal_runs_the_playbook_on_a_copy_and_never_writes_to_the_source(
    gate: CheckpointDatabases, source: str, reader: PasswordRole, tmp_path: Path
) -> None:
    before = full_dump(gate.server, source)
    report = tmp_path / "rehearsal"

    run = rehearse(reader.url(source), report)

    assert run.returncode == 0, run.output[-4000:]
    assert full_dump(gate.server, source) == before, "the rehearsal wrote to its source"
    assert ledger_versions(source) == [1, 2, 3, 4]
    record = record_of(report)
    assert record["command"] == "rehearse" and record["outcome"] == "migrated_and_validated"
    assert [m["file_name"][:3] for m in record["migrations"]] == ["005", "006", "007", "008"]
    assert set(record["checkpoints"]) == {"after_006", "after_007", "after_008"}
    assert not [c for c in record["checks"] if c["status"] == "failed"]
    assert any(s["status"] == "passed" for s in record["smoke"])
    rehearsal = record["rehearsal"]
    database = dsn.parse(source)["dbname"]
    assert f"database {database} on 127.0.0.1:{gate.server.port}" in rehearsal["source"]
    assert f"as role {reader.name}" in rehearsal["source"]
    assert rehearsal["source_dump_bytes"] > 0
    assert rehearsal["disposable_server"].startswith(f"PostgreSQL {gate.server.version} (")
    assert rehearsal["disposable_server_major"] == f"the source's own, PostgreSQL {gate.server.major}"
    assert "Rehearsal" in (report / "report.md").read_text()
    assert reader.password not in run.output
    for path in report.iterdir():
        assert reader.password not in path.read_text(), f"the password is in {path.name}"


def test_a_rehearsal_that_stops_at_a_checkpoint_says_so_and_leaves_the_source_alone(
    gate: CheckpointDatabases, source: str, reader: PasswordRole, tmp_path: Path, migrations_copy: Path
) -> None:
    with (migrations_copy / "006_workspace_defaults.sql").open("a") as sql:
        sql.write("\nUPDATE users SET default_workspace_id = NULL WHERE id = (SELECT min(id) FROM users);\n")
    before = full_dump(gate.server, source)
    report = tmp_path / "rehearsal"

    run = rehearse(reader.url(source), report, "--migrations-dir", str(migrations_copy), "--no-smoke")

    assert run.returncode == 1, run.output[-4000:]
    assert "checkpoint after_006" in one_error_line(run)
    assert full_dump(gate.server, source) == before
    record = record_of(report)
    assert record["outcome"] == "rolled_back" and record["stopped_at"] == "checkpoint after_006"
    assert record["checkpoints"]["after_006"]["users_without_default_workspace"] == 1


@pytest.mark.parametrize(("make_url", "message"), CONNECTION_PROBLEMS)
def test_a_source_that_cannot_be_read_is_one_line_exit_2_and_nothing_is_written(
    source: str, reader: PasswordRole, tmp_path: Path, make_url: Any, message: str
) -> None:
    report = tmp_path / "rehearsal"
    run = rehearse(make_url(reader, source), report)
    assert run.returncode == 2, run.output
    assert message in one_error_line(run)
    assert not report.exists()
    assert reader.password not in run.output and "Wr0ng-S3cret-Guess" not in run.output


def test_a_source_the_old_runner_migrated_is_adopted_on_the_copy_with_baseline(
    gate: CheckpointDatabases, source: str, tmp_path: Path
) -> None:
    """Staging has no ledger of ours: --baseline 004 adopts the copy (never the source) first."""
    with dsn.connect(source) as conn:
        conn.execute("DROP SCHEMA migration_gate CASCADE")
    before = full_dump(gate.server, source)

    refused = rehearse(source, tmp_path / "without", "--no-smoke")
    assert refused.returncode == 2, refused.output[-2000:]
    assert "migration-gate baseline" in refused.output

    run = rehearse(source, tmp_path / "with", "--no-smoke", "--baseline", "004")
    assert run.returncode == 0, run.output[-4000:]
    record = record_of(tmp_path / "with")
    assert record["rehearsal"]["baseline"] == [
        "001_init.sql",
        "002_workspaces.sql",
        "003_business_core.sql",
        "004_webhooks.sql",
    ]
    assert [m["file_name"][:3] for m in record["migrations"]] == ["005", "006", "007", "008"]
    assert full_dump(gate.server, source) == before, "the rehearsal wrote to its source"


def _majors_found() -> list[int]:
    return sorted({found.major for found in installations.installations()})


def test_a_rehearsal_on_a_newer_major_says_so_in_the_record(
    gate: CheckpointDatabases, source: str, reader: PasswordRole, tmp_path: Path
) -> None:
    newer = [major for major in _majors_found() if major > gate.server.major]
    if not newer:
        pytest.skip(f"no PostgreSQL newer than the session's {gate.server.version} is installed here")
    report = tmp_path / "rehearsal"
    run = rehearse(reader.url(source), report, "--pg-version", str(newer[0]), "--no-smoke")
    assert run.returncode == 0, run.output[-4000:]
    rehearsal = record_of(report)["rehearsal"]
    assert rehearsal["disposable_server"].startswith(f"PostgreSQL {newer[0]}.")
    assert rehearsal["disposable_server_major"] == (
        f"the database runs PostgreSQL {gate.server.major}: building on "
        f"{rehearsal['disposable_server'].split(' on 127.0.0.1')[0]}, as asked"
    )


def test_a_rehearsal_on_an_older_major_is_refused_before_anything_is_copied(
    gate: CheckpointDatabases, source: str, reader: PasswordRole, tmp_path: Path
) -> None:
    older = [major for major in _majors_found() if major < gate.server.major]
    if not older:
        pytest.skip(f"no PostgreSQL older than the session's {gate.server.version} is installed here")
    report = tmp_path / "rehearsal"
    run = rehearse(reader.url(source), report, "--pg-version", str(older[-1]))
    assert run.returncode == 2, run.output
    assert "a dump restores only into a server at least as new" in one_error_line(run)
    assert not report.exists()
