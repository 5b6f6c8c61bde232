"""The privilege review of every grantee (docs/contract.md §5) in the three modes, and its declarations.

The five grants of the issue that asked for it, committed to a private clone, must each
fail the nightly read-only run (``pytest checks --database-url``) by name: object,
grantee and privilege; declared with ``--allowed-grantee`` (or the ini option) they pass.
The playbook and the rehearsal take the same declarations. And no false alarm: a fresh
cluster migrated by an ordinary role that owns its database passes every privilege check.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from psycopg import sql

from migration_gate.checks import catalog
from migration_gate.checks.catalog import CheckContext
from migration_gate.checks.failures import CheckFailed
from migration_gate.checks.role_report import role_report
from migration_gate.core import dsn, runner
from migration_gate.core.allowed_grantees import AllowedGrantee, parse_allowed_grantee
from migration_gate.core.errors import UsageError
from migration_gate.core.plan import load_plan
from migration_gate.core.server import DisposableServer
from migration_gate.plugin import config as gate_config_module
from migration_gate.plugin.config import GateConfig
from migration_gate.plugin.databases import CheckpointDatabases
from tests.conftest import REPO, record_of, run_cli, run_pytest
from tests.databases import PasswordRole
from tests.test_playbook import one_error_line

pytest_plugins = ("pytester",)

PRIVILEGE_CHECKS = [check for check in catalog.load(REPO / "checks") if check.kind == "privilege"]
GRANTEE_CHECKS = {check.name for check in PRIVILEGE_CHECKS if check.name.startswith("grantees[")}


# -- Declarations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "declared"),
    [
        ("reporting", AllowedGrantee("reporting")),
        (" reporting:select, usage ", AllowedGrantee("reporting", frozenset({"SELECT", "USAGE"}))),
        ("replicator:SELECT", AllowedGrantee("replicator", frozenset({"SELECT"}))),
        ("public:SELECT", AllowedGrantee("PUBLIC", frozenset({"SELECT"}))),
        ("etl:x:MAINTAIN", AllowedGrantee("etl:x", frozenset({"MAINTAIN"}))),
    ],
)
def test_a_declaration_is_a_role_and_optionally_its_privileges(text: str, declared: AllowedGrantee) -> None:
    assert parse_allowed_grantee(text) == declared


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no role name"),
        (":SELECT", "no role name"),
        ("reporting:", "no privilege after ':'"),
        ("reporting:SELECT,FLY", "unknown privilege 'FLY'"),
        ("reporting:SELECT,,USAGE", "unknown privilege ''"),
        ("fluxolab_devmode:SELECT", "fluxolab_devmode's grants are the contract's"),
    ],
)
def test_a_malformed_declaration_is_one_line(text: str, message: str) -> None:
    with pytest.raises(UsageError) as refused:
        parse_allowed_grantee(text)
    assert str(refused.value).startswith(f"--allowed-grantee {text!r}: ")
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_malformed_declaration_is_a_pytest_usage_error_in_one_line() -> None:
    run = run_pytest("checks/test_gate.py", "--collect-only", "--allowed-grantee", "reporting:FLY")
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.output
    assert one_error_line(run) == (
        "ERROR: --allowed-grantee 'reporting:FLY': unknown privilege 'FLY'; expected among CREATE, DELETE, "
        "EXECUTE, INSERT, MAINTAIN, REFERENCES, SELECT, TRIGGER, TRUNCATE, UPDATE, USAGE"
    ), run.output


@pytest.mark.parametrize("command", ["playbook", "rehearse"])
def test_a_malformed_declaration_is_exit_2_for_the_command_line_and_nothing_is_written(
    command: str, tmp_path: Path
) -> None:
    target = ["--database", "postgresql://nobody@127.0.0.1:1/staging", "--backup", str(tmp_path / "b")]
    if command == "rehearse":
        target = ["--source", "postgresql://nobody@127.0.0.1:1/staging"]
    report = tmp_path / "record"
    run = run_cli(command, *target, "--report-dir", str(report), "--allowed-grantee", "reporting:")
    assert run.returncode == 2, run.output
    assert "argument --allowed-grantee: 'reporting:': no privilege after ':'" in one_error_line(run)
    assert not report.exists() and not (tmp_path / "b").exists()


# -- Roles the tests create (cluster-wide, so always dropped) -----------------------------


@dataclass(frozen=True)
class IssueGrants:
    """The issue's five grants, to roles of their own: who each role is, and how the failure names it."""

    reader: str
    archivist: str
    support: str
    etl: str
    developer: str

    @property
    def roles(self) -> tuple[str, ...]:
        return (self.reader, self.archivist, self.support, self.etl, self.developer)

    def statements(self) -> list[sql.Composed]:
        role = sql.Identifier
        return [
            sql.SQL("GRANT SELECT ON public.credentials TO {}").format(role(self.reader)),
            sql.SQL("GRANT USAGE ON SCHEMA legacy_archive TO {}").format(role(self.archivist)),
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA legacy_archive TO {}").format(role(self.archivist)),
            sql.SQL("GRANT SELECT (id, secret) ON public.credentials TO {}").format(role(self.support)),
            sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {}").format(
                role(self.etl)
            ),
            sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(role(self.developer)),
        ]

    def named(self) -> dict[str, list[str]]:
        """Each failing entry of the catalog, and the lines that name object, grantee and privilege."""
        return {
            "grantees[tables]": [
                f"table public.credentials: SELECT granted to {self.reader} (by postgres)",
                *(
                    f"table legacy_archive.{table}: SELECT granted to {self.archivist} (by postgres)"
                    for table in (
                        "activities",
                        "activity_payloads",
                        "webhook_events",
                        "webhook_registrations",
                    )
                ),
            ],
            "grantees[columns]": [
                f"column public.credentials.id: SELECT granted to {self.support} (by postgres)",
                f"column public.credentials.secret: SELECT granted to {self.support} (by postgres)",
            ],
            "grantees[default_privileges]": [
                f"default privileges of postgres in schema public, future tables: SELECT granted to {self.etl} (by postgres)"
            ],
            "grantees[schemas]": [
                f"schema legacy_archive: USAGE granted to {self.archivist} (by postgres)",
                f"schema public: CREATE granted to {self.developer} (by pg_database_owner)",
            ],
        }


@contextmanager
def cluster_roles(server: DisposableServer, *names: str) -> Iterator[None]:
    """Roles for a test; on the way out, their grants in every database and then the roles are dropped."""
    with server.admin() as conn:
        for name in names:
            conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(name)))
    try:
        yield
    finally:
        with server.admin() as conn:
            for (database,) in conn.execute("SELECT datname FROM pg_database WHERE datallowconn").fetchall():
                with dsn.connect(server.url(database)) as each:
                    for name in names:
                        each.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            for name in names:
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def issue_grants(gate: CheckpointDatabases) -> Iterator[IssueGrants]:
    suffix = uuid.uuid4().hex[:6]
    grants = IssueGrants(
        *(f"{who}_{suffix}" for who in ("reader", "archivist", "support", "etl", "developer"))
    )
    with cluster_roles(gate.server, *grants.roles):
        yield grants


@pytest.fixture
def granted(clone: Callable[[str], str], issue_grants: IssueGrants) -> str:
    """A private copy of the migrated gate database with the issue's five grants committed."""
    url = clone("after_008")
    with dsn.connect(url) as conn:
        for statement in issue_grants.statements():
            conn.execute(statement)
    return url


# -- The nightly read-only run ------------------------------------------------------------


def test_each_of_the_five_grants_fails_the_nightly_run_naming_object_grantee_and_privilege(
    granted: str, issue_grants: IssueGrants, reader: PasswordRole
) -> None:
    run = run_pytest("checks", "-rf", "--database-url", reader.url(granted))

    assert run.returncode == 1, run.output[-4000:]
    failed = set(re.findall(r"^FAILED checks/test_gate\.py::test_check\[(.+)-current\]", run.stdout, re.M))
    # Only the review fails: no other check of the gate sees these grants.
    assert failed == set(issue_grants.named()), run.stdout[-4000:]
    for check, lines in issue_grants.named().items():
        assert f"{check}: " in run.stdout
        for line in lines:
            assert line in run.stdout, f"{check} does not say: {line}"
    # The roles, as figures in the summary: the nightly role reads every table through pg_read_all_data.
    roles = run.stdout.split("roles of the cluster (reported, not asserted)", 1)[1]
    assert re.search(rf"^members of pg_read_all_data\s+\d+: .*\b{reader.name}\b", roles, re.M), roles
    assert re.search(rf"^roles that can log in\s+\d+: .*\b{reader.name}\b", roles, re.M), roles
    assert reader.password not in run.output


def test_the_same_grants_declared_in_the_ini_file_pass_the_nightly_run(
    pytester: pytest.Pytester, granted: str, issue_grants: IssueGrants
) -> None:
    (pytester.path / "checks").mkdir()
    (pytester.path / "checks" / "test_gate.py").write_text((REPO / "checks" / "test_gate.py").read_text())
    declared = [
        f"{issue_grants.reader}:SELECT",
        f"{issue_grants.archivist}:USAGE,SELECT",
        f"{issue_grants.support}:SELECT",
        issue_grants.etl,
        f"{issue_grants.developer}:CREATE",
    ]
    lines = "".join(f"\n    {declaration}" for declaration in declared)
    pytester.makeini(
        f"[pytest]\naddopts = -p no:cacheprovider -p no:schemathesis -p no:anyio\nallowed_grantee ={lines}\n"
    )

    result = pytester.runpytest_subprocess(
        "checks/test_gate.py",
        "-m",
        "privilege",
        "--database-url",
        granted,
        "--migrations-dir",
        str(REPO / "migrations"),
        "--checks-dir",
        str(REPO / "checks"),
        timeout=300,
    )
    result.assert_outcomes(passed=len(PRIVILEGE_CHECKS))


def test_the_flags_replace_the_ini_declarations(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\naddopts = -p no:schemathesis -p no:anyio\nallowed_grantee =\n    reporting\n    replicator:SELECT\n"
    )
    assert gate_config_module.resolve(pytester.parseconfig()).allowed_grantees == (
        AllowedGrantee("reporting"),
        AllowedGrantee("replicator", frozenset({"SELECT"})),
    )
    flags = ["--allowed-grantee", "etl:INSERT", "--allowed-grantee", "PUBLIC:usage"]
    assert gate_config_module.resolve(pytester.parseconfig(*flags)).allowed_grantees == (
        AllowedGrantee("etl", frozenset({"INSERT"})),
        AllowedGrantee("PUBLIC", frozenset({"USAGE"})),
    )


# -- The playbook and the rehearsal -------------------------------------------------------


@pytest.fixture
def reporting(gate: CheckpointDatabases) -> Iterator[str]:
    """A reporting role, the kind an operator declares."""
    name = f"reporting_{uuid.uuid4().hex[:6]}"
    with cluster_roles(gate.server, name):
        yield name


@pytest.fixture
def staging_with_reporting(clone: Callable[[str], str], reporting: str) -> str:
    """Staging as it is today (004 and its legacy data), where a reporting role reads credentials."""
    url = clone("legacy")
    with dsn.connect(url) as conn:
        conn.execute(sql.SQL("GRANT SELECT ON public.credentials TO {}").format(sql.Identifier(reporting)))
    return url


def test_the_playbook_passes_a_declared_grantee_and_records_the_roles(
    staging_with_reporting: str, reporting: str, tmp_path: Path
) -> None:
    report = tmp_path / "record"
    run = run_cli(
        "playbook", "--database", staging_with_reporting, "--backup", str(tmp_path / "staging.backup"),
        "--report-dir", str(report), "--no-smoke", "--allowed-grantee", f"{reporting}:SELECT",
    )  # fmt: skip

    assert run.returncode == 0, run.output[-4000:]
    record = record_of(report)
    statuses = {check["name"]: check["status"] for check in record["checks"]}
    assert {statuses[name] for name in GRANTEE_CHECKS} == {"passed"}
    assert "postgres" in record["roles"]["superuser"] and "postgres" in record["roles"]["login"]
    assert set(record["roles"]) >= {"login", "superuser", "createrole", "bypassrls", "replication"}
    assert "members_of_fluxolab_devmode" in record["roles"]
    assert "## Roles of the cluster (reported, not asserted)" in (report / "report.md").read_text()
    assert "roles: roles with SUPERUSER" in run.stdout


def test_the_playbook_rolls_back_on_a_grant_its_declaration_does_not_cover(
    staging_with_reporting: str, reporting: str, tmp_path: Path
) -> None:
    report = tmp_path / "record"
    run = run_cli(
        "playbook", "--database", staging_with_reporting, "--backup", str(tmp_path / "staging.backup"),
        "--report-dir", str(report), "--no-smoke", "--allowed-grantee", f"{reporting}:INSERT",
    )  # fmt: skip

    assert run.returncode == 1, run.output[-4000:]
    assert "grantees[tables]" in one_error_line(run)
    record = record_of(report)
    assert record["outcome"] == "rolled_back" and record["stopped_at"] == "checkpoint after_008"
    failed = [check for check in record["checks"] if check["status"] == "failed"]
    assert [check["name"] for check in failed] == ["grantees[tables]"]
    assert f"table public.credentials: SELECT granted to {reporting} (by postgres)" in failed[0]["details"]
    assert f"declared with --allowed-grantee: {reporting}:INSERT" in failed[0]["details"]
    assert record["roles"]["login"], "the roles are recorded at the last checkpoint, failed or not"


def test_a_rehearsal_takes_the_declarations_too(
    staging_with_reporting: str, reporting: str, reader: PasswordRole, tmp_path: Path
) -> None:
    report = tmp_path / "rehearsal"
    run = run_cli(
        "rehearse", "--source", reader.url(staging_with_reporting), "--report-dir", str(report),
        "--no-smoke", "--allowed-grantee", f"{reporting}:SELECT",
    )  # fmt: skip

    assert run.returncode == 0, run.output[-4000:]
    record = record_of(report)
    statuses = {check["name"]: check["status"] for check in record["checks"]}
    assert {statuses[name] for name in GRANTEE_CHECKS} == {"passed"}
    assert record["roles"]["superuser"], "the disposable copy's roles are in the record"


# -- No false alarm -----------------------------------------------------------------------


def test_a_fresh_cluster_migrated_by_an_ordinary_role_owning_its_database_passes_every_privilege_check(
    gate_config: GateConfig,
) -> None:
    """Not a superuser: CREATEDB and CREATEROLE (003 creates fluxolab_devmode), owner of the database."""
    with DisposableServer(pg_ctl=gate_config.pg_ctl) as server:
        with server.admin() as conn:
            conn.execute("CREATE ROLE fluxolab_migrator LOGIN CREATEDB CREATEROLE")
        as_migrator = server.url().replace("postgres@", "fluxolab_migrator@", 1)
        with dsn.connect(as_migrator) as conn:
            conn.execute("CREATE DATABASE fluxolab")
        url = as_migrator.rsplit("/", 1)[0] + "/fluxolab"
        plan = load_plan(REPO / "migrations")
        runner.migrate(url, plan)

        with dsn.connect(url) as conn:
            owner = conn.execute(
                "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'public.users'::regclass"
            )
            assert owner.fetchone() == ("fluxolab_migrator",)
            context = CheckContext(conn, plan, "after_008")
            failures = []
            for check in PRIVILEGE_CHECKS:
                try:
                    check.verify(context)
                except CheckFailed as failure:
                    failures.append(str(failure))
            report = role_report(conn)

    assert failures == []
    assert "fluxolab_migrator" in report.roles["login"] and "fluxolab_migrator" in report.roles["createrole"]
    assert "fluxolab_migrator" not in report.roles["superuser"]
