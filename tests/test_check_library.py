"""The check library's pure parts, without a database: check files, plan walking, failure reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from migration_gate.checks import explain, invariants
from migration_gate.checks.failures import CheckFailed, format_rows
from tests.conftest import REPO

FIXED_NAMES = {
    "users_without_default_workspace": 6,
    "default_workspace_not_owned": 6,
    "default_workspace_without_owner_membership": 6,
    "credentials_without_workspace": 7,
    "webhook_registrations_without_workspace": 8,
    "webhook_events_without_workspace": 8,
    "webhook_event_workspace_mismatch": 8,
    "activities_without_workspace": 8,
    "credentials_outside_member_workspace": 7,
    "webhook_registrations_outside_member_workspace": 8,
    "activities_outside_member_workspace": 8,
    "cascading_foreign_keys_without_index": 1,
}


def test_the_checks_directory_holds_every_fixed_name_of_the_contract_from_its_migration() -> None:
    loaded = {invariant.name: invariant.from_version for invariant in invariants.load(REPO / "checks")}
    assert loaded == FIXED_NAMES


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.sql"
    path.write_text(text)
    return path


def test_a_check_file_parses_into_name_migration_meaning_and_one_select(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "orphan_rows",
        "-- name: orphan_rows\n-- from: 007\n-- meaning: rows nobody owns\n-- a comment of the author\n"
        "SELECT id FROM t WHERE owner IS NULL;\n",
    )
    invariant = invariants.parse(path)
    assert (invariant.name, invariant.from_version, invariant.meaning) == (
        "orphan_rows",
        7,
        "rows nobody owns",
    )
    assert invariant.sql == "SELECT id FROM t WHERE owner IS NULL"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-- name: bad\n-- meaning: m\nSELECT 1", "header lacks 'from:'"),
        ("-- from: 006\n-- meaning: m\nSELECT 1", "header lacks 'name:'"),
        ("-- name: bad\n-- from: 006\nSELECT 1", "header lacks 'meaning:'"),
        ("SELECT 1", "header lacks 'name:', 'from:', 'meaning:'"),
        ("-- name: other\n-- from: 006\n-- meaning: m\nSELECT 1", "must be the file's name ('bad')"),
        ("-- name: bad\n-- from: 6\n-- meaning: m\nSELECT 1", "'from: 6' must be a migration number"),
        ("-- name: bad\n-- from: 006\n-- from: 007\n-- meaning: m\nSELECT 1", "header repeats 'from:'"),
        ("-- name: bad\n-- from: 006\n-- meaning: m\nSELECT 1; SELECT 2", "exactly one SELECT"),
        ("-- name: bad\n-- from: 006\n-- meaning: m\nDELETE FROM users", "exactly one SELECT"),
        ("-- name: bad\n-- from: 006\n-- meaning: m\n", "exactly one SELECT"),
        (
            "-- name: bad\n-- from: 006\n-- meaning: m\n\nSELECT FROM WHERE (",
            "bad.sql:5: cannot parse: syntax error",
        ),
    ],
    ids=[
        "no from",
        "no name",
        "no meaning",
        "no header",
        "name is not the file's",
        "from not NNN",
        "from twice",
        "two statements",
        "not a SELECT",
        "no SQL",
        "SQL PostgreSQL cannot parse",
    ],
)
def test_a_malformed_check_file_is_refused_with_one_line_naming_it(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, "bad", text)
    with pytest.raises(invariants.InvariantFileError) as refused:
        invariants.parse(path)
    assert message in str(refused.value)
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)


def test_an_empty_or_missing_checks_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(invariants.InvariantFileError, match="no invariant files"):
        invariants.load(tmp_path)
    with pytest.raises(invariants.UsageError, match="does not exist"):
        invariants.load(tmp_path / "nowhere")


def node(node_type: str, *children: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"Node Type": node_type, **fields, **({"Plans": list(children)} if children else {})}


def test_the_plan_walk_finds_an_index_scan_at_any_depth() -> None:
    plan = node(
        "Limit",
        node(
            "Sort",
            node(
                "Bitmap Heap Scan",
                node("Bitmap Index Scan", **{"Index Name": "idx_activities_workspace"}),
                **{"Relation Name": "activities"},
            ),
        ),
    )
    assert explain.index_scans(plan) == ["idx_activities_workspace"]
    assert explain.uses_index(plan, "idx_activities_workspace")
    assert not explain.uses_index(plan, "idx_credentials_workspace")
    assert "-> Bitmap Index Scan using idx_activities_workspace" in explain.render(plan)


@pytest.mark.parametrize("scan", sorted(explain.INDEX_SCANS))
def test_each_kind_of_index_scan_counts(scan: str) -> None:
    assert explain.uses_index(node("Limit", node(scan, **{"Index Name": "idx"})), "idx")


def test_a_seq_scan_or_another_index_does_not_count() -> None:
    plan = node(
        "Append",
        node("Seq Scan", **{"Relation Name": "credentials"}),
        node("Index Scan", **{"Index Name": "other"}),
    )
    assert explain.index_scans(plan) == ["other"]
    assert not explain.uses_index(plan, "idx_credentials_workspace")


def test_a_failure_is_an_assertion_error_with_titled_sections() -> None:
    failure = CheckFailed(
        "some_check", "2 offending row(s)", [("count", "2"), ("SQL to run again by hand", "SELECT 1;")]
    )
    assert isinstance(failure, AssertionError)
    assert str(failure).splitlines() == [
        "some_check: 2 offending row(s)",
        "---- count ----",
        "2",
        "---- SQL to run again by hand ----",
        "SELECT 1;",
    ]


def test_rows_are_aligned_with_null_spelled_out_and_long_values_cut() -> None:
    table = format_rows(["user_id", "note"], [(1, None), (22, "x" * 500)])
    lines = table.splitlines()
    assert lines[0] == "user_id | note"
    assert lines[2].startswith("1       | NULL")
    assert lines[3].endswith("...") and len(lines[3]) < 200
