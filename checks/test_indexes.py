"""idx_credentials_workspace and idx_activities_workspace: defined as the contract says, usable, chosen.

Parametrized over the application's queries: the credentials of a workspace, and the
latest 50 activities of a workspace.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from migration_gate.checks import explain
from migration_gate.core import dsn
from migration_gate.plugin.databases import GateDatabases, checkpoints_from
from migration_gate.plugin.hooks import GATE_CONFIG


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "query" not in metafunc.fixturenames:
        return
    disposable = metafunc.config.stash[GATE_CONFIG].disposable
    if "checkpoint" in metafunc.fixturenames:
        params = [
            pytest.param(query, checkpoint, id=f"{query.index}-{checkpoint}")
            for query in explain.APPLICATION_QUERIES
            for checkpoint in checkpoints_from(query.from_version, disposable)
        ]
        metafunc.parametrize(("query", "checkpoint"), params)
    else:
        where = "volume" if disposable else "current"
        metafunc.parametrize(
            "query", [pytest.param(q, id=f"{q.index}-{where}") for q in explain.APPLICATION_QUERIES]
        )


def test_index_exists_valid_with_contract_columns(
    open_checkpoint: Callable[..., Any], query: explain.ApplicationQuery, checkpoint: str
) -> None:
    with open_checkpoint(checkpoint, query.from_version, query.index) as conn:
        found = explain.check_definition(conn, query)
    assert found.valid and found.columns[: len(query.leading_columns)] == query.leading_columns


def test_index_usable(
    open_checkpoint: Callable[..., Any], query: explain.ApplicationQuery, checkpoint: str
) -> None:
    """With enable_seqscan off, the application's query scans this very index."""
    with open_checkpoint(checkpoint, query.from_version, query.index) as conn:
        plan = explain.check_usable(conn, query)
    assert explain.uses_index(plan, query.index)


def test_index_chosen(
    request: pytest.FixtureRequest,
    gate: GateDatabases,
    open_checkpoint: Callable[..., Any],
    query: explain.ApplicationQuery,
) -> None:
    """At a realistic volume, after ANALYZE, with default planner settings, the planner picks the index."""
    if gate.disposable:
        with dsn.connect(request.getfixturevalue("volume_database")) as conn:
            plan = explain.check_chosen(conn, query)
    else:
        with open_checkpoint("current", query.from_version, query.index) as conn:
            reason = explain.too_small_for_chosen(conn, query)
            if reason is not None:
                pytest.skip(reason)
            plan = explain.check_chosen(conn, query)
    assert explain.uses_index(plan, query.index)
