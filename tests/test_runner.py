"""The runner: one transaction per file, the ledger, refusals before anything runs, the lock."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from migration_gate.core import dsn
from tests.conftest import CLI, REPO, run_cli


def ledger_rows(url: str) -> list[tuple[int, str, str]]:
    with dsn.connect(url) as conn:
        return conn.execute(
            "SELECT version, file_name, checksum FROM migration_gate.ledger ORDER BY version"
        ).fetchall()


def table_exists(url: str, name: str) -> bool:
    with dsn.connect(url) as conn:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


def test_applies_every_file_in_order_and_records_each_in_the_ledger(fresh_database: str) -> None:
    run = run_cli("migrate", "--database", fresh_database)
    assert run.returncode == 0, run.output
    files = sorted(p.name for p in (REPO / "migrations").glob("*.sql"))
    for name in files:
        assert name in run.stdout, f"no progress line for {name}"
    rows = ledger_rows(fresh_database)
    assert [row[1] for row in rows] == files
    assert [row[0] for row in rows] == list(range(1, len(files) + 1))
    from migration_gate.core.plan import checksum

    assert [row[2] for row in rows] == [checksum((REPO / "migrations" / f).read_text()) for f in files]


def test_a_rerun_is_a_noop_that_succeeds(fresh_database: str) -> None:
    assert run_cli("migrate", "--database", fresh_database).returncode == 0
    before = ledger_rows(fresh_database)
    again = run_cli("migrate", "--database", fresh_database)
    assert again.returncode == 0, again.output
    assert "nothing to apply" in again.stdout
    assert ledger_rows(fresh_database) == before


def test_from_and_to_take_a_version_or_a_file_name(fresh_database: str) -> None:
    first = run_cli("migrate", "--database", fresh_database, "--to", "004_webhooks.sql")
    assert first.returncode == 0, first.output
    assert [row[0] for row in ledger_rows(fresh_database)] == [1, 2, 3, 4]
    second = run_cli("migrate", "--database", fresh_database, "--from", "5", "--to", "006")
    assert second.returncode == 0, second.output
    assert [row[0] for row in ledger_rows(fresh_database)] == [1, 2, 3, 4, 5, 6]


def test_a_failing_statement_mid_file_rolls_back_that_file_only(
    fresh_database: str, migrations_copy: Path
) -> None:
    (migrations_copy / "009_broken.sql").write_text(
        "-- a migration whose second statement fails\n"
        "CREATE TABLE public.half_done (id int);\n"
        "\n"
        "INSERT INTO public.half_done VALUES (1);\n"
        "SELECT no_such_column\n"
        "  FROM public.half_done;\n"
    )
    run = run_cli("migrate", "--database", fresh_database, "--migrations-dir", str(migrations_copy))
    assert run.returncode == 1, run.output
    # earlier files stay applied, nothing of 009 does
    assert [row[0] for row in ledger_rows(fresh_database)] == list(range(1, 9))
    assert not table_exists(fresh_database, "public.half_done")
    error_lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1, run.stderr
    assert "009_broken.sql:5:" in error_lines[0]
    assert 'column "no_such_column" does not exist' in error_lines[0]
    assert "Traceback" not in run.output


def test_an_error_inside_a_do_block_names_the_line_in_the_file(
    fresh_database: str, migrations_copy: Path
) -> None:
    (migrations_copy / "009_do_block.sql").write_text(
        "SELECT 1;\nDO $$\nBEGIN\n    PERFORM 1;\n    RAISE EXCEPTION 'boom at line five';\nEND\n$$;\n"
    )
    run = run_cli("migrate", "--database", fresh_database, "--migrations-dir", str(migrations_copy))
    assert run.returncode == 1
    assert "009_do_block.sql:5: ERROR: boom at line five" in run.stderr


def test_a_file_postgres_cannot_parse_is_refused_before_anything_runs(
    fresh_database: str, migrations_copy: Path
) -> None:
    (migrations_copy / "009_typo.sql").write_text("SELECT 1;\nSELEC 2;\n")
    run = run_cli("migrate", "--database", fresh_database, "--migrations-dir", str(migrations_copy))
    assert run.returncode == 2, run.output
    assert "009_typo.sql:2: cannot parse" in run.stderr
    assert not table_exists(fresh_database, "public.users"), "nothing may run before the plan is accepted"


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda d: (d / "003_business_core.sql").unlink(), "gap in migration numbering: 003 is missing"),
        (lambda d: (d / "003_also_three.sql").write_text("SELECT 1;"), "duplicate migration number 003"),
        (lambda d: (d / "7_short.sql").write_text("SELECT 1;"), "not a migration name"),
        (
            lambda d: (d / "001_init.sql").rename(d / "000_init.sql"),
            "gap in migration numbering: 001 is missing",
        ),
    ],
    ids=["gap", "duplicate", "stray-name", "not-from-001"],
)
def test_bad_numbering_is_refused_before_anything_runs(
    fresh_database: str, migrations_copy: Path, break_it, message: str
) -> None:
    break_it(migrations_copy)
    run = run_cli("migrate", "--database", fresh_database, "--migrations-dir", str(migrations_copy))
    assert run.returncode == 2, run.output
    assert message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert not table_exists(fresh_database, "migration_gate.ledger")


def test_an_applied_file_whose_checksum_changed_is_refused(
    fresh_database: str, migrations_copy: Path
) -> None:
    assert (
        run_cli(
            "migrate", "--database", fresh_database, "--migrations-dir", str(migrations_copy), "--to", "006"
        ).returncode
        == 0
    )
    with (migrations_copy / "002_workspaces.sql").open("a") as handle:
        handle.write("\n-- edited after it was applied\n")
    run = run_cli("migrate", "--database", fresh_database, "--migrations-dir", str(migrations_copy))
    assert run.returncode == 2
    assert "002_workspaces.sql was edited after it was applied" in run.stderr
    assert [row[0] for row in ledger_rows(fresh_database)] == [1, 2, 3, 4, 5, 6], "nothing may run on drift"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--from", "007", "--to", "005"), "--from 007_credentials_bootstrap.sql comes after --to 005"),
        (("--to", "042"), "--to '042': unknown migration version"),
        (("--from", "009_nope.sql"), "--from '009_nope.sql': unknown migration version"),
        (("--from", "005"), "001_init.sql is not applied yet: --from 005 would skip it"),
    ],
    ids=["reversed-range", "unknown-to", "unknown-from", "from-skips-unapplied"],
)
def test_range_errors_are_refused(fresh_database: str, args: tuple[str, ...], message: str) -> None:
    run = run_cli("migrate", "--database", fresh_database, *args)
    assert run.returncode == 2, run.output
    assert message in run.stderr
    assert not table_exists(fresh_database, "public.users")


def test_two_runners_at_once_do_not_interleave(fresh_database: str, migrations_copy: Path) -> None:
    (migrations_copy / "009_slow.sql").write_text(
        "CREATE TABLE public.slow_marker (id int);\nSELECT pg_sleep(1.5);\nINSERT INTO public.slow_marker VALUES (1);\n"
    )
    command = [*CLI, "migrate", "--database", fresh_database, "--migrations-dir", str(migrations_copy)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    outputs = [process.communicate(timeout=120) for process in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    assert [row[0] for row in ledger_rows(fresh_database)] == list(range(1, 10))
    combined = "".join(out for out, _ in outputs)
    assert combined.count("009_slow.sql") == 1, "each file is applied by exactly one runner"
    with dsn.connect(fresh_database) as conn:
        assert conn.execute("SELECT count(*) FROM public.slow_marker").fetchone()[0] == 1


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://gate:Sup3rS3cret@127.0.0.1:1/fluxolab",
        "postgresql://gate:Sup3rS3cret@127.0.0.1:{port}/no_such_database",
        "postgresql://gate:Sup3rS3cret@127.0.0.1:{port}:x/bad",
        "host=127.0.0.1 port=1 password=Sup3rS3cret dbname=x",
    ],
    ids=["unreachable", "missing-database", "malformed-url", "conninfo"],
)
def test_connection_and_url_errors_are_one_line_exit_2_without_the_password(
    disposable_server, url: str
) -> None:
    run = run_cli("migrate", "--database", url.format(port=disposable_server.port))
    assert run.returncode == 2, run.output
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "Sup3rS3cret" not in run.output
    assert "Traceback" not in run.output


def test_a_sql_error_reaches_the_user_without_a_traceback_or_password(
    disposable_server, migrations_copy: Path
) -> None:
    with disposable_server.admin() as conn:
        conn.execute("CREATE ROLE gate_user LOGIN SUPERUSER PASSWORD 'Sup3rS3cret'")
    (migrations_copy / "009_fails.sql").write_text("SELECT 1/0;\n")
    try:
        # The role owns what it migrated: its database goes first.
        with disposable_server.temporary_database("t_secret_check") as url:
            secret_url = url.replace("postgres@", "gate_user:Sup3rS3cret@")
            run = run_cli("migrate", "--database", secret_url, "--migrations-dir", str(migrations_copy))
            assert run.returncode == 1
            assert "009_fails.sql:1: ERROR: division by zero" in run.stderr
            assert "Sup3rS3cret" not in run.output
            assert "gate_user@127.0.0.1" in run.stdout
    finally:
        with disposable_server.admin() as conn:
            conn.execute("DROP ROLE gate_user")
