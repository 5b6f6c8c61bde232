"""The rules judge tables no check names: each family fails on a table of its own and passes on a correct one.

Each case creates its own table (as a 009 would) in a transaction rolled back after the
test, on a private clone of the gate database after the last migration, then expands the
catalog on that connection, as the gate and the playbook do, and runs that table's test,
``<rule>[<table>]``. A family without a failing and a passing case fails the coverage test.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import pytest

from migration_gate.checks import catalog, invariants, rules
from migration_gate.checks.catalog import Check, CheckContext, CheckSkipped
from migration_gate.checks.failures import CheckFailed
from migration_gate.checks.rules import security_definer_functions
from migration_gate.core import contract, settings
from migration_gate.core.errors import UsageError
from migration_gate.core.exemptions import parse_exemption
from tests.conftest import REPO

CATALOG = catalog.load(REPO / "checks")
LAST = 8


@dataclass(frozen=True)
class Case:
    rule: str
    what: str
    sql: str
    table: str
    expect: str | None = None  # None: the rule passes on it; else a piece of the failure's message


# A 009-like table: its own id, a workspace with a key and an index, as a correct one has.
def tenant_table(
    name: str, *columns: str, workspace: str = "bigint NOT NULL REFERENCES workspaces ON DELETE CASCADE"
) -> str:
    extra = "".join(f", {column}" for column in columns)
    return (
        f"CREATE TABLE public.{name} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, workspace_id {workspace}{extra});"
        f" CREATE INDEX {name}_workspace ON public.{name} (workspace_id)"
    )


MEMBER_USER = "(SELECT min(m.user_id) FROM workspace_members m)"
MEMBER_WORKSPACE = f"(SELECT min(m.workspace_id) FROM workspace_members m WHERE m.user_id = {MEMBER_USER})"
NOT_MEMBER_WORKSPACE = (
    f"(SELECT min(w.id) FROM workspaces w WHERE NOT EXISTS "
    f"(SELECT FROM workspace_members m WHERE m.workspace_id = w.id AND m.user_id = {MEMBER_USER}))"
)
PARENT = "api_keys"
PARENT_TABLE = (
    tenant_table(PARENT, "name text NOT NULL")
    + f"; INSERT INTO public.{PARENT} (workspace_id, name) SELECT id, 'key of ' || name FROM workspaces"
)
CHILD_OF = (
    "key_id bigint NOT NULL REFERENCES public.api_keys ON DELETE CASCADE",
    "used_at timestamptz NOT NULL DEFAULT now()",
)

CASES = [
    Case(
        "tenant_workspace_not_null",
        "a backfill that leaves workspace_id NULL",
        tenant_table("audit_events", "action text NOT NULL", workspace="bigint REFERENCES workspaces")
        + "; INSERT INTO public.audit_events (workspace_id, action)"
        " SELECT u.default_workspace_id, a.action FROM activities a LEFT JOIN users u ON u.id = a.user_id",
        "audit_events",
        "public.audit_events.workspace_id is nullable: ",
    ),
    Case(
        "tenant_workspace_not_null",
        "NOT NULL and filled",
        tenant_table("audit_events", "action text NOT NULL")
        + "; INSERT INTO public.audit_events (workspace_id, action) SELECT workspace_id, action FROM activities",
        "audit_events",
    ),
    Case(
        "tenant_foreign_key",
        "workspace_id referencing nothing, rows naming a workspace that does not exist",
        tenant_table("exports", "name text NOT NULL", workspace="bigint NOT NULL")
        + "; INSERT INTO public.exports (workspace_id, name) SELECT id + 1000000, name FROM workspaces",
        "exports",
        "public.exports.workspace_id has no foreign key: ",
    ),
    Case(
        "tenant_foreign_key",
        "its key added NOT VALID",
        tenant_table("exports", "name text NOT NULL", workspace="bigint NOT NULL")
        + "; ALTER TABLE public.exports ADD FOREIGN KEY (workspace_id) REFERENCES workspaces NOT VALID",
        "exports",
        "references public.workspaces(id) only NOT VALID: its existing rows were never checked: no row is",
    ),
    Case(
        "tenant_foreign_key",
        "its key pointing at another table",
        "CREATE TABLE public.teams (id bigint PRIMARY KEY); "
        + tenant_table("exports", "name text NOT NULL", workspace="bigint NOT NULL REFERENCES public.teams"),
        "exports",
        "public.exports.workspace_id references public.teams(id), not public.workspaces(id)",
    ),
    Case(
        "tenant_foreign_key",
        "a validated key to workspaces(id)",
        tenant_table("exports", "name text NOT NULL")
        + "; INSERT INTO public.exports (workspace_id, name) SELECT id, name FROM workspaces",
        "exports",
    ),
    Case(
        "tenant_workspace_index",
        "no index at all",
        "CREATE TABLE public.audit_log (id bigint PRIMARY KEY, workspace_id bigint NOT NULL REFERENCES workspaces)",
        "audit_log",
        "public.audit_log has no valid index leading with workspace_id",
    ),
    Case(
        "tenant_workspace_index",
        "only an index where workspace_id comes second, and a partial one",
        "CREATE TABLE public.audit_log (id bigint PRIMARY KEY, workspace_id bigint NOT NULL REFERENCES workspaces,"
        " at timestamptz); CREATE INDEX audit_log_at ON public.audit_log (at, workspace_id);"
        " CREATE INDEX audit_log_recent ON public.audit_log (workspace_id) WHERE at > '2024-01-01'",
        "audit_log",
        "CREATE INDEX audit_log_at ON public.audit_log USING btree (at, workspace_id)",
    ),
    Case(
        "tenant_workspace_index",
        "a primary key that leads with workspace_id",
        "CREATE TABLE public.audit_log (workspace_id bigint NOT NULL REFERENCES workspaces, id bigint,"
        " PRIMARY KEY (workspace_id, id))",
        "audit_log",
    ),
    Case(
        "tenant_member_workspace",
        "every row backfilled into one workspace its users are not members of",
        tenant_table("notes", "user_id bigint REFERENCES users ON DELETE SET NULL", "body text NOT NULL")
        + "; CREATE INDEX notes_user ON public.notes (user_id);"
        " INSERT INTO public.notes (workspace_id, user_id, body)"
        " SELECT (SELECT min(id) FROM workspaces), u.id, 'welcome' FROM users u",
        "notes",
        "row(s) of public.notes sit in a workspace their user is not a member of",
    ),
    Case(
        "tenant_member_workspace",
        "a user_id without a key, in a workspace of someone else",
        tenant_table("notes", "user_id bigint", "body text NOT NULL")
        + f"; INSERT INTO public.notes (workspace_id, user_id, body) VALUES ({NOT_MEMBER_WORKSPACE}, {MEMBER_USER}, 'x')",
        "notes",
        "1 row(s) of public.notes sit in a workspace their user is not a member of",
    ),
    Case(
        "tenant_member_workspace",
        "each row in a workspace of its user, and rows without a user",
        tenant_table("notes", "user_id bigint REFERENCES users ON DELETE SET NULL", "body text NOT NULL")
        + "; CREATE INDEX notes_user ON public.notes (user_id);"
        " INSERT INTO public.notes (workspace_id, user_id, body)"
        " SELECT m.workspace_id, m.user_id, 'hello' FROM workspace_members m;"
        " INSERT INTO public.notes (workspace_id, user_id, body) SELECT id, NULL, 'anonymous' FROM workspaces",
        "notes",
    ),
    Case(
        "tenant_reference_workspace",
        "a child whose workspace differs from its parent tenant row's",
        PARENT_TABLE
        + "; "
        + tenant_table("api_key_uses", *CHILD_OF)
        + "; CREATE INDEX api_key_uses_key ON public.api_key_uses (key_id);"
        " INSERT INTO public.api_key_uses (workspace_id, key_id)"
        " SELECT (SELECT max(id) FROM workspaces), k.id FROM public.api_keys k",
        "api_key_uses",
        "through api_key_uses_key_id_fkey: (key_id) → public.api_keys (id)",
    ),
    Case(
        "tenant_reference_workspace",
        "a row referencing a row of its own table in another workspace",
        PARENT_TABLE
        + "; ALTER TABLE public.api_keys ADD COLUMN rotated_from bigint REFERENCES public.api_keys;"
        " UPDATE public.api_keys SET rotated_from = (SELECT max(id) FROM public.api_keys)"
        " WHERE id = (SELECT min(id) FROM public.api_keys)",
        "api_keys",
        "1 row(s) of public.api_keys are in another workspace than the tenant row they reference",
    ),
    Case(
        "tenant_reference_workspace",
        "each child in its parent's workspace",
        PARENT_TABLE
        + "; "
        + tenant_table("api_key_uses", *CHILD_OF)
        + "; CREATE INDEX api_key_uses_key ON public.api_key_uses (key_id);"
        " INSERT INTO public.api_key_uses (workspace_id, key_id) SELECT k.workspace_id, k.id FROM public.api_keys k",
        "api_key_uses",
    ),
]


def expanded(ctx: CheckContext) -> dict[str, Check]:
    return {check.name: check for check in catalog.expand(CATALOG, ctx.conn, holds_from=LAST)}


def run(check: Check, ctx: CheckContext) -> CheckFailed | None:
    try:
        check.verify(ctx)
    except CheckFailed as failure:
        return failure
    return None


@pytest.mark.parametrize("case", CASES, ids=[f"{case.rule}: {case.what}" for case in CASES])
def test_each_rule_judges_a_table_it_has_never_seen(context: CheckContext, case: Case) -> None:
    context.conn.execute(case.sql.encode())
    name = f"{case.rule}[{case.table}]"
    checks = expanded(context)
    assert name in checks, f"the catalog did not expand {case.rule} to {case.table}: {sorted(checks)}"
    failure = run(checks[name], context)
    if case.expect is None:
        assert failure is None, str(failure)
    else:
        assert failure is not None, f"{name} passed although {case.what}"
        assert str(failure).startswith(f"{name}: "), str(failure)
        assert case.expect in str(failure), str(failure)
        # The whole family, as `<rule>[*]`, finds the same table.
        family = run(next(check for check in CATALOG if check.name == f"{case.rule}[*]"), context)
        assert family is not None and case.table in str(family)


def test_every_rule_family_has_a_failing_and_a_passing_case() -> None:
    families = {check.family.rule.name for check in CATALOG if check.family is not None}
    assert families == {rule.name for rule in rules.TABLE_RULES}
    assert {case.rule for case in CASES if case.expect is not None} == families
    assert {case.rule for case in CASES if case.expect is None} == families


def test_a_failure_names_the_rows_at_fault_with_their_keys(context: CheckContext) -> None:
    case = next(case for case in CASES if case.rule == "tenant_foreign_key" and "nothing" in case.what)
    context.conn.execute(case.sql.encode())
    failure = run(expanded(context)["tenant_foreign_key[exports]"], context)
    assert failure is not None
    sections = dict(failure.sections)
    workspaces = context.conn.execute("SELECT count(*) FROM workspaces").fetchone()
    assert workspaces is not None and failure.count == workspaces[0]
    sample = next(body for title, body in failure.sections if title.startswith("offending rows"))
    assert sample.splitlines()[0].split(" | ") == ["id", "workspace_id"]
    assert "ADD FOREIGN KEY (workspace_id) REFERENCES public.workspaces (id)" in sections["what to do"]
    # The SQL shown finds the same rows again.
    rerun = sections["SQL to run again by hand"].rstrip(";")
    assert len(context.conn.execute(rerun).fetchall()) == failure.count


def test_today_the_named_checks_judge_every_tenant_table_but_two_indexes(context: CheckContext) -> None:
    """A table is never judged twice for the same thing: what a named check covers, the rule leaves out."""
    rule_checks = {name for name, check in expanded(context).items() if check.table is not None}
    assert rule_checks == {
        "tenant_workspace_index[webhook_registrations]",
        "tenant_workspace_index[webhook_events]",
    }
    covered = {pair for check in CATALOG for pair in check.covers}
    assert ("tenant_member_workspace", "credentials") in covered
    assert ("tenant_reference_workspace", "webhook_events") in covered
    assert ("tenant_workspace_index", "credentials") in covered
    assert ("tenant_foreign_key", "activities") in covered


def test_a_partition_is_judged_through_its_parent_and_an_archive_table_not_at_all(
    context: CheckContext,
) -> None:
    context.conn.execute(
        "CREATE TABLE public.events_by_month (id bigint, workspace_id bigint NOT NULL REFERENCES workspaces,"
        " at date NOT NULL) PARTITION BY RANGE (at);"
        " CREATE TABLE public.events_2024 PARTITION OF public.events_by_month"
        " FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');"
        " CREATE INDEX events_by_month_workspace ON public.events_by_month (workspace_id);"
        " CREATE TABLE legacy_archive.old_notes (id bigint, workspace_id bigint)"
    )
    checks = expanded(context)
    assert "tenant_workspace_index[events_by_month]" in checks
    assert not [name for name in checks if "events_2024" in name or "old_notes" in name]
    assert run(checks["tenant_workspace_index[events_by_month]"], context) is None
    assert run(checks["tenant_foreign_key[events_by_month]"], context) is None


def test_a_key_that_carries_the_workspace_is_left_to_postgresql(context: CheckContext) -> None:
    context.conn.execute(
        PARENT_TABLE
        + "; ALTER TABLE public.api_keys ADD UNIQUE (workspace_id, id); "
        + tenant_table("api_key_uses", "key_id bigint NOT NULL")
        + "; ALTER TABLE public.api_key_uses ADD FOREIGN KEY (workspace_id, key_id)"
        " REFERENCES public.api_keys (workspace_id, id)"
    )
    assert "tenant_reference_workspace[api_key_uses]" not in expanded(context)


def test_a_table_without_a_primary_key_is_sampled_by_its_rows_address(context: CheckContext) -> None:
    context.conn.execute(
        "CREATE TABLE public.loose_notes (workspace_id bigint REFERENCES workspaces, body text);"
        " CREATE INDEX loose_notes_workspace ON public.loose_notes (workspace_id);"
        " INSERT INTO public.loose_notes VALUES (NULL, 'lost')"
    )
    failure = run(expanded(context)["tenant_workspace_not_null[loose_notes]"], context)
    assert failure is not None and re.search(r"ctid +\| workspace_id\n.*\n\(0,1\) \| NULL", str(failure)), (
        failure
    )


def test_an_exempted_table_is_skipped_with_its_reason_never_passed(context: CheckContext) -> None:
    context.conn.execute(
        "CREATE TABLE public.audit_log (id bigint PRIMARY KEY, workspace_id bigint NOT NULL REFERENCES workspaces)"
    )
    exempt = parse_exemption("tenant_workspace_index[audit_log]: append-only, read by id")
    with_exemption = dataclasses.replace(context, exemptions=(exempt,))
    check = expanded(context)["tenant_workspace_index[audit_log]"]
    with pytest.raises(CheckSkipped) as skipped:
        check.verify(with_exemption)
    assert skipped.value.reason == "exempt: append-only, read by id"
    assert run(check, context) is not None, "without the exemption the table fails"
    family = next(check for check in CATALOG if check.name == "tenant_workspace_index[*]")
    assert run(family, with_exemption) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tenant_indexes[audit_log]: old", "unknown rule 'tenant_indexes'"),
        ("tenant_workspace_index[audit_log]", "no reason"),
        ("tenant_workspace_index[audit_log]:   ", "no reason"),
        ("tenant_workspace_index: no table", "expected RULE[TABLE]: REASON"),
        ("tenant_workspace_index[reporting.audit_log]: elsewhere", "is not a table of public"),
        ("security_definer_functions[f]: a function", "unknown rule 'security_definer_functions'"),
    ],
)
def test_an_exemption_that_does_not_parse_is_one_line(text: str, message: str) -> None:
    with pytest.raises(UsageError) as refused:
        parse_exemption(text)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_an_exemption_is_parsed_once_and_a_pair_declared_twice_is_refused() -> None:
    exemption = parse_exemption(" tenant_workspace_index[public.audit_log] : append-only: read by id ")
    assert (exemption.rule, exemption.table, exemption.reason) == (
        "tenant_workspace_index",
        "audit_log",
        "append-only: read by id",
    )
    assert parse_exemption(str(exemption)) == exemption
    catalog.check_exemptions(CATALOG, [exemption])
    with pytest.raises(UsageError, match="declared twice"):
        catalog.check_exemptions(
            CATALOG, [exemption, parse_exemption("tenant_workspace_index[audit_log]: again")]
        )


def test_the_rules_go_by_the_contracts_fixed_names() -> None:
    assert tuple(rule.name for rule in rules.TABLE_RULES) == contract.TABLE_RULES
    assert (
        security_definer_functions.NAME == contract.SECURITY_DEFINER_FUNCTIONS == "security_definer_functions"
    )


def test_a_named_check_cannot_be_exempted_through_its_rule() -> None:
    exemption = parse_exemption("tenant_workspace_index[credentials]: too big")
    with pytest.raises(UsageError, match=r"index_definition\[idx_credentials_workspace\] judges credentials"):
        catalog.check_exemptions(CATALOG, [exemption])


def test_a_check_file_covering_no_rule_is_refused(tmp_path: pytest.TempPathFactory) -> None:
    directory = REPO / "checks"
    copy = tmp_path / "checks"  # type: ignore[operator]
    copy.mkdir()
    for path in directory.glob("*.sql"):
        (copy / path.name).write_text(path.read_text())
    orphans = "-- name: orphans\n-- from: 009\n-- meaning: m\n-- covers: {}\nSELECT 1\n"
    (copy / "orphans.sql").write_text(orphans.format("tenant_workspace_index[notes], tenant_orphans[notes]"))
    with pytest.raises(invariants.InvariantFileError, match="there is no rule 'tenant_orphans'"):
        catalog.load(copy)
    (copy / "orphans.sql").write_text(orphans.format("tenant_workspace_index notes"))
    with pytest.raises(invariants.InvariantFileError, match="must be RULE"):
        catalog.load(copy)


# A 009 that does right by functions and schemas: what the reviews of every schema must let through.
CAREFUL_FUNCTIONS_AND_A_PRIVATE_SCHEMA = (
    "CREATE FUNCTION public.workspace_activity_count(target bigint) RETURNS bigint LANGUAGE sql STABLE"
    " AS 'SELECT count(*) FROM public.activities WHERE workspace_id = target';"
    " CREATE FUNCTION public.touch_credential(target bigint) RETURNS void LANGUAGE sql SECURITY DEFINER"
    " SET search_path = pg_catalog, public AS 'UPDATE public.credentials SET updated_at = now() WHERE id = target';"
    " REVOKE EXECUTE ON FUNCTION public.touch_credential(bigint) FROM PUBLIC;"
    " CREATE SCHEMA maintenance;"
    " CREATE TABLE maintenance.batches (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " user_id bigint REFERENCES public.users ON DELETE CASCADE, note text CHECK (note <> ''));"
    " CREATE INDEX batches_user ON maintenance.batches (user_id);"
    " CREATE FUNCTION maintenance.batch_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM maintenance.batches'"
)
EVERY_SCHEMA = (
    "security_definer_functions",
    "grantees[tables]",
    "grantees[sequences]",
    "grantees[columns]",
    "grantees[schemas]",
    "grantees[default_privileges]",
    "no_invalid_indexes",
    "no_not_valid_constraints",
    "cascading_foreign_keys_without_index",
    "legacy_archive_closed",
    "other_relations_privileges",
)


@pytest.mark.parametrize("name", EVERY_SCHEMA)
def test_an_ordinary_function_a_careful_definer_and_a_private_schema_pass(
    context: CheckContext, name: str
) -> None:
    context.conn.execute(CAREFUL_FUNCTIONS_AND_A_PRIVATE_SCHEMA)
    failure = run(next(check for check in CATALOG if check.name == name), context)
    assert failure is None, str(failure)
    if name == "security_definer_functions":  # it did judge the careful one, and only that one
        judged = security_definer_functions.check(context.conn)
        assert [function.signature for function in judged] == ["public.touch_credential(target bigint)"]


def test_an_exemption_is_a_setting_read_from_the_projects_ini_options_too() -> None:
    declared = settings.setting("exempt")
    ini = {
        "exempt": "tenant_workspace_index[audit_log]: append-only\n\ntenant_foreign_key[imports]: staging only\n"
    }
    found = settings.resolve(declared, None, {}, ini)
    assert [str(exemption) for exemption in found] == [
        "tenant_workspace_index[audit_log]: append-only",
        "tenant_foreign_key[imports]: staging only",
    ]
    flags = settings.resolve(declared, ["tenant_member_workspace[notes]: invitations"], {}, ini)
    assert [exemption.pair for exemption in flags] == [
        "tenant_member_workspace[notes]"
    ]  # the flags replace them
    with pytest.raises(UsageError) as refused:
        declared.parse("tenant_nothing[x]: y")
    assert str(refused.value).startswith("--exempt 'tenant_nothing[x]: y': unknown rule 'tenant_nothing'")
