"""Adopting a database the old runner migrated: recorded only when it is exactly at that version."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from migration_gate.core import dsn, installations
from migration_gate.core.server import DisposableServer
from tests.conftest import REPO, run_cli

MIGRATIONS = sorted((REPO / "migrations").glob("*.sql"))


def migrate_like_the_old_runner(server: DisposableServer, url: str, upto: int) -> None:
    """psql -f, file after file: what run-migrations.js did to staging, leaving no ledger."""
    files = [str(path) for path in MIGRATIONS if int(path.name[:3]) <= upto]
    arguments = [argument for path in files for argument in ("-f", path)]
    subprocess.run(
        [server.binary("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, *arguments],
        check=True,
        capture_output=True,
    )


def has_ledger(url: str) -> bool:
    with dsn.connect(url) as conn:
        return bool(conn.execute("SELECT to_regclass('migration_gate.ledger') IS NOT NULL").fetchone()[0])


def test_a_database_at_004_without_a_ledger_is_adopted_and_then_migrates(
    disposable_server: DisposableServer, fresh_database: str
) -> None:
    migrate_like_the_old_runner(disposable_server, fresh_database, 4)
    run = run_cli("baseline", "--database", fresh_database, "--to", "004")
    assert run.returncode == 0, run.output
    with dsn.connect(fresh_database) as conn:
        rows = conn.execute(
            "SELECT version, duration_ms FROM migration_gate.ledger ORDER BY version"
        ).fetchall()
    assert [version for version, _ in rows] == [1, 2, 3, 4]
    assert all(duration == 0 for _, duration in rows), "a baseline runs nothing"
    assert f"on a disposable PostgreSQL {disposable_server.version} (" in run.stdout, (
        "the database's own major"
    )
    rest = run_cli("migrate", "--database", fresh_database)
    assert rest.returncode == 0, rest.output
    assert "005_workspace_scoping.sql" in rest.stdout and "001_init.sql" not in rest.stdout


@pytest.mark.parametrize(
    ("drift", "expected"),
    [
        (
            "ALTER TABLE public.activities DROP COLUMN payload",
            "column public.activities.payload jsonb: built by the migrations, not on the database",
        ),
        (
            "ALTER TABLE public.users ADD COLUMN nickname text",
            "column public.users.nickname text: on the database, not built by the migrations",
        ),
        (
            "ALTER TABLE public.credentials ALTER COLUMN secret DROP NOT NULL",
            "column public.credentials.secret: built by the migrations as text NOT NULL, on the database as text",
        ),
        (
            "DROP INDEX public.idx_activities_user",
            "index public.idx_activities_user on public.activities (user_id): built by the migrations, not on the database",
        ),
    ],
    ids=["column-missing", "column-extra", "not-null-dropped", "index-missing"],
)
def test_a_database_that_differs_from_004_is_refused_and_nothing_is_recorded(
    disposable_server: DisposableServer, fresh_database: str, drift: str, expected: str
) -> None:
    migrate_like_the_old_runner(disposable_server, fresh_database, 4)
    with dsn.connect(fresh_database) as conn:
        conn.execute(drift.encode())
    run = run_cli("baseline", "--database", fresh_database, "--to", "004")
    assert run.returncode == 2, run.output
    assert "is not exactly at 004_webhooks.sql, nothing recorded" in run.stderr
    assert expected in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert not has_ledger(fresh_database)


def test_a_database_further_than_the_baseline_is_refused(
    disposable_server: DisposableServer, fresh_database: str
) -> None:
    migrate_like_the_old_runner(disposable_server, fresh_database, 5)
    run = run_cli("baseline", "--database", fresh_database, "--to", "004")
    assert run.returncode == 2, run.output
    assert (
        "column public.activities.workspace_id bigint: on the database, not built by the migrations"
        in run.stderr
    )
    assert not has_ledger(fresh_database)


def test_a_database_with_a_ledger_is_not_baselined(fresh_database: str) -> None:
    assert run_cli("migrate", "--database", fresh_database, "--to", "004").returncode == 0
    run = run_cli("baseline", "--database", fresh_database, "--to", "004")
    assert run.returncode == 2
    assert "already has a ledger" in run.stderr


def test_an_unknown_version_is_refused_before_connecting(tmp_path: Path) -> None:
    run = run_cli("baseline", "--database", "postgresql://u:Sup3rS3cret@127.0.0.1:1/x", "--to", "042")
    assert run.returncode == 2
    assert "Sup3rS3cret" not in run.output


def test_the_catalogs_compare_across_majors(disposable_server: DisposableServer, fresh_database: str) -> None:
    """A reference built on another major (PostgreSQL 18 records NOT NULLs in pg_constraint, 15 does not)."""
    others = sorted({i.major for i in installations.installations()} - {disposable_server.major})
    if not others:
        pytest.skip(
            f"only PostgreSQL {disposable_server.major} is installed here: no other major to compare with"
        )
    migrate_like_the_old_runner(disposable_server, fresh_database, 4)
    for major in others:
        with dsn.connect(fresh_database) as conn:
            conn.execute("ALTER TABLE public.credentials ALTER COLUMN secret DROP NOT NULL")
        drifted = run_cli("baseline", "--database", fresh_database, "--to", "004", "--pg-version", str(major))
        assert drifted.returncode == 2, drifted.output
        assert (
            "column public.credentials.secret: built by the migrations as text NOT NULL, on the database as text"
            in drifted.stderr
        )
        with dsn.connect(fresh_database) as conn:
            conn.execute("ALTER TABLE public.credentials ALTER COLUMN secret SET NOT NULL")
        run = run_cli("baseline", "--database", fresh_database, "--to", "004", "--pg-version", str(major))
        assert run.returncode == 0, run.output
        assert f"on a disposable PostgreSQL {major}." in run.stdout
        assert has_ledger(fresh_database)
        with dsn.connect(fresh_database) as conn:  # not adopted yet, for the next major
            conn.execute("DROP SCHEMA migration_gate CASCADE")
