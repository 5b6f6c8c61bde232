"""The legacy volume generator: deterministic, counted right, dirty, and refusing what it must."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import psycopg
import pytest

from migration_gate.core import dsn, runner
from migration_gate.core.errors import UsageError
from migration_gate.core.plan import Migration, load_plan
from migration_gate.core.server import DisposableServer
from migration_gate.data import volume
from tests.conftest import REPO, run_cli

USERS = 400
ACTIVITIES = 6_000


@pytest.fixture(scope="module")
def plan() -> list[Migration]:
    return load_plan(REPO / "migrations")


@pytest.fixture
def database_at(
    disposable_server: DisposableServer, plan: list[Migration]
) -> Iterator[Callable[[str | None], str]]:
    """Make empty databases migrated to a given version (None: not migrated at all)."""
    with ExitStack() as made:

        def make(version: str | None = "004") -> str:
            url = made.enter_context(disposable_server.temporary_database("vol"))
            if version is not None:
                runner.migrate(url, plan, stop=version)
            return url

        yield make


@pytest.fixture(scope="module")
def generated(
    disposable_server: DisposableServer, plan: list[Migration]
) -> Iterator[tuple[str, dict[str, int]]]:
    """One generated volume, shared by the read-only tests below."""
    with disposable_server.temporary_database("vol_shared") as url:
        runner.migrate(url, plan, stop="004")
        counts = volume.generate(url, USERS, ACTIVITIES, seed=3)
        yield url, counts


def count(conn: psycopg.Connection, query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def fingerprint(url: str) -> dict[str, str]:
    """md5 of every generated table's rows in key order: equal fingerprints, equal data."""
    with dsn.connect(url) as conn:
        return {
            table: str(
                conn.execute(
                    f"SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t"
                ).fetchone()[0]  # type: ignore[index]
            )
            for table in volume.TABLES
        }


def test_same_seed_same_rows_other_seed_other_rows(database_at: Callable[[str | None], str]) -> None:
    first, second, other = database_at("004"), database_at("004"), database_at("004")
    volume.generate(first, 200, 2_000, seed=7)
    volume.generate(second, 200, 2_000, seed=7)
    volume.generate(other, 200, 2_000, seed=8)
    assert fingerprint(first) == fingerprint(second)
    differing = {t for t, digest in fingerprint(other).items() if digest != fingerprint(first)[t]}
    assert differing == set(volume.TABLES), f"seed 8 reproduced seed 7 in {set(volume.TABLES) - differing}"


def test_counts_are_the_rows_loaded(generated: tuple[str, dict[str, int]]) -> None:
    url, counts = generated
    assert counts["users"] == USERS
    assert counts["activities"] == ACTIVITIES
    with dsn.connect(url) as conn:
        actual = {table: count(conn, f"SELECT count(*) FROM {table}") for table in volume.TABLES}
        profiles = count(conn, "SELECT count(*) FROM profiles")
    assert counts == actual
    assert profiles == 4, "the generator must not touch 001's profiles"
    # Thousands of workspaces per 100k activities: the other tables follow the scale.
    assert counts["workspaces"] > USERS
    assert counts["webhook_events"] == ACTIVITIES // 4


# Each dirty case of docs/contract.md §1, as a query counting the rows that exhibit it.
DIRTY_CASES = {
    "users owning no workspace, member elsewhere": """
        SELECT count(*) FROM users u
        WHERE NOT EXISTS (SELECT FROM workspaces w WHERE w.owner_id = u.id)
          AND EXISTS (SELECT FROM workspace_members m WHERE m.user_id = u.id)""",
    "users owning no workspace and in none": """
        SELECT count(*) FROM users u
        WHERE NOT EXISTS (SELECT FROM workspaces w WHERE w.owner_id = u.id)
          AND NOT EXISTS (SELECT FROM workspace_members m WHERE m.user_id = u.id)""",
    "users owning exactly one workspace": """
        SELECT count(*) FROM (SELECT owner_id FROM workspaces GROUP BY owner_id HAVING count(*) = 1) s""",
    "users owning several workspaces": """
        SELECT count(*) FROM (SELECT owner_id FROM workspaces GROUP BY owner_id HAVING count(*) > 1) s""",
    "an owner's workspaces created at the same instant": """
        SELECT count(*) FROM (
            SELECT owner_id FROM workspaces GROUP BY owner_id, created_at HAVING count(*) > 1) s""",
    "an owner's older workspace with the higher id": """
        SELECT count(*) FROM workspaces a JOIN workspaces b
          ON a.owner_id = b.owner_id AND a.id < b.id AND a.created_at > b.created_at""",
    "owners without a membership in their workspace": """
        SELECT count(*) FROM workspaces w WHERE NOT EXISTS (
            SELECT FROM workspace_members m WHERE m.workspace_id = w.id AND m.user_id = w.owner_id)""",
    "owners with a non-owner profile in their workspace": """
        SELECT count(*) FROM workspaces w
        JOIN workspace_members m ON m.workspace_id = w.id AND m.user_id = w.owner_id
        JOIN profiles p ON p.id = m.profile_id WHERE p.code <> 'owner'""",
    "the owner profile held in a workspace one does not own": """
        SELECT count(*) FROM workspace_members m
        JOIN workspaces w ON w.id = m.workspace_id JOIN profiles p ON p.id = m.profile_id
        WHERE p.code = 'owner' AND w.owner_id <> m.user_id""",
    "credentials of users in no workspace": """
        SELECT count(*) FROM credentials c
        WHERE NOT EXISTS (SELECT FROM workspaces w WHERE w.owner_id = c.user_id)
          AND NOT EXISTS (SELECT FROM workspace_members m WHERE m.user_id = c.user_id)""",
    "registrations whose user was deleted": "SELECT count(*) FROM webhook_registrations WHERE user_id IS NULL",
    "events of registrations whose user was deleted": """
        SELECT count(*) FROM webhook_events e
        JOIN webhook_registrations r ON r.id = e.registration_id WHERE r.user_id IS NULL""",
    "events in every status": "SELECT count(DISTINCT status) - 3 FROM webhook_events",
    "activities without a user": "SELECT count(*) FROM activities WHERE user_id IS NULL",
    "payload SQL NULL": "SELECT count(*) FROM activities WHERE payload IS NULL",
    "payload JSON null": "SELECT count(*) FROM activities WHERE jsonb_typeof(payload) = 'null'",
    "payload an array": "SELECT count(*) FROM activities WHERE jsonb_typeof(payload) = 'array'",
    "payload a scalar": "SELECT count(*) FROM activities WHERE jsonb_typeof(payload) IN ('number', 'string')",
    "payload an object without workspace_id": """
        SELECT count(*) FROM activities WHERE jsonb_typeof(payload) = 'object' AND NOT payload ? 'workspace_id'""",
    "workspace_id a number": "SELECT count(*) FROM activities WHERE jsonb_typeof(payload -> 'workspace_id') = 'number'",
    "workspace_id an integral float": "SELECT count(*) FROM activities WHERE payload ->> 'workspace_id' ~ '^[0-9]+\\.0$'",
    "workspace_id a fractional number": "SELECT count(*) FROM activities WHERE payload ->> 'workspace_id' ~ '^[0-9]+\\.5$'",
    "workspace_id beyond bigint": """
        SELECT count(*) FROM activities WHERE payload ->> 'workspace_id' ~ '^[0-9]{20,}$'""",
    "workspace_id a numeric string": """
        SELECT count(*) FROM activities
        WHERE jsonb_typeof(payload -> 'workspace_id') = 'string' AND payload ->> 'workspace_id' ~ '^[1-9][0-9]*$'""",
    "workspace_id digits with leading zeros": "SELECT count(*) FROM activities WHERE payload ->> 'workspace_id' ~ '^00[0-9]+$'",
    "workspace_id digits after a space": "SELECT count(*) FROM activities WHERE payload ->> 'workspace_id' ~ '^ [0-9]+$'",
    "workspace_id garbage": "SELECT count(*) FROM activities WHERE payload ->> 'workspace_id' ~ '^ws-'",
    "workspace_id JSON null": "SELECT count(*) FROM activities WHERE jsonb_typeof(payload -> 'workspace_id') = 'null'",
    "workspace_id nested": "SELECT count(*) FROM activities WHERE jsonb_typeof(payload -> 'workspace_id') = 'object'",
    "workspace_id a boolean": "SELECT count(*) FROM activities WHERE jsonb_typeof(payload -> 'workspace_id') = 'boolean'",
    "workspace_id naming no workspace": """
        SELECT count(*) FROM activities a
        WHERE jsonb_typeof(a.payload -> 'workspace_id') = 'number' AND a.payload ->> 'workspace_id' ~ '^[0-9]{1,18}$'
          AND NOT EXISTS (SELECT FROM workspaces w WHERE w.id = (a.payload ->> 'workspace_id')::bigint)""",
    "workspace_id naming one the user is no member of": """
        SELECT count(*) FROM activities a
        JOIN workspaces w ON jsonb_typeof(a.payload -> 'workspace_id') = 'number'
                         AND a.payload ->> 'workspace_id' ~ '^[0-9]{1,18}$'
                         AND w.id = (a.payload ->> 'workspace_id')::bigint
        WHERE a.user_id IS NOT NULL AND w.owner_id <> a.user_id
          AND NOT EXISTS (SELECT FROM workspace_members m WHERE m.workspace_id = w.id AND m.user_id = a.user_id)""",
    "workspace_id naming one the user is a member of": """
        SELECT count(*) FROM activities a
        JOIN workspace_members m ON jsonb_typeof(a.payload -> 'workspace_id') = 'number'
                                AND a.payload ->> 'workspace_id' ~ '^[0-9]{1,18}$'
                                AND m.workspace_id = (a.payload ->> 'workspace_id')::bigint
                                AND m.user_id = a.user_id""",
}


@pytest.mark.parametrize("case", DIRTY_CASES)
def test_every_dirty_case_is_present(generated: tuple[str, dict[str, int]], case: str) -> None:
    url, _ = generated
    with dsn.connect(url) as conn:
        found = count(conn, DIRTY_CASES[case])
    assert found > 0, f"the generated volume has no {case}"


FOREIGN_KEYS = {
    "workspaces.owner_id": "SELECT count(*) FROM workspaces x LEFT JOIN users u ON u.id = x.owner_id WHERE u.id IS NULL",
    "workspace_members.workspace_id": """
        SELECT count(*) FROM workspace_members x LEFT JOIN workspaces w ON w.id = x.workspace_id WHERE w.id IS NULL""",
    "workspace_members.user_id": """
        SELECT count(*) FROM workspace_members x LEFT JOIN users u ON u.id = x.user_id WHERE u.id IS NULL""",
    "workspace_members.profile_id": """
        SELECT count(*) FROM workspace_members x LEFT JOIN profiles p ON p.id = x.profile_id WHERE p.id IS NULL""",
    "credentials.user_id": "SELECT count(*) FROM credentials x LEFT JOIN users u ON u.id = x.user_id WHERE u.id IS NULL",
    "activities.user_id": """
        SELECT count(*) FROM activities x LEFT JOIN users u ON u.id = x.user_id
        WHERE x.user_id IS NOT NULL AND u.id IS NULL""",
    "webhook_registrations.user_id": """
        SELECT count(*) FROM webhook_registrations x LEFT JOIN users u ON u.id = x.user_id
        WHERE x.user_id IS NOT NULL AND u.id IS NULL""",
    "webhook_events.registration_id": """
        SELECT count(*) FROM webhook_events x LEFT JOIN webhook_registrations r ON r.id = x.registration_id
        WHERE r.id IS NULL""",
}


def test_foreign_keys_hold_though_not_checked_while_loading(generated: tuple[str, dict[str, int]]) -> None:
    url, _ = generated
    with dsn.connect(url) as conn:
        broken = {fk: n for fk, query in FOREIGN_KEYS.items() if (n := count(conn, query))}
    assert not broken, f"rows pointing at nothing: {broken}"


def test_indexes_rebuilt_as_they_were(database_at: Callable[[str | None], str]) -> None:
    url = database_at("004")
    query = """
        SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid::regclass::text = ANY (%s) ORDER BY 1"""
    with dsn.connect(url) as conn:
        before = conn.execute(query, (list(volume.TABLES),)).fetchall()
    volume.generate(url, 50, 500)
    with dsn.connect(url) as conn:
        after = conn.execute(query, (list(volume.TABLES),)).fetchall()
        # The index must also hold the rows: an index scan finds what a sequential scan finds.
        conn.execute("SET enable_seqscan = off")
        by_index = count(conn, "SELECT count(*) FROM activities WHERE user_id BETWEEN 1 AND 25")
        conn.execute("SET enable_seqscan = on; SET enable_indexscan = off; SET enable_bitmapscan = off")
        by_scan = count(conn, "SELECT count(*) FROM activities WHERE user_id BETWEEN 1 AND 25")
    assert before == after
    assert by_index == by_scan > 0


def test_identity_sequences_continue_after_the_loaded_ids(generated: tuple[str, dict[str, int]]) -> None:
    url, counts = generated
    with dsn.connect(url) as conn, conn.transaction(force_rollback=True):
        for table, values in {
            "users": "(email, name) VALUES ('new@example.com', 'New')",
            "activities": "(action) VALUES ('new')",
        }.items():
            new_id = count(conn, f"INSERT INTO {table} {values} RETURNING id")
            assert new_id == counts[table] + 1


def test_the_generated_volume_migrates_without_losing_a_row(
    database_at: Callable[[str | None], str], plan: list[Migration]
) -> None:
    url = database_at("004")
    counts = volume.generate(url, 150, 2_000, seed=11)
    runner.migrate(url, plan)
    with dsn.connect(url) as conn:
        for table in ("credentials", "webhook_registrations", "webhook_events", "activities"):
            archived = (
                count(conn, f"SELECT count(*) FROM legacy_archive.{table}") if table != "credentials" else 0
            )
            assert count(conn, f"SELECT count(*) FROM public.{table}") + archived == counts[table], table
        assert count(conn, "SELECT count(*) FROM legacy_archive.activities") > 0
        assert count(conn, "SELECT count(*) FROM legacy_archive.webhook_events") > 0


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        (None, "has no migration ledger"),
        ("003", "is at 003, not 004"),
        ("005", "is at 005, not 004"),
    ],
)
def test_refuses_a_database_not_at_004(
    database_at: Callable[[str | None], str], version: str | None, reason: str
) -> None:
    url = database_at(version)
    with pytest.raises(UsageError, match=reason):
        volume.generate(url, 10, 10)


@pytest.mark.parametrize("table", ["users", "activities"])
def test_refuses_a_database_that_holds_data(database_at: Callable[[str | None], str], table: str) -> None:
    url = database_at("004")
    with dsn.connect(url) as conn:
        conn.execute(
            "INSERT INTO users (email, name) VALUES ('x@example.com', 'X')"
            if table == "users"
            else "INSERT INTO activities (action) VALUES ('orphan')"
        )
    with pytest.raises(UsageError, match=f"already holds rows in {table}"):
        volume.generate(url, 10, 10)
    with dsn.connect(url) as conn:
        assert count(conn, f"SELECT count(*) FROM {table}") == 1, "a refused run must write nothing"


def with_password(url: str) -> str:
    # The disposable server trusts loopback, so the password is ignored but still must not leak.
    return url.replace("postgres@", "postgres:s3cr3t-pw@")


def test_cli_generates(database_at: Callable[[str | None], str]) -> None:
    url = database_at("004")
    run = run_cli(
        "generate", "--database", with_password(url), "--users", "30", "--activities", "300", "--seed", "2"
    )
    assert run.returncode == 0, run.output
    assert "activities" in run.stdout and "rows/s" in run.stdout
    assert "s3cr3t-pw" not in run.output
    with dsn.connect(url) as conn:
        assert count(conn, "SELECT count(*) FROM activities") == 300


def test_cli_refuses_in_one_line_without_the_password(database_at: Callable[[str | None], str]) -> None:
    url = database_at("005")
    run = run_cli("generate", "--database", with_password(url), "--users", "30", "--activities", "300")
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "is at 005, not 004" in run.stderr, run.stderr
    assert "Traceback" not in run.output and "s3cr3t-pw" not in run.output


@pytest.mark.parametrize(
    "args",
    [
        ("--users", "0", "--activities", "10"),
        ("--users", "ten", "--activities", "10"),
        ("--users", "10", "--activities", "-5"),
        ("--users", "10", "--activities", "10", "--seed", "x"),
    ],
)
def test_cli_refuses_bad_numbers(args: tuple[str, ...]) -> None:
    run = run_cli("generate", "--database", "postgresql://u:s3cr3t-pw@127.0.0.1:1/db", *args)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.output and "s3cr3t-pw" not in run.output
