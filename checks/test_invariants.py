"""The zero-count invariants of domain.md section 3: one test per (invariant, checkpoint it holds at).

The invariants are the ``*.sql`` files beside this module; adding one is adding a file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from migration_gate.checks import invariants
from migration_gate.core import dsn
from migration_gate.core.errors import GateError
from migration_gate.plugin.databases import GateDatabases, checkpoints_from
from migration_gate.plugin.hooks import GATE_CONFIG

CHECKS_DIR = Path(__file__).parent


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "invariant" not in metafunc.fixturenames:
        return
    try:
        loaded = invariants.load(CHECKS_DIR)
    except GateError as exc:
        raise pytest.UsageError(str(exc)) from None
    disposable = metafunc.config.stash[GATE_CONFIG].disposable
    metafunc.parametrize(
        ("invariant", "checkpoint"),
        [
            pytest.param(invariant, checkpoint, id=f"{invariant.name}-{checkpoint}")
            for invariant in loaded
            for checkpoint in checkpoints_from(invariant.from_version, disposable)
        ],
    )


def test_invariant(
    gate: GateDatabases, open_checkpoint: Callable[..., Any], invariant: invariants.Invariant, checkpoint: str
) -> None:
    where = f"{checkpoint} ({dsn.describe(gate.url(checkpoint))})"
    with open_checkpoint(checkpoint, invariant.from_version, invariant.name) as conn:
        result = invariants.run(conn, invariant, where)
    # Raises CheckFailed (an AssertionError) with the count, the sample and the SQL to rerun.
    result.assert_zero()
