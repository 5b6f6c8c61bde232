"""The smoke step leaves nothing behind and never writes into a customer's workspace, on a real server.

The playbook's smoke step acts as a tenant of its own and removes it at the end, passed or
failed, proving every business table is as it was; a deployment's smoke run
(``--api-url``) cleans up by run id with ``--database-url``, and lists what it made
without.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import port_for
import pytest

from migration_gate.core import dsn
from migration_gate.core.contract import ARCHIVE_SCHEMA
from migration_gate.plugin.databases import CheckpointDatabases
from tests.conftest import CLI, REPO, Run, record_of, run_cli, run_pytest

SMOKE_USERS = "SELECT count(*) FROM public.users WHERE email LIKE '%@migration-gate.invalid'"


def playbook(url: str, directory: Path, *extra: str) -> Run:
    return run_cli(
        "playbook", "--database", url,
        "--backup", str(directory / "staging.backup"), "--report-dir", str(directory / "record"), *extra,
    )  # fmt: skip


def business_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table in public and legacy_archive, archive timestamps aside."""
    with dsn.connect(url) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema = ANY(%s) AND table_type = 'BASE TABLE' ORDER BY 1, 2",
            (["public", ARCHIVE_SCHEMA],),
        ).fetchall()
        rows = {}
        for schema, table in tables:
            columns = [
                row[0]
                for row in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s"
                    " AND column_name <> 'archived_at' ORDER BY ordinal_position",
                    (schema, table),
                )
            ]
            listed = ", ".join(f'"{column}"::text' for column in columns)
            rows[f"{schema}.{table}"] = sorted(
                conn.execute(f'SELECT {listed} FROM "{schema}"."{table}"'.encode()).fetchall(), key=repr
            )
    return rows


@pytest.fixture
def two_stagings(clone: Callable[[str], str]) -> tuple[str, str]:
    """Two copies of the same legacy database."""
    return clone("legacy"), clone("legacy")


def test_after_a_full_playbook_every_business_table_holds_what_a_no_smoke_playbook_leaves(
    two_stagings: tuple[str, str], tmp_path: Path
) -> None:
    with_smoke, without_smoke = two_stagings
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    full = playbook(with_smoke, tmp_path / "a")
    bare = playbook(without_smoke, tmp_path / "b", "--no-smoke")
    assert full.returncode == 0, full.stdout[-4000:] + full.stderr
    assert bare.returncode == 0, bare.stdout[-4000:] + bare.stderr

    assert business_rows(with_smoke) == business_rows(without_smoke)
    with dsn.connect(with_smoke) as conn:
        assert conn.execute(SMOKE_USERS).fetchone() == (0,)
    record = record_of(tmp_path / "a" / "record")
    assert any(s["status"] == "passed" for s in record["smoke"])
    cleanup = record["smoke_cleanup"]
    assert cleanup["proven"] is True and cleanup["problems"] == []
    # The record states what the step created and removed, per table.
    assert cleanup["created"] == cleanup["removed"]
    assert cleanup["created"]["users"] == 2 and cleanup["created"]["workspaces"] == 2
    assert cleanup["created"]["credentials"] > 0 and cleanup["created"]["webhook_registrations"] > 0
    assert cleanup["created"]["activities"] > 0
    markdown = (tmp_path / "a" / "record" / "report.md").read_text()
    assert "## What the smoke step made, and removed" in markdown and "Proven:** yes" in markdown


def test_the_smoke_step_never_writes_into_an_existing_users_workspace(
    clone: Callable[[str], str], tmp_path: Path
) -> None:
    staging = clone("legacy")
    with dsn.connect(staging) as conn:
        legacy_users = {row[0] for row in conn.execute("SELECT id FROM public.users")}
    done = playbook(staging, tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr
    cleanup = record_of(tmp_path / "record")["smoke_cleanup"]
    assert set(cleanup["users"]).isdisjoint(legacy_users), "the smoke tenant's users are its own"


def smoke_dir_with(tmp_path: Path, name: str, test: str) -> Path:
    """A copy of smoke/ with one more test file."""
    directory = tmp_path / "smoke"
    shutil.copytree(REPO / "smoke", directory, ignore=shutil.ignore_patterns("__pycache__"))
    (directory / name).write_text(test)
    return directory


FAILS_AFTER_WRITING = """
from migration_gate.plugin.smoke import Deployment, expect


def test_writes_then_fails(deployment: Deployment) -> None:
    workspace = deployment.actors.workspace_id
    expect(
        deployment.api.request(
            "POST", f"/workspaces/{workspace}/credentials", user=deployment.actors.user_id,
            json_body={"name": deployment.name("left behind?"), "provider": "github", "secret": "s"},
        ),
        201,
    )
    raise AssertionError("a smoke test failing in the middle of the step")
"""

WRITES_OUTSIDE_THE_TENANT = """
from migration_gate.core import dsn
from migration_gate.plugin.config import GateConfig


def test_a_write_the_tenant_does_not_own(gate_config: GateConfig) -> None:
    assert gate_config.database_url is not None
    with dsn.connect(gate_config.database_url) as conn:
        conn.execute("INSERT INTO public.profiles (code, name) VALUES ('intruder', 'Left by a smoke test')")
"""


def test_a_smoke_failure_in_the_middle_still_cleans_up_and_the_record_says_what_it_removed(
    clone: Callable[[str], str], tmp_path: Path
) -> None:
    staging = clone("legacy")
    smoke = smoke_dir_with(tmp_path, "test_zz_fails.py", FAILS_AFTER_WRITING)
    done = playbook(staging, tmp_path, "--smoke-dir", str(smoke))  # no --yes: nothing is restored
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr
    record = record_of(tmp_path / "record")
    assert record["outcome"] == "needs_restore"
    assert any(
        s["name"].endswith("test_writes_then_fails") and s["status"] == "failed" for s in record["smoke"]
    )
    cleanup = record["smoke_cleanup"]
    assert cleanup["proven"] is True and cleanup["created"] == cleanup["removed"]
    with dsn.connect(staging) as conn:
        assert conn.execute(SMOKE_USERS).fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM public.credentials WHERE name LIKE 'migration-gate smoke %'"
        ).fetchone() == (0,)


def test_a_clean_up_that_cannot_be_proven_says_so_and_exits_1(
    clone: Callable[[str], str], tmp_path: Path
) -> None:
    staging = clone("legacy")
    smoke = smoke_dir_with(tmp_path, "test_zz_intruder.py", WRITES_OUTSIDE_THE_TENANT)
    done = playbook(staging, tmp_path, "--smoke-dir", str(smoke))
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr
    record = record_of(tmp_path / "record")
    assert record["outcome"] == "cleanup_not_proven" and record["stopped_at"] == "smoke clean-up"
    cleanup = record["smoke_cleanup"]
    assert cleanup["proven"] is False
    assert "public.profiles: 4 rows before the smoke step, 5 after" in cleanup["problems"]
    assert any("public.profiles: 1 row(s) inserted or updated since" in p for p in cleanup["problems"])
    assert "not proven" in done.stderr


# -- A deployment (--api-url) ------------------------------------------------------------


@pytest.fixture
def deployment_url(gate: CheckpointDatabases, clone: Callable[[str], str]) -> tuple[str, str]:
    """A migrated database served by serve-api: (API URL, database URL)."""
    url = clone(gate.last)
    port = port_for.select_random()
    server = subprocess.Popen(
        [*CLI, "serve-api", "--database", url, "--port", str(port),
         "--retry-backoff", "0.02", "--delivery-attempts", "3"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert server.stdout is not None
    assert server.stdout.readline().startswith("serving the reference API")
    yield f"http://127.0.0.1:{port}", url
    server.terminate()
    server.wait(timeout=30)


def test_with_a_database_url_a_deployments_smoke_run_cleans_up_its_own_tenant(
    deployment_url: tuple[str, str],
) -> None:
    api_url, url = deployment_url
    before = business_rows(url)
    run = run_pytest(
        "smoke", "--api-url", api_url, "--database-url", url,
        "--webhook-receiver-url", f"http://127.0.0.1:{port_for.select_random()}/hooks",
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:]
    summary = run.stdout.split("migration-gate: smoke rows on the deployment", 1)[1]
    assert "removed from" in summary and "credentials:" in summary
    with dsn.connect(url) as conn:
        assert conn.execute(SMOKE_USERS).fetchone() == (0,)
    assert business_rows(url) == before


def test_without_a_database_url_the_rows_created_are_listed_with_the_sql_that_removes_them(
    deployment_url: tuple[str, str], clone: Callable[[str], str]
) -> None:
    api_url, url = deployment_url
    with dsn.connect(url) as conn:  # dedicated users, as an operator would create them
        from migration_gate.reference.smoke_tenant import create_actors

        actors = create_actors(conn, "operator")
    run = run_pytest("smoke/test_credentials.py", "--api-url", api_url, "--smoke-actors", str(actors))
    assert run.returncode == 0, run.stdout[-4000:]
    summary = run.stdout.split("migration-gate: smoke rows on the deployment", 1)[1]
    assert f"as {actors} (remove them with):" in summary
    with dsn.connect(url) as conn:
        created = [row[0] for row in conn.execute(
            "SELECT id FROM public.credentials WHERE workspace_id = ANY(%s) ORDER BY id", (actors.workspaces,)
        )]  # fmt: skip
        assert created, "the smoke tests created credentials"
        assert f"DELETE FROM public.credentials WHERE id IN ({', '.join(map(str, created))});" in summary
        statements = [line.strip() for line in summary.splitlines() if line.strip().startswith("DELETE FROM")]
        with conn.transaction():
            for statement in statements:
                conn.execute(statement.encode())
        assert conn.execute(
            "SELECT count(*) FROM public.credentials WHERE workspace_id = ANY(%s)", (actors.workspaces,)
        ).fetchone() == (0,)
