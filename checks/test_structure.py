"""The schema 005→008 must leave: NOT NULLs, nothing invalid, payload gone, the archive, no row lost."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from migration_gate.checks import structure
from migration_gate.core.contract import LEGACY_TABLES
from migration_gate.plugin.databases import GateDatabases, checkpoints_from
from migration_gate.plugin.hooks import GATE_CONFIG


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "required" in metafunc.fixturenames:
        disposable = metafunc.config.stash[GATE_CONFIG].disposable
        metafunc.parametrize(
            ("required", "checkpoint"),
            [
                pytest.param(required, checkpoint, id=f"{required.label}-{checkpoint}")
                for required in structure.NOT_NULL_COLUMNS
                for checkpoint in checkpoints_from(required.from_version, disposable)
            ],
        )


def test_not_null(
    open_checkpoint: Callable[..., Any], required: structure.RequiredColumn, checkpoint: str
) -> None:
    with open_checkpoint(checkpoint, required.from_version, f"{required.label} NOT NULL") as conn:
        not_null = structure.check_not_null(conn, required)
    assert not_null


@pytest.mark.holds_from(1)
def test_no_invalid_index(open_checkpoint: Callable[..., Any], checkpoint: str) -> None:
    with open_checkpoint(checkpoint, 1, "no invalid index") as conn:
        invalid = structure.check_no_invalid_indexes(conn)
    assert invalid == []


@pytest.mark.holds_from(1)
def test_no_not_valid_constraint(open_checkpoint: Callable[..., Any], checkpoint: str) -> None:
    with open_checkpoint(checkpoint, 1, "no NOT VALID constraint") as conn:
        not_valid = structure.check_no_invalid_constraints(conn)
    assert not_valid == []


@pytest.mark.holds_from(structure.PAYLOAD_GONE_FROM_VERSION)
def test_activities_payload_is_gone(open_checkpoint: Callable[..., Any], checkpoint: str) -> None:
    with open_checkpoint(checkpoint, structure.PAYLOAD_GONE_FROM_VERSION, "activities.payload gone") as conn:
        columns = structure.check_payload_gone(conn)
    assert "payload" not in columns and "workspace_id" in columns


@pytest.mark.holds_from(structure.ARCHIVE_FROM_VERSION)
def test_legacy_archive_holds_what_008_took_out(open_checkpoint: Callable[..., Any], checkpoint: str) -> None:
    with open_checkpoint(checkpoint, structure.ARCHIVE_FROM_VERSION, "legacy_archive") as conn:
        found = structure.check_archive_present(conn)
    assert set(found) == set(structure.ARCHIVE_TABLES)


@pytest.mark.holds_from(8, last_only=True)
@pytest.mark.parametrize("table", LEGACY_TABLES)
def test_conservation(
    gate: GateDatabases, open_checkpoint: Callable[..., Any], checkpoint: str, table: str
) -> None:
    """Rows before 005 = rows in public + rows in legacy_archive, right after 008."""
    legacy_counts = gate.legacy_counts()
    if legacy_counts is None:
        pytest.skip("conservation needs the pre-005 snapshot, which only the disposable gate database has")
    with open_checkpoint(checkpoint, 8, f"conservation of {table}") as conn:
        result = structure.check_conservation(conn, table, legacy_counts)
    assert result.holds


@pytest.mark.holds_from(8, last_only=True)
def test_every_legacy_payload_is_kept(
    gate: GateDatabases, open_checkpoint: Callable[..., Any], checkpoint: str
) -> None:
    if "legacy" not in gate.checkpoints:
        pytest.skip(
            "payload conservation needs the pre-005 snapshot, which only the disposable gate database has"
        )
    with gate.connect("legacy") as legacy:
        before = structure.legacy_payload_count(legacy)
    with open_checkpoint(checkpoint, 8, "payload conservation") as conn:
        kept = structure.check_payloads_conserved(conn, before)
    assert kept == before
