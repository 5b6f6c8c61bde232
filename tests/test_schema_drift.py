"""``schema_drift``: hand changes are drift until written down as corrections; the nightly run and the
playbook's preflight say so, naming each; on the gate's own database it catches schema that depends on data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from migration_gate.checks import drift as drift_check
from migration_gate.checks.failures import CheckFailed
from migration_gate.core import drift, dsn, runner, schema
from migration_gate.core.drift import Reference
from migration_gate.core.plan import load_plan
from migration_gate.plugin.databases import CheckpointDatabases
from tests.conftest import Run, record_of, run_cli, run_pytest
from tests.test_playbook import one_error_line

HAND_INDEX = (
    "index public.tmp_fix_idx on public.activities (action): on the database, not built by the migrations"
)
HAND_COLUMN = "column public.credentials.note text: on the database, not built by the migrations"


def nightly(url: str) -> Run:
    """The nightly run, as CI runs it: the gate's checks against the database, read-only."""
    return run_pytest("checks", "--database-url", url, "-q", "-rfE")


def failed_tests(run: Run) -> list[str]:
    return sorted(line.split()[1] for line in run.stdout.splitlines() if line.startswith("FAILED "))


def test_an_index_and_a_column_added_by_hand_fail_the_nightly_run_until_written_down_as_corrections(
    clone: Callable[[str], str], tmp_path: Path
) -> None:
    staging = clone("after_008")
    with dsn.connect(staging) as conn:
        conn.execute("CREATE INDEX tmp_fix_idx ON public.activities (action)")
        conn.execute("ALTER TABLE public.credentials ADD COLUMN note text")

    drifted = nightly(staging)
    assert drifted.returncode == 1, drifted.stdout[-3000:]
    assert failed_tests(drifted) == ["checks/test_gate.py::test_check[schema_drift-current]"]
    assert HAND_INDEX in drifted.stdout and HAND_COLUMN in drifted.stdout

    corrections = tmp_path / "corrections"
    corrections.mkdir()
    (corrections / "tmp_fix_idx.sql").write_text(
        "-- reason: the activity feed timed out on 2024-05-02 (INC-123); kept until a migration owns it\n"
        "CREATE INDEX IF NOT EXISTS tmp_fix_idx ON public.activities (action);\n"
    )
    (corrections / "credentials_note.sql").write_text(
        "-- reason: support notes on credentials, asked for by the integrations squad\n"
        "ALTER TABLE public.credentials ADD COLUMN IF NOT EXISTS note text;\n"
    )
    for path in sorted(corrections.iterdir()):
        run = run_cli("correct", str(path), "--database", staging)
        assert run.returncode == 0, run.output

    written_down = nightly(staging)
    assert written_down.returncode == 0, written_down.stdout[-3000:]
    assert failed_tests(written_down) == []


def test_drift_stops_the_playbook_before_the_backup_unless_accepted_with_a_note(
    gate: CheckpointDatabases, clone: Callable[[str], str], tmp_path: Path
) -> None:
    staging = clone("legacy")
    with dsn.connect(staging) as conn:
        conn.execute("CREATE INDEX tmp_fix_idx ON public.activities (action)")
    window = (
        "--backup",
        str(tmp_path / "staging.backup"),
        "--report-dir",
        str(tmp_path / "record"),
        "--no-smoke",
    )

    refused = run_cli("playbook", "--database", staging, *window)
    assert refused.returncode == 2, refused.output[-3000:]
    error = one_error_line(refused)
    assert error.startswith("migration-gate: schema_drift: 1 difference(s)") and HAND_INDEX in error
    assert "--accept-drift" in error
    assert not (tmp_path / "staging.backup").exists() and not (tmp_path / "record").exists()

    note = "INC-123: the index stays until 009 makes it; production will not have it"
    accepted = run_cli("playbook", "--database", staging, *window, "--accept-drift", note)
    assert accepted.returncode == 0, accepted.output[-3000:]
    record = record_of(tmp_path / "record")
    assert record["accepted_drift"] == {"note": note, "differences": [HAND_INDEX]}
    drift = next(check for check in record["checks"] if check["name"] == "schema_drift")
    assert drift["status"] == "accepted" and drift["checkpoint"] == "preflight" and note in drift["summary"]
    assert any(note in warning for warning in record["warnings"])
    assert note in (tmp_path / "record" / "report.md").read_text()


def test_without_drift_the_preflight_records_schema_drift_as_passed(
    clone: Callable[[str], str], tmp_path: Path
) -> None:
    run = run_cli(
        "playbook", "--database", clone("legacy"), "--backup", str(tmp_path / "b.backup"),
        "--report-dir", str(tmp_path / "record"), "--no-smoke",
    )  # fmt: skip
    assert run.returncode == 0, run.output[-3000:]
    record = record_of(tmp_path / "record")
    drift = [check for check in record["checks"] if check["name"] == "schema_drift"]
    assert [(check["status"], check["checkpoint"]) for check in drift] == [("passed", "preflight")]
    assert record["accepted_drift"] is None


DEPENDS_ON_DATA = (
    "DO $$ BEGIN IF EXISTS (SELECT FROM public.activities WHERE action = 'login') THEN "
    "CREATE INDEX activities_login_idx ON public.activities (action) WHERE action = 'login'; END IF; END $$;\n"
)


@pytest.mark.parametrize(
    ("migration", "expected"),
    [
        (DEPENDS_ON_DATA, "index public.activities_login_idx on public.activities (action) WHERE"),
        ("CREATE INDEX activities_login_idx ON public.activities (action) WHERE action = 'login';\n", None),
    ],
    ids=["schema that depends on the data", "the same index whatever the data"],
)
def test_on_the_gate_database_a_migration_whose_schema_depends_on_the_data_fails_schema_drift(
    gate: CheckpointDatabases,
    clone: Callable[[str], str],
    migrations_copy: Path,
    migration: str,
    expected: str | None,
) -> None:
    (migrations_copy / "009_login_index.sql").write_text(migration)
    plan = load_plan(migrations_copy)
    seeded = clone("after_008")  # the legacy seed, migrated: what the gate judges
    with dsn.connect(seeded) as conn:
        conn.execute(
            "INSERT INTO public.activities (workspace_id, action) SELECT min(id), 'login' FROM workspaces"
        )
    runner.migrate(seeded, plan)
    with dsn.connect(seeded) as conn:
        try:
            drift_check.check_schema_drift(conn, plan, Reference(gate.server))
            failure = None
        except CheckFailed as failed:
            failure = str(failed)
    if expected is None:
        assert failure is None, failure
    else:
        assert failure is not None and expected in failure, failure
        assert "on the database, not built by the migrations" in failure


def test_a_long_definition_that_differs_is_named_in_a_line_and_shown_as_a_diff() -> None:
    body = "CREATE OR REPLACE FUNCTION public.touch()\n RETURNS trigger\n LANGUAGE plpgsql\nAS $function$BEGIN {} END$function$\n"
    built = schema.SchemaObject("function", "public.touch()", "", body.format("RETURN NEW;"))
    found = schema.SchemaObject("function", "public.touch()", "", body.format("NEW.name := 'x'; RETURN NEW;"))
    [change] = schema.diff({built.key: built}, {found.key: found})
    assert drift.phrase(change) == (
        "function public.touch(): defined otherwise on the database than by the migrations (see how below)"
    )
    diff = drift.how_they_differ([change]).splitlines()
    assert diff[:2] == [
        "--- public.touch() (built by the migrations)",
        "+++ public.touch() (on the database)",
    ]
    assert "-AS $function$BEGIN RETURN NEW; END$function$" in diff
    assert "+AS $function$BEGIN NEW.name := 'x'; RETURN NEW; END$function$" in diff
