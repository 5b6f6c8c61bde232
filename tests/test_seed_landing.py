"""The legacy seed lands where fixtures/legacy_seed_expected.json says, and nothing is lost.

Each seeded row is followed from the ``legacy`` checkpoint (001→004 and the seed) to the
checkpoint where its migration has run. Conservation compares ``legacy`` with
``after_008``: every legacy row is in ``public`` or in ``legacy_archive``, never both, and
every legacy payload can be found again.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
import pytest

from migration_gate.plugin.databases import CheckpointDatabases

EXPECTED_PATH = Path(__file__).parents[1] / "fixtures" / "legacy_seed_expected.json"

# Tables whose rows 005→008 give a workspace, in the JSON and in the database.
PLACED_TABLES = ("credentials", "webhook_registrations", "webhook_events", "activities")

# Pre-005 columns of the tables 008 may move to legacy_archive; jsonb compared as text,
# the canonical form, so 1e400 or 30.0 never go through Python floats.
ARCHIVABLE_COLUMNS = {
    "webhook_registrations": "id, user_id, target_url, event_types, secret, active, created_at",
    "webhook_events": "id, registration_id, event_type, body::text, status, attempts, created_at, processed_at",
    "activities": "id, user_id, action, payload::text, created_at",
}

# Legacy tables 006 adds rows to (personal workspaces, owner memberships): conserved by
# key, not by count.
GROWING_TABLES = {"workspaces": "id", "workspace_members": "workspace_id, user_id"}
COUNTED_TABLES = ("users", "profiles", "credentials", "webhook_registrations", "webhook_events", "activities")


@cache
def expected() -> dict[str, Any]:
    landings: dict[str, Any] = json.loads(EXPECTED_PATH.read_text(encoding="utf-8"))
    return landings


def ids(conn: psycopg.Connection, table: str) -> set[int]:
    return {row[0] for row in conn.execute(f"SELECT id FROM {table}")}


def rows_by_id(conn: psycopg.Connection, table: str, columns: str) -> dict[int, tuple[Any, ...]]:
    return {row[0]: row for row in conn.execute(f"SELECT {columns} FROM {table}")}


@pytest.fixture(scope="module")
def legacy_workspace_ids(gate: CheckpointDatabases) -> set[int]:
    with gate.connect("legacy") as conn:
        return ids(conn, "public.workspaces")


def personal_workspaces(conn: psycopg.Connection, legacy_workspace_ids: set[int]) -> dict[int, int]:
    """user id → the workspace 006 created for them (absent from the seed)."""
    personal: dict[int, int] = {}
    for workspace_id, owner_id in conn.execute("SELECT id, owner_id FROM public.workspaces ORDER BY id"):
        if workspace_id not in legacy_workspace_ids:
            assert owner_id not in personal, f"006 created more than one workspace for user {owner_id}"
            personal[owner_id] = workspace_id
    return personal


def expected_workspace(landing: dict[str, Any], personal: dict[int, int]) -> int:
    if "personal_of_user" in landing:
        user_id = landing["personal_of_user"]
        assert user_id in personal, f"006 created no personal workspace for user {user_id}"
        return personal[user_id]
    return int(landing["workspace_id"])


@pytest.mark.parametrize("table", [*PLACED_TABLES, "users"])
def test_expected_json_lists_every_seeded_row(gate: CheckpointDatabases, table: str) -> None:
    # A seeded row missing from the JSON would be checked by nothing.
    with gate.connect("legacy") as conn:
        seeded = ids(conn, f"public.{table}")
    listed = {int(key) for key in expected()[table]}
    assert seeded == listed, (
        f"{table}: seeded but not listed {sorted(seeded - listed)}, listed but not seeded {sorted(listed - seeded)}"
    )


@pytest.mark.parametrize("checkpoint", ["after_006", "after_008"])
def test_users_default_workspace(
    gate: CheckpointDatabases, checkpoint: str, legacy_workspace_ids: set[int]
) -> None:
    with gate.connect(checkpoint) as conn:
        defaults = dict(conn.execute("SELECT id, default_workspace_id FROM public.users").fetchall())
        owned: dict[int, list[int]] = {}
        for workspace_id, owner_id in conn.execute("SELECT id, owner_id FROM public.workspaces"):
            owned.setdefault(owner_id, []).append(workspace_id)
    wrong = {}
    for key, landing in expected()["users"].items():
        user_id = int(key)
        default = defaults.get(user_id)
        if landing.get("default_workspace") == "personal":
            ok = default not in legacy_workspace_ids and owned.get(user_id) == [default]
        else:
            ok = default == landing["default_workspace_id"]
        if not ok:
            wrong[user_id] = {
                "expected": landing,
                "default_workspace_id": default,
                "owns": owned.get(user_id),
            }
    assert not wrong, f"users with the wrong default workspace at {checkpoint}: {wrong}"


def test_owner_memberships_and_profiles(gate: CheckpointDatabases) -> None:
    with gate.connect("after_006") as conn:
        profiles = {
            f"{workspace_id}:{user_id}": code
            for workspace_id, user_id, code in conn.execute(
                "SELECT m.workspace_id, m.user_id, p.code"
                " FROM public.workspace_members m JOIN public.profiles p ON p.id = m.profile_id"
            )
        }
    wrong = {
        key: {"expected": landing["profile"], "found": profiles.get(key)}
        for key, landing in expected()["workspace_members"].items()
        if profiles.get(key) != landing["profile"]
    }
    assert not wrong, f"memberships with the wrong profile after 006: {wrong}"


@pytest.mark.parametrize(
    ("table", "checkpoint"),
    [("credentials", "after_007"), *((table, "after_008") for table in PLACED_TABLES)],
)
def test_rows_land_where_expected(
    gate: CheckpointDatabases, table: str, checkpoint: str, legacy_workspace_ids: set[int]
) -> None:
    with gate.connect(checkpoint) as conn:
        personal = personal_workspaces(conn, legacy_workspace_ids)
        public = dict(conn.execute(f"SELECT id, workspace_id FROM public.{table}").fetchall())
        archived = ids(conn, f"legacy_archive.{table}") if table in ARCHIVABLE_COLUMNS else set()
    wrong = {}
    for key, landing in expected()[table].items():
        row_id = int(key)
        if landing.get("archived"):
            if row_id in public or row_id not in archived:
                wrong[row_id] = {
                    "expected": "archived",
                    "in_public": row_id in public,
                    "in_archive": row_id in archived,
                }
        else:
            want = expected_workspace(landing, personal)
            if public.get(row_id) != want or row_id in archived:
                wrong[row_id] = {
                    "expected": want,
                    "workspace_id": public.get(row_id),
                    "in_archive": row_id in archived,
                }
    assert not wrong, f"{table} rows misplaced at {checkpoint}: {wrong}"


@pytest.mark.parametrize("table", COUNTED_TABLES)
def test_rows_conserved(gate: CheckpointDatabases, table: str) -> None:
    with gate.connect("legacy") as conn:
        before = ids(conn, f"public.{table}")
    with gate.connect("after_008") as conn:
        public = ids(conn, f"public.{table}")
        archived = ids(conn, f"legacy_archive.{table}") if table in ARCHIVABLE_COLUMNS else set()
    assert len(before) == len(public) + len(archived), (
        f"{table}: {len(before)} rows before 005, {len(public)} in public + {len(archived)} archived after 008"
    )
    assert not public & archived, f"{table}: rows both in public and archived: {sorted(public & archived)}"
    assert before == public | archived, f"{table}: rows lost {sorted(before - public - archived)}"


@pytest.mark.parametrize("table", GROWING_TABLES)
def test_legacy_rows_kept_in_growing_tables(gate: CheckpointDatabases, table: str) -> None:
    key = GROWING_TABLES[table]
    query = f"SELECT {key} FROM public.{table}"
    with gate.connect("legacy") as conn:
        before = set(conn.execute(query).fetchall())
    with gate.connect("after_008") as conn:
        after = set(conn.execute(query).fetchall())
    assert before <= after, f"{table}: legacy rows gone after 008: {sorted(before - after)}"


@pytest.mark.parametrize("table", ARCHIVABLE_COLUMNS)
def test_archived_rows_are_unchanged_copies(gate: CheckpointDatabases, table: str) -> None:
    columns = ARCHIVABLE_COLUMNS[table]
    with gate.connect("legacy") as conn:
        before = rows_by_id(conn, f"public.{table}", columns)
    with gate.connect("after_008") as conn:
        archived = rows_by_id(conn, f"legacy_archive.{table}", columns)
    changed = {
        row_id: {"legacy": before.get(row_id), "archived": row}
        for row_id, row in archived.items()
        if before.get(row_id) != row
    }
    assert not changed, f"legacy_archive.{table} rows differ from the legacy rows: {changed}"


def test_every_legacy_payload_found_again(gate: CheckpointDatabases) -> None:
    with gate.connect("legacy") as conn:
        payloads = dict(
            conn.execute(
                "SELECT id, payload::text FROM public.activities WHERE payload IS NOT NULL"
            ).fetchall()
        )
    with gate.connect("after_008") as conn:
        kept = dict(
            conn.execute("SELECT activity_id, payload::text FROM legacy_archive.activity_payloads").fetchall()
        )
        archived = dict(conn.execute("SELECT id, payload::text FROM legacy_archive.activities").fetchall())
        remaining = ids(conn, "public.activities")
    lost = {
        activity_id: payload
        for activity_id, payload in payloads.items()
        if kept.get(activity_id, archived.get(activity_id)) != payload
    }
    assert not lost, f"legacy payloads not found again (activity id → payload): {lost}"
    strays = set(kept) - remaining
    assert not strays, f"activity_payloads rows for activities not in public: {sorted(strays)}"
