"""``migration-gate playbook``: migrate and validate, or stop with the database exactly as it was.

Every run is the real command in a subprocess (stdin not a terminal), against a private
copy of the gate's ``legacy`` checkpoint (001→004 and the legacy seed), as a role whose
password the server checks. "Exactly as it was" is a ``pg_dump`` of schema and data,
compared line for line.
"""

from __future__ import annotations

import os
import pty
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from migration_gate.checks import catalog
from migration_gate.core import dsn
from migration_gate.core.identity import identify
from migration_gate.core.plan import split
from migration_gate.operations import backup, backup_metadata, client_tools, fingerprint
from migration_gate.plugin.databases import CheckpointDatabases
from tests.conftest import CLI, REPO, Run, record_of, run_cli
from tests.databases import CONNECTION_PROBLEMS, PasswordRole, full_dump, password_role

MIGRATION_008 = "008_webhooks_activities_alignment.sql"


@pytest.fixture
def migrator(gate: CheckpointDatabases) -> Iterator[PasswordRole]:
    """The role that runs the window: a superuser, as migrations need, with a password."""
    with password_role(gate.server, "SUPERUSER") as role:
        yield role


def playbook(url: str, window: dict[str, Path], *extra: str) -> Run:
    return run_cli(
        "playbook",
        "--database",
        url,
        "--backup",
        str(window["backup"]),
        "--report-dir",
        str(window["report"]),
        *extra,
    )


def assert_no_password(password: str, run: Run, window: dict[str, Path]) -> None:
    assert password not in run.output
    for path in [*window["report"].glob("*"), *window["backup"].parent.glob("*.json")]:
        assert password not in path.read_text(errors="replace"), f"the password is in {path.name}"


def one_error_line(run: Run) -> str:
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.output
    return lines[0]


def ledger_versions(url: str) -> list[int]:
    with dsn.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT version FROM migration_gate.ledger ORDER BY 1")]


# -- The window goes well ----------------------------------------------------------------


def test_the_playbook_migrates_validates_and_writes_the_change_record(
    gate: CheckpointDatabases, staging: str, migrator: PasswordRole, window: dict[str, Path]
) -> None:
    run = playbook(migrator.url(staging), window)

    assert run.returncode == 0, run.output[-4000:]
    assert ledger_versions(staging) == list(range(1, 9))
    record = record_of(window["report"])
    assert record["outcome"] == "migrated_and_validated" and record["exit_code"] == 0
    assert [m["file_name"] for m in record["migrations"]] == [
        "005_workspace_scoping.sql",
        "006_workspace_defaults.sql",
        "007_credentials_bootstrap.sql",
        MIGRATION_008,
    ]
    assert all(m["seconds"] >= 0 and m["statements"] for m in record["migrations"])
    # every invariant counted at every checkpoint it holds at, all zero
    assert list(record["checkpoints"]) == ["after_006", "after_007", "after_008"]
    for checkpoint, version in (("after_006", 6), ("after_007", 7), ("after_008", 8)):
        due = catalog.at_checkpoint(catalog.load(REPO / "checks"), version, last=version == 8)
        expected = {check.name for check in due if check.invariant is not None}
        assert set(record["checkpoints"][checkpoint]) == expected
        assert set(record["checkpoints"][checkpoint].values()) == {0}
    assert set(record["profile_audit"]) == {"after_006", "after_007", "after_008"}
    assert record["profile_audit"]["after_008"].get("owner", 0) > 0
    statuses = {check["name"]: check["status"] for check in record["checks"]}
    assert statuses["ledger"] == "passed"
    assert statuses["other_relations_privileges"] == "passed"
    # Every entry of the catalog is in the record, under its catalog name; a rule, under <rule>[<table>].
    assert {check.name for check in catalog.load(REPO / "checks") if check.family is None} <= set(statuses)
    assert statuses["tenant_workspace_index[webhook_events]"] == "passed"
    assert statuses["security_definer_functions"] == "passed"
    # What each migration changed, from the catalog before and after it, in the same transaction.
    by_file = {m["file_name"]: m for m in record["migrations"]}
    assert {
        "action": "added",
        "kind": "schema",
        "name": "legacy_archive",
        "parent": "",
        "before": "",
        "after": "schema",
    } in by_file["005_workspace_scoping.sql"]["changes"]
    assert {(c["action"], c["kind"], c["name"]) for c in by_file[MIGRATION_008]["changes"]} >= {
        ("dropped", "column", "public.activities.payload"),
        ("added", "index", "public.idx_activities_workspace"),
    }
    assert by_file[MIGRATION_008]["new_tables"]["legacy_archive.activity_payloads"] == {}
    assert statuses["conservation[activities]"] == "passed"
    assert statuses["index_usable[idx_activities_workspace]"] == "passed"
    assert "failed" not in statuses.values()
    assert record["smoke"] and not [s for s in record["smoke"] if s["status"] == "failed"]
    assert any(s["status"] == "passed" for s in record["smoke"])
    assert record["backup"]["path"] == str(window["backup"]) and record["backup"]["bytes"] > 0
    assert window["backup"].stat().st_size == record["backup"]["bytes"]
    assert [step["name"] for step in record["steps"]][:3] == [
        "preflight",
        "backup and fingerprint (one snapshot)",
        "migrate and validate (one transaction)",
    ]
    assert all(step["status"] == "ok" for step in record["steps"])
    markdown = (window["report"] / "report.md").read_text()
    assert "migrated_and_validated" in markdown and "users_without_default_workspace" in markdown
    assert "008_webhooks_activities_alignment.sql" in run.stdout  # progress as it goes
    # Runbook section 7: the closing message for the squads ends the record, ready to paste.
    assert record["squads_message"].startswith(f"**Maintenance of {dsn.parse(staging)['dbname']}: done.**")
    assert "Moved to legacy_archive: activities " in record["squads_message"]
    assert markdown.rstrip().endswith(record["squads_message"].rstrip())
    assert_no_password(migrator.password, run, window)


def test_a_009_the_contract_never_named_is_judged_by_the_rules_and_recorded_by_name(
    staging: str, window: dict[str, Path], migrations_copy: Path
) -> None:
    (migrations_copy / "009_notes.sql").write_text(
        "CREATE TABLE notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " workspace_id bigint NOT NULL REFERENCES workspaces ON DELETE CASCADE,"
        " user_id bigint REFERENCES users ON DELETE SET NULL, body text NOT NULL);\n"
        "CREATE INDEX idx_notes_workspace ON notes (workspace_id);\n"
        "CREATE INDEX idx_notes_user ON notes (user_id);\n"
        "INSERT INTO notes (workspace_id, user_id, body) SELECT (SELECT min(id) FROM workspaces), id, 'hi' FROM users;\n"
        "CREATE TABLE audit_log (id bigint PRIMARY KEY, workspace_id bigint NOT NULL REFERENCES workspaces);\n"
    )
    exemption = "tenant_workspace_index[audit_log]: append-only, read by id"
    run = playbook(
        staging, window, "--no-smoke", "--migrations-dir", str(migrations_copy), "--exempt", exemption
    )

    assert run.returncode == 1, run.output[-4000:]
    assert "checkpoint after_009" in one_error_line(
        run
    ) and "tenant_member_workspace[notes]" in one_error_line(run)
    record = record_of(window["report"])
    assert record["outcome"] == "rolled_back"
    at_009 = {c["name"]: c for c in record["checks"] if c["checkpoint"] == "after_009"}
    assert at_009["tenant_member_workspace[notes]"]["status"] == "failed"
    assert (
        "row(s) of public.notes sit in a workspace their user is not a member of"
        in (at_009["tenant_member_workspace[notes]"]["summary"])
    )
    assert at_009["tenant_workspace_index[audit_log]"]["status"] == "skipped"
    assert at_009["tenant_workspace_index[audit_log]"]["summary"] == "exempt: append-only, read by id"
    assert at_009["tenant_foreign_key[notes]"]["status"] == "passed"
    assert all(c["seconds"] >= 0 for c in at_009.values())
    assert record["exemptions"] == [
        {"rule": "tenant_workspace_index", "table": "audit_log", "reason": "append-only, read by id"}
    ]
    notes = record["migrations"][-1]
    assert notes["file_name"] == "009_notes.sql"
    added = {(c["kind"], c["name"]) for c in notes["changes"] if c["action"] == "added"}
    assert {
        ("table", "public.notes"),
        ("index", "public.idx_notes_user"),
        ("table", "public.audit_log"),
    } <= added
    assert notes["new_tables"]["public.notes"]["tenant_member_workspace"] == "failed"
    assert (
        notes["new_tables"]["public.audit_log"]["tenant_workspace_index"]
        == "skipped: exempt: append-only, read by id"
    )
    report = (window["report"] / "report.md").read_text()
    assert "## What each migration changed" in report and "- `added table public.notes`" in report
    assert "## Exemptions (1)\n\n- `tenant_workspace_index[audit_log]`: append-only, read by id" in report


# -- A fault before the commit: ROLLBACK, verified -----------------------------------------


def test_a_nonzero_count_after_006_stops_before_007_and_leaves_the_database_exactly_as_it_was(
    gate: CheckpointDatabases,
    staging: str,
    migrator: PasswordRole,
    window: dict[str, Path],
    migrations_copy: Path,
) -> None:
    # A 006 that leaves one user without a default workspace.
    with (migrations_copy / "006_workspace_defaults.sql").open("a") as sql:
        sql.write("\nUPDATE users SET default_workspace_id = NULL WHERE id = (SELECT min(id) FROM users);\n")
    before = full_dump(gate.server, staging)

    run = playbook(migrator.url(staging), window, "--migrations-dir", str(migrations_copy))

    assert run.returncode == 1, run.output[-4000:]
    error = one_error_line(run)
    assert "checkpoint after_006" in error and "users_without_default_workspace = 1" in error
    assert full_dump(gate.server, staging) == before
    record = record_of(window["report"])
    assert record["outcome"] == "rolled_back" and record["exit_code"] == 1
    assert record["stopped_at"] == "checkpoint after_006"
    assert [m["file_name"] for m in record["migrations"]] == [
        "005_workspace_scoping.sql",
        "006_workspace_defaults.sql",
    ]
    assert list(record["checkpoints"]) == ["after_006"]
    assert record["checkpoints"]["after_006"]["users_without_default_workspace"] == 1
    failed = [c for c in record["checks"] if c["status"] == "failed"]
    assert [c["name"] for c in failed] == ["users_without_default_workspace"]
    assert "SQL to run again by hand" in failed[0]["details"]
    assert record["fingerprint"]["matches"] is True and record["fingerprint"]["differences"] == []
    assert record["restore"] is None, "a rollback needs no restore"
    assert "checkpoint after_006" in (window["report"] / "report.md").read_text()
    message = record["squads_message"]
    assert (
        "NOT completed at checkpoint after_006" in message
        and "can come back on its current version" in message
    )
    assert_no_password(migrator.password, run, window)


def test_a_failure_in_the_last_statement_of_008_rolls_everything_back(
    gate: CheckpointDatabases,
    staging: str,
    migrator: PasswordRole,
    window: dict[str, Path],
    migrations_copy: Path,
) -> None:
    path = migrations_copy / MIGRATION_008
    sql = path.read_text()
    last = split(sql, MIGRATION_008)[-1]  # whatever 008 ends with, it now fails there
    failing = "SELECT no_such_column FROM public.activities"
    path.write_text(sql[: last.offset] + failing + ";\n")
    line = last.line
    before = full_dump(gate.server, staging)

    run = playbook(migrator.url(staging), window, "--migrations-dir", str(migrations_copy))

    assert run.returncode == 1, run.output[-4000:]
    error = one_error_line(run)
    assert f"{MIGRATION_008}:{line}:" in error and 'column "no_such_column" does not exist' in error
    assert full_dump(gate.server, staging) == before
    with dsn.connect(staging) as conn:
        assert conn.execute("SELECT to_regnamespace('legacy_archive')").fetchone() == (None,)
    record = record_of(window["report"])
    assert record["outcome"] == "rolled_back" and record["stopped_at"] == f"migration {MIGRATION_008}"
    assert list(record["checkpoints"]) == ["after_006", "after_007"], "the checkpoints before it ran"
    assert record["fingerprint"]["matches"] is True
    assert_no_password(migrator.password, run, window)


# -- A fault after the commit: restore, verified ---------------------------------------------

# Passes every in-transaction check (the index exists, is valid, leads with workspace_id),
# but no plan can use a partial index WHERE false: found only after the commit.
# The contract's index made partial, so no query can use it; another index keeps serving the
# cascading foreign key, so only the plans (after the commit) can tell.
UNUSABLE_INDEX = (
    "CREATE INDEX credentials_workspace_for_the_cascade ON credentials (workspace_id);\n"
    "DROP INDEX idx_credentials_workspace;\n"
    "CREATE INDEX idx_credentials_workspace ON credentials (workspace_id) WHERE false;\n"
)


def test_a_failure_after_the_commit_restores_the_backup_exactly(
    gate: CheckpointDatabases,
    staging: str,
    migrator: PasswordRole,
    window: dict[str, Path],
    migrations_copy: Path,
) -> None:
    (migrations_copy / "009_unusable_index.sql").write_text(UNUSABLE_INDEX)
    before = full_dump(gate.server, staging)

    run = playbook(
        migrator.url(staging), window, "--migrations-dir", str(migrations_copy), "--yes", "--no-smoke"
    )

    assert run.returncode == 1, run.output[-4000:]
    error = one_error_line(run)
    assert "index plans" in error and "index_usable[idx_credentials_workspace]" in error
    assert full_dump(gate.server, staging) == before, "the restore left something behind or lost something"
    record = record_of(window["report"])
    assert record["outcome"] == "restored"
    assert record["restore"]["performed"] is True and record["restore"]["exact"] is True
    assert record["next_action"] is None
    assert [m["file_name"] for m in record["migrations"]][-1] == "009_unusable_index.sql"
    assert_no_password(migrator.password, run, window)


def test_without_yes_and_without_a_terminal_the_restore_is_refused_and_the_record_says_how(
    gate: CheckpointDatabases,
    staging: str,
    migrator: PasswordRole,
    window: dict[str, Path],
    migrations_copy: Path,
) -> None:
    (migrations_copy / "009_unusable_index.sql").write_text(UNUSABLE_INDEX)
    before = full_dump(gate.server, staging)

    run = playbook(migrator.url(staging), window, "--migrations-dir", str(migrations_copy), "--no-smoke")

    assert run.returncode == 1, run.output[-4000:]
    assert "no terminal to ask on and no --yes" in run.stdout
    assert ledger_versions(staging) == list(range(1, 10)), "not restored without confirmation"
    record = record_of(window["report"])
    assert record["outcome"] == "needs_restore" and record["restore"]["performed"] is False
    command = record["next_action"]
    assert command.startswith("migration-gate restore --database 'postgresql://")
    assert f"--backup '{window['backup']}'" in command
    assert "restore the backup" in (window["report"] / "report.md").read_text()
    assert_no_password(migrator.password, run, window)

    # The command the record names, as the operator runs it (password from the environment).
    restored = run_cli(
        "restore", "--database", migrator.url(staging).replace(f":{migrator.password}@", "@"),
        "--backup", str(window["backup"]), "--yes",
        env={"PGPASSWORD": migrator.password},
    )  # fmt: skip
    assert restored.returncode == 0, restored.output
    assert "exactly what the backup holds" in restored.stdout
    assert full_dump(gate.server, staging) == before


def test_on_a_terminal_the_restore_is_asked_for_and_done_when_answered_yes(
    gate: CheckpointDatabases, staging: str, window: dict[str, Path], migrations_copy: Path
) -> None:
    (migrations_copy / "009_unusable_index.sql").write_text(UNUSABLE_INDEX)
    before = full_dump(gate.server, staging)
    terminal, program_side = pty.openpty()
    try:
        os.write(terminal, b"y\n")  # the operator's answer, waiting in the terminal's input
        done = subprocess.run(
            [*CLI, "playbook", "--database", staging,
             "--backup", str(window["backup"]), "--report-dir", str(window["report"]),
             "--migrations-dir", str(migrations_copy), "--no-smoke"],
            stdin=program_side, capture_output=True, text=True, cwd=REPO, timeout=600, check=False,
        )  # fmt: skip
    finally:
        os.close(program_side)
        os.close(terminal)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"from {window['backup']}? [y/N]" in done.stdout
    assert record_of(window["report"])["outcome"] == "restored"
    assert full_dump(gate.server, staging) == before


def test_a_failing_smoke_test_restores_the_backup(
    gate: CheckpointDatabases,
    staging: str,
    migrator: PasswordRole,
    window: dict[str, Path],
    migrations_copy: Path,
) -> None:
    # Every check passes; only the application, creating a credential, finds out.
    (migrations_copy / "009_block_credentials.sql").write_text(
        "CREATE FUNCTION public.refuse_credentials() RETURNS trigger LANGUAGE plpgsql AS\n"
        "$$ BEGIN RAISE EXCEPTION 'credentials are frozen'; END $$;\n"
        "CREATE TRIGGER refuse_credentials BEFORE INSERT ON public.credentials\n"
        "    FOR EACH ROW EXECUTE FUNCTION public.refuse_credentials();\n"
    )
    before = full_dump(gate.server, staging)

    run = playbook(migrator.url(staging), window, "--migrations-dir", str(migrations_copy), "--yes")

    assert run.returncode == 1, run.output[-4000:]
    assert "smoke tests" in one_error_line(run)
    record = record_of(window["report"])
    failed = [s["name"] for s in record["smoke"] if s["status"] == "failed"]
    assert any("credential" in name for name in failed), failed
    assert record["outcome"] == "restored"
    assert full_dump(gate.server, staging) == before
    assert_no_password(migrator.password, run, window)


# -- Bad input: exit 2, one line, nothing touched, nothing written ----------------------------


@pytest.mark.parametrize(("make_url", "message"), CONNECTION_PROBLEMS)
def test_connection_problems_are_one_line_exit_2_and_nothing_is_written(
    staging: str, migrator: PasswordRole, window: dict[str, Path], make_url: Any, message: str
) -> None:
    url = make_url(migrator, staging)
    run = playbook(url, window)
    assert run.returncode == 2, run.output
    assert message in one_error_line(run)
    assert not window["backup"].exists() and not window["report"].exists()
    assert migrator.password not in run.output and "Wr0ng-S3cret-Guess" not in run.output
    assert ledger_versions(staging) == [1, 2, 3, 4]


def _under_a_file(tmp_path: Path, name: str) -> Path:
    blocker = tmp_path / "a-regular-file"
    blocker.write_text("not a directory")
    return blocker / name


@pytest.mark.parametrize(
    ("arrange", "message"),
    [
        (lambda w, tmp: w.update(backup=_under_a_file(tmp, "staging.backup")), "--backup"),
        (lambda w, tmp: w.update(backup=tmp / "missing-dir" / "staging.backup"), "does not exist"),
        (lambda w, tmp: w["backup"].write_bytes(b"an older backup"), "is never overwritten"),
        (lambda w, tmp: w.update(report=_under_a_file(tmp, "record")), "--report-dir"),
        (
            lambda w, tmp: (w["report"].mkdir(), (w["report"] / "report.json").write_text("{}")),
            "already holds a change record",
        ),
    ],
    ids=[
        "backup-dir-unwritable",
        "backup-dir-missing",
        "backup-exists",
        "report-dir-unwritable",
        "report-dir-used",
    ],
)
def test_unwritable_or_taken_paths_are_refused_before_anything_is_touched(
    staging: str, migrator: PasswordRole, window: dict[str, Path], tmp_path: Path, arrange: Any, message: str
) -> None:
    arrange(window, tmp_path)
    existing = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    run = playbook(migrator.url(staging), window)
    assert run.returncode == 2, run.output
    assert message in one_error_line(run)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == existing, (
        "something was written"
    )
    assert ledger_versions(staging) == [1, 2, 3, 4]
    assert migrator.password not in run.output


def test_sessions_of_the_application_role_stop_the_run_unless_allowed(
    gate: CheckpointDatabases, staging: str, window: dict[str, Path]
) -> None:
    with (
        password_role(gate.server, grants=("fluxolab_devmode",)) as app_user,
        psycopg.connect(app_user.url(staging)),
    ):
        run = playbook(staging, window, "--no-smoke")
        assert run.returncode == 2, run.output
        error = one_error_line(run)
        assert "1 session(s) of fluxolab_devmode still connected" in error and app_user.name in error
        assert "--allow-active-sessions" in error
        assert not window["report"].exists()

        allowed = playbook(staging, window, "--no-smoke", "--allow-active-sessions")
        assert allowed.returncode == 0, allowed.output[-4000:]
        assert any("--allow-active-sessions" in w for w in record_of(window["report"])["warnings"])


def test_a_corrupt_backup_is_refused_by_restore_and_nothing_is_touched(
    gate: CheckpointDatabases, staging: str, migrator: PasswordRole, tmp_path: Path
) -> None:
    path = _playbook_backup(gate, staging, tmp_path)
    data = bytearray(path.read_bytes())
    data[:64] = b"\x00" * 64  # the archive's header
    path.write_bytes(bytes(data))
    before = full_dump(gate.server, staging)

    run = run_cli("restore", "--database", migrator.url(staging), "--backup", str(path), "--yes")

    assert run.returncode == 2, run.output
    assert "is not a readable pg_dump archive" in one_error_line(run)
    assert full_dump(gate.server, staging) == before
    assert migrator.password not in run.output


def test_a_backup_is_only_ever_restored_into_the_database_it_was_taken_from(
    gate: CheckpointDatabases, staging: str, tmp_path: Path, clone: Callable[[str], str]
) -> None:
    path = _playbook_backup(gate, staging, tmp_path)
    other = clone("legacy")  # same name pattern, same data, another database
    before = full_dump(gate.server, other)
    run = run_cli("restore", "--database", other, "--backup", str(path), "--yes")
    assert run.returncode == 2, run.output
    assert "refusing to restore" in one_error_line(run)
    assert full_dump(gate.server, other) == before


def _playbook_backup(gate: CheckpointDatabases, url: str, directory: Path) -> Path:
    """A backup with its record, as the playbook takes it (without running the playbook)."""
    with dsn.connect(url) as conn:
        identity = identify(conn)
    tools = client_tools.find_tools(identity.server_major, [Path(gate.server.binary("pg_dump")).parent])
    path = directory / "taken.backup"
    backup.dump(url, path, tools)
    taken = fingerprint.take(url, tools)
    backup_metadata.write_metadata(
        path, backup_metadata.BackupMetadata(identity, taken.to_json(), tools.version)
    )
    return path


def test_a_database_migrated_by_another_runner_is_refused_rather_than_guessed(
    staging: str, window: dict[str, Path]
) -> None:
    with dsn.connect(staging) as conn:
        conn.execute("DROP SCHEMA migration_gate CASCADE")  # as run-migrations.js leaves it: no ledger
    run = playbook(staging, window, "--no-smoke")
    assert run.returncode == 2, run.output
    assert "no migration_gate.ledger" in one_error_line(run)
    assert not window["backup"].exists() and not window["report"].exists()


def test_with_nothing_pending_the_playbook_only_validates(
    clone: Callable[[str], str], window: dict[str, Path]
) -> None:
    migrated = clone("after_008")
    run = playbook(migrated, window, "--no-smoke")
    assert run.returncode == 0, run.output[-4000:]
    assert "nothing to apply" in run.stdout
    record = record_of(window["report"])
    assert record["migrations"] == []
    assert list(record["checkpoints"]) == ["current"] and set(record["checkpoints"]["current"].values()) == {
        0
    }
    statuses = {check["name"]: check["status"] for check in record["checks"]}
    conservation = [name for name in statuses if name.startswith("conservation[")]
    assert conservation and all(statuses[name] == "skipped" for name in conservation), "no pre-005 snapshot"
    assert statuses["ledger"] == "passed"
