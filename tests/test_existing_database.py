"""``pytest --database-url``: the gate reads an existing database and changes nothing in it.

Each test runs the real gate (``pytest checks``) in a subprocess against a private clone
of a gate checkpoint, as a role with a password the server checks, and compares a
``pg_dump`` of schema and data before and after.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from migration_gate.core import dsn
from migration_gate.plugin.databases import CheckpointDatabases
from migration_gate.plugin.existing import ExistingDatabase
from tests.conftest import run_pytest
from tests.databases import PasswordRole, full_dump


@pytest.fixture
def migrated(clone: Callable[[str], str]) -> str:
    """A private copy of the gate database after 008 (the seed, fully migrated)."""
    return clone("after_008")


@pytest.fixture
def pending_008(clone: Callable[[str], str]) -> str:
    """A private copy of the gate database after 007: 008 is pending."""
    return clone("after_007")


def test_the_whole_gate_against_an_existing_database_changes_nothing_and_says_where_it_ran(
    gate: CheckpointDatabases, migrated: str, reader: PasswordRole
) -> None:
    before = full_dump(gate.server, migrated)
    run = run_pytest("checks", "--database-url", reader.url(migrated))
    after = full_dump(gate.server, migrated)

    assert after == before, "the read-only gate changed the database (schema or data)"
    assert run.returncode == 0, run.output[-4000:]
    database = dsn.parse(migrated)["dbname"]
    header = next(line for line in run.stdout.splitlines() if line.startswith("migration-gate:"))
    assert f"existing database {database} on 127.0.0.1:{gate.server.port}" in header
    assert f"(PostgreSQL {gate.server.version}" in header  # the server it really ran on, exactly
    assert f"as role {reader.name}, read-only" in header
    assert reader.password not in run.output


def test_checks_that_need_the_pre_005_snapshot_or_a_generated_volume_are_skipped_with_the_reason(
    migrated: str, reader: PasswordRole
) -> None:
    run = run_pytest(
        "checks/test_gate.py", "-m", "conservation or index", "--database-url", reader.url(migrated)
    )
    assert run.returncode == 0, run.output[-4000:]
    skipped = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    conservation = [line for line in skipped if "conservation needs the pre-005 snapshot" in line]
    assert len(conservation) == 9, run.stdout  # the eight legacy tables and the payloads, each by name
    assert any("conservation[activity_payloads]: " in line for line in conservation), run.stdout
    chosen = [line for line in skipped if "index_chosen[" in line]
    assert chosen, f"the planner-choice check was not skipped on a small database: {run.stdout}"
    assert all("the right plan" in line or "never been analyzed" in line for line in chosen), chosen


def test_the_ledger_check_fails_on_a_pending_migration_and_nothing_is_applied(
    gate: CheckpointDatabases, pending_008: str, reader: PasswordRole
) -> None:
    before = full_dump(gate.server, pending_008)
    # The URL from the environment, as the nightly run passes it.
    run = run_pytest(
        "checks/test_gate.py", "-m", "ledger", env={"FLUXOLAB_DATABASE_URL": reader.url(pending_008)}
    )
    assert run.returncode == 1, run.output[-4000:]
    assert "008_webhooks_activities_alignment.sql" in run.stdout
    assert "pending: not applied" in run.stdout
    assert full_dump(gate.server, pending_008) == before
    assert reader.password not in run.output


def test_migrate_applies_the_pending_migrations_first(gate: CheckpointDatabases, pending_008: str) -> None:
    run = run_pytest(
        "checks/test_gate.py", "-m", "ledger or invariant", "--database-url", pending_008, "--migrate"
    )
    assert run.returncode == 0, run.output[-4000:]
    with dsn.connect(pending_008) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM migration_gate.ledger ORDER BY 1")]
    assert versions == list(range(1, 9))


def test_the_gate_session_refuses_writes_even_for_a_role_that_may_write(migrated: str) -> None:
    # ``migrated`` connects as the superuser: only the session's read-only setting stops this.
    with (
        ExistingDatabase(migrated).connect() as conn,
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
    ):
        conn.execute("CREATE TABLE public.written_by_the_gate (id int)")
