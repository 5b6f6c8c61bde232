"""fluxolab_devmode has exactly what domain.md section 1 grants it: missing and extra both fail.

Checked where the application meets the database: after the last migration (or on the
existing database as it is). Per table and per sequence, so a failure names the object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from migration_gate.checks import privileges
from migration_gate.core.contract import PUBLIC_TABLES

pytestmark = pytest.mark.holds_from(3, last_only=True)


@pytest.mark.parametrize("table", PUBLIC_TABLES)
def test_table_privileges(open_checkpoint: Callable[..., Any], checkpoint: str, table: str) -> None:
    """Exactly SELECT, INSERT, UPDATE, DELETE; no TRUNCATE, REFERENCES, TRIGGER, no grant option."""
    with open_checkpoint(checkpoint, 3, f"privileges on {table}") as conn:
        diff = privileges.check_table(conn, table)
    assert diff.actual == privileges.DESIRED_TABLE


@pytest.mark.parametrize("column", privileges.CONTRACT_SEQUENCES)
def test_sequence_privileges(open_checkpoint: Callable[..., Any], checkpoint: str, column: str) -> None:
    """Exactly USAGE, SELECT on the sequence behind each identity column; no UPDATE (setval)."""
    with open_checkpoint(checkpoint, 3, f"privileges on the sequence of {column}") as conn:
        diff = privileges.check_identity_sequence(conn, column)
    assert diff.actual == privileges.DESIRED_SEQUENCE


def test_no_other_table_or_sequence_in_public_without_exact_grants(
    open_checkpoint: Callable[..., Any], checkpoint: str
) -> None:
    """A table the contract does not name (e.g. created without default privileges) is held to the same."""
    with open_checkpoint(checkpoint, 3, "privileges on every other relation in public") as conn:
        contract_sequences = {
            privileges.identity_sequence(conn, column) for column in privileges.CONTRACT_SEQUENCES
        }
        skip = {*PUBLIC_TABLES, *(name for name in contract_sequences if name)}
        diffs = privileges.check_every_relation(conn, "public", skip=skip)
    assert all(diff.exact for diff in diffs)


def test_connect_on_the_database(open_checkpoint: Callable[..., Any], checkpoint: str) -> None:
    with open_checkpoint(checkpoint, 3, "CONNECT") as conn:
        diff = privileges.check_database(conn)
    assert diff.actual == privileges.DESIRED_DATABASE


def test_usage_but_no_create_on_schema_public(open_checkpoint: Callable[..., Any], checkpoint: str) -> None:
    with open_checkpoint(checkpoint, 3, "schema public") as conn:
        diff = privileges.check_public_schema(conn)
    assert diff.actual == privileges.DESIRED_PUBLIC_SCHEMA


def test_public_has_no_create_on_schema_public(open_checkpoint: Callable[..., Any], checkpoint: str) -> None:
    with open_checkpoint(checkpoint, 3, "PUBLIC on schema public") as conn:
        diff = privileges.check_public_role_cannot_create(conn)
    assert not diff.actual


def test_nothing_in_legacy_archive(open_checkpoint: Callable[..., Any], checkpoint: str) -> None:
    with open_checkpoint(checkpoint, 3, "legacy_archive closed") as conn:
        diffs = privileges.check_archive_closed(conn)
    assert not any(diff.actual for diff in diffs)


def test_no_superuser_nor_other_role_attributes(open_checkpoint: Callable[..., Any], checkpoint: str) -> None:
    with open_checkpoint(checkpoint, 3, "role attributes") as conn:
        diff = privileges.check_role_attributes(conn)
    assert not diff.actual


def test_default_privileges_of_the_migration_role(
    open_checkpoint: Callable[..., Any], checkpoint: str
) -> None:
    """Tables and sequences the migrations create later in public get the application's grants."""
    with open_checkpoint(checkpoint, 3, "default privileges") as conn:
        diffs = privileges.check_default_privileges(conn)
    assert all(diff.exact for diff in diffs)
